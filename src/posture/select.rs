//! Which databases a policy selects.

use crate::api::{DatabaseKind, Selector};

use super::model::{Database, Fleet};

/// True when every criterion the selector gives holds for `database`.
///
/// Criteria are ANDed: an identifier list, when given, must name the database (instance ids for
/// instances, cluster ids for clusters); tags, when given, must all match; the engine must be
/// listed; the region, when given, must match (or be one of `regions`).
pub fn selects(selector: &Selector, database: &Database) -> bool {
    if !selector.engines.contains(&database.engine) {
        return false;
    }
    if let Some(region) = &selector.region
        && region != &database.region
    {
        return false;
    }
    if let Some(regions) = &selector.regions
        && !regions.contains(&database.region)
    {
        return false;
    }
    let has_ids = selector.instance_identifiers.is_some() || selector.cluster_identifiers.is_some();
    if has_ids {
        let listed = match database.kind {
            DatabaseKind::Instance => &selector.instance_identifiers,
            DatabaseKind::Cluster => &selector.cluster_identifiers,
        };
        if !listed
            .as_ref()
            .is_some_and(|ids| ids.contains(&database.id))
        {
            return false;
        }
    }
    if let Some(tags) = &selector.tags {
        if tags.is_empty() && !has_ids {
            // An empty map names no tag: it would select every database of the region. The
            // schema rejects it; a policy stored before that rule selects nothing.
            return false;
        }
        if !tags
            .iter()
            .all(|(k, v)| database.tags.get(k).is_some_and(|actual| actual == v))
        {
            return false;
        }
    } else if !has_ids {
        // An empty selector selects nothing (the schema rejects it; this is the safe fallback).
        return false;
    }
    true
}

/// The selected databases of a fleet, in fleet order.
pub fn select<'a>(selector: &Selector, fleet: &'a Fleet) -> Vec<&'a Database> {
    fleet
        .databases
        .iter()
        .filter(|d| selects(selector, d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Engine;
    use crate::posture::testing::instance;
    use std::collections::BTreeMap;

    fn selector() -> Selector {
        Selector {
            engines: vec![Engine::Postgres, Engine::AuroraPostgresql],
            ..Default::default()
        }
    }

    #[test]
    fn criteria_are_anded() {
        let mut db = instance("orders");
        db.tags.insert("env".into(), "prod".into());
        let cases: Vec<(Selector, bool)> = vec![
            (
                Selector {
                    instance_identifiers: Some(vec!["orders".into()]),
                    ..selector()
                },
                true,
            ),
            (
                Selector {
                    instance_identifiers: Some(vec!["other".into()]),
                    ..selector()
                },
                false,
            ),
            (
                Selector {
                    cluster_identifiers: Some(vec!["orders".into()]),
                    ..selector()
                },
                false,
            ),
            (
                Selector {
                    tags: Some(BTreeMap::from([("env".into(), "prod".into())])),
                    ..selector()
                },
                true,
            ),
            (
                Selector {
                    tags: Some(BTreeMap::from([("env".into(), "dev".into())])),
                    ..selector()
                },
                false,
            ),
            (
                Selector {
                    instance_identifiers: Some(vec!["orders".into()]),
                    tags: Some(BTreeMap::from([("env".into(), "dev".into())])),
                    ..selector()
                },
                false,
            ),
            (
                Selector {
                    tags: Some(BTreeMap::from([("env".into(), "prod".into())])),
                    engines: vec![Engine::AuroraPostgresql],
                    ..selector()
                },
                false,
            ),
            (
                Selector {
                    tags: Some(BTreeMap::from([("env".into(), "prod".into())])),
                    region: Some("eu-west-1".into()),
                    ..selector()
                },
                false,
            ),
            (
                Selector {
                    tags: Some(BTreeMap::from([("env".into(), "prod".into())])),
                    regions: Some(vec!["eu-west-1".into(), "us-east-1".into()]),
                    ..selector()
                },
                true,
            ),
            (
                Selector {
                    tags: Some(BTreeMap::from([("env".into(), "prod".into())])),
                    regions: Some(vec!["eu-west-1".into(), "us-west-2".into()]),
                    ..selector()
                },
                false,
            ),
            (selector(), false),
            // `tags: {}` names no tag: it selects nothing rather than the whole region.
            (
                Selector {
                    tags: Some(BTreeMap::new()),
                    ..selector()
                },
                false,
            ),
            (
                Selector {
                    instance_identifiers: Some(vec!["orders".into()]),
                    tags: Some(BTreeMap::new()),
                    ..selector()
                },
                true,
            ),
        ];
        for (sel, expected) in cases {
            assert_eq!(selects(&sel, &db), expected, "{sel:?}");
        }
    }
}
