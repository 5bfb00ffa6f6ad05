# shellcheck shell=bash
# deploy/local/lib.sh: helpers the start scripts share. A script sets
# SCRIPT_NAME, then sources this file.

log() { printf '%s: %s\n' "${SCRIPT_NAME}" "$*" >&2; }
die() {
  log "$*"
  exit 1
}

# stop_pid WHAT PID TIMEOUT: TERM, wait up to TIMEOUT seconds, then KILL.
stop_pid() {
  local what="$1" pid="$2" timeout="$3" waited=0
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= timeout * 2)); then
      log "${what} (pid ${pid}) still running after ${timeout}s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
}

# take_lock FILE WAIT: hold FILE's lock on file descriptor 9, waiting up to
# WAIT seconds for another run of the script. Servers started while it is
# held must not inherit fd 9 (start them with 9>&-).
take_lock() {
  mkdir -p "$(dirname "$1")"
  exec 9>"$1"
  flock -w "$2" 9 || die "another ${SCRIPT_NAME} holds $1"
}
