"""deploy/iam-policy.json and deploy/iam-policy-readonly.json under IAM enforcement.

moto enforces IAM per action (every request checked against Resource "*", no condition keys):
so the Enforce scenario runs with exactly the policy's actions (its Allow statements with the
resource and condition scoping projected away), and the scoping itself is checked by iamsim on
the requests recorded during that run. The emulator's IAM enforcement is AWS-faithful for
aws-sdk-rust (tests/emulator/pgbaseline_emulator/auth.py)."""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import boto3
import botocore.exceptions
import pytest

import iamsim
from conftest import DEPLOY, ROOT

EXAMPLES = [ROOT / "examples/enforce-strict-instance.yaml", ROOT / "examples/enforce-aurora-cluster.yaml"]
EXTRA = ROOT / "tests/deploy/fixtures/enforce-network-and-secrets.yaml"
DENIED = ("AccessDenied", "UnauthorizedOperation", "AccessDeniedException")
WRITES = ["rds:CopyDBParameterGroup", "rds:CopyDBClusterParameterGroup", "rds:ModifyDBParameterGroup",
          "rds:ModifyDBClusterParameterGroup", "rds:ModifyDBInstance", "rds:ModifyDBCluster",
          "rds:RebootDBInstance", "ec2:RevokeSecurityGroupIngress"]


def policy(name: str) -> dict:
    return json.loads((DEPLOY / name).read_text())


def action_projection(doc: dict, drop: set[str] = frozenset()) -> dict:
    """The Allow statements with Resource "*" and no conditions: what moto can evaluate."""
    statements = []
    for s in doc["Statement"]:
        if s["Effect"] != "Allow":
            continue
        actions = [a for a in iamsim._as_list(s["Action"]) if a not in drop]
        if actions:
            statements.append({"Sid": s["Sid"], "Effect": "Allow", "Action": actions, "Resource": "*"})
    return {"Version": "2012-10-17", "Statement": statements}


def client(emulator, service: str, creds: dict | None = None):
    creds = creds or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.client(service, endpoint_url=emulator.url, region_name="us-east-1", **creds)


def iam_user(emulator, doc: dict) -> dict:
    """A user whose only permissions are `doc` (a managed policy), and its access key."""
    iam = client(emulator, "iam")
    name = "pgbaseline-" + uuid.uuid4().hex[:8]
    iam.create_user(UserName=name)
    arn = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(doc))["Policy"]["Arn"]
    iam.attach_user_policy(UserName=name, PolicyArn=arn)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}


def check(pgbaseline, emulator, creds: dict, files, fix: bool) -> tuple[int, dict | None, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=emulator.url, AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
               AWS_ACCESS_KEY_ID=creds["aws_access_key_id"], AWS_SECRET_ACCESS_KEY=creds["aws_secret_access_key"])
    cmd = [str(pgbaseline), "check", "-o", "json"] + (["--fix"] if fix else [])
    for f in files:
        cmd += ["-f", str(f)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(p.stdout)
    except json.JSONDecodeError:
        report = None
    return p.returncode, report, p.stderr


def findings(report: dict):
    for db in report["databases"]:
        for f in db["findings"]:
            yield db["id"], f


def scenario(emulator, doc: dict) -> dict:
    """Fresh small fleet, a user with `doc`, IAM enforcement on; returns the user's credentials."""
    emulator.reset_and_seed()
    creds = iam_user(emulator, doc)
    emulator.reset_calls()
    emulator.auth(0)
    return creds


@pytest.fixture(autouse=True)
def _auth_off_afterwards(emulator):
    yield
    emulator.auth("inf")


# ---------------------------------------------------------------- what moto enforces


def test_moto_enforces_iam_on_every_action_pgbaseline_calls(emulator):
    """Each AWS action the operator uses is refused to a user without it: moto's enforcement
    covers RDS (including the emulator's own handlers), EC2 and KMS."""
    emulator.reset_and_seed()
    creds = iam_user(emulator, {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}]})
    emulator.auth(0)
    rds, ec2, kms = (client(emulator, s, creds) for s in ("rds", "ec2", "kms"))
    calls = {
        "rds:DescribeDBInstances": lambda: rds.describe_db_instances(),
        "rds:DescribeDBClusters": lambda: rds.describe_db_clusters(),
        "rds:DescribeDBParameters": lambda: rds.describe_db_parameters(DBParameterGroupName="default.postgres16"),
        "rds:DescribeDBClusterParameters": lambda: rds.describe_db_cluster_parameters(
            DBClusterParameterGroupName="default.aurora-postgresql16"),
        "rds:DescribeEngineDefaultParameters": lambda: rds.describe_engine_default_parameters(
            DBParameterGroupFamily="postgres16"),
        "rds:DescribeEngineDefaultClusterParameters": lambda: rds.describe_engine_default_cluster_parameters(
            DBParameterGroupFamily="aurora-postgresql16"),
        "rds:DescribeDBEngineVersions": lambda: rds.describe_db_engine_versions(Engine="postgres"),
        "rds:DescribeCertificates": lambda: rds.describe_certificates(),
        "ec2:DescribeSecurityGroups": lambda: ec2.describe_security_groups(),
        "ec2:DescribeNetworkAcls": lambda: ec2.describe_network_acls(),
        "kms:ListAliases": lambda: kms.list_aliases(),
        "rds:CopyDBParameterGroup": lambda: rds.copy_db_parameter_group(
            SourceDBParameterGroupIdentifier="default.postgres16", TargetDBParameterGroupIdentifier="pgbaseline-x",
            TargetDBParameterGroupDescription="x"),
        "rds:CopyDBClusterParameterGroup": lambda: rds.copy_db_cluster_parameter_group(
            SourceDBClusterParameterGroupIdentifier="default.aurora-postgresql16",
            TargetDBClusterParameterGroupIdentifier="pgbaseline-x", TargetDBClusterParameterGroupDescription="x"),
        "rds:ModifyDBParameterGroup": lambda: rds.modify_db_parameter_group(
            DBParameterGroupName="pgb-shared-pg16",
            Parameters=[{"ParameterName": "log_connections", "ParameterValue": "1", "ApplyMethod": "immediate"}]),
        "rds:ModifyDBClusterParameterGroup": lambda: rds.modify_db_cluster_parameter_group(
            DBClusterParameterGroupName="default.aurora-postgresql16",
            Parameters=[{"ParameterName": "log_connections", "ParameterValue": "1", "ApplyMethod": "immediate"}]),
        "rds:ModifyDBInstance": lambda: rds.modify_db_instance(DBInstanceIdentifier="legacy-prod",
                                                               DeletionProtection=True),
        "rds:ModifyDBCluster": lambda: rds.modify_db_cluster(DBClusterIdentifier="ledger-prod",
                                                             DeletionProtection=True),
        "rds:RebootDBInstance": lambda: rds.reboot_db_instance(DBInstanceIdentifier="legacy-prod"),
        "ec2:RevokeSecurityGroupIngress": lambda: ec2.revoke_security_group_ingress(
            GroupId="sg-00000000", IpPermissions=[{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
                                                   "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]),
    }
    not_enforced = {}
    for action, call in calls.items():
        try:
            call()
            not_enforced[action] = "allowed"
        except botocore.exceptions.ClientError as e:
            code = e.response["Error"]["Code"]
            if code not in DENIED:
                not_enforced[action] = code
    assert not not_enforced, f"moto did not enforce IAM for: {not_enforced}"


def test_moto_does_not_evaluate_resource_scoping(emulator):
    """The limit that makes iamsim necessary: moto checks every request against Resource "*",
    so a statement scoped to the very group being modified does not allow it."""
    emulator.reset_and_seed()
    creds = iam_user(emulator, {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "rds:ModifyDBParameterGroup",
         "Resource": "arn:aws:rds:us-east-1:123456789012:pg:pgb-shared-pg16"}]})
    emulator.auth(0)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(emulator, "rds", creds).modify_db_parameter_group(
            DBParameterGroupName="pgb-shared-pg16",
            Parameters=[{"ParameterName": "log_connections", "ParameterValue": "1", "ApplyMethod": "immediate"}])
    assert e.value.response["Error"]["Code"] == "AccessDenied"


# ---------------------------------------------------------------- Enforce with exactly the policy

RECORDED: dict = {}


def test_enforce_end_to_end_with_exactly_the_policy(pgbaseline, emulator):
    creds = scenario(emulator, action_projection(policy("iam-policy.json")))
    emulator.start_recording()
    rc, report, stderr = check(pgbaseline, emulator, creds, EXAMPLES + [EXTRA], fix=True)
    RECORDED["calls"] = iamsim.recorded_calls(emulator.stop_recording())
    assert report is not None, stderr
    errors = [(db, f["control"], f["message"]) for db, f in findings(report) if f["status"] == "Error"]
    assert not errors, errors
    assert rc in (0, 1), stderr  # 1: legacy-prod waits for its maintenance window (PendingReboot)
    remediated = {db for db, f in findings(report) if f["status"] in ("Remediated", "PendingReboot")}
    assert {"legacy-prod", "ledger-prod", "billing-prod", "sandbox-dev"} <= remediated, remediated
    calls = emulator.calls()
    assert not [c for c in calls if c["status"] in (401, 403)], "a call was refused"
    made = {f"{c['service']}:{c['action']}" for c in calls if c["status"] == 200}
    assert set(WRITES) <= made, f"writes not exercised: {set(WRITES) - made}"
    # A second pass with the same credentials converges: nothing left to fix but the reboot.
    rc, report, stderr = check(pgbaseline, emulator, creds, EXAMPLES + [EXTRA], fix=True)
    assert report is not None and rc in (0, 1), stderr
    assert not [f for _, f in findings(report) if f["status"] in ("Error", "Remediated")]


def test_policy_scoping_allows_every_recorded_request():
    if "calls" not in RECORDED:
        pytest.skip("needs test_enforce_end_to_end_with_exactly_the_policy")
    full = [policy("iam-policy.json")]
    denied = [str(r) for action, params in RECORDED["calls"]
              for r in iamsim.auth_requests(action, params) if not iamsim.allowed(full, r)]
    assert not denied, "deploy/iam-policy.json (with resources and conditions) refuses:\n" + "\n".join(denied)
    writes = {a for a, _ in RECORDED["calls"] if not a.split(":")[1].startswith(("Describe", "List"))}
    assert set(WRITES) <= writes
    readonly = [policy("iam-policy-readonly.json")]
    for action, params in RECORDED["calls"]:
        for r in iamsim.auth_requests(action, params):
            assert iamsim.allowed(readonly, r) == action.split(":")[1].startswith(("Describe", "List")), str(r)


A = iamsim.AuthRequest
PG = "arn:aws:rds:us-east-1:123456789012:pg:"
CPG = "arn:aws:rds:us-east-1:123456789012:cluster-pg:"
DB = "arn:aws:rds:us-east-1:123456789012:db:"
TAG = {"aws:RequestTag/pgbaseline.io/managed": "true", "aws:TagKeys": ["pgbaseline.io/managed"]}


@pytest.mark.parametrize("req, why", [
    (A("rds:ModifyDBParameterGroup", PG + "pgb-shared-pg16"), "a user's own (shared) group"),
    (A("rds:ModifyDBClusterParameterGroup", CPG + "team-aurora"), "a user's own cluster group"),
    (A("rds:ModifyDBParameterGroup", PG + "default.postgres16"), "a default group"),
    (A("rds:ModifyDBInstance", PG + "someone-elses-group"), "attaching a group pgbaseline did not make"),
    (A("rds:CopyDBParameterGroup", PG + "pgbaseline-x"), "a copy without the managed tag"),
    (A("rds:CopyDBParameterGroup", PG + "pgbaseline-x",
       {**TAG, "aws:RequestTag/owner": "me", "aws:TagKeys": ["pgbaseline.io/managed", "owner"]}), "extra tags"),
    (A("rds:AddTagsToResource", DB + "legacy-prod", TAG), "tagging a database"),
    (A("rds:ModifyDBInstance", DB + "legacy-prod", {"rds:ManageMasterUserPassword": False}),
     "turning the managed master password off"),
    (A("rds:DeleteDBInstance", DB + "legacy-prod"), "deleting"),
    (A("rds:ResetDBParameterGroup", PG + "pgbaseline-x"), "resetting"),
    (A("ec2:AuthorizeSecurityGroupIngress", "arn:aws:ec2:us-east-1:123456789012:security-group/sg-1"), "opening"),
    (A("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1"),
     "reading the master password"),
    (A("secretsmanager:CreateSecret", "arn:aws:secretsmanager:us-east-1:123456789012:secret:app"),
     "a secret RDS does not own"),
])
def test_policy_scoping_refuses(req, why):
    assert not iamsim.allowed([policy("iam-policy.json")], req), why


def test_inplace_addon_allows_only_parameter_group_changes():
    full = [policy("iam-policy.json"), policy("iam-policy-inplace-groups.json")]
    assert iamsim.allowed(full, A("rds:ModifyDBParameterGroup", PG + "pgb-shared-pg16"))
    assert iamsim.allowed(full, A("rds:ModifyDBClusterParameterGroup", CPG + "team-aurora"))
    assert not iamsim.allowed(full, A("rds:ModifyDBInstance", PG + "pgb-shared-pg16"))
    assert not iamsim.allowed(full, A("rds:DeleteDBParameterGroup", PG + "pgb-shared-pg16"))


# ---------------------------------------------------------------- one action missing


@pytest.mark.parametrize("missing", WRITES)
def test_missing_write_action_is_reported_not_crashed(pgbaseline, emulator, missing):
    creds = scenario(emulator, action_projection(policy("iam-policy.json"), drop={missing}))
    rc, report, stderr = check(pgbaseline, emulator, creds, EXAMPLES + [EXTRA], fix=True)
    assert "panicked" not in stderr
    assert report is not None, f"no JSON report (exit {rc}): {stderr[-2000:]}"
    assert rc == 2, f"exit {rc}, expected 2 (a control could not be fixed)"
    op = missing.split(":")[1]
    errors = [(db, f) for db, f in findings(report) if f["status"] == "Error"]
    assert errors and all(op in f["message"] for _, f in errors), errors
    assert all(any(code in f["message"] for code in DENIED) for _, f in errors), errors
    # Other databases are still remediated: one refused action does not stop the run.
    ok = {db for db, f in findings(report) if f["status"] in ("Remediated", "PendingReboot")}
    assert ok - {db for db, _ in errors}, "nothing else was remediated"


def test_missing_read_action_fails_cleanly(pgbaseline, emulator):
    creds = scenario(emulator, action_projection(policy("iam-policy-readonly.json"),
                                                 drop={"rds:DescribeDBParameters"}))
    rc, report, stderr = check(pgbaseline, emulator, creds, EXAMPLES, fix=False)
    assert rc == 2 and "panicked" not in stderr
    assert "AccessDenied" in stderr and "DescribeDBParameters" in stderr, stderr[-2000:]


# ---------------------------------------------------------------- read-only


def test_readonly_policy_audits_everything(pgbaseline, emulator):
    creds = scenario(emulator, action_projection(policy("iam-policy-readonly.json")))
    files = sorted((ROOT / "examples").glob("*.yaml")) + [EXTRA]
    rc, report, stderr = check(pgbaseline, emulator, creds, files, fix=False)
    assert report is not None, stderr
    assert rc == 1, f"exit {rc}: the seeded fleet is not compliant"
    assert not [f for _, f in findings(report) if f["status"] == "Error"]
    assert report["summary"]["databases"] >= 6
    calls = emulator.calls()
    assert calls and all(c["status"] == 200 for c in calls), [c for c in calls if c["status"] != 200]
    assert all(c["action"].startswith(("Describe", "List")) for c in calls)


def test_readonly_policy_refuses_every_fix(pgbaseline, emulator):
    creds = scenario(emulator, action_projection(policy("iam-policy-readonly.json")))
    rc, report, stderr = check(pgbaseline, emulator, creds, EXAMPLES + [EXTRA], fix=True)
    assert report is not None and rc == 2, stderr
    assert "panicked" not in stderr
    errors = [f for _, f in findings(report) if f["status"] == "Error"]
    assert errors and all(any(code in f["message"] for code in DENIED) for f in errors)
    assert not [f for _, f in findings(report) if f["status"] == "Remediated"]
    writes = [c for c in emulator.calls() if not c["action"].startswith(("Describe", "List"))]
    assert writes and all(c["status"] == 403 for c in writes)
