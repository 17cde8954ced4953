"""Accounts, roles and sessions: STS AssumeRole checked as AWS checks it, sessions limited as AWS
limits them, and every call attributed to an account and a session.

moto's STS hands out credentials for any role ARN (the credentials then act in that role's
account, which is how moto isolates accounts) and stores, but never checks, the external id and
the session policy. What pgbaseline's multi-account tests rely on, done here as AWS does it:

1. **Trust.** A role registered with ``POST /_emulator/roles`` and an ``external_id`` can be
   assumed only with that external id: AWS answers ``AccessDenied`` when a trust policy's
   ``sts:ExternalId`` condition fails. A role registered ``denied`` cannot be assumed at all
   (its trust policy does not name the caller). Unregistered roles behave as moto's: anyone may
   assume them.
2. **Session policy.** A session assumed with ``Policy`` can do only what that policy allows
   (AWS intersects it with the role's permissions, so even a role allowed everything cannot go
   beyond it). Anything else is refused in the service's error shape: ``AccessDenied`` (query
   protocols), ``UnauthorizedOperation`` (EC2), ``AccessDeniedException`` (JSON).
3. **Revocation and expiry.** ``revoked: true`` on a role refuses its existing sessions with
   ``AccessDenied`` (what IAM's "revoke active sessions" does) and refuses new ones; setting it
   false again lets the role be assumed afresh, while the revoked sessions stay refused, as on
   AWS. ``expired: true`` makes the role's sessions of that moment answer ``ExpiredToken``
   (sessions assumed later work).
4. **Attribution.** The call log gives each call the account it acted in and the session name
   of an assumed-role caller (``account``, ``session``): that is how tests see which account a
   call reached and which replica made it.

The registry is reset with the emulator (``/_emulator/reset``) and by ``POST /_emulator/roles/reset``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any
from urllib.parse import parse_qs

DEFAULT_ACCOUNT = "123456789012"

_AKID_RE = re.compile(r"Credential=([^/,\s]+)/")
_ROLE_ACCOUNT_RE = re.compile(r"^arn:aws[a-z-]*:iam::([0-9]{12}):role/")
_ACCESS_KEY_RE = re.compile(rb"<AccessKeyId>([^<]+)</AccessKeyId>")

_DENIED = {"query": ("AccessDenied", 403), "ec2": ("UnauthorizedOperation", 403),
           "json": ("AccessDeniedException", 400)}
_EXPIRED = {"query": ("ExpiredToken", 403), "ec2": ("RequestExpired", 400),
            "json": ("ExpiredTokenException", 400)}


_REGION_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/")


def signed_region(environ: dict[str, Any]) -> str:
    """The region a request was signed for (SigV4 credential scope): which (account, region)
    a call acted in, for tests that prove who swept what."""
    m = _REGION_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if not m:
        m = _REGION_RE.search(environ.get("QUERY_STRING", "").replace("%2F", "/"))
    return m.group(1) if m else ""


def access_key(environ: dict[str, Any]) -> str:
    m = _AKID_RE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if not m:
        m = _AKID_RE.search(environ.get("QUERY_STRING", "").replace("%2F", "/"))
    return m.group(1) if m else ""


def form(body: bytes) -> dict[str, str]:
    try:
        parsed = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10000)
    except ValueError:
        return {}
    return {k: v[0] for k, v in parsed.items()}


def render(service: str, table: dict[str, tuple[str, int]], message: str
           ) -> tuple[str, list[tuple[str, str]], bytes]:
    """An error in the service's own shape: (status line, headers, body)."""
    from .auth import ServiceShapedError, protocol

    proto, json_version = protocol(service)
    if proto not in table:
        proto = "query"
    code, status = table[proto]
    if proto == "ec2":
        message = f"You are not authorized to perform this operation. {message}"
    error = ServiceShapedError(proto, json_version, code, message, status)
    body = error.description.encode()
    reason = {400: "Bad Request", 403: "Forbidden"}.get(status, "Error")
    return f"{status} {reason}", [("Content-Type", error.content_type),
                                  ("Content-Length", str(len(body)))], body


class Session:
    def __init__(self, account: str, role_arn: str, name: str, policy: str | None) -> None:
        self.account = account
        self.role_arn = role_arn
        self.name = name
        self.policy = policy
        self.created = time.monotonic()
        self.revoked = False
        self.expired = False

    @property
    def arn(self) -> str:
        return f"arn:aws:sts::{self.account}:assumed-role/{self.role_arn.split('/')[-1]}/{self.name}"


class Accounts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.roles: dict[str, dict[str, Any]] = {}
            self.sessions: dict[str, Session] = {}

    # -- settings endpoint: {"<role arn>": {"external_id": str|null, "denied": bool,
    #                                       "revoked": bool, "expired": bool}, ...}
    def configure(self, cfg: dict[str, Any]) -> None:
        roles: dict[str, dict[str, Any]] = {}
        for arn, role in cfg.items():
            if not isinstance(arn, str) or not _ROLE_ACCOUNT_RE.match(arn):
                raise ValueError(f"{arn!r} is not an IAM role ARN")
            if not isinstance(role, dict):
                raise ValueError(f"{arn}: settings must be an object")
            unknown = set(role) - {"external_id", "denied", "revoked", "expired"}
            if unknown:
                raise ValueError(f"{arn}: unknown settings {sorted(unknown)}")
            external_id = role.get("external_id")
            if external_id is not None and not isinstance(external_id, str):
                raise ValueError(f"{arn}: external_id must be a string")
            roles[arn] = {"external_id": external_id, "denied": bool(role.get("denied")),
                          "revoked": bool(role.get("revoked")), "expired": bool(role.get("expired"))}
        with self._lock:
            for arn, role in roles.items():
                for s in self.sessions.values():
                    if s.role_arn == arn:
                        s.revoked = s.revoked or role["revoked"]
                        s.expired = s.expired or role["expired"]
            self.roles.update(roles)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "roles": dict(self.roles),
                "sessions": [{"account": s.account, "role_arn": s.role_arn, "name": s.name,
                              "read_only": s.policy is not None, "revoked": s.revoked}
                             for s in self.sessions.values()],
            }

    # -- requests -------------------------------------------------------------------------
    def caller(self, environ: dict[str, Any]) -> tuple[str, str]:
        """(account, session name) of a request's caller."""
        key = access_key(environ)
        with self._lock:
            session = self.sessions.get(key)
        if session is not None:
            return session.account, session.name
        return DEFAULT_ACCOUNT, ""

    def refuse(self, environ: dict[str, Any], service: str, action: str, body: bytes
               ) -> tuple[str, list[tuple[str, str]], bytes] | None:
        """The error AWS would answer instead of serving this request, if any."""
        key = access_key(environ)
        with self._lock:
            session = self.sessions.get(key)
        if session is not None:
            if session.revoked:
                return render(service, _DENIED,
                              f"User: {session.arn} is not authorized to perform: {service}:{action} "
                              "with an explicit deny (the role's sessions were revoked)")
            if session.expired:
                return render(service, _EXPIRED, "The security token included in the request is expired")
            if session.policy is not None and not _permits(session.policy, f"{service}:{action}"):
                return render(service, _DENIED,
                              f"User: {session.arn} is not authorized to perform: {service}:{action} "
                              f"because no session policy allows the {service}:{action} action")
        if service == "sts" and action == "AssumeRole":
            params = form(body)
            arn = params.get("RoleArn", "")
            with self._lock:
                target = self.roles.get(arn)
            caller = session.arn if session else f"arn:aws:iam::{DEFAULT_ACCOUNT}:user/pgbaseline"
            denied = render("sts", _DENIED,
                            f"User: {caller} is not authorized to perform: sts:AssumeRole on resource: {arn}")
            if target is not None:
                if target["denied"] or target["revoked"]:
                    return denied
                if target["external_id"] is not None and params.get("ExternalId") != target["external_id"]:
                    return denied
            policy = params.get("Policy")
            if policy is not None:
                try:
                    doc = json.loads(policy)
                    if not isinstance(doc, dict) or "Statement" not in doc:
                        raise ValueError("no Statement")
                except ValueError:
                    return render("sts", {"query": ("MalformedPolicyDocument", 400)},
                                  "The session policy is not a valid policy document")
        return None

    def assumed(self, body: bytes, response: bytes) -> None:
        """Records the session an AssumeRole response created."""
        m = _ACCESS_KEY_RE.search(response)
        if not m:
            return
        params = form(body)
        arn = params.get("RoleArn", "")
        am = _ROLE_ACCOUNT_RE.match(arn)
        session = Session(am.group(1) if am else DEFAULT_ACCOUNT, arn,
                          params.get("RoleSessionName", ""), params.get("Policy"))
        with self._lock:
            self.sessions[m.group(1).decode()] = session


def _permits(policy: str, action: str) -> bool:
    from moto.iam.access_control import IAMPolicy, PermissionResult

    try:
        return IAMPolicy(policy).is_action_permitted(action) == PermissionResult.PERMITTED
    except (ValueError, KeyError, TypeError):
        return False
