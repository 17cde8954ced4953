//! Parameter-group calls beyond the inventory's filtered reads: the region's group listing, full
//! contents, tags, the account's quotas and deletion. The managed-group logic that uses them
//! lives in `posture::managed` (pure) and the executor.

use aws_sdk_rds::types::{DbClusterParameterGroup, DbParameterGroup, Filter, Parameter};

use crate::posture::managed::{Contents, FullParameter, GroupListing};
use crate::posture::model::ApplyType;

use super::{AwsRegion, Failure};

/// Page size of the listing calls (the AWS maximum).
const PAGE: i32 = 100;

/// The parameters of one group, all of them or those named in `filter`.
pub(crate) async fn parameters(
    aws: &AwsRegion,
    cluster: bool,
    name: &str,
    filter: Option<&[&str]>,
) -> Result<Vec<Parameter>, Failure> {
    let filters = filter.map(|names| {
        vec![
            Filter::builder()
                .name("parameter-name")
                .set_values(Some(names.iter().map(|s| s.to_string()).collect()))
                .build(),
        ]
    });
    let rds = &aws.rds;
    let filters = &filters;
    aws.paged(|marker| async move {
        if cluster {
            let page = rds
                .describe_db_cluster_parameters()
                .db_cluster_parameter_group_name(name)
                .set_filters(filters.clone())
                .max_records(PAGE)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| Failure::from_sdk("DescribeDBClusterParameters", e))?;
            Ok((
                page.parameters().to_vec(),
                page.marker().map(str::to_string),
            ))
        } else {
            let page = rds
                .describe_db_parameters()
                .db_parameter_group_name(name)
                .set_filters(filters.clone())
                .max_records(PAGE)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| Failure::from_sdk("DescribeDBParameters", e))?;
            Ok((
                page.parameters().to_vec(),
                page.marker().map(str::to_string),
            ))
        }
    })
    .await
}

/// Every parameter of a group with its value: what attaching it would put in effect.
pub async fn contents(aws: &AwsRegion, cluster: bool, name: &str) -> Result<Contents, Failure> {
    Ok(parameters(aws, cluster, name, None)
        .await?
        .into_iter()
        .filter_map(|p| {
            let name = p.parameter_name()?.to_string();
            let apply_type = match p.apply_type() {
                Some(t) if t.eq_ignore_ascii_case("dynamic") => ApplyType::Dynamic,
                _ => ApplyType::Static,
            };
            Some((
                name,
                FullParameter {
                    value: p.parameter_value().map(str::to_string),
                    apply_type,
                },
            ))
        })
        .collect())
}

fn db_listing(g: &DbParameterGroup) -> Option<GroupListing> {
    Some(GroupListing {
        name: g.db_parameter_group_name()?.to_string(),
        family: g
            .db_parameter_group_family()
            .unwrap_or_default()
            .to_string(),
        cluster: false,
        arn: g.db_parameter_group_arn().unwrap_or_default().to_string(),
        description: g.description().unwrap_or_default().to_string(),
    })
}

fn cluster_listing(g: &DbClusterParameterGroup) -> Option<GroupListing> {
    Some(GroupListing {
        name: g.db_cluster_parameter_group_name()?.to_string(),
        family: g
            .db_parameter_group_family()
            .unwrap_or_default()
            .to_string(),
        cluster: true,
        arn: g
            .db_cluster_parameter_group_arn()
            .unwrap_or_default()
            .to_string(),
        description: g.description().unwrap_or_default().to_string(),
    })
}

/// Every DB and DB cluster parameter group of the region (one call per hundred groups).
pub async fn list(aws: &AwsRegion) -> Result<Vec<GroupListing>, Failure> {
    let rds = &aws.rds;
    let mut out: Vec<GroupListing> = aws
        .paged(|marker| async move {
            let page = rds
                .describe_db_parameter_groups()
                .max_records(PAGE)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| Failure::from_sdk("DescribeDBParameterGroups", e))?;
            let groups = page
                .db_parameter_groups()
                .iter()
                .filter_map(db_listing)
                .collect();
            Ok((groups, page.marker().map(str::to_string)))
        })
        .await?;
    let clusters: Vec<GroupListing> = aws
        .paged(|marker| async move {
            let page = rds
                .describe_db_cluster_parameter_groups()
                .max_records(PAGE)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| Failure::from_sdk("DescribeDBClusterParameterGroups", e))?;
            let groups = page
                .db_cluster_parameter_groups()
                .iter()
                .filter_map(cluster_listing)
                .collect();
            Ok((groups, page.marker().map(str::to_string)))
        })
        .await?;
    out.extend(clusters);
    Ok(out)
}

/// One group by name, when it exists.
pub async fn describe(
    aws: &AwsRegion,
    cluster: bool,
    name: &str,
) -> Result<Option<GroupListing>, Failure> {
    aws.throttle().await;
    let found = if cluster {
        aws.rds
            .describe_db_cluster_parameter_groups()
            .db_cluster_parameter_group_name(name)
            .send()
            .await
            .map(|o| {
                o.db_cluster_parameter_groups()
                    .first()
                    .and_then(cluster_listing)
            })
            .map_err(|e| Failure::from_sdk("DescribeDBClusterParameterGroups", e))
    } else {
        aws.rds
            .describe_db_parameter_groups()
            .db_parameter_group_name(name)
            .send()
            .await
            .map(|o| o.db_parameter_groups().first().and_then(db_listing))
            .map_err(|e| Failure::from_sdk("DescribeDBParameterGroups", e))
    };
    match found {
        Err(e) if e.class == super::ErrorClass::NotFound => Ok(None),
        other => other,
    }
}

/// The tags of a resource, by ARN.
pub async fn tags(aws: &AwsRegion, arn: &str) -> Result<Vec<(String, String)>, Failure> {
    aws.throttle().await;
    let out = aws
        .rds
        .list_tags_for_resource()
        .resource_name(arn)
        .send()
        .await
        .map_err(|e| Failure::from_sdk("ListTagsForResource", e))?;
    Ok(super::convert::tag_pairs(out.tag_list()).collect())
}

/// Used and maximum of one account quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub used: i64,
    pub max: i64,
}

impl Quota {
    pub fn headroom(self) -> i64 {
        (self.max - self.used).max(0)
    }
}

/// The parameter-group quotas of the account in this region (`DescribeAccountAttributes`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupQuotas {
    pub db: Option<Quota>,
    pub cluster: Option<Quota>,
}

impl GroupQuotas {
    pub fn of(&self, cluster: bool) -> Option<Quota> {
        if cluster { self.cluster } else { self.db }
    }
}

pub async fn quotas(aws: &AwsRegion) -> Result<GroupQuotas, Failure> {
    aws.throttle().await;
    let out = aws
        .rds
        .describe_account_attributes()
        .send()
        .await
        .map_err(|e| Failure::from_sdk("DescribeAccountAttributes", e))?;
    let mut quotas = GroupQuotas::default();
    for q in out.account_quotas() {
        let quota = Quota {
            used: q.used().unwrap_or(0),
            max: q.max().unwrap_or(0),
        };
        match q.account_quota_name() {
            Some("DBParameterGroups") => quotas.db = Some(quota),
            Some("DBClusterParameterGroups") => quotas.cluster = Some(quota),
            _ => {}
        }
    }
    Ok(quotas)
}

/// Deletes a parameter group. The caller waits for the rate limit (and asks whether it may
/// still act) right before.
pub async fn delete(aws: &AwsRegion, cluster: bool, name: &str) -> Result<(), Failure> {
    if cluster {
        aws.rds
            .delete_db_cluster_parameter_group()
            .db_cluster_parameter_group_name(name)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Failure::from_sdk("DeleteDBClusterParameterGroup", e))
    } else {
        aws.rds
            .delete_db_parameter_group()
            .db_parameter_group_name(name)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Failure::from_sdk("DeleteDBParameterGroup", e))
    }
}
