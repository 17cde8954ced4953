//! Managed parameter groups: content-addressed copies that databases share.
//!
//! A database whose parameters must change and whose group may not be changed in place (an AWS
//! default group, a group shared with databases outside the selection, or a group pgbaseline made)
//! moves to a managed copy of its current group with exactly the required values set. The copy's
//! name is derived from what it holds — the group it was copied from, that group's full contents
//! and the changes — so every database that starts from the same group and needs the same
//! tightening shares one copy, and the number of groups grows with the distinct
//! (source group, family, required values) combinations, not with databases.
//!
//! Names are predictable, so a name alone proves nothing: before an existing group is reused it
//! must carry pgbaseline's tag, and before any group is attached its full contents are compared
//! with the database's current group. Attaching changes exactly the planned parameters, each to a
//! stricter value, and nothing else ([`attach_is_safe`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::DatabaseKind;

use super::model::{ApplyType, Fleet};
use super::plan::{ApplyMethod, ParameterChange};
use super::values::is_tightening;

/// The tag that marks groups pgbaseline created. A policy cannot set tags, so naming a group
/// cannot forge it.
pub const MANAGED_TAG: (&str, &str) = ("pgbaseline.io/managed", "true");
/// Every group pgbaseline creates starts with this.
pub const MANAGED_PREFIX: &str = "pgbaseline-";
/// Description of groups made by this version: `pgbaseline managed copy of <source>`.
pub const DESCRIPTION_PREFIX: &str = "pgbaseline managed copy of ";
/// Description of the per-database copies made by the first version: `pgbaseline: copy of <source>`.
pub const LEGACY_DESCRIPTION_PREFIX: &str = "pgbaseline: copy of ";

/// One parameter of a group as `DescribeDB(Cluster)Parameters` lists it without a filter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullParameter {
    pub value: Option<String>,
    pub apply_type: ApplyType,
}

/// Every parameter of a group, by name.
pub type Contents = BTreeMap<String, FullParameter>;

/// A parameter group of the region as `DescribeDB(Cluster)ParameterGroups` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupListing {
    pub name: String,
    pub family: String,
    pub cluster: bool,
    pub arn: String,
    pub description: String,
}

impl GroupListing {
    /// The source a first-version per-database copy was made from.
    pub fn legacy_source(&self) -> Option<&str> {
        self.description
            .strip_prefix(LEGACY_DESCRIPTION_PREFIX)
            .filter(|s| !s.is_empty())
    }

    /// Named like a group pgbaseline makes (ownership still needs the tag).
    pub fn looks_managed(&self) -> bool {
        self.name.starts_with(MANAGED_PREFIX)
    }
}

/// Hex SHA-256 of the values of a group (apply types and order do not matter).
pub fn content_digest(contents: &Contents) -> String {
    let mut hasher = Sha256::new();
    for (name, p) in contents {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        match &p.value {
            Some(v) => {
                hasher.update([1]);
                hasher.update(v.as_bytes());
            }
            None => hasher.update([2]),
        }
        hasher.update([0]);
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The name of the managed copy of `source` (whose values digest to `source_digest`) with
/// `changes` set. `attempt` 0 is the usual name; 1 is used only when a group of the usual name
/// exists but cannot be used (not pgbaseline's, or changed after creation).
///
/// RDS group names: letters, digits and hyphens, starting with a letter, no double or trailing
/// hyphen, at most 255 characters.
pub fn managed_name(
    cluster: bool,
    family: &str,
    source: &str,
    source_digest: &str,
    changes: &[ParameterChange],
    attempt: u8,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(if cluster {
        b"cluster\0"
    } else {
        b"db\0\0\0\0\0\0"
    });
    for part in [family, source, source_digest] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let sorted: BTreeMap<&str, &str> = changes
        .iter()
        .map(|c| (c.name.as_str(), c.value.as_str()))
        .collect();
    for (name, value) in sorted {
        hasher.update(name.as_bytes());
        hasher.update([b'=']);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    let digest = hex(&hasher.finalize());
    let family: String = family
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("{MANAGED_PREFIX}{family}-{}", &digest[..16]);
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    if attempt > 0 {
        name = format!("{name}-{attempt}");
    }
    name
}

/// What `source` becomes with `changes` set.
pub fn intended_contents(source: &Contents, changes: &[ParameterChange]) -> Contents {
    let mut out = source.clone();
    for change in changes {
        let entry = out.entry(change.name.clone()).or_insert(FullParameter {
            value: None,
            apply_type: match change.method {
                ApplyMethod::Immediate => ApplyType::Dynamic,
                ApplyMethod::PendingReboot => ApplyType::Static,
            },
        });
        entry.value = Some(change.value.clone());
    }
    out
}

/// One parameter whose value differs between two groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub name: String,
    pub expected: Option<String>,
    pub found: Option<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        write!(
            f,
            "{} is {} where {} was expected",
            self.name,
            show(&self.found),
            show(&self.expected)
        )
    }
}

/// The differences, at most `limit` of them spelled out.
pub fn describe_differences(differences: &[Difference], limit: usize) -> String {
    let mut text: Vec<String> = differences
        .iter()
        .take(limit)
        .map(Difference::to_string)
        .collect();
    if differences.len() > limit {
        text.push(format!("and {} more", differences.len() - limit));
    }
    text.join(", ")
}

fn value_of<'a>(contents: &'a Contents, name: &str) -> Option<&'a str> {
    contents.get(name).and_then(|p| p.value.as_deref())
}

/// Every parameter whose value differs between `expected` and `found`.
pub fn differences(expected: &Contents, found: &Contents) -> Vec<Difference> {
    let names: BTreeSet<&String> = expected.keys().chain(found.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let e = value_of(expected, name);
            let f = value_of(found, name);
            (e != f).then(|| Difference {
                name: name.clone(),
                expected: e.map(str::to_string),
                found: f.map(str::to_string),
            })
        })
        .collect()
}

/// Why attaching a group was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsafe {
    /// A parameter that is not planned would change.
    Unplanned(Vec<Difference>),
    /// A planned parameter would not end at a stricter value.
    NotTighter(Vec<Difference>),
}

impl fmt::Display for Unsafe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsafe::Unplanned(d) => write!(
                f,
                "it differs from the current group beyond the planned changes: {}",
                describe_differences(d, 3)
            ),
            Unsafe::NotTighter(d) => write!(
                f,
                "a planned value would not be stricter: {}",
                describe_differences(d, 3)
            ),
        }
    }
}

/// The proof required before a group is attached in place of `current`: every parameter of
/// `candidate` equals `current`'s, except the planned ones, which hold the planned value and
/// that value is at least as strict as the current one. Compares every parameter, not only the
/// controlled ones.
pub fn attach_is_safe(
    current: &Contents,
    candidate: &Contents,
    planned: &[ParameterChange],
) -> Result<(), Unsafe> {
    let planned: BTreeMap<&str, &str> = planned
        .iter()
        .map(|c| (c.name.as_str(), c.value.as_str()))
        .collect();
    let mut unplanned = Vec::new();
    let mut not_tighter = Vec::new();
    for d in differences(current, candidate) {
        match planned.get(d.name.as_str()) {
            Some(value) if d.found.as_deref() == Some(*value) => {
                if !is_tightening(&d.name, d.expected.as_deref(), value) {
                    not_tighter.push(d);
                }
            }
            _ => unplanned.push(d),
        }
    }
    if !unplanned.is_empty() {
        Err(Unsafe::Unplanned(unplanned))
    } else if !not_tighter.is_empty() {
        Err(Unsafe::NotTighter(not_tighter))
    } else {
        Ok(())
    }
}

/// Whether a group's tags prove that pgbaseline made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    Ours,
    /// No managed tag at all.
    Untagged,
    /// The managed tag key with another value.
    OtherValue(String),
}

pub fn ownership<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Ownership {
    let mut found = Ownership::Untagged;
    for (key, value) in tags {
        if key == MANAGED_TAG.0 {
            if value == MANAGED_TAG.1 {
                return Ownership::Ours;
            }
            found = Ownership::OtherValue(value.to_string());
        }
    }
    found
}

/// What an existing group of a managed name is, compared with what it must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Ours and exactly as intended: reuse it.
    Ready,
    /// Ours, copied but interrupted before every change was set: set these, then reuse it.
    Unfinished(Vec<ParameterChange>),
    /// Ours but changed after creation: never used.
    Altered(Vec<Difference>),
    /// Not made by pgbaseline (squatted name): never used.
    NotOurs(Ownership),
}

impl fmt::Display for Existing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Existing::Ready => write!(f, "ready"),
            Existing::Unfinished(c) => write!(f, "{} change(s) still to set", c.len()),
            Existing::Altered(d) => write!(
                f,
                "it was changed after pgbaseline created it ({})",
                describe_differences(d, 3)
            ),
            Existing::NotOurs(Ownership::Untagged) => {
                write!(
                    f,
                    "it was not created by pgbaseline (no {} tag)",
                    MANAGED_TAG.0
                )
            }
            Existing::NotOurs(Ownership::OtherValue(v)) => write!(
                f,
                "it was not created by pgbaseline (tag {}={v})",
                MANAGED_TAG.0
            ),
            Existing::NotOurs(Ownership::Ours) => write!(f, "ours"),
        }
    }
}

/// Classifies an existing group that should be `source` with `changes` set.
pub fn classify_existing(
    owner: Ownership,
    existing: &Contents,
    source: &Contents,
    changes: &[ParameterChange],
) -> Existing {
    if owner != Ownership::Ours {
        return Existing::NotOurs(owner);
    }
    let intended = intended_contents(source, changes);
    let diffs = differences(&intended, existing);
    if diffs.is_empty() {
        return Existing::Ready;
    }
    // An interrupted creation: the copy holds the source's value where a change is still unset.
    let unfinished: Option<Vec<ParameterChange>> = diffs
        .iter()
        .map(|d| {
            let change = changes.iter().find(|c| c.name == d.name)?;
            (value_of(source, &d.name) == d.found.as_deref()).then(|| change.clone())
        })
        .collect();
    match unfinished {
        Some(missing) => Existing::Unfinished(missing),
        None => Existing::Altered(diffs),
    }
}

/// The changes that turn `source` into `legacy` plus `planned`: how a first-version per-database
/// copy is re-expressed as a shared copy of the group it came from. `None` when a differing
/// parameter is not modifiable or the legacy copy lacks a parameter the source has.
pub fn migration_changes(
    source: &Contents,
    legacy: &Contents,
    planned: &[ParameterChange],
) -> Option<Vec<ParameterChange>> {
    let mut changes: BTreeMap<String, ParameterChange> = BTreeMap::new();
    for d in differences(source, legacy) {
        let value = d.found?;
        let apply_type = legacy
            .get(&d.name)
            .or_else(|| source.get(&d.name))
            .map(|p| p.apply_type)?;
        changes.insert(
            d.name.clone(),
            ParameterChange {
                name: d.name,
                value,
                method: match apply_type {
                    ApplyType::Dynamic => ApplyMethod::Immediate,
                    ApplyType::Static => ApplyMethod::PendingReboot,
                },
            },
        );
    }
    for change in planned {
        changes.insert(change.name.clone(), change.clone());
    }
    Some(changes.into_values().collect())
}

/// Whether `name` is a first-version per-database copy (`pgbaseline-<db>-<family>`, or its
/// `-dedicated` alternate).
pub fn is_legacy_name(name: &str, database_id: &str, family: &str) -> bool {
    let family: String = family
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let primary = format!("{MANAGED_PREFIX}{database_id}-{family}")
        .replace("--", "-")
        .trim_end_matches('-')
        .to_string();
    name == primary || name == format!("{primary}-dedicated")
}

/// Managed groups no database uses, and since when they have been seen unused.
///
/// `unused_since` is the caller's memory (kept across sweeps): groups in use leave it, groups
/// newly unused enter it at `now`. Returns the groups unused for at least `grace`. Whether a
/// returned group really is pgbaseline's is proved by its tag just before it is deleted.
pub fn garbage(
    fleet: &Fleet,
    unused_since: &mut BTreeMap<(bool, String), DateTime<Utc>>,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> Vec<GroupListing> {
    // A group whose values could not be read is still in use by its databases.
    let in_use: BTreeSet<(bool, &str)> = fleet
        .databases
        .iter()
        .filter_map(
            |d| match (&d.parameter_group, &d.read_errors.parameter_group) {
                (Some(g), _) => Some((g.cluster, g.name.as_str())),
                (None, Some(name)) => Some((d.kind == DatabaseKind::Cluster, name.as_str())),
                (None, None) => None,
            },
        )
        .collect();
    let candidates: Vec<&GroupListing> = fleet
        .parameter_groups
        .iter()
        .filter(|g| g.looks_managed() && !in_use.contains(&(g.cluster, g.name.as_str())))
        .collect();
    let keys: BTreeSet<(bool, String)> = candidates
        .iter()
        .map(|g| (g.cluster, g.name.clone()))
        .collect();
    unused_since.retain(|k, _| keys.contains(k));
    let mut out = Vec::new();
    for g in candidates {
        let since = *unused_since
            .entry((g.cluster, g.name.clone()))
            .or_insert(now);
        if now - since >= grace {
            out.push(g.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(pairs: &[(&str, &str)]) -> Contents {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    FullParameter {
                        value: Some(v.to_string()),
                        apply_type: ApplyType::Dynamic,
                    },
                )
            })
            .collect()
    }

    fn change(name: &str, value: &str) -> ParameterChange {
        ParameterChange {
            name: name.into(),
            value: value.into(),
            method: ApplyMethod::Immediate,
        }
    }

    #[test]
    fn names_are_valid_rds_identifiers_and_depend_on_every_input() {
        let base = managed_name(
            false,
            "postgres16",
            "default.postgres16",
            "d1",
            &[change("rds.force_ssl", "1")],
            0,
        );
        assert!(base.starts_with("pgbaseline-postgres16-"), "{base}");
        assert!(base.len() <= 255 && !base.contains("--") && !base.ends_with('-'));
        assert!(base.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let aurora = managed_name(
            true,
            "aurora-postgresql16",
            "default.aurora-postgresql16",
            "d1",
            &[],
            0,
        );
        assert!(
            aurora.starts_with("pgbaseline-aurora-postgresql16-"),
            "{aurora}"
        );
        let variants = [
            managed_name(
                true,
                "postgres16",
                "default.postgres16",
                "d1",
                &[change("rds.force_ssl", "1")],
                0,
            ),
            managed_name(
                false,
                "postgres15",
                "default.postgres16",
                "d1",
                &[change("rds.force_ssl", "1")],
                0,
            ),
            managed_name(
                false,
                "postgres16",
                "team",
                "d1",
                &[change("rds.force_ssl", "1")],
                0,
            ),
            managed_name(
                false,
                "postgres16",
                "default.postgres16",
                "d2",
                &[change("rds.force_ssl", "1")],
                0,
            ),
            managed_name(
                false,
                "postgres16",
                "default.postgres16",
                "d1",
                &[change("rds.force_ssl", "0")],
                0,
            ),
            managed_name(
                false,
                "postgres16",
                "default.postgres16",
                "d1",
                &[change("rds.force_ssl", "1")],
                1,
            ),
        ];
        for v in &variants {
            assert_ne!(v, &base);
        }
        // Order of changes does not matter.
        assert_eq!(
            managed_name(
                false,
                "f",
                "s",
                "d",
                &[change("a", "1"), change("b", "2")],
                0
            ),
            managed_name(
                false,
                "f",
                "s",
                "d",
                &[change("b", "2"), change("a", "1")],
                0
            )
        );
    }

    #[test]
    fn attaching_is_safe_only_when_exactly_the_planned_parameters_tighten() {
        let current = contents(&[("rds.force_ssl", "0"), ("work_mem", "4096")]);
        let planned = [change("rds.force_ssl", "1")];
        let good = contents(&[("rds.force_ssl", "1"), ("work_mem", "4096")]);
        assert_eq!(attach_is_safe(&current, &good, &planned), Ok(()));
        let extra = contents(&[("rds.force_ssl", "1"), ("work_mem", "8192")]);
        assert!(matches!(
            attach_is_safe(&current, &extra, &planned),
            Err(Unsafe::Unplanned(_))
        ));
        let missing = contents(&[("rds.force_ssl", "1")]);
        assert!(matches!(
            attach_is_safe(&current, &missing, &planned),
            Err(Unsafe::Unplanned(_))
        ));
        let loosening = [change("rds.force_ssl", "0")];
        let strict = contents(&[("rds.force_ssl", "1"), ("work_mem", "4096")]);
        let loose = contents(&[("rds.force_ssl", "0"), ("work_mem", "4096")]);
        assert!(matches!(
            attach_is_safe(&strict, &loose, &loosening),
            Err(Unsafe::NotTighter(_))
        ));
    }

    #[test]
    fn existing_groups_are_classified_by_tag_and_contents() {
        let source = contents(&[("rds.force_ssl", "0"), ("log_statement", "none")]);
        let changes = [change("rds.force_ssl", "1")];
        let ready = contents(&[("rds.force_ssl", "1"), ("log_statement", "none")]);
        assert_eq!(
            classify_existing(Ownership::Ours, &ready, &source, &changes),
            Existing::Ready
        );
        assert_eq!(
            classify_existing(Ownership::Ours, &source, &source, &changes),
            Existing::Unfinished(changes.to_vec())
        );
        let altered = contents(&[("rds.force_ssl", "1"), ("log_statement", "all")]);
        assert!(matches!(
            classify_existing(Ownership::Ours, &altered, &source, &changes),
            Existing::Altered(_)
        ));
        assert_eq!(
            classify_existing(Ownership::Untagged, &ready, &source, &changes),
            Existing::NotOurs(Ownership::Untagged)
        );
        assert_eq!(
            ownership([("pgbaseline.io/managed", "true")]),
            Ownership::Ours
        );
        assert_eq!(
            ownership([("pgbaseline.io/managed", "yes")]),
            Ownership::OtherValue("yes".into())
        );
        assert_eq!(ownership([("owner", "pgbaseline")]), Ownership::Untagged);
    }

    #[test]
    fn legacy_copies_are_re_expressed_against_their_source() {
        let source = contents(&[("rds.force_ssl", "0"), ("work_mem", "4096")]);
        let legacy = contents(&[("rds.force_ssl", "1"), ("work_mem", "4096")]);
        let changes =
            migration_changes(&source, &legacy, &[change("log_connections", "1")]).unwrap();
        let names: Vec<&str> = changes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["log_connections", "rds.force_ssl"]);
        assert!(is_legacy_name(
            "pgbaseline-orders-postgres16",
            "orders",
            "postgres16"
        ));
        assert!(is_legacy_name(
            "pgbaseline-orders-postgres16-dedicated",
            "orders",
            "postgres16"
        ));
        assert!(!is_legacy_name(
            "pgbaseline-postgres16-0123456789abcdef",
            "orders",
            "postgres16"
        ));
    }

    #[test]
    fn garbage_waits_for_the_grace_period_and_forgets_reused_groups() {
        let listing = |name: &str| GroupListing {
            name: name.into(),
            family: "postgres16".into(),
            cluster: false,
            arn: format!("arn:aws:rds:us-east-1:123456789012:pg:{name}"),
            description: String::new(),
        };
        let groups = vec![
            listing("pgbaseline-postgres16-aaaa"),
            listing("team-pg"),
            listing("default.postgres16"),
        ];
        let fleet = Fleet {
            parameter_groups: groups.clone(),
            ..Fleet::default()
        };
        let mut memory = BTreeMap::new();
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let grace = chrono::Duration::minutes(10);
        assert!(garbage(&fleet, &mut memory, t0, grace).is_empty());
        let later = t0 + chrono::Duration::minutes(11);
        let collected = garbage(&fleet, &mut memory, later, grace);
        assert_eq!(
            collected
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>(),
            ["pgbaseline-postgres16-aaaa"]
        );
        // In use again: forgotten, and the grace starts over when it is next unused.
        let mut used = crate::posture::testing::instance("a");
        used.parameter_group = Some(crate::posture::testing::group(
            "pgbaseline-postgres16-aaaa",
            "postgres16",
            false,
        ));
        let fleet_used = Fleet {
            databases: vec![used],
            ..fleet.clone()
        };
        assert!(garbage(&fleet_used, &mut memory, later, grace).is_empty());
        assert!(memory.is_empty());
        // A group whose values could not be read is still in use.
        let mut unread = crate::posture::testing::instance("a");
        unread.parameter_group = None;
        unread.read_errors.parameters = Some("could not read it".into());
        unread.read_errors.parameter_group = Some("pgbaseline-postgres16-aaaa".into());
        let fleet_unread = Fleet {
            databases: vec![unread],
            ..fleet.clone()
        };
        assert!(garbage(&fleet_unread, &mut memory, later, grace).is_empty());
        assert!(memory.is_empty());
        assert!(
            garbage(
                &fleet,
                &mut memory,
                later + chrono::Duration::minutes(1),
                grace
            )
            .is_empty()
        );
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    /// Controlled parameters (with a strictness order) and others (compared for equality only).
    const NAMES: [&str; 8] = [
        "rds.force_ssl",
        "password_encryption",
        "log_statement",
        "rds.log_retention_period",
        "log_connections",
        "work_mem",
        "max_connections",
        "search_path",
    ];

    fn value_strategy(name: &'static str) -> BoxedStrategy<Option<String>> {
        let values: Vec<&'static str> = match name {
            "rds.force_ssl" | "log_connections" => vec!["0", "1"],
            "password_encryption" => vec!["md5", "scram-sha-256"],
            "log_statement" => vec!["none", "ddl", "mod", "all"],
            "rds.log_retention_period" => vec!["1440", "4320", "10080"],
            _ => vec!["a", "b", "c"],
        };
        prop_oneof![
            1 => Just(None),
            6 => proptest::sample::select(values).prop_map(|v| Some(v.to_string())),
        ]
        .boxed()
    }

    fn contents_strategy() -> impl Strategy<Value = Contents> {
        NAMES
            .iter()
            .map(|n| (Just(*n), value_strategy(n), any::<bool>()))
            .collect::<Vec<_>>()
            .prop_map(|entries| {
                entries
                    .into_iter()
                    .map(|(n, value, dynamic)| {
                        (
                            n.to_string(),
                            FullParameter {
                                value,
                                apply_type: if dynamic {
                                    ApplyType::Dynamic
                                } else {
                                    ApplyType::Static
                                },
                            },
                        )
                    })
                    .collect()
            })
    }

    /// A group derived from `base`: some values replaced, some parameters dropped.
    fn mutate(base: Contents, edits: Vec<(usize, Option<String>, bool)>) -> Contents {
        let mut out = base;
        for (i, value, drop) in edits {
            let name = NAMES[i % NAMES.len()];
            if drop {
                out.remove(name);
            } else if let Some(p) = out.get_mut(name) {
                p.value = value;
            }
        }
        out
    }

    /// Values edits and changes draw from, across the strictness orders of `NAMES`.
    const VALUES: [&str; 10] = [
        "0",
        "1",
        "md5",
        "scram-sha-256",
        "none",
        "all",
        "1440",
        "10080",
        "a",
        "z",
    ];

    fn edits() -> impl Strategy<Value = Vec<(usize, Option<String>, bool)>> {
        proptest::collection::vec(
            (
                0..NAMES.len(),
                proptest::option::of(proptest::sample::select(VALUES.to_vec()))
                    .prop_map(|v| v.map(str::to_string)),
                proptest::bool::weighted(0.1),
            ),
            0..4,
        )
    }

    fn changes() -> impl Strategy<Value = Vec<ParameterChange>> {
        proptest::collection::btree_map(
            0..NAMES.len(),
            // Every value but one no parameter has (an edit may introduce it; a plan never does).
            proptest::sample::select(VALUES[..VALUES.len() - 1].to_vec()),
            0..3,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(i, v)| ParameterChange {
                    name: NAMES[i].to_string(),
                    value: v.to_string(),
                    method: ApplyMethod::PendingReboot,
                })
                .collect()
        })
    }

    fn ownership_strategy() -> impl Strategy<Value = Ownership> {
        prop_oneof![
            Just(Ownership::Ours),
            Just(Ownership::Untagged),
            Just(Ownership::OtherValue("false".into())),
            Just(Ownership::OtherValue("TRUE".into())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Whatever group is offered, attaching it after `attach_is_safe` accepted it never lowers
        /// any parameter of the database: each value is unchanged, or a planned value that is at
        /// least as strict as before.
        #[test]
        fn attaching_an_accepted_group_never_lowers_any_parameter(
            current in contents_strategy(),
            edits in edits(),
            planned in changes(),
        ) {
            let candidate = mutate(intended_contents(&current, &planned), edits);
            if attach_is_safe(&current, &candidate, &planned).is_ok() {
                let names: BTreeSet<&String> = current.keys().chain(candidate.keys()).collect();
                for name in names {
                    let before = value_of(&current, name);
                    let after = value_of(&candidate, name);
                    if before == after {
                        continue;
                    }
                    let change = planned.iter().find(|c| &c.name == name);
                    prop_assert!(change.is_some(), "{name}: {before:?} -> {after:?} unplanned");
                    let change = change.unwrap();
                    prop_assert_eq!(after, Some(change.value.as_str()));
                    prop_assert!(is_tightening(name, before, &change.value), "{name}: {before:?} -> {after:?} loosens");
                }
            }
        }

        /// A group of a managed name is used only when its tag proves it is pgbaseline's and its
        /// contents are exactly the source with the changes (or the source with some changes not
        /// yet set, which are then set): squatted, foreign-tagged and altered groups never are.
        #[test]
        fn squatted_or_altered_groups_are_never_used(
            owner in ownership_strategy(),
            source in contents_strategy(),
            edits in edits(),
            planned in changes(),
        ) {
            let intended = intended_contents(&source, &planned);
            let existing = mutate(intended.clone(), edits);
            match classify_existing(owner.clone(), &existing, &source, &planned) {
                Existing::Ready => {
                    prop_assert_eq!(&owner, &Ownership::Ours);
                    prop_assert!(differences(&intended, &existing).is_empty());
                }
                Existing::Unfinished(missing) => {
                    prop_assert_eq!(&owner, &Ownership::Ours);
                    // Setting what is missing yields exactly what was intended.
                    let finished = intended_contents(&existing, &missing);
                    prop_assert!(differences(&intended, &finished).is_empty());
                    for m in &missing {
                        prop_assert!(planned.contains(m));
                    }
                }
                Existing::Altered(d) => {
                    prop_assert_eq!(&owner, &Ownership::Ours);
                    prop_assert!(!d.is_empty());
                }
                Existing::NotOurs(o) => prop_assert_ne!(o, Ownership::Ours),
            }
        }

        /// A first-version copy re-expressed against its source holds exactly its old values
        /// plus the planned ones, so moving to it changes only what is planned.
        #[test]
        fn migrated_copies_hold_exactly_the_legacy_values_plus_the_plan(
            source in contents_strategy(),
            edits in edits(),
            planned in changes(),
        ) {
            let legacy = mutate(source.clone(), edits);
            if let Some(all) = migration_changes(&source, &legacy, &planned) {
                let candidate = intended_contents(&source, &all);
                let expected = intended_contents(&legacy, &planned);
                prop_assert!(differences(&expected, &candidate).is_empty());
            }
        }
    }
}
