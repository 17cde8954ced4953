"""Call log, fault injection, reset, and the inventory reads pgbaseline makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from conftest import PASSWORD, client, http, make_cluster, make_instance


def _calls(emu: str) -> list[dict[str, Any]]:
    status, body = http("GET", f"{emu}/_emulator/calls")
    assert status == 200
    return body["calls"]


def test_call_log_records_service_action_status(emu: str, rds: Any, kms: Any, ec2: Any) -> None:
    """Counting API calls (retries included) per service/action, as a benchmark does against
    AWS's per-account rate limits: query protocol actions from the form body, JSON protocol
    actions from X-Amz-Target. Control endpoints are not logged; bodies are never stored."""
    make_instance(rds, "db1")
    rds.describe_db_instances()
    kms.list_aliases()
    ec2.describe_security_groups()
    with pytest.raises(ClientError):
        rds.describe_db_instances(DBInstanceIdentifier="missing")
    calls = _calls(emu)
    assert calls == [
        {"service": "rds", "action": "CreateDBInstance", "status": 200, "throttled": False,
         "account": "123456789012", "session": "", "region": "us-east-1"},
        {"service": "rds", "action": "DescribeDBInstances", "status": 200, "throttled": False,
         "account": "123456789012", "session": "", "region": "us-east-1"},
        {"service": "kms", "action": "ListAliases", "status": 200, "throttled": False,
         "account": "123456789012", "session": "", "region": "us-east-1"},
        {"service": "ec2", "action": "DescribeSecurityGroups", "status": 200, "throttled": False,
         "account": "123456789012", "session": "", "region": "us-east-1"},
        {"service": "rds", "action": "DescribeDBInstances", "status": 404, "throttled": False,
         "account": "123456789012", "session": "", "region": "us-east-1"},
    ]
    assert PASSWORD not in json.dumps(calls)
    assert http("POST", f"{emu}/_emulator/calls/reset")[0] == 200
    assert _calls(emu) == []


def test_throttling_faults_per_service(emu: str) -> None:
    """AWS throttling errors as each service sends them: RDS HTTP 400 query-XML Throttling,
    EC2 HTTP 503 RequestLimitExceeded, KMS HTTP 400 JSON ThrottlingException; SDK retries show
    in the call log; fraction 0 disables."""
    status, cfg = http("POST", f"{emu}/_emulator/faults",
                       {"throttle_fraction": 1.0, "seed": 42, "services": ["rds", "ec2", "kms"]})
    assert status == 200 and cfg["throttle_fraction"] == 1.0
    rds, ec2, kms = client(emu, "rds"), client(emu, "ec2"), client(emu, "kms")
    for call, code, http_status in (
        (lambda: rds.describe_db_instances(), "Throttling", 400),
        (lambda: ec2.describe_subnets(), "RequestLimitExceeded", 503),
        (lambda: kms.list_keys(), "ThrottlingException", 400),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert exc.value.response["Error"]["Code"] == code
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == http_status
    calls = _calls(emu)
    assert [c["throttled"] for c in calls] == [True, True, True]
    assert [c["status"] for c in calls] == [400, 503, 400]

    # a retrying client rides through partial throttling; every attempt is logged
    http("POST", f"{emu}/_emulator/calls/reset")
    http("POST", f"{emu}/_emulator/faults", {"throttle_fraction": 0.5, "seed": 7,
                                            "services": ["rds"]})
    retrying = client(emu, "rds", retries=10)
    for _ in range(5):
        retrying.describe_db_instances()
    calls = _calls(emu)
    ok = [c for c in calls if not c["throttled"]]
    assert len(ok) == 5 and len(calls) > 5
    assert all(c["action"] == "DescribeDBInstances" for c in calls)

    # services not listed are untouched; fraction 0 disables
    client(emu, "ec2").describe_vpcs()
    http("POST", f"{emu}/_emulator/faults", {"throttle_fraction": 0})
    client(emu, "rds").describe_db_instances()
    assert _calls(emu)[-1]["throttled"] is False
    assert http("POST", f"{emu}/_emulator/faults", {"throttle_fraction": 2})[0] == 400


def test_a_latency_fault_holds_calls_and_says_how_many_are_held(emu: str) -> None:
    """The call log counts the requests a latency fault is holding: a test can wait for a call
    to be hanging instead of sleeping."""
    import threading
    import time

    assert http("GET", f"{emu}/_emulator/calls")[1]["delayed"] == 0
    http("POST", f"{emu}/_emulator/faults", {"latency_ms": 1500, "services": ["rds"]})
    started = time.monotonic()
    t = threading.Thread(target=lambda: client(emu, "rds").describe_db_instances())
    t.start()
    deadline = time.monotonic() + 5
    while http("GET", f"{emu}/_emulator/calls")[1]["delayed"] != 1:
        assert time.monotonic() < deadline, "the held call was never counted"
        time.sleep(0.05)
    t.join()
    assert time.monotonic() - started >= 1.5
    assert http("GET", f"{emu}/_emulator/calls")[1]["delayed"] == 0
    http("POST", f"{emu}/_emulator/faults", {"latency_ms": 0})


def test_moto_reset_clears_log_faults_and_recreates_defaults(emu: str, rds: Any) -> None:
    """POST /moto-api/reset wipes the fleet, the call log and the faults, and the default
    parameter groups exist again afterwards."""
    rds.create_db_parameter_group(DBParameterGroupName="x", DBParameterGroupFamily="postgres16",
                                  Description="x")
    http("POST", f"{emu}/_emulator/faults", {"throttle_fraction": 0.5, "services": ["ec2"]})
    assert http("POST", f"{emu}/moto-api/reset")[0] == 200
    assert _calls(emu) == []
    assert http("GET", f"{emu}/_emulator/faults")[1]["throttle_fraction"] == 0.0
    names = {g["DBParameterGroupName"]
             for g in rds.describe_db_parameter_groups()["DBParameterGroups"]}
    assert "x" not in names and "default.postgres16" in names


def test_describe_instances_and_clusters_paging_and_filters(rds: Any) -> None:
    """AWS: DescribeDBInstances / DescribeDBClusters page with MaxRecords/Marker and honour the
    db-instance-id / db-cluster-id filters."""
    for i in range(45):
        make_instance(rds, f"db-{i:02d}")
    seen, marker, pages = [], None, 0
    while True:
        kw = {"MaxRecords": 20}
        if marker:
            kw["Marker"] = marker
        r = rds.describe_db_instances(**kw)
        seen += [d["DBInstanceIdentifier"] for d in r["DBInstances"]]
        pages += 1
        marker = r.get("Marker")
        if not marker:
            break
    assert pages == 3 and len(seen) == 45 == len(set(seen))
    r = rds.describe_db_instances(Filters=[{"Name": "db-instance-id", "Values": ["db-03", "db-07"]}])
    assert sorted(d["DBInstanceIdentifier"] for d in r["DBInstances"]) == ["db-03", "db-07"]
    for i in range(25):
        rds.create_db_cluster(DBClusterIdentifier=f"c-{i:02d}", Engine="aurora-postgresql",
                              MasterUsername="u", MasterUserPassword="password123")
    first = rds.describe_db_clusters(MaxRecords=20)
    assert len(first["DBClusters"]) == 20 and first["Marker"]
    rest = rds.describe_db_clusters(MaxRecords=20, Marker=first["Marker"])
    assert len(rest["DBClusters"]) == 5
    r = rds.describe_db_clusters(Filters=[{"Name": "db-cluster-id", "Values": ["c-04"]}])
    assert [c["DBClusterIdentifier"] for c in r["DBClusters"]] == ["c-04"]


def test_network_and_kms_inventory_reads(rds: Any, ec2: Any, kms: Any) -> None:
    """The EC2/KMS reads pgbaseline makes work: DescribeSecurityGroups with a GroupIds batch,
    DescribeNetworkAcls filtered by association.subnet-id, DescribeSubnets, KMS ListAliases and
    DescribeKey by alias; instances in a DB subnet group report DBSubnetGroup.Subnets and
    VpcSecurityGroups."""
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    s1 = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    s2 = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.2.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
    sgs = [ec2.create_security_group(GroupName=f"g{i}", Description="d", VpcId=vpc)["GroupId"]
           for i in range(3)]
    ec2.authorize_security_group_ingress(GroupId=sgs[0], IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    got = ec2.describe_security_groups(GroupIds=sgs[:2])["SecurityGroups"]
    assert sorted(g["GroupId"] for g in got) == sorted(sgs[:2])
    acls = ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [s1]}])
    assert len(acls["NetworkAcls"]) == 1
    assert {s["SubnetId"] for s in ec2.describe_subnets(SubnetIds=[s1, s2])["Subnets"]} == {s1, s2}
    rds.create_db_subnet_group(DBSubnetGroupName="sn", DBSubnetGroupDescription="d",
                               SubnetIds=[s1, s2])
    db = make_instance(rds, "db", DBSubnetGroupName="sn", VpcSecurityGroupIds=[sgs[0]])
    db = rds.describe_db_instances(DBInstanceIdentifier="db")["DBInstances"][0]
    assert {s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]} == {s1, s2}
    assert db["DBSubnetGroup"]["VpcId"] == vpc
    assert db["VpcSecurityGroups"] == [{"VpcSecurityGroupId": sgs[0], "Status": "active"}]
    key = kms.create_key(Description="k")["KeyMetadata"]
    kms.create_alias(AliasName="alias/pgbaseline-demo", TargetKeyId=key["KeyId"])
    aliases = {a["AliasName"]: a.get("TargetKeyId") for a in kms.list_aliases()["Aliases"]}
    assert aliases["alias/pgbaseline-demo"] == key["KeyId"]
    assert kms.describe_key(KeyId="alias/pgbaseline-demo")["KeyMetadata"]["Arn"] == key["Arn"]
    # Aurora members report the cluster's subnet group
    make_cluster(rds, "apg", members=1, DBSubnetGroupName="sn", VpcSecurityGroupIds=[sgs[1]])
    m = rds.describe_db_instances(DBInstanceIdentifier="apg-1")["DBInstances"][0]
    assert m["DBSubnetGroup"]["DBSubnetGroupName"] == "sn"
    assert m["VpcSecurityGroups"][0]["VpcSecurityGroupId"] == sgs[1]


def test_seed_small_fleet(emu: str) -> None:
    """seed.py --fleet small builds the documented demo fleet against the emulator."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("seed.py")), "--endpoint", emu,
         "--fleet", "small"], capture_output=True, text=True, timeout=300, check=True)
    summary = json.loads(out.stdout)
    assert summary["counts"]["db_instances"] == 8
    assert PASSWORD not in out.stdout and "not-a-real-password" not in out.stdout
    rds = client(emu, "rds")
    dbs = {d["DBInstanceIdentifier"]: d for d in rds.describe_db_instances()["DBInstances"]}
    assert len(dbs) == 8
    assert dbs["orders-prod"]["DBParameterGroups"][0]["DBParameterGroupName"] == "pgb-shared-pg16"
    assert dbs["analytics-dev"]["DBParameterGroups"][0]["DBParameterGroupName"] == "pgb-shared-pg16"
    assert dbs["legacy-prod"]["PubliclyAccessible"] is True
    c = rds.describe_db_clusters()["DBClusters"]
    assert len(c) == 1 and len(c[0]["DBClusterMembers"]) == 2


@pytest.mark.skipif(not os.environ.get("PGBASELINE_EMULATOR_SLOW"),
                    reason="~30-60 s; set PGBASELINE_EMULATOR_SLOW=1 to run")
def test_seed_f1000_fleet(emu: str) -> None:
    """seed.py --fleet F1000: 1,000 standalone instances + 20 one-member Aurora clusters."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("seed.py")), "--endpoint", emu,
         "--fleet", "F1000"], capture_output=True, text=True, timeout=600, check=True)
    assert json.loads(out.stdout)["counts"]["db_instances"] == 1020
    rds = client(emu, "rds")
    n = sum(len(p["DBInstances"]) for p in rds.get_paginator("describe_db_instances").paginate())
    assert n == 1020
    # Its 30 shared custom groups fit AWS's default quota of 50 DB parameter groups.
    quotas = {q["AccountQuotaName"]: (q["Used"], q["Max"])
              for q in rds.describe_account_attributes()["AccountQuotas"]}
    assert quotas["DBParameterGroups"] == (30, 50)
    assert quotas["DBInstances"][0] == 1020 and quotas["DBClusters"][0] == 20


def test_fault_mode_rejects_the_parameter_name_filter_like_older_endpoints(emu: str, rds: Any) -> None:
    """Older RDS API models have no `parameter-name` filter and answer InvalidParameterValue;
    the fault mode reproduces that so clients can prove their fallback to full paging."""
    import botocore.exceptions

    status, _ = http("POST", f"{emu}/_emulator/faults", {"reject_parameter_filter": True})
    assert status == 200
    with pytest.raises(botocore.exceptions.ClientError) as err:
        rds.describe_db_parameters(DBParameterGroupName="default.postgres16",
                                   Filters=[{"Name": "parameter-name", "Values": ["rds.force_ssl"]}])
    assert err.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert "filter" in err.value.response["Error"]["Message"]
    # Unfiltered reads still work.
    assert rds.describe_db_parameters(DBParameterGroupName="default.postgres16")["Parameters"]
