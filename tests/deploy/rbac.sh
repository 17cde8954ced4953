#!/usr/bin/env bash
# rbac.sh — the chart's RBAC, proven against a real kube-apiserver with a token of the chart's
# ServiceAccount (TokenRequest), and then the operator itself running with only that token:
#   1. the CRD and the chart's ServiceAccount + (Cluster)Role(Binding)s are applied as admin;
#   2. `kubectl auth can-i`, as the ServiceAccount (a token-only kubeconfig), allows every verb the
#      operator needs and forbids the rest (deleting policies, writing specs, Secrets, other
#      Leases, core events, pods, escalation...); a watchNamespaces install is namespace-bound;
#   3. when `pgbaseline run` exists: it runs with the token against the AWS emulator, every
#      example policy gets a Ready condition, the Lease is held, Events are written, /healthz,
#      /readyz and /metrics answer; then, with IAM enforcement and a policy lacking
#      rds:ModifyDBParameterGroup, the policy turns Stalled=True/AccessDenied and the operator
#      keeps running (no crash loop), and Argo CD's health.lua calls that object Degraded.
# Last line: 'N passed, M failed'; exit status 1 on failure.  RBAC_KEEP=1 keeps the temp dir.
# shellcheck disable=SC2015,SC2317,SC1091  # `ok ... || bad ...` (ok never fails); functions run via traps/retries; env written at runtime
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

PASSED=0 FAILED=0
ok()   { PASSED=$((PASSED + 1)); printf 'ok   %2d %s\n' $((PASSED + FAILED)) "$1"; }
bad()  { FAILED=$((FAILED + 1)); printf 'FAIL %2d %s\n' $((PASSED + FAILED)) "$1"; [[ -z ${2:-} ]] || printf '%s\n' "$2" | sed 's/^/       | /' | tail -n 25; }
skip() { printf 'skip    %s\n' "$1"; }
finish() { printf '%d passed, %d failed\n' "$PASSED" "$FAILED"; (( FAILED == 0 )); exit $?; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgbaseline-rbac.XXXXXX")
OP_PID='' EMU_PID=''
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  [[ -n $OP_PID ]] && kill "$OP_PID" 2>/dev/null && wait "$OP_PID" 2>/dev/null
  [[ -n $EMU_PID ]] && kill -- "-$EMU_PID" 2>/dev/null
  "$ROOT/scripts/controlplane/stop" --purge "$WORK/cp" >/dev/null 2>&1 || true
  if [[ ${RBAC_KEEP:-0} == 1 ]] || (( FAILED )); then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

BIN_DIR=${PGBASELINE_K8S_BIN_DIR:-$("$ROOT/scripts/controlplane/build-bins" </dev/null | tail -n1)}
VENV=$("$ROOT/tests/emulator/setup" | tail -n1)
PY="$VENV/bin/python"
HELM="$BIN_DIR/helm"
k()  { "$BIN_DIR/kubectl" --request-timeout=60s --kubeconfig="$WORK/cp/kubeconfig" "$@"; }
ks() { "$BIN_DIR/kubectl" --request-timeout=60s --kubeconfig="$WORK/sa.kubeconfig" "$@"; }
NS=pgbaseline-system                  # release namespace
POLICY_NS=platform-security           # where the examples live
SA=pgbaseline
SA_USER="system:serviceaccount:$NS:$SA"

# ---------------------------------------------------------------- control plane + CRD + RBAC
t0=$SECONDS
if out=$(CONTROLPLANE_BIN_DIR=$BIN_DIR CONTROLPLANE_OWNER_PID=$$ "$ROOT/scripts/controlplane/start" "$WORK/cp" 2>&1 </dev/null); then
  ok "control plane started in $((SECONDS - t0))s"
else
  bad "control plane start" "$out"; finish
fi

CRD="$ROOT/charts/pgbaseline/crds/databasesecuritypolicies.pgbaseline.io.yaml"
if out=$(k apply --server-side -f "$CRD" 2>&1); then
  ok "CRD (charts/pgbaseline/crds) accepted by kube-apiserver"
else
  bad "CRD (charts/pgbaseline/crds) accepted by kube-apiserver" "$out"
  # Keep proving RBAC and the operator with the two refused CEL rules replaced (see the report).
  "$PY" - "$CRD" "$WORK/crd-workaround.yaml" <<'PYEOF'
import sys
s = open(sys.argv[1]).read()
s = s.replace("rule: size(self) > 0", "rule: has(self.transport) || has(self.encryption) || has(self.logging) || "
              "has(self.audit) || has(self.auth) || has(self.network) || has(self.maintenance)")
s = s.replace("                x-kubernetes-validations:\n                - message: controlModes keys",
              "                maxProperties: 19\n                x-kubernetes-validations:\n                - message: controlModes keys", 1)
open(sys.argv[2], "w").write(s)
PYEOF
  if out=$(k apply --server-side -f "$WORK/crd-workaround.yaml" 2>&1); then
    skip "continuing with a workaround CRD (posture rule as has(...) chain, controlModes maxProperties: 19)"
  else
    bad "workaround CRD" "$out"; finish
  fi
fi
# `kubectl wait` fails at once ("accessor error") on a CRD whose status has no conditions yet,
# right after the apply: wait for the apiserver to give it some, then for Established.
crd_established() { # crd_established NAME: Established within 60s
  local i
  for ((i = 0; i < 120; i++)); do
    [[ -n $(k get "crd/$1" -o 'jsonpath={.status.conditions}' 2>/dev/null) ]] && break
    sleep 0.5
  done
  k wait --for=condition=Established --timeout=60s "crd/$1" >/dev/null
}
crd_established databasesecuritypolicies.pgbaseline.io
if out=$(k apply --server-side -f "$ROOT/charts/pgbaseline/crds/awsaccounts.pgbaseline.io.yaml" 2>&1) \
   && crd_established awsaccounts.pgbaseline.io; then
  ok "AwsAccount CRD (charts/pgbaseline/crds) accepted by kube-apiserver"
else
  bad "AwsAccount CRD accepted by kube-apiserver" "$out"; finish
fi
# The two policy report APIs (upstream CRDs): the operator writes openreports.io and clears
# wgpolicyk8s.io, with nothing but the chart's RBAC.
for f in openreports.io_reports wgpolicyk8s.io_policyreports; do
  k apply --server-side -f "$ROOT/tests/fixtures/policy-report-crds/$f.yaml" >/dev/null \
    && crd_established "${f#*_}.${f%%_*}" \
    || { bad "policy report CRD $f" "$(k get crd 2>&1)"; finish; }
done

render_rbac() { # render_rbac [helm args...]: the ServiceAccount and every RBAC object of the chart
  "$HELM" template pgbaseline "$ROOT/charts/pgbaseline" -n "$NS" \
    --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml \
    --show-only templates/leader-election-rbac.yaml --show-only templates/accounts-rbac.yaml "$@"
}
k create namespace "$NS" >/dev/null && k create namespace "$POLICY_NS" >/dev/null && k create namespace other-team >/dev/null
if out=$(render_rbac | k apply --server-side -f - 2>&1); then
  ok "chart ServiceAccount + RBAC applied ($(grep -c . <<<"$out") objects)"
else
  bad "chart RBAC applied" "$out"; finish
fi

# ---------------------------------------------------------------- token-only kubeconfig
source "$WORK/cp/env"
sa_kubeconfig() { # sa_kubeconfig SA NAMESPACE FILE
  local token
  token=$(k create token "$1" -n "$2" --duration=30m) || return 1
  cat >"$3" <<KEOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: '$APISERVER_URL', certificate-authority-data: '$(base64 -w0 <"$APISERVER_CA")'}
users:
- name: sa
  user: {token: '$token'}
contexts:
- name: test
  context: {cluster: test, user: sa, namespace: '$2'}
current-context: test
KEOF
  chmod 600 "$3"
}
if sa_kubeconfig "$SA" "$NS" "$WORK/sa.kubeconfig" \
   && who=$(ks auth whoami -o jsonpath='{.status.userInfo.username}' 2>&1) && [[ $who == "$SA_USER" ]]; then
  ok "TokenRequest token; token-only kubeconfig authenticates as $SA_USER"
else
  bad "ServiceAccount token kubeconfig" "${who:-}"; finish
fi

# ---------------------------------------------------------------- can-i: allowed
can()    { ks auth can-i "$@" 2>/dev/null; }   # prints yes/no
expect_yes=(
  "get databasesecuritypolicies.pgbaseline.io -n $POLICY_NS"
  "list databasesecuritypolicies.pgbaseline.io -A"
  "watch databasesecuritypolicies.pgbaseline.io -A"
  "get databasesecuritypolicies.pgbaseline.io/status -n $POLICY_NS"
  "patch databasesecuritypolicies.pgbaseline.io/status -n $POLICY_NS"
  "patch databasesecuritypolicies.pgbaseline.io/status -n other-team"
  "create events.events.k8s.io -n $POLICY_NS"
  "patch events.events.k8s.io -n $POLICY_NS"
  "create reports.openreports.io -n $POLICY_NS"
  "patch reports.openreports.io -n $POLICY_NS"
  "list reports.openreports.io -n $POLICY_NS"
  "delete reports.openreports.io -n $POLICY_NS"
  "patch policyreports.wgpolicyk8s.io -n $POLICY_NS"
  "delete policyreports.wgpolicyk8s.io -n $POLICY_NS"
  "create leases.coordination.k8s.io -n $NS"
  "get leases.coordination.k8s.io/pgbaseline-leader -n $NS"
  "update leases.coordination.k8s.io/pgbaseline-leader -n $NS"
  "patch leases.coordination.k8s.io/pgbaseline-leader -n $NS"
  "get awsaccounts.pgbaseline.io"
  "list awsaccounts.pgbaseline.io"
  "watch awsaccounts.pgbaseline.io"
  "patch awsaccounts.pgbaseline.io/status"
  "get namespaces/$POLICY_NS"
  "get secrets/pgbaseline-external-ids -n $NS"
)
expect_no=(
  "delete databasesecuritypolicies.pgbaseline.io -n $POLICY_NS"
  "deletecollection databasesecuritypolicies.pgbaseline.io -n $POLICY_NS"
  "create databasesecuritypolicies.pgbaseline.io -n $POLICY_NS"
  "update databasesecuritypolicies.pgbaseline.io -n $POLICY_NS"
  "patch databasesecuritypolicies.pgbaseline.io -n $POLICY_NS"
  "update databasesecuritypolicies.pgbaseline.io/status -n $POLICY_NS"
  "get secrets -n $NS"
  "list secrets -A"
  "watch secrets -n $POLICY_NS"
  "get configmaps -n $NS"
  "update reports.openreports.io -n $POLICY_NS"
  "deletecollection policyreports.wgpolicyk8s.io -n $POLICY_NS"
  "create events -n $POLICY_NS"
  "delete events.events.k8s.io -n $POLICY_NS"
  "list leases.coordination.k8s.io -n $NS"
  "get leases.coordination.k8s.io/kube-controller-manager -n $NS"
  "delete leases.coordination.k8s.io/pgbaseline-leader -n $NS"
  "create leases.coordination.k8s.io -n kube-system"
  "create pods -n $NS"
  "list nodes"
  "list namespaces"
  "create serviceaccounts/token -n $NS"
  "delete customresourcedefinitions.apiextensions.k8s.io"
  "escalate clusterroles.rbac.authorization.k8s.io"
  "bind clusterroles.rbac.authorization.k8s.io"
  "impersonate users"
  "create rolebindings.rbac.authorization.k8s.io -n $NS"
  "create awsaccounts.pgbaseline.io"
  "update awsaccounts.pgbaseline.io"
  "patch awsaccounts.pgbaseline.io"
  "delete awsaccounts.pgbaseline.io"
  "get secrets/pgbaseline-external-ids -n $POLICY_NS"
  "get secrets/another-secret -n $NS"
  "update namespaces/$POLICY_NS"
)
split_sub() { # 'verb res/sub rest' -> can-i args (subresource via --subresource)
  local verb=$1 res=$2; shift 2
  if [[ $res == */status ]]; then echo "$verb ${res%/status} --subresource=status $*"
  elif [[ $res == serviceaccounts/token ]]; then echo "$verb serviceaccounts --subresource=token $*"
  else echo "$verb $res $*"; fi
}
wrong=()
for c in "${expect_yes[@]}"; do
  # shellcheck disable=SC2046,SC2086  # word splitting wanted
  [[ $(can $(split_sub $c)) == yes ]] || wrong+=("should be allowed: $c")
done
(( ${#wrong[@]} == 0 )) && ok "allowed: all ${#expect_yes[@]} verbs the operator uses" || bad "allowed verbs" "$(printf '%s\n' "${wrong[@]}")"
wrong=()
for c in "${expect_no[@]}"; do
  # shellcheck disable=SC2046,SC2086  # word splitting wanted
  [[ $(can $(split_sub $c)) == no ]] || wrong+=("should be forbidden: $c")
done
(( ${#wrong[@]} == 0 )) && ok "forbidden: ${#expect_no[@]} verbs it must not have (delete/write policies, Secrets, other Leases, escalation...)" || bad "forbidden verbs" "$(printf '%s\n' "${wrong[@]}")"

if out=$(ks get secrets -n "$NS" 2>&1); then
  bad "reading a Secret is refused by the API server" "$out"
elif [[ $out == *Forbidden* || $out == *forbidden* ]]; then
  ok "reading Secrets: Forbidden from the API server itself"
else
  bad "reading Secrets: Forbidden" "$out"
fi
list=$(ks auth can-i --list -n "$POLICY_NS" 2>&1)
if ! grep -E '^\S+\s+\[\]\s+\[\]\s+\[\*\]' <<<"$list" | grep -v selfsubject >/dev/null && ! grep -q 'secrets' <<<"$list"; then
  ok "can-i --list: no wildcard verbs, no secrets"
else
  bad "can-i --list" "$list"
fi

# watchNamespaces: a Role per namespace, nothing cluster-wide.
SA2=pgbaseline-ns
if out=$(render_rbac --set watchNamespaces="{$POLICY_NS}" --set fullnameOverride=$SA2 | k apply --server-side -f - 2>&1) \
   && sa_kubeconfig "$SA2" "$NS" "$WORK/sa2.kubeconfig"; then
  c2() { "$BIN_DIR/kubectl" --kubeconfig="$WORK/sa2.kubeconfig" auth can-i "$@" 2>/dev/null; }
  r="$(c2 list databasesecuritypolicies.pgbaseline.io -n $POLICY_NS)/$(c2 patch databasesecuritypolicies.pgbaseline.io --subresource=status -n $POLICY_NS)/$(c2 create events.events.k8s.io -n $POLICY_NS)"
  r="$r|$(c2 list databasesecuritypolicies.pgbaseline.io -n other-team)/$(c2 list databasesecuritypolicies.pgbaseline.io -A)/$(c2 create events.events.k8s.io -n other-team)"
  [[ $r == "yes/yes/yes|no/no/no" ]] && ok "watchNamespaces install: allowed in $POLICY_NS only" || bad "watchNamespaces RBAC" "$r"
else
  bad "watchNamespaces RBAC applied" "$out"
fi

# ---------------------------------------------------------------- the operator with the token
OP="${PGBASELINE_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/pgbaseline/target}/debug/pgbaseline}"
if [[ ! -x $OP ]] || ! "$OP" run --help >/dev/null 2>&1; then
  skip "operator run (no \`pgbaseline run\` in $OP yet)"; finish
fi

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EMU_PORT=$(free_port); EMU="http://127.0.0.1:$EMU_PORT"
mkdir -p "$WORK/emu"
( cd "$WORK/emu" && exec setsid "$PY" "$HERE/iam_emulator.py" --port "$EMU_PORT" >"$WORK/emulator.log" 2>&1 ) &
EMU_PID=$!
for _ in $(seq 120); do grep -q 'listening on' "$WORK/emulator.log" 2>/dev/null && break; sleep 0.5; done
grep -q 'listening on' "$WORK/emulator.log" || { bad "emulator start" "$(tail -n 20 "$WORK/emulator.log")"; finish; }

METRICS_PORT=$(free_port)
# The operator's command line is exactly the chart's (default values, this release namespace),
# with only the metrics address moved to a free loopback port.
mapfile -t CHART_ARGS < <("$HELM" template pgbaseline "$ROOT/charts/pgbaseline" -n "$NS" --show-only templates/deployment.yaml \
  | "$PY" -c 'import sys, yaml; d = yaml.safe_load(sys.stdin); print("\n".join(d["spec"]["template"]["spec"]["containers"][0]["args"]))')
OP_ARGS=()
for a in "${CHART_ARGS[@]}"; do
  [[ $a == --metrics-addr=* ]] && a="--metrics-addr=127.0.0.1:$METRICS_PORT"
  OP_ARGS+=("$a")
done
start_operator() { # start_operator ACCESS_KEY SECRET LOG
  env -u AWS_PROFILE KUBECONFIG="$WORK/sa.kubeconfig" AWS_ENDPOINT_URL="$EMU" AWS_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID="$1" AWS_SECRET_ACCESS_KEY="$2" \
    POD_NAMESPACE="$NS" POD_NAME=pgbaseline-rbac-test RUST_LOG=info,pgbaseline=debug \
    "$OP" "${OP_ARGS[@]}" >"$3" 2>&1 &
  OP_PID=$!
}
stop_operator() { [[ -n $OP_PID ]] && kill "$OP_PID" 2>/dev/null && wait "$OP_PID" 2>/dev/null; OP_PID=; }
wait_for() { # wait_for SECONDS CMD...: retry CMD until it succeeds; give up when the operator dies
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    (( SECONDS < deadline )) || return 1
    [[ -z $OP_PID ]] || kill -0 "$OP_PID" 2>/dev/null || return 2
    sleep 1
  done
}
operator_died() { # operator_died LOG: one failure with the reason, then stop (the rest would only repeat it)
  local why
  why=$(grep -m1 -E 'panicked|^Error|error:' "$1" || true)
  bad "operator exited: ${why:-see log}" "$(grep -v '^ ' "$1" | head -n 15)"
  stop_operator; finish
}
jp() { k get dbsp "$1" -n "$POLICY_NS" -o jsonpath="$2" 2>/dev/null; }

iam_user() { # iam_user [ACTION...]: fresh small fleet, a user with deploy/iam-policy.json's actions
  # (minus ACTIONs; moto evaluates actions only), IAM enforcement on; prints "KEY SECRET"
  "$PY" - "$EMU" "$ROOT/deploy/iam-policy.json" "$@" <<'PYEOF'
import json, sys, urllib.request
import boto3
ep, path, drop = sys.argv[1], sys.argv[2], set(sys.argv[3:])
def post(p, body):
    urllib.request.urlopen(urllib.request.Request(ep + p, data=body, method="POST",
                                                  headers={"Content-Type": "text/plain"})).read()
post("/moto-api/reset-auth", b"inf")
post("/moto-api/reset", b"")
import subprocess, os
subprocess.run([sys.executable, os.path.join(os.path.dirname(path), "..", "tests/emulator/seed.py"),
                "--endpoint", ep, "--fleet", "small"], check=True, capture_output=True,
               env=dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"))
doc = json.load(open(path))
st = []
for s in doc["Statement"]:
    if s["Effect"] == "Allow":
        acts = [a for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]) if a not in drop]
        if acts:
            st.append({"Effect": "Allow", "Action": acts, "Resource": "*"})
iam = boto3.client("iam", endpoint_url=ep, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
iam.create_user(UserName="pgbaseline-operator")
arn = iam.create_policy(PolicyName="pgbaseline-operator", PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": st}))["Policy"]["Arn"]
iam.attach_user_policy(UserName="pgbaseline-operator", PolicyArn=arn)
key = iam.create_access_key(UserName="pgbaseline-operator")["AccessKey"]
post("/_emulator/calls/reset", b"")
post("/moto-api/reset-auth", b"0")
print(key["AccessKeyId"], key["SecretAccessKey"])
PYEOF
}
creds=$(iam_user) || { bad "IAM user with deploy/iam-policy.json" "$creds"; finish; }
read -r AK SK <<<"$creds"
start_operator "$AK" "$SK" "$WORK/operator.log"
for f in "$ROOT"/examples/*.yaml; do k apply -f "$f" >/dev/null || bad "apply $(basename "$f")"; done
names=$(k get dbsp -n "$POLICY_NS" -o jsonpath='{.items[*].metadata.name}')
has_ready() { for n in $names; do [[ -n $(jp "$n" '{.status.conditions[?(@.type=="Ready")].status}') ]] || return 1; done; }
t0=$SECONDS
wait_for 180 has_ready; rc=$?
(( rc == 2 )) && operator_died "$WORK/operator.log"
if (( rc == 0 )); then
  ok "operator (\`pgbaseline ${OP_ARGS[*]}\`, the chart's args) with the SA token: every example has a Ready condition ($((SECONDS - t0))s): $(for n in $names; do printf '%s=%s/%s ' "$n" "$(jp "$n" '{.status.conditions[?(@.type=="Ready")].status}')" "$(jp "$n" '{.status.conditions[?(@.type=="Ready")].reason}')"; done)"
else
  bad "every example gets a Ready condition in 180s" "$(k get dbsp -A -o yaml | grep -A3 'type: Ready'; tail -n 20 "$WORK/operator.log")"
fi
# Enforce end to end under IAM enforcement with exactly the policy's actions: the Aurora policy
# (reboot: Immediately) converges to Ready=True, nothing is Stalled, remediation events exist.
compliant() { [[ $(jp ledger-aurora '{.status.conditions[?(@.type=="Ready")].status}') == True ]]; }
t0=$SECONDS
wait_for 180 compliant; rc=$?
(( rc == 2 )) && operator_died "$WORK/operator.log"
stalled_any=$(for n in $names; do [[ $(jp "$n" '{.status.conditions[?(@.type=="Stalled")].status}') == True ]] && echo "$n: $(jp "$n" '{.status.conditions[?(@.type=="Stalled")].message}')"; done)
remediated=$(k get events.events.k8s.io -n "$POLICY_NS" -o jsonpath='{range .items[?(@.reason=="Remediated")]}{.regarding.name}{" "}{end}' 2>/dev/null | wc -w)
if (( rc == 0 )) && [[ -z $stalled_any ]] && (( remediated > 0 )); then
  ok "Enforce under IAM enforcement with deploy/iam-policy.json: ledger-aurora Ready=True in $((SECONDS - t0))s, nothing Stalled, $remediated Remediated events"
else
  bad "Enforce under IAM enforcement with deploy/iam-policy.json" "ready(ledger-aurora)=$(jp ledger-aurora '{.status.conditions[?(@.type=="Ready")].reason}') stalled: ${stalled_any:-none} remediated events: $remediated"
fi
calls=$("$PY" - "$EMU" <<'PYEOF'
import json, sys, urllib.request
import boto3, botocore.exceptions
ep = sys.argv[1]
calls = json.load(urllib.request.urlopen(ep + "/_emulator/calls"))["calls"]
writes = sorted({c["action"] for c in calls if c["status"] == 200 and not c["action"].startswith(("Describe", "List"))})
refused = sum(1 for c in calls if c["status"] in (401, 403))
try:  # enforcement really is on: credentials of no IAM user are refused
    boto3.client("rds", endpoint_url=ep, region_name="us-east-1", aws_access_key_id="nobody",
                 aws_secret_access_key="x").describe_db_instances()
    enforced = "no"
except botocore.exceptions.ClientError as e:
    enforced = e.response["Error"]["Code"]
print(f"refused={refused} enforced={enforced} writes={','.join(writes)}")
PYEOF
)
if [[ $calls == "refused=0 enforced=InvalidClientTokenId writes="?* ]]; then
  ok "AWS calls under IAM enforcement: none refused; writes made: ${calls##*writes=}"
else
  bad "AWS calls under IAM enforcement" "$calls"
fi
if kill -0 "$OP_PID" 2>/dev/null; then ok "operator still running"; else bad "operator exited" "$(tail -n 30 "$WORK/operator.log")"; fi
holder=$(k get lease pgbaseline-leader -n "$NS" -o jsonpath='{.spec.holderIdentity}' 2>&1)
# The holder is the pod name plus a per-process suffix (two replicas never share an identity).
[[ $holder == pgbaseline-rbac-test-* ]] && ok "leader Lease $NS/pgbaseline-leader held by $holder" || bad "leader Lease" "$holder"
ev=$(k get events.events.k8s.io -n "$POLICY_NS" -o jsonpath='{range .items[*]}{.reason}{" "}{end}' 2>&1)
[[ -n ${ev// /} ]] && ok "Events written (events.k8s.io): $(tr ' ' '\n' <<<"$ev" | grep . | sort | uniq -c | awk '{printf "%s×%s ", $2, $1}')" || bad "Events written" "$ev"
reps=$(k get reports.openreports.io -n "$POLICY_NS" -o jsonpath='{range .items[*]}{.metadata.labels.pgbaseline\.io/database}{" "}{end}' 2>&1)
[[ -n ${reps// /} ]] && ok "policy reports written with the SA token (openreports.io): $reps" || bad "policy reports written" "$reps"
probe=""
for p in /healthz /readyz /metrics; do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$METRICS_PORT$p"); probe+="$p=$code "
done
[[ $probe == "/healthz=200 /readyz=200 /metrics=200 " ]] && ok "probes and metrics: $probe" || bad "probes and metrics" "$probe"
denied=$(grep -ciE 'forbidden|\b403\b' "$WORK/operator.log")
(( denied == 0 )) && ok "no Forbidden from the API server in the operator log" || bad "Forbidden in the operator log" "$(grep -iE 'forbidden|\b403\b' "$WORK/operator.log" | head -n 5)"
stop_operator

# ---------------------------------------------------------------- AccessDenied -> Stalled, no crash loop
creds=$(iam_user rds:ModifyDBParameterGroup) || { bad "IAM user without rds:ModifyDBParameterGroup" "$creds"; finish; }
read -r AK SK <<<"$creds"
k delete dbsp --all -n "$POLICY_NS" >/dev/null
k apply -f "$ROOT/examples/enforce-strict-instance.yaml" >/dev/null
start_operator "$AK" "$SK" "$WORK/operator-denied.log"
stalled() { [[ $(jp legacy-strict '{.status.conditions[?(@.type=="Stalled")].status}/{.status.conditions[?(@.type=="Stalled")].reason}') == True/AccessDenied ]]; }
t0=$SECONDS
wait_for 180 stalled; rc=$?
(( rc == 2 )) && operator_died "$WORK/operator-denied.log"
if (( rc == 0 )); then
  ok "missing rds:ModifyDBParameterGroup: Stalled=True reason AccessDenied ($((SECONDS - t0))s): $(jp legacy-strict '{.status.conditions[?(@.type=="Stalled")].message}' | cut -c1-160)"
else
  bad "Stalled=True/AccessDenied" "$(k get dbsp legacy-strict -n "$POLICY_NS" -o yaml | sed -n '/^status:/,$p' | head -n 40; tail -n 10 "$WORK/operator-denied.log")"
fi
sleep 5
if kill -0 "$OP_PID" 2>/dev/null; then ok "operator keeps running after AccessDenied (no crash loop)"; else bad "operator exited after AccessDenied" "$(tail -n 30 "$WORK/operator-denied.log")"; fi
# Argo CD's health check on the live object.
obj=$(k get dbsp legacy-strict -n "$POLICY_NS" -o json)
health=$(OBJ="$obj" "$PY" - "$ROOT" <<'PYEOF'
import json, os, shutil, subprocess, sys
sys.path.insert(0, os.path.join(sys.argv[1], "tests/deploy"))
from test_gitops_health import lua_literal
lua = next((shutil.which(n) for n in ("lua5.1", "lua5.4", "luajit") if shutil.which(n)), None)
if lua is None:
    print("no-lua"); sys.exit(0)
script = open(os.path.join(sys.argv[1], "deploy/argocd/health.lua")).read()
prog = f"obj = {lua_literal(json.loads(os.environ['OBJ']))}\nlocal function h()\n{script}\nend\nlocal hs = h()\nio.write(hs.status)"
p = subprocess.run([lua, "-"], input=prog, capture_output=True, text=True)
print(p.stdout or p.stderr.strip()[-500:])
PYEOF
)
case $health in
  Degraded) ok "Argo CD health.lua on the live Stalled policy: Degraded" ;;
  no-lua) skip "Argo CD health on the live object (no Lua interpreter; test_gitops_health installs one)" ;;
  *) bad "Argo CD health.lua on the live Stalled policy" "$health" ;;
esac
stop_operator
finish
