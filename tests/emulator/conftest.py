"""Fixtures: one emulator per test session (a `serve` subprocess on a free port), reset before
every test with moto's POST /moto-api/reset (which also clears the call log and faults)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from botocore.config import Config

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

REGION = "us-east-1"
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION=REGION,
)
os.environ.pop("AWS_PROFILE", None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, payload: Any = None) -> tuple[int, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, body


@pytest.fixture(scope="session")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("emulator") / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(HERE / "serve"), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"emulator exited early:\n{log.read_text()[-4000:]}")
        try:
            if http("GET", f"{url}/_emulator/health")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("emulator did not start in time")
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def emu(endpoint: str) -> str:
    """A freshly reset emulator; returns its endpoint URL."""
    status, _ = http("POST", f"{endpoint}/moto-api/reset")
    assert status == 200
    return endpoint


def client(endpoint: str, service: str, retries: int = 0) -> Any:
    cfg = Config(retries={"total_max_attempts": retries + 1, "mode": "standard"})
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, config=cfg)


@pytest.fixture
def rds(emu: str) -> Any:
    return client(emu, "rds")


@pytest.fixture
def ec2(emu: str) -> Any:
    return client(emu, "ec2")


@pytest.fixture
def kms(emu: str) -> Any:
    return client(emu, "kms")


PASSWORD = "s3cr3t-Pa55word"


def make_instance(rds: Any, ident: str, **kw: Any) -> dict[str, Any]:
    args = dict(DBInstanceIdentifier=ident, Engine="postgres", DBInstanceClass="db.t4g.micro",
                MasterUsername="pgadmin", MasterUserPassword=PASSWORD, AllocatedStorage=20)
    args.update(kw)
    return rds.create_db_instance(**args)["DBInstance"]


def make_cluster(rds: Any, ident: str, members: int = 2, **kw: Any) -> dict[str, Any]:
    args = dict(DBClusterIdentifier=ident, Engine="aurora-postgresql", MasterUsername="pgadmin",
                MasterUserPassword=PASSWORD)
    args.update(kw)
    cluster = rds.create_db_cluster(**args)["DBCluster"]
    for i in range(members):
        rds.create_db_instance(DBInstanceIdentifier=f"{ident}-{i + 1}", DBClusterIdentifier=ident,
                               Engine="aurora-postgresql", DBInstanceClass="db.r6g.large")
    return cluster
