"""Several accounts: AssumeRole checks the external id a role requires, a session policy limits
the session, revocation and expiry refuse existing sessions, and each call is logged with the
account it acted in and the caller's session."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import REGION, http, make_instance

AUDIT = "arn:aws:iam::222222222222:role/pgbaseline-audit"
OTHER = "arn:aws:iam::333333333333:role/pgbaseline-audit"
READ_ONLY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["rds:Describe*", "ec2:Describe*", "sts:GetCallerIdentity"],
     "Resource": "*"}]})


def assume(emu: str, role: str, **kw: Any) -> dict[str, Any]:
    sts = boto3.client("sts", endpoint_url=emu, region_name=REGION)
    return sts.assume_role(RoleArn=role, RoleSessionName=kw.pop("name", "pgbaseline-test"), **kw)


def as_session(emu: str, assumed: dict[str, Any], service: str, region: str = REGION) -> Any:
    c = assumed["Credentials"]
    return boto3.client(service, endpoint_url=emu, region_name=region,
                        aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"],
                        aws_session_token=c["SessionToken"],
                        config=Config(retries={"total_max_attempts": 1}))


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def test_an_external_id_the_role_requires_is_checked(emu: str) -> None:
    assert http("POST", f"{emu}/_emulator/roles", {AUDIT: {"external_id": "s3cret"}})[0] == 200
    for wrong in ({}, {"ExternalId": "guess"}):
        with pytest.raises(ClientError) as exc:
            assume(emu, AUDIT, **wrong)
        assert code(exc) == "AccessDenied"
        assert "sts:AssumeRole" in exc.value.response["Error"]["Message"]
    ok = assume(emu, AUDIT, ExternalId="s3cret")
    assert ok["AssumedRoleUser"]["Arn"].startswith("arn:aws:sts::222222222222:assumed-role/")
    # A role nobody registered behaves as moto's: assumable by anyone.
    assume(emu, OTHER)


def test_accounts_are_isolated_and_every_call_names_its_account_and_session(emu: str) -> None:
    a = assume(emu, AUDIT, name="replica-0-payments")
    b = assume(emu, OTHER, name="replica-1-web")
    make_instance(as_session(emu, a, "rds"), "pay-1")
    make_instance(as_session(emu, b, "rds"), "web-1")
    ids = lambda s: [d["DBInstanceIdentifier"] for d in as_session(emu, s, "rds").describe_db_instances()["DBInstances"]]  # noqa: E731
    assert ids(a) == ["pay-1"] and ids(b) == ["web-1"]
    identity = as_session(emu, b, "sts").get_caller_identity()
    assert identity["Account"] == "333333333333"
    assert as_session(emu, b, "rds", region="eu-west-1").describe_db_instances()["DBInstances"] == []
    status, body = http("GET", f"{emu}/_emulator/calls")
    by = {(c["account"], c["session"], c["action"], c["region"]) for c in body["calls"]}
    assert ("222222222222", "replica-0-payments", "CreateDBInstance", REGION) in by
    assert ("333333333333", "replica-1-web", "DescribeDBInstances", REGION) in by
    assert ("333333333333", "replica-1-web", "DescribeDBInstances", "eu-west-1") in by
    assert ("123456789012", "", "AssumeRole", REGION) in by


def test_a_read_only_session_policy_refuses_writes_even_when_the_role_could(emu: str) -> None:
    broad = assume(emu, AUDIT, name="broad")
    make_instance(as_session(emu, broad, "rds"), "db1")
    ro = assume(emu, AUDIT, name="audit", Policy=READ_ONLY)
    rds, ec2 = as_session(emu, ro, "rds"), as_session(emu, ro, "ec2")
    assert rds.describe_db_instances()["DBInstances"]
    ec2.describe_security_groups()
    with pytest.raises(ClientError) as exc:
        rds.modify_db_instance(DBInstanceIdentifier="db1", DeletionProtection=True, ApplyImmediately=True)
    assert code(exc) == "AccessDenied"
    assert "no session policy allows the rds:ModifyDBInstance action" in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        ec2.revoke_security_group_ingress(GroupId="sg-1", IpPermissions=[])
    assert code(exc) == "UnauthorizedOperation"
    db = as_session(emu, broad, "rds").describe_db_instances()["DBInstances"][0]
    assert db["DeletionProtection"] is False
    with pytest.raises(ClientError) as exc:
        assume(emu, AUDIT, Policy="{not json")
    assert code(exc) == "MalformedPolicyDocument"


def test_revoked_sessions_are_refused_until_the_role_is_assumed_again(emu: str) -> None:
    old = assume(emu, AUDIT)
    rds = as_session(emu, old, "rds")
    rds.describe_db_instances()
    http("POST", f"{emu}/_emulator/roles", {AUDIT: {"revoked": True}})
    with pytest.raises(ClientError) as exc:
        rds.describe_db_instances()
    assert code(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        assume(emu, AUDIT)
    assert code(exc) == "AccessDenied"
    http("POST", f"{emu}/_emulator/roles", {AUDIT: {"revoked": False}})
    with pytest.raises(ClientError):
        rds.describe_db_instances()  # a revoked session stays revoked
    as_session(emu, assume(emu, AUDIT), "rds").describe_db_instances()

    current = as_session(emu, assume(emu, AUDIT), "rds")
    http("POST", f"{emu}/_emulator/roles", {AUDIT: {"expired": True}})
    with pytest.raises(ClientError) as exc:
        current.describe_db_instances()
    assert code(exc) == "ExpiredToken"
    as_session(emu, assume(emu, AUDIT), "rds").describe_db_instances()
    assert http("POST", f"{emu}/_emulator/roles", {"not-an-arn": {}})[0] == 400
    assert http("POST", f"{emu}/_emulator/roles/reset")[0] == 200
