# shellcheck shell=bash
# lib.sh — helpers shared by start, stop, restart-apiserver (sourced, not executed).

# shellcheck disable=SC2034  # used by the scripts that source this file
CP_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
START_TIMEOUT=${START_TIMEOUT:-180}   # seconds per component (loaded 2-core box: apiserver 10-60 s)
STOP_TIMEOUT=${STOP_TIMEOUT:-15}      # seconds between SIGTERM and SIGKILL

log() { printf '[controlplane] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# cp_dir DIR -> absolute path (created)
cp_dir() {
  [[ -n ${1:-} ]] || die "usage: $(basename "$0") DIR"
  mkdir -p "$1" && (cd "$1" && pwd)
}

# ---------------------------------------------------------------- processes
alive() { # <pid>: exists and is not a zombie
  local s
  [[ $1 =~ ^[0-9]+$ && -r /proc/$1/stat ]] || return 1
  s=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $s && $s != Z && $s != X ]]
}

# pid_is <pid> <binary-name>: alive and argv[0] ends in /<name> (guards against PID reuse)
pid_is() {
  alive "$1" || return 1
  local argv0
  argv0=$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | head -n1) || return 1
  [[ ${argv0##*/} == "$2" ]]
}

# stop_pidfile <pidfile> <binary-name>: TERM, wait STOP_TIMEOUT, KILL; removes the pid file
stop_pidfile() {
  local f=$1 name=$2 pid i
  [[ -f $f ]] || return 0
  pid=$(<"$f")
  if pid_is "$pid" "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for (( i = 0; i < STOP_TIMEOUT * 10; i++ )); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      log "$name ($pid) ignored SIGTERM for ${STOP_TIMEOUT}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for (( i = 0; i < 50; i++ )); do alive "$pid" || break; sleep 0.1; done
    fi
  fi
  rm -f "$f"
}

# spawn <logfile> <pidfile> <cmd...>: detached from the caller (own session, no tty, stdin from
# /dev/null, stdout/stderr to the log) so that a harness that waits for EOF on its pipes, or that
# kills its process group, neither hangs nor takes the control plane down with it.
spawn() {
  local logf=$1 pidf=$2; shift 2
  # non-interactive bash: the background child is not a group leader, so setsid does not fork
  # and $! is the daemon's own PID. Close every inherited fd above 2 (e.g. a build-bins lock).
  (
    for fd in "/proc/$BASHPID/fd/"*; do fd=${fd##*/}; if (( fd > 2 )); then eval "exec $fd>&-" 2>/dev/null || true; fi; done
    exec setsid "$@"
  ) </dev/null >>"$logf" 2>&1 &
  echo $! >"$pidf"
}

wait_for() { # <what> <pid> <logfile> <cmd...>: poll until cmd succeeds, pid dies, or timeout
  local what=$1 pid=$2 logf=$3; shift 3
  local deadline=$(( SECONDS + START_TIMEOUT ))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$pid"; then log "$what exited early; last log lines:"; tail -n 30 "$logf" >&2; return 1; fi
    if (( SECONDS >= deadline )); then log "$what not ready after ${START_TIMEOUT}s; last log lines:"; tail -n 30 "$logf" >&2; return 1; fi
    sleep 0.25
  done
}

# ---------------------------------------------------------------- ports
port_in_use() { # LISTEN sockets from /proc (no ss/netstat needed)
  local hex; hex=$(printf ':%04X' "$1")
  awk -v h="$hex" 'FNR>1 && substr($2, length($2)-4)==h && $4=="0A" {f=1} END {exit !f}' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# ---------------------------------------------------------------- kube-apiserver
admin_curl() { # <url>: 2xx with the admin client cert
  curl -fsS --max-time 5 --cacert "$CP_DIR/pki/ca.crt" --cert "$CP_DIR/pki/admin.crt" --key "$CP_DIR/pki/admin.key" "$@"
}

# start_apiserver: needs CP_DIR, BIN_DIR, ETCD_PORT, APISERVER_PORT; sets APISERVER_PID
start_apiserver() {
  local pki="$CP_DIR/pki"
  local args=(
    --etcd-servers="http://127.0.0.1:$ETCD_PORT"
    --bind-address=127.0.0.1 --secure-port="$APISERVER_PORT"
    # nothing dials the advertise address: the endpoint reconciler is off
    --advertise-address=127.0.0.1 --endpoint-reconciler-type=none
    --cert-dir="$pki" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key"
    --client-ca-file="$pki/ca.crt"
    --authorization-mode=RBAC
    --service-cluster-ip-range=10.0.0.0/24
    --service-account-issuer="https://127.0.0.1:$APISERVER_PORT"
    --service-account-key-file="$pki/sa.pub"
    --service-account-signing-key-file="$pki/sa.key"
    --disable-admission-plugins=ServiceAccount
    --allow-privileged=true
    --profiling=false
    --v="${KAS_VERBOSITY:-1}"
  )
  # shellcheck disable=SC2206  # KAS_EXTRA_ARGS is intentionally word-split
  args+=( ${KAS_EXTRA_ARGS:-} )
  printf -- '--- kube-apiserver start %s\n' "$(date -u +%FT%TZ)" >>"$CP_DIR/kube-apiserver.log"
  spawn "$CP_DIR/kube-apiserver.log" "$CP_DIR/kube-apiserver.pid" "$BIN_DIR/kube-apiserver" "${args[@]}"
  APISERVER_PID=$(<"$CP_DIR/kube-apiserver.pid")
  local base="https://127.0.0.1:$APISERVER_PORT"
  wait_for kube-apiserver "$APISERVER_PID" "$CP_DIR/kube-apiserver.log" admin_curl "$base/readyz" || return 1
  # like envtest: also wait until the 'default' namespace exists
  wait_for "namespace default" "$APISERVER_PID" "$CP_DIR/kube-apiserver.log" admin_curl "$base/api/v1/namespaces/default" || return 1
}

write_env() { # DIR/env: shell exports for tests (source it)
  cat >"$CP_DIR/env.tmp" <<EOF
# written by scripts/controlplane/start; source it
export CONTROLPLANE_DIR='$CP_DIR'
export CONTROLPLANE_BIN_DIR='$BIN_DIR'
export KUBECONFIG='$CP_DIR/kubeconfig'
export APISERVER_URL='https://127.0.0.1:$APISERVER_PORT'
export APISERVER_PORT='$APISERVER_PORT'
export APISERVER_PID='$APISERVER_PID'
export APISERVER_CA='$CP_DIR/pki/ca.crt'
export ETCD_URL='http://127.0.0.1:$ETCD_PORT'
export ETCD_PORT='$ETCD_PORT'
export ETCD_PEER_PORT='$ETCD_PEER_PORT'
export ETCD_PID='$ETCD_PID'
export KUBECTL='$BIN_DIR/kubectl'
export HELM='$BIN_DIR/helm'
export PATH="$BIN_DIR:\$PATH"   # kubectl/helm matching the apiserver first
EOF
  mv -f "$CP_DIR/env.tmp" "$CP_DIR/env"
}
