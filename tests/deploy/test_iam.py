"""deploy/iam-policy.json and deploy/iam-policy-readonly.json under IAM enforcement.

moto enforces IAM per action (every request checked against Resource "*", no condition keys):
so the Enforce scenario runs with exactly the policy's actions (its Allow statements with the
resource and condition scoping projected away), and the scoping itself is checked by iamsim on
the requests recorded during that run. The emulator's IAM enforcement is AWS-faithful for
aws-sdk-rust (tests/emulator/pgbaseline_emulator/auth.py)."""
from __future__ import annotations

import json
import os
import re
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
        "rds:DescribeDBParameterGroups": lambda: rds.describe_db_parameter_groups(),
        "rds:DescribeDBClusterParameterGroups": lambda: rds.describe_db_cluster_parameter_groups(),
        "rds:DescribeAccountAttributes": lambda: rds.describe_account_attributes(),
        "rds:ListTagsForResource": lambda: rds.list_tags_for_resource(ResourceName=PG + "pgb-shared-pg16"),
        "rds:DeleteDBParameterGroup": lambda: rds.delete_db_parameter_group(DBParameterGroupName="pgb-shared-pg16"),
        "rds:DeleteDBClusterParameterGroup": lambda: rds.delete_db_cluster_parameter_group(
            DBClusterParameterGroupName="default.aurora-postgresql16"),
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
    # Replayed from the seeded state, where no group carries the managed tag: every group the
    # run modifies or attaches must have been tagged by its own copy earlier in the run.
    full = [policy("iam-policy.json")]
    state = iamsim.TagState()
    requests = [(action, r) for action, params in RECORDED["calls"] for r in state.requests(action, params)]
    denied = [str(r) for _, r in requests if not iamsim.allowed(full, r)]
    assert not denied, "deploy/iam-policy.json (with resources and conditions) refuses:\n" + "\n".join(denied)
    writes = {a for a, _ in RECORDED["calls"] if not a.split(":")[1].startswith(("Describe", "List"))}
    assert set(WRITES) <= writes
    # The run went through the managed-group flow: the listing, and every group it set or
    # attached carried the managed tag by then (so the allowance above rests on the tag).
    assert {"rds:DescribeDBParameterGroups", "rds:DescribeDBClusterParameterGroups"} <= {a for a, _ in RECORDED["calls"]}
    on_groups = [r for _, r in requests
                 if r.action in ("rds:ModifyDBParameterGroup", "rds:ModifyDBClusterParameterGroup",
                                 "rds:ModifyDBInstance", "rds:ModifyDBCluster")
                 and (":pg:" in r.resource or ":cluster-pg:" in r.resource)]
    assert on_groups and all(r.context.get("aws:ResourceTag/pgbaseline.io/managed") == "true" for r in on_groups)
    readonly = [policy("iam-policy-readonly.json")]
    for action, r in requests:
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


def test_master_secret_policy_reads_only_rds_managed_secrets():
    """iam-policy-rds-master-secret.json: GetSecretValue on RDS's own `rds!…` secrets, and
    kms:Decrypt only through Secrets Manager for those secrets (a customer managed key)."""
    doc = [policy("iam-policy-rds-master-secret.json")]
    sm = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
    key = "arn:aws:kms:us-east-1:123456789012:key/1234"
    via = {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com",
           "kms:EncryptionContext:SecretARN": sm + "rds!db-1-AbCdEf"}
    assert iamsim.allowed(doc, A("secretsmanager:GetSecretValue", sm + "rds!db-1-AbCdEf"))
    assert iamsim.allowed(doc, A("secretsmanager:GetSecretValue", sm + "rds!cluster-2-AbCdEf"))
    assert not iamsim.allowed(doc, A("secretsmanager:GetSecretValue", sm + "app-password-AbCdEf"))
    assert not iamsim.allowed(doc, A("secretsmanager:PutSecretValue", sm + "rds!db-1-AbCdEf"))
    assert iamsim.allowed(doc, A("kms:Decrypt", key, via))
    assert not iamsim.allowed(doc, A("kms:Decrypt", key))
    assert not iamsim.allowed(doc, A("kms:Decrypt", key, {**via, "kms:ViaService": "s3.us-east-1.amazonaws.com"}))
    assert not iamsim.allowed(doc, A("kms:Decrypt", key, {**via, "kms:EncryptionContext:SecretARN": sm + "app"}))


def test_inplace_addon_allows_only_parameter_group_changes():
    full = [policy("iam-policy.json"), policy("iam-policy-inplace-groups.json")]
    assert iamsim.allowed(full, A("rds:ModifyDBParameterGroup", PG + "pgb-shared-pg16"))
    assert iamsim.allowed(full, A("rds:ModifyDBClusterParameterGroup", CPG + "team-aurora"))
    assert not iamsim.allowed(full, A("rds:ModifyDBInstance", PG + "pgb-shared-pg16"))
    assert not iamsim.allowed(full, A("rds:DeleteDBParameterGroup", PG + "pgb-shared-pg16"))


# ---------------------------------------------------------------- managed groups (issue 9)
#
# The calls of the managed-group flow as aws-sdk-rust sends them (query-protocol form parameters),
# authorized with the groups' tags as they are at that point (iamsim.TagState). A managed group is
# pgbaseline's by its tag, never by its name: the same requests on a group merely named like one
# are refused.

MANAGED_TAG = {"Tags.Tag.1.Key": "pgbaseline.io/managed", "Tags.Tag.1.Value": "true"}
NEW_PG = "pgbaseline-postgres16-00112233445566aa"
NEW_CPG = "pgbaseline-aurora-postgresql16-00112233445566bb"
SQUAT = "pgbaseline-postgres16-0123456789abcdef"
SQUAT_C = "pgbaseline-aurora-postgresql16-0123456789abcdef"
# Groups that exist before the run: ours from an earlier run (including a first-version
# per-database copy), and groups that are not.
EXISTING = {
    PG + "pgbaseline-postgres16-feedfacecafebeef": {"pgbaseline.io/managed": "true"},
    CPG + "pgbaseline-aurora-postgresql16-feedfacecafebeef": {"pgbaseline.io/managed": "true"},
    PG + "pgbaseline-legacy-prod-postgres16": {"pgbaseline.io/managed": "true"},
    PG + "pgbaseline-unused-postgres16-0000000000000001": {"pgbaseline.io/managed": "true"},
    CPG + "pgbaseline-aurora-postgresql16-0000000000000001": {"pgbaseline.io/managed": "true"},
    PG + "pgb-shared-pg16": {"env": "prod", "team": "payments"},
}
SQUATTED = {  # (why, tags of the group named SQUAT / SQUAT_C)
    "untagged": {},
    "tagged false": {"pgbaseline.io/managed": "false"},
    "tagged by someone else": {"owner": "mallory", "env": "prod"},
    "tagged TRUE (not the value pgbaseline writes)": {"pgbaseline.io/managed": "TRUE"},
    "tagged with a look-alike key": {"pgbaseline.io/Managed": "true"},
}


def _set(group_param: str, group: str, name: str, value: str) -> dict:
    return {group_param: group, "Parameters.Parameter.1.ParameterName": name,
            "Parameters.Parameter.1.ParameterValue": value, "Parameters.Parameter.1.ApplyMethod": "immediate"}


def managed_flow() -> list[tuple[str, dict]]:
    """Every call the Enforce path makes on parameter groups, in order: the listing and quotas,
    new shared copies (DB and cluster, usual and alternate name), finishing and reusing groups
    made earlier, a first-version copy migrated, attaching, rebooting, and garbage collection."""
    return [
        # The sweep's listing and the quotas read before creating anything.
        ("rds:DescribeDBParameterGroups", {"MaxRecords": "100"}),
        ("rds:DescribeDBClusterParameterGroups", {"MaxRecords": "100"}),
        ("rds:DescribeAccountAttributes", {}),
        ("rds:DescribeDBParameters", {"DBParameterGroupName": "pgb-shared-pg16", "MaxRecords": "100"}),
        # A new shared copy of a user's group: copy (tagged), set, read back, attach.
        ("rds:CopyDBParameterGroup", {"SourceDBParameterGroupIdentifier": "pgb-shared-pg16",
                                      "TargetDBParameterGroupIdentifier": NEW_PG,
                                      "TargetDBParameterGroupDescription": "pgbaseline managed copy of pgb-shared-pg16",
                                      **MANAGED_TAG}),
        ("rds:ModifyDBParameterGroup", _set("DBParameterGroupName", NEW_PG, "rds.force_ssl", "1")),
        ("rds:DescribeDBParameters", {"DBParameterGroupName": NEW_PG, "MaxRecords": "100"}),
        ("rds:ModifyDBInstance", {"DBInstanceIdentifier": "legacy-prod", "DBParameterGroupName": NEW_PG,
                                  "ApplyImmediately": "true"}),
        ("rds:RebootDBInstance", {"DBInstanceIdentifier": "legacy-prod"}),
        # The usual name is taken by a group that is not ours: the alternate name `-1`.
        ("rds:DescribeDBParameterGroups", {"DBParameterGroupName": SQUAT}),
        ("rds:ListTagsForResource", {"ResourceName": PG + SQUAT}),
        ("rds:CopyDBParameterGroup", {"SourceDBParameterGroupIdentifier": "default.postgres16",
                                      "TargetDBParameterGroupIdentifier": SQUAT + "-1",
                                      "TargetDBParameterGroupDescription": "pgbaseline managed copy of default.postgres16",
                                      **MANAGED_TAG}),
        ("rds:ModifyDBParameterGroup", _set("DBParameterGroupName", SQUAT + "-1", "log_connections", "1")),
        ("rds:ModifyDBInstance", {"DBInstanceIdentifier": "sandbox-dev", "DBParameterGroupName": SQUAT + "-1",
                                  "ApplyImmediately": "true"}),
        # Aurora: a new shared cluster copy.
        ("rds:CopyDBClusterParameterGroup", {
            "SourceDBClusterParameterGroupIdentifier": "default.aurora-postgresql16",
            "TargetDBClusterParameterGroupIdentifier": NEW_CPG,
            "TargetDBClusterParameterGroupDescription": "pgbaseline managed copy of default.aurora-postgresql16",
            **MANAGED_TAG}),
        ("rds:ModifyDBClusterParameterGroup", _set("DBClusterParameterGroupName", NEW_CPG, "rds.force_ssl", "1")),
        ("rds:DescribeDBClusterParameters", {"DBClusterParameterGroupName": NEW_CPG, "MaxRecords": "100"}),
        ("rds:ModifyDBCluster", {"DBClusterIdentifier": "ledger-prod", "DBClusterParameterGroupName": NEW_CPG,
                                 "ApplyImmediately": "true"}),
        # Reusing groups an earlier run made: ownership proved by the tag, an unfinished one
        # finished, then attached.
        ("rds:ListTagsForResource", {"ResourceName": PG + "pgbaseline-postgres16-feedfacecafebeef"}),
        ("rds:ModifyDBParameterGroup", _set("DBParameterGroupName", "pgbaseline-postgres16-feedfacecafebeef",
                                            "password_encryption", "scram-sha-256")),
        ("rds:ModifyDBInstance", {"DBInstanceIdentifier": "billing-prod",
                                  "DBParameterGroupName": "pgbaseline-postgres16-feedfacecafebeef",
                                  "ApplyImmediately": "true"}),
        ("rds:ListTagsForResource", {"ResourceName": CPG + "pgbaseline-aurora-postgresql16-feedfacecafebeef"}),
        ("rds:ModifyDBClusterParameterGroup", _set("DBClusterParameterGroupName",
                                                   "pgbaseline-aurora-postgresql16-feedfacecafebeef",
                                                   "log_connections", "1")),
        ("rds:ModifyDBCluster", {"DBClusterIdentifier": "ledger-staging",
                                 "DBClusterParameterGroupName": "pgbaseline-aurora-postgresql16-feedfacecafebeef",
                                 "ApplyImmediately": "true"}),
        # A first-version per-database copy, tagged by that version, migrated away and collected.
        ("rds:ListTagsForResource", {"ResourceName": PG + "pgbaseline-legacy-prod-postgres16"}),
        ("rds:DeleteDBParameterGroup", {"DBParameterGroupName": "pgbaseline-legacy-prod-postgres16"}),
        # Garbage collection after the grace period: the tag proves ownership, then the delete.
        ("rds:ListTagsForResource", {"ResourceName": PG + "pgbaseline-unused-postgres16-0000000000000001"}),
        ("rds:DeleteDBParameterGroup", {"DBParameterGroupName": "pgbaseline-unused-postgres16-0000000000000001"}),
        ("rds:ListTagsForResource", {"ResourceName": CPG + "pgbaseline-aurora-postgresql16-0000000000000001"}),
        ("rds:DeleteDBClusterParameterGroup", {
            "DBClusterParameterGroupName": "pgbaseline-aurora-postgresql16-0000000000000001"}),
        # Attribute changes keep working on databases whatever their tags.
        ("rds:ModifyDBInstance", {"DBInstanceIdentifier": "legacy-prod", "DeletionProtection": "true",
                                  "ApplyImmediately": "true"}),
        ("rds:ModifyDBCluster", {"DBClusterIdentifier": "ledger-prod", "ManageMasterUserPassword": "true",
                                 "ApplyImmediately": "true"}),
    ]


def flow_requests(initial: dict) -> list[iamsim.AuthRequest]:
    state = iamsim.TagState(initial)
    return [r for action, params in managed_flow() for r in state.requests(action, params)]


def test_managed_group_flow_is_allowed():
    """(a) every request of the new flow, on groups carrying the managed tag, is allowed; and the
    flow really exercises each new action and the tag condition."""
    full = [policy("iam-policy.json")]
    requests = flow_requests(EXISTING)
    denied = [str(r) for r in requests if not iamsim.allowed(full, r)]
    assert not denied, "\n".join(denied)
    actions = {r.action for r in requests}
    assert {"rds:DescribeDBParameterGroups", "rds:DescribeDBClusterParameterGroups", "rds:ListTagsForResource",
            "rds:DescribeAccountAttributes", "rds:DeleteDBParameterGroup", "rds:DeleteDBClusterParameterGroup",
            "rds:CopyDBParameterGroup", "rds:CopyDBClusterParameterGroup", "rds:AddTagsToResource",
            "rds:ModifyDBParameterGroup", "rds:ModifyDBClusterParameterGroup", "rds:ModifyDBInstance",
            "rds:ModifyDBCluster", "rds:RebootDBInstance"} <= actions
    tagged = [r for r in requests if r.context.get("aws:ResourceTag/pgbaseline.io/managed") == "true"]
    assert {r.action for r in tagged} >= {"rds:ModifyDBParameterGroup", "rds:ModifyDBClusterParameterGroup",
                                          "rds:ModifyDBInstance", "rds:ModifyDBCluster",
                                          "rds:DeleteDBParameterGroup", "rds:DeleteDBClusterParameterGroup"}
    assert all(r.context.get("rds:pg-tag/pgbaseline.io/managed") == "true" for r in tagged if ":pg:" in r.resource)
    assert all(r.context.get("rds:cluster-pg-tag/pgbaseline.io/managed") == "true"
               for r in tagged if ":cluster-pg:" in r.resource)


def test_managed_group_flow_needs_the_tag():
    """The same flow from a state where the earlier groups lack the tag: exactly the requests on
    those groups are refused — the copies made in the flow carry their own tag."""
    full = [policy("iam-policy.json")]
    untagged = {arn: {k: v for k, v in tags.items() if k != "pgbaseline.io/managed"}
                for arn, tags in EXISTING.items()}
    denied = {(r.action, r.resource.rsplit(":", 1)[1]) for r in flow_requests(untagged)
              if not iamsim.allowed(full, r)}
    assert denied == {
        ("rds:ModifyDBParameterGroup", "pgbaseline-postgres16-feedfacecafebeef"),
        ("rds:ModifyDBInstance", "pgbaseline-postgres16-feedfacecafebeef"),
        ("rds:ModifyDBClusterParameterGroup", "pgbaseline-aurora-postgresql16-feedfacecafebeef"),
        ("rds:ModifyDBCluster", "pgbaseline-aurora-postgresql16-feedfacecafebeef"),
        ("rds:DeleteDBParameterGroup", "pgbaseline-legacy-prod-postgres16"),
        ("rds:DeleteDBParameterGroup", "pgbaseline-unused-postgres16-0000000000000001"),
        ("rds:DeleteDBClusterParameterGroup", "pgbaseline-aurora-postgresql16-0000000000000001"),
    }, denied


def squat_calls() -> list[tuple[str, str, dict]]:
    """(what, action, params) of every write that would touch the squatted group."""
    return [
        ("modify", "rds:ModifyDBParameterGroup", _set("DBParameterGroupName", SQUAT, "rds.force_ssl", "0")),
        ("modify", "rds:ModifyDBClusterParameterGroup", _set("DBClusterParameterGroupName", SQUAT_C,
                                                              "rds.force_ssl", "0")),
        ("reset", "rds:ResetDBParameterGroup", {"DBParameterGroupName": SQUAT, "ResetAllParameters": "true"}),
        ("attach", "rds:ModifyDBInstance", {"DBInstanceIdentifier": "legacy-prod", "DBParameterGroupName": SQUAT,
                                            "ApplyImmediately": "true"}),
        ("attach", "rds:ModifyDBCluster", {"DBClusterIdentifier": "ledger-prod",
                                           "DBClusterParameterGroupName": SQUAT_C, "ApplyImmediately": "true"}),
        ("attach as instance group", "rds:ModifyDBCluster", {
            "DBClusterIdentifier": "ledger-prod", "DBInstanceParameterGroupName": SQUAT,
            "AllowMajorVersionUpgrade": "true", "EngineVersion": "17.4"}),
        ("delete", "rds:DeleteDBParameterGroup", {"DBParameterGroupName": SQUAT}),
        ("delete", "rds:DeleteDBClusterParameterGroup", {"DBClusterParameterGroupName": SQUAT_C}),
        ("untag", "rds:RemoveTagsFromResource", {"ResourceName": PG + SQUAT,
                                                 "TagKeys.member.1": "pgbaseline.io/managed"}),
    ]


@pytest.mark.parametrize("why", list(SQUATTED))
@pytest.mark.parametrize("what, action, params", squat_calls(), ids=lambda x: x if isinstance(x, str) else "")
def test_squatted_group_is_refused(why, what, action, params):
    """(b) a group named like a managed one but not tagged pgbaseline.io/managed=true cannot be
    modified, attached or deleted, under the shipped policy, with the in-place add-on too (for
    everything but modifying in place, which is what that add-on is for)."""
    tags = {PG + SQUAT: SQUATTED[why], CPG + SQUAT_C: SQUATTED[why]}
    reqs = iamsim.auth_requests(action, params, tags)
    group_reqs = [r for r in reqs if ":pg:" in r.resource or ":cluster-pg:" in r.resource]
    assert group_reqs, reqs
    full = [policy("iam-policy.json")]
    assert not all(iamsim.allowed(full, r) for r in reqs), f"{what} of a group {why}"
    assert not any(iamsim.allowed(full, r) for r in group_reqs), f"{what} of a group {why}"
    if what != "modify":
        addon = full + [policy("iam-policy-inplace-groups.json")]
        assert not any(iamsim.allowed(addon, r) for r in group_reqs), f"{what} of a group {why} (add-on)"


@pytest.mark.parametrize("req, why", [
    (A("rds:ModifyDBParameterGroup", PG + "team-pg16", {"aws:ResourceTag/pgbaseline.io/managed": "true"}),
     "a tagged group not named like a managed one"),
    (A("rds:DeleteDBParameterGroup", PG + "team-pg16", {"aws:ResourceTag/pgbaseline.io/managed": "true"}),
     "deleting a tagged group not named like a managed one"),
    (A("rds:DeleteDBParameterGroup", PG + "default.postgres16"), "deleting a default group"),
    (A("rds:DeleteDBClusterParameterGroup", CPG + "team-aurora"), "deleting a user's cluster group"),
    (A("rds:ListTagsForResource", DB + "legacy-prod"), "reading a database's tags"),
    (A("rds:ListTagsForResource", PG + "team-pg16"), "reading a user's group's tags"),
    (A("rds:RemoveTagsFromResource", PG + "pgbaseline-postgres16-feedfacecafebeef",
       {"aws:ResourceTag/pgbaseline.io/managed": "true", "aws:TagKeys": ["pgbaseline.io/managed"]}),
     "removing the managed tag"),
    (A("rds:AddTagsToResource", PG + "team-pg16", TAG), "tagging a user's group as managed"),
    (A("rds:CreateDBParameterGroup", PG + "pgbaseline-x", TAG), "creating a group from nothing"),
])
def test_ownership_scoping_refuses(req, why):
    assert not iamsim.allowed([policy("iam-policy.json")], req), why


def test_parameter_group_writes_require_the_managed_tag():
    """Structure: every Allow that lets a Modify/Delete of a parameter group, or an attach, reach a
    pg/cluster-pg resource requires aws:ResourceTag/pgbaseline.io/managed = "true" (the copy is
    the one exception: its target does not exist yet, so it requires the tag in the request)."""
    gated = {"rds:ModifyDBParameterGroup", "rds:ModifyDBClusterParameterGroup", "rds:DeleteDBParameterGroup",
             "rds:DeleteDBClusterParameterGroup", "rds:ModifyDBInstance", "rds:ModifyDBCluster",
             "rds:ResetDBParameterGroup", "rds:ResetDBClusterParameterGroup"}
    for s in policy("iam-policy.json")["Statement"]:
        if s["Effect"] != "Allow" or not gated & set(iamsim._as_list(s["Action"])):
            continue
        group_resources = [r for r in iamsim._as_list(s["Resource"]) if ":pg:" in r or ":cluster-pg:" in r or r == "*"]
        if not group_resources:
            continue
        assert all(r.split(":")[-1].startswith("pgbaseline-") for r in group_resources), s["Sid"]
        assert s.get("Condition") == {"StringEquals": {"aws:ResourceTag/pgbaseline.io/managed": "true"}}, s["Sid"]
    allowed = {a for s in policy("iam-policy.json")["Statement"] if s["Effect"] == "Allow"
               for a in iamsim._as_list(s["Action"])}
    assert not allowed & {"rds:RemoveTagsFromResource", "rds:CreateDBParameterGroup",
                          "rds:CreateDBClusterParameterGroup", "rds:ResetDBParameterGroup",
                          "rds:ResetDBClusterParameterGroup"}


def test_readonly_policy_refuses_every_write_of_the_flow():
    """(c) the read-only policy allows the flow's reads and refuses every write, tagged or not."""
    readonly = [policy("iam-policy-readonly.json")]
    state = iamsim.TagState(EXISTING)
    calls = [(action, state.requests(action, params)) for action, params in managed_flow()]
    calls += [(action, iamsim.auth_requests(action, params, {PG + SQUAT: {"pgbaseline.io/managed": "true"},
                                                            CPG + SQUAT_C: {"pgbaseline.io/managed": "true"}}))
              for _, action, params in squat_calls()]
    for action, reqs in calls:
        if action.split(":")[1].startswith(("Describe", "List")):
            assert all(iamsim.allowed(readonly, r) for r in reqs), action
        else:  # the call's own authorization is refused (a dependent read such as kms:DescribeKey may pass)
            assert not iamsim.allowed(readonly, reqs[0]), action
            assert not [r for r in reqs if r.action == action and iamsim.allowed(readonly, r)], action
    assert all(re.match(r"\w+:(Describe|List)", a) for s in policy("iam-policy-readonly.json")["Statement"]
               for a in iamsim._as_list(s["Action"]))


def test_condition_semantics_of_the_simulator():
    """The evaluator's IAM semantics the tests above rely on: a missing key fails StringEquals
    and satisfies StringNotEquals; values are case-sensitive; Null tests presence."""
    stmt = lambda cond: {"Version": "2012-10-17", "Statement": [  # noqa: E731
        {"Effect": "Allow", "Action": "rds:ModifyDBParameterGroup", "Resource": "*", "Condition": cond}]}
    r = lambda ctx: A("rds:ModifyDBParameterGroup", PG + "x", ctx)  # noqa: E731
    eq = stmt({"StringEquals": {"aws:ResourceTag/k": "true"}})
    assert iamsim.allowed([eq], r({"aws:ResourceTag/k": "true"}))
    assert not iamsim.allowed([eq], r({}))
    assert not iamsim.allowed([eq], r({"aws:ResourceTag/k": "TRUE"}))
    ne = stmt({"StringNotEquals": {"aws:ResourceTag/k": "true"}})
    assert iamsim.allowed([ne], r({})) and not iamsim.allowed([ne], r({"aws:ResourceTag/k": "true"}))
    null = stmt({"Null": {"aws:ResourceTag/k": "true"}})
    assert iamsim.allowed([null], r({})) and not iamsim.allowed([null], r({"aws:ResourceTag/k": "x"}))


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
