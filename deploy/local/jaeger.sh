#!/usr/bin/env bash
# deploy/local/jaeger.sh — Jaeger v2 (all-in-one, in-memory storage) on
# loopback as the real trace backend for local runs and choreo's end-to-end
# trace test, without Docker. See deploy/jaeger/README.md and
# docs/OBSERVABILITY.md.
#
#   deploy/local/jaeger.sh start      build once if needed, start (or find running);
#                                     prints OTEL_EXPORTER_OTLP_ENDPOINT=…
#   deploy/local/jaeger.sh stop       TERM, wait, then KILL (ok when not running)
#   deploy/local/jaeger.sh status     exit 0 when running and the query API answers
#   deploy/local/jaeger.sh build      only build the binary into the cache
#   deploy/local/jaeger.sh query-url  print the query API / UI address
#   deploy/local/jaeger.sh logs [N]   last N lines of Jaeger's log
#
# Jaeger is built from the Go module github.com/jaegertracing/jaeger, pinned
# by the module of its own in deploy/jaeger (a `tool` directive), so the main
# go.mod stays clean. The binary is cached outside the git tree.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODULE_DIR="$(cd "${HERE}/../jaeger" && pwd)"
CONFIG="${MODULE_DIR}/config.yaml"

JAEGER_VERSION="$(sed -n 's#^[[:space:]]*github.com/jaegertracing/jaeger \(v[^ ]*\).*#\1#p' "${MODULE_DIR}/go.mod" | head -n 1)"
[[ -n "${JAEGER_VERSION}" ]] || JAEGER_VERSION=unknown

# Ports, all on 127.0.0.1; config.yaml reads them from the environment.
export JAEGER_QUERY_PORT="${JAEGER_QUERY_PORT:-16686}"
export JAEGER_QUERY_GRPC_PORT="${JAEGER_QUERY_GRPC_PORT:-16685}"
export JAEGER_OTLP_GRPC_PORT="${JAEGER_OTLP_GRPC_PORT:-4317}"
export JAEGER_OTLP_HTTP_PORT="${JAEGER_OTLP_HTTP_PORT:-4318}"
export JAEGER_HEALTH_PORT="${JAEGER_HEALTH_PORT:-13133}"
JAEGER_START_TIMEOUT="${JAEGER_START_TIMEOUT:-60}"
JAEGER_STOP_TIMEOUT="${JAEGER_STOP_TIMEOUT:-15}"

CACHE_DIR="${CHOREO_CACHE:-${HOME:-/root}/.cache/choreo}/jaeger-${JAEGER_VERSION}"
BIN="${JAEGER_BIN:-${CACHE_DIR}/jaeger}"
STATE="${CHOREO_STATE:-/tmp/choreo-local}/jaeger"
PID_FILE="${STATE}/jaeger.pid"
LOG_FILE="${STATE}/jaeger.log"
QUERY_URL="http://127.0.0.1:${JAEGER_QUERY_PORT}"
OTLP_HTTP="http://127.0.0.1:${JAEGER_OTLP_HTTP_PORT}"

SCRIPT_NAME=jaeger.sh
# shellcheck source=lib.sh
source "${HERE}/lib.sh"

usage() {
  cat >&2 <<EOF
usage: $0 start|stop|status|build|query-url|logs [N]

environment:
  JAEGER_QUERY_PORT       query API and UI on 127.0.0.1 (${JAEGER_QUERY_PORT})
  JAEGER_QUERY_GRPC_PORT  query gRPC API on 127.0.0.1 (${JAEGER_QUERY_GRPC_PORT})
  JAEGER_OTLP_GRPC_PORT   OTLP gRPC receiver on 127.0.0.1 (${JAEGER_OTLP_GRPC_PORT})
  JAEGER_OTLP_HTTP_PORT   OTLP HTTP receiver on 127.0.0.1 (${JAEGER_OTLP_HTTP_PORT})
  JAEGER_HEALTH_PORT      health check on 127.0.0.1 (${JAEGER_HEALTH_PORT})
  JAEGER_START_TIMEOUT    seconds to wait for the query API (${JAEGER_START_TIMEOUT})
  JAEGER_BIN              use this binary instead of building one
  CHOREO_CACHE            cache root; the binary goes to ${BIN}
  CHOREO_STATE            state root; Jaeger uses \$CHOREO_STATE/jaeger (${STATE})
EOF
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# http_ok URL: exit 0 when a GET answers 200.
http_ok() {
  if command -v curl >/dev/null; then
    curl -fsS -o /dev/null --max-time 5 "$1" 2>/dev/null
    return
  fi
  local rest="${1#http://}" hostport path status
  hostport="${rest%%/*}"
  path="/${rest#*/}"
  exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$hostport" >&3
  IFS= read -r -t 5 status <&3 || status=""
  exec 3<&-
  [[ "$status" == "HTTP/1."?" 200"* ]]
}

query_answers() { http_ok "${QUERY_URL}/api/services"; }

build() {
  if [[ -x "${BIN}" ]]; then
    return 0
  fi
  command -v go >/dev/null || die "go not found: Go is needed once to build Jaeger"
  mkdir -p "$(dirname "${BIN}")"
  log "building Jaeger ${JAEGER_VERSION} into ${BIN} (once; about 7 minutes and 2 GB of module cache cold)"
  local t0=${SECONDS} tmp="${BIN}.tmp.$$"
  if ! (cd "${MODULE_DIR}" && GOWORK=off GOFLAGS=-buildvcs=false \
    go build -trimpath -o "${tmp}" github.com/jaegertracing/jaeger/cmd/jaeger); then
    rm -f "${tmp}"
    die "go build of github.com/jaegertracing/jaeger/cmd/jaeger failed"
  fi
  mv -f "${tmp}" "${BIN}"
  log "built ${BIN} in $((SECONDS - t0))s"
}

jaeger_pid() {
  [[ -f "${PID_FILE}" ]] || return 1
  local pid
  pid="$(cat "${PID_FILE}" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -qF -- "--config ${CONFIG}" || return 1
  printf '%s\n' "$pid"
}

kill_jaeger() { stop_pid jaeger "$1" "${JAEGER_STOP_TIMEOUT}"; }

lock_state() { take_lock "${STATE}/.lock" 900; }

ready() {
  log "query API at ${QUERY_URL} (export JAEGER_QUERY_URL=${QUERY_URL} for the trace test)"
  printf 'OTEL_EXPORTER_OTLP_ENDPOINT=%s\n' "${OTLP_HTTP}"
}

cmd_start() {
  lock_state
  local pid
  if pid="$(jaeger_pid)" && query_answers; then
    log "already running (pid ${pid})"
    ready
    return 0
  fi
  if ! pid="$(jaeger_pid)"; then
    rm -f "${PID_FILE}"
    local port
    for port in "${JAEGER_QUERY_PORT}" "${JAEGER_QUERY_GRPC_PORT}" "${JAEGER_OTLP_GRPC_PORT}" \
      "${JAEGER_OTLP_HTTP_PORT}" "${JAEGER_HEALTH_PORT}"; do
      if port_open "$port"; then
        die "127.0.0.1:${port} is already in use by another process (see the JAEGER_*_PORT variables)"
      fi
    done
    build
    log "starting Jaeger ${JAEGER_VERSION} (log ${LOG_FILE})"
    nohup "${BIN}" --config "${CONFIG}" >"${LOG_FILE}" 2>&1 </dev/null 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"${PID_FILE}"
  fi
  local deadline=$((SECONDS + JAEGER_START_TIMEOUT))
  until query_answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "${PID_FILE}"
      log "last lines of ${LOG_FILE}:"
      tail -n 30 "${LOG_FILE}" >&2 || true
      die "jaeger process ${pid} exited"
    fi
    if ((SECONDS >= deadline)); then
      log "last lines of ${LOG_FILE}:"
      tail -n 30 "${LOG_FILE}" >&2 || true
      log "no answer from ${QUERY_URL}/api/services after ${JAEGER_START_TIMEOUT}s; stopping pid ${pid}"
      kill_jaeger "$pid"
      rm -f "${PID_FILE}"
      exit 1
    fi
    sleep 0.2
  done
  log "running (pid ${pid}), ready after ${SECONDS}s"
  ready
}

cmd_stop() {
  lock_state
  local pid
  if ! pid="$(jaeger_pid)"; then
    rm -f "${PID_FILE}"
    log "not running"
    return 0
  fi
  log "stopping jaeger (pid ${pid})"
  kill_jaeger "$pid"
  rm -f "${PID_FILE}"
  log "stopped"
}

cmd_status() {
  local pid
  if ! pid="$(jaeger_pid)"; then
    echo "jaeger: not running"
    return 1
  fi
  if query_answers; then
    echo "jaeger: running (pid ${pid}, ${JAEGER_VERSION}); query ${QUERY_URL}, OTLP ${OTLP_HTTP} (HTTP) and 127.0.0.1:${JAEGER_OTLP_GRPC_PORT} (gRPC)"
    return 0
  fi
  echo "jaeger: pid ${pid} alive but ${QUERY_URL}/api/services does not answer"
  return 1
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
build) build && log "binary at ${BIN}" ;;
query-url) printf '%s\n' "${QUERY_URL}" ;;
logs) tail -n "${2:-100}" "${LOG_FILE}" ;;
-h | --help | help) usage ;;
*)
  usage
  exit 2
  ;;
esac
