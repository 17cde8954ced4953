//! Drift hints from AWS events: an EventBridge message (an RDS event, or a CloudTrail "AWS API
//! Call via CloudTrail" record of an RDS or EC2 write) read into what it may have changed, and
//! which databases of a fleet that concerns. An event is a hint, never the truth: the databases
//! it names are re-read and re-evaluated; the periodic resync stays the backstop (RDS sends its
//! events "on a best effort basis", and most security-relevant changes emit none, only a
//! CloudTrail record).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use serde_json::Value;

use crate::api::DatabaseKind;

use super::model::{Database, Fleet};

/// Something an event says may have changed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// A DB instance (or an Aurora member: the cluster it belongs to is meant).
    Instance(String),
    Cluster(String),
    DbParameterGroup(String),
    ClusterParameterGroup(String),
    SecurityGroup(String),
    NetworkAcl(String),
}

/// Where an event came from (the metrics' `source` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventSource {
    /// An RDS event (`source: aws.rds`, detail-type `RDS … Event`).
    Rds,
    /// A CloudTrail record of an API call.
    CloudTrail,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Rds => "rds",
            EventSource::CloudTrail => "cloudtrail",
        }
    }
}

/// Why an event is not acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// pgbaseline's own call (its session): it already knows what it changed.
    OwnCall,
    /// The call failed (`errorCode`): nothing changed.
    FailedCall,
    /// From an account this operator does not watch.
    UnknownAccount(String),
    /// An event that cannot change a control (e.g. a snapshot, a read).
    Irrelevant(String),
}

impl Ignored {
    /// The metrics' `outcome` label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Ignored::OwnCall => "own_call",
            Ignored::FailedCall => "failed_call",
            Ignored::UnknownAccount(_) => "unknown_account",
            Ignored::Irrelevant(_) => "irrelevant",
        }
    }
}

/// What may have changed, where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    pub source: EventSource,
    pub account: String,
    pub region: String,
    /// The event's `time` (RFC 3339), for the event-to-status latency.
    pub time: Option<String>,
    pub targets: BTreeSet<Target>,
}

/// How one message reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading {
    Hint(Hint),
    Ignored(EventSource, Ignored),
    /// Not an EventBridge event pgbaseline understands: deleted and counted.
    Malformed(String),
}

/// Who the operator is, to recognise its own calls and its accounts.
#[derive(Clone, Debug, Default)]
pub struct Identity {
    /// Prefixes of the operator's own caller ARNs as CloudTrail records them
    /// (`arn:aws:sts::<account>:assumed-role/<role>/<session>`; a prefix ending in the session
    /// name's start covers every session of the operator).
    pub own_arn_prefixes: Vec<String>,
    /// Accounts whose events are acted on; empty: any.
    pub accounts: BTreeSet<String>,
}

/// RDS and EC2 writes that can change what a control checks (the CloudTrail rule in
/// `deploy/events/` lists the same names).
const RDS_CALLS: &[&str] = &[
    "ModifyDBInstance",
    "ModifyDBCluster",
    "ModifyDBParameterGroup",
    "ModifyDBClusterParameterGroup",
    "ResetDBParameterGroup",
    "ResetDBClusterParameterGroup",
    "CreateDBInstance",
    "CreateDBCluster",
    "RestoreDBInstanceFromDBSnapshot",
    "RestoreDBClusterFromSnapshot",
    "RebootDBInstance",
    "AddTagsToResource",
    "RemoveTagsFromResource",
];
const EC2_CALLS: &[&str] = &[
    "AuthorizeSecurityGroupIngress",
    "RevokeSecurityGroupIngress",
    "ModifySecurityGroupRules",
    "CreateNetworkAclEntry",
    "ReplaceNetworkAclEntry",
    "DeleteNetworkAclEntry",
    "ReplaceNetworkAclAssociation",
];

/// The CloudTrail event names pgbaseline acts on, per event source (for the deploy artifacts'
/// tests).
pub fn watched_calls() -> [(&'static str, &'static [&'static str]); 2] {
    [
        ("rds.amazonaws.com", RDS_CALLS),
        ("ec2.amazonaws.com", EC2_CALLS),
    ]
}

/// Reads one SQS message body.
pub fn read(body: &str, identity: &Identity) -> Reading {
    let Ok(event) = serde_json::from_str::<Value>(body) else {
        return Reading::Malformed("not JSON".into());
    };
    let text = |v: &Value| v.as_str().map(str::to_string);
    let (Some(detail_type), Some(account), Some(region)) = (
        text(&event["detail-type"]),
        text(&event["account"]),
        text(&event["region"]),
    ) else {
        return Reading::Malformed(
            "not an EventBridge event (detail-type, account, region)".into(),
        );
    };
    let detail = &event["detail"];
    if !detail.is_object() {
        return Reading::Malformed("no detail".into());
    }
    let time = text(&event["time"]);
    let source = if detail_type == "AWS API Call via CloudTrail" {
        EventSource::CloudTrail
    } else if detail_type.starts_with("RDS ") {
        EventSource::Rds
    } else {
        return Reading::Malformed(format!("unknown detail-type {detail_type:?}"));
    };
    if !identity.accounts.is_empty() && !identity.accounts.contains(&account) {
        return Reading::Ignored(source, Ignored::UnknownAccount(account));
    }
    let targets = match source {
        EventSource::Rds => rds_event_targets(detail),
        EventSource::CloudTrail => {
            if detail.get("errorCode").is_some_and(|c| !c.is_null()) {
                return Reading::Ignored(source, Ignored::FailedCall);
            }
            let caller = detail["userIdentity"]["arn"].as_str().unwrap_or_default();
            if !caller.is_empty()
                && identity
                    .own_arn_prefixes
                    .iter()
                    .any(|p| !p.is_empty() && caller.starts_with(p.as_str()))
            {
                return Reading::Ignored(source, Ignored::OwnCall);
            }
            cloudtrail_targets(detail)
        }
    };
    match targets {
        Ok(targets) if !targets.is_empty() => Reading::Hint(Hint {
            source,
            account,
            region,
            time,
            targets,
        }),
        Ok(_) => Reading::Ignored(source, Ignored::Irrelevant("names no resource".into())),
        Err(Ignored::Irrelevant(why)) => Reading::Ignored(source, Ignored::Irrelevant(why)),
        Err(other) => Reading::Ignored(source, other),
    }
}

/// An RDS event: `SourceType` and `SourceIdentifier` name the resource.
fn rds_event_targets(detail: &Value) -> Result<BTreeSet<Target>, Ignored> {
    let id = detail["SourceIdentifier"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if id.is_empty() {
        return Err(Ignored::Irrelevant(
            "RDS event without SourceIdentifier".into(),
        ));
    }
    let target = match detail["SourceType"].as_str().unwrap_or_default() {
        "DB_INSTANCE" => Target::Instance(id),
        "CLUSTER" | "DB_CLUSTER" => Target::Cluster(id),
        "DB_PARAM" | "DB_PARAMETER_GROUP" => Target::DbParameterGroup(id),
        "DB_CLUSTER_PARAMETER_GROUP" | "CLUSTER_PARAM" => Target::ClusterParameterGroup(id),
        other => return Err(Ignored::Irrelevant(format!("RDS event about {other}"))),
    };
    Ok(BTreeSet::from([target]))
}

/// A CloudTrail record: the request parameters name the resource.
fn cloudtrail_targets(detail: &Value) -> Result<BTreeSet<Target>, Ignored> {
    let name = detail["eventName"].as_str().unwrap_or_default();
    let source = detail["eventSource"].as_str().unwrap_or_default();
    let watched = watched_calls()
        .iter()
        .any(|(s, calls)| *s == source && calls.contains(&name));
    if !watched {
        return Err(Ignored::Irrelevant(format!("{source} {name}")));
    }
    let request = &detail["requestParameters"];
    let param = |key: &str| request[key].as_str().map(str::to_string);
    let mut targets = BTreeSet::new();
    if let Some(id) = param("dBInstanceIdentifier") {
        targets.insert(Target::Instance(id));
    }
    if let Some(id) = param("dBClusterIdentifier") {
        targets.insert(Target::Cluster(id));
    }
    if let Some(name) = param("dBParameterGroupName") {
        targets.insert(Target::DbParameterGroup(name));
    }
    if let Some(name) = param("dBClusterParameterGroupName") {
        targets.insert(Target::ClusterParameterGroup(name));
    }
    if let Some(arn) = param("resourceName") {
        targets.extend(target_of_arn(&arn));
    }
    if let Some(id) = param("groupId") {
        targets.insert(Target::SecurityGroup(id));
    }
    if let Some(id) = param("networkAclId") {
        targets.insert(Target::NetworkAcl(id));
    }
    if name == "ReplaceNetworkAclAssociation" {
        // The request names the association; the response the new ACL.
        if let Some(id) = detail["responseElements"]["networkAclId"].as_str() {
            targets.insert(Target::NetworkAcl(id.to_string()));
        }
    }
    Ok(targets)
}

/// `arn:aws:rds:<region>:<account>:db:<id>` (and `cluster`, `pg`, `cluster-pg`).
pub fn target_of_arn(arn: &str) -> Option<Target> {
    let mut parts = arn.splitn(7, ':');
    let (Some("arn"), Some(_partition), Some("rds")) = (parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let (_region, _account) = (parts.next()?, parts.next()?);
    let (kind, name) = (parts.next()?, parts.next()?.to_string());
    match kind {
        "db" => Some(Target::Instance(name)),
        "cluster" => Some(Target::Cluster(name)),
        "pg" => Some(Target::DbParameterGroup(name)),
        "cluster-pg" => Some(Target::ClusterParameterGroup(name)),
        _ => None,
    }
}

/// The databases of `fleet` an event's targets concern, and the instances or clusters it does
/// not know (created, restored, or not read yet), which a re-read must look up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Affected {
    pub databases: BTreeSet<(DatabaseKind, String)>,
    pub unknown: BTreeSet<Target>,
}

pub fn affected(fleet: &Fleet, targets: &BTreeSet<Target>) -> Affected {
    let mut out = Affected::default();
    for target in targets {
        let before = out.databases.len();
        for db in &fleet.databases {
            let hit = match target {
                Target::Instance(id) => {
                    (db.kind == DatabaseKind::Instance && &db.id == id)
                        || db.members.iter().any(|m| &m.id == id)
                }
                Target::Cluster(id) => db.kind == DatabaseKind::Cluster && &db.id == id,
                Target::DbParameterGroup(name) => db
                    .parameter_group
                    .as_ref()
                    .is_some_and(|g| !g.cluster && &g.name == name),
                Target::ClusterParameterGroup(name) => db
                    .parameter_group
                    .as_ref()
                    .is_some_and(|g| g.cluster && &g.name == name),
                Target::SecurityGroup(id) => db.security_groups.iter().any(|g| &g.id == id),
                Target::NetworkAcl(id) => db.nacl_entries.iter().any(|e| &e.acl_id == id),
            };
            if hit {
                out.databases.insert((db.kind, db.id.clone()));
            }
        }
        let names_a_database = matches!(target, Target::Instance(_) | Target::Cluster(_));
        if out.databases.len() == before && names_a_database {
            out.unknown.insert(target.clone());
        }
    }
    out
}

/// The prefix that covers every session of the identity `arn` as CloudTrail records callers:
/// for an assumed role (`arn:aws:sts::<account>:assumed-role/<role>/<session>`) the role, so
/// every session of the operator's role counts (IRSA and Pod Identity name sessions at random);
/// for anything else the ARN itself.
pub fn own_arn_prefix(arn: &str) -> String {
    match arn.split_once(":assumed-role/") {
        Some((head, rest)) => match rest.split_once('/') {
            Some((role, _session)) => format!("{head}:assumed-role/{role}/"),
            None => arn.to_string(),
        },
        None => arn.to_string(),
    }
}

/// The prefix of the sessions the operator opens with `role_arn` in an account
/// (`pgbaseline-<replica>-<AwsAccount>`): `arn:aws:iam::<account>:role/<path/><name>` becomes
/// `arn:aws:sts::<account>:assumed-role/<name>/pgbaseline-`.
pub fn session_arn_prefix(role_arn: &str) -> Option<String> {
    let mut parts = role_arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(_), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let name = resource.strip_prefix("role/")?.rsplit('/').next()?;
    (!name.is_empty())
        .then(|| format!("arn:{partition}:sts::{account}:assumed-role/{name}/pgbaseline-"))
}

/// Hints gathered per key until their debounce is over, with the messages that brought them
/// (deleted once the batch is handled). Time is an input: no clock here.
#[derive(Debug)]
pub struct Debounce<K, M> {
    quiet: Duration,
    batches: BTreeMap<K, Batch<M>>,
}

/// What a key's events said, since its first.
#[derive(Debug)]
pub struct Batch<M> {
    pub targets: BTreeSet<Target>,
    /// When the first event of the batch arrived.
    pub since: Instant,
    /// The earliest event time (the latency is counted from it).
    pub earliest: Option<DateTime<Utc>>,
    pub messages: Vec<M>,
}

impl<K: Ord + Clone, M> Debounce<K, M> {
    /// Batches are handled `quiet` after their first event: a burst about one key costs one
    /// re-read.
    pub fn new(quiet: Duration) -> Self {
        Debounce {
            quiet,
            batches: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, key: K, hint: &Hint, message: M, now: Instant) {
        let batch = self.batches.entry(key).or_insert_with(|| Batch {
            targets: BTreeSet::new(),
            since: now,
            earliest: None,
            messages: Vec::new(),
        });
        batch.targets.extend(hint.targets.iter().cloned());
        let time = hint
            .time
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        batch.earliest = match (batch.earliest, time) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        batch.messages.push(message);
    }

    /// The batches whose quiet time is over at `now`, removed.
    pub fn due(&mut self, now: Instant) -> Vec<(K, Batch<M>)> {
        let keys: Vec<K> = self
            .batches
            .iter()
            .filter(|(_, b)| now.saturating_duration_since(b.since) >= self.quiet)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.batches.remove(&k).map(|b| (k, b)))
            .collect()
    }

    /// How long until the next batch is due (`None`: nothing pending).
    pub fn next_due(&self, now: Instant) -> Option<Duration> {
        self.batches
            .values()
            .map(|b| (b.since + self.quiet).saturating_duration_since(now))
            .min()
    }
}

/// Whether a policy's selector picks any database of `read` in the fleet before or after a
/// re-read (a deleted database was selected before, a new one may be after): only such
/// policies are reconciled after an event.
pub fn concerns(
    selector: &crate::api::Selector,
    fleets: [&Fleet; 2],
    read: &BTreeSet<(DatabaseKind, String)>,
) -> bool {
    fleets.iter().any(|fleet| {
        fleet.databases.iter().any(|db| {
            read.contains(&(db.kind, db.id.clone())) && super::select::selects(selector, db)
        })
    })
}

/// The instances and clusters a re-read lists by identifier for an event's targets: the
/// databases they concern in the last sweep, and the ones it names that the sweep did not know
/// (created or restored since).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToReread {
    pub instances: BTreeSet<String>,
    pub clusters: BTreeSet<String>,
}

pub fn to_reread(fleet: &Fleet, targets: &BTreeSet<Target>) -> ToReread {
    let affected = affected(fleet, targets);
    let mut out = ToReread::default();
    for (kind, id) in affected.databases {
        match kind {
            DatabaseKind::Instance => out.instances.insert(id),
            DatabaseKind::Cluster => out.clusters.insert(id),
        };
    }
    for target in affected.unknown {
        match target {
            Target::Instance(id) => {
                out.instances.insert(id);
            }
            Target::Cluster(id) => {
                out.clusters.insert(id);
            }
            _ => {}
        }
    }
    out
}

/// `databases` (a sweep's) with every database in `read` replaced by its `fresh` reading, in
/// place; one that is in `read` but not in `fresh` is gone (deleted since), one in `fresh` the
/// sweep did not have is added at the end.
pub fn splice(
    databases: &[Database],
    fresh: Vec<Database>,
    read: &BTreeSet<(DatabaseKind, String)>,
) -> Vec<Database> {
    let mut fresh: std::collections::BTreeMap<(DatabaseKind, String), Database> = fresh
        .into_iter()
        .map(|db| ((db.kind, db.id.clone()), db))
        .collect();
    let mut out = Vec::with_capacity(databases.len() + fresh.len());
    for db in databases {
        let key = (db.kind, db.id.clone());
        if let Some(newer) = fresh.remove(&key) {
            out.push(newer);
        } else if !read.contains(&key) {
            out.push(db.clone());
        }
    }
    out.extend(fresh.into_values());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::posture::testing;
    use serde_json::json;

    fn identity() -> Identity {
        Identity {
            own_arn_prefixes: vec![
                "arn:aws:sts::111122223333:assumed-role/pgbaseline-operator/".into(),
            ],
            accounts: BTreeSet::from(["111122223333".to_string()]),
        }
    }

    fn cloudtrail(source: &str, name: &str, request: Value, caller: &str) -> String {
        json!({
            "version": "0", "id": "e1", "detail-type": "AWS API Call via CloudTrail",
            "source": if source == "ec2.amazonaws.com" { "aws.ec2" } else { "aws.rds" },
            "account": "111122223333", "time": "2026-12-02T05:00:00Z", "region": "eu-west-1",
            "resources": [],
            "detail": {
                "eventSource": source, "eventName": name,
                "userIdentity": {"type": "AssumedRole", "arn": caller},
                "requestParameters": request,
            },
        })
        .to_string()
    }

    const SOMEONE: &str = "arn:aws:sts::111122223333:assumed-role/admin/alice";

    fn hint(reading: Reading) -> BTreeSet<Target> {
        match reading {
            Reading::Hint(h) => h.targets,
            other => panic!("expected a hint, got {other:?}"),
        }
    }

    #[test]
    fn cloudtrail_writes_name_their_resources() {
        let id = identity();
        let t = hint(read(
            &cloudtrail(
                "rds.amazonaws.com",
                "ModifyDBParameterGroup",
                json!({"dBParameterGroupName": "pg15-custom", "parameters": []}),
                SOMEONE,
            ),
            &id,
        ));
        assert_eq!(
            t,
            BTreeSet::from([Target::DbParameterGroup("pg15-custom".into())])
        );
        let t = hint(read(
            &cloudtrail(
                "ec2.amazonaws.com",
                "AuthorizeSecurityGroupIngress",
                json!({"groupId": "sg-1"}),
                SOMEONE,
            ),
            &id,
        ));
        assert_eq!(t, BTreeSet::from([Target::SecurityGroup("sg-1".into())]));
        let t = hint(read(
            &cloudtrail(
                "rds.amazonaws.com",
                "AddTagsToResource",
                json!({"resourceName": "arn:aws:rds:eu-west-1:111122223333:cluster:ledger"}),
                SOMEONE,
            ),
            &id,
        ));
        assert_eq!(t, BTreeSet::from([Target::Cluster("ledger".into())]));
    }

    #[test]
    fn own_failed_foreign_and_irrelevant_events_are_ignored() {
        let id = identity();
        let own = cloudtrail(
            "rds.amazonaws.com",
            "ModifyDBInstance",
            json!({"dBInstanceIdentifier": "orders"}),
            "arn:aws:sts::111122223333:assumed-role/pgbaseline-operator/pgbaseline-ns-policy",
        );
        assert_eq!(
            read(&own, &id),
            Reading::Ignored(EventSource::CloudTrail, Ignored::OwnCall)
        );
        let mut failed: Value = serde_json::from_str(&cloudtrail(
            "rds.amazonaws.com",
            "ModifyDBInstance",
            json!({"dBInstanceIdentifier": "orders"}),
            SOMEONE,
        ))
        .unwrap_or_default();
        failed["detail"]["errorCode"] = json!("AccessDenied");
        assert_eq!(
            read(&failed.to_string(), &id),
            Reading::Ignored(EventSource::CloudTrail, Ignored::FailedCall)
        );
        let mut foreign = failed.clone();
        foreign["account"] = json!("999999999999");
        assert!(matches!(
            read(&foreign.to_string(), &id),
            Reading::Ignored(_, Ignored::UnknownAccount(a)) if a == "999999999999"
        ));
        let snapshot = cloudtrail(
            "rds.amazonaws.com",
            "CreateDBSnapshot",
            json!({"dBInstanceIdentifier": "orders"}),
            SOMEONE,
        );
        assert!(matches!(
            read(&snapshot, &id),
            Reading::Ignored(_, Ignored::Irrelevant(_))
        ));
    }

    #[test]
    fn rds_events_name_their_source() {
        let event = json!({
            "version": "0", "id": "e2", "detail-type": "RDS DB Parameter Group Event",
            "source": "aws.rds", "account": "111122223333", "time": "2026-12-02T05:00:00Z",
            "region": "eu-west-1", "resources": ["arn:aws:rds:eu-west-1:111122223333:pg:pg15-custom"],
            "detail": {"EventCategories": ["configuration change"], "SourceType": "DB_PARAM",
                       "SourceIdentifier": "pg15-custom", "EventID": "RDS-EVENT-0037",
                       "Message": "Updated parameter rds.force_ssl to 0 with apply method immediate"},
        });
        assert_eq!(
            hint(read(&event.to_string(), &identity())),
            BTreeSet::from([Target::DbParameterGroup("pg15-custom".into())])
        );
    }

    #[test]
    fn malformed_messages_are_recognised() {
        let id = identity();
        for body in [
            "",
            "{",
            "[]",
            r#"{"detail-type": "x"}"#,
            r#"{"detail-type": "Something", "account": "111122223333", "region": "r", "detail": {}}"#,
        ] {
            assert!(matches!(read(body, &id), Reading::Malformed(_)), "{body}");
        }
    }

    #[test]
    fn targets_fan_out_to_the_databases_that_use_them() {
        use crate::posture::model::{NaclEntry, SecurityGroup};
        let sg = |id: &str| SecurityGroup {
            id: id.into(),
            rules: Vec::new(),
            shared_with: Default::default(),
        };
        let mut a = testing::instance("a");
        a.security_groups = vec![sg("sg-app"), sg("sg-a")];
        let mut b = testing::instance("b");
        b.parameter_group = Some(testing::group("shared", "postgres16", false));
        b.security_groups = vec![sg("sg-app")];
        b.nacl_entries = vec![NaclEntry {
            acl_id: "acl-1".into(),
            rule_number: 100,
            protocol: "-1".into(),
            from_port: None,
            to_port: None,
            cidr: "0.0.0.0/0".parse().expect("cidr"),
            allow: true,
        }];
        let mut c = testing::instance("c");
        c.parameter_group = Some(testing::group("shared", "postgres16", false));
        let ledger = testing::cluster("ledger", &["ledger-1", "ledger-2"]);
        let fleet = Fleet {
            databases: vec![a, b, c, ledger],
            ..Fleet::default()
        };
        let ids = |targets: &[Target]| -> Vec<String> {
            affected(&fleet, &targets.iter().cloned().collect())
                .databases
                .into_iter()
                .map(|(_, id)| id)
                .collect()
        };
        assert_eq!(
            ids(&[Target::DbParameterGroup("shared".into())]),
            ["b", "c"]
        );
        assert_eq!(
            ids(&[Target::DbParameterGroup("default.postgres16".into())]),
            ["a"]
        );
        assert_eq!(
            ids(&[Target::ClusterParameterGroup(
                "default.aurora-postgresql16".into()
            )]),
            ["ledger"]
        );
        assert_eq!(ids(&[Target::SecurityGroup("sg-app".into())]), ["a", "b"]);
        assert_eq!(ids(&[Target::NetworkAcl("acl-1".into())]), ["b"]);
        // An Aurora member's id means its cluster.
        assert_eq!(ids(&[Target::Instance("ledger-2".into())]), ["ledger"]);
        assert!(ids(&[Target::SecurityGroup("sg-other".into())]).is_empty());
        let unknown = affected(&fleet, &BTreeSet::from([Target::Instance("new-db".into())]));
        assert!(unknown.databases.is_empty());
        assert_eq!(
            unknown.unknown,
            BTreeSet::from([Target::Instance("new-db".into())])
        );
    }

    #[test]
    fn a_reread_lists_the_concerned_databases_and_the_unknown_ones_it_names() {
        let mut b = testing::instance("b");
        b.parameter_group = Some(testing::group("shared", "postgres16", false));
        let mut c = testing::instance("c");
        c.parameter_group = Some(testing::group("shared", "postgres16", false));
        let fleet = Fleet {
            databases: vec![
                testing::instance("a"),
                b,
                c,
                testing::cluster("ledger", &["ledger-1"]),
            ],
            ..Fleet::default()
        };
        let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let wanted = to_reread(
            &fleet,
            &BTreeSet::from([
                Target::DbParameterGroup("shared".into()),
                Target::Instance("ledger-1".into()),
                Target::Instance("new-db".into()),
                Target::Cluster("new-cluster".into()),
                Target::SecurityGroup("sg-nobody-uses".into()),
            ]),
        );
        assert_eq!(wanted.instances, set(&["b", "c", "new-db"]));
        assert_eq!(wanted.clusters, set(&["ledger", "new-cluster"]));
        assert_eq!(
            to_reread(
                &fleet,
                &BTreeSet::from([Target::NetworkAcl("acl-x".into())])
            ),
            ToReread::default()
        );
    }

    #[test]
    fn a_splice_replaces_in_place_drops_the_deleted_and_adds_the_new() {
        let old = vec![
            testing::instance("a"),
            testing::instance("b"),
            testing::instance("c"),
        ];
        let mut b2 = testing::instance("b");
        b2.attributes.publicly_accessible = !old[1].attributes.publicly_accessible;
        let read = BTreeSet::from([
            (DatabaseKind::Instance, "b".to_string()),
            (DatabaseKind::Instance, "c".to_string()),
            (DatabaseKind::Instance, "d".to_string()),
        ]);
        let out = splice(&old, vec![testing::instance("d"), b2.clone()], &read);
        let ids: Vec<&str> = out.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "d"], "c was deleted, d is new");
        assert_eq!(out[1], b2);
        assert_eq!(out[0], old[0]);
        // Nothing read: nothing changes.
        assert_eq!(splice(&old, Vec::new(), &BTreeSet::new()), old);
    }

    #[test]
    fn own_sessions_are_recognised_by_role_not_by_session_name() {
        assert_eq!(
            own_arn_prefix(
                "arn:aws:sts::111122223333:assumed-role/pgbaseline-operator/botocore-session-17"
            ),
            "arn:aws:sts::111122223333:assumed-role/pgbaseline-operator/"
        );
        assert_eq!(
            own_arn_prefix("arn:aws:iam::123456789012:user/pgbaseline"),
            "arn:aws:iam::123456789012:user/pgbaseline"
        );
        assert_eq!(
            session_arn_prefix("arn:aws:iam::222222222222:role/platform/pgbaseline-audit"),
            Some("arn:aws:sts::222222222222:assumed-role/pgbaseline-audit/pgbaseline-".into())
        );
        assert_eq!(session_arn_prefix("arn:aws:iam::222222222222:user/x"), None);
        assert_eq!(session_arn_prefix("not an arn"), None);
    }

    fn hint_at(targets: &[Target], time: &str) -> Hint {
        Hint {
            source: EventSource::CloudTrail,
            account: "111122223333".into(),
            region: "eu-west-1".into(),
            time: Some(time.into()),
            targets: targets.iter().cloned().collect(),
        }
    }

    #[test]
    fn a_burst_about_one_key_is_one_batch_handled_after_the_quiet_time() {
        let quiet = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut d: Debounce<&str, u32> = Debounce::new(quiet);
        assert_eq!(d.next_due(t0), None);
        let group = Target::DbParameterGroup("pg".into());
        for i in 0..10u32 {
            d.add(
                "eu-west-1",
                &hint_at(
                    std::slice::from_ref(&group),
                    &format!("2026-12-02T05:00:{:02}Z", 10 - i),
                ),
                i,
                t0 + Duration::from_millis(100 * u64::from(i)),
            );
        }
        d.add(
            "us-east-1",
            &hint_at(
                &[Target::SecurityGroup("sg-1".into())],
                "2026-12-02T05:00:30Z",
            ),
            99,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(d.next_due(t0), Some(quiet));
        assert!(d.due(t0 + Duration::from_millis(1999)).is_empty());
        let due = d.due(t0 + quiet);
        assert_eq!(due.len(), 1);
        let (key, batch) = &due[0];
        assert_eq!(*key, "eu-west-1");
        assert_eq!(batch.targets, BTreeSet::from([group]));
        assert_eq!(batch.messages, (0..10).collect::<Vec<_>>());
        assert_eq!(
            batch.earliest.map(|t| t.to_rfc3339()),
            Some("2026-12-02T05:00:01+00:00".into())
        );
        assert_eq!(
            d.next_due(t0 + quiet),
            Some(Duration::from_secs(1)),
            "the other key's batch is due a second later"
        );
        assert_eq!(d.due(t0 + Duration::from_secs(3)).len(), 1);
        assert_eq!(d.next_due(t0), None);
    }

    #[test]
    fn only_policies_selecting_a_database_read_again_are_concerned() {
        let selector = |ids: &[&str]| -> crate::api::Selector {
            serde_json::from_value(json!({ "instanceIdentifiers": ids })).expect("selector")
        };
        let before = Fleet {
            databases: vec![testing::instance("a"), testing::instance("gone")],
            ..Fleet::default()
        };
        let after = Fleet {
            databases: vec![testing::instance("a"), testing::instance("new")],
            ..Fleet::default()
        };
        let read: BTreeSet<_> = ["gone", "new"]
            .iter()
            .map(|id| (DatabaseKind::Instance, id.to_string()))
            .collect();
        assert!(concerns(&selector(&["gone"]), [&before, &after], &read));
        assert!(concerns(&selector(&["new"]), [&before, &after], &read));
        assert!(!concerns(&selector(&["a"]), [&before, &after], &read));
    }
}
