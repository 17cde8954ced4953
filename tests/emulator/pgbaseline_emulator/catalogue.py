"""Static AWS data the emulator serves: engine-default parameters, engine versions, CA certificates.

The parameter catalogue is a representative subset of what RDS for PostgreSQL and Aurora
PostgreSQL return from DescribeEngineDefaultParameters / DescribeEngineDefaultClusterParameters:
every parameter pgbaseline's controls read, plus a few others (a static one, a formula value,
a non-modifiable one) so that code paths that meet them are exercised.

Facts reproduced (AWS documentation, "Working with parameters on your RDS for PostgreSQL DB
instance" and the Aurora PostgreSQL parameter reference):
  * rds.force_ssl defaults to 1 on RDS for PostgreSQL 15 and later, 0 on 14, 0 on Aurora;
  * ssl_min_protocol_version defaults to TLSv1.2; ssl_max_protocol_version is unset;
  * rds.log_retention_period defaults to 4320 minutes and accepts 1440-10080;
  * shared_preload_libraries defaults to pg_stat_statements and is static;
  * password_encryption defaults to scram-sha-256 on 14 and later;
  * on Aurora the TLS, logging, pgaudit, password and preload settings are cluster parameters.
"""

from __future__ import annotations

import copy
from typing import Any

RDS_MAJORS = (14, 15, 16, 17)

RDS_FAMILIES = tuple(f"postgres{m}" for m in RDS_MAJORS)
AURORA_FAMILIES = tuple(f"aurora-postgresql{m}" for m in RDS_MAJORS)
ALL_FAMILIES = RDS_FAMILIES + AURORA_FAMILIES

PRELOAD_LIBRARIES = (
    "auto_explain,orafce,pgaudit,pglogical,pg_bigm,pg_cron,pg_hint_plan,pg_prewarm,"
    "pg_similarity,pg_stat_statements,pg_tle,pg_transport,plprofiler,pg_partman_bgw"
)
PGAUDIT_CLASSES = (
    "ddl,function,misc,read,role,write,none,all,"
    "-ddl,-function,-misc,-read,-role,-write"
)
TLS_VERSIONS = "TLSv1,TLSv1.1,TLSv1.2,TLSv1.3"
RDS_EXTENSIONS = (
    "address_standardizer,amcheck,aws_commons,aws_lambda,aws_s3,bloom,btree_gin,btree_gist,"
    "citext,cube,dblink,dict_int,earthdistance,fuzzystrmatch,hstore,intarray,isn,log_fdw,"
    "ltree,pg_buffercache,pg_cron,pg_stat_statements,pg_trgm,pgaudit,pgcrypto,pgrowlocks,"
    "pgstattuple,plpgsql,postgis,postgres_fdw,tablefunc,tcn,tsm_system_rows,unaccent,uuid-ossp"
)


def _p(
    name: str,
    value: str | None,
    *,
    apply_type: str,
    data_type: str,
    allowed: str | None,
    description: str,
    modifiable: bool = True,
) -> dict[str, Any]:
    param: dict[str, Any] = {
        "ParameterName": name,
        "Description": description,
        "Source": "engine-default",
        "ApplyType": apply_type,
        "DataType": data_type,
        "IsModifiable": modifiable,
        "ApplyMethod": "pending-reboot",
    }
    if value is not None:
        param["ParameterValue"] = value
    if allowed is not None:
        param["AllowedValues"] = allowed
    return param


def _tls_and_auth(force_ssl: str) -> list[dict[str, Any]]:
    return [
        _p("rds.force_ssl", force_ssl, apply_type="dynamic", data_type="boolean",
           allowed="0,1", description="Force SSL connections."),
        _p("ssl_min_protocol_version", "TLSv1.2", apply_type="dynamic", data_type="string",
           allowed=TLS_VERSIONS,
           description="Sets the minimum SSL/TLS protocol version to use."),
        _p("ssl_max_protocol_version", None, apply_type="dynamic", data_type="string",
           allowed=TLS_VERSIONS,
           description="Sets the maximum SSL/TLS protocol version to use."),
        _p("password_encryption", "scram-sha-256", apply_type="dynamic", data_type="string",
           allowed="md5,scram-sha-256",
           description="Chooses the algorithm for encrypting passwords."),
    ]


def _logging() -> list[dict[str, Any]]:
    return [
        _p("rds.log_retention_period", "4320", apply_type="dynamic", data_type="integer",
           allowed="1440-10080",
           description="Amazon RDS for PostgreSQL will delete PostgreSQL logs that are older "
                       "than N minutes."),
        _p("log_connections", "0", apply_type="dynamic", data_type="boolean", allowed="0,1",
           description="Logs each successful connection."),
        _p("log_disconnections", "0", apply_type="dynamic", data_type="boolean", allowed="0,1",
           description="Logs end of a session, including duration."),
        _p("log_statement", "none", apply_type="dynamic", data_type="string",
           allowed="none,ddl,mod,all", description="Sets the type of statements logged."),
        _p("log_hostname", "0", apply_type="dynamic", data_type="boolean", allowed="0,1",
           description="Logs the host name in the connection logs."),
        _p("log_lock_waits", None, apply_type="dynamic", data_type="boolean", allowed="0,1",
           description="Logs long lock waits."),
        _p("log_min_error_statement", None, apply_type="dynamic", data_type="string",
           allowed="debug5,debug4,debug3,debug2,debug1,info,notice,warning,error,log,fatal,panic",
           description="Causes all statements generating error at or above this level to be "
                       "logged."),
        _p("log_min_duration_statement", None, apply_type="dynamic", data_type="integer",
           allowed="-1-2147483647",
           description="Sets the minimum execution time above which statements will be "
                       "logged."),
    ]


def _preload_and_audit() -> list[dict[str, Any]]:
    return [
        _p("shared_preload_libraries", "pg_stat_statements", apply_type="static",
           data_type="list", allowed=PRELOAD_LIBRARIES,
           description="Lists shared libraries to preload into server."),
        _p("pgaudit.log", "none", apply_type="dynamic", data_type="list",
           allowed=PGAUDIT_CLASSES,
           description="Specifies which classes of statements will be logged by session "
                       "audit logging."),
        _p("pgaudit.role", None, apply_type="dynamic", data_type="string", allowed=None,
           description="Specifies the master role to use for object audit logging."),
        _p("pgaudit.log_parameter", "0", apply_type="dynamic", data_type="boolean",
           allowed="0,1",
           description="Specifies that audit logging should include the parameters that "
                       "were passed with the statement."),
        _p("pgaudit.log_catalog", "1", apply_type="dynamic", data_type="boolean",
           allowed="0,1",
           description="Specifies that session logging should be enabled in the case where "
                       "all relations in a statement are in pg_catalog."),
        _p("pgaudit.log_relation", "0", apply_type="dynamic", data_type="boolean",
           allowed="0,1",
           description="Specifies whether session audit logging should create a separate "
                       "log entry for each relation referenced in a SELECT or DML statement."),
    ]


def _instance_tuning() -> list[dict[str, Any]]:
    return [
        _p("work_mem", None, apply_type="dynamic", data_type="integer",
           allowed="64-2147483647",
           description="Sets the maximum memory to be used for query workspaces."),
        _p("max_connections", "LEAST({DBInstanceClassMemory/9531392},5000)",
           apply_type="static", data_type="integer", allowed="6-8388607",
           description="Sets the maximum number of concurrent connections."),
        _p("idle_in_transaction_session_timeout", "86400000", apply_type="dynamic",
           data_type="integer", allowed="0-2147483647",
           description="Sets the maximum allowed duration of any idling transaction."),
        _p("statement_timeout", None, apply_type="dynamic", data_type="integer",
           allowed="0-2147483647",
           description="Sets the maximum allowed duration of any statement."),
        _p("rds.rds_superuser_reserved_connections", "2", apply_type="static",
           data_type="integer", allowed="0-8388607",
           description="Sets the number of connection slots reserved for rds_superusers."),
    ]


def _non_modifiable() -> list[dict[str, Any]]:
    return [
        _p("rds.extensions", RDS_EXTENSIONS, apply_type="static", data_type="list",
           allowed=None, modifiable=False,
           description="List of extensions that are available for use in this instance."),
    ]


def _sorted(params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(params, key=lambda p: p["ParameterName"])


def _rds_family(major: int) -> list[dict[str, Any]]:
    force_ssl = "1" if major >= 15 else "0"
    return _sorted(
        _tls_and_auth(force_ssl) + _logging() + _preload_and_audit()
        + _instance_tuning() + _non_modifiable()
    )


def _aurora_cluster_family(major: int) -> list[dict[str, Any]]:
    return _sorted(_tls_and_auth("0") + _logging() + _preload_and_audit() + _non_modifiable())


def _aurora_instance_family(major: int) -> list[dict[str, Any]]:
    # Instance-level parameters of an Aurora DB parameter group. Kept to tuning knobs so that
    # the security-relevant settings have one home: the cluster parameter group.
    return _sorted(
        _instance_tuning()
        + [p for p in _logging() if p["ParameterName"] == "log_min_duration_statement"]
    )


# family -> list of parameter dicts (never mutate: use instance_defaults()/cluster_defaults()).
INSTANCE_DEFAULTS: dict[str, list[dict[str, Any]]] = {}
CLUSTER_DEFAULTS: dict[str, list[dict[str, Any]]] = {}
for _m in RDS_MAJORS:
    INSTANCE_DEFAULTS[f"postgres{_m}"] = _rds_family(_m)
    INSTANCE_DEFAULTS[f"aurora-postgresql{_m}"] = _aurora_instance_family(_m)
    CLUSTER_DEFAULTS[f"aurora-postgresql{_m}"] = _aurora_cluster_family(_m)


def instance_defaults(family: str | None) -> list[dict[str, Any]] | None:
    params = INSTANCE_DEFAULTS.get((family or "").lower())
    return copy.deepcopy(params) if params is not None else None


def cluster_defaults(family: str | None) -> list[dict[str, Any]] | None:
    params = CLUSTER_DEFAULTS.get((family or "").lower())
    return copy.deepcopy(params) if params is not None else None


def family_for(engine: str, engine_version: str) -> str:
    major = engine_version.split(".")[0]
    return f"{engine.lower()}{major}"


# ---------------------------------------------------------------------------------------------
# Engine versions (DescribeDBEngineVersions). A few minors per major; the last is the newest.
ENGINE_VERSIONS: dict[str, dict[int, list[str]]] = {
    "postgres": {
        14: ["14.10", "14.11", "14.12", "14.13", "14.15"],
        15: ["15.5", "15.6", "15.7", "15.8", "15.10"],
        16: ["16.1", "16.2", "16.3", "16.4", "16.6"],
        17: ["17.1", "17.2", "17.4"],
    },
    "aurora-postgresql": {
        14: ["14.9", "14.10", "14.11", "14.12", "14.13"],
        15: ["15.4", "15.5", "15.6", "15.7", "15.8"],
        16: ["16.1", "16.2", "16.3", "16.4", "16.6"],
        17: ["17.4", "17.5"],
    },
}

DEFAULT_INSTANCE_VERSION = "16.6"
DEFAULT_AURORA_VERSION = "16.6"


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".") if x.isdigit())


def engine_version_entries(engine: str) -> list[dict[str, Any]]:
    out = []
    majors = ENGINE_VERSIONS.get(engine, {})
    all_versions = sorted((v for vs in majors.values() for v in vs), key=_vkey)
    for major, versions in sorted(majors.items()):
        for v in versions:
            targets = []
            for t in all_versions:
                if _vkey(t) <= _vkey(v):
                    continue
                tmajor = int(t.split(".")[0])
                targets.append({
                    "Engine": engine,
                    "EngineVersion": t,
                    "Description": f"{'Aurora PostgreSQL' if engine.startswith('aurora') else 'PostgreSQL'} {t}",
                    "AutoUpgrade": False,
                    "IsMajorVersionUpgrade": tmajor != major,
                    "SupportsParallelQuery": False,
                    "SupportsGlobalDatabases": engine.startswith("aurora"),
                    "SupportsBabelfish": False,
                    "SupportsLocalWriteForwarding": False,
                    "SupportsIntegrations": False,
                    "SupportsLimitlessDatabase": False,
                })
            label = "Aurora PostgreSQL" if engine.startswith("aurora") else "PostgreSQL"
            out.append({
                "Engine": engine,
                "EngineVersion": v,
                "DBParameterGroupFamily": f"{engine}{major}",
                "DBEngineDescription": label,
                "DBEngineVersionDescription": f"{label} {v}",
                "MajorEngineVersion": str(major),
                "ValidUpgradeTarget": targets,
                "ExportableLogTypes": ["postgresql", "upgrade"] + (
                    ["iam-db-auth-error"] if major >= 14 else []),
                "SupportsLogExportsToCloudwatchLogs": True,
                "SupportsReadReplica": True,
                "SupportedFeatureNames": ["Lambda", "s3Export", "s3Import"],
                "Status": "available",
                "SupportsParallelQuery": False,
                "SupportsGlobalDatabases": engine.startswith("aurora"),
                "SupportsBabelfish": False,
                "SupportsCertificateRotationWithoutRestart": True,
                "SupportedCACertificateIdentifiers": [
                    "rds-ca-rsa2048-g1", "rds-ca-rsa4096-g1", "rds-ca-ecc384-g1",
                ],
                "SupportsLocalWriteForwarding": False,
                "SupportsIntegrations": False,
                "SupportsLimitlessDatabase": False,
            })
    return out


# ---------------------------------------------------------------------------------------------
# CA certificates (DescribeCertificates). rds-ca-2019 expired on 2024-08-22.
CERTIFICATES: list[dict[str, Any]] = [
    {
        "CertificateIdentifier": "rds-ca-2019",
        "CertificateType": "CA",
        "Thumbprint": "d40ddb29e3750dffa671c3140bbf5f478d1c8096",
        "ValidFrom": "2019-08-22T17:08:50Z",
        "ValidTill": "2024-08-22T17:08:50Z",
        "CustomerOverride": False,
    },
    {
        "CertificateIdentifier": "rds-ca-ecc384-g1",
        "CertificateType": "CA",
        "Thumbprint": "3f4e0bbcab2a7e8ea2a9e1c1e5cd1a51bb1bd4a1",
        "ValidFrom": "2021-05-21T23:06:38Z",
        "ValidTill": "2121-05-21T23:59:59Z",
        "CustomerOverride": False,
    },
    {
        "CertificateIdentifier": "rds-ca-rsa2048-g1",
        "CertificateType": "CA",
        "Thumbprint": "6b5b3c1f3c2bca3e4f0f9d7c3f2c8c2e0f7a0f7e",
        "ValidFrom": "2021-05-25T23:34:57Z",
        "ValidTill": "2061-05-25T23:59:59Z",
        "CustomerOverride": False,
    },
    {
        "CertificateIdentifier": "rds-ca-rsa4096-g1",
        "CertificateType": "CA",
        "Thumbprint": "1d9b0c8bd0b4e6f5d1a86e4b6a0a1e6f1f7e0b9c",
        "ValidFrom": "2021-05-25T23:38:23Z",
        "ValidTill": "2121-05-25T23:59:59Z",
        "CustomerOverride": False,
    },
]
DEFAULT_CA = "rds-ca-rsa2048-g1"
