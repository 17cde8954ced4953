"""Argo CD health check (deploy/argocd/health.lua) run by a real Lua interpreter on status
fixtures, the way Argo CD runs it: the object as global `obj`, the script's returned table."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from conftest import DEPLOY, ROOT

CASES = yaml.safe_load((ROOT / "tests/deploy/fixtures/health-cases.yaml").read_text())


def lua_literal(v) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + "".join(c if (c.isascii() and c.isalnum()) or c in " .,:;-_/()=+!?'" else "\\%03d" % ord(c) for c in v.encode("utf-8").decode("latin-1")) + '"'
    if isinstance(v, list):
        return "{" + ", ".join(lua_literal(x) for x in v) + "}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(x)}" for k, x in v.items() if x is not None) + "}"
    raise TypeError(type(v))


def interpreters() -> list[str]:
    found = [p for p in (shutil.which(n) for n in ("lua5.1", "lua5.4", "luajit")) if p]
    if found:
        return found
    # Argo CD runs gopher-lua, a Lua 5.1: install Debian's lua5.1 (the test needs a real Lua).
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(["apt-get", "install", "-y", "-q", "lua5.1"], env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "lua5.1"], env=env, capture_output=True)
    found = [p for p in (shutil.which(n) for n in ("lua5.1", "lua5.4", "luajit")) if p]
    if not found:
        pytest.fail("no Lua interpreter: apt-get install lua5.1 failed")
    return found


@pytest.fixture(scope="module")
def luas():
    return interpreters()


def run_health(lua: str, obj: dict) -> tuple[str, str]:
    script = (DEPLOY / "argocd" / "health.lua").read_text()
    program = (f"obj = {lua_literal(obj)}\n"
               f"local function health()\n{script}\nend\n"
               "local hs = health()\n"
               "io.write(tostring(hs.status), '\\t', tostring(hs.message))\n")
    p = subprocess.run([lua, "-"], input=program, capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    status, _, message = p.stdout.partition("\t")
    return status, message


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_argocd_health(luas, case):
    for lua in luas:
        status, message = run_health(lua, case["obj"])
        assert status == case["expect"], f"{os.path.basename(lua)}: {status} ({message})"
        assert message and message != "nil"
        if case.get("message_contains"):
            assert case["message_contains"] in message


def test_health_script_is_lua51_clean(luas):
    # gopher-lua is Lua 5.1: no goto, no integer division, no bitwise operators.
    script = (DEPLOY / "argocd" / "health.lua").read_text()
    for token in ("goto ", "//", "<<", ">>"):
        assert token not in script.replace("-- ", "")
