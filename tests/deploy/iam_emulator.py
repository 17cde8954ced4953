#!/usr/bin/env python3
"""The AWS emulator (tests/emulator) with one more fidelity fix, for the IAM-enforcement tests.

    python tests/deploy/iam_emulator.py --port PORT        (same arguments as tests/emulator/serve)

moto 5.2.5 verifies SigV4 signatures when IAM enforcement is on, but for form-encoded (query
protocol) requests its server has already consumed the body, so it re-encodes the parsed form
with Python's `urlencode` (space -> '+') and signs that. aws-sdk-rust encodes a space as '%20'
(RFC 3986, as AWS documents for SigV4), so every Rust request whose parameters contain a space
(e.g. CopyDBParameterGroup's description) fails with 403 SignatureDoesNotMatch, which AWS would
accept. This accepts the signature when it matches either encoding of the same parameters.

moto also renders every authorization error in one XML shape, `<ErrorResponse><Errors><Error>`,
which is EC2's nesting under IAM's root element. AWS answers a denied call in each protocol's own
shape, and aws-sdk-rust only finds the error code there (it reports moto's as `Unknown`):
  RDS (awsQuery):   HTTP 403 <ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>...
  EC2 (ec2Query):   HTTP 403 <Response><Errors><Error><Code>UnauthorizedOperation</Code>...
  KMS (awsJson1_1): HTTP 400 {"__type":"AccessDeniedException","message":...}
so denials (and signature/key errors) are rendered the way the service would.
"""
from __future__ import annotations

import json
import os
import sys
from urllib.parse import quote, urlencode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "emulator"))


def patch_moto_signature_check() -> None:
    from moto.iam import access_control

    base = access_control.IAMRequestBase
    original_check = base.check_signature

    def check_signature(self) -> None:  # type: ignore[no-untyped-def]
        try:
            original_check(self)
            return
        except Exception:
            if self._body or not isinstance(self._data, dict):
                raise
            saved = self._body
            try:
                self._body = urlencode(self._data, doseq=True, quote_via=quote).encode()
                original_check(self)
            finally:
                self._body = saved

    base.check_signature = check_signature


def patch_moto_auth_errors() -> None:
    import uuid
    from xml.sax.saxutils import escape

    from moto.core import exceptions as core_exceptions
    from moto.iam import access_control

    class ServiceShapedError(core_exceptions._RESTError):  # noqa: SLF001 (moto's own base)
        def __init__(self, service: str, code: str, message: str, status: int) -> None:
            super().__init__(code, message)
            self.code = status
            rid = str(uuid.uuid4())
            if service in JSON_SERVICES:
                self.description = json.dumps({"__type": code, "message": message})
                self.content_type = "application/x-amz-json-1.1"
            elif service == "ec2":
                self.description = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"
                                    f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
                                    f"</Error></Errors><RequestID>{rid}</RequestID></Response>")
            else:
                self.description = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{escape(code)}</Code>"
                                    f"<Message>{escape(message)}</Message></Error>"
                                    f"<RequestId>{rid}</RequestId></ErrorResponse>")

    def denied(self) -> None:  # type: ignore[no-untyped-def]
        message = f"User: {self._access_key.arn} is not authorized to perform: {self._action}"
        if self._service in JSON_SERVICES:
            raise ServiceShapedError(self._service, "AccessDeniedException", message, 400)
        if self._service == "ec2":
            raise ServiceShapedError("ec2", "UnauthorizedOperation",
                                     f"You are not authorized to perform this operation. {message}", 403)
        raise ServiceShapedError(self._service, "AccessDenied", message, 403)

    def bad_signature(self) -> None:  # type: ignore[no-untyped-def]
        if self._service == "ec2":
            raise core_exceptions.AuthFailureError()
        status = 400 if self._service in JSON_SERVICES else 403
        raise ServiceShapedError(self._service, "SignatureDoesNotMatch",
                                 "The request signature we calculated does not match the signature you provided.",
                                 status)

    access_control.IAMRequest._raise_access_denied = denied
    access_control.IAMRequest._raise_signature_does_not_match = bad_signature


# Services on the JSON protocols among those pgbaseline calls (RDS and EC2 are query protocols).
JSON_SERVICES = {"kms", "sts-json", "secretsmanager"}


if __name__ == "__main__":
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    patch_moto_signature_check()
    patch_moto_auth_errors()
    from pgbaseline_emulator.server import main

    sys.exit(main(sys.argv[1:]))
