"""WSGI middleware: call log, fault injection, quotas and the /_emulator/ control endpoints.

The call log records {service, action, status, throttled} for every AWS request that reaches
the server, retries included. It never records or prints request bodies (they carry master
passwords) or headers (they carry signatures).
"""

from __future__ import annotations

import io
import json
import random
import re
import threading
import time
import uuid
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

from .accounts import Accounts
from .quotas import QUOTAS, Quotas

_CRED_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/([^/,\s]+)/aws4_request")
_HOST_RE = re.compile(r"^([a-z0-9-]+)\.(?:[a-z0-9-]+\.)?amazonaws\.com")

# JSON protocol target prefixes -> service (when the signing scope is missing).
_TARGET_PREFIX = {
    "TrentService": "kms",
    "AWSSecurityTokenServiceV20110615": "sts",
    "secretsmanager": "secretsmanager",
    "Logs_20140328": "logs",
    "AmazonSSM": "ssm",
}

JSON_SERVICES = {"kms", "secretsmanager", "logs", "ssm", "dynamodb"}

StartResponse = Callable[..., Any]

# The body of the AWS request the current thread is serving, exactly as received (werkzeug's
# threaded server serves each request on its own thread). auth.py verifies SigV4 over it.
received_body = threading.local()


class CallLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._calls.append(entry)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._calls)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.throttle_fraction = 0.0
            self.latency_ms = 0
            self.seed: int | None = None
            self.services: list[str] | None = None
            # Older RDS endpoints reject the `parameter-name` filter of DescribeDB*Parameters.
            self.reject_parameter_filter = False
            self._rng = random.Random()

    def configure(self, cfg: dict[str, Any]) -> None:
        fraction = float(cfg.get("throttle_fraction", 0.0) or 0.0)
        latency = int(cfg.get("latency_ms", 0) or 0)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("throttle_fraction must be within [0, 1]")
        if latency < 0:
            raise ValueError("latency_ms must be >= 0")
        services = cfg.get("services")
        if services is not None:
            if not isinstance(services, list) or not all(isinstance(s, str) for s in services):
                raise ValueError("services must be a list of service names")
            services = [s.lower() for s in services]
        seed = cfg.get("seed")
        reject_filter = bool(cfg.get("reject_parameter_filter", False))
        with self._lock:
            self.reject_parameter_filter = reject_filter
            self.throttle_fraction = fraction
            self.latency_ms = latency
            self.seed = seed
            self.services = services
            self._rng = random.Random(seed)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "throttle_fraction": self.throttle_fraction,
                "latency_ms": self.latency_ms,
                "seed": self.seed,
                "services": self.services,
                "reject_parameter_filter": self.reject_parameter_filter,
            }

    def decide(self, service: str) -> tuple[bool, int]:
        """Returns (throttle?, latency_ms) for one request of `service`."""
        with self._lock:
            if self.services is not None and service not in self.services:
                return False, 0
            throttle = False
            if self.throttle_fraction > 0:
                throttle = self._rng.random() < self.throttle_fraction
            return throttle, self.latency_ms


def signed_region(environ: dict[str, Any]) -> str:
    """The region in a request's SigV4 credential scope (header or presigned query); empty when
    unsigned."""
    m = _CRED_RE.search(environ.get("HTTP_AUTHORIZATION", "")) or _CRED_RE.search(
        environ.get("QUERY_STRING", "").replace("%2F", "/"))
    return m.group(1) if m else ""


def classify(environ: dict[str, Any], body: bytes) -> tuple[str, str]:
    """(service, action) of an AWS request, from its signature scope, target header or body."""
    service = ""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = _CRED_RE.search(auth)
    if m:
        service = m.group(2).lower()
    else:
        qs = environ.get("QUERY_STRING", "")
        m = _CRED_RE.search(qs.replace("%2F", "/"))
        if m:
            service = m.group(2).lower()
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    action = ""
    if target:
        prefix, _, op = target.partition(".")
        action = op or prefix
        if not service:
            service = _TARGET_PREFIX.get(prefix, prefix.lower())
    if not service:
        host = environ.get("HTTP_HOST", "")
        hm = _HOST_RE.match(host)
        service = hm.group(1) if hm else "unknown"
    if not action:
        qs = parse_qs(environ.get("QUERY_STRING", ""))
        if "Action" in qs:
            action = qs["Action"][0]
        else:
            ctype = environ.get("CONTENT_TYPE", "")
            if body and ("x-www-form-urlencoded" in ctype or not ctype):
                try:
                    form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10000)
                except ValueError:
                    form = {}
                if "Action" in form:
                    action = form["Action"][0]
    if service == "monitoring":
        service = "cloudwatch"
    return service, action or "unknown"


def filter_rejected_response() -> tuple[str, list[tuple[str, str]], bytes]:
    """What an RDS endpoint without the parameter-name filter answers."""
    body = (
        '<ErrorResponse xmlns="http://rds.amazonaws.com/doc/2014-10-31/"><Error><Type>Sender</Type>'
        "<Code>InvalidParameterValue</Code>"
        "<Message>Unrecognized filter name: parameter-name</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    ).encode()
    return "400 Bad Request", [("Content-Type", "text/xml")], body


def throttle_response(service: str) -> tuple[str, list[tuple[str, str]], bytes]:
    request_id = str(uuid.uuid4())
    if service == "ec2":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            "<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
            "<Message>Request limit exceeded.</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        ).encode()
        return "503 Service Unavailable", [("Content-Type", "text/xml;charset=UTF-8")], body
    if service in JSON_SERVICES:
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        return "400 Bad Request", [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("x-amzn-RequestId", request_id),
        ], body
    ns = ""
    if service == "rds":
        ns = ' xmlns="http://rds.amazonaws.com/doc/2014-10-31/"'
    body = (
        f"<ErrorResponse{ns}><Error><Type>Sender</Type><Code>Throttling</Code>"
        "<Message>Rate exceeded</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()
    return "400 Bad Request", [
        ("Content-Type", "text/xml"),
        ("x-amzn-RequestId", request_id),
    ], body


def _json(start_response: StartResponse, status: str, payload: Any) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def _read_body(environ: dict[str, Any]) -> bytes:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            n = int(length)
        except ValueError:
            n = 0
        return stream.read(n) if n > 0 else b""
    if environ.get("wsgi.input_terminated"):
        return stream.read()
    return b""


class EmulatorMiddleware:
    def __init__(self, app: Callable[..., Iterable[bytes]],
                 on_reset: Callable[[], None] | None = None,
                 quotas: Quotas | None = None) -> None:
        self.app = app
        self.calls = CallLog()
        self.faults = Faults()
        self.accounts = Accounts()
        # Requests held by a latency fault right now: what a test waits on to know a call is
        # hanging (instead of sleeping and hoping it started).
        self.delayed = 0
        self._delayed_lock = threading.Lock()
        # The RDS patches read the process-wide table, so that's the one to configure.
        self.quotas = quotas if quotas is not None else QUOTAS
        self.on_reset = on_reset

    def reset_state(self) -> None:
        self.calls.clear()
        self.faults.reset()
        self.quotas.reset()
        self.accounts.reset()

    # -- control endpoints ---------------------------------------------------------------
    @staticmethod
    def _configure(environ: dict[str, Any], start_response: StartResponse, settings: Any) -> list[bytes]:
        """POST of a JSON object to a settings endpoint (faults, quotas): applied whole or not at all."""
        try:
            cfg = json.loads(_read_body(environ) or b"{}")
            if not isinstance(cfg, dict):
                raise ValueError("body must be a JSON object")
            settings.configure(cfg)
        except (ValueError, TypeError) as e:
            return _json(start_response, "400 Bad Request", {"error": str(e)})
        return _json(start_response, "200 OK", settings.as_dict())

    def _control(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/_emulator/calls" and method == "GET":
            return _json(start_response, "200 OK", {"calls": self.calls.snapshot(), "delayed": self.delayed})
        if path == "/_emulator/calls/reset" and method == "POST":
            self.calls.clear()
            return _json(start_response, "200 OK", {"ok": True})
        for name, settings in (("faults", self.faults), ("quotas", self.quotas),
                               ("roles", self.accounts)):
            if path == f"/_emulator/{name}":
                if method == "GET":
                    return _json(start_response, "200 OK", settings.as_dict())
                if method == "POST":
                    return self._configure(environ, start_response, settings)
            if path == f"/_emulator/{name}/reset" and method == "POST":
                settings.reset()
                return _json(start_response, "200 OK", settings.as_dict())
        if path == "/_emulator/health":
            return _json(start_response, "200 OK", {"ok": True})
        if path == "/_emulator/reset" and method == "POST":
            self._moto_reset()
            return _json(start_response, "200 OK", {"ok": True})
        return _json(start_response, "404 Not Found", {"error": f"no such endpoint {path}"})

    def _moto_reset(self) -> None:
        from moto.moto_api import _internal  # noqa: F401  (import side effects)
        from moto.moto_api._internal.models import moto_api_backend

        moto_api_backend.reset()
        self.reset_state()
        if self.on_reset:
            self.on_reset()

    # -- WSGI -----------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_emulator/") or path == "/_emulator":
            return self._control(environ, start_response)
        if path.startswith("/moto-api"):
            if path.rstrip("/") == "/moto-api/reset" and environ.get("REQUEST_METHOD") == "POST":
                result = self.app(environ, start_response)
                self.reset_state()
                if self.on_reset:
                    self.on_reset()
                return result
            return self.app(environ, start_response)

        body = _read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("wsgi.input_terminated", None)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        service, action = classify(environ, body)
        account, session = self.accounts.caller(environ)
        region = signed_region(environ)

        def log(status: int, throttled: bool) -> None:
            self.calls.add({"service": service, "action": action, "status": status,
                            "throttled": throttled, "account": account, "session": session,
                            "region": region})

        refused = self.accounts.refuse(environ, service, action, body)
        if refused is not None:
            status, headers, payload = refused
            log(int(status.split()[0]), False)
            start_response(status, headers)
            return [payload]

        if (self.faults.reject_parameter_filter and service == "rds"
                and action in ("DescribeDBParameters", "DescribeDBClusterParameters")
                and b"Filters.Filter" in body):
            status, headers, payload = filter_rejected_response()
            headers.append(("Content-Length", str(len(payload))))
            log(int(status.split()[0]), False)
            start_response(status, headers)
            return [payload]

        throttle, latency = self.faults.decide(service)
        if latency:
            with self._delayed_lock:
                self.delayed += 1
            try:
                time.sleep(latency / 1000.0)
            finally:
                with self._delayed_lock:
                    self.delayed -= 1
        if throttle:
            status, headers, payload = throttle_response(service)
            headers.append(("Content-Length", str(len(payload))))
            log(int(status.split()[0]), True)
            start_response(status, headers)
            return [payload]

        seen: dict[str, int] = {}

        def _start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            try:
                seen["status"] = int(status.split()[0])
            except (ValueError, IndexError):
                seen["status"] = 0
            if exc_info is not None:
                return start_response(status, headers, exc_info)
            return start_response(status, headers)

        received_body.value = body
        try:
            result = self.app(environ, _start)
        except Exception:
            log(500, False)
            raise
        finally:
            received_body.value = None
        if service == "sts" and action == "AssumeRole" and seen.get("status") == 200:
            response = b"".join(result)
            if hasattr(result, "close"):
                result.close()
            self.accounts.assumed(body, response)
            result = [response]
        log(seen.get("status", 500), False)
        return result
