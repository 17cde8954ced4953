"""The Flux healthCheckExprs of deploy/flux/kustomization.yaml, evaluated by a real CEL (cel-go,
with the optional-types library Flux also enables) on the same fixtures as the Argo CD check.

The evaluator is kube-apiserver's: a ValidatingAdmissionPolicy whose messageExpression runs the
three expressions on a dry-run object and reports which were true. Flux binds the object's
top-level fields as variables (`status`, `metadata`); here they are `object.status` and, since
the API server sets metadata.generation itself, `object.spec.generation`. Flux's own order is
reproduced: an observedGeneration different from metadata.generation is InProgress without
evaluating anything; then inProgress, failed, current; none true: InProgress."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import DEPLOY, ROOT

CASES = yaml.safe_load((ROOT / "tests/deploy/fixtures/health-cases.yaml").read_text())
FLUX = {"Healthy": "Current", "Progressing": "InProgress", "Degraded": "Failed"}


def exprs() -> dict:
    ks = yaml.safe_load((DEPLOY / "flux" / "kustomization.yaml").read_text())
    (h,) = ks["spec"]["healthCheckExprs"]
    return {k: h[k] for k in ("inProgress", "failed", "current")}


def to_object_scope(expr: str) -> str:
    expr = re.sub(r"\bmetadata\.generation\b", "object.spec.generation", expr)
    return re.sub(r"(?<![.\w])status\b", "object.status", expr)


@pytest.fixture(scope="module")
def evaluator(controlplane):
    cp = controlplane
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "healthprobes.deploytest.pgbaseline.io"},
        "spec": {"group": "deploytest.pgbaseline.io", "scope": "Namespaced",
                 "names": {"kind": "HealthProbe", "plural": "healthprobes", "singular": "healthprobe"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(crd))
    cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/healthprobes.deploytest.pgbaseline.io")
    e = {k: to_object_scope(v) for k, v in exprs().items()}
    message = " + ".join(f"(({e[k]}) ? '{k}=true;' : '{k}=false;')" for k in ("inProgress", "failed", "current"))
    vap = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "flux-health-probe"},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["deploytest.pgbaseline.io"], "apiVersions": ["v1"],
                                                         "operations": ["CREATE"], "resources": ["healthprobes"]}]},
                 "validations": [{"expression": "false", "message": "evaluation-error", "messageExpression": message}]}}
    p = cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(vap), check=False)
    assert p.returncode == 0, f"the expressions do not compile in cel-go:\n{p.stderr}"
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": "flux-health-probe"},
               "spec": {"policyName": "flux-health-probe", "validationActions": ["Deny"]}}
    cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(binding))
    cp.kubectl("create", "namespace", "flux-probe", check=False)

    def evaluate(obj: dict) -> dict | None:
        probe = {"apiVersion": "deploytest.pgbaseline.io/v1", "kind": "HealthProbe",
                 "metadata": {"name": "probe", "namespace": "flux-probe"},
                 "spec": {"generation": obj["metadata"]["generation"]}}
        if "status" in obj:
            probe["status"] = obj["status"]
        for _ in range(30):  # the policy takes a moment to become active
            p = cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False)
            if p.returncode != 0:
                break
            import time
            time.sleep(1)
        if "evaluation-error" in p.stderr:
            return None
        found = dict(re.findall(r"(inProgress|failed|current)=(true|false);", p.stderr))
        assert len(found) == 3, p.stderr
        return {k: v == "true" for k, v in found.items()}

    return evaluate


def flux_status(obj: dict, results: dict | None) -> str:
    status = obj.get("status") or {}
    if "observedGeneration" in status and status["observedGeneration"] != obj["metadata"]["generation"]:
        return "InProgress"
    if results is None:
        return "Error"
    for key, verdict in (("inProgress", "InProgress"), ("failed", "Failed"), ("current", "Current")):
        if results[key]:
            return verdict
    return "InProgress"


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_flux_health(evaluator, case):
    got = flux_status(case["obj"], evaluator(case["obj"]))
    want = FLUX[case["expect"]]
    if "status" not in case["obj"]:
        # Flux binds only the fields the object has; with no status yet an expression cannot be
        # evaluated and Flux keeps waiting (in progress) until the operator writes one.
        assert got in ("Error", "InProgress")
    else:
        assert got == want, f"{case['name']}: Flux would say {got}, Argo CD says {case['expect']}"
