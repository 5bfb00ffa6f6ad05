#!/usr/bin/env bash
# deploy/local/postgres.sh — a PostgreSQL cluster of its own on loopback for
# choreo's durable idempotency store, without Docker and apart from the
# Debian service. See deploy/local/README.md.
#
#   deploy/local/postgres.sh start    start (or find running); prints DATABASE_URL=…
#   deploy/local/postgres.sh stop     fast shutdown (ok when not running)
#   deploy/local/postgres.sh status   exit 0 when running and accepting connections
#   deploy/local/postgres.sh psql …   psql as the choreo role (extra args passed on)
#   deploy/local/postgres.sh logs     print the last lines of the server log
#   deploy/local/postgres.sh reset    stop, then delete the state directory
set -euo pipefail

PG_PORT="${PG_PORT:-15432}"
PG_USER="${PG_USER:-choreo}"
PG_PASSWORD="${PG_PASSWORD:-choreo}"
PG_DATABASE="${PG_DATABASE:-choreo}"
PG_START_TIMEOUT="${PG_START_TIMEOUT:-60}"

STATE_ROOT="${CHOREO_STATE:-/tmp/choreo-local}"
STATE="${STATE_ROOT}/postgres"
DATA_DIR="${STATE}/data"
SOCKET_DIR="${STATE}/run"
SERVER_LOG="${STATE}/postgres.log"
LOCK_FILE="${STATE_ROOT}/.postgres.lock"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SCRIPT_NAME=postgres.sh
# shellcheck source=lib.sh
source "${HERE}/lib.sh"

usage() {
  cat >&2 <<EOF
usage: $0 start|stop|status|psql [args…]|logs|reset

environment:
  PG_PORT         port on 127.0.0.1 (${PG_PORT})
  PG_USER         role created for the application (${PG_USER})
  PG_PASSWORD     its password (${PG_PASSWORD})
  PG_DATABASE     database created, owned by PG_USER (${PG_DATABASE})
  CHOREO_STATE    state root; PostgreSQL uses \$CHOREO_STATE/postgres (${STATE})
  PG_BIN          directory of pg_ctl/initdb (default: newest /usr/lib/postgresql/*/bin)
EOF
}

# Percent-encodes all but RFC 3986 unreserved characters (for the password).
urlencode() {
  local s="$1" out="" c i
  for ((i = 0; i < ${#s}; i++)); do
    c="${s:i:1}"
    case "$c" in
    [A-Za-z0-9._~-]) out+="$c" ;;
    *) out+="$(printf '%%%02X' "'$c")" ;;
    esac
  done
  printf '%s' "$out"
}

database_url() {
  printf 'postgres://%s:%s@127.0.0.1:%s/%s?sslmode=disable' \
    "${PG_USER}" "$(urlencode "${PG_PASSWORD}")" "${PG_PORT}" "${PG_DATABASE}"
}

# ---------------------------------------------------------------------------
# binaries and OS user

find_pg_bin() {
  if [[ -n "${PG_BIN:-}" ]]; then
    [[ -x "${PG_BIN}/pg_ctl" && -x "${PG_BIN}/initdb" ]] || die "PG_BIN=${PG_BIN} has no pg_ctl/initdb"
    return 0
  fi
  local dir best="" best_major=0 major
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x "${dir}/pg_ctl" && -x "${dir}/initdb" ]] || continue
    major="$(basename "$(dirname "${dir}")")"
    [[ "$major" =~ ^[0-9]+$ ]] || continue
    if ((major > best_major)); then
      best="$dir"
      best_major="$major"
    fi
  done
  [[ -n "$best" ]] || return 1
  PG_BIN="$best"
}

install_postgres() {
  find_pg_bin && return 0
  [[ "${EUID}" -eq 0 ]] || die "PostgreSQL is not installed; as root: apt-get install -y postgresql"
  command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is not available"
  log "installing the Debian package postgresql"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  find_pg_bin || die "postgresql installed, but no /usr/lib/postgresql/*/bin/pg_ctl found"
}

# initdb refuses to run as root: as root, the cluster belongs to the
# 'postgres' OS user (made by the Debian package); otherwise to the caller.
as_owner() {
  if [[ "${EUID}" -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

superuser() {
  if [[ "${EUID}" -eq 0 ]]; then echo postgres; else id -un; fi
}

# psql as the cluster's superuser over the Unix socket (trust).
admin_psql() {
  as_owner "${PG_BIN}/psql" -X -q -v ON_ERROR_STOP=1 -h "${SOCKET_DIR}" -p "${PG_PORT}" \
    -U "$(superuser)" -d postgres
}

# ---------------------------------------------------------------------------
# cluster

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cluster_running() {
  [[ -f "${DATA_DIR}/PG_VERSION" ]] || return 1
  as_owner "${PG_BIN}/pg_ctl" -D "${DATA_DIR}" status >/dev/null 2>&1
}

accepting() {
  "${PG_BIN}/pg_isready" -q -h 127.0.0.1 -p "${PG_PORT}" -d postgres -t 5
}

prepare_dirs() {
  mkdir -p "${STATE}"
  if [[ "${EUID}" -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (is the postgresql package installed?)"
    mkdir -p "${SOCKET_DIR}"
    chown postgres:postgres "${STATE}" "${SOCKET_DIR}"
    chmod 700 "${SOCKET_DIR}" # the socket trusts whoever reaches it
    [[ -d "${DATA_DIR}" ]] && chown -R postgres:postgres "${DATA_DIR}"
    touch "${SERVER_LOG}"
    chown postgres:postgres "${SERVER_LOG}"
    runuser -u postgres -- test -w "${STATE}" ||
      die "the postgres OS user cannot reach ${STATE}; choose a CHOREO_STATE whose parents it can enter"
  else
    mkdir -p "${SOCKET_DIR}"
    chmod 700 "${SOCKET_DIR}"
  fi
}

init_cluster() {
  [[ -f "${DATA_DIR}/PG_VERSION" ]] && return 0
  log "initdb ${DATA_DIR}"
  # initdb makes the data directory itself (mode 700, owned by the caller).
  if ! as_owner "${PG_BIN}/initdb" -D "${DATA_DIR}" -U "$(superuser)" \
    -E UTF8 --no-locale --auth-local=trust --auth-host=scram-sha-256 \
    >"${STATE}/initdb.log" 2>&1; then
    tail -n 40 "${STATE}/initdb.log" >&2
    die "initdb failed (${STATE}/initdb.log)"
  fi
  printf "\n# deploy/local/postgres.sh: listen address, port and sockets\ninclude_if_exists = 'choreo.conf'\n" \
    >>"${DATA_DIR}/postgresql.conf"
}

write_config() {
  # Rewritten on every start so that PG_PORT and the state path may change.
  local conf="${DATA_DIR}/choreo.conf"
  cat >"${conf}" <<EOF
# Written by deploy/local/postgres.sh on every start; edits here are lost.
listen_addresses = '127.0.0.1'
port = ${PG_PORT}
unix_socket_directories = '${SOCKET_DIR}'
logging_collector = off
EOF
  [[ "${EUID}" -eq 0 ]] && chown postgres:postgres "${conf}"
  return 0
}

sql_literal() { printf "'%s'" "${1//\'/\'\'}"; }

ensure_role_and_database() {
  [[ "${PG_USER}" =~ ^[a-z_][a-z0-9_]*$ ]] || die "PG_USER must be a plain lower-case identifier"
  [[ "${PG_DATABASE}" =~ ^[a-z_][a-z0-9_]*$ ]] || die "PG_DATABASE must be a plain lower-case identifier"
  local pw
  pw="$(sql_literal "${PG_PASSWORD}")"
  admin_psql <<EOF
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${PG_USER}') THEN
    CREATE ROLE ${PG_USER} LOGIN PASSWORD ${pw};
  ELSE
    ALTER ROLE ${PG_USER} LOGIN PASSWORD ${pw};
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE ${PG_DATABASE} OWNER ${PG_USER}'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '${PG_DATABASE}')\gexec
EOF
}

lock_state() { take_lock "${LOCK_FILE}" 120; }

# ---------------------------------------------------------------------------
# commands

cmd_start() {
  lock_state
  install_postgres
  local deadline=$((SECONDS + PG_START_TIMEOUT))
  # Running already (or still starting, or just dying): wait for either.
  while cluster_running && ! accepting; do
    if ((SECONDS >= deadline)); then
      tail -n 40 "${SERVER_LOG}" >&2 || true
      die "a server runs on ${DATA_DIR} but does not accept connections on 127.0.0.1:${PG_PORT}"
    fi
    sleep 0.5
  done
  if cluster_running; then
    ensure_role_and_database
    log "already running ($("${PG_BIN}/postgres" --version))"
    printf 'DATABASE_URL=%s\n' "$(database_url)"
    return 0
  fi
  if port_open "${PG_PORT}"; then
    die "127.0.0.1:${PG_PORT} is already in use by another process (set PG_PORT)"
  fi
  prepare_dirs
  init_cluster
  write_config
  log "starting $("${PG_BIN}/postgres" --version) on 127.0.0.1:${PG_PORT} (log ${SERVER_LOG})"
  local offset
  offset="$(stat -c %s "${SERVER_LOG}" 2>/dev/null || echo 0)"
  # pg_ctl detaches the server; it must not inherit the lock on fd 9.
  if ! as_owner "${PG_BIN}/pg_ctl" -D "${DATA_DIR}" -l "${SERVER_LOG}" \
    -w -t "${PG_START_TIMEOUT}" start >/dev/null 9>&-; then
    log "PostgreSQL did not start; last lines of ${SERVER_LOG}:"
    tail -c "+$((offset + 1))" "${SERVER_LOG}" | tail -n 40 >&2 || true
    as_owner "${PG_BIN}/pg_ctl" -D "${DATA_DIR}" stop -m immediate >/dev/null 2>&1 || true
    exit 1
  fi
  until accepting; do
    if ((SECONDS >= deadline)); then
      tail -n 40 "${SERVER_LOG}" >&2 || true
      die "PostgreSQL is not accepting connections on 127.0.0.1:${PG_PORT}"
    fi
    sleep 0.5
  done
  ensure_role_and_database
  log "ready after ${SECONDS}s"
  printf 'DATABASE_URL=%s\n' "$(database_url)"
}

cmd_stop() {
  lock_state
  if ! find_pg_bin || ! cluster_running; then
    log "not running"
    return 0
  fi
  log "stopping"
  as_owner "${PG_BIN}/pg_ctl" -D "${DATA_DIR}" -w -t 60 stop -m fast >/dev/null
  log "stopped"
}

cmd_status() {
  if ! find_pg_bin || ! cluster_running; then
    echo "postgres: not running"
    return 1
  fi
  if accepting; then
    echo "postgres: running at 127.0.0.1:${PG_PORT} (data ${DATA_DIR})"
    return 0
  fi
  echo "postgres: running but not accepting connections on 127.0.0.1:${PG_PORT}"
  return 1
}

cmd_psql() {
  find_pg_bin || die "PostgreSQL is not installed"
  PGPASSWORD="${PG_PASSWORD}" exec "${PG_BIN}/psql" -h 127.0.0.1 -p "${PG_PORT}" \
    -U "${PG_USER}" -d "${PG_DATABASE}" "$@"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
psql)
  shift
  cmd_psql "$@"
  ;;
logs) tail -n "${2:-100}" "${SERVER_LOG}" ;;
reset)
  cmd_stop
  rm -rf "${STATE}"
  log "removed ${STATE}"
  ;;
-h | --help | help) usage ;;
*)
  usage
  exit 2
  ;;
esac
