"""Apply lifecycle (pending-reboot), Aurora cluster attributes, identity fields, versions, CAs."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from botocore.exceptions import ClientError

from conftest import make_cluster, make_instance


def _status(rds: Any, ident: str) -> str:
    db = rds.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"][0]
    return db["DBParameterGroups"][0]["ParameterApplyStatus"]


def _member_status(rds: Any, cluster: str) -> dict[str, str]:
    c = rds.describe_db_clusters(DBClusterIdentifier=cluster)["DBClusters"][0]
    return {m["DBInstanceIdentifier"]: m["DBClusterParameterGroupStatus"]
            for m in c["DBClusterMembers"]}


def test_static_change_leaves_instances_pending_reboot_until_reboot(rds: Any) -> None:
    """AWS: a static parameter change (ApplyMethod=pending-reboot) leaves every attached instance
    with DBParameterGroups[].ParameterApplyStatus=pending-reboot until RebootDBInstance; dynamic
    immediate changes stay in-sync (moto: always in-sync, reboot does nothing)."""
    rds.create_db_parameter_group(DBParameterGroupName="shared", DBParameterGroupFamily="postgres16",
                                  Description="x")
    make_instance(rds, "a", EngineVersion="16.3", DBParameterGroupName="shared")
    make_instance(rds, "b", EngineVersion="16.3", DBParameterGroupName="shared")
    make_instance(rds, "other", EngineVersion="16.3")
    rds.modify_db_parameter_group(DBParameterGroupName="shared", Parameters=[
        {"ParameterName": "log_connections", "ParameterValue": "1", "ApplyMethod": "immediate"}])
    assert _status(rds, "a") == _status(rds, "b") == "in-sync"
    rds.modify_db_parameter_group(DBParameterGroupName="shared", Parameters=[
        {"ParameterName": "shared_preload_libraries", "ParameterValue": "pg_stat_statements,pgaudit",
         "ApplyMethod": "pending-reboot"}])
    assert _status(rds, "a") == _status(rds, "b") == "pending-reboot"
    assert _status(rds, "other") == "in-sync"
    rebooted = rds.reboot_db_instance(DBInstanceIdentifier="a")["DBInstance"]
    assert rebooted["DBParameterGroups"][0]["ParameterApplyStatus"] == "in-sync"
    assert _status(rds, "a") == "in-sync" and _status(rds, "b") == "pending-reboot"


def test_attaching_new_parameter_group_needs_reboot(rds: Any) -> None:
    """AWS: ModifyDBInstance DBParameterGroupName attaches the group but it takes effect only after
    a reboot: ParameterApplyStatus=pending-reboot until RebootDBInstance."""
    make_instance(rds, "db", EngineVersion="16.3")
    assert rds.describe_db_instances()["DBInstances"][0]["DBParameterGroups"][0][
        "DBParameterGroupName"] == "default.postgres16"
    rds.copy_db_parameter_group(SourceDBParameterGroupIdentifier="default.postgres16",
                                TargetDBParameterGroupIdentifier="pgb-db",
                                TargetDBParameterGroupDescription="managed")
    out = rds.modify_db_instance(DBInstanceIdentifier="db", DBParameterGroupName="pgb-db",
                                 ApplyImmediately=True)["DBInstance"]
    assert out["DBParameterGroups"] == [{"DBParameterGroupName": "pgb-db",
                                         "ParameterApplyStatus": "pending-reboot"}]
    rds.reboot_db_instance(DBInstanceIdentifier="db")
    assert _status(rds, "db") == "in-sync"


def test_cluster_parameter_group_change_pending_reboot_and_reboot_db_cluster(rds: Any) -> None:
    """AWS: a static cluster-parameter change, or attaching another cluster parameter group, sets
    DBClusterMembers[].DBClusterParameterGroupStatus=pending-reboot; RebootDBCluster brings every
    member in-sync (moto: RebootDBCluster not implemented, status always in-sync)."""
    make_cluster(rds, "apg", members=2, EngineVersion="16.4")
    assert set(_member_status(rds, "apg").values()) == {"in-sync"}
    rds.copy_db_cluster_parameter_group(
        SourceDBClusterParameterGroupIdentifier="default.aurora-postgresql16",
        TargetDBClusterParameterGroupIdentifier="pgb-apg",
        TargetDBClusterParameterGroupDescription="managed")
    rds.modify_db_cluster(DBClusterIdentifier="apg", DBClusterParameterGroupName="pgb-apg",
                          ApplyImmediately=True)
    c = rds.describe_db_clusters(DBClusterIdentifier="apg")["DBClusters"][0]
    assert c["DBClusterParameterGroup"] == "pgb-apg"
    assert set(_member_status(rds, "apg").values()) == {"pending-reboot"}
    rds.reboot_db_cluster(DBClusterIdentifier="apg")
    assert set(_member_status(rds, "apg").values()) == {"in-sync"}
    # dynamic change: stays in sync; static change: pending again
    rds.modify_db_cluster_parameter_group(DBClusterParameterGroupName="pgb-apg", Parameters=[
        {"ParameterName": "rds.force_ssl", "ParameterValue": "1", "ApplyMethod": "immediate"}])
    assert set(_member_status(rds, "apg").values()) == {"in-sync"}
    rds.modify_db_cluster_parameter_group(DBClusterParameterGroupName="pgb-apg", Parameters=[
        {"ParameterName": "shared_preload_libraries", "ParameterValue": "pgaudit",
         "ApplyMethod": "pending-reboot"}])
    assert set(_member_status(rds, "apg").values()) == {"pending-reboot"}
    rds.reboot_db_instance(DBInstanceIdentifier="apg-1")
    assert _member_status(rds, "apg") == {"apg-1": "in-sync", "apg-2": "pending-reboot"}


def test_modify_db_cluster_honours_security_attributes_and_members_inherit(rds: Any) -> None:
    """AWS: ModifyDBCluster applies EnableIAMDatabaseAuthentication, CloudwatchLogsExportConfiguration,
    DeletionProtection and BackupRetentionPeriod, and member instances report the cluster's IAM
    auth and log exports (moto ignores the first two and members don't inherit)."""
    make_cluster(rds, "apg", members=2)
    c = rds.modify_db_cluster(
        DBClusterIdentifier="apg", EnableIAMDatabaseAuthentication=True,
        CloudwatchLogsExportConfiguration={"EnableLogTypes": ["postgresql", "iam-db-auth-error"]},
        DeletionProtection=True, BackupRetentionPeriod=14, ApplyImmediately=True)["DBCluster"]
    c = rds.describe_db_clusters(DBClusterIdentifier="apg")["DBClusters"][0]
    assert c["IAMDatabaseAuthenticationEnabled"] is True
    assert c["EnabledCloudwatchLogsExports"] == ["postgresql", "iam-db-auth-error"]
    assert c["DeletionProtection"] is True and c["BackupRetentionPeriod"] == 14
    for m in ("apg-1", "apg-2"):
        db = rds.describe_db_instances(DBInstanceIdentifier=m)["DBInstances"][0]
        assert db["IAMDatabaseAuthenticationEnabled"] is True
        assert db["EnabledCloudwatchLogsExports"] == ["postgresql", "iam-db-auth-error"]
        assert db["BackupRetentionPeriod"] == 14
    rds.modify_db_cluster(DBClusterIdentifier="apg",
                          CloudwatchLogsExportConfiguration={"DisableLogTypes": ["postgresql"]},
                          ApplyImmediately=True)
    c = rds.describe_db_clusters(DBClusterIdentifier="apg")["DBClusters"][0]
    assert c["EnabledCloudwatchLogsExports"] == ["iam-db-auth-error"]
    with pytest.raises(ClientError) as exc:
        rds.modify_db_cluster(DBClusterIdentifier="apg", DBClusterParameterGroupName="nope",
                              ApplyImmediately=True)
    assert exc.value.response["Error"]["Code"] == "DBParameterGroupNotFound"


def test_cluster_defaults_engine_version_and_group(rds: Any) -> None:
    """AWS: an aurora-postgresql cluster created without EngineVersion gets the default 16.x
    version and default.aurora-postgresql16; instances without a version get 16.x and
    default.postgres16 (moto: 12.7 + default.aurora8.0, and 9.3.3)."""
    c = rds.create_db_cluster(DBClusterIdentifier="apg", Engine="aurora-postgresql",
                              MasterUsername="u", MasterUserPassword="password123")["DBCluster"]
    assert c["EngineVersion"].startswith("16.")
    assert c["DBClusterParameterGroup"] == "default.aurora-postgresql16"
    c15 = rds.create_db_cluster(DBClusterIdentifier="apg15", Engine="aurora-postgresql",
                                EngineVersion="15.4", MasterUsername="u",
                                MasterUserPassword="password123")["DBCluster"]
    assert c15["DBClusterParameterGroup"] == "default.aurora-postgresql15"
    db = make_instance(rds, "db")
    assert db["EngineVersion"].startswith("16.")
    assert db["DBParameterGroups"][0]["DBParameterGroupName"] == "default.postgres16"
    m = rds.create_db_instance(DBInstanceIdentifier="apg15-1", DBClusterIdentifier="apg15",
                               Engine="aurora-postgresql", DBInstanceClass="db.r6g.large")
    assert m["DBInstance"]["DBParameterGroups"][0]["DBParameterGroupName"] == \
        "default.aurora-postgresql15"


def test_identity_fields_dbi_resource_id_kms_arn_and_ca(rds: Any, kms: Any) -> None:
    """AWS: DbiResourceId is unique per instance, KmsKeyId is always the key ARN (key ids and
    aliases are resolved; encryption without a key uses the aws/rds key), the default CA is
    rds-ca-rsa2048-g1 (moto: constant DbiResourceId, KmsKeyId echoed or 'default_kms_key_id',
    CA 'rds-ca-default')."""
    key = kms.create_key(Description="k")["KeyMetadata"]
    kms.create_alias(AliasName="alias/mine", TargetKeyId=key["KeyId"])
    a = make_instance(rds, "a", StorageEncrypted=True, KmsKeyId="alias/mine")
    b = make_instance(rds, "b", StorageEncrypted=True, KmsKeyId=key["KeyId"])
    c = make_instance(rds, "c", StorageEncrypted=True)
    d = make_instance(rds, "d")
    assert a["KmsKeyId"] == key["Arn"] and b["KmsKeyId"] == key["Arn"]
    aws_rds = kms.describe_key(KeyId="alias/aws/rds")["KeyMetadata"]["Arn"]
    assert c["KmsKeyId"] == aws_rds
    assert "KmsKeyId" not in d
    ids = {x["DbiResourceId"] for x in rds.describe_db_instances()["DBInstances"]}
    assert len(ids) == 4 and all(i.startswith("db-") for i in ids)
    assert a["CACertificateIdentifier"] == "rds-ca-rsa2048-g1"
    assert a["CertificateDetails"]["CAIdentifier"] == "rds-ca-rsa2048-g1"
    with pytest.raises(ClientError) as exc:
        make_instance(rds, "e", StorageEncrypted=True, KmsKeyId="alias/does-not-exist")
    assert exc.value.response["Error"]["Code"] == "KMSKeyNotAccessibleFault"


def test_describe_db_engine_versions(rds: Any) -> None:
    """AWS: DescribeDBEngineVersions filters by Engine/EngineVersion and lists ValidUpgradeTarget
    with IsMajorVersionUpgrade (moto: HTTP 500)."""
    vs = rds.describe_db_engine_versions(Engine="postgres")["DBEngineVersions"]
    majors = {v["EngineVersion"].split(".")[0] for v in vs}
    assert majors == {"14", "15", "16", "17"}
    v = rds.describe_db_engine_versions(Engine="postgres", EngineVersion="16.1")["DBEngineVersions"]
    assert len(v) == 1 and v[0]["DBParameterGroupFamily"] == "postgres16"
    targets = v[0]["ValidUpgradeTarget"]
    minors = [t["EngineVersion"] for t in targets if not t["IsMajorVersionUpgrade"]]
    assert "16.6" in minors and all(t.startswith("16.") for t in minors)
    assert any(t["IsMajorVersionUpgrade"] and t["EngineVersion"].startswith("17.") for t in targets)
    a = rds.describe_db_engine_versions(Engine="aurora-postgresql", EngineVersion="16.4")
    assert a["DBEngineVersions"][0]["DBParameterGroupFamily"] == "aurora-postgresql16"


def test_describe_certificates(rds: Any) -> None:
    """AWS: DescribeCertificates lists rds-ca-rsa2048-g1, rds-ca-rsa4096-g1, rds-ca-ecc384-g1 and
    the expired rds-ca-2019 with ValidTill (moto: HTTP 500)."""
    resp = rds.describe_certificates()
    certs = {c["CertificateIdentifier"]: c for c in resp["Certificates"]}
    assert set(certs) == {"rds-ca-rsa2048-g1", "rds-ca-rsa4096-g1", "rds-ca-ecc384-g1",
                          "rds-ca-2019"}
    now = datetime.now(timezone.utc)
    assert certs["rds-ca-2019"]["ValidTill"] < now
    assert certs["rds-ca-rsa2048-g1"]["ValidTill"] > now
    assert resp["DefaultCertificateForNewLaunches"] == "rds-ca-rsa2048-g1"
    one = rds.describe_certificates(CertificateIdentifier="rds-ca-ecc384-g1")["Certificates"]
    assert [c["CertificateIdentifier"] for c in one] == ["rds-ca-ecc384-g1"]
    with pytest.raises(ClientError) as exc:
        rds.describe_certificates(CertificateIdentifier="rds-ca-nope")
    assert exc.value.response["Error"]["Code"] == "CertificateNotFound"


def test_describe_pending_maintenance_actions_is_empty_not_500(rds: Any) -> None:
    """AWS: DescribePendingMaintenanceActions answers with a (here always empty) list; plain moto
    answers HTTP 500, which the SDKs retry as a server error."""
    make_instance(rds, "db")
    assert rds.describe_pending_maintenance_actions()["PendingMaintenanceActions"] == []


def test_parameter_group_family_must_match_engine_major(rds: Any) -> None:
    """AWS: a DB (cluster) parameter group can only be attached to a database of its family
    (postgres15 group on a 16.x instance → InvalidParameterCombination); moto accepts any."""
    rds.create_db_parameter_group(DBParameterGroupName="pg15", DBParameterGroupFamily="postgres15",
                                  Description="x")
    with pytest.raises(ClientError) as exc:
        make_instance(rds, "a", EngineVersion="16.3", DBParameterGroupName="pg15")
    assert exc.value.response["Error"]["Code"] == "InvalidParameterCombination"
    make_instance(rds, "b", EngineVersion="16.3")
    with pytest.raises(ClientError) as exc:
        rds.modify_db_instance(DBInstanceIdentifier="b", DBParameterGroupName="pg15",
                               ApplyImmediately=True)
    assert exc.value.response["Error"]["Code"] == "InvalidParameterCombination"
    make_cluster(rds, "apg", members=0, EngineVersion="16.4")
    with pytest.raises(ClientError) as exc:
        rds.modify_db_cluster(DBClusterIdentifier="apg",
                              DBClusterParameterGroupName="default.aurora-postgresql15",
                              ApplyImmediately=True)
    assert exc.value.response["Error"]["Code"] == "InvalidParameterCombination"


def test_cluster_and_member_endpoints_share_the_account_region_identifier(rds: Any) -> None:
    """AWS: a cluster's endpoints carry the same per-account-and-region identifier as its
    instances' (`c.cluster-<id>.<region>.rds.amazonaws.com`, `c.cluster-ro-<id>…`,
    `m.<id>.<region>…`), which one server certificate covers; members listen on the cluster's
    port (moto: a random identifier per cluster)."""
    c = make_cluster(rds, "apg", members=2, Port=6543)
    assert c["Endpoint"] == "apg.cluster-aaaaaaaaaa.us-east-1.rds.amazonaws.com"
    assert c["ReaderEndpoint"] == "apg.cluster-ro-aaaaaaaaaa.us-east-1.rds.amazonaws.com"
    for m in ("apg-1", "apg-2"):
        db = rds.describe_db_instances(DBInstanceIdentifier=m)["DBInstances"][0]
        assert db["Endpoint"]["Address"] == f"{m}.aaaaaaaaaa.us-east-1.rds.amazonaws.com"
        assert db["Endpoint"]["Port"] == 6543


def test_managed_master_secret_holds_the_master_user_and_a_generated_password(emu: str) -> None:
    """AWS: with ManageMasterUserPassword, RDS creates an `rds!…` secret holding
    {"username": <master user>, "password": <generated>} and reports its ARN in
    MasterUserSecret (moto: always admin / P@55w0rd!)."""
    import json

    from conftest import client

    rds, sm = client(emu, "rds"), client(emu, "secretsmanager")
    made = []
    for ident in ("m1", "m2"):
        db = rds.create_db_instance(
            DBInstanceIdentifier=ident, Engine="postgres", EngineVersion="16.6",
            DBInstanceClass="db.t4g.micro", AllocatedStorage=20, MasterUsername="owner",
            ManageMasterUserPassword=True)["DBInstance"]
        arn = db["MasterUserSecret"]["SecretArn"]
        assert ":secret:rds!db-" in arn
        value = json.loads(sm.get_secret_value(SecretId=arn)["SecretString"])
        assert value["username"] == "owner"
        assert len(value["password"]) >= 20 and value["password"] != "P@55w0rd!"
        assert not set('/"@ ') & set(value["password"])
        made.append(value["password"])
    assert made[0] != made[1]
    c = rds.create_db_cluster(DBClusterIdentifier="apg", Engine="aurora-postgresql",
                              MasterUsername="clusterowner",
                              ManageMasterUserPassword=True)["DBCluster"]
    value = json.loads(sm.get_secret_value(SecretId=c["MasterUserSecret"]["SecretArn"])["SecretString"])
    assert value["username"] == "clusterowner"
