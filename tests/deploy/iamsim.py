"""A small IAM policy evaluator and the authorization requests AWS makes for the calls pgbaseline
issues. moto evaluates actions only (every request is checked against Resource "*" and no
condition keys), so resource ARNs and conditions of deploy/iam-policy.json are checked here,
following the Service Authorization Reference ("Actions, resources, and condition keys for Amazon
RDS"):

- rds:CopyDB[Cluster]ParameterGroup: resource pg*/cluster-pg* (source and target), condition keys
  aws:RequestTag/${TagKey}, aws:TagKeys; dependent action rds:AddTagsToResource (on the target).
- rds:ModifyDB[Cluster]ParameterGroup, rds:DeleteDB[Cluster]ParameterGroup: pg* / cluster-pg*.
- rds:ModifyDBInstance: db* (and pg when DBParameterGroupName is given), condition key
  rds:ManageMasterUserPassword; with ManageMasterUserPassword=true also secretsmanager:CreateSecret,
  secretsmanager:TagResource (the RDS-owned secret `rds!...`) and kms:DescribeKey (the
  aws/secretsmanager key) per the RDS user guide, "Permissions required for Secrets Manager
  integration".
- rds:ModifyDBCluster: cluster* (and cluster-pg when DBClusterParameterGroupName is given, pg when
  DBInstanceParameterGroupName is); same secret rules. rds:RebootDBInstance: db*.
  ec2:RevokeSecurityGroupIngress: security-group*.
- rds:ListTagsForResource: the resource named by ResourceName (an ARN).
- Every RDS resource carries its tags as condition keys (the resource types table):
  aws:ResourceTag/${TagKey} and the RDS spelling, rds:pg-tag/${TagKey} on pg,
  rds:cluster-pg-tag/${TagKey} on cluster-pg, rds:db-tag/${TagKey} on db,
  rds:cluster-tag/${TagKey} on cluster. A resource being created has no tags yet.

Resource tags come from a `tags` mapping (ARN -> {key: value}); `TagState` keeps that mapping
while replaying a sequence of calls (a copy with Tags tags its target, a delete forgets it).
"""
from __future__ import annotations

import base64
import fnmatch
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

ACCOUNT = "123456789012"
REGION = "us-east-1"
SECRETS_MANAGER_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-aws-secretsmanager"


@dataclass
class AuthRequest:
    action: str
    resource: str
    context: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.action} on {self.resource} {self.context or ''}"


def _match(pattern: str, value: str) -> bool:
    # IAM wildcards: * and ?, case-sensitive for resources, case-insensitive for actions.
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _as_list(v):
    return v if isinstance(v, list) else [v]


def _condition_holds(op: str, key: str, expected, context: dict) -> bool:
    expected = [str(x).lower() if op.endswith(("Bool", "Null")) else str(x) for x in _as_list(expected)]
    qualifier, _, base = op.rpartition(":")
    present = key in context
    actual = context.get(key)
    if base == "Null":
        return ("true" if not present else "false") in expected
    if qualifier == "ForAllValues":
        values = _as_list(actual) if present else []
        return all(_single(base, v, expected) for v in values)
    if qualifier == "ForAnyValue":
        values = _as_list(actual) if present else []
        return any(_single(base, v, expected) for v in values)
    if not present:
        # A missing key fails every operator but the negated ones, which it satisfies (IAM:
        # "StringNotEquals" on an absent key is true).
        return base in NEGATED
    if base in NEGATED:
        return all(_single(base, v, expected) for v in _as_list(actual))
    return any(_single(base, v, expected) for v in _as_list(actual))


NEGATED = ("StringNotEquals", "StringNotLike")


def _single(op: str, value, expected: list) -> bool:
    value = str(value).lower() if isinstance(value, bool) else str(value)
    if op == "StringEquals" or op == "Bool":
        return value in expected
    if op == "StringLike":
        return any(_match(e, value) for e in expected)
    if op == "StringNotEquals":
        return value not in expected
    if op == "StringNotLike":
        return not any(_match(e, value) for e in expected)
    raise NotImplementedError(op)


def _statement_applies(stmt: dict, req: AuthRequest) -> bool:
    actions = _as_list(stmt.get("Action", []))
    if not any(_match(a.lower(), req.action.lower()) for a in actions):
        return False
    if not any(_match(r, req.resource) for r in _as_list(stmt.get("Resource", []))):
        return False
    for op, keys in stmt.get("Condition", {}).items():
        for key, expected in keys.items():
            if not _condition_holds(op, key, expected, req.context):
                return False
    return True


def allowed(policies: list[dict], req: AuthRequest) -> bool:
    statements = [s for p in policies for s in _as_list(p["Statement"])]
    if any(s["Effect"] == "Deny" and _statement_applies(s, req) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and _statement_applies(s, req) for s in statements)


def _rds(kind: str, name: str) -> str:
    if name.startswith("arn:"):
        return name
    return f"arn:aws:rds:{REGION}:{ACCOUNT}:{kind}:{name}"


def _tags(params: dict) -> dict:
    ctx: dict = {}
    keys = []
    i = 1
    while f"Tags.Tag.{i}.Key" in params or f"Tags.member.{i}.Key" in params:
        k = params.get(f"Tags.Tag.{i}.Key", params.get(f"Tags.member.{i}.Key"))
        v = params.get(f"Tags.Tag.{i}.Value", params.get(f"Tags.member.{i}.Value", ""))
        ctx[f"aws:RequestTag/{k}"] = v
        keys.append(k)
        i += 1
    if keys:
        ctx["aws:TagKeys"] = keys
    return ctx


def _secret(params: dict, kind: str) -> list[AuthRequest]:
    if params.get("ManageMasterUserPassword", "").lower() != "true":
        return []
    secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!{kind}-0a1b2c3d-AbCdEf"
    return [AuthRequest("secretsmanager:CreateSecret", secret),
            AuthRequest("secretsmanager:TagResource", secret),
            AuthRequest("kms:DescribeKey", SECRETS_MANAGER_KEY)]


# The RDS-specific resource tag key of each resource type (Service Authorization Reference,
# resource types table; RDS user guide, "Specifying conditions: Using custom tags").
RDS_TAG_KEY = {"pg": "rds:pg-tag", "cluster-pg": "rds:cluster-pg-tag", "db": "rds:db-tag",
               "cluster": "rds:cluster-tag"}


def _kind(arn: str) -> str:
    parts = arn.split(":")
    return parts[5] if len(parts) > 6 and parts[2] == "rds" else ""


def resource_context(arn: str, tags: dict | None) -> dict:
    """The condition keys a resource contributes: its tags, in both spellings."""
    ctx = {}
    for k, v in ((tags or {}).get(arn) or {}).items():
        ctx[f"aws:ResourceTag/{k}"] = v
        if _kind(arn) in RDS_TAG_KEY:
            ctx[f"{RDS_TAG_KEY[_kind(arn)]}/{k}"] = v
    return ctx


def auth_requests(action: str, params: dict, tags: dict | None = None) -> list[AuthRequest]:
    """What IAM authorizes for one API call (service-qualified action, form parameters), with the
    resources' tags from `tags` (ARN -> {key: value}; absent: untagged)."""
    service, _, op = action.partition(":")

    def on(act: str, arn: str, request_ctx: dict | None = None, exists: bool = True) -> AuthRequest:
        ctx = dict(request_ctx or {})
        if exists:
            ctx.update(resource_context(arn, tags))
        return AuthRequest(act, arn, ctx)

    if service == "rds" and op in ("CopyDBParameterGroup", "CopyDBClusterParameterGroup"):
        kind = "pg" if op == "CopyDBParameterGroup" else "cluster-pg"
        p = "DB" if kind == "pg" else "DBCluster"
        ctx = _tags(params)
        src = _rds(kind, params[f"Source{p}ParameterGroupIdentifier"])
        dst = _rds(kind, params[f"Target{p}ParameterGroupIdentifier"])
        # The target does not exist yet: no resource tags, only the request's.
        reqs = [on(action, src, ctx), on(action, dst, ctx, exists=False)]
        if ctx:
            reqs.append(on("rds:AddTagsToResource", dst, ctx, exists=False))
        return reqs
    if service == "rds" and op in ("ModifyDBParameterGroup", "DeleteDBParameterGroup", "ResetDBParameterGroup"):
        return [on(action, _rds("pg", params["DBParameterGroupName"]))]
    if service == "rds" and op in ("ModifyDBClusterParameterGroup", "DeleteDBClusterParameterGroup",
                                   "ResetDBClusterParameterGroup"):
        return [on(action, _rds("cluster-pg", params["DBClusterParameterGroupName"]))]
    if service == "rds" and op in ("AddTagsToResource", "RemoveTagsFromResource"):
        ctx = _tags(params)
        if op == "RemoveTagsFromResource":
            keys = [v for k, v in sorted(params.items()) if k.startswith("TagKeys.")]
            ctx = {"aws:TagKeys": keys} if keys else {}
        return [on(action, params["ResourceName"], ctx)]
    if service == "rds" and op == "ListTagsForResource":
        return [on(action, params["ResourceName"])]
    if service == "rds" and op in ("ModifyDBInstance", "ModifyDBCluster", "RebootDBInstance"):
        instance = op != "ModifyDBCluster"
        ident = params["DBInstanceIdentifier"] if instance else params["DBClusterIdentifier"]
        ctx = {}
        if "ManageMasterUserPassword" in params:
            ctx["rds:ManageMasterUserPassword"] = params["ManageMasterUserPassword"].lower() == "true"
        reqs = [on(action, _rds("db" if instance else "cluster", ident), ctx)]
        if instance and params.get("DBParameterGroupName"):
            reqs.append(on(action, _rds("pg", params["DBParameterGroupName"]), ctx))
        if not instance and params.get("DBClusterParameterGroupName"):
            reqs.append(on(action, _rds("cluster-pg", params["DBClusterParameterGroupName"]), ctx))
        if not instance and params.get("DBInstanceParameterGroupName"):
            reqs.append(on(action, _rds("pg", params["DBInstanceParameterGroupName"]), ctx))
        return reqs + _secret(params, "db" if instance else "cluster")
    if action == "ec2:RevokeSecurityGroupIngress":
        return [AuthRequest(action, f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/{params['GroupId']}")]
    # Reads: Describe*/List* (resource "*" or the listed resource types).
    return [AuthRequest(action, "*")]


class TagState:
    """Resource tags while a sequence of calls is replayed: `requests` authorizes one call against
    the tags as they are before it, then applies its effect (the copy's or the create's Tags on the
    new group, AddTagsToResource/RemoveTagsFromResource, a delete forgetting the group). Calls are
    assumed to have succeeded."""

    def __init__(self, initial: dict | None = None) -> None:
        self.tags: dict[str, dict[str, str]] = {k: dict(v) for k, v in (initial or {}).items()}

    def requests(self, action: str, params: dict) -> list[AuthRequest]:
        reqs = auth_requests(action, params, self.tags)
        self._apply(action, params)
        return reqs

    def _apply(self, action: str, params: dict) -> None:
        service, _, op = action.partition(":")
        if service != "rds":
            return
        request_tags = {k.split("/", 1)[1]: v for k, v in _tags(params).items() if k.startswith("aws:RequestTag/")}
        if op in ("CopyDBParameterGroup", "CopyDBClusterParameterGroup", "CreateDBParameterGroup",
                  "CreateDBClusterParameterGroup"):
            kind = "pg" if "DBParameterGroup" in op and "Cluster" not in op else "cluster-pg"
            p = "DB" if kind == "pg" else "DBCluster"
            name = params.get(f"Target{p}ParameterGroupIdentifier") or params.get(f"{p}ParameterGroupName")
            self.tags[_rds(kind, name)] = request_tags
        elif op == "AddTagsToResource":
            self.tags.setdefault(params["ResourceName"], {}).update(request_tags)
        elif op == "RemoveTagsFromResource":
            for k, v in params.items():
                if k.startswith("TagKeys."):
                    self.tags.get(params["ResourceName"], {}).pop(v, None)
        elif op == "DeleteDBParameterGroup":
            self.tags.pop(_rds("pg", params["DBParameterGroupName"]), None)
        elif op == "DeleteDBClusterParameterGroup":
            self.tags.pop(_rds("cluster-pg", params["DBClusterParameterGroupName"]), None)


def recorded_calls(recording: list[dict]) -> list[tuple[str, dict]]:
    """(service:Action, params) of each recorded query-protocol request (RDS, EC2)."""
    out = []
    for r in recording:
        body = r.get("body") or ""
        if r.get("body_encoded"):
            body = base64.b64decode(body).decode()
        params = dict(parse_qsl(body, keep_blank_values=True))
        auth = r.get("headers", {}).get("Authorization", "")
        if "Action" not in params or "Credential=" not in auth:
            continue
        service = auth.split("Credential=")[1].split("/")[3]
        out.append((f"{service}:{params['Action']}", params))
    return out
