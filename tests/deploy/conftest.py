"""Shared fixtures of the deployment tests: paths, the cached helm/kubectl, the pgbaseline binary,
the AWS emulator and a real test control plane. Run through tests/deploy/run."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "pgbaseline"
DEPLOY = ROOT / "deploy"
CRD_NAME = "databasesecuritypolicies.pgbaseline.io.yaml"
ACCOUNT_CRD_NAME = "awsaccounts.pgbaseline.io.yaml"


def bin_dir() -> Path:
    if os.environ.get("PGBASELINE_K8S_BIN_DIR"):
        return Path(os.environ["PGBASELINE_K8S_BIN_DIR"])
    out = subprocess.run([str(ROOT / "scripts/controlplane/build-bins")], check=True, text=True,
                         capture_output=True, stdin=subprocess.DEVNULL).stdout
    return Path(out.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def bins() -> Path:
    return bin_dir()


@pytest.fixture(scope="session")
def helm(bins: Path) -> str:
    return str(bins / "helm")


@pytest.fixture(scope="session")
def kubectl(bins: Path) -> str:
    return str(bins / "kubectl")


def pgbaseline_binary() -> Path | None:
    explicit = os.environ.get("PGBASELINE_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/pgbaseline/target"))
    for p in (target / "debug" / "pgbaseline", target / "release" / "pgbaseline"):
        if p.exists():
            return p
    return None


@pytest.fixture(scope="session")
def pgbaseline() -> Path:
    p = pgbaseline_binary()
    if p is None:
        pytest.skip("pgbaseline binary not built (set PGBASELINE_BIN or build into CARGO_TARGET_DIR)")
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, content_type: str = "text/plain") -> bytes:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


class Emulator:
    """The AWS emulator (tests/emulator, started by tests/deploy/iam_emulator.py) on a free port,
    in its own process group. Its IAM enforcement is AWS-faithful for aws-sdk-rust (see
    tests/emulator/pgbaseline_emulator/auth.py)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log = open(workdir / "emulator.log", "w")
        env = dict(os.environ, MOTO_RECORDER_FILEPATH=str(workdir / "recording.jsonl"),
                   AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        self.proc = subprocess.Popen([venv_python(), str(ROOT / "tests/deploy/iam_emulator.py"),
                                      "--port", str(self.port)],
                                     cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("emulator exited: " + (workdir / "emulator.log").read_text()[-2000:])
            if "listening on" in (workdir / "emulator.log").read_text():
                return
            time.sleep(0.3)
        raise RuntimeError("emulator did not start in 120 s")

    def auth(self, after_calls: float | str) -> None:
        """IAM enforcement after N more calls (0: now; 'inf': off)."""
        http("POST", f"{self.url}/moto-api/reset-auth", str(after_calls).encode())

    def reset_and_seed(self, fleet: str = "small") -> dict:
        self.auth("inf")
        http("POST", f"{self.url}/moto-api/reset", b"")
        out = subprocess.run([venv_python(), str(ROOT / "tests/emulator/seed.py"), "--endpoint", self.url,
                              "--fleet", fleet], check=True, capture_output=True, text=True,
                             env=dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"))
        return json.loads(out.stdout[out.stdout.index("{"):])

    def start_recording(self) -> None:
        http("POST", f"{self.url}/moto-api/recorder/reset-recording", b"")
        http("POST", f"{self.url}/moto-api/recorder/start-recording", b"")

    def stop_recording(self) -> list[dict]:
        """The recorded requests (bodies hold secrets: never print them)."""
        http("POST", f"{self.url}/moto-api/recorder/stop-recording", b"")
        text = http("GET", f"{self.url}/moto-api/recorder/download-recording").decode()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def calls(self) -> list[dict]:
        return json.loads(http("GET", f"{self.url}/_emulator/calls"))["calls"]

    def reset_calls(self) -> None:
        http("POST", f"{self.url}/_emulator/calls/reset", b"")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


def venv_python() -> str:
    out = subprocess.run([str(ROOT / "tests/emulator/setup")], check=True, capture_output=True, text=True)
    return str(Path(out.stdout.strip().splitlines()[-1]) / "bin" / "python")


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    emu = Emulator(tmp_path_factory.mktemp("emulator"))
    try:
        yield emu
    finally:
        emu.stop()


class ControlPlane:
    """A real etcd + kube-apiserver from scripts/controlplane."""

    def __init__(self, workdir: Path, bins: Path) -> None:
        self.dir = workdir
        self.bins = bins
        env = dict(os.environ, CONTROLPLANE_BIN_DIR=str(bins), CONTROLPLANE_OWNER_PID=str(os.getpid()))
        out = subprocess.run([str(ROOT / "scripts/controlplane/start"), str(workdir)], check=True,
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
        self.kubeconfig = out.stdout.strip().splitlines()[-1]
        self.env = {}
        for line in (workdir / "env").read_text().splitlines():
            line = line.strip()
            if line.startswith("export "):
                line = line[len("export "):]
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                self.env[k] = v.strip("'\"")

    def kubectl(self, *args: str, input: str | None = None, kubeconfig: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bins / "kubectl"), "--request-timeout=60s",
               f"--kubeconfig={kubeconfig or self.kubeconfig}", *args]
        p = subprocess.run(cmd, input=input, capture_output=True, text=True)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def stop(self) -> None:
        subprocess.run([str(ROOT / "scripts/controlplane/stop"), "--purge", str(self.dir)],
                       capture_output=True, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def controlplane(bins):
    work = Path(tempfile.mkdtemp(prefix="pgbaseline-deploy-cp."))
    cp = ControlPlane(work, bins)
    try:
        yield cp
    finally:
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)
