"""Static checks of the shipped artifacts: Dockerfile, CRD copies, the Helm chart (lint, render,
schema), the kustomize base, the IAM policies against the code, the Argo CD ConfigMap."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ACCOUNT_CRD_NAME, CHART, CRD_NAME, DEPLOY, ROOT

# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_base_images_are_pinned():
    ins = dockerfile_instructions()
    args = dict(re.match(r"(\w+)=(\S+)", rest).groups() for word, rest in ins if word == "ARG" and "=" in rest)
    froms = [rest.split()[0] for word, rest in ins if word == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    for image in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert ":" in image.split("/")[-1] or "@sha256:" in image, f"unpinned base image {image}"
        tag = image.split("@")[0].rsplit(":", 1)[-1]
        assert tag != "latest", image
    builder = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], froms[0])
    assert re.search(r"rust:\d+\.\d+\.\d+", builder), f"builder must pin a full Rust version: {builder}"
    runtime = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], froms[-1])
    assert "distroless" in runtime and runtime.endswith(":nonroot"), runtime


def test_dockerfile_builds_locked_release_and_runs_as_nonroot():
    ins = dockerfile_instructions()
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert re.search(r"cargo build\b.*--release", runs) and "--locked" in runs and "--bin pgbaseline" in runs
    # The final stage: the binary at /pgbaseline, a numeric non-root USER, the entrypoint.
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    final = ins[last_from:]
    users = [rest for w, rest in final if w == "USER"]
    assert users and users[-1].split(":")[0] == "65532", users
    assert any(w == "COPY" and "--from=" in rest and rest.endswith("/pgbaseline") for w, rest in final)
    assert ("ENTRYPOINT", '["/pgbaseline"]') in final
    assert not any(w in ("ADD",) for w, _ in ins), "use COPY, not ADD"


def test_dockerignore_keeps_context_minimal():
    lines = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[0] == "*", "allow-list .dockerignore expected"
    for needed in ("!Cargo.toml", "!Cargo.lock", "!src/"):
        assert needed in lines


def test_cargo_binary_matches_image():
    cargo = (ROOT / "Cargo.toml").read_text()
    assert re.search(r'\[\[bin\]\]\s*\nname = "pgbaseline"', cargo)


# ---------------------------------------------------------------- CRD copies


@pytest.mark.parametrize("name", [CRD_NAME, ACCOUNT_CRD_NAME])
@pytest.mark.parametrize("where", [CHART / "crds", DEPLOY / "crds"])
def test_crd_copies_are_identical(where, name):
    copy = where / name
    source = (ROOT / "crds" / name).read_bytes()
    assert copy.read_bytes() == source, f"{copy.relative_to(ROOT)} differs from crds/{name}: copy it again"


def test_chart_app_version_is_the_crate_version():
    cargo = re.search(r'^version = "([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M).group(1)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert str(chart["appVersion"]) == cargo


# ---------------------------------------------------------------- Helm chart

VARIANTS = {
    "defaults": [],
    "namespaced-ha": ["--set", "watchNamespaces={team-a,team-b}", "--set", "replicaCount=2",
                      "--set", "leaderElection.enabled=false"],
    "scale-out": ["--set", "scaleOut.enabled=true", "--set", "replicaCount=3"],
    "all-optional": ["--set", "networkPolicy.enabled=true", "--set", "metrics.serviceMonitor.enabled=true",
                     "--set", "podDisruptionBudget.enabled=true",
                     "--set", "metrics.prometheusRule.enabled=true", "--set", "grafanaDashboard.enabled=true",
                     "--set", "aws.roleArn=arn:aws:iam::123456789012:role/pgbaseline",
                     "--set", "aws.region=eu-west-1"],
}


def render(helm, *args) -> list[dict]:
    out = subprocess.run([helm, "template", "pgb", str(CHART), "-n", "pgbaseline-system", *args],
                         check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint(helm, variant):
    p = subprocess.run([helm, "lint", "--strict", str(CHART), *VARIANTS[variant]], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_deployment_is_hardened(helm):
    docs = render(helm)
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsUser"] == 65532
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert c["args"][0] == "run" and "--metrics-addr=0.0.0.0:8080" in c["args"]
    assert "--leader-election" in c["args"] and "--lease-name=pgbaseline-leader" in c["args"]
    assert c["image"] == "pgbaseline/pgbaseline:0.1.0"
    assert not any(v.get("secret") for v in pod.get("volumes", [])), "the operator mounts no Secrets"


def test_leader_election_follows_replicas(helm):
    off = render(helm, "--set", "leaderElection.enabled=false")
    (dep,) = by_kind(off, "Deployment")
    assert "--leader-election" not in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [r for r in by_kind(off, "Role") if "leader" in r["metadata"]["name"]]
    ha = render(helm, "--set", "leaderElection.enabled=false", "--set", "replicaCount=3")
    (dep,) = by_kind(ha, "Deployment")
    assert "--leader-election" in dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_scale_out_replaces_leader_election_with_key_leases(helm):
    docs = render(helm, "--set", "scaleOut.enabled=true", "--set", "replicaCount=3")
    (dep,) = by_kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 3
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--scale-out" in args and "--leader-election" not in args
    assert "--leader-election-namespace=pgbaseline-system" in args and "--lease-name=pgbaseline-leader" in args
    named = {r["metadata"]["name"]: r for r in by_kind(docs, "Role")}
    assert "pgb-pgbaseline-leader-election" not in named
    (rule,) = named["pgb-pgbaseline-scale-out"]["rules"]
    assert rule == {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                    "verbs": ["get", "list", "create", "update", "delete"]}
    (binding,) = [b for b in by_kind(docs, "RoleBinding") if b["metadata"]["name"] == "pgb-pgbaseline-scale-out"]
    assert binding["subjects"][0]["name"] == "pgb-pgbaseline"
    # Off by default: the default install keeps one leader.
    assert not [r for r in by_kind(render(helm), "Role") if "scale-out" in r["metadata"]["name"]]


EXPECTED_POLICY_RULES = [
    {"apiGroups": ["pgbaseline.io"], "resources": ["databasesecuritypolicies"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["pgbaseline.io"], "resources": ["databasesecuritypolicies/status"], "verbs": ["get", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["openreports.io"], "resources": ["reports"], "verbs": ["list", "create", "patch", "delete"]},
    {"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"], "verbs": ["list", "create", "patch", "delete"]},
]


EXPECTED_ACCOUNT_RULES = [
    {"apiGroups": ["pgbaseline.io"], "resources": ["awsaccounts"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["pgbaseline.io"], "resources": ["awsaccounts/status"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
]
EXTERNAL_ID_RULES = [
    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["pgbaseline-external-ids"], "verbs": ["get"]},
]


def test_rbac_has_exactly_the_operator_verbs(helm):
    docs = render(helm)
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole")}
    assert sorted(roles) == ["pgb-pgbaseline", "pgb-pgbaseline-accounts"]
    assert roles["pgb-pgbaseline"]["rules"] == EXPECTED_POLICY_RULES
    assert roles["pgb-pgbaseline-accounts"]["rules"] == EXPECTED_ACCOUNT_RULES
    named = {r["metadata"]["name"]: r for r in by_kind(docs, "Role")}
    assert sorted(named) == ["pgb-pgbaseline-external-ids", "pgb-pgbaseline-leader-election"]
    lease = named["pgb-pgbaseline-leader-election"]
    assert lease["metadata"]["namespace"] == "pgbaseline-system"
    verbs = sorted(v for r in lease["rules"] for v in r["verbs"])
    assert verbs == ["create", "get", "patch", "update"]
    assert all(r["apiGroups"] == ["coordination.k8s.io"] and r["resources"] == ["leases"] for r in lease["rules"])
    # The only Secret access: get, by name, of the external-id Secrets, in the release namespace.
    external = named["pgb-pgbaseline-external-ids"]
    assert external["metadata"]["namespace"] == "pgbaseline-system"
    assert external["rules"] == EXTERNAL_ID_RULES
    for d in docs:
        for r in d.get("rules", []):
            if d is not external:
                assert "secrets" not in r["resources"]
            assert "*" not in r["verbs"] and "*" not in r["resources"]


def test_policy_reports_off_drops_their_rbac_and_sets_the_flag(helm):
    docs = render(helm, "--set", "operator.policyReports=off")
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole")}
    assert roles["pgb-pgbaseline"]["rules"] == EXPECTED_POLICY_RULES[:3]
    (dep,) = by_kind(docs, "Deployment")
    assert "--policy-reports=off" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    (dep,) = by_kind(render(helm), "Deployment")
    assert "--policy-reports=auto" in dep["spec"]["template"]["spec"]["containers"][0]["args"]


def test_event_queues_become_flags_only_when_set(helm):
    url = "https://sqs.eu-west-1.amazonaws.com/111122223333/pgbaseline-drift"
    (dep,) = by_kind(render(helm, "--set", f"operator.eventQueues={{{url}}}",
                            "--set", "operator.eventDebounce=5s"), "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--event-queue={url}" in args and "--event-debounce=5s" in args
    (dep,) = by_kind(render(helm), "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--event-")]


def test_watch_namespaces_give_namespaced_roles(helm):
    docs = render(helm, *VARIANTS["namespaced-ha"])
    # Nothing cluster-wide about policies; AwsAccounts are cluster-scoped, so reading them is.
    assert [r["rules"] for r in by_kind(docs, "ClusterRole")] == [EXPECTED_ACCOUNT_RULES]
    assert [b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding")] == ["pgb-pgbaseline-accounts"]
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(docs, "Role")}
    for ns in ("team-a", "team-b"):
        assert roles[(ns, "pgb-pgbaseline")]["rules"] == EXPECTED_POLICY_RULES
    binds = {(b["metadata"]["namespace"], b["metadata"]["name"]) for b in by_kind(docs, "RoleBinding")}
    assert {("team-a", "pgb-pgbaseline"), ("team-b", "pgb-pgbaseline")} <= binds
    (dep,) = by_kind(docs, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--leader-election" in args


def test_master_secret_namespaces_become_flags_and_no_rbac(helm):
    """The RDS-managed master secret is read from Secrets Manager, not Kubernetes: the chart
    passes the allowed namespaces to the operator and adds no RBAC for them."""
    default = render(helm)
    docs = render(helm, "--set", "database.masterUserSecretNamespaces={platform,dba}")
    (dep,) = by_kind(docs, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--db-master-secret")] == [
        "--db-master-secret-namespace=platform", "--db-master-secret-namespace=dba"]
    (dep,) = by_kind(default, "Deployment")
    assert not [a for a in dep["spec"]["template"]["spec"]["containers"][0]["args"] if "master-secret" in a]
    rbac = ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    assert [d for d in docs if d["kind"] in rbac] == [d for d in default if d["kind"] in rbac]


def test_optional_objects_and_irsa(helm):
    docs = render(helm, *VARIANTS["all-optional"])
    (sa,) = by_kind(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/pgbaseline"
    (sm,) = by_kind(docs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "http-metrics"
    (np,) = by_kind(docs, "NetworkPolicy")
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert by_kind(docs, "PodDisruptionBudget")
    (dep,) = by_kind(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_REGION"] == "eu-west-1"
    # Pod Identity: no annotation at all by default.
    (sa,) = by_kind(render(helm), "ServiceAccount")
    assert "annotations" not in sa["metadata"]
    (svc,) = by_kind(render(helm), "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"


@pytest.mark.parametrize("bad", [
    ["--set", "securityContext.readOnlyRootFilesystem=false"],
    ["--set", "securityContext.allowPrivilegeEscalation=true"],
    ["--set", "podSecurityContext.runAsNonRoot=false"],
    ["--set", "operator.requestsPerSecond=0"],
    ["--set", "watchNamespaces={Not_A_Namespace}"],
    ["--set", "aws.roleArn=not-an-arn"],
    ["--set", "unknownKey=1"],
    ["--set", "operator.policyReports=both"],
    ["--set", "operator.eventQueues={not-a-url}"],
])
def test_values_schema_rejects(helm, bad):
    p = subprocess.run([helm, "template", "pgb", str(CHART), *bad], capture_output=True, text=True)
    assert p.returncode != 0 and "schema" in p.stderr, p.stderr


# ---------------------------------------------------------------- kustomize base


def test_kustomize_base_is_generated_from_the_chart():
    p = subprocess.run([str(ROOT / "tests/deploy/render-kustomize-base"), "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("overlay, values", [
    ("", []),
    # The scale-out overlay installs what the chart does with scaleOut.enabled and 3 replicas.
    ("examples/kustomize/scale-out", ["--set", "scaleOut.enabled=true", "--set", "replicaCount=3"]),
])
def test_kustomize_base_equals_chart_defaults(helm, kubectl, overlay, values):
    kust = [d for d in yaml.safe_load_all(subprocess.run([kubectl, "kustomize", str(ROOT / overlay if overlay else DEPLOY)], check=True,
                                                           capture_output=True, text=True).stdout) if d]
    out = subprocess.run([helm, "template", "pgbaseline", str(CHART), "-n", "pgbaseline", "--include-crds",
                          *values], check=True, capture_output=True, text=True).stdout
    chart = [d for d in yaml.safe_load_all(out) if d]

    def strip(d):
        labels = d["metadata"].get("labels", {})
        labels.pop("helm.sh/chart", None)
        labels.pop("app.kubernetes.io/managed-by", None)
        tmpl = d.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
        tmpl.pop("helm.sh/chart", None)
        tmpl.pop("app.kubernetes.io/managed-by", None)
        return d

    # kustomize's namespace transformer does not know the admission policy kinds are
    # cluster-scoped and gives them the namespace, which the apiserver ignores.
    cluster_scoped = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    for d in kust:
        if d["kind"] in cluster_scoped:
            d["metadata"].pop("namespace", None)
    key = lambda d: (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
    k = {key(d): strip(d) for d in kust if d["kind"] != "Namespace"}
    c = {key(d): strip(d) for d in chart}
    assert sorted(k) == sorted(c)
    for name in k:
        assert k[name] == c[name], name


def test_kustomize_database_components_equal_the_chart(helm, kubectl, tmp_path):
    """An overlay of the base with components/network-policy and components/database-ca-bundle
    renders what the chart renders with networkPolicy.enabled and database.caBundle.configMap:
    egress to the database port, and the CA bundle mounted and passed with --db-ca-bundle."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    rel = lambda p: os.path.relpath(p, overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {rel(DEPLOY)}\n"
        f"components:\n  - {rel(DEPLOY / 'components' / 'network-policy')}\n"
        f"  - {rel(DEPLOY / 'components' / 'database-ca-bundle')}\n")
    kust = [d for d in yaml.safe_load_all(subprocess.run([kubectl, "kustomize", str(overlay)], check=True,
                                                           capture_output=True, text=True).stdout) if d]
    out = subprocess.run([helm, "template", "pgbaseline", str(CHART), "-n", "pgbaseline",
                          "--set", "networkPolicy.enabled=true",
                          "--set", "database.caBundle.configMap=pgbaseline-db-ca"],
                         check=True, capture_output=True, text=True).stdout
    chart = [d for d in yaml.safe_load_all(out) if d]

    def strip(d):
        for labels in (d["metadata"].get("labels", {}),
                       d.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})):
            labels.pop("helm.sh/chart", None)
            labels.pop("app.kubernetes.io/managed-by", None)
        return d

    for kind in ("Deployment", "NetworkPolicy"):
        (k,), (c,) = by_kind(kust, kind), by_kind(chart, kind)
        assert strip(k) == strip(c), kind
    (deployment,) = by_kind(kust, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert "--db-ca-bundle=/etc/pgbaseline/db-ca/global-bundle.pem" in args
    assert {"name": "db-ca", "configMap": {"name": "pgbaseline-db-ca"}} in pod["volumes"]
    (policy,) = by_kind(kust, "NetworkPolicy")
    ports = [p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]]
    assert 5432 in ports


# ---------------------------------------------------------------- IAM policies vs. the code

SDK_TO_ACTION = {
    # snake_case SDK method -> IAM action (the SDK name loses the DB / Db capitalisation).
    "describe_db_instances": "rds:DescribeDBInstances",
    "describe_db_clusters": "rds:DescribeDBClusters",
    "describe_db_parameters": "rds:DescribeDBParameters",
    "describe_db_parameter_groups": "rds:DescribeDBParameterGroups",
    "describe_db_cluster_parameter_groups": "rds:DescribeDBClusterParameterGroups",
    "list_tags_for_resource": "rds:ListTagsForResource",
    "describe_account_attributes": "rds:DescribeAccountAttributes",
    "delete_db_parameter_group": "rds:DeleteDBParameterGroup",
    "delete_db_cluster_parameter_group": "rds:DeleteDBClusterParameterGroup",
    "describe_db_cluster_parameters": "rds:DescribeDBClusterParameters",
    "describe_engine_default_parameters": "rds:DescribeEngineDefaultParameters",
    "describe_engine_default_cluster_parameters": "rds:DescribeEngineDefaultClusterParameters",
    "describe_db_engine_versions": "rds:DescribeDBEngineVersions",
    "describe_certificates": "rds:DescribeCertificates",
    "describe_security_groups": "ec2:DescribeSecurityGroups",
    "describe_network_acls": "ec2:DescribeNetworkAcls",
    "list_aliases": "kms:ListAliases",
    "copy_db_parameter_group": "rds:CopyDBParameterGroup",
    "copy_db_cluster_parameter_group": "rds:CopyDBClusterParameterGroup",
    "modify_db_parameter_group": "rds:ModifyDBParameterGroup",
    "modify_db_cluster_parameter_group": "rds:ModifyDBClusterParameterGroup",
    "modify_db_instance": "rds:ModifyDBInstance",
    "modify_db_cluster": "rds:ModifyDBCluster",
    "reboot_db_instance": "rds:RebootDBInstance",
    "revoke_security_group_ingress": "ec2:RevokeSecurityGroupIngress",
    "get_secret_value": "secretsmanager:GetSecretValue",
    "receive_message": "sqs:ReceiveMessage",
    # IAM authorizes DeleteMessageBatch as sqs:DeleteMessage (one per message).
    "delete_message_batch": "sqs:DeleteMessage",
    "change_message_visibility": "sqs:ChangeMessageVisibility",
}
# Calls made only for an opt-in feature, granted by their own documented policy file and kept
# out of the AWS API policies: the RDS-managed master secret (database.connection
# .masterUserSecret) and the drift queue (--event-queue).
SEPARATE_POLICIES = {
    "secretsmanager:GetSecretValue": "iam-policy-rds-master-secret.json",
    "sqs:ReceiveMessage": "events/iam-policy-events.json",
    "sqs:DeleteMessage": "events/iam-policy-events.json",
    "sqs:ChangeMessageVisibility": "events/iam-policy-events.json",
}
# The operation names their errors are reported under.
SEPARATE_OPERATIONS = {"GetSecretValue", "ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibility"}
# IAM actions AWS authorizes in addition to the called operation (Service Authorization Reference):
# copies carry tags (rds:AddTagsToResource); ModifyDBInstance/Cluster with ManageMasterUserPassword
# creates the secret (RDS user guide, "Permissions required for Secrets Manager integration").
DEPENDENT_ACTIONS = {"rds:AddTagsToResource", "secretsmanager:CreateSecret", "secretsmanager:TagResource",
                     "kms:DescribeKey"}


def sdk_operations() -> set[str]:
    """Operation names (snake_case) of the aws-sdk-rds/ec2/kms versions in Cargo.lock, from the
    crates' sources in the Cargo registry; empty when they are not there."""
    lock = (ROOT / "Cargo.lock").read_text()
    registry = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "registry" / "src"
    ops: set[str] = set()
    for crate in ("aws-sdk-rds", "aws-sdk-ec2", "aws-sdk-kms", "aws-sdk-secretsmanager", "aws-sdk-sqs"):
        m = re.search(rf'name = "{crate}"\nversion = "([^"]+)"', lock)
        for d in registry.glob(f"*/{crate}-{m.group(1)}/src/operation") if m else []:
            ops |= {p.name for p in d.iterdir() if p.is_dir()}
    return ops


def code_calls() -> set[str]:
    """The AWS operations the code calls: `.operation()` builder calls in src/aws (the only module
    that imports the SDKs), recognised by the SDKs' own operation list (or, without the crates'
    sources, by an AWS verb prefix)."""
    aws = "".join(p.read_text() for p in (ROOT / "src" / "aws").rglob("*.rs"))
    ops = sdk_operations()
    if not ops:
        verbs = ("describe", "list", "get", "copy", "modify", "reboot", "revoke", "authorize", "create",
                 "delete", "reset", "add", "remove", "start", "stop", "restore", "promote", "put", "rotate")
        ops = {c for c in re.findall(r"\.\s*([a-z][a-z0-9_]*)\(\)", aws) if c.split("_")[0] in verbs}
    # Each request is `client.operation()...builder calls....send()`: the operation is the
    # nearest `.name()` of the SDKs' operation list before each `.send()`.
    methods = set()
    for send in re.finditer(r"\.\s*send\(\)", aws):
        before = [m.group(1) for m in re.finditer(r"\.\s*([a-z][a-z0-9_]*)\(\)", aws[:send.start()])
                  if m.group(1) in ops]
        if before:
            methods.add(before[-1])
    unknown = methods - set(SDK_TO_ACTION)
    assert not unknown, f"new AWS calls in src/: {sorted(unknown)}; add them to the IAM policies and SDK_TO_ACTION"
    return {SDK_TO_ACTION[m] for m in methods}


def allowed_actions(policy: dict) -> set[str]:
    acts = set()
    for s in policy["Statement"]:
        if s["Effect"] == "Allow":
            a = s["Action"]
            acts |= {a} if isinstance(a, str) else set(a)
    return acts


def load(name):
    return json.loads((DEPLOY / name).read_text())


def test_iam_policy_covers_exactly_the_calls_in_the_code():
    calls = code_calls() - set(SEPARATE_POLICIES)
    acts = allowed_actions(load("iam-policy.json"))
    assert not any("*" in a for a in acts), "no wildcard actions"
    assert calls - acts == set(), f"missing: {sorted(calls - acts)}"
    assert acts - calls == DEPENDENT_ACTIONS, f"extra: {sorted(acts - calls - DEPENDENT_ACTIONS)}"
    # Cross-check: the operation names the code reports its errors under.
    aws = "".join(p.read_text() for p in (ROOT / "src" / "aws").rglob("*.rs"))
    # sts:GetCallerIdentity needs no permission (AWS allows it to every identity).
    reported = set(re.findall(r'from_sdk\(\s*"(\w+)"', aws)) - {"GetCallerIdentity"} - SEPARATE_OPERATIONS
    assert reported <= {a.split(":")[1] for a in acts}, sorted(reported - {a.split(":")[1] for a in acts})


def test_events_policy_covers_exactly_the_queue_calls():
    reported = set(re.findall(r'from_sdk\(\s*"(\w+)"', (ROOT / "src/aws/queue.rs").read_text()))
    # A batch call is authorized as its single action (SQS API reference).
    needed = {"sqs:" + r.removesuffix("Batch") for r in reported}
    acts = allowed_actions(load("events/iam-policy-events.json"))
    assert needed == {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}
    assert acts == needed


def test_separate_policies_grant_their_calls_on_their_resources_only():
    calls = code_calls()
    for action, name in SEPARATE_POLICIES.items():
        assert action in calls, f"{action} is no longer called: drop it from {name}"
        assert action in allowed_actions(load(name)), name
        for other in ("iam-policy.json", "iam-policy-readonly.json"):
            assert action not in allowed_actions(load(other)), other
    (secret,) = [s for s in load("iam-policy-rds-master-secret.json")["Statement"]
                 if s["Action"] == "secretsmanager:GetSecretValue"]
    assert secret["Resource"] == ["arn:aws:secretsmanager:*:*:secret:rds!*"]
    # kms:Decrypt only through Secrets Manager, for RDS's secrets.
    (decrypt,) = [s for s in load("iam-policy-rds-master-secret.json")["Statement"] if s["Action"] == "kms:Decrypt"]
    assert decrypt["Condition"]["StringLike"]["kms:ViaService"] == "secretsmanager.*.amazonaws.com"


def test_readonly_policy_is_exactly_the_reads():
    calls = code_calls() - set(SEPARATE_POLICIES)
    reads = {a for a in calls if re.match(r"\w+:(Describe|List|Get)", a)}
    ro = load("iam-policy-readonly.json")
    assert allowed_actions(ro) == reads
    assert all(s["Effect"] == "Allow" for s in ro["Statement"])


def test_write_statements_are_resource_scoped():
    for s in load("iam-policy.json")["Statement"]:
        acts = [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
        if s["Effect"] == "Allow" and not all(re.match(r"\w+:(Describe|List)", a) for a in acts):
            res = [s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]
            assert "*" not in res, f"{s['Sid']} grants a write on every resource"
    for name in ("iam-policy.json", "iam-policy-readonly.json", "iam-policy-inplace-groups.json",
                 "iam-policy-rds-master-secret.json"):
        p = load(name)
        assert p["Version"] == "2012-10-17" and len(json.dumps(p, separators=(",", ":"))) <= 6144
        sids = [s["Sid"] for s in p["Statement"]]
        assert len(sids) == len(set(sids))


# ---------------------------------------------------------------- Argo CD / Flux


def test_argocd_configmap_embeds_health_lua():
    cm = yaml.safe_load((DEPLOY / "argocd" / "argocd-cm.yaml").read_text())
    key = "resource.customizations.health.pgbaseline.io_DatabaseSecurityPolicy"
    assert cm["data"][key] == (DEPLOY / "argocd" / "health.lua").read_text()


def test_flux_kustomization_has_health_exprs():
    ks = yaml.safe_load((DEPLOY / "flux" / "kustomization.yaml").read_text())
    (h,) = ks["spec"]["healthCheckExprs"]
    assert h["apiVersion"] == "pgbaseline.io/v1alpha1" and h["kind"] == "DatabaseSecurityPolicy"
    assert h["current"] and h["inProgress"] and h["failed"]
    assert ks["spec"]["wait"] is True
