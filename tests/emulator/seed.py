#!/usr/bin/env python3
"""Seed a fleet into a running emulator with boto3 and print a JSON summary.

    python tests/emulator/seed.py --endpoint http://127.0.0.1:PORT --fleet small|F1000 [--region us-east-1]

Run it with the emulator venv's python (tests/emulator/setup prints the venv path).

Fleet `small` (what each database is there to exercise):
  orders-prod      postgres 16, custom group pgb-shared-pg16 (log_statement=all), env=prod,
                   encrypted with alias/pgbaseline-demo, SG allowing 5432 from the app SG only
  analytics-dev    postgres 16, SAME custom group pgb-shared-pg16, env=dev (a policy selecting
                   env=prod must not modify the shared group in place)
  legacy-prod      postgres 14, default.postgres14 (rds.force_ssl=0 by default), publicly
                   accessible, not encrypted, env=prod
  billing-prod     postgres 15, default.postgres15, SG open to 0.0.0.0/0 on 5432, env=prod
  payments-prod    postgres 17, custom group pgb-compliant-pg17, compliant-ish: IAM auth, log
                   exports, deletion protection, 14-day backups, encrypted, env=prod
  sandbox-dev      postgres 16, default.postgres16, env=dev
  ledger-prod      Aurora PostgreSQL 16 cluster, default.aurora-postgresql16, members
                   ledger-prod-1 (writer) and ledger-prod-2, env=prod
Fleet `F1000`: 1,000 standalone RDS for PostgreSQL instances plus 20 Aurora clusters with one
member each (the 20 members are IN ADDITION to the 1,000: 1,020 DB instances in all), 30 custom
DB parameter groups shared among the standalone instances, 50 security groups, mixed
compliance; every resource tagged env=prod and team=<n>.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config

PASSWORD = "not-a-real-password-1"  # never printed


def _clients(endpoint: str, region: str) -> dict[str, Any]:
    host = urlparse(endpoint).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to seed a non-local endpoint: {endpoint}")
    cfg = Config(retries={"max_attempts": 10, "mode": "standard"})
    kw = dict(
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        config=cfg,
    )
    return {s: boto3.client(s, **kw) for s in ("rds", "ec2", "kms")}


def _tags(**kv: str) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in kv.items()]


def _network(ec2: Any, region: str, n_sgs: int) -> dict[str, Any]:
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = []
    for i, az in enumerate(("a", "b")):
        sn = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24",
                               AvailabilityZone=f"{region}{az}")["Subnet"]["SubnetId"]
        subnets.append(sn)
    app_sg = ec2.create_security_group(GroupName="pgb-app", Description="app tier",
                                       VpcId=vpc)["GroupId"]
    sgs = []
    for i in range(n_sgs):
        sg = ec2.create_security_group(GroupName=f"pgb-db-{i}", Description=f"db sg {i}",
                                       VpcId=vpc)["GroupId"]
        if i % 5 == 0:
            perm = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
        elif i % 5 == 1:
            perm = {"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}
        else:
            perm = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
                    "UserIdGroupPairs": [{"GroupId": app_sg}]}
        ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[perm])
        sgs.append(sg)
    return {"vpc": vpc, "subnets": subnets, "app_sg": app_sg, "sgs": sgs}


def _kms(kms: Any) -> str:
    key = kms.create_key(Description="pgbaseline demo key")["KeyMetadata"]
    kms.create_alias(AliasName="alias/pgbaseline-demo", TargetKeyId=key["KeyId"])
    return key["Arn"]


def _pg(rds: Any, name: str, family: str, params: dict[str, tuple[str, str]], **tags: str) -> str:
    rds.create_db_parameter_group(DBParameterGroupName=name, DBParameterGroupFamily=family,
                                  Description=f"pgbaseline seed {name}", Tags=_tags(**tags))
    if params:
        items = [{"ParameterName": k, "ParameterValue": v, "ApplyMethod": m}
                 for k, (v, m) in params.items()]
        for i in range(0, len(items), 20):
            rds.modify_db_parameter_group(DBParameterGroupName=name, Parameters=items[i:i + 20])
    return name


def _instance(rds: Any, ident: str, version: str, group: str | None, sgs: list[str],
              subnet_group: str, tags: dict[str, str], **extra: Any) -> None:
    kw: dict[str, Any] = dict(
        DBInstanceIdentifier=ident, Engine="postgres", EngineVersion=version,
        DBInstanceClass="db.t4g.medium", AllocatedStorage=20, MasterUsername="pgadmin",
        MasterUserPassword=PASSWORD, VpcSecurityGroupIds=sgs, DBSubnetGroupName=subnet_group,
        Tags=_tags(**tags),
    )
    if group:
        kw["DBParameterGroupName"] = group
    kw.update(extra)
    rds.create_db_instance(**kw)


COMPLIANT_PG = {
    "rds.force_ssl": ("1", "immediate"),
    "ssl_min_protocol_version": ("TLSv1.2", "immediate"),
    "rds.log_retention_period": ("10080", "immediate"),
    "log_connections": ("1", "immediate"),
    "log_disconnections": ("1", "immediate"),
    "log_statement": ("mod", "immediate"),
    "shared_preload_libraries": ("pg_stat_statements,pgaudit", "pending-reboot"),
    "pgaudit.log": ("ddl,role", "immediate"),
    "password_encryption": ("scram-sha-256", "immediate"),
}


def seed_small(c: dict[str, Any], region: str) -> dict[str, Any]:
    rds, ec2, kms = c["rds"], c["ec2"], c["kms"]
    net = _network(ec2, region, n_sgs=0)
    vpc = net["vpc"]
    restricted = ec2.create_security_group(GroupName="pgb-db-restricted",
                                           Description="5432 from app only",
                                           VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=restricted, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
        "UserIdGroupPairs": [{"GroupId": net["app_sg"]}]}])
    open_sg = ec2.create_security_group(GroupName="pgb-db-open", Description="5432 from anywhere",
                                        VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=open_sg, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    rds.create_db_subnet_group(DBSubnetGroupName="pgb-demo-subnets",
                               DBSubnetGroupDescription="pgbaseline demo",
                               SubnetIds=net["subnets"])
    key_arn = _kms(kms)

    _pg(rds, "pgb-shared-pg16", "postgres16", {"log_statement": ("all", "immediate")},
        team="data")
    _pg(rds, "pgb-compliant-pg17", "postgres17", COMPLIANT_PG, team="payments")

    sn = "pgb-demo-subnets"
    _instance(rds, "orders-prod", "16.3", "pgb-shared-pg16", [restricted], sn,
              {"env": "prod", "team": "orders"}, StorageEncrypted=True,
              KmsKeyId="alias/pgbaseline-demo")
    _instance(rds, "analytics-dev", "16.3", "pgb-shared-pg16", [restricted], sn,
              {"env": "dev", "team": "data"})
    _instance(rds, "legacy-prod", "14.10", None, [restricted], sn,
              {"env": "prod", "team": "legacy"}, PubliclyAccessible=True,
              CACertificateIdentifier="rds-ca-2019", AutoMinorVersionUpgrade=False)
    _instance(rds, "billing-prod", "15.5", None, [open_sg], sn,
              {"env": "prod", "team": "billing"}, StorageEncrypted=True)
    _instance(rds, "payments-prod", "17.4", "pgb-compliant-pg17", [restricted], sn,
              {"env": "prod", "team": "payments"}, StorageEncrypted=True, KmsKeyId=key_arn,
              EnableIAMDatabaseAuthentication=True, DeletionProtection=True,
              BackupRetentionPeriod=14, PubliclyAccessible=False,
              EnableCloudwatchLogsExports=["postgresql", "upgrade", "iam-db-auth-error"])
    _instance(rds, "sandbox-dev", "16.1", None, [restricted], sn, {"env": "dev"})

    rds.create_db_cluster(DBClusterIdentifier="ledger-prod", Engine="aurora-postgresql",
                          EngineVersion="16.4", MasterUsername="pgadmin",
                          MasterUserPassword=PASSWORD, DBSubnetGroupName=sn,
                          VpcSecurityGroupIds=[restricted], StorageEncrypted=True,
                          KmsKeyId=key_arn, Tags=_tags(env="prod", team="ledger"))
    for i in (1, 2):
        rds.create_db_instance(DBInstanceIdentifier=f"ledger-prod-{i}",
                               DBClusterIdentifier="ledger-prod", Engine="aurora-postgresql",
                               DBInstanceClass="db.r6g.large",
                               Tags=_tags(env="prod", team="ledger"))
    return {
        "vpc": vpc, "subnets": net["subnets"], "db_subnet_group": sn,
        "security_groups": {"app": net["app_sg"], "restricted": restricted, "open": open_sg},
        "kms_key_arn": key_arn, "kms_alias": "alias/pgbaseline-demo",
        "instances": ["orders-prod", "analytics-dev", "legacy-prod", "billing-prod",
                      "payments-prod", "sandbox-dev"],
        "clusters": {"ledger-prod": ["ledger-prod-1", "ledger-prod-2"]},
        "parameter_groups": ["pgb-shared-pg16", "pgb-compliant-pg17"],
        "counts": {"db_instances": 8, "standalone_instances": 6, "clusters": 1,
                   "custom_parameter_groups": 2, "security_groups": 3},
    }


F1000_PARAMETER_GROUPS = 30  # shared custom DB parameter groups; AWS's default quota is 50


def f1000_parameter_groups(rds: Any) -> list[tuple[str, int]]:
    """F1000's shared custom DB parameter groups, as (name, major version)."""
    groups: list[tuple[str, int]] = []
    for g in range(F1000_PARAMETER_GROUPS):
        major = 14 + g % 4
        params: dict[str, tuple[str, str]] = {}
        if g % 3 == 0:
            params = dict(COMPLIANT_PG)
        elif g % 3 == 1:
            params = {"log_statement": ("all", "immediate"), "rds.force_ssl": ("0", "immediate")}
        name = _pg(rds, f"pgb-fleet-pg{major}-{g:02d}", f"postgres{major}", params,
                   env="prod", team=str(g % 20))
        groups.append((name, major))
    return groups


def seed_f1000(c: dict[str, Any], region: str) -> dict[str, Any]:
    rds, ec2, kms = c["rds"], c["ec2"], c["kms"]
    net = _network(ec2, region, n_sgs=50)
    sn = "pgb-fleet-subnets"
    rds.create_db_subnet_group(DBSubnetGroupName=sn, DBSubnetGroupDescription="fleet",
                               SubnetIds=net["subnets"])
    key_arn = _kms(kms)
    majors = {14: "14.12", 15: "15.7", 16: "16.3", 17: "17.2"}
    groups = f1000_parameter_groups(rds)
    sgs = net["sgs"]
    for i in range(1000):
        extra: dict[str, Any] = {}
        if i % 4 == 0:
            group, major = groups[i % 30]
        else:
            major = 14 + i % 4
            group = None
        if i % 2 == 0:
            extra.update(StorageEncrypted=True, KmsKeyId=key_arn if i % 4 == 0 else None)
            if extra["KmsKeyId"] is None:
                del extra["KmsKeyId"]
        if i % 7 == 0:
            extra["PubliclyAccessible"] = True
        if i % 5 == 0:
            extra.update(EnableIAMDatabaseAuthentication=True, DeletionProtection=True,
                         BackupRetentionPeriod=7)
        _instance(rds, f"fleet-{i:04d}", majors[major], group, [sgs[i % 50]], sn,
                  {"env": "prod", "team": str(i % 20)}, **extra)
    for k in range(20):
        cid = f"fleet-aurora-{k:02d}"
        rds.create_db_cluster(DBClusterIdentifier=cid, Engine="aurora-postgresql",
                              EngineVersion="16.4" if k % 2 else "15.7",
                              MasterUsername="pgadmin", MasterUserPassword=PASSWORD,
                              DBSubnetGroupName=sn, VpcSecurityGroupIds=[sgs[k % 50]],
                              StorageEncrypted=k % 2 == 0, DeletionProtection=k % 3 == 0,
                              Tags=_tags(env="prod", team=str(k % 20)))
        rds.create_db_instance(DBInstanceIdentifier=f"{cid}-1", DBClusterIdentifier=cid,
                               Engine="aurora-postgresql", DBInstanceClass="db.r6g.large",
                               Tags=_tags(env="prod", team=str(k % 20)))
    return {
        "vpc": net["vpc"], "subnets": net["subnets"], "db_subnet_group": sn,
        "kms_key_arn": key_arn, "kms_alias": "alias/pgbaseline-demo",
        "counts": {"db_instances": 1020, "standalone_instances": 1000, "clusters": 20,
                   "cluster_member_instances": 20,
                   "custom_parameter_groups": F1000_PARAMETER_GROUPS,
                   "security_groups": 50},
    }


def seed(endpoint: str, fleet: str, region: str = "us-east-1") -> dict[str, Any]:
    c = _clients(endpoint, region)
    t0 = time.monotonic()
    if fleet == "small":
        summary = seed_small(c, region)
    elif fleet == "F1000":
        summary = seed_f1000(c, region)
    else:
        raise SystemExit(f"unknown fleet {fleet}")
    summary["fleet"] = fleet
    summary["region"] = region
    summary["seconds"] = round(time.monotonic() - t0, 1)
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--fleet", required=True, choices=["small", "F1000"])
    ap.add_argument("--region", default="us-east-1")
    args = ap.parse_args()
    print(json.dumps(seed(args.endpoint, args.fleet, args.region), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
