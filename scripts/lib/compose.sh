# shellcheck shell=bash
# Shared by scripts/build-image, compose-up/-down, swarm-up/-down and test-compose (sourced, not run).
# Every wait has a timeout, and every failure names what failed.
#
# Settings (environment):
#   STRATO_IMAGE        image name                       (default stratolab:local)
#   STRATO_PROJECT      compose project / stack name     (default stratolab)
#   STRATO_COMPOSE      compose command, e.g. "docker-compose" (default: `docker compose` v2 if it
#                       works, else docker-compose 1.29, installed from Debian if missing)
#   STRATO_KEYS         CURVE key directory mounted into the containers (default .strato/compose/keys)
#   STRATO_DOCKERD_LOG  where a dockerd started by these scripts logs (default /var/log/stratolab-dockerd.log)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# STRATO_COMPOSE_FILE: another compose file (e.g. one from `strato compose generate`); absolute here.
COMPOSE_FILE=$(realpath -m "${STRATO_COMPOSE_FILE:-$REPO/compose/docker-compose.yml}")
WORK="$REPO/.strato/compose"
export STRATO_IMAGE=${STRATO_IMAGE:-stratolab:local}
# Absolute, so that `docker run -v` and the compose file (which resolves paths from compose/) agree.
STRATO_KEYS=$(realpath -m "${STRATO_KEYS:-$WORK/keys}")
export STRATO_KEYS
PROJECT=${STRATO_PROJECT:-stratolab}
# The uid/gid the image runs as (compose/Dockerfile's USER); key files are made readable to this group.
STRATO_GID=10001

say() { echo "[$(date +%H:%M:%S)] $*"; }
fail() { echo "ERROR: $*" >&2; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  say "installing $* with apt (Debian packages)"
  as_root apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null 2>&1
}

# Makes sure a Docker daemon answers: installs Debian's docker.io if there is no daemon binary, and
# starts dockerd in the background (logging to a file) where none runs. Returns 1 with the reason on
# stderr when the daemon cannot be brought up; callers decide whether that is fatal.
ensure_docker() {
  if docker info >/dev/null 2>&1; then return 0; fi
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    apt_install docker.io || { echo "cannot install docker.io with apt" >&2; return 1; }
  fi
  if ! command -v dockerd >/dev/null 2>&1; then echo "no dockerd binary after installing docker.io" >&2; return 1; fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "no Docker daemon answers and starting dockerd needs root (run as root, or start Docker yourself)" >&2
    return 1
  fi
  local log=${STRATO_DOCKERD_LOG:-/var/log/stratolab-dockerd.log}
  mkdir -p "$(dirname "$log")"
  say "no Docker daemon answers; starting dockerd in the background (log: $log)"
  # Its own session, so it outlives this script and whatever job control ends the script's group.
  setsid nohup dockerd >>"$log" 2>&1 </dev/null &
  local pid=$! i
  for i in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then say "dockerd (pid $pid) is up after ${i} s"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "dockerd exited at start; last lines of $log:" >&2; tail -n 15 "$log" >&2; return 1
    fi
    sleep 1
  done
  echo "dockerd (pid $pid) did not answer on its socket within 60 s; last lines of $log:" >&2
  tail -n 15 "$log" >&2
  return 1
}

# Sets COMPOSE (an array): docker compose v2 where it works, else docker-compose (1.29 from Debian).
select_compose() {
  if [ -n "${STRATO_COMPOSE:-}" ]; then read -r -a COMPOSE <<<"$STRATO_COMPOSE"
  elif docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose)
  else
    command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose || fail "cannot install docker-compose with apt"
    COMPOSE=(docker-compose)
  fi
  COMPOSE+=(-p "$PROJECT" -f "$COMPOSE_FILE")
}

# Generates the testbed's CURVE keys once (`strato keys generate`, run from the image so the host
# needs no binary) and lets the image's group read them: the directory stays 0700 root, the secret
# key files become 0640 root:$STRATO_GID, so they are mounted read-only and read by no one else.
ensure_keys() {
  if [ ! -f "$STRATO_KEYS/coordinator.key" ]; then
    mkdir -p "$STRATO_KEYS"
    docker run --rm --user 0:0 -v "$STRATO_KEYS:/keys" "$STRATO_IMAGE" keys generate /keys >/dev/null \
      || fail "could not generate CURVE keys in $STRATO_KEYS with $STRATO_IMAGE (is the image built? scripts/build-image)"
    say "generated CURVE keys in $STRATO_KEYS"
  fi
  local f
  for f in coordinator.key coordinator.pub agent.key operator.key authorized_keys; do
    [ -f "$STRATO_KEYS/$f" ] || fail "key file $STRATO_KEYS/$f is missing (delete $STRATO_KEYS to generate a fresh set)"
  done
  # One key pair per node, pinned to its id: the nodes are those whose agents/NODE.key the compose
  # file mounts. Missing ones are added (to an older key set too) and appended to authorized_keys.
  # A generated file names the ids each key may claim (`# strato-agent NAME=ID,ID`: N virtual
  # players in one process); otherwise a key claims its node's id.
  local nodes=() add=() n
  mapfile -t nodes < <(sed -n 's#.*/agents/\([A-Za-z0-9._-]*\)\.key".*#\1#p' "$COMPOSE_FILE" | sort -u)
  # Every node's claim goes to add-agents: missing keys are made, and a key whose pinned ids
  # differ from this file's (another topology used the same key directory) is pinned again.
  for n in "${nodes[@]}"; do add+=(--agent "$(agent_claim "$n")"); done
  if [ ${#add[@]} -gt 0 ]; then
    local out
    out=$(docker run --rm --user 0:0 -v "$STRATO_KEYS:/keys" "$STRATO_IMAGE" keys add-agents /keys "${add[@]}" 2>&1) \
      || fail "could not add per-node keys in $STRATO_KEYS with $STRATO_IMAGE (is the image built? scripts/build-image): $out"
    case "$out" in "every named agent"*) ;; *) say "$out" ;; esac
  fi
  for n in "${nodes[@]}"; do
    [ -f "$STRATO_KEYS/agents/$n.key" ] || fail "key file $STRATO_KEYS/agents/$n.key is missing"
  done
  chmod 0700 "$STRATO_KEYS"
  chown "0:$STRATO_GID" "$STRATO_KEYS"/* && chmod 0640 "$STRATO_KEYS"/coordinator.key "$STRATO_KEYS"/agent.key "$STRATO_KEYS"/operator.key \
    && chmod 0644 "$STRATO_KEYS"/coordinator.pub "$STRATO_KEYS"/authorized_keys \
    || fail "could not set the owner/mode of the key files in $STRATO_KEYS"
  if [ -d "$STRATO_KEYS/agents" ]; then
    chown "0:$STRATO_GID" "$STRATO_KEYS/agents" "$STRATO_KEYS"/agents/* && chmod 0750 "$STRATO_KEYS/agents" \
      && { [ -z "$(ls -A "$STRATO_KEYS/agents")" ] || chmod 0640 "$STRATO_KEYS"/agents/*; } \
      || fail "could not set the owner/mode of the per-node key files in $STRATO_KEYS/agents"
  fi
}

require_image() {
  docker image inspect "$STRATO_IMAGE" >/dev/null 2>&1 || fail "image $STRATO_IMAGE not found: build it with scripts/build-image"
}

# NAME=IDS for a node service's key: its `# strato-agent` line, else NAME=NAME.
agent_claim() {
  local line
  line=$(sed -n "s/^# strato-agent \($1=[A-Za-z0-9._,-]*\)\$/\1/p" "$COMPOSE_FILE" | head -n 1)
  echo "${line:-$1=$1}"
}

# node_ids SERVICE…: the node ids these services register (a service of N virtual players, N ids).
node_ids() { local s; for s in "$@"; do agent_claim "$s" | cut -d= -f2 | tr , '\n'; done; }

# Node ids the compose file deploys: every service but the coordinator (service name = node id,
# or the ids of its `# strato-agent` line).
compose_nodes() {
  local services=()
  mapfile -t services < <("${COMPOSE[@]}" config --services | grep -vx coordinator | sort)
  node_ids "${services[@]}" | sort
}

# The running coordinator container: compose service, or this host's task of the swarm service.
coordinator_container() {
  if [ "${MODE:-compose}" = swarm ]; then
    docker ps -q --filter "label=com.docker.swarm.service.name=${PROJECT}_coordinator" --filter status=running | head -n 1
  else
    "${COMPOSE[@]}" ps -q coordinator 2>/dev/null | head -n 1
  fi
}

# `strato status` run inside the coordinator container, with the operator key mounted there.
strato_status() {
  local c; c=$(coordinator_container)
  [ -n "$c" ] || { echo "no running coordinator container" >&2; return 1; }
  docker exec "$c" strato status --endpoint tcp://127.0.0.1:7700 --keys /run/secrets "$@"
}

# wait_status TIMEOUT_S CHECK ARGS…: polls `strato status --json` until scripts/lib/status-check
# CHECK ARGS… passes; prints progress and returns 1 (with the last status summary) on timeout.
# Time counts from WAIT_FROM (a `date +%s.%N` stamp) when set, else from the call; the seconds
# waited are left in WAITED.
wait_status() {
  local timeout=$1; shift
  local start now json out rc=1 shown=""
  start=${WAIT_FROM:-$(date +%s.%N)}
  while :; do
    if json=$(strato_status --json 2>&1); then
      out=$(printf '%s' "$json" | python3 "$REPO/scripts/lib/status-check" "$@") && rc=0 || rc=$?
    else
      out="status failed: $(printf '%s' "$json" | tail -n 1)"
    fi
    now=$(date +%s.%N)
    WAITED=$(awk -v a="$start" -v b="$now" 'BEGIN{printf "%.1f", b-a}')
    [ "$rc" -eq 0 ] && { say "  ${WAITED} s: $out"; return 0; }
    # rc 2: a check that must hold throughout was broken; no point waiting longer.
    [ "$rc" -eq 2 ] && { echo "  ${WAITED} s: $out" >&2; return 1; }
    if awk -v w="$WAITED" -v t="$timeout" 'BEGIN{exit !(w>=t)}'; then
      echo "  timed out after ${WAITED} s (limit ${timeout} s): $out" >&2; return 1
    fi
    # With VERBOSE_WAIT set, each new summary is printed once.
    if [ -n "${VERBOSE_WAIT:-}" ] && [ "$out" != "$shown" ]; then say "  ${WAITED} s: $out"; shown=$out; fi
    sleep 0.2
  done
}
