//! Executes a plan, action by action, idempotently: a managed copy that already exists (and is
//! proved to be pgbaseline's and as intended), a rule already revoked or a setting already in
//! place counts as done, so an interrupted run converges on the next one without a second copy.
//!
//! Right before every mutating call the executor asks its [`MayAct`] whether it may still act
//! (the operator answers from the policy's watch and the leader lease); when the answer is no,
//! the run stops there and what is left is reported as skipped, with the reason.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_rds::types::{CloudwatchLogsExportConfiguration, Parameter, Tag};

use crate::api::DatabaseKind;
use crate::posture::evaluate::{AttributeChange, Target};
use crate::posture::managed::{
    Contents, DESCRIPTION_PREFIX, Existing, MANAGED_TAG, Ownership, attach_is_safe,
    classify_existing, content_digest, intended_contents, managed_name, migration_changes,
    ownership,
};
use crate::posture::model::{Fleet, IngressRule, IngressSource, is_default_group_name};
use crate::posture::modify::Modification;
use crate::posture::plan::{
    Action, ActionKind, ApplyMethod, DbKey, MAX_PARAMETERS_PER_CALL, ParameterChange, Plan,
};
use crate::posture::report::Outcome;

use super::groups::{self, GroupQuotas};
use super::{AwsRegion, Failure, code};

/// Asked right before every mutating AWS call: `Err(reason)` stops the run. Must be cheap (it
/// is asked once per call) and must not block.
pub trait MayAct: Sync {
    /// `Ok(())` while the caller may still change AWS; else why not.
    fn may_act(&self) -> Result<(), String>;
}

/// For `pgbaseline check --fix`: nothing revokes a one-off run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Always;

impl MayAct for Always {
    fn may_act(&self) -> Result<(), String> {
        Ok(())
    }
}

impl<F: Fn() -> Result<(), String> + Sync> MayAct for F {
    fn may_act(&self) -> Result<(), String> {
        self()
    }
}

/// What a run did: one outcome per plan action, in order, and why it stopped early, if it did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Executed {
    pub outcomes: Vec<Outcome>,
    /// Set when [`MayAct`] said no: the actions from then on were skipped (one of them may have
    /// done part of its calls: AWS may differ from the plan's fleet).
    pub stopped: Option<String>,
}

/// Runs every action in order, unconditionally (see [`execute_while`]).
pub async fn execute(aws: &AwsRegion, fleet: &Fleet, plan: &Plan) -> Vec<Outcome> {
    execute_while(aws, fleet, plan, &Always).await.outcomes
}

/// Runs every action in order while `may_act` allows it, asking it before every mutating call.
/// After a failure, the later actions for the same databases are skipped (they depend on it);
/// other databases go on. Once `may_act` says no, nothing more is attempted.
pub async fn execute_while(
    aws: &AwsRegion,
    fleet: &Fleet,
    plan: &Plan,
    may_act: &dyn MayAct,
) -> Executed {
    let mut run = Execution::new(aws, fleet, may_act);
    let mut failed_databases: BTreeSet<String> = BTreeSet::new();
    let mut outcomes = Vec::with_capacity(plan.actions.len());
    let mut stopped: Option<String> = None;
    // Once AWS itself fails (unreachable, no credentials…), every later call would too.
    let mut region_failed = false;
    for action in &plan.actions {
        if stopped.is_none()
            && let Err(reason) = may_act.may_act()
        {
            stopped = Some(reason);
        }
        if let Some(reason) = &stopped {
            outcomes.push(Outcome::Skipped {
                reason: format!("not attempted: {reason}"),
            });
            continue;
        }
        let touched: Vec<String> = action
            .causes
            .iter()
            .map(|c| c.database.id.clone())
            .collect();
        if region_failed {
            outcomes.push(Outcome::Skipped {
                reason: "not attempted: AWS failed for the whole region".into(),
            });
            continue;
        }
        if !touched.is_empty() && touched.iter().all(|id| failed_databases.contains(id)) {
            outcomes.push(Outcome::Skipped {
                reason: "not attempted: an earlier change to the same database failed".into(),
            });
            continue;
        }
        if let Err(why) = action.within_catalogue() {
            tracing::error!(action = %action.kind.describe(), %why, "refused an action the catalogue does not allow");
            outcomes.push(Outcome::Failed(Failure::refused(
                action.kind.aws_call(),
                code::REFUSED,
                why,
            )));
            continue;
        }
        let outcome = match run.action(action).await {
            Ok(()) => {
                tracing::info!(call = action.kind.aws_call(), action = %action.kind.describe(), "remediation applied");
                Outcome::Succeeded
            }
            Err(Stop::Halted(reason)) => {
                tracing::warn!(action = %action.kind.describe(), %reason, "remediation stopped before this action's next call");
                let skipped = Outcome::Skipped {
                    reason: format!("stopped: {reason}"),
                };
                stopped = Some(reason);
                skipped
            }
            Err(Stop::Deferred(reason)) => {
                tracing::warn!(action = %action.kind.describe(), %reason, "remediation deferred");
                failed_databases.extend(touched);
                Outcome::Deferred { reason }
            }
            Err(Stop::Failed(e)) => {
                tracing::warn!(call = e.call, code = %e.code, action = %action.kind.describe(), "remediation failed");
                region_failed |= e.class.is_regional();
                failed_databases.extend(touched);
                Outcome::Failed(e)
            }
        };
        outcomes.push(outcome);
    }
    Executed { outcomes, stopped }
}

/// Why an action stopped.
enum Stop {
    Failed(Failure),
    /// Not done because it does not fit the account's quotas; reported, not retried at once.
    Deferred(String),
    /// [`MayAct`] said no before the next mutating call.
    Halted(String),
}

impl From<Failure> for Stop {
    fn from(e: Failure) -> Stop {
        Stop::Failed(e)
    }
}

fn refuse(call: &'static str, code: &str, message: String) -> Stop {
    Stop::Failed(Failure::refused(call, code, message))
}

/// A managed copy: cluster group?, source, digest of the source's values, the changes.
type CopyKey = (bool, String, String, Vec<(String, String)>);

/// The state one plan's execution keeps: group contents read once, managed copies resolved
/// once however many databases move to them, and the account's group quotas.
struct Execution<'a> {
    aws: &'a AwsRegion,
    may_act: &'a dyn MayAct,
    contents: HashMap<(bool, String), Contents>,
    resolved: HashMap<CopyKey, Result<String, String>>,
    /// ARNs of groups that exist (the sweep's listing, plus the copies made here).
    arns: HashMap<(bool, String), String>,
    /// Sources that already have a managed copy (by its description; a hint only: whatever
    /// is reused is still proved by tag and contents).
    copied_sources: std::collections::HashSet<(bool, String)>,
    quotas: Option<GroupQuotas>,
    /// Groups created in this run, DB and cluster.
    created: [i64; 2],
    /// The names of the groups created in this run (their tag needs no proof).
    made_here: std::collections::HashSet<(bool, String)>,
    /// Set when a create was refused for the quota.
    exhausted: [bool; 2],
    /// The usage when the quota ran out, for the findings.
    last_quota: [Option<groups::Quota>; 2],
}

impl<'a> Execution<'a> {
    fn new(aws: &'a AwsRegion, fleet: &'a Fleet, may_act: &'a dyn MayAct) -> Execution<'a> {
        Execution {
            aws,
            may_act,
            contents: HashMap::new(),
            resolved: HashMap::new(),
            arns: fleet
                .parameter_groups
                .iter()
                .map(|g| ((g.cluster, g.name.clone()), g.arn.clone()))
                .collect(),
            copied_sources: fleet
                .parameter_groups
                .iter()
                .filter(|g| g.looks_managed())
                .filter_map(|g| {
                    let source = g.description.strip_prefix(DESCRIPTION_PREFIX)?;
                    Some((g.cluster, source.to_string()))
                })
                .collect(),
            quotas: None,
            created: [0, 0],
            made_here: Default::default(),
            exhausted: [false, false],
            last_quota: [None, None],
        }
    }

    /// Waits for the rate limit, then asks whether the next (mutating) call may still be made:
    /// called right before each one, so a long wait counts.
    async fn before_mutating(&self) -> Result<(), Stop> {
        before_mutating(self.aws, self.may_act).await
    }

    async fn action(&mut self, action: &Action) -> Result<(), Stop> {
        match &action.kind {
            ActionKind::SetParameters {
                group,
                cluster,
                changes,
            } => set_parameters(self.aws, self.may_act, group, *cluster, changes).await,
            ActionKind::MoveToManagedGroup {
                database,
                current,
                source,
                family,
                cluster,
                changes,
            } => {
                self.move_to_managed(database, current, source, family, *cluster, changes)
                    .await
            }
            ActionKind::ModifyAttributes { target, changes } => {
                self.before_mutating().await?;
                Ok(modify(self.aws, target, changes).await?)
            }
            ActionKind::RevokeIngress {
                security_group,
                rule,
            } => {
                self.before_mutating().await?;
                let result = self
                    .aws
                    .ec2
                    .revoke_security_group_ingress()
                    .group_id(security_group)
                    .ip_permissions(permission(rule))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| Failure::from_sdk("RevokeSecurityGroupIngress", e));
                match result {
                    Err(e) if e.code == "InvalidPermission.NotFound" => Ok(()),
                    other => Ok(other?),
                }
            }
            ActionKind::Reboot { instance } => {
                self.before_mutating().await?;
                Ok(self
                    .aws
                    .rds
                    .reboot_db_instance()
                    .db_instance_identifier(instance)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| Failure::from_sdk("RebootDBInstance", e))?)
            }
        }
    }

    /// Every parameter of a group, read once per execution.
    async fn contents(&mut self, cluster: bool, name: &str) -> Result<Contents, Failure> {
        let key = (cluster, name.to_string());
        if let Some(c) = self.contents.get(&key) {
            return Ok(c.clone());
        }
        let c = groups::contents(self.aws, cluster, name).await?;
        self.contents.insert(key, c.clone());
        Ok(c)
    }

    async fn move_to_managed(
        &mut self,
        database: &DbKey,
        current: &str,
        source: &str,
        family: &str,
        cluster: bool,
        changes: &[ParameterChange],
    ) -> Result<(), Stop> {
        let attach_call = if cluster {
            "ModifyDBCluster"
        } else {
            "ModifyDBInstance"
        };
        // No room for a new group and no copy of this source to reuse: nothing this move could
        // do, so say so before reading anything (a deferred pass costs one quota read, not a
        // full read of every source).
        if !self.copied_sources.contains(&(cluster, source.to_string())) {
            self.reserve(cluster).await?;
        }
        let current_contents = self.contents(cluster, current).await?;
        let (source_contents, all_changes) = if source == current {
            (current_contents.clone(), changes.to_vec())
        } else {
            let source_contents = self.contents(cluster, source).await?;
            match migration_changes(&source_contents, &current_contents, changes) {
                Some(all) => (source_contents, all),
                None => {
                    return Err(refuse(
                        attach_call,
                        code::REFUSED_MANAGED_GROUP,
                        format!(
                            "{current} cannot be expressed as a copy of {source} (it lacks a parameter {source} has); {} stays on {current}",
                            database.id
                        ),
                    ));
                }
            }
        };
        let target = self
            .resolve(cluster, family, source, &source_contents, &all_changes)
            .await
            .map_err(|stop| match stop {
                Stop::Failed(mut e) if e.code == code::REFUSED_MANAGED_GROUP => {
                    e.message = format!("{}; {} stays on {current}", e.message, database.id);
                    Stop::Failed(e)
                }
                other => other,
            })?;
        // The proof, on every parameter: attaching changes exactly the planned ones, each to a
        // stricter value.
        let candidate = self.contents(cluster, &target).await?;
        if let Err(why) = attach_is_safe(&current_contents, &candidate, changes) {
            return Err(refuse(
                attach_call,
                code::REFUSED_MANAGED_GROUP,
                format!(
                    "{target} was not attached to {}: {why}; it stays on {current}",
                    database.id
                ),
            ));
        }
        self.before_mutating().await?;
        match database.kind {
            DatabaseKind::Instance => self
                .aws
                .rds
                .modify_db_instance()
                .db_instance_identifier(&database.id)
                .db_parameter_group_name(&target)
                .apply_immediately(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| Failure::from_sdk("ModifyDBInstance", e))?,
            DatabaseKind::Cluster => self
                .aws
                .rds
                .modify_db_cluster()
                .db_cluster_identifier(&database.id)
                .db_cluster_parameter_group_name(&target)
                .apply_immediately(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| Failure::from_sdk("ModifyDBCluster", e))?,
        }
        tracing::info!(database = %database.id, group = %target, "attached managed parameter group");
        Ok(())
    }

    /// The managed copy of `source` with `changes`: an existing one proved to be ours and as
    /// intended, finished if an earlier run was interrupted, or a new one. The usual name first;
    /// when a group of that name cannot be used, the alternate name; else refused.
    async fn resolve(
        &mut self,
        cluster: bool,
        family: &str,
        source: &str,
        source_contents: &Contents,
        changes: &[ParameterChange],
    ) -> Result<String, Stop> {
        let digest = content_digest(source_contents);
        let key: CopyKey = (
            cluster,
            source.to_string(),
            digest.clone(),
            changes
                .iter()
                .map(|c| (c.name.clone(), c.value.clone()))
                .collect(),
        );
        if let Some(done) = self.resolved.get(&key) {
            return done
                .clone()
                .map_err(|m| refuse(copy_call(cluster), code::REFUSED_MANAGED_GROUP, m));
        }
        let mut unusable = Vec::new();
        for attempt in 0..2u8 {
            let name = managed_name(cluster, family, source, &digest, changes, attempt);
            let exists = self.arns.contains_key(&(cluster, name.clone()));
            if !exists {
                // Made here, or found made meanwhile: either way proved below, tag and contents.
                self.create(cluster, source, &name, changes).await?;
            }
            let Some(arn) = self.arns.get(&(cluster, name.clone())).cloned() else {
                unusable.push(format!("{name}: no ARN for it"));
                continue;
            };
            let owner = if self.made_here.contains(&(cluster, name.clone())) {
                Ownership::Ours
            } else {
                ownership(
                    groups::tags(self.aws, &arn)
                        .await?
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str())),
                )
            };
            let existing = self.contents(cluster, &name).await?;
            match classify_existing(owner, &existing, source_contents, changes) {
                Existing::Ready => {}
                Existing::Unfinished(missing) => {
                    set_parameters(self.aws, self.may_act, &name, cluster, &missing).await?;
                    self.contents.insert(
                        (cluster, name.clone()),
                        intended_contents(source_contents, changes),
                    );
                }
                state @ (Existing::Altered(_) | Existing::NotOurs(_)) => {
                    tracing::warn!(group = %name, %state, "managed group name taken; not used");
                    unusable.push(format!("{name} exists but {state}"));
                    continue;
                }
            }
            self.resolved.insert(key, Ok(name.clone()));
            return Ok(name);
        }
        let message = format!(
            "no usable managed copy of {source}: {}; nothing was attached",
            unusable.join("; ")
        );
        self.resolved.insert(key, Err(message.clone()));
        Err(refuse(
            copy_call(cluster),
            code::REFUSED_MANAGED_GROUP,
            message,
        ))
    }

    /// Copies `source` to `name` (tagged, described) and sets `changes`, within the account's
    /// quota. A group of that name made meanwhile (an interrupted run, another replica) is
    /// looked up instead.
    async fn create(
        &mut self,
        cluster: bool,
        source: &str,
        name: &str,
        changes: &[ParameterChange],
    ) -> Result<(), Stop> {
        if is_default_group_name(name) {
            return Err(refuse(
                copy_call(cluster),
                code::REFUSED,
                format!("{name} is a reserved name"),
            ));
        }
        self.reserve(cluster).await?;
        let tag = Tag::builder()
            .key(MANAGED_TAG.0)
            .value(MANAGED_TAG.1)
            .build();
        let description = format!("{DESCRIPTION_PREFIX}{source}");
        self.before_mutating().await?;
        let arn = if cluster {
            self.aws
                .rds
                .copy_db_cluster_parameter_group()
                .source_db_cluster_parameter_group_identifier(source)
                .target_db_cluster_parameter_group_identifier(name)
                .target_db_cluster_parameter_group_description(description)
                .tags(tag)
                .send()
                .await
                .map(|o| {
                    o.db_cluster_parameter_group()
                        .and_then(|g| g.db_cluster_parameter_group_arn())
                        .map(str::to_string)
                })
                .map_err(|e| Failure::from_sdk("CopyDBClusterParameterGroup", e))
        } else {
            self.aws
                .rds
                .copy_db_parameter_group()
                .source_db_parameter_group_identifier(source)
                .target_db_parameter_group_identifier(name)
                .target_db_parameter_group_description(description)
                .tags(tag)
                .send()
                .await
                .map(|o| {
                    o.db_parameter_group()
                        .and_then(|g| g.db_parameter_group_arn())
                        .map(str::to_string)
                })
                .map_err(|e| Failure::from_sdk("CopyDBParameterGroup", e))
        };
        let kind = usize::from(cluster);
        match arn {
            Ok(arn) => {
                self.created[kind] += 1;
                self.made_here.insert((cluster, name.to_string()));
                self.copied_sources.insert((cluster, source.to_string()));
                if let Some(arn) = arn {
                    self.arns.insert((cluster, name.to_string()), arn);
                }
                set_parameters(self.aws, self.may_act, name, cluster, changes).await
            }
            Err(e) if e.code.contains("AlreadyExists") => {
                // Made meanwhile (an interrupted run, another replica): look it up, then prove it.
                if let Some(g) = groups::describe(self.aws, cluster, name).await? {
                    self.arns.insert((cluster, name.to_string()), g.arn);
                }
                Ok(())
            }
            Err(e) if e.code.contains("QuotaExceeded") => {
                self.exhausted[kind] = true;
                Err(Stop::Deferred(quota_message(
                    cluster,
                    None,
                    &self.aws.region,
                )))
            }
            Err(e) => Err(Stop::Failed(e)),
        }
    }

    /// Whether one more group of this kind fits the account's quota (read once per execution;
    /// an unreadable quota is treated as unknown, and AWS's own refusal still stops creation).
    async fn reserve(&mut self, cluster: bool) -> Result<(), Stop> {
        let kind = usize::from(cluster);
        if self.exhausted[kind] {
            return Err(Stop::Deferred(quota_message(
                cluster,
                self.last_quota[kind],
                &self.aws.region,
            )));
        }
        if self.quotas.is_none() {
            self.quotas = Some(match groups::quotas(self.aws).await {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(code = %e.code, "account quotas unreadable; relying on AWS's refusal");
                    GroupQuotas::default()
                }
            });
        }
        if let Some(q) = self.quotas.and_then(|q| q.of(cluster)) {
            let now = groups::Quota {
                used: q.used + self.created[kind],
                max: q.max,
            };
            if now.headroom() == 0 {
                self.exhausted[kind] = true;
                self.last_quota[kind] = Some(now);
                return Err(Stop::Deferred(quota_message(
                    cluster,
                    Some(now),
                    &self.aws.region,
                )));
            }
        }
        Ok(())
    }
}

fn copy_call(cluster: bool) -> &'static str {
    if cluster {
        "CopyDBClusterParameterGroup"
    } else {
        "CopyDBParameterGroup"
    }
}

fn quota_message(cluster: bool, quota: Option<groups::Quota>, region: &str) -> String {
    let what = if cluster {
        "DB cluster parameter groups (not adjustable)"
    } else {
        "DB parameter groups"
    };
    let numbers = quota
        .map(|q| format!(" ({} of {} in use)", q.used, q.max))
        .unwrap_or_default();
    format!(
        "QuotaExceeded: not remediated: the account's quota of {what} in {region} is used up{numbers}; \
         databases that share an existing managed copy were still moved; free unused groups or raise the quota"
    )
}

/// Waits for the rate limit, then asks `may_act` (right before a mutating call).
async fn before_mutating(aws: &AwsRegion, may_act: &dyn MayAct) -> Result<(), Stop> {
    aws.throttle().await;
    may_act.may_act().map_err(Stop::Halted)
}

/// Sets parameters of a group, at most 20 a call. Never on an AWS default group.
async fn set_parameters(
    aws: &AwsRegion,
    may_act: &dyn MayAct,
    group: &str,
    cluster: bool,
    changes: &[ParameterChange],
) -> Result<(), Stop> {
    let call = if cluster {
        "ModifyDBClusterParameterGroup"
    } else {
        "ModifyDBParameterGroup"
    };
    if is_default_group_name(group) {
        return Err(refuse(
            call,
            code::REFUSED,
            format!("{group} is an AWS default group and is never modified"),
        ));
    }
    for chunk in changes.chunks(MAX_PARAMETERS_PER_CALL) {
        let parameters: Vec<Parameter> = chunk
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
        before_mutating(aws, may_act).await?;
        if cluster {
            aws.rds
                .modify_db_cluster_parameter_group()
                .db_cluster_parameter_group_name(group)
                .set_parameters(Some(parameters))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| Failure::from_sdk("ModifyDBClusterParameterGroup", e))?;
        } else {
            aws.rds
                .modify_db_parameter_group()
                .db_parameter_group_name(group)
                .set_parameters(Some(parameters))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| Failure::from_sdk("ModifyDBParameterGroup", e))?;
        }
    }
    Ok(())
}

/// Deletes managed groups no database uses: each only after its tag proves it is pgbaseline's
/// (a group merely named like ours is left alone). A group attached meanwhile is refused by AWS
/// (`InvalidDBParameterGroupState`) and kept. Stops when `may_act` says no. Returns the names
/// deleted.
pub async fn collect_garbage(
    aws: &AwsRegion,
    candidates: &[crate::posture::managed::GroupListing],
    may_act: &dyn MayAct,
) -> Vec<String> {
    let mut deleted = Vec::new();
    for g in candidates {
        if is_default_group_name(&g.name) {
            continue;
        }
        let owner = match groups::tags(aws, &g.arn).await {
            Ok(tags) => ownership(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            Err(e) => {
                tracing::warn!(group = %g.name, code = %e.code, "tags unreadable; group kept");
                continue;
            }
        };
        if owner != Ownership::Ours {
            tracing::info!(group = %g.name, "named like a managed group but not tagged as one; kept");
            continue;
        }
        if let Err(Stop::Halted(reason)) = before_mutating(aws, may_act).await {
            tracing::info!(%reason, "garbage collection stopped");
            break;
        }
        match groups::delete(aws, g.cluster, &g.name).await {
            Ok(()) => {
                tracing::info!(group = %g.name, "deleted unused managed parameter group");
                deleted.push(g.name.clone());
            }
            Err(e) => {
                tracing::info!(group = %g.name, code = %e.code, "unused managed group not deleted")
            }
        }
    }
    deleted
}

/// One `ModifyDBInstance` or `ModifyDBCluster` call with every change of the action, from the
/// neutral [`Modification`] (the one place that says what each change sets).
async fn modify(
    aws: &AwsRegion,
    target: &Target,
    changes: &[AttributeChange],
) -> Result<(), Failure> {
    let m = Modification::of(target, changes);
    let exports = (!m.enable_log_exports.is_empty()).then(|| {
        CloudwatchLogsExportConfiguration::builder()
            .set_enable_log_types(Some(m.enable_log_exports.clone()))
            .build()
    });
    let backup_days = m
        .backup_retention_days
        .map(|days| i32::try_from(days).unwrap_or(35));
    match target {
        Target::Instance(id) => aws
            .rds
            .modify_db_instance()
            .db_instance_identifier(id)
            .apply_immediately(true)
            .set_publicly_accessible(m.publicly_accessible)
            .set_enable_iam_database_authentication(m.iam_auth)
            .set_cloudwatch_logs_export_configuration(exports)
            .set_deletion_protection(m.deletion_protection)
            .set_backup_retention_period(backup_days)
            .set_auto_minor_version_upgrade(m.auto_minor_version_upgrade)
            .set_ca_certificate_identifier(m.ca_certificate)
            .set_manage_master_user_password(m.manage_master_password)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Failure::from_sdk("ModifyDBInstance", e)),
        Target::Cluster(id) => aws
            .rds
            .modify_db_cluster()
            .db_cluster_identifier(id)
            .apply_immediately(true)
            .set_enable_iam_database_authentication(m.iam_auth)
            .set_cloudwatch_logs_export_configuration(exports)
            .set_deletion_protection(m.deletion_protection)
            .set_backup_retention_period(backup_days)
            .set_auto_minor_version_upgrade(m.auto_minor_version_upgrade)
            .set_manage_master_user_password(m.manage_master_password)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Failure::from_sdk("ModifyDBCluster", e)),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_config::retry::RetryConfig;
    use aws_sdk_rds::config::{Credentials, SharedCredentialsProvider};

    use super::*;
    use crate::api::ControlId;
    use crate::posture::plan::Cause;

    /// Clients aimed at a closed local port, without retries: every call fails at once.
    fn unreachable_region() -> AwsRegion {
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing", "testing", None, None, "tests",
            )))
            .retry_config(RetryConfig::disabled())
            .build();
        AwsRegion::from_config(&config, 100).expect("clients")
    }

    fn protect(id: &str) -> Action {
        Action {
            kind: ActionKind::ModifyAttributes {
                target: Target::Instance(id.into()),
                changes: vec![AttributeChange::EnableDeletionProtection],
            },
            causes: vec![Cause {
                database: DbKey {
                    kind: DatabaseKind::Instance,
                    id: id.into(),
                },
                control: ControlId::DeletionProtection,
            }],
        }
    }

    #[tokio::test]
    async fn a_revoked_run_stops_before_its_next_mutating_call() {
        let aws = unreachable_region();
        let plan = Plan {
            actions: vec![protect("a"), protect("b"), protect("c")],
            ..Plan::default()
        };
        // Yes for the first action (asked before it and before its call), then no.
        let asked = AtomicUsize::new(0);
        let may_act = || {
            if asked.fetch_add(1, Ordering::SeqCst) < 2 {
                Ok(())
            } else {
                Err("the policy was deleted".to_string())
            }
        };
        let executed = execute_while(&aws, &Fleet::default(), &plan, &may_act).await;
        assert!(matches!(executed.outcomes[0], Outcome::Failed(_)));
        for outcome in &executed.outcomes[1..] {
            assert_eq!(
                *outcome,
                Outcome::Skipped {
                    reason: "not attempted: the policy was deleted".into()
                }
            );
        }
        assert_eq!(executed.stopped.as_deref(), Some("the policy was deleted"));
        assert_eq!(
            asked.load(Ordering::SeqCst),
            3,
            "asked once more, then stopped"
        );
        assert_eq!(
            aws.stats.mutating_calls(),
            1,
            "only the first action called AWS"
        );
    }

    #[tokio::test]
    async fn a_run_revoked_from_the_start_calls_nothing() {
        let aws = unreachable_region();
        let plan = Plan {
            actions: vec![protect("a"), protect("b")],
            ..Plan::default()
        };
        let no = || Err("this replica is not the leader".to_string());
        let executed = execute_while(&aws, &Fleet::default(), &plan, &no).await;
        assert_eq!(executed.outcomes.len(), 2);
        assert!(
            executed
                .outcomes
                .iter()
                .all(|o| matches!(o, Outcome::Skipped { .. }))
        );
        assert_eq!(aws.stats.mutating_calls(), 0);
    }
}
