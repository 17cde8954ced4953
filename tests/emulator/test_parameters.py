"""Parameter catalogue, default groups and ModifyDB(Cluster)ParameterGroup validation."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from conftest import make_instance


def _err(exc: pytest.ExceptionInfo) -> tuple[str, str]:
    e = exc.value.response["Error"]
    return e["Code"], e["Message"]


def _all_params(rds: Any, op: str, **kw: Any) -> list[dict[str, Any]]:
    out, marker = [], None
    while True:
        args = dict(kw)
        if marker:
            args["Marker"] = marker
        resp = getattr(rds, op)(**args)
        out.extend(resp.get("Parameters") or resp.get("EngineDefaults", {}).get("Parameters", []))
        marker = resp.get("Marker") or resp.get("EngineDefaults", {}).get("Marker")
        if not marker:
            return out


def _by_name(params: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["ParameterName"]: p for p in params}


def test_engine_default_parameters_rds_force_ssl_by_major(rds: Any) -> None:
    """AWS: DescribeEngineDefaultParameters returns the family's defaults with ApplyType,
    IsModifiable, DataType, AllowedValues, Source=engine-default; rds.force_ssl is 1 on RDS for
    PostgreSQL 15+ and 0 on 14 (moto: HTTP 500, not implemented)."""
    expected = {"postgres14": "0", "postgres15": "1", "postgres16": "1", "postgres17": "1"}
    for family, force in expected.items():
        p = _by_name(_all_params(rds, "describe_engine_default_parameters",
                                 DBParameterGroupFamily=family))
        assert p["rds.force_ssl"]["ParameterValue"] == force
        assert p["rds.force_ssl"]["ApplyType"] == "dynamic"
        assert p["rds.force_ssl"]["AllowedValues"] == "0,1"
        assert p["ssl_min_protocol_version"]["ParameterValue"] == "TLSv1.2"
        assert "ParameterValue" not in p["ssl_max_protocol_version"]
        assert p["rds.log_retention_period"]["ParameterValue"] == "4320"
        assert p["rds.log_retention_period"]["AllowedValues"] == "1440-10080"
        assert p["shared_preload_libraries"]["ApplyType"] == "static"
        assert p["shared_preload_libraries"]["DataType"] == "list"
        assert p["password_encryption"]["ParameterValue"] == "scram-sha-256"
        assert p["log_statement"]["AllowedValues"] == "none,ddl,mod,all"
        assert p["max_connections"]["ApplyType"] == "static"
        assert p["rds.extensions"]["IsModifiable"] is False
        for param in p.values():
            assert param["Source"] == "engine-default"
            assert param["ApplyType"] in ("static", "dynamic")
            assert "DataType" in param and "IsModifiable" in param


def test_engine_default_cluster_parameters_aurora(rds: Any) -> None:
    """AWS: DescribeEngineDefaultClusterParameters holds the Aurora PostgreSQL cluster-level
    settings (TLS, logging, pgaudit, preload, password); rds.force_ssl defaults to 0 on Aurora
    (moto: HTTP 500)."""
    for major in (14, 15, 16, 17):
        p = _by_name(_all_params(rds, "describe_engine_default_cluster_parameters",
                                 DBParameterGroupFamily=f"aurora-postgresql{major}"))
        assert p["rds.force_ssl"]["ParameterValue"] == "0"
        for name in ("ssl_min_protocol_version", "rds.log_retention_period",
                     "shared_preload_libraries", "pgaudit.log", "pgaudit.role",
                     "password_encryption", "log_connections", "log_disconnections",
                     "log_statement"):
            assert name in p, name
    inst = _by_name(_all_params(rds, "describe_engine_default_parameters",
                                DBParameterGroupFamily="aurora-postgresql16"))
    assert "rds.force_ssl" not in inst and "work_mem" in inst


def test_default_groups_exist_from_start_with_full_parameter_list(rds: Any) -> None:
    """AWS: default.postgres14..17 and default.aurora-postgresql14..17 (DB and cluster groups)
    exist in every account and DescribeDBParameters lists every parameter of the family
    (moto: default groups appear lazily, empty)."""
    names = {g["DBParameterGroupName"]
             for g in rds.describe_db_parameter_groups()["DBParameterGroups"]}
    for m in (14, 15, 16, 17):
        assert f"default.postgres{m}" in names
        assert f"default.aurora-postgresql{m}" in names
    cnames = {g["DBClusterParameterGroupName"] for g in
              rds.describe_db_cluster_parameter_groups()["DBClusterParameterGroups"]}
    assert {f"default.aurora-postgresql{m}" for m in (14, 15, 16, 17)} <= cnames
    params = _by_name(_all_params(rds, "describe_db_parameters",
                                  DBParameterGroupName="default.postgres16"))
    assert params["rds.force_ssl"]["ParameterValue"] == "1"
    assert len(params) > 20
    cparams = _by_name(_all_params(rds, "describe_db_cluster_parameters",
                                   DBClusterParameterGroupName="default.aurora-postgresql16"))
    assert cparams["rds.force_ssl"]["ParameterValue"] == "0"


def test_describe_db_parameters_merges_user_values_with_source_user(rds: Any) -> None:
    """AWS: DescribeDBParameters returns the effective list: engine defaults plus the values set
    on the group, the latter with Source=user; Source=user narrows to them (moto: only the set
    values, without ApplyType/DataType/Source)."""
    rds.create_db_parameter_group(DBParameterGroupName="custom16", DBParameterGroupFamily="postgres16",
                                  Description="custom")
    rds.modify_db_parameter_group(DBParameterGroupName="custom16", Parameters=[
        {"ParameterName": "log_connections", "ParameterValue": "1", "ApplyMethod": "immediate"}])
    params = _by_name(_all_params(rds, "describe_db_parameters", DBParameterGroupName="custom16"))
    assert params["log_connections"]["ParameterValue"] == "1"
    assert params["log_connections"]["Source"] == "user"
    assert params["log_connections"]["ApplyType"] == "dynamic"
    assert params["log_disconnections"]["Source"] == "engine-default"
    user = rds.describe_db_parameters(DBParameterGroupName="custom16", Source="user")["Parameters"]
    assert [p["ParameterName"] for p in user] == ["log_connections"]


def test_describe_db_parameters_paging_and_max_records_bounds(rds: Any) -> None:
    """AWS: DescribeDBParameters pages hold 20-100 records (default 100) with an opaque Marker;
    MaxRecords outside 20-100 is InvalidParameterValue (moto: ignores MaxRecords/Marker)."""
    full = rds.describe_db_parameters(DBParameterGroupName="default.postgres16")
    assert "Marker" not in full
    first = rds.describe_db_parameters(DBParameterGroupName="default.postgres16", MaxRecords=20)
    assert len(first["Parameters"]) == 20 and first["Marker"]
    second = rds.describe_db_parameters(DBParameterGroupName="default.postgres16", MaxRecords=20,
                                        Marker=first["Marker"])
    assert first["Parameters"] + second["Parameters"] == full["Parameters"]
    assert "Marker" not in second
    for bad in (19, 101):
        with pytest.raises(ClientError) as exc:
            rds.describe_db_parameters(DBParameterGroupName="default.postgres16", MaxRecords=bad)
        code, msg = _err(exc)
        assert code == "InvalidParameterValue" and "between 20 and 100" in msg
    with pytest.raises(ClientError) as exc:
        rds.describe_db_cluster_parameters(DBClusterParameterGroupName="default.aurora-postgresql16",
                                           MaxRecords=5)
    assert _err(exc)[0] == "InvalidParameterValue"


def test_describe_db_parameters_parameter_name_filter(rds: Any) -> None:
    """AWS (newer API models): Filters Name=parameter-name narrows DescribeDB(Cluster)Parameters
    to the named parameters (moto: Filters ignored)."""
    resp = rds.describe_db_parameters(
        DBParameterGroupName="default.postgres15",
        Filters=[{"Name": "parameter-name", "Values": ["rds.force_ssl", "log_statement"]}])
    assert sorted(p["ParameterName"] for p in resp["Parameters"]) == ["log_statement", "rds.force_ssl"]
    resp = rds.describe_db_cluster_parameters(
        DBClusterParameterGroupName="default.aurora-postgresql16",
        Filters=[{"Name": "parameter-name", "Values": ["pgaudit.log"]}])
    assert [p["ParameterName"] for p in resp["Parameters"]] == ["pgaudit.log"]


def test_default_groups_are_immutable(rds: Any) -> None:
    """AWS: default.* groups cannot be modified, reset or deleted (InvalidParameterValue), and a
    user group cannot be named default.* (moto accepts all of these)."""
    one = [{"ParameterName": "rds.force_ssl", "ParameterValue": "1", "ApplyMethod": "immediate"}]
    with pytest.raises(ClientError) as exc:
        rds.modify_db_parameter_group(DBParameterGroupName="default.postgres16", Parameters=one)
    code, msg = _err(exc)
    assert code == "InvalidParameterValue" and "default.postgres16 cannot be modified" in msg
    with pytest.raises(ClientError) as exc:
        rds.modify_db_cluster_parameter_group(
            DBClusterParameterGroupName="default.aurora-postgresql16", Parameters=one)
    assert _err(exc)[0] == "InvalidParameterValue"
    with pytest.raises(ClientError) as exc:
        rds.delete_db_parameter_group(DBParameterGroupName="default.postgres16")
    assert _err(exc)[0] == "InvalidParameterValue"
    with pytest.raises(ClientError) as exc:
        rds.delete_db_cluster_parameter_group(DBClusterParameterGroupName="default.aurora-postgresql16")
    assert _err(exc)[0] == "InvalidParameterValue"
    with pytest.raises(ClientError) as exc:
        rds.create_db_parameter_group(DBParameterGroupName="default.mine",
                                      DBParameterGroupFamily="postgres16", Description="x")
    assert _err(exc)[0] == "InvalidParameterValue"
    with pytest.raises(ClientError) as exc:
        rds.create_db_cluster_parameter_group(DBClusterParameterGroupName="default.mine",
                                              DBParameterGroupFamily="aurora-postgresql16",
                                              Description="x")
    assert _err(exc)[0] == "InvalidParameterValue"
    # still unchanged
    p = _by_name(_all_params(rds, "describe_db_parameters", DBParameterGroupName="default.postgres16"))
    assert p["rds.force_ssl"]["Source"] == "engine-default"


@pytest.mark.parametrize("params,code,fragment", [
    ([{"ParameterName": "work_mem", "ParameterValue": str(1000 + i), "ApplyMethod": "immediate"}
      for i in range(21)], "InvalidParameterValue", "20"),
    ([{"ParameterName": "no_such_param", "ParameterValue": "1", "ApplyMethod": "immediate"}],
     "InvalidParameterValue", "Could not find parameter with name: no_such_param"),
    ([{"ParameterName": "rds.extensions", "ParameterValue": "x", "ApplyMethod": "pending-reboot"}],
     "InvalidParameterValue", "cannot be modified"),
    ([{"ParameterName": "rds.log_retention_period", "ParameterValue": "60",
       "ApplyMethod": "immediate"}], "InvalidParameterValue", "1440-10080"),
    ([{"ParameterName": "ssl_min_protocol_version", "ParameterValue": "TLSv9",
       "ApplyMethod": "immediate"}], "InvalidParameterValue", "allowed values"),
    ([{"ParameterName": "shared_preload_libraries", "ParameterValue": "pgaudit,evil",
       "ApplyMethod": "pending-reboot"}], "InvalidParameterValue", "allowed values"),
    ([{"ParameterName": "shared_preload_libraries", "ParameterValue": "pgaudit",
       "ApplyMethod": "immediate"}], "InvalidParameterCombination",
     "immediate apply method for static parameter"),
])
def test_modify_parameter_group_validation(rds: Any, params: list, code: str, fragment: str) -> None:
    """AWS: ModifyDBParameterGroup takes at most 20 parameters and refuses unknown names,
    non-modifiable parameters, values outside AllowedValues (InvalidParameterValue) and
    ApplyMethod=immediate on a static parameter (InvalidParameterCombination); nothing is applied
    (moto accepts everything)."""
    rds.create_db_parameter_group(DBParameterGroupName="v16", DBParameterGroupFamily="postgres16",
                                  Description="validation")
    with pytest.raises(ClientError) as exc:
        rds.modify_db_parameter_group(DBParameterGroupName="v16", Parameters=params)
    got_code, msg = _err(exc)
    assert got_code == code and fragment in msg
    assert rds.describe_db_parameters(DBParameterGroupName="v16", Source="user")["Parameters"] == []


def test_modify_cluster_parameter_group_validation(rds: Any) -> None:
    """AWS: ModifyDBClusterParameterGroup validates like ModifyDBParameterGroup (20 max, names,
    allowed values, static+immediate)."""
    rds.create_db_cluster_parameter_group(DBClusterParameterGroupName="c16",
                                          DBParameterGroupFamily="aurora-postgresql16",
                                          Description="x")
    with pytest.raises(ClientError) as exc:
        rds.modify_db_cluster_parameter_group(DBClusterParameterGroupName="c16", Parameters=[
            {"ParameterName": "shared_preload_libraries", "ParameterValue": "pgaudit",
             "ApplyMethod": "immediate"}])
    assert _err(exc)[0] == "InvalidParameterCombination"
    with pytest.raises(ClientError) as exc:
        rds.modify_db_cluster_parameter_group(DBClusterParameterGroupName="c16", Parameters=[
            {"ParameterName": "work_mem", "ParameterValue": "1024", "ApplyMethod": "immediate"}])
    assert _err(exc)[0] == "InvalidParameterValue"  # instance-level only on Aurora
    rds.modify_db_cluster_parameter_group(DBClusterParameterGroupName="c16", Parameters=[
        {"ParameterName": "rds.force_ssl", "ParameterValue": "1", "ApplyMethod": "immediate"},
        {"ParameterName": "pgaudit.log", "ParameterValue": "ddl,role", "ApplyMethod": "immediate"}])
    user = rds.describe_db_cluster_parameters(DBClusterParameterGroupName="c16", Source="user")
    assert {p["ParameterName"]: p["ParameterValue"] for p in user["Parameters"]} == {
        "pgaudit.log": "ddl,role", "rds.force_ssl": "1"}


def test_copy_parameter_groups_with_tags(rds: Any) -> None:
    """AWS: CopyDBParameterGroup / CopyDBClusterParameterGroup copy the set values (a copy of a
    default group starts with the engine defaults) and apply Tags; ListTagsForResource and
    AddTagsToResource work on parameter groups."""
    tags = [{"Key": "pgbaseline.io/managed", "Value": "true"}]
    g = rds.copy_db_parameter_group(SourceDBParameterGroupIdentifier="default.postgres14",
                                    TargetDBParameterGroupIdentifier="pgb-pg14",
                                    TargetDBParameterGroupDescription="managed", Tags=tags)
    arn = g["DBParameterGroup"]["DBParameterGroupArn"]
    assert rds.list_tags_for_resource(ResourceName=arn)["TagList"] == tags
    rds.modify_db_parameter_group(DBParameterGroupName="pgb-pg14", Parameters=[
        {"ParameterName": "rds.force_ssl", "ParameterValue": "1", "ApplyMethod": "immediate"}])
    rds.copy_db_parameter_group(SourceDBParameterGroupIdentifier="pgb-pg14",
                                TargetDBParameterGroupIdentifier="pgb-pg14-b",
                                TargetDBParameterGroupDescription="copy of copy")
    p = _by_name(_all_params(rds, "describe_db_parameters", DBParameterGroupName="pgb-pg14-b"))
    assert p["rds.force_ssl"]["ParameterValue"] == "1" and p["rds.force_ssl"]["Source"] == "user"
    assert p["log_statement"]["Source"] == "engine-default"

    c = rds.copy_db_cluster_parameter_group(
        SourceDBClusterParameterGroupIdentifier="default.aurora-postgresql16",
        TargetDBClusterParameterGroupIdentifier="pgb-apg16",
        TargetDBClusterParameterGroupDescription="managed", Tags=tags)
    carn = c["DBClusterParameterGroup"]["DBClusterParameterGroupArn"]
    rds.add_tags_to_resource(ResourceName=carn, Tags=[{"Key": "team", "Value": "x"}])
    got = {t["Key"]: t["Value"] for t in rds.list_tags_for_resource(ResourceName=carn)["TagList"]}
    assert got == {"pgbaseline.io/managed": "true", "team": "x"}
    cp = _by_name(_all_params(rds, "describe_db_cluster_parameters",
                              DBClusterParameterGroupName="pgb-apg16"))
    assert cp["rds.force_ssl"]["ParameterValue"] == "0"


def test_delete_parameter_group_in_use_is_refused(rds: Any) -> None:
    """AWS: deleting a DB parameter group still attached to an instance (or a cluster group
    attached to a cluster) fails with InvalidDBParameterGroupState (moto deletes it and then
    DescribeDBInstances fails with HTTP 500 for the whole account)."""
    rds.create_db_parameter_group(DBParameterGroupName="inuse", DBParameterGroupFamily="postgres16",
                                  Description="x")
    make_instance(rds, "db1", EngineVersion="16.3", DBParameterGroupName="inuse")
    with pytest.raises(ClientError) as exc:
        rds.delete_db_parameter_group(DBParameterGroupName="inuse")
    assert _err(exc)[0] == "InvalidDBParameterGroupState"
    assert rds.describe_db_instances()["DBInstances"][0]["DBInstanceIdentifier"] == "db1"
    rds.create_db_cluster_parameter_group(DBClusterParameterGroupName="cinuse",
                                          DBParameterGroupFamily="aurora-postgresql16",
                                          Description="x")
    rds.create_db_cluster(DBClusterIdentifier="c1", Engine="aurora-postgresql",
                          MasterUsername="u", MasterUserPassword="password123",
                          DBClusterParameterGroupName="cinuse")
    with pytest.raises(ClientError) as exc:
        rds.delete_db_cluster_parameter_group(DBClusterParameterGroupName="cinuse")
    assert _err(exc)[0] == "InvalidDBParameterGroupState"
    rds.create_db_parameter_group(DBParameterGroupName="unused", DBParameterGroupFamily="postgres16",
                                  Description="x")
    rds.delete_db_parameter_group(DBParameterGroupName="unused")


def test_describe_unknown_parameter_group_is_not_found(rds: Any) -> None:
    """AWS answers DescribeDB(Cluster)ParameterGroups for a name that does not exist with
    DBParameterGroupNotFound (plain moto: an empty list for DB groups)."""
    for call, arg in [
        (rds.describe_db_parameter_groups, "DBParameterGroupName"),
        (rds.describe_db_cluster_parameter_groups, "DBClusterParameterGroupName"),
    ]:
        with pytest.raises(ClientError) as err:
            call(**{arg: "no-such-group"})
        assert err.value.response["Error"]["Code"] == "DBParameterGroupNotFound"
    found = rds.describe_db_parameter_groups(DBParameterGroupName="default.postgres16")
    assert [g["DBParameterGroupName"] for g in found["DBParameterGroups"]] == ["default.postgres16"]
    names = [g["DBParameterGroupName"]
             for p in rds.get_paginator("describe_db_parameter_groups").paginate(
                 PaginationConfig={"PageSize": 20})
             for g in p["DBParameterGroups"]]
    assert names == sorted(names) and "default.postgres14" in names
