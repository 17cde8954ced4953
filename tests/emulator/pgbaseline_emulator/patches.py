"""Fidelity patches applied to moto's RDS backend and responses before the server starts.

Each patch makes moto behave like AWS where pgbaseline depends on the behaviour; the README
lists them and tests/emulator/test_*.py has a test for each. Call ``apply()`` once, before the
first request is served.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import threading
from datetime import datetime, timezone
from typing import Any, Iterable

from moto.core.responses import ActionResult, EmptyResult
from moto.events.utils import EventTemplateParser
from moto.rds import models as rds_models
from moto.rds import responses as rds_responses
from moto.rds.exceptions import (
    DBClusterNotFoundError,
    DBParameterGroupAlreadyExistsError,
    DBParameterGroupNotFoundError,
    KMSKeyNotAccessibleFault,
    RDSClientError,
)

from . import catalogue
from .quotas import (
    DB_CLUSTER_PARAMETER_GROUPS,
    DB_CLUSTERS,
    DB_INSTANCES,
    DB_PARAMETER_GROUPS,
    QUOTAS,
)

RDSBackend = rds_models.RDSBackend
RDSResponse = rds_responses.RDSResponse
DBInstance = rds_models.DBInstance
DBInstanceClustered = rds_models.DBInstanceClustered
DBCluster = rds_models.DBCluster
DBParameterGroup = rds_models.DBParameterGroup
DBClusterParameterGroup = rds_models.DBClusterParameterGroup

POSTGRES_ENGINES = ("postgres", "aurora-postgresql")
# moto's instance endpoints are `<id>.aaaaaaaaaa.<region>.rds.amazonaws.com`.
INSTANCE_URL_IDENTIFIER = "aaaaaaaaaa"
# Characters RDS leaves out of the master passwords it generates (RDS user guide, "Password
# management with Amazon RDS and AWS Secrets Manager": no '/', '"', '@' or space).
_PASSWORD_ALPHABET = "".join(
    c for c in string.ascii_letters + string.digits + string.punctuation if c not in "/\"@ '"
)
IN_SYNC = "in-sync"
PENDING_REBOOT = "pending-reboot"
MAX_PARAMS_PER_MODIFY = 20

_applied = False

# Serialises "count, then create" for the quota-limited groups: werkzeug serves requests on
# parallel threads, and two concurrent creates must not both take the last slot.
_quota_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------
# errors


def _invalid_value(msg: str) -> RDSClientError:
    return RDSClientError("InvalidParameterValue", msg)


def _invalid_combination(msg: str) -> RDSClientError:
    return RDSClientError("InvalidParameterCombination", msg)


def _invalid_pg_state(msg: str) -> RDSClientError:
    return RDSClientError("InvalidDBParameterGroupState", msg)


def _cluster_pg_not_found(name: str) -> RDSClientError:
    return RDSClientError(
        "DBParameterGroupNotFound", f"DBClusterParameterGroup not found: {name}"
    )


def _pg_quota_exceeded() -> RDSClientError:
    # One code for both kinds: the RDS API model lists DBParameterGroupQuotaExceeded (HTTP 400)
    # for Create/Copy of DB parameter groups and of DB cluster parameter groups alike.
    return RDSClientError(
        "DBParameterGroupQuotaExceeded",
        "The request would result in the user exceeding the allowed number of DB parameter "
        "groups.",
    )


# ---------------------------------------------------------------------------------------------
# helpers


def _is_default_group(name: str | None) -> bool:
    return bool(name) and name.lower().startswith("default.")


_IDENT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,254}$")


def _validate_group_name(name: str | None, param: str) -> None:
    """AWS: parameter group names are 1-255 letters, digits and hyphens, start with a letter,
    don't end with a hyphen or contain two consecutive hyphens. So ``default.x`` is refused."""
    if not name or not _IDENT_RE.match(name) or name.endswith("-") or "--" in name:
        raise _invalid_value(
            f"The parameter {param} is not a valid identifier. Identifiers must begin with a "
            "letter; must contain only ASCII letters, digits, and hyphens; and must not end "
            "with a hyphen or contain two consecutive hyphens."
        )


def _random_resource_id(prefix: str) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return prefix + "".join(random.choice(alphabet) for _ in range(26))


def _paginate(items: list[Any], params: Any, default: int = 100) -> tuple[list[Any], str | None]:
    """AWS RDS paging: MaxRecords 20-100 (default 100), opaque Marker."""
    raw = params.get("MaxRecords")
    if raw is None:
        max_records = default
    else:
        try:
            max_records = int(raw)
        except (TypeError, ValueError):
            raise _invalid_value(f"Invalid value {raw} for MaxRecords. Must be between 20 and 100")
        if not 20 <= max_records <= 100:
            raise _invalid_value(
                f"Invalid value {max_records} for MaxRecords. Must be between 20 and 100"
            )
    start = 0
    marker = params.get("Marker")
    if marker:
        try:
            start = int(base64.urlsafe_b64decode(marker.encode()).decode().split(":", 1)[1])
        except Exception:  # noqa: BLE001
            raise _invalid_value(f"Invalid marker: {marker}")
    page = items[start : start + max_records]
    end = start + max_records
    next_marker = None
    if end < len(items):
        next_marker = base64.urlsafe_b64encode(f"pgb:{end}".encode()).decode()
    return page, next_marker


def _filters(params: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in params.get("Filters") or []:
        name = f.get("Name")
        values = f.get("Values") or []
        out.setdefault(name, []).extend(values)
    return out


def _raw_params(params: Any) -> list[dict[str, Any]]:
    out = []
    for p in params.get("Parameters") or []:
        out.append(p.original_dict() if hasattr(p, "original_dict") else dict(p))
    return out


def _group_family(group: Any) -> str | None:
    if isinstance(group, DBClusterParameterGroup):
        return group.db_parameter_group_family
    return group.family


def _catalogue_for(group: Any) -> list[dict[str, Any]] | None:
    fam = _group_family(group)
    if isinstance(group, DBClusterParameterGroup):
        return catalogue.cluster_defaults(fam)
    return catalogue.instance_defaults(fam)


def _effective_parameters(group: Any) -> list[dict[str, Any]]:
    """Engine defaults merged with the values set on the group (Source=user)."""
    defaults = _catalogue_for(group)
    user = group.parameters
    if defaults is None:
        return [dict({"ParameterName": n}, **v) for n, v in user.items()]
    out = []
    known = set()
    for p in defaults:
        name = p["ParameterName"]
        known.add(name)
        if name in user:
            u = user[name]
            if u.get("ParameterValue") is not None:
                p["ParameterValue"] = u["ParameterValue"]
            p["Source"] = "user"
            if u.get("ApplyMethod"):
                p["ApplyMethod"] = u["ApplyMethod"]
        out.append(p)
    for name, u in user.items():
        if name not in known:
            out.append(dict({"ParameterName": name}, **u))
    return out


def _check_value(p: dict[str, Any], value: str) -> bool:
    allowed = p.get("AllowedValues")
    if allowed is None:
        return True
    dtype = p.get("DataType")
    if dtype == "integer":
        if value.startswith("{") or value.startswith("LEAST(") or value.startswith("GREATEST("):
            return True  # formula
        m = re.fullmatch(r"(-?\d+)-(-?\d+)", allowed)
        try:
            iv = int(value)
        except ValueError:
            return False
        if m:
            return int(m.group(1)) <= iv <= int(m.group(2))
        return value in allowed.split(",")
    choices = [c.strip() for c in allowed.split(",")]
    if dtype == "list":
        items = [v.strip() for v in value.split(",") if v.strip()]
        return all(i in choices for i in items)
    return value in choices


def _validate_modify(group: Any, params: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """AWS ModifyDB(Cluster)ParameterGroup validation. Returns the normalised parameters."""
    if _is_default_group(group.name):
        raise _invalid_value(f"The parameter group {group.name} cannot be modified")
    if len(params) > MAX_PARAMS_PER_MODIFY:
        raise _invalid_value(
            f"A maximum of {MAX_PARAMS_PER_MODIFY} parameters can be modified in a single "
            f"request. {len(params)} parameters were specified."
        )
    if not params:
        raise _invalid_value("At least one parameter must be specified.")
    defaults = _catalogue_for(group)
    if defaults is None:  # a family we carry no catalogue for: moto's lenient behaviour
        return params
    by_name = {p["ParameterName"]: p for p in defaults}
    out = []
    for raw in params:
        name = raw.get("ParameterName")
        value = raw.get("ParameterValue")
        method = raw.get("ApplyMethod")
        cat = by_name.get(name)
        if cat is None:
            raise _invalid_value(f"Could not find parameter with name: {name}")
        if not cat["IsModifiable"]:
            raise _invalid_value(f"The parameter {name} cannot be modified.")
        if method is not None and method not in ("immediate", "pending-reboot"):
            raise _invalid_value(
                f"Invalid apply method: {method}. Valid values are immediate, pending-reboot."
            )
        if method is None:
            method = "immediate" if cat["ApplyType"] == "dynamic" else "pending-reboot"
        if method == "immediate" and cat["ApplyType"] == "static":
            raise _invalid_combination("cannot use immediate apply method for static parameter")
        if value is None or str(value) == "":
            raise _invalid_value(f"The parameter value for parameter {name} cannot be empty.")
        value = str(value)
        if not _check_value(cat, value):
            raise _invalid_value(
                f"Invalid parameter value: {value} for: {name} allowed values are: "
                f"{cat.get('AllowedValues')}"
            )
        out.append({"ParameterName": name, "ParameterValue": value, "ApplyMethod": method})
    return out


def _instances_on_group(backend: Any, name: str) -> list[Any]:
    lname = name.lower()
    return [
        db
        for db in backend.databases.values()
        if (getattr(db, "db_parameter_group_name", None) or "").lower() == lname
    ]


def _clusters_on_group(backend: Any, name: str) -> list[Any]:
    lname = name.lower()
    return [c for c in backend.clusters.values() if (c.parameter_group or "").lower() == lname]


def _mark_pending(backend: Any, group: Any) -> None:
    if isinstance(group, DBClusterParameterGroup):
        for cluster in _clusters_on_group(backend, group.name):
            for member in cluster._members:
                member._pgb_cpg_status = PENDING_REBOOT
    else:
        for db in _instances_on_group(backend, group.name):
            db._pgb_pg_status = PENDING_REBOOT


def _check_family(group: Any, engine: str, version: str, what: str = "instance") -> None:
    """AWS refuses a parameter group whose family doesn't match the engine major version."""
    want = catalogue.family_for(engine, version)
    have = (_group_family(group) or "").lower()
    if have and have != want:
        raise _invalid_combination(
            f"The parameter group {group.name} with DBParameterGroupFamily {have} can't be used "
            f"for this {what}. Use a parameter group with DBParameterGroupFamily {want}."
        )


def _resolve_kms_arn(backend: Any, key_id: str | None) -> str:
    if not key_id:
        kms = backend.kms
        kid = kms.get_key_id_from_alias("alias/aws/rds")
        return kms.describe_key(kid).arn
    try:
        return backend._validate_kms_key(key_id)
    except RDSClientError:
        raise
    except Exception:  # noqa: BLE001  (moto's KMS lookups raise assorted errors)
        raise KMSKeyNotAccessibleFault(key_id)


def _create_default_groups(backend: Any) -> None:
    for fam in catalogue.ALL_FAMILIES:
        name = f"default.{fam}"
        if name not in backend.db_parameter_groups:
            backend.db_parameter_groups[name] = DBParameterGroup(
                backend=backend,
                db_parameter_group_name=name,
                description=f"Default parameter group for {fam}",
                db_parameter_group_family=fam,
                tags=[],
            )
    for fam in catalogue.AURORA_FAMILIES:
        name = f"default.{fam}"
        if name not in backend.db_cluster_parameter_groups:
            backend.db_cluster_parameter_groups[name] = DBClusterParameterGroup(
                backend=backend,
                db_cluster_parameter_group_name=name,
                description=f"Default cluster parameter group for {fam}",
                db_parameter_group_family=fam,
                tags=[],
            )


def _custom_group_count(groups: Iterable[str]) -> int:
    """AWS (AccountQuota): the DBParameterGroups / DBClusterParameterGroups quotas exclude the
    default groups; Used is the count of non-default groups."""
    return sum(1 for name in groups if not _is_default_group(name))


def _quota_usage(backend: Any) -> dict[str, int]:
    """Live usage in one account and region (one moto backend)."""
    return {
        DB_INSTANCES: len(backend.databases),  # Aurora members count too, as on AWS
        DB_PARAMETER_GROUPS: _custom_group_count(backend.db_parameter_groups),
        DB_CLUSTERS: len(backend.clusters),
        DB_CLUSTER_PARAMETER_GROUPS: _custom_group_count(backend.db_cluster_parameter_groups),
    }


def _check_group_quota(groups: Iterable[str], quota: str) -> None:
    """Refuses one more custom group once the account+region holds the quota's maximum.
    Call it under ``_quota_lock``, right before the group is stored."""
    if _custom_group_count(groups) >= QUOTAS.max(quota):
        raise _pg_quota_exceeded()


def _iso(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------------------------------------
# backend patches

_orig_backend_init = RDSBackend.__init__
_orig_create_db_instance = RDSBackend.create_db_instance
_orig_create_db_cluster = RDSBackend.create_db_cluster
_orig_modify_db_instance = RDSBackend.modify_db_instance
_orig_modify_db_cluster = RDSBackend.modify_db_cluster
_orig_describe_db_instances = RDSBackend.describe_db_instances
_orig_describe_db_clusters = RDSBackend.describe_db_clusters


def _backend_init(self: Any, region_name: str, account_id: str) -> None:
    _orig_backend_init(self, region_name, account_id)
    _create_default_groups(self)


def _create_db_instance(self: Any, db_kwargs: Any) -> Any:
    engine = (db_kwargs.get("engine") or "").lower()
    cluster_id = db_kwargs.get("db_cluster_identifier")
    if engine in POSTGRES_ENGINES:
        if cluster_id is None:
            if not db_kwargs.get("engine_version"):
                db_kwargs["engine_version"] = catalogue.DEFAULT_INSTANCE_VERSION
            version = db_kwargs["engine_version"]
            if db_kwargs.get("storage_encrypted"):
                db_kwargs["kms_key_id"] = _resolve_kms_arn(self, db_kwargs.get("kms_key_id"))
        else:
            cluster = self.clusters.get(cluster_id)
            if cluster is None:
                raise DBClusterNotFoundError(
                    cluster_id,
                    f"The source cluster could not be found or cannot be accessed: {cluster_id}",
                )
            version = cluster.engine_version
            # AWS: "Amazon Aurora: not applicable. The port number is managed by the DB cluster."
            # (CreateDBInstance, Port); moto gives members the engine's default port.
            db_kwargs["port"] = cluster.port
        if not db_kwargs.get("db_parameter_group_name"):
            db_kwargs["db_parameter_group_name"] = (
                f"default.{catalogue.family_for(engine, version)}"
            )
        elif db_kwargs["db_parameter_group_name"] not in self.db_parameter_groups:
            raise DBParameterGroupNotFoundError(db_kwargs["db_parameter_group_name"])
        else:
            _check_family(self.db_parameter_groups[db_kwargs["db_parameter_group_name"]],
                          engine, version)
    if not db_kwargs.get("ca_certificate_identifier"):
        db_kwargs["ca_certificate_identifier"] = catalogue.DEFAULT_CA
    db = _orig_create_db_instance(self, db_kwargs)
    db.dbi_resource_id = _random_resource_id("db-")
    db._pgb_pg_status = IN_SYNC
    db._pgb_cpg_status = IN_SYNC
    return db


def _create_db_cluster(self: Any, kwargs: Any) -> Any:
    engine = (kwargs.get("engine") or "").lower()
    if engine == "aurora-postgresql":
        if not kwargs.get("engine_version"):
            kwargs["engine_version"] = catalogue.DEFAULT_AURORA_VERSION
        name = kwargs.get("db_cluster_parameter_group_name")
        if not name:
            kwargs["db_cluster_parameter_group_name"] = (
                f"default.{catalogue.family_for(engine, kwargs['engine_version'])}"
            )
        elif name not in self.db_cluster_parameter_groups:
            raise _cluster_pg_not_found(name)
        else:
            _check_family(self.db_cluster_parameter_groups[name], engine,
                          kwargs["engine_version"], "DB cluster")
        if kwargs.get("storage_encrypted"):
            kwargs["kms_key_id"] = _resolve_kms_arn(self, kwargs.get("kms_key_id"))
    cluster = _orig_create_db_cluster(self, kwargs)
    if engine == "aurora-postgresql" and not cluster.storage_encrypted:
        cluster.kms_key_id = None
    # AWS names a cluster's endpoints with the same per-account-and-region identifier as its
    # instances' (`<cluster>.cluster-<id>.<region>.rds.amazonaws.com`, `<member>.<id>.…`), so
    # one server certificate (`*.<id>.…`, `*.cluster-<id>.…`, `*.cluster-ro-<id>.…`) covers
    # them; moto picks a random identifier per cluster.
    cluster.url_identifier = INSTANCE_URL_IDENTIFIER
    return cluster


def _modify_db_instance(self: Any, db_instance_identifier: str, db_kwargs: Any) -> Any:
    db = self.describe_db_instances(db_instance_identifier)[0]
    new_group = db_kwargs.get("db_parameter_group_name")
    old_group = getattr(db, "db_parameter_group_name", None)
    ca = db_kwargs.get("ca_certificate_identifier")
    if ca and ca not in {c["CertificateIdentifier"] for c in catalogue.CERTIFICATES}:
        raise RDSClientError("CertificateNotFound", f"Certificate not found: {ca}")
    if new_group and db.engine in POSTGRES_ENGINES:
        if new_group not in self.db_parameter_groups:
            raise DBParameterGroupNotFoundError(new_group)
        version = db_kwargs.get("engine_version") or db.engine_version
        _check_family(self.db_parameter_groups[new_group], db.engine, version)
    result = _orig_modify_db_instance(self, db_instance_identifier, db_kwargs)
    if new_group and (old_group or "").lower() != new_group.lower():
        result._pgb_pg_status = PENDING_REBOOT
    return result


def _modify_db_cluster(self: Any, kwargs: Any) -> Any:
    cluster_id = kwargs["db_cluster_identifier"]
    if cluster_id not in self.clusters:
        raise DBClusterNotFoundError(cluster_id)
    cluster = self.clusters[cluster_id]
    iam = kwargs.pop("enable_iam_database_authentication", None)
    cwl = kwargs.pop("cloudwatch_logs_export_configuration", None)
    new_group = kwargs.get("db_cluster_parameter_group_name")
    old_group = cluster.parameter_group
    if new_group and new_group not in self.db_cluster_parameter_groups:
        raise _cluster_pg_not_found(new_group)
    if new_group and cluster.engine == "aurora-postgresql":
        version = kwargs.get("engine_version") or cluster.engine_version
        _check_family(self.db_cluster_parameter_groups[new_group], cluster.engine, version,
                      "DB cluster")
    if iam is not None:
        cluster.iam_auth = bool(iam)
    if cwl:
        current = list(cluster.enabled_cloudwatch_logs_exports or [])
        for t in cwl.get("DisableLogTypes") or []:
            if t in current:
                current.remove(t)
        for t in cwl.get("EnableLogTypes") or []:
            if t not in current:
                current.append(t)
        cluster.enabled_cloudwatch_logs_exports = current
    result = _orig_modify_db_cluster(self, kwargs)
    if new_group and (old_group or "").lower() != new_group.lower():
        for member in cluster._members:
            member._pgb_cpg_status = PENDING_REBOOT
    return result


def _be_describe_db_instances(self: Any, db_instance_identifier: str | None = None,
                           filters: Any = None) -> list[Any]:
    dbs = _orig_describe_db_instances(self, db_instance_identifier, filters=filters)
    return sorted(dbs, key=lambda d: d.db_instance_identifier)


def _be_describe_db_clusters(self: Any, db_cluster_identifier: str | None = None,
                          filters: Any = None) -> list[Any]:
    clusters = _orig_describe_db_clusters(self, db_cluster_identifier, filters=filters)
    return sorted(clusters, key=lambda c: c.db_cluster_identifier)


# ---------------------------------------------------------------------------------------------
# model patches


def _master_user_secret_string(self: Any) -> str:
    """AWS: the secret RDS creates for ManageMasterUserPassword holds the database's master user
    name and a password it generated, as `{"username": ..., "password": ...}` (moto: always
    admin / P@55w0rd!)."""
    rng = random.SystemRandom()
    return json.dumps({
        "username": self.resource.master_username,
        "password": "".join(rng.choice(_PASSWORD_ALPHABET) for _ in range(28)),
    })


def _db_parameter_group_status_list(self: Any) -> list[dict[str, str]]:
    name = getattr(self, "db_parameter_group_name", None)
    if not name:
        name = self.db_parameter_groups()[0].name
    return [{
        "DBParameterGroupName": name,
        "ParameterApplyStatus": getattr(self, "_pgb_pg_status", IN_SYNC),
    }]


def _db_cluster_members(self: Any) -> list[dict[str, Any]]:
    return [
        {
            "DBInstanceIdentifier": m.db_instance_identifier,
            "IsClusterWriter": m.is_cluster_writer,
            "DBClusterParameterGroupStatus": getattr(m, "_pgb_cpg_status", IN_SYNC),
            "PromotionTier": m.promotion_tier,
        }
        for m in self.members
    ]


def _certificate_details(self: Any) -> dict[str, Any] | None:
    ca = getattr(self, "ca_certificate_identifier", None)
    for c in catalogue.CERTIFICATES:
        if c["CertificateIdentifier"] == ca:
            return {"CAIdentifier": ca, "ValidTill": _iso(c["ValidTill"])}
    return None


def _clustered_iam(self: Any) -> bool:
    return self.cluster.iam_database_authentication_enabled


def _clustered_exports_get(self: Any) -> list[str]:
    return list(self.cluster.enabled_cloudwatch_logs_exports or [])


def _clustered_exports_set(self: Any, value: Any) -> None:
    self.__dict__["_pgb_own_exports"] = value


def _clustered_subnet_group_get(self: Any) -> Any:
    own = self.__dict__.get("_pgb_own_subnet_group")
    if own is not None:
        return own
    name = getattr(self.cluster, "db_subnet_group_name", None)
    return self.backend.subnet_groups.get(name) if name else None


def _clustered_subnet_group_set(self: Any, value: Any) -> None:
    self.__dict__["_pgb_own_subnet_group"] = value


def _clustered_deletion_protection_get(self: Any) -> bool:
    return bool(self.cluster.deletion_protection)


def _clustered_deletion_protection_set(self: Any, value: Any) -> None:
    self.__dict__["_pgb_own_deletion_protection"] = value


# ---------------------------------------------------------------------------------------------
# response patches (one method per RDS action)


def _create_db_parameter_group(self: Any) -> ActionResult:
    name = self.params.get("DBParameterGroupName")
    _validate_group_name(name, "DBParameterGroupName")
    groups = self.backend.db_parameter_groups
    with _quota_lock:
        # An existing name stays DBParameterGroupAlreadyExists (moto raises it) even at the
        # quota: clients retrying an interrupted create rely on that code.
        if name not in groups:
            _check_group_quota(groups, DB_PARAMETER_GROUPS)
        group = self.backend.create_db_parameter_group(self.params)
    return ActionResult({"DBParameterGroup": group})


def _create_db_cluster_parameter_group(self: Any) -> ActionResult:
    name = self.params.get("DBClusterParameterGroupName")
    _validate_group_name(name, "DBClusterParameterGroupName")
    groups = self.backend.db_cluster_parameter_groups
    with _quota_lock:
        if name not in groups:  # AlreadyExists first, as for DB parameter groups
            _check_group_quota(groups, DB_CLUSTER_PARAMETER_GROUPS)
        group = self.backend.create_db_cluster_parameter_group(
            db_cluster_parameter_group_name=name,
            db_parameter_group_family=self.params.get("DBParameterGroupFamily"),
            description=self.params.get("Description"),
            tags=self.params.get("Tags", []),
        )
    return ActionResult({"DBClusterParameterGroup": group})


def _source_name(identifier: str) -> str:
    if identifier and identifier.startswith("arn:"):
        return identifier.split(":")[-1]
    return identifier


def _copy_group(self: Any, cluster: bool) -> Any:
    """CopyDB(Cluster)ParameterGroup: the set values and the request's tags, within the quota."""
    kind = "DBClusterParameterGroup" if cluster else "DBParameterGroup"
    source = _source_name(self.params.get(f"Source{kind}Identifier"))
    target = self.params.get(f"Target{kind}Identifier")
    _validate_group_name(target, f"Target{kind}Identifier")
    backend = self.backend
    groups = backend.db_cluster_parameter_groups if cluster else backend.db_parameter_groups
    with _quota_lock:
        if source not in groups:
            raise _cluster_pg_not_found(source) if cluster else DBParameterGroupNotFoundError(source)
        if target in groups:
            raise DBParameterGroupAlreadyExistsError(target)
        _check_group_quota(groups, DB_CLUSTER_PARAMETER_GROUPS if cluster else DB_PARAMETER_GROUPS)
        src = groups[source]
        description = self.params.get(f"Target{kind}Description")
        tags = self.params.get("Tags", [])
        if cluster:
            new = DBClusterParameterGroup(
                backend=backend, db_cluster_parameter_group_name=target, description=description,
                db_parameter_group_family=src.db_parameter_group_family, tags=tags)
        else:
            new = DBParameterGroup(
                backend=backend, db_parameter_group_name=target, description=description,
                db_parameter_group_family=src.family, tags=tags)
        for name, values in src.parameters.items():
            new.parameters[name] = dict(values)
        groups[target] = new
    return new


def _copy_db_parameter_group(self: Any) -> ActionResult:
    return ActionResult({"DBParameterGroup": _copy_group(self, cluster=False)})


def _copy_db_cluster_parameter_group(self: Any) -> ActionResult:
    return ActionResult({"DBClusterParameterGroup": _copy_group(self, cluster=True)})


def _apply_modify(backend: Any, group: Any, params: list[dict[str, Any]]) -> None:
    clean = _validate_modify(group, params)
    needs_reboot = False
    for p in clean:
        stored = group.parameters[p["ParameterName"]]
        stored.update(p)
        if p.get("ApplyMethod") == "pending-reboot":
            needs_reboot = True
    if needs_reboot:
        _mark_pending(backend, group)


def _modify_db_parameter_group(self: Any) -> ActionResult:
    name = self.params.get("DBParameterGroupName")
    if name not in self.backend.db_parameter_groups:
        raise DBParameterGroupNotFoundError(name)
    group = self.backend.db_parameter_groups[name]
    _apply_modify(self.backend, group, _raw_params(self.params))
    return ActionResult({"DBParameterGroupName": group.name})


def _modify_db_cluster_parameter_group(self: Any) -> ActionResult:
    name = self.params.get("DBClusterParameterGroupName")
    if name not in self.backend.db_cluster_parameter_groups:
        raise _cluster_pg_not_found(name)
    group = self.backend.db_cluster_parameter_groups[name]
    _apply_modify(self.backend, group, _raw_params(self.params))
    return ActionResult({"DBClusterParameterGroupName": group.name})


def _apply_reset(backend: Any, group: Any, params: Any) -> None:
    if _is_default_group(group.name):
        raise _invalid_value(f"The parameter group {group.name} cannot be modified")
    reset_all = bool(params.get("ResetAllParameters"))
    names = [p.get("ParameterName") for p in _raw_params(params)]
    if not reset_all and not names:
        raise _invalid_value("At least one parameter must be specified.")
    defaults = {p["ParameterName"]: p for p in (_catalogue_for(group) or [])}
    targets = list(group.parameters.keys()) if reset_all else names
    needs_reboot = False
    for n in targets:
        if defaults and n not in defaults:
            raise _invalid_value(f"Could not find parameter with name: {n}")
    for n in targets:
        if n in group.parameters:
            if defaults.get(n, {}).get("ApplyType") == "static":
                needs_reboot = True
            del group.parameters[n]
    if needs_reboot or reset_all:
        _mark_pending(backend, group)


def _reset_db_parameter_group(self: Any) -> ActionResult:
    name = self.params.get("DBParameterGroupName")
    if name not in self.backend.db_parameter_groups:
        raise DBParameterGroupNotFoundError(name)
    group = self.backend.db_parameter_groups[name]
    _apply_reset(self.backend, group, self.params)
    return ActionResult({"DBParameterGroupName": group.name})


def _reset_db_cluster_parameter_group(self: Any) -> ActionResult:
    name = self.params.get("DBClusterParameterGroupName")
    if name not in self.backend.db_cluster_parameter_groups:
        raise _cluster_pg_not_found(name)
    group = self.backend.db_cluster_parameter_groups[name]
    _apply_reset(self.backend, group, self.params)
    return ActionResult({"DBClusterParameterGroupName": group.name})


def _delete_db_parameter_group(self: Any) -> ActionResult:
    name = self.params.get("DBParameterGroupName")
    backend = self.backend
    if name not in backend.db_parameter_groups:
        raise DBParameterGroupNotFoundError(name)
    if _is_default_group(name):
        raise _invalid_value(f"The parameter group {name.lower()} cannot be deleted")
    if _instances_on_group(backend, name):
        raise _invalid_pg_state(
            f"One or more database instances are still members of this parameter group "
            f"{name.lower()}, so the group cannot be deleted"
        )
    backend.db_parameter_groups.pop(name)
    return EmptyResult()


def _delete_db_cluster_parameter_group(self: Any) -> ActionResult:
    name = self.params.get("DBClusterParameterGroupName")
    backend = self.backend
    if name not in backend.db_cluster_parameter_groups:
        raise _cluster_pg_not_found(name)
    if _is_default_group(name):
        raise _invalid_value(f"The parameter group {name.lower()} cannot be deleted")
    if _clusters_on_group(backend, name):
        raise _invalid_pg_state(
            f"One or more DB clusters are still members of this parameter group "
            f"{name.lower()}, so the group cannot be deleted"
        )
    backend.db_cluster_parameter_groups.pop(name)
    return EmptyResult()


def _select_parameters(params_in: Any, parameters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    source = params_in.get("Source")
    if source:
        if source not in ("user", "system", "engine-default"):
            raise _invalid_value(
                f"Invalid value {source} for Source. Valid values are: user, system, "
                "engine-default"
            )
        parameters = [p for p in parameters if p.get("Source") == source]
    for fname, values in _filters(params_in).items():
        if fname == "parameter-name":
            wanted = set(values)
            parameters = [p for p in parameters if p["ParameterName"] in wanted]
        elif fname == "apply-type":
            parameters = [p for p in parameters if p.get("ApplyType") in set(values)]
        elif fname == "apply-method":
            parameters = [p for p in parameters if p.get("ApplyMethod") in set(values)]
        elif fname == "is-modifiable":
            wanted_b = {v.lower() == "true" for v in values}
            parameters = [p for p in parameters if p.get("IsModifiable") in wanted_b]
        else:
            raise _invalid_value(f"Unrecognized filter name: {fname}")
    return parameters


def _describe_db_parameters(self: Any) -> ActionResult:
    name = self.params.get("DBParameterGroupName")
    if name not in self.backend.db_parameter_groups:
        raise DBParameterGroupNotFoundError(name)
    group = self.backend.db_parameter_groups[name]
    params = _select_parameters(self.params, _effective_parameters(group))
    page, marker = _paginate(params, self.params)
    return ActionResult({"Parameters": page, "Marker": marker})


def _describe_db_cluster_parameters(self: Any) -> ActionResult:
    name = self.params.get("DBClusterParameterGroupName")
    if name not in self.backend.db_cluster_parameter_groups:
        raise _cluster_pg_not_found(name)
    group = self.backend.db_cluster_parameter_groups[name]
    params = _select_parameters(self.params, _effective_parameters(group))
    page, marker = _paginate(params, self.params)
    return ActionResult({"Parameters": page, "Marker": marker})


def _describe_engine_default_parameters(self: Any) -> ActionResult:
    family = self.params.get("DBParameterGroupFamily")
    params = catalogue.instance_defaults(family)
    if params is None:
        raise _invalid_value(f"Invalid DB parameter group family: {family}")
    params = _select_parameters(self.params, params)
    page, marker = _paginate(params, self.params)
    return ActionResult({"EngineDefaults": {
        "DBParameterGroupFamily": family, "Marker": marker, "Parameters": page}})


def _describe_engine_default_cluster_parameters(self: Any) -> ActionResult:
    family = self.params.get("DBParameterGroupFamily")
    params = catalogue.cluster_defaults(family)
    if params is None:
        raise _invalid_value(f"Invalid DB cluster parameter group family: {family}")
    params = _select_parameters(self.params, params)
    page, marker = _paginate(params, self.params)
    return ActionResult({"EngineDefaults": {
        "DBParameterGroupFamily": family, "Marker": marker, "Parameters": page}})


def _describe_db_engine_versions(self: Any) -> ActionResult:
    engine = self.params.get("Engine")
    version = self.params.get("EngineVersion")
    family = self.params.get("DBParameterGroupFamily")
    default_only = bool(self.params.get("DefaultOnly"))
    engines = [engine] if engine else list(catalogue.ENGINE_VERSIONS)
    entries: list[dict[str, Any]] = []
    for e in engines:
        entries.extend(catalogue.engine_version_entries(e))
    if version:
        if "." in version:
            entries = [x for x in entries if x["EngineVersion"] == version]
        else:
            entries = [x for x in entries if x["MajorEngineVersion"] == version]
    if family:
        entries = [x for x in entries if x["DBParameterGroupFamily"] == family]
    for fname, values in _filters(self.params).items():
        if fname == "engine":
            entries = [x for x in entries if x["Engine"] in values]
        elif fname == "engine-version":
            entries = [x for x in entries if x["EngineVersion"] in values]
        elif fname == "status":
            entries = [x for x in entries if x["Status"] in values]
    if default_only:
        picked = {}
        for x in entries:
            if version:
                key = x["Engine"]
                picked[key] = x  # newest matching minor
            elif x["EngineVersion"] == (
                catalogue.DEFAULT_AURORA_VERSION if x["Engine"].startswith("aurora")
                else catalogue.DEFAULT_INSTANCE_VERSION
            ):
                picked[x["Engine"]] = x
        entries = list(picked.values())
    page, marker = _paginate(entries, self.params)
    return ActionResult({"DBEngineVersions": page, "Marker": marker})


def _describe_certificates(self: Any) -> ActionResult:
    ident = self.params.get("CertificateIdentifier")
    certs = []
    for c in catalogue.CERTIFICATES:
        d = dict(c)
        d["ValidFrom"] = _iso(c["ValidFrom"])
        d["ValidTill"] = _iso(c["ValidTill"])
        d["CertificateArn"] = (
            f"arn:aws:rds:{self.region}::cert:{c['CertificateIdentifier']}"
        )
        certs.append(d)
    if ident:
        certs = [c for c in certs if c["CertificateIdentifier"] == ident]
        if not certs:
            raise RDSClientError("CertificateNotFound", f"Certificate {ident} not found.")
    page, marker = _paginate(certs, self.params)
    return ActionResult({
        "DefaultCertificateForNewLaunches": catalogue.DEFAULT_CA,
        "Certificates": page,
        "Marker": marker,
    })


def _reboot_db_instance(self: Any) -> ActionResult:
    ident = self.params.get("DBInstanceIdentifier")
    db = self.backend.describe_db_instances(ident)[0]
    db._pgb_pg_status = IN_SYNC
    db._pgb_cpg_status = IN_SYNC
    return ActionResult({"DBInstance": db})


def _reboot_db_cluster(self: Any) -> ActionResult:
    ident = self.params.get("DBClusterIdentifier")
    if ident not in self.backend.clusters:
        raise DBClusterNotFoundError(ident)
    cluster = self.backend.clusters[ident]
    for m in cluster._members:
        m._pgb_pg_status = IN_SYNC
        m._pgb_cpg_status = IN_SYNC
    return ActionResult({"DBCluster": cluster})


def _describe_db_clusters(self: Any) -> ActionResult:
    _id = self.params.get("DBClusterIdentifier")
    filters = self.params.get("Filters", [])
    filter_dict = {f["Name"]: f["Values"] for f in filters}
    clusters = self.backend.describe_db_clusters(db_cluster_identifier=_id, filters=filter_dict)
    page, marker = _paginate(clusters, self.params)
    return ActionResult({"DBClusters": page, "Marker": marker})


def _describe_db_instances(self: Any) -> ActionResult:
    _id = self.params.get("DBInstanceIdentifier")
    filters = self.params.get("Filters", [])
    filter_dict = {f["Name"]: f["Values"] for f in filters}
    dbs = self.backend.describe_db_instances(_id, filters=filter_dict)
    page, marker = _paginate(dbs, self.params)
    return ActionResult({"DBInstances": page, "Marker": marker})


def _describe_db_parameter_groups(self: Any) -> ActionResult:
    """AWS: a name that does not exist is `DBParameterGroupNotFound` (moto: an empty list)."""
    name = self.params.get("DBParameterGroupName")
    groups = self.backend.db_parameter_groups
    if name and name not in groups:
        raise DBParameterGroupNotFoundError(name)
    selected = [groups[name]] if name else [groups[k] for k in sorted(groups)]
    page, marker = _paginate(selected, self.params)
    return ActionResult({"DBParameterGroups": page, "Marker": marker})


def _describe_db_cluster_parameter_groups(self: Any) -> ActionResult:
    groups = self.backend.describe_db_cluster_parameter_groups(
        group_name=self.params.get("DBClusterParameterGroupName")
    )
    page, marker = _paginate(groups, self.params)
    return ActionResult({"DBClusterParameterGroups": page, "Marker": marker})


def _describe_account_attributes(self: Any) -> ActionResult:
    """AWS: the account's RDS quotas in this region, each with its live usage (moto: HTTP 500).
    Serialised from the RDS model as DescribeAccountAttributesResult/AccountQuotas/AccountQuota,
    the shape boto3 and aws-sdk-rust parse."""
    usage = _quota_usage(self.backend)
    maxima = QUOTAS.as_dict()
    return ActionResult({"AccountQuotas": [
        {"AccountQuotaName": name, "Used": used, "Max": maxima[name]}
        for name, used in usage.items()
    ]})


def _describe_pending_maintenance_actions(self: Any) -> ActionResult:
    """No maintenance is ever pending in the emulator: an empty, well-formed answer (moto: 500,
    which SDKs retry as a server error)."""
    _paginate([], self.params)  # validates MaxRecords / Marker like AWS
    return ActionResult({"PendingMaintenanceActions": [], "Marker": None})


RESPONSE_PATCHES = {
    "describe_account_attributes": _describe_account_attributes,
    "describe_pending_maintenance_actions": _describe_pending_maintenance_actions,
    "create_db_parameter_group": _create_db_parameter_group,
    "create_db_cluster_parameter_group": _create_db_cluster_parameter_group,
    "copy_db_parameter_group": _copy_db_parameter_group,
    "copy_db_cluster_parameter_group": _copy_db_cluster_parameter_group,
    "modify_db_parameter_group": _modify_db_parameter_group,
    "modify_db_cluster_parameter_group": _modify_db_cluster_parameter_group,
    "reset_db_parameter_group": _reset_db_parameter_group,
    "reset_db_cluster_parameter_group": _reset_db_cluster_parameter_group,
    "delete_db_parameter_group": _delete_db_parameter_group,
    "delete_db_cluster_parameter_group": _delete_db_cluster_parameter_group,
    "describe_db_parameters": _describe_db_parameters,
    "describe_db_cluster_parameters": _describe_db_cluster_parameters,
    "describe_engine_default_parameters": _describe_engine_default_parameters,
    "describe_engine_default_cluster_parameters": _describe_engine_default_cluster_parameters,
    "describe_db_engine_versions": _describe_db_engine_versions,
    "describe_certificates": _describe_certificates,
    "reboot_db_instance": _reboot_db_instance,
    "reboot_db_cluster": _reboot_db_cluster,
    "describe_db_clusters": _describe_db_clusters,
    "describe_db_instances": _describe_db_instances,
    "describe_db_cluster_parameter_groups": _describe_db_cluster_parameter_groups,
    "describe_db_parameter_groups": _describe_db_parameter_groups,
}


_EVENT_TEMPLATE_WITH_ACCOUNT = (
    '{"version": "0", "id": "<id>", "detail-type": "<detail-type>", "source": "<source>", '
    '"account": "<account>", "time": <time>, "region": "<region>", "resources": <resources>, '
    '"detail": <detail>}'
)


def apply() -> None:
    """Install every patch. Idempotent."""
    global _applied
    if _applied:
        return
    _applied = True

    RDSBackend.__init__ = _backend_init
    RDSBackend.create_db_instance = _create_db_instance
    RDSBackend.create_db_cluster = _create_db_cluster
    RDSBackend.modify_db_instance = _modify_db_instance
    RDSBackend.modify_db_cluster = _modify_db_cluster
    RDSBackend.describe_db_instances = _be_describe_db_instances
    RDSBackend.describe_db_clusters = _be_describe_db_clusters

    rds_models.MasterUserSecret._generate_secret_string = _master_user_secret_string
    DBInstance.db_parameter_group_status_list = property(_db_parameter_group_status_list)
    DBInstance.certificate_details = property(_certificate_details)
    DBCluster.db_cluster_members = property(_db_cluster_members)
    DBInstanceClustered.iam_database_authentication_enabled = property(_clustered_iam)
    DBInstanceClustered.enabled_cloudwatch_logs_exports = property(
        _clustered_exports_get, _clustered_exports_set
    )
    DBInstanceClustered.db_subnet_group = property(
        _clustered_subnet_group_get, _clustered_subnet_group_set
    )
    DBInstanceClustered.deletion_protection = property(
        _clustered_deletion_protection_get, _clustered_deletion_protection_set
    )

    for name, fn in RESPONSE_PATCHES.items():
        setattr(RDSResponse, name, fn)

    # EventBridge delivers the whole event to a target without an input transformer, "account"
    # included (the drift consumer ignores events of accounts it does not watch); moto's default
    # template drops it.
    EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE = _EVENT_TEMPLATE_WITH_ACCOUNT
