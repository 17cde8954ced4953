"""IAM enforcement (POST /moto-api/reset-auth) the way AWS enforces it, for any client.

boto3 cannot show either fix (it encodes a space as '+', which moto happens to re-create, and it
reads both error nestings), so these tests sign raw requests with botocore's SigV4 signer, send
the bytes a client such as aws-sdk-rust sends, and read the raw responses."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from typing import Any, Iterator

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import REGION

FORM = "application/x-www-form-urlencoded; charset=utf-8"


def _post_raw(url: str, body: bytes) -> None:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def send(endpoint: str, service: str, key: tuple[str, str], body: str, headers: dict[str, str],
         sent_body: str | None = None) -> tuple[int, str, str]:
    """Sign `body` with SigV4 for `service`, send `sent_body` (default: `body`) byte for byte;
    returns the status, body and Content-Type of the answer."""
    request = AWSRequest(method="POST", url=endpoint + "/", data=body.encode(), headers=headers)
    SigV4Auth(Credentials(*key), service, REGION).add_auth(request)
    raw = urllib.request.Request(endpoint + "/", method="POST",
                                 data=(body if sent_body is None else sent_body).encode(),
                                 headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(raw, timeout=30) as r:
            return r.status, r.read().decode(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("Content-Type", "")


@pytest.fixture
def iam_user(emu: str) -> Iterator[Any]:
    """make(actions) -> (access key id, secret) of a new IAM user allowed only `actions`; IAM
    enforcement is on from then until the test ends."""

    def make(actions: list[str]) -> tuple[str, str]:
        iam = boto3.client("iam", endpoint_url=emu, region_name=REGION)
        name = "u-" + uuid.uuid4().hex[:8]
        iam.create_user(UserName=name)
        doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
        arn = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(doc))["Policy"]["Arn"]
        iam.attach_user_policy(UserName=name, PolicyArn=arn)
        k = iam.create_access_key(UserName=name)["AccessKey"]
        _post_raw(f"{emu}/moto-api/reset-auth", b"0")
        return k["AccessKeyId"], k["SecretAccessKey"]

    try:
        yield make
    finally:
        _post_raw(f"{emu}/moto-api/reset-auth", b"inf")


def test_sigv4_signature_verified_over_form_body_as_sent_with_space_as_percent20(
        emu: str, iam_user: Any) -> None:
    """AWS verifies SigV4 over the payload bytes it received. aws-sdk-rust sends a space in a
    query-protocol form body as %20 (RFC 3986); moto re-encoded the parsed form with '+' and
    answered 403 SignatureDoesNotMatch. A tampered body is still refused."""
    key = iam_user(["rds:*"])
    form = ("Action=CopyDBParameterGroup&Version=2014-10-31"
            "&SourceDBParameterGroupIdentifier=default.postgres16"
            "&TargetDBParameterGroupIdentifier={name}&TargetDBParameterGroupDescription={desc}")
    headers = {"Content-Type": FORM}

    pct20 = form.format(name="copy-pct20", desc="copy%20of%20default%20%28pct20%29")
    status, body, _ = send(emu, "rds", key, pct20, headers)
    assert status == 200, body
    plus = form.format(name="copy-plus", desc="copy+of+default+%28plus%29")  # botocore's encoding
    status, body, _ = send(emu, "rds", key, plus, headers)
    assert status == 200, body

    rds = boto3.client("rds", endpoint_url=emu, region_name=REGION,
                       aws_access_key_id=key[0], aws_secret_access_key=key[1])
    for name, desc in (("copy-pct20", "copy of default (pct20)"), ("copy-plus", "copy of default (plus)")):
        group = rds.describe_db_parameter_groups(DBParameterGroupName=name)["DBParameterGroups"][0]
        assert group["Description"] == desc

    tampered = form.format(name="copy-tampered", desc="copy%20of%20default")
    status, body, _ = send(emu, "rds", key, pct20.replace("copy-pct20", "copy-other"), headers, sent_body=tampered)
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body, body
    names = {g["DBParameterGroupName"] for g in rds.describe_db_parameter_groups()["DBParameterGroups"]}
    assert {"copy-pct20", "copy-plus"} <= names and not {"copy-other", "copy-tampered"} & names


def _query_code(body: str) -> str:
    root = ET.fromstring(body)
    assert root.tag.rsplit("}", 1)[-1] == "ErrorResponse", body
    assert [c.tag.rsplit("}", 1)[-1] for c in root] == ["Error", "RequestId"], body
    assert root.findtext("Error/Type") == "Sender", body
    return root.findtext("Error/Code") or ""


def _ec2_code(body: str) -> str:
    root = ET.fromstring(body)
    assert root.tag == "Response" and root.find("RequestID") is not None, body
    return root.findtext("Errors/Error/Code") or ""


def _json_code(body: str) -> str:
    doc = json.loads(body)
    assert doc.get("message"), body
    return doc["__type"]


SERVICES = {
    # service: (body, headers, reader, error Content-Type, {failure: (status, code)})
    "rds": ("Action=DescribeDBInstances&Version=2014-10-31", {"Content-Type": FORM}, _query_code, "text/xml",
            {"denied": (403, "AccessDenied"), "bad-signature": (403, "SignatureDoesNotMatch"),
             "unknown-key": (403, "InvalidClientTokenId")}),
    "ec2": ("Action=DescribeSecurityGroups&Version=2016-11-15", {"Content-Type": FORM}, _ec2_code, "text/xml",
            {"denied": (403, "UnauthorizedOperation"), "bad-signature": (401, "AuthFailure"),
             "unknown-key": (401, "AuthFailure")}),
    "kms": ("{}", {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListAliases"},
            _json_code, "application/x-amz-json-1.1", {"denied": (400, "AccessDeniedException"),
                         "bad-signature": (400, "InvalidSignatureException"),
                         "unknown-key": (400, "UnrecognizedClientException")}),
}


@pytest.mark.parametrize("service", SERVICES)
def test_authorization_errors_in_each_services_own_error_shape(emu: str, iam_user: Any, service: str) -> None:
    """AWS renders a refused call in the protocol's error shape: RDS (query) ErrorResponse/Error,
    EC2 Response/Errors/Error, KMS (JSON) {"__type"}. moto used ErrorResponse/Errors/Error for
    all of them, whose code aws-sdk-rust reads as `Unknown`."""
    body, headers, read_code, content_type, expected = SERVICES[service]
    key = iam_user(["sts:GetCallerIdentity"])
    attempts = {
        "denied": key,
        "bad-signature": (key[0], key[1] + "x"),
        "unknown-key": ("AKIAIOSFODNN7EXAMPLE", "not-a-secret"),
    }
    for failure, creds in attempts.items():
        status, text, ctype = send(emu, service, creds, body, headers)
        assert (status, read_code(text)) == expected[failure], (failure, text)
        assert ctype.startswith(content_type), (failure, ctype)
    status, text, _ = send(emu, service, key, body, headers)
    if service == "ec2":
        assert "is not authorized to perform: ec2:DescribeSecurityGroups" in text
    else:
        assert f"is not authorized to perform: {service}:" in text

    # botocore reads the same codes (it accepts either nesting, so this only guards regressions).
    client = boto3.client(service, endpoint_url=emu, region_name=REGION,
                          aws_access_key_id=key[0], aws_secret_access_key=key[1])
    operation = {"rds": "describe_db_instances", "ec2": "describe_security_groups", "kms": "list_aliases"}
    with pytest.raises(ClientError) as e:
        getattr(client, operation[service])()
    assert e.value.response["Error"]["Code"] == expected["denied"][1]
