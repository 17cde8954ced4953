//! The generated CRD is what `crds/` holds, the examples are valid, and invalid manifests are
//! rejected with a field path and a reason (schema and CEL, as the apiserver would).

mod common;

use pgbaseline::manifest::{Loader, ManifestError, parse_policies};

const CRD_FILE: &str = "crds/databasesecuritypolicies.pgbaseline.io.yaml";

#[test]
fn crds_directory_holds_the_generated_crd() {
    let generated = pgbaseline::cli::crd_yaml().expect("crd serialises");
    let committed = std::fs::read_to_string(CRD_FILE).expect("crd file exists");
    assert!(
        generated == committed,
        "{CRD_FILE} is stale: run `cargo run -- crd > {CRD_FILE}`"
    );
}

#[test]
fn crds_directory_holds_the_generated_account_crd() {
    let file = "crds/awsaccounts.pgbaseline.io.yaml";
    let generated = pgbaseline::cli::account_crd_yaml().expect("crd serialises");
    let committed = std::fs::read_to_string(file).expect("crd file exists");
    assert!(
        generated == committed,
        "{file} is stale: run `cargo run -- crd --kind account > {file}`"
    );
}

#[test]
fn every_example_is_a_valid_policy() {
    let mut count = 0;
    for entry in std::fs::read_dir("examples").expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable");
        let policies = parse_policies(&path.display().to_string(), &text)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        assert!(!policies.is_empty());
        count += policies.len();
    }
    assert!(count >= 3);
}

fn rejected(spec: &str) -> Vec<ManifestError> {
    let manifest = format!(
        "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {{name: t}}\nspec:\n{spec}"
    );
    parse_policies("test.yaml", &manifest).expect_err("manifest must be rejected")
}

const SELECTOR: &str = "  selector: {tags: {env: prod}}\n";
const POSTURE: &str = "  posture: {transport: {forceSsl: true}}\n";

#[test]
fn invalid_policies_are_rejected_with_a_field_path_and_a_reason() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("{SELECTOR}  mode: Sometimes\n{POSTURE}"),
            "spec.mode",
            "Sometimes",
        ),
        (
            format!("{POSTURE}  selector: {{engines: [postgres]}}\n"),
            "spec.selector",
            "at least one of",
        ),
        (
            format!("{SELECTOR}  posture: {{transport: {{minTlsVersion: TLSv1.1}}}}\n"),
            "spec.posture.transport.minTlsVersion",
            "",
        ),
        (
            format!("{SELECTOR}  posture: {{logging: {{retention: {{minimumMinutes: 60}}}}}}\n"),
            "spec.posture.logging.retention.minimumMinutes",
            "1440",
        ),
        (
            format!(
                "{SELECTOR}  posture: {{maintenance: {{backupRetention: {{minimumDays: 90}}}}}}\n"
            ),
            "spec.posture.maintenance.backupRetention.minimumDays",
            "35",
        ),
        (
            format!(
                "{SELECTOR}  posture: {{network: {{ingress: {{allowedSecurityGroups: [default]}}}}}}\n"
            ),
            "spec.posture.network.ingress.allowedSecurityGroups[0]",
            "",
        ),
        (
            format!(
                "{SELECTOR}  posture: {{network: {{ingress: {{allowedCidrs: [10.0.0.0/33]}}}}}}\n"
            ),
            "spec.posture.network.ingress.allowedCidrs",
            "valid CIDR",
        ),
        (
            format!(
                "{SELECTOR}  posture: {{network: {{ingress: {{allowedCidrs: [0.0.0.0/0]}}}}}}\n"
            ),
            "spec.posture.network.ingress.allowedCidrs",
            "never allowed",
        ),
        (
            format!("{SELECTOR}  posture: {{audit: {{pgaudit: {{classes: [everything]}}}}}}\n"),
            "spec.posture.audit.pgaudit.classes[0]",
            "",
        ),
        (
            format!("{SELECTOR}  posture: {{audit: {{pgaudit: {{classes: []}}}}}}\n"),
            "spec.posture.audit.pgaudit.classes",
            "",
        ),
        (
            format!("{SELECTOR}  posture: {{encryption: {{storage: {{kmsKeyId: my-key}}}}}}\n"),
            "spec.posture.encryption.storage.kmsKeyId",
            "",
        ),
        (
            format!("{SELECTOR}{POSTURE}  controlModes: {{network.everything: Audit}}\n"),
            "spec.controlModes",
            "control ids",
        ),
        (
            format!("{SELECTOR}{POSTURE}  resyncSeconds: 5\n"),
            "spec.resyncSeconds",
            "10",
        ),
        (
            format!("{SELECTOR}{POSTURE}  remediation: {{reboot: Whenever}}\n"),
            "spec.remediation.reboot",
            "",
        ),
        (
            format!("{SELECTOR}  posture: {{}}\n"),
            "spec.posture",
            "at least one",
        ),
        (
            format!("{SELECTOR}  posture: {{transport: {{forceSSL: true}}}}\n"),
            "spec.posture.transport.forceSSL",
            "unknown field",
        ),
        (
            format!("{SELECTOR}  posture: {{transport: {{forceSsl: yes-please}}}}\n"),
            "spec.posture.transport.forceSsl",
            "",
        ),
        (
            format!("  selector: {{tags: {{env: prod}}, region: Mars}}\n{POSTURE}"),
            "spec.selector.region",
            "",
        ),
        (
            format!("  selector: {{instanceIdentifiers: [\"1bad\"]}}\n{POSTURE}"),
            "spec.selector.instanceIdentifiers[0]",
            "",
        ),
        (
            format!("  selector: {{tags: {{env: prod}}, engines: [mysql]}}\n{POSTURE}"),
            "spec.selector.engines[0]",
            "",
        ),
    ];
    for (spec, path, reason) in cases {
        let errors = rejected(&spec);
        assert!(
            errors
                .iter()
                .any(|e| e.path.starts_with(path) && e.reason.contains(reason)),
            "spec:\n{spec}\nexpected an error at {path} containing {reason:?}, got {errors:#?}"
        );
        for e in &errors {
            assert_eq!(e.source_name, "test.yaml");
            assert_eq!(e.document, 1);
        }
    }
}

/// What a policy may not say about exposure or emptiness is refused by the apiserver and by
/// `check` alike, at the same field, for the same reason.
#[test]
fn the_internet_in_pieces_and_policies_that_check_nothing_are_refused_with_the_same_reason() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!(
                "{SELECTOR}  posture: {{network: {{ingress: {{allowedCidrs: [0.0.0.0/1, 128.0.0.0/1]}}}}}}\n"
            ),
            "spec.posture.network.ingress.allowedCidrs",
            "at most 65,536 public IPv4 addresses (one /16) in total",
        ),
        (
            format!(
                "{SELECTOR}  posture: {{network: {{ingress: {{allowedCidrs: [0.0.0.0/1]}}}}}}\n"
            ),
            "spec.posture.network.ingress.allowedCidrs",
            "at most 65,536 public IPv4 addresses (one /16) in total",
        ),
        (
            format!(
                "{SELECTOR}  posture: {{network: {{ingress: {{allowedCidrs: ['::/1', '8000::/1']}}}}}}\n"
            ),
            "spec.posture.network.ingress.allowedCidrs",
            "at most one /48 of public IPv6 in total",
        ),
        (
            format!(
                "{SELECTOR}  posture: {{network: {{ingress: {{allowedCidrs: [52.0.0.0/16, 53.0.0.0/16]}}}}}}\n"
            ),
            "spec.posture.network.ingress.allowedCidrs",
            "however the space is split",
        ),
        (
            format!("{SELECTOR}  posture: {{network: {{ingress: {{}}}}}}\n"),
            "spec.posture.network.ingress",
            "or set denyAll: true",
        ),
        (
            format!(
                "{SELECTOR}  posture: {{network: {{ingress: {{denyAll: true, allowedSecurityGroups: [sg-0123456789abcdef0]}}}}}}\n"
            ),
            "spec.posture.network.ingress.denyAll",
            "allows no source",
        ),
        (
            format!("{SELECTOR}  posture: {{transport: {{}}}}\n"),
            "spec.posture.transport",
            "names none of its controls",
        ),
        (
            format!(
                "{SELECTOR}  posture: {{transport: {{forceSsl: false}}, network: {{acl: false}}}}\n"
            ),
            "spec.posture",
            "must switch on at least one control",
        ),
        (
            format!("  selector: {{tags: {{}}}}\n{POSTURE}"),
            "spec.selector.tags",
            "at least one tag",
        ),
    ];
    let cp = common::controlplane::ControlPlane::shared();
    let ns = cp.namespace("bounds");
    for (spec, path, reason) in cases {
        let errors = rejected(&spec);
        assert!(
            errors
                .iter()
                .any(|e| e.path == path && e.reason.contains(reason)),
            "check: spec:\n{spec}\nexpected {path}: …{reason}…, got {errors:#?}"
        );
        let manifest = format!(
            "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {{name: t}}\nspec:\n{spec}"
        );
        let (status, answer) = cp.send_yaml(
            "POST",
            &format!(
                "/apis/pgbaseline.io/v1alpha1/namespaces/{ns}/databasesecuritypolicies?dryRun=All&fieldValidation=Strict"
            ),
            manifest.as_bytes(),
        );
        let message = answer["message"].as_str().unwrap_or_default();
        assert_eq!(status, 422, "apiserver: spec:\n{spec}\n{answer:#}");
        assert!(
            message.contains(&format!("{path}: ")) && message.contains(reason),
            "apiserver: spec:\n{spec}\nexpected {path}: …{reason}…, got {message}"
        );
    }
}

#[test]
fn multi_document_files_report_the_document_number() {
    let good = std::fs::read_to_string("examples/enforce-aurora-cluster.yaml").expect("example");
    let text = format!("{good}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n");
    let errors = parse_policies("multi.yaml", &text).expect_err("second document is not a policy");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].document, 2);
    assert!(errors[0].reason.contains("DatabaseSecurityPolicy"));
}

#[test]
fn defaults_come_from_the_schema() {
    let text = format!(
        "apiVersion: pgbaseline.io/v1alpha1\nkind: DatabaseSecurityPolicy\nmetadata: {{name: t}}\nspec:\n{SELECTOR}{POSTURE}"
    );
    let policies = parse_policies("d.yaml", &text).expect("valid");
    let spec = &policies[0].spec;
    assert_eq!(spec.mode, pgbaseline::api::Mode::Audit);
    assert_eq!(spec.resync_seconds, 60);
    assert_eq!(
        spec.remediation.reboot,
        pgbaseline::api::RebootPolicy::Never
    );
    assert!(!spec.remediation.allow_master_password_rotation);
    assert_eq!(spec.selector.engines.len(), 2);
}

#[test]
fn every_schema_field_has_a_description_for_kubectl_explain() {
    fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                if prop.get("description").is_none()
                    && !["apiVersion", "kind", "metadata"].contains(&name.as_str())
                {
                    missing.push(here.clone());
                }
                walk(prop, &here, missing);
                if let Some(items) = prop.get("items") {
                    walk(items, &format!("{here}[]"), missing);
                }
            }
        }
    }
    let crd: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(CRD_FILE).expect("crd")).expect("yaml");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut missing = Vec::new();
    walk(schema, "", &mut missing);
    assert!(
        missing.is_empty(),
        "fields without description: {missing:?}"
    );
    assert!(
        schema["properties"]["spec"]["properties"]["posture"]["properties"]["transport"]
            .is_object()
    );
}

/// One manifest per file of `tests/manifests/DIR`, sorted by name.
fn corpus(dir: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(format!("tests/manifests/{dir}"))
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable");
            (p.display().to_string(), text)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "tests/manifests/{dir} is empty");
    files
}

#[test]
fn corpus_verdicts_of_check_alone() {
    let loader = Loader::new().expect("loader");
    for (name, text) in corpus("accept") {
        let loaded = loader
            .load(&name, &text)
            .unwrap_or_else(|e| panic!("{name} must be accepted: {e:#?}"));
        assert_eq!(loaded.policies.len(), 1, "{name}");
    }
    for dir in ["reject", "check-refuses"] {
        for (name, text) in corpus(dir) {
            let errors = loader.load(&name, &text).expect_err(&name);
            for e in &errors {
                assert!(!e.reason.is_empty(), "{name}: empty reason: {e:?}");
                assert_eq!(e.source_name, name);
            }
        }
    }
}

/// The same corpus through a real kube-apiserver (the YAML itself, `fieldValidation=Strict`,
/// server-side dry run) and through `check`'s loader: identical verdicts, and for accepted
/// manifests identical defaulted specs.
#[test]
fn corpus_verdicts_match_a_real_apiserver() {
    let cp = common::controlplane::ControlPlane::shared();
    let ns = cp.namespace("corpus");
    let loader = Loader::new().expect("loader");
    let mut mismatches = Vec::new();
    let mut examples: Vec<(String, String)> = std::fs::read_dir("examples")
        .expect("examples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).expect("readable"),
            )
        })
        .collect();
    examples.sort();
    let sets = [
        ("accept", corpus("accept")),
        ("accept", examples),
        ("reject", corpus("reject")),
        ("check-refuses", corpus("check-refuses")),
    ];
    let mut count = 0;
    for (expect, files) in sets {
        for (name, text) in files {
            count += 1;
            let local = loader.load(&name, &text);
            // A manifest that names its namespace is sent there (the examples do).
            let target = local
                .as_ref()
                .ok()
                .and_then(|l| l.policies.first())
                .and_then(|p| p.policy.metadata.namespace.clone());
            let target = match target {
                Some(other) => {
                    let _ = cp.kubectl(&["create", "namespace", &other], None);
                    other
                }
                None => ns.clone(),
            };
            let (status, answer) = cp.send_yaml(
                "POST",
                &format!(
                    "/apis/pgbaseline.io/v1alpha1/namespaces/{target}/databasesecuritypolicies?dryRun=All&fieldValidation=Strict"
                ),
                text.as_bytes(),
            );
            let server_accepts = (200..300).contains(&status);
            let server_says = if server_accepts {
                "accepted".to_string()
            } else {
                format!(
                    "rejected ({status}): {}",
                    answer["message"].as_str().unwrap_or_default()
                )
            };
            let check_says = match &local {
                Ok(_) => "accepted".to_string(),
                Err(errors) => format!(
                    "rejected: {}",
                    errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            };
            let verdicts_ok = match expect {
                "accept" => server_accepts && local.is_ok(),
                "reject" => !server_accepts && local.is_err(),
                _ => server_accepts && local.is_err(),
            };
            if !verdicts_ok {
                mismatches.push(format!(
                    "{name} (expected: {expect})\n  apiserver: {server_says}\n  check:     {check_says}"
                ));
                continue;
            }
            if let (true, Ok(loaded)) = (server_accepts, &local) {
                let ours = &loaded.policies[0];
                let server_spec = &answer["spec"];
                if server_spec != &ours.value["spec"] {
                    mismatches.push(format!(
                        "{name}: defaulted specs differ\n  apiserver: {server_spec}\n  check:     {}",
                        ours.value["spec"]
                    ));
                }
                match serde_json::from_value::<pgbaseline::api::DatabaseSecurityPolicySpec>(
                    server_spec.clone(),
                ) {
                    Ok(spec) if spec == ours.policy.spec => {}
                    other => mismatches.push(format!(
                        "{name}: typed specs differ: apiserver {other:?}, check {:?}",
                        ours.policy.spec
                    )),
                }
            }
        }
    }
    assert!(count >= 80, "corpus has only {count} manifests");
    assert!(
        mismatches.is_empty(),
        "{} of {count} manifests read differently:\n\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
}
