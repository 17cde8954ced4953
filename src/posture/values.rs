//! Parameter value normalisation and the "at least as strict" order of each controlled parameter.
//!
//! RDS reports booleans as `1`/`0`, `on`/`off` or `true`/`false`, lists with or without spaces
//! and mixed case. Comparing raw strings makes a scanner flap; these functions compare meaning.

/// `1`, `on`, `true`, `yes` → true; `0`, `off`, `false`, `no` → false.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" | "t" | "y" => Some(true),
        "0" | "off" | "false" | "no" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// Rank of a TLS version string (`TLSv1.2` → 12), case-insensitive.
pub fn tls_rank(value: &str) -> Option<u8> {
    match value.trim().to_ascii_lowercase().as_str() {
        "tlsv1" | "tlsv1.0" => Some(10),
        "tlsv1.1" => Some(11),
        "tlsv1.2" => Some(12),
        "tlsv1.3" => Some(13),
        _ => None,
    }
}

/// PostgreSQL's own default for `ssl_min_protocol_version` (12 and later).
pub const POSTGRES_DEFAULT_MIN_TLS: &str = "TLSv1.2";

/// A comma list (`shared_preload_libraries`, `pgaudit.log`): trimmed, lower-cased, no empties.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|item| item.trim().trim_matches('\'').trim().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

/// Whether `list` contains `item`, comparing normalised entries.
pub fn list_contains(list: Option<&str>, item: &str) -> bool {
    list.map(split_list)
        .unwrap_or_default()
        .iter()
        .any(|entry| entry == &item.to_ascii_lowercase())
}

/// `list` with `additions` appended (existing order kept, no duplicates), as RDS stores it.
pub fn list_with(list: Option<&str>, additions: &[&str]) -> String {
    let mut items: Vec<String> = list
        .map(split_list)
        .unwrap_or_default()
        .into_iter()
        .filter(|item| item != "none")
        .collect();
    for addition in additions {
        let addition = addition.to_ascii_lowercase();
        // A negated class (`-ddl`) would cancel the addition; drop it (all of them for `all`).
        items.retain(|item| {
            !(item == &format!("-{addition}") || (addition == "all" && item.starts_with('-')))
        });
        if !items.contains(&addition) {
            items.push(addition);
        }
    }
    items.join(",")
}

/// The pgAudit classes a `pgaudit.log` value actually logs: `all` expands to every class and
/// `-class` removes one.
pub fn pgaudit_effective_classes(value: Option<&str>) -> Vec<String> {
    const CLASSES: [&str; 7] = [
        "read", "write", "function", "role", "ddl", "misc", "misc_set",
    ];
    let mut effective: Vec<String> = Vec::new();
    for item in value.map(split_list).unwrap_or_default() {
        if item == "all" {
            effective = CLASSES.iter().map(|c| c.to_string()).collect();
        } else if let Some(removed) = item.strip_prefix('-') {
            effective.retain(|c| c != removed);
        } else if item != "none" && !effective.contains(&item) {
            effective.push(item);
        }
    }
    effective
}

/// Whether `pgaudit.log` logs every required class (`all` requires every class).
pub fn pgaudit_covers(value: Option<&str>, required: &[&str]) -> bool {
    let effective = pgaudit_effective_classes(value);
    required.iter().all(|class| {
        if *class == "all" {
            effective.len() == 7
        } else {
            effective.iter().any(|c| c == class)
        }
    })
}

/// How strict a value of a controlled parameter is, as a number to compare: larger is stricter.
/// `None` when the parameter is not controlled or the value is not understood.
pub fn strictness(parameter: &str, value: Option<&str>) -> Option<i64> {
    let value = value.unwrap_or("");
    match parameter {
        "rds.force_ssl" | "log_connections" | "log_disconnections" => {
            parse_bool(value).or(Some(false)).map(i64::from)
        }
        "ssl_min_protocol_version" => {
            let v = if value.is_empty() {
                POSTGRES_DEFAULT_MIN_TLS
            } else {
                value
            };
            tls_rank(v).map(i64::from)
        }
        "rds.log_retention_period" => value.trim().parse::<i64>().ok().or(Some(0)),
        // Fewer statements logged is stricter: `ddl`, `mod` and `all` log passwords.
        "log_statement" => match value.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Some(3),
            "ddl" => Some(2),
            "mod" => Some(1),
            "all" => Some(0),
            _ => None,
        },
        "password_encryption" => match value.trim().to_ascii_lowercase().as_str() {
            "scram-sha-256" => Some(1),
            _ => Some(0),
        },
        _ => None,
    }
}

/// True when changing `parameter` from `old` to `new` keeps or raises strictness. Lists are
/// stricter when they keep every old entry; `pgaudit.role` may only be set, never cleared.
pub fn is_tightening(parameter: &str, old: Option<&str>, new: &str) -> bool {
    match parameter {
        "shared_preload_libraries" => {
            let new_items = split_list(new);
            old.map(split_list)
                .unwrap_or_default()
                .iter()
                .all(|item| new_items.contains(item))
        }
        "pgaudit.log" => {
            let old_classes = pgaudit_effective_classes(old);
            let new_classes = pgaudit_effective_classes(Some(new));
            old_classes.iter().all(|c| new_classes.contains(c))
        }
        "pgaudit.role" => !new.trim().is_empty(),
        _ => match (strictness(parameter, old), strictness(parameter, Some(new))) {
            (Some(before), Some(after)) => after >= before,
            (None, Some(_)) => true,
            _ => false,
        },
    }
}

/// Compares dotted version strings numerically (`16.10` > `16.9`).
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parse(a).cmp(&parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_normalise() {
        for v in ["1", "on", "ON", "true", "True", " yes "] {
            assert_eq!(parse_bool(v), Some(true), "{v}");
        }
        for v in ["0", "off", "false", "no"] {
            assert_eq!(parse_bool(v), Some(false), "{v}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn lists_normalise_with_spaces_and_case() {
        assert_eq!(
            split_list("pg_stat_statements, PGAUDIT ,"),
            vec!["pg_stat_statements", "pgaudit"]
        );
        assert!(list_contains(
            Some("pg_stat_statements, pgaudit"),
            "pgaudit"
        ));
        assert!(!list_contains(Some("pg_stat_statements"), "pgaudit"));
        assert_eq!(
            list_with(Some("pg_stat_statements"), &["pgaudit"]),
            "pg_stat_statements,pgaudit"
        );
        assert_eq!(list_with(Some("none"), &["ddl", "role"]), "ddl,role");
        assert_eq!(list_with(Some("all,-ddl"), &["ddl"]), "all,ddl");
        assert_eq!(list_with(Some("all,-ddl,-role"), &["all"]), "all");
    }

    #[test]
    fn pgaudit_classes_expand_all_and_negation() {
        assert!(pgaudit_covers(Some("all"), &["ddl", "role"]));
        assert!(!pgaudit_covers(Some("all,-ddl"), &["ddl"]));
        assert!(pgaudit_covers(Some("ddl, ROLE"), &["ddl", "role"]));
        assert!(!pgaudit_covers(Some("none"), &["ddl"]));
        assert!(!pgaudit_covers(Some("ddl"), &["all"]));
        assert!(pgaudit_covers(Some("all"), &["all"]));
    }

    #[test]
    fn tightening_follows_each_parameters_order() {
        let cases = [
            ("rds.force_ssl", Some("0"), "1", true),
            ("rds.force_ssl", Some("1"), "0", false),
            ("ssl_min_protocol_version", None, "TLSv1.3", true),
            (
                "ssl_min_protocol_version",
                Some("TLSv1.3"),
                "TLSv1.2",
                false,
            ),
            ("rds.log_retention_period", Some("4320"), "10080", true),
            ("rds.log_retention_period", Some("10080"), "4320", false),
            ("log_statement", Some("all"), "none", true),
            ("log_statement", Some("none"), "ddl", false),
            ("password_encryption", Some("md5"), "scram-sha-256", true),
            ("password_encryption", Some("scram-sha-256"), "md5", false),
            (
                "shared_preload_libraries",
                Some("pg_stat_statements"),
                "pg_stat_statements,pgaudit",
                true,
            ),
            (
                "shared_preload_libraries",
                Some("pg_stat_statements,auto_explain"),
                "pgaudit",
                false,
            ),
            ("pgaudit.log", Some("ddl"), "ddl,role", true),
            ("pgaudit.log", Some("ddl,role"), "ddl", false),
            ("work_mem", Some("4096"), "8192", false),
        ];
        for (param, old, new, expected) in cases {
            assert_eq!(
                is_tightening(param, old, new),
                expected,
                "{param} {old:?} -> {new}"
            );
        }
    }

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("16.10", "16.9"), Greater);
        assert_eq!(version_cmp("16.4", "16.4"), Equal);
        assert_eq!(version_cmp("15.8", "16.1"), Less);
    }
}
