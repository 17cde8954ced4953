"""Fidelity patches for moto's IAM enforcement (``POST /moto-api/reset-auth``).

Two places where moto's authorization check does not behave like AWS, so that a client other
than boto3 (aws-sdk-rust, in pgbaseline's case) fails where AWS would not, or cannot read the
error AWS would send:

1. **The signature is verified over the body as it was sent.** moto's server has already parsed
   a form-encoded (query protocol) body by the time it checks the SigV4 signature, so it signs a
   re-encoding of the parsed form made with Python's ``urlencode`` (space -> ``+``). A client that
   encodes a space as ``%20`` (RFC 3986, as AWS documents for SigV4; aws-sdk-rust does) gets
   ``SignatureDoesNotMatch`` for any parameter containing a space. The middleware keeps the
   received bytes for the request's thread (``middleware.received_body``); the check hashes those.

2. **Authorization errors come in each service's own error shape.** moto renders every one as
   ``<ErrorResponse><Errors><Error>`` (EC2's nesting under the query root), which clients that
   follow the protocol (aws-sdk-rust) read as code ``Unknown``. AWS answers:

   query (RDS, STS, IAM): 403 ``AccessDenied`` / ``SignatureDoesNotMatch`` / ``InvalidClientTokenId``;
   ec2: 403 ``UnauthorizedOperation``, 401 ``AuthFailure`` (bad signature or unknown key);
   json (KMS, Secrets Manager): 400 ``AccessDeniedException`` / ``InvalidSignatureException`` /
   ``UnrecognizedClientException``.

   query: ``<ErrorResponse><Error><Type>Sender</Type><Code>…``; ec2:
   ``<Response><Errors><Error><Code>…``; json: ``{"__type": …, "message": …}``. The protocol
   comes from botocore's model of the service named in the credential scope; services on other
   protocols (rest-json, rest-xml, S3) keep moto's rendering.

Call ``apply()`` once, before the first request is served.
"""

from __future__ import annotations

import functools
import json
import uuid
from typing import Any
from xml.sax.saxutils import escape

from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.exceptions import _RESTError  # noqa: PLC2701 (moto's own base of these errors)
from moto.iam import access_control

from .middleware import received_body

_applied = False

SIGNATURE_MESSAGE = ("The request signature we calculated does not match the signature you provided. "
                     "Check your AWS Secret Access Key and signing method. "
                     "Consult the service documentation for details.")
TOKEN_MESSAGE = "The security token included in the request is invalid."
EC2_AUTH_FAILURE = "AWS was not able to validate the provided access credentials"

# Credential-scope (signing) names that are not botocore service names.
_SIGNING_ALIASES = {"monitoring": "cloudwatch", "email": "ses", "states": "stepfunctions"}


@functools.lru_cache(maxsize=None)
def protocol(signing_name: str) -> tuple[str, str]:
    """(protocol, JSON version) of the service a request was signed for, from botocore's model;
    ("", "") when botocore does not know it."""
    from botocore.exceptions import DataNotFoundError
    from botocore.loaders import create_loader

    name = _SIGNING_ALIASES.get(signing_name, signing_name)
    try:
        meta = create_loader().load_service_model(name, "service-2")["metadata"]
    except DataNotFoundError:
        return "", ""
    return meta.get("protocol", ""), meta.get("jsonVersion", "1.1")


class ServiceShapedError(_RESTError):
    """An authorization error rendered the way the service's protocol renders errors."""

    def __init__(self, proto: str, json_version: str, code: str, message: str, status: int) -> None:
        super().__init__(code, message)
        self.code = status
        request_id = str(uuid.uuid4())
        if proto == "json":
            self.description = json.dumps({"__type": code, "message": message})
            self.content_type = f"application/x-amz-json-{json_version}"
        elif proto == "ec2":
            self.description = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                                f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
                                f"</Error></Errors><RequestID>{request_id}</RequestID></Response>")
            self.content_type = "text/xml;charset=UTF-8"
        else:
            self.description = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code>"
                                f"<Message>{escape(message)}</Message></Error>"
                                f"<RequestId>{request_id}</RequestId></ErrorResponse>")
            self.content_type = "text/xml"


# protocol -> (code, HTTP status) for each kind of failure
_DENIED = {"query": ("AccessDenied", 403), "ec2": ("UnauthorizedOperation", 403),
           "json": ("AccessDeniedException", 400)}
_BAD_SIGNATURE = {"query": ("SignatureDoesNotMatch", 403), "ec2": ("AuthFailure", 401),
                  "json": ("InvalidSignatureException", 400)}
_UNKNOWN_KEY = {"query": ("InvalidClientTokenId", 403), "ec2": ("AuthFailure", 401),
                "json": ("UnrecognizedClientException", 400)}


def _shaped(service: str, table: dict[str, tuple[str, int]], message: str) -> ServiceShapedError | None:
    proto, json_version = protocol(service)
    if proto not in table:
        return None
    code, status = table[proto]
    if proto == "ec2" and code == "AuthFailure":
        message = EC2_AUTH_FAILURE
    elif proto == "ec2":
        message = f"You are not authorized to perform this operation. {message}"
    return ServiceShapedError(proto, json_version, code, message, status)


def _check_signature(original: Any) -> Any:
    def check_signature(self: Any) -> None:
        body = getattr(received_body, "value", None)
        if body is None:  # not through the middleware: moto's own check
            return original(self)
        saved = self._body
        self._body = body
        try:
            return original(self)
        finally:
            self._body = saved

    return check_signature


def _raise_access_denied(original: Any) -> Any:
    def raise_access_denied(self: Any) -> None:
        error = _shaped(self._service, _DENIED,
                        f"User: {self._access_key.arn} is not authorized to perform: {self._action}")
        if error is None:
            return original(self)
        raise error

    return raise_access_denied


def _raise_signature_does_not_match(original: Any) -> Any:
    def raise_signature_does_not_match(self: Any) -> None:
        error = _shaped(self._service, _BAD_SIGNATURE, SIGNATURE_MESSAGE)
        if error is None:
            return original(self)
        raise error

    return raise_signature_does_not_match


def _raise_invalid_access_key(original: Any) -> Any:
    def raise_invalid_access_key(self: Any, reason: str) -> None:
        error = _shaped(self._service, _UNKNOWN_KEY, TOKEN_MESSAGE)
        if error is None:
            return original(self, reason)
        raise error

    return raise_invalid_access_key


def _authenticate_and_authorize_action(original: Any) -> Any:
    """moto answers an authorization error with the response's default headers; give it the
    error's Content-Type (text/xml, application/x-amz-json-1.1) as AWS does."""

    def authenticate_and_authorize_action(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            return original(self, *args, **kwargs)
        except ServiceShapedError as e:
            headers = getattr(self, "response_headers", None)
            if isinstance(headers, dict):
                headers["Content-Type"] = e.content_type
            raise

    return authenticate_and_authorize_action


def apply() -> None:
    """Install both patches. Idempotent."""
    global _applied
    if _applied:
        return
    _applied = True
    base = access_control.IAMRequestBase
    base.check_signature = _check_signature(base.check_signature)
    req = access_control.IAMRequest  # not S3IAMRequest: S3 has its own (correct) error shapes
    req._raise_access_denied = _raise_access_denied(req._raise_access_denied)
    req._raise_signature_does_not_match = _raise_signature_does_not_match(req._raise_signature_does_not_match)
    req._raise_invalid_access_key = _raise_invalid_access_key(req._raise_invalid_access_key)
    mixin = ActionAuthenticatorMixin
    mixin._authenticate_and_authorize_action = _authenticate_and_authorize_action(
        mixin._authenticate_and_authorize_action)
