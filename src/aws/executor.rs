//! Executes a plan, action by action, idempotently: a copy that already exists, a rule already
//! revoked or a setting already in place counts as done, so an interrupted run converges on the
//! next one without a second copy.

use std::collections::BTreeSet;

use aws_sdk_rds::types::{CloudwatchLogsExportConfiguration, Parameter, Tag};

use crate::api::DatabaseKind;
use crate::posture::evaluate::{AttributeChange, Target};
use crate::posture::model::{IngressRule, IngressSource, is_default_group_name};
use crate::posture::plan::{Action, ActionKind, ApplyMethod, Plan};
use crate::posture::report::Outcome;

use super::{AwsError, AwsRegion, ErrorClass};

/// The tag that marks groups pgbaseline created.
pub const MANAGED_TAG: (&str, &str) = ("pgbaseline.io/managed", "true");

/// Runs every action in order. After a failure, the later actions for the same databases are
/// skipped (they depend on it); other databases go on.
pub async fn execute(aws: &AwsRegion, plan: &Plan) -> Vec<Outcome> {
    let mut failed_databases: BTreeSet<String> = BTreeSet::new();
    let mut outcomes = Vec::with_capacity(plan.actions.len());
    for action in &plan.actions {
        let touched: Vec<String> = action
            .causes
            .iter()
            .map(|c| c.database.id.clone())
            .collect();
        if !touched.is_empty() && touched.iter().all(|id| failed_databases.contains(id)) {
            outcomes.push(Outcome::Skipped);
            continue;
        }
        let outcome = match run(aws, action).await {
            Ok(()) => {
                tracing::info!(call = action.kind.aws_call(), action = %action.kind.describe(), "remediation applied");
                Outcome::Succeeded
            }
            Err(e) => {
                tracing::warn!(call = e.action, code = %e.code, action = %action.kind.describe(), "remediation failed");
                failed_databases.extend(touched);
                Outcome::Failed {
                    code: e.code,
                    message: e.message,
                }
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

fn refuse(action: &'static str, message: String) -> AwsError {
    AwsError {
        action,
        class: ErrorClass::Other,
        code: "RefusedByPgbaseline".into(),
        message,
    }
}

async fn run(aws: &AwsRegion, action: &Action) -> Result<(), AwsError> {
    aws.throttle().await;
    match &action.kind {
        ActionKind::CopyParameterGroup {
            source,
            target,
            cluster,
            ..
        } => {
            if is_default_group_name(target) {
                return Err(refuse(
                    "CopyDBParameterGroup",
                    format!("{target} is a reserved name"),
                ));
            }
            let tag = Tag::builder()
                .key(MANAGED_TAG.0)
                .value(MANAGED_TAG.1)
                .build();
            let description = format!("pgbaseline: copy of {source}");
            let result = if *cluster {
                aws.rds
                    .copy_db_cluster_parameter_group()
                    .source_db_cluster_parameter_group_identifier(source)
                    .target_db_cluster_parameter_group_identifier(target)
                    .target_db_cluster_parameter_group_description(description)
                    .tags(tag)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::from_sdk("CopyDBClusterParameterGroup", e))
            } else {
                aws.rds
                    .copy_db_parameter_group()
                    .source_db_parameter_group_identifier(source)
                    .target_db_parameter_group_identifier(target)
                    .target_db_parameter_group_description(description)
                    .tags(tag)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::from_sdk("CopyDBParameterGroup", e))
            };
            match result {
                // An earlier, interrupted run made it: use it.
                Err(e) if e.code.contains("AlreadyExists") => Ok(()),
                other => other,
            }
        }
        ActionKind::SetParameters {
            group,
            cluster,
            changes,
        } => {
            if is_default_group_name(group) {
                return Err(refuse(
                    "ModifyDBParameterGroup",
                    format!("{group} is an AWS default group and is never modified"),
                ));
            }
            let parameters: Vec<Parameter> = changes
                .iter()
                .map(|c| {
                    Parameter::builder()
                        .parameter_name(&c.name)
                        .parameter_value(&c.value)
                        .apply_method(match c.method {
                            ApplyMethod::Immediate => aws_sdk_rds::types::ApplyMethod::Immediate,
                            ApplyMethod::PendingReboot => {
                                aws_sdk_rds::types::ApplyMethod::PendingReboot
                            }
                        })
                        .build()
                })
                .collect();
            if *cluster {
                aws.rds
                    .modify_db_cluster_parameter_group()
                    .db_cluster_parameter_group_name(group)
                    .set_parameters(Some(parameters))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::from_sdk("ModifyDBClusterParameterGroup", e))
            } else {
                aws.rds
                    .modify_db_parameter_group()
                    .db_parameter_group_name(group)
                    .set_parameters(Some(parameters))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| AwsError::from_sdk("ModifyDBParameterGroup", e))
            }
        }
        ActionKind::AttachParameterGroup { database, group } => match database.kind {
            DatabaseKind::Instance => aws
                .rds
                .modify_db_instance()
                .db_instance_identifier(&database.id)
                .db_parameter_group_name(group)
                .apply_immediately(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::from_sdk("ModifyDBInstance", e)),
            DatabaseKind::Cluster => aws
                .rds
                .modify_db_cluster()
                .db_cluster_identifier(&database.id)
                .db_cluster_parameter_group_name(group)
                .apply_immediately(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::from_sdk("ModifyDBCluster", e)),
        },
        ActionKind::ModifyAttributes { target, changes } => modify(aws, target, changes).await,
        ActionKind::RevokeIngress {
            security_group,
            rule,
        } => {
            let result = aws
                .ec2
                .revoke_security_group_ingress()
                .group_id(security_group)
                .ip_permissions(permission(rule))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::from_sdk("RevokeSecurityGroupIngress", e));
            match result {
                Err(e) if e.code == "InvalidPermission.NotFound" => Ok(()),
                other => other,
            }
        }
        ActionKind::Reboot { instance } => aws
            .rds
            .reboot_db_instance()
            .db_instance_identifier(instance)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| AwsError::from_sdk("RebootDBInstance", e)),
    }
}

async fn modify(
    aws: &AwsRegion,
    target: &Target,
    changes: &[AttributeChange],
) -> Result<(), AwsError> {
    match target {
        Target::Instance(id) => {
            let mut req = aws
                .rds
                .modify_db_instance()
                .db_instance_identifier(id)
                .apply_immediately(true);
            for change in changes {
                req = match change {
                    AttributeChange::DisablePublicAccess => req.publicly_accessible(false),
                    AttributeChange::EnableIamAuth => req.enable_iam_database_authentication(true),
                    AttributeChange::EnableLogExports(logs) => req
                        .cloudwatch_logs_export_configuration(
                            CloudwatchLogsExportConfiguration::builder()
                                .set_enable_log_types(Some(logs.clone()))
                                .build(),
                        ),
                    AttributeChange::EnableDeletionProtection => req.deletion_protection(true),
                    AttributeChange::RaiseBackupRetention(days) => {
                        req.backup_retention_period(i32::try_from(*days).unwrap_or(35))
                    }
                    AttributeChange::EnableAutoMinorVersionUpgrade => {
                        req.auto_minor_version_upgrade(true)
                    }
                    AttributeChange::SetCaCertificate(ca) => req.ca_certificate_identifier(ca),
                    AttributeChange::EnableManagedMasterPassword => {
                        req.manage_master_user_password(true)
                    }
                };
            }
            req.send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::from_sdk("ModifyDBInstance", e))
        }
        Target::Cluster(id) => {
            let mut req = aws
                .rds
                .modify_db_cluster()
                .db_cluster_identifier(id)
                .apply_immediately(true);
            for change in changes {
                req = match change {
                    AttributeChange::EnableIamAuth => req.enable_iam_database_authentication(true),
                    AttributeChange::EnableLogExports(logs) => req
                        .cloudwatch_logs_export_configuration(
                            CloudwatchLogsExportConfiguration::builder()
                                .set_enable_log_types(Some(logs.clone()))
                                .build(),
                        ),
                    AttributeChange::EnableDeletionProtection => req.deletion_protection(true),
                    AttributeChange::RaiseBackupRetention(days) => {
                        req.backup_retention_period(i32::try_from(*days).unwrap_or(35))
                    }
                    AttributeChange::EnableManagedMasterPassword => {
                        req.manage_master_user_password(true)
                    }
                    AttributeChange::EnableAutoMinorVersionUpgrade => {
                        req.auto_minor_version_upgrade(true)
                    }
                    // Instance-level settings of Aurora are planned on the member instances.
                    AttributeChange::DisablePublicAccess | AttributeChange::SetCaCertificate(_) => {
                        req
                    }
                };
            }
            req.send()
                .await
                .map(|_| ())
                .map_err(|e| AwsError::from_sdk("ModifyDBCluster", e))
        }
    }
}

/// Exactly one source of one permission: revoking it leaves every other rule in place.
fn permission(rule: &IngressRule) -> aws_sdk_ec2::types::IpPermission {
    let mut p = aws_sdk_ec2::types::IpPermission::builder().ip_protocol(&rule.protocol);
    if rule.protocol != "-1" {
        p = p.set_from_port(rule.from_port).set_to_port(rule.to_port);
    }
    match &rule.source {
        IngressSource::Cidr(net @ ipnet::IpNet::V4(_)) => p.ip_ranges(
            aws_sdk_ec2::types::IpRange::builder()
                .cidr_ip(net.to_string())
                .build(),
        ),
        IngressSource::Cidr(net) => p.ipv6_ranges(
            aws_sdk_ec2::types::Ipv6Range::builder()
                .cidr_ipv6(net.to_string())
                .build(),
        ),
        IngressSource::SecurityGroup(id) => p.user_id_group_pairs(
            aws_sdk_ec2::types::UserIdGroupPair::builder()
                .group_id(id)
                .build(),
        ),
        IngressSource::PrefixList(id) => p.prefix_list_ids(
            aws_sdk_ec2::types::PrefixListId::builder()
                .prefix_list_id(id)
                .build(),
        ),
    }
    .build()
}
