"""RDS account quotas on parameter groups, DescribeAccountAttributes and /_emulator/quotas."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from botocore.exceptions import ClientError

import seed as seed_mod
from conftest import REGION, client, http, make_cluster, make_instance

AWS_DEFAULTS = {"DBInstances": 40, "DBParameterGroups": 50, "DBClusters": 40,
                "DBClusterParameterGroups": 50}
QUOTA_EXCEEDED = "DBParameterGroupQuotaExceeded"


def _quotas(rds: Any) -> dict[str, tuple[int, int]]:
    """{name: (Used, Max)} from DescribeAccountAttributes."""
    return {q["AccountQuotaName"]: (q["Used"], q["Max"])
            for q in rds.describe_account_attributes()["AccountQuotas"]}


def _refused(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(ClientError) as exc:
        call()
    return exc.value.response


def _pg_names(rds: Any) -> set[str]:
    pages = rds.get_paginator("describe_db_parameter_groups").paginate()
    return {g["DBParameterGroupName"] for p in pages for g in p["DBParameterGroups"]}


def _cpg_names(rds: Any) -> set[str]:
    out: set[str] = set()
    marker = None
    while True:
        kw = {"Marker": marker} if marker else {}
        r = rds.describe_db_cluster_parameter_groups(**kw)
        out |= {g["DBClusterParameterGroupName"] for g in r["DBClusterParameterGroups"]}
        marker = r.get("Marker")
        if not marker:
            return out


def _create_pg(rds: Any, name: str) -> Any:
    return rds.create_db_parameter_group(DBParameterGroupName=name,
                                         DBParameterGroupFamily="postgres16", Description=name)


def _create_cpg(rds: Any, name: str) -> Any:
    return rds.create_db_cluster_parameter_group(DBClusterParameterGroupName=name,
                                                 DBParameterGroupFamily="aurora-postgresql16",
                                                 Description=name)


def test_db_parameter_group_quota_refuses_the_51st_via_create_and_copy(rds: Any) -> None:
    """AWS: 50 DB parameter groups per account and region by default, the default.* groups not
    counted. Past it CreateDBParameterGroup and CopyDBParameterGroup fail with HTTP 400
    DBParameterGroupQuotaExceeded and create nothing; deleting a group frees a slot (moto: no
    limit)."""
    assert _quotas(rds)["DBParameterGroups"] == (0, 50)  # default groups exist, count 0
    for i in range(50):
        _create_pg(rds, f"pg-{i:02d}")
    assert _quotas(rds)["DBParameterGroups"] == (50, 50)
    before = _pg_names(rds)

    for call in (lambda: _create_pg(rds, "pg-51"),
                 lambda: rds.copy_db_parameter_group(
                     SourceDBParameterGroupIdentifier="pg-00",
                     TargetDBParameterGroupIdentifier="pg-51",
                     TargetDBParameterGroupDescription="copy"),
                 lambda: rds.copy_db_parameter_group(  # copying a default group: same quota
                     SourceDBParameterGroupIdentifier="default.postgres16",
                     TargetDBParameterGroupIdentifier="pg-51",
                     TargetDBParameterGroupDescription="copy")):
        resp = _refused(call)
        assert resp["Error"]["Code"] == QUOTA_EXCEEDED
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert _pg_names(rds) == before
    assert _quotas(rds)["DBParameterGroups"] == (50, 50)

    # A name that exists is still AlreadyExists at the quota (what a retried create relies on).
    assert _refused(lambda: _create_pg(rds, "pg-07"))["Error"]["Code"] == (
        "DBParameterGroupAlreadyExists")

    rds.delete_db_parameter_group(DBParameterGroupName="pg-07")
    assert _quotas(rds)["DBParameterGroups"] == (49, 50)
    rds.copy_db_parameter_group(SourceDBParameterGroupIdentifier="pg-00",
                                TargetDBParameterGroupIdentifier="pg-copy",
                                TargetDBParameterGroupDescription="copy")
    assert _quotas(rds)["DBParameterGroups"] == (50, 50)
    assert _refused(lambda: _create_pg(rds, "pg-07"))["Error"]["Code"] == QUOTA_EXCEEDED


def test_cluster_parameter_group_quota_refuses_the_51st_via_create_and_copy(rds: Any) -> None:
    """AWS: 50 DB cluster parameter groups per account and region (not adjustable), defaults
    not counted; the 51st via CreateDBClusterParameterGroup or CopyDBClusterParameterGroup
    fails with HTTP 400 DBParameterGroupQuotaExceeded and creates nothing. The two quotas are
    separate: a full cluster quota doesn't stop DB parameter groups (moto: no limit)."""
    assert _quotas(rds)["DBClusterParameterGroups"] == (0, 50)
    for i in range(50):
        _create_cpg(rds, f"cpg-{i:02d}")
    assert _quotas(rds)["DBClusterParameterGroups"] == (50, 50)
    before = _cpg_names(rds)

    for call in (lambda: _create_cpg(rds, "cpg-51"),
                 lambda: rds.copy_db_cluster_parameter_group(
                     SourceDBClusterParameterGroupIdentifier="cpg-00",
                     TargetDBClusterParameterGroupIdentifier="cpg-51",
                     TargetDBClusterParameterGroupDescription="copy"),
                 lambda: rds.copy_db_cluster_parameter_group(
                     SourceDBClusterParameterGroupIdentifier="default.aurora-postgresql16",
                     TargetDBClusterParameterGroupIdentifier="cpg-51",
                     TargetDBClusterParameterGroupDescription="copy")):
        resp = _refused(call)
        assert resp["Error"]["Code"] == QUOTA_EXCEEDED
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert _cpg_names(rds) == before
    assert _refused(lambda: _create_cpg(rds, "cpg-03"))["Error"]["Code"] == (
        "DBParameterGroupAlreadyExists")

    _create_pg(rds, "still-fine")  # the DB parameter group quota is its own
    assert _quotas(rds)["DBParameterGroups"] == (1, 50)

    rds.delete_db_cluster_parameter_group(DBClusterParameterGroupName="cpg-03")
    assert _quotas(rds)["DBClusterParameterGroups"] == (49, 50)
    rds.copy_db_cluster_parameter_group(SourceDBClusterParameterGroupIdentifier="cpg-00",
                                        TargetDBClusterParameterGroupIdentifier="cpg-copy",
                                        TargetDBClusterParameterGroupDescription="copy")
    assert "cpg-copy" in _cpg_names(rds)
    assert _quotas(rds)["DBClusterParameterGroups"] == (50, 50)


def _signed_query(endpoint: str, body: str) -> tuple[int, bytes]:
    req = botocore.awsrequest.AWSRequest(
        method="POST", url=f"{endpoint}/", data=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    creds = botocore.credentials.Credentials("testing", "testing")
    botocore.auth.SigV4Auth(creds, "rds", REGION).add_auth(req)
    prepared = req.prepare()
    r = urllib.request.Request(prepared.url, data=prepared.body, method="POST",
                               headers=dict(prepared.headers))
    with urllib.request.urlopen(r, timeout=30) as resp:
        return resp.status, resp.read()


def test_describe_account_attributes_reports_live_usage_and_maxima(emu: str, rds: Any) -> None:
    """AWS: DescribeAccountAttributes returns AccountQuotas with AccountQuotaName, Used and Max
    per quota, in DescribeAccountAttributesResult/AccountQuotas/AccountQuota; Used is the live
    count in this account and region (DBInstances counts Aurora members too), the default
    parameter groups excluded (moto: HTTP 500, not implemented)."""
    q = _quotas(rds)
    assert {n: m for n, (_, m) in q.items() if n in AWS_DEFAULTS} == AWS_DEFAULTS
    assert all(used == 0 for used, _ in q.values())

    make_instance(rds, "db1")
    make_cluster(rds, "apg", members=2)
    _create_pg(rds, "pg-a")
    _create_pg(rds, "pg-b")
    _create_cpg(rds, "cpg-a")
    q = _quotas(rds)
    assert q["DBInstances"] == (3, 40)
    assert q["DBClusters"] == (1, 40)
    assert q["DBParameterGroups"] == (2, 50)
    assert q["DBClusterParameterGroups"] == (1, 50)

    rds.delete_db_instance(DBInstanceIdentifier="db1", SkipFinalSnapshot=True)
    rds.delete_db_parameter_group(DBParameterGroupName="pg-a")
    rds.delete_db_cluster_parameter_group(DBClusterParameterGroupName="cpg-a")
    q = _quotas(rds)
    assert q["DBInstances"] == (2, 40)
    assert q["DBParameterGroups"] == (1, 50)
    assert q["DBClusterParameterGroups"] == (0, 50)

    # The wire shape aws-sdk-rust parses, straight off the query protocol.
    status, raw = _signed_query(emu, "Action=DescribeAccountAttributes&Version=2014-10-31")
    assert status == 200
    ns = {"r": "http://rds.amazonaws.com/doc/2014-10-31/"}
    root = ET.fromstring(raw)
    assert root.tag == "{http://rds.amazonaws.com/doc/2014-10-31/}DescribeAccountAttributesResponse"
    quotas = root.findall("r:DescribeAccountAttributesResult/r:AccountQuotas/r:AccountQuota", ns)
    wire = {e.findtext("r:AccountQuotaName", namespaces=ns):
            (int(e.findtext("r:Used", namespaces=ns)), int(e.findtext("r:Max", namespaces=ns)))
            for e in quotas}
    assert wire["DBParameterGroups"] == (1, 50)
    assert wire["DBInstances"] == (2, 40)


def test_quotas_are_per_account_and_region(emu: str, rds: Any) -> None:
    """AWS: each account has its own quotas in each region. Filling the DB parameter group
    quota in us-east-1 leaves us-west-2 and another account (via STS AssumeRole) free."""
    http("POST", f"{emu}/_emulator/quotas", {"DBParameterGroups": 2})
    _create_pg(rds, "a")
    _create_pg(rds, "b")
    assert _refused(lambda: _create_pg(rds, "c"))["Error"]["Code"] == QUOTA_EXCEEDED

    west = boto3.client("rds", endpoint_url=emu, region_name="us-west-2")
    assert _quotas(west)["DBParameterGroups"] == (0, 2)
    _create_pg(west, "a")
    _create_pg(west, "b")

    creds = client(emu, "sts").assume_role(RoleArn="arn:aws:iam::111111111111:role/other",
                                           RoleSessionName="quota-test")["Credentials"]
    other = boto3.client("rds", endpoint_url=emu, region_name=REGION,
                         aws_access_key_id=creds["AccessKeyId"],
                         aws_secret_access_key=creds["SecretAccessKey"],
                         aws_session_token=creds["SessionToken"])
    assert _quotas(other)["DBParameterGroups"] == (0, 2)
    _create_pg(other, "a")
    assert _quotas(other)["DBParameterGroups"] == (1, 2)
    assert _quotas(rds)["DBParameterGroups"] == (2, 2)


def test_concurrent_creates_never_exceed_the_quota(emu: str, rds: Any) -> None:
    """Parallel creates racing for the last slots: exactly the quota's worth succeed, the rest
    get DBParameterGroupQuotaExceeded (the emulator serves requests on parallel threads)."""
    http("POST", f"{emu}/_emulator/quotas", {"DBParameterGroups": 5})
    results: list[str] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        c = client(emu, "rds")
        try:
            _create_pg(c, f"race-{i:02d}")
            outcome = "ok"
        except ClientError as e:
            outcome = e.response["Error"]["Code"]
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 5
    assert results.count(QUOTA_EXCEEDED) == 11
    assert _quotas(rds)["DBParameterGroups"] == (5, 5)


def test_quota_endpoint_sets_maxima_and_resets_restore_aws_defaults(emu: str, rds: Any) -> None:
    """POST /_emulator/quotas changes the maxima (the keys given; GET reads them), creation
    then stops at the new maximum, and both POST /_emulator/quotas/reset and POST
    /moto-api/reset restore AWS's defaults of 50 / 50."""
    assert http("GET", f"{emu}/_emulator/quotas") == (200, AWS_DEFAULTS)
    status, body = http("POST", f"{emu}/_emulator/quotas",
                        {"DBParameterGroups": 2, "DBClusterParameterGroups": 1})
    assert status == 200
    assert body == dict(AWS_DEFAULTS, DBParameterGroups=2, DBClusterParameterGroups=1)
    assert http("GET", f"{emu}/_emulator/quotas")[1] == body
    _create_pg(rds, "one")
    _create_pg(rds, "two")
    assert _refused(lambda: _create_pg(rds, "three"))["Error"]["Code"] == QUOTA_EXCEEDED
    _create_cpg(rds, "c-one")
    assert _refused(lambda: _create_cpg(rds, "c-two"))["Error"]["Code"] == QUOTA_EXCEEDED
    q = _quotas(rds)
    assert q["DBParameterGroups"] == (2, 2) and q["DBClusterParameterGroups"] == (1, 1)

    # A partial update keeps the other values; bad input is refused and changes nothing.
    assert http("POST", f"{emu}/_emulator/quotas", {"DBInstances": 2000})[1]["DBParameterGroups"] == 2
    for bad in ({"DBSubnetGroups": 5}, {"DBParameterGroups": -1},
                {"DBParameterGroups": "10"}, {"DBParameterGroups": True}, [1]):
        assert http("POST", f"{emu}/_emulator/quotas", bad)[0] == 400, bad
    assert http("GET", f"{emu}/_emulator/quotas")[1]["DBParameterGroups"] == 2

    # Raising the maximum frees slots at once; lowering it below usage only blocks creation.
    http("POST", f"{emu}/_emulator/quotas", {"DBParameterGroups": 3})
    _create_pg(rds, "three")
    http("POST", f"{emu}/_emulator/quotas", {"DBParameterGroups": 1})
    assert _quotas(rds)["DBParameterGroups"] == (3, 1)
    assert _refused(lambda: _create_pg(rds, "four"))["Error"]["Code"] == QUOTA_EXCEEDED

    assert http("POST", f"{emu}/_emulator/quotas/reset") == (200, AWS_DEFAULTS)
    _create_pg(rds, "four")
    assert _quotas(rds)["DBParameterGroups"] == (4, 50)

    http("POST", f"{emu}/_emulator/quotas", {"DBParameterGroups": 7})
    assert http("POST", f"{emu}/moto-api/reset")[0] == 200
    assert http("GET", f"{emu}/_emulator/quotas") == (200, AWS_DEFAULTS)
    assert _quotas(rds)["DBParameterGroups"] == (0, 50)


def test_serve_quota_option_sets_what_reset_restores() -> None:
    """`serve --quota NAME=N` starts with that maximum, and a reset returns to it rather than
    to AWS's default; a malformed option is a usage error."""
    from pgbaseline_emulator import quotas

    table = quotas.Quotas()
    table.set_baseline(dict([quotas.parse_assignment("DBParameterGroups=75")]))
    assert table.as_dict()["DBParameterGroups"] == 75
    table.configure({"DBParameterGroups": 3})
    table.reset()
    assert table.as_dict() == dict(AWS_DEFAULTS, DBParameterGroups=75)
    for bad in ("DBParameterGroups", "DBParameterGroups=x", "DBParameterGroups=-1", "Nope=3"):
        with pytest.raises(ValueError):
            quotas.parse_assignment(bad)
    serve = Path(__file__).with_name("serve")
    out = subprocess.run([str(serve), "--port", "1", "--quota", "Nope=3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "unknown quota" in out.stderr


def test_small_seed_fits_the_default_quotas(emu: str) -> None:
    """seed.py --fleet small stays inside AWS's default quotas (2 custom DB parameter groups,
    8 instances, 1 cluster), so it would seed a fresh AWS account too."""
    subprocess.run([sys.executable, str(Path(__file__).with_name("seed.py")), "--endpoint", emu,
                    "--fleet", "small"], capture_output=True, text=True, timeout=300, check=True)
    q = _quotas(client(emu, "rds"))
    assert q["DBParameterGroups"] == (2, 50)
    assert q["DBClusterParameterGroups"] == (0, 50)
    assert q["DBInstances"] == (8, 40) and q["DBClusters"] == (1, 40)


def test_f1000_parameter_groups_fit_the_default_quota(rds: Any) -> None:
    """F1000's 30 shared custom DB parameter groups (seed.f1000_parameter_groups, what
    seed_f1000 creates) fit AWS's default quota of 50 with 20 to spare for the operator's
    copies. The full F1000 seed is PGBASELINE_EMULATOR_SLOW's test_seed_f1000_fleet."""
    groups = seed_mod.f1000_parameter_groups(rds)
    assert len(groups) == seed_mod.F1000_PARAMETER_GROUPS == 30
    assert _quotas(rds)["DBParameterGroups"] == (30, 50)
    for i in range(20):
        rds.copy_db_parameter_group(SourceDBParameterGroupIdentifier=groups[i][0],
                                    TargetDBParameterGroupIdentifier=f"pgb-copy-{i:02d}",
                                    TargetDBParameterGroupDescription="copy")
    assert _refused(lambda: _create_pg(rds, "one-too-many"))["Error"]["Code"] == QUOTA_EXCEEDED
    assert _quotas(rds)["DBParameterGroups"] == (50, 50)
