#!/usr/bin/env bash
# deploy/local/kafka.sh — a real single-node Apache Kafka 4.x broker (KRaft,
# combined broker+controller) on loopback, without Docker.
#
# The broker jars come from Maven Central through deploy/local/kafka/pom.xml
# and are cached outside the git tree; the broker's data, configuration, pid
# and logs live in a state directory. See deploy/local/README.md.
#
#   deploy/local/kafka.sh start      start (or find running); prints KAFKA_BROKERS=…
#                                    (and, with KAFKA_SASL_SSL_PORT set, KAFKA_SASL_SSL_*=…)
#   deploy/local/kafka.sh stop       stop the broker started here (ok when not running)
#   deploy/local/kafka.sh status     exit 0 when running and answering, 1 otherwise
#   deploy/local/kafka.sh version    print the Kafka version
#   deploy/local/kafka.sh fetch      only download the jars into the cache
#   deploy/local/kafka.sh classpath  print the classpath of the cached jars
#   deploy/local/kafka.sh logs       print the last lines of the broker log
#   deploy/local/kafka.sh reset      stop, then delete the state directory
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
# Set to a port to add a SASL_SSL listener (PLAIN, SCRAM-SHA-256/512 over
# TLS, ACLs enforced for its users); empty: PLAINTEXT only.
KAFKA_SASL_SSL_PORT="${KAFKA_SASL_SSL_PORT:-}"

CACHE_DIR="${CHOREO_CACHE:-${HOME:-/root}/.cache/choreo}/kafka-${KAFKA_VERSION}"
LIBS="${CACHE_DIR}/libs"
STATE="${CHOREO_STATE:-/tmp/choreo-local}/kafka"
DATA_DIR="${STATE}/data"
LOG_DIR="${STATE}/logs"
CONF="${STATE}/server.properties"
PID_FILE="${STATE}/kafka.pid"
SERVER_LOG="${LOG_DIR}/server.log"
OUT_LOG="${LOG_DIR}/kafka.out"
BROKERS="127.0.0.1:${KAFKA_PORT}"
TLS_DIR="${STATE}/tls"

# Small, quick-starting JVM for the command line classes.
TOOL_OPTS=(-Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
  "-Dlog4j2.configurationFile=${HERE}/kafka/tools-log4j2.xml")

SCRIPT_NAME=kafka.sh
# shellcheck source=lib.sh
source "${HERE}/lib.sh"

usage() {
  cat >&2 <<EOF
usage: $0 start|stop|status|version|fetch|classpath|logs|reset

environment:
  KAFKA_VERSION          Kafka version from Maven Central (${KAFKA_VERSION})
  KAFKA_PORT             PLAINTEXT listener on 127.0.0.1 (${KAFKA_PORT})
  KAFKA_CONTROLLER_PORT  KRaft controller listener on 127.0.0.1 (${KAFKA_CONTROLLER_PORT})
  CHOREO_STATE           state root; Kafka uses \$CHOREO_STATE/kafka (${STATE})
  CHOREO_CACHE           jar cache root (${CACHE_DIR%/*})
  KAFKA_HEAP_OPTS        broker heap (${KAFKA_HEAP_OPTS})
  KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (${KAFKA_START_TIMEOUT})
  KAFKA_EXTRA_PROPERTIES extra server.properties lines, appended verbatim
  KAFKA_SASL_SSL_PORT    add a SASL_SSL listener on 127.0.0.1 (PLAIN, SCRAM-SHA-256/512,
                         ACLs; certificates and the admin password in \$CHOREO_STATE/kafka/tls)
EOF
}

find_java() {
  local java="${JAVA:-}"
  if [[ -z "$java" && -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
    java="${JAVA_HOME}/bin/java"
  fi
  if [[ -z "$java" ]]; then
    java="$(command -v java || true)"
  fi
  [[ -n "$java" ]] || die "java not found (Kafka ${KAFKA_VERSION} needs Java 17 or newer)"
  local major
  major="$("$java" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = //p')"
  major="${major#1.}"
  if [[ -z "$major" || "$major" -lt 17 ]]; then
    die "$java is Java ${major:-unknown}; Kafka ${KAFKA_VERSION} needs Java 17 or newer"
  fi
  JAVA_BIN="$java"
}

# ---------------------------------------------------------------------------
# jars

# The cache is complete when .complete holds the hash of the pom it came from
# (an edited pom fetches again).
pom_hash() { sha256sum "${HERE}/kafka/pom.xml" | cut -d' ' -f1; }

jars_cached() {
  [[ -f "${CACHE_DIR}/.complete" && "$(cat "${CACHE_DIR}/.complete")" == "$(pom_hash)" ]] &&
    compgen -G "${LIBS}/kafka_2.13-${KAFKA_VERSION}.jar" >/dev/null
}

fetch_jars() {
  jars_cached && return 0
  command -v mvn >/dev/null || die "mvn not found: Maven is needed once to fetch the Kafka jars"
  mkdir -p "${CACHE_DIR}"
  local work
  work="$(mktemp -d "${CACHE_DIR}/fetch.XXXXXX")"
  # Maven runs on a copy of the pom so that nothing is written into the git tree.
  cp "${HERE}/kafka/pom.xml" "${work}/pom.xml"
  log "fetching Apache Kafka ${KAFKA_VERSION} jars with Maven into ${LIBS}"
  if ! mvn -q -B -Dstyle.color=never -f "${work}/pom.xml" \
    "-Dkafka.version=${KAFKA_VERSION}" \
    dependency:copy-dependencies -DincludeScope=runtime \
    "-DoutputDirectory=${work}/libs" >"${work}/mvn.log" 2>&1; then
    tail -n 40 "${work}/mvn.log" >&2 || true
    rm -rf "${work}"
    die "Maven could not fetch org.apache.kafka:kafka_2.13:${KAFKA_VERSION}"
  fi
  local jar
  for jar in "kafka_2.13-${KAFKA_VERSION}.jar" "kafka-tools-${KAFKA_VERSION}.jar" \
    log4j-core-*.jar log4j-slf4j-impl-*.jar slf4j-api-*.jar; do
    compgen -G "${work}/libs/${jar}" >/dev/null || {
      rm -rf "${work}"
      die "Maven did not bring ${jar}"
    }
  done
  rm -rf "${LIBS}"
  mv "${work}/libs" "${LIBS}"
  rm -rf "${work}"
  pom_hash >"${CACHE_DIR}/.complete"
  log "cached $(find "${LIBS}" -name '*.jar' | wc -l) jars in ${LIBS}"
}

classpath() { printf '%s/*' "${LIBS}"; }

# ---------------------------------------------------------------------------
# process

broker_pid() {
  # Prints the recorded pid if that process is alive and is our broker.
  [[ -f "${PID_FILE}" ]] || return 1
  local pid
  pid="$(cat "${PID_FILE}" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
  printf '%s\n' "$pid"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A real Kafka request: ApiVersions to the bootstrap broker, then a Metadata
# request to list the brokers, each of which is asked for its ApiVersions.
broker_answers() {
  port_open "${KAFKA_PORT}" || return 1
  jars_cached || return 1
  [[ -n "${JAVA_BIN:-}" ]] || find_java
  local out
  out="$(timeout 30 "${JAVA_BIN}" "${TOOL_OPTS[@]}" -cp "$(classpath)" \
    org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "${BROKERS}" 2>/dev/null)" || return 1
  [[ "$out" == *"${BROKERS} (id: 1 "* ]]
}

# The part of a log written since this start: after LOG_OFFSET, its size
# before the start (a file that rolled over since is read whole).
LOG_OFFSET=0
since_start() {
  [[ -f "$1" ]] || return 0
  local size from=$((LOG_OFFSET + 1))
  size="$(stat -c %s "$1" 2>/dev/null || echo 0)"
  ((size >= LOG_OFFSET)) || from=1
  tail -c "+${from}" "$1"
}

started_logged() {
  since_start "${SERVER_LOG}" | grep -q 'Kafka Server started'
}

running_version() {
  # What the broker logged at start (AppInfoParser), else the jars' version.
  local v=""
  if [[ -f "${SERVER_LOG}" ]]; then
    v="$(sed -n 's/.*Kafka version: \([^ ]*\).*/\1/p' "${SERVER_LOG}" | tail -n 1)"
  fi
  printf '%s\n' "${v:-${KAFKA_VERSION}}"
}

# tls_material makes, once, a CA, a broker certificate it signs for
# 127.0.0.1 and localhost, a PEM key store for the broker, and a random
# password for the SASL user admin (PLAIN; a super user), all in TLS_DIR,
# readable by its owner only.
tls_material() {
  [[ -f "${TLS_DIR}/keystore.pem" && -f "${TLS_DIR}/admin.password" ]] && return 0
  command -v openssl >/dev/null || die "openssl not found: needed to make the SASL_SSL listener's certificates"
  mkdir -p "${TLS_DIR}"
  chmod 700 "${TLS_DIR}"
  log "making a CA and a broker certificate in ${TLS_DIR}"
  (
    cd "${TLS_DIR}"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
      -subj "/CN=choreo local CA" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
      -subj "/CN=127.0.0.1" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -out server.pem -days 3650 -extfile server.ext >/dev/null 2>&1
    cat server.key server.pem ca.pem >keystore.pem
    head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >admin.password
    chmod 600 ./*
  ) || die "openssl could not make the certificates in ${TLS_DIR}"
}

write_config() {
  local listeners="PLAINTEXT://127.0.0.1:${KAFKA_PORT},CONTROLLER://127.0.0.1:${KAFKA_CONTROLLER_PORT}"
  local advertised="PLAINTEXT://127.0.0.1:${KAFKA_PORT}"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [[ -n "${KAFKA_SASL_SSL_PORT}" ]]; then
    listeners+=",SASL_SSL://127.0.0.1:${KAFKA_SASL_SSL_PORT}"
    advertised+=",SASL_SSL://127.0.0.1:${KAFKA_SASL_SSL_PORT}"
    protocols+=",SASL_SSL:SASL_SSL"
  fi
  cat >"${CONF}" <<EOF
# Written by deploy/local/kafka.sh on every start; edits here are lost.
# Single-node KRaft: this process is both broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${KAFKA_CONTROLLER_PORT}
controller.listener.names=CONTROLLER
listeners=${listeners}
advertised.listeners=${advertised}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=${protocols}

log.dirs=${DATA_DIR}
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true

# internal topics on a one-broker cluster
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
EOF
  if [[ -n "${KAFKA_SASL_SSL_PORT}" ]]; then
    # The PLAINTEXT listener and the controller stay open to all: their
    # principal (ANONYMOUS) is a super user, so tests that use them see no
    # ACLs. SASL users other than admin get only what ACLs grant them.
    cat >>"${CONF}" <<EOF

# SASL_SSL listener (KAFKA_SASL_SSL_PORT): PLAIN user admin (password in
# ${TLS_DIR}/admin.password), SCRAM users created through the Kafka API
# (AlterUserScramCredentials), ACLs enforced.
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_admin="$(cat "${TLS_DIR}/admin.password")";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=${TLS_DIR}/keystore.pem
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:admin
allow.everyone.if.no.acl.found=false
EOF
  fi
  if [[ -n "${KAFKA_EXTRA_PROPERTIES:-}" ]]; then
    printf '\n# KAFKA_EXTRA_PROPERTIES\n%s\n' "${KAFKA_EXTRA_PROPERTIES}" >>"${CONF}"
  fi
}

format_storage() {
  [[ -f "${DATA_DIR}/meta.properties" ]] && return 0
  # A cluster id is a Kafka Uuid: 16 random bytes, URL-safe base64 without
  # padding (what `StorageTool random-uuid` prints; made here to save a JVM
  # start). Kafka's own generator avoids ids that begin with '-'.
  local cluster_id=""
  until [[ "$cluster_id" =~ ^[A-Za-z0-9_][A-Za-z0-9_-]{21}$ ]]; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  done
  log "formatting ${DATA_DIR} (cluster id ${cluster_id})"
  if ! "${JAVA_BIN}" "${TOOL_OPTS[@]}" -cp "$(classpath)" kafka.tools.StorageTool \
    format -t "${cluster_id}" -c "${CONF}" >"${LOG_DIR}/format.log" 2>&1; then
    tail -n 40 "${LOG_DIR}/format.log" >&2
    die "StorageTool format failed (${LOG_DIR}/format.log)"
  fi
}

show_failure() {
  log "broker did not start; last lines of ${SERVER_LOG}:"
  since_start "${SERVER_LOG}" | tail -n 40 >&2 || true
  if [[ -s "${OUT_LOG}" ]]; then
    log "last lines of ${OUT_LOG}:"
    tail -n 20 "${OUT_LOG}" >&2 || true
  fi
}

kill_broker() { stop_pid broker "$1" "${KAFKA_STOP_TIMEOUT}"; }

lock_state() { take_lock "${STATE}/.lock" 300; }

# ---------------------------------------------------------------------------
# commands

cmd_start() {
  lock_state
  if broker_pid >/dev/null && broker_answers; then
    log "kafka version: $(running_version) (already running, pid $(broker_pid))"
    printf 'KAFKA_BROKERS=%s\n' "${BROKERS}"
    print_sasl_ssl
    return 0
  fi
  local pid
  if pid="$(broker_pid)"; then
    # Alive but not answering: a start still in progress elsewhere, or hung.
    log "broker pid ${pid} is running but not answering yet; waiting"
  else
    rm -f "${PID_FILE}"
    for port in "${KAFKA_PORT}" "${KAFKA_CONTROLLER_PORT}" ${KAFKA_SASL_SSL_PORT}; do
      if port_open "$port"; then
        die "127.0.0.1:${port} is already in use by another process (set KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
      fi
    done
    find_java
    fetch_jars
    mkdir -p "${DATA_DIR}" "${LOG_DIR}"
    if [[ -n "${KAFKA_SASL_SSL_PORT}" ]]; then
      tls_material
    fi
    write_config
    format_storage
    LOG_OFFSET="$(stat -c %s "${SERVER_LOG}" 2>/dev/null || echo 0)"
    log "starting Apache Kafka ${KAFKA_VERSION} on ${BROKERS} (log ${SERVER_LOG})"
    # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS holds several JVM options
    nohup "${JAVA_BIN}" ${KAFKA_HEAP_OPTS} \
      -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
      "-Dkafka.logs.dir=${LOG_DIR}" \
      "-Dlog4j2.configurationFile=${HERE}/kafka/log4j2.xml" \
      -cp "$(classpath)" kafka.Kafka "${CONF}" \
      >"${OUT_LOG}" 2>&1 </dev/null 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"${PID_FILE}"
  fi

  # Each check is a JVM of its own, and on a small machine checks started
  # while the broker is still loading would slow it down: run one as soon as
  # the broker logs that it has started, else at most every 5 s once its port
  # is open. Only the check's answer counts as ready.
  local deadline=$((SECONDS + KAFKA_START_TIMEOUT)) last_check=-100
  while :; do
    if started_logged || { ((SECONDS - last_check >= 5)) && port_open "${KAFKA_PORT}"; }; then
      last_check=${SECONDS}
      broker_answers && break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "${PID_FILE}"
      show_failure
      die "broker process ${pid} exited"
    fi
    if ((SECONDS >= deadline)); then
      show_failure
      log "no answer on ${BROKERS} after ${KAFKA_START_TIMEOUT}s; stopping pid ${pid}"
      kill_broker "$pid"
      rm -f "${PID_FILE}"
      exit 1
    fi
    sleep 0.3
  done
  log "kafka version: $(running_version) (pid ${pid}, ready after ${SECONDS}s)"
  printf 'KAFKA_BROKERS=%s\n' "${BROKERS}"
  print_sasl_ssl
}

# print_sasl_ssl prints where the SASL_SSL listener is and the files a
# client needs (never the password itself).
print_sasl_ssl() {
  [[ -n "${KAFKA_SASL_SSL_PORT}" ]] || return 0
  if ! grep -q "^listeners=.*SASL_SSL://127.0.0.1:${KAFKA_SASL_SSL_PORT}" "${CONF}" 2>/dev/null; then
    log "the running broker has no SASL_SSL listener on ${KAFKA_SASL_SSL_PORT}: stop it and start again with KAFKA_SASL_SSL_PORT set"
    return 0
  fi
  printf 'KAFKA_SASL_SSL_BROKERS=127.0.0.1:%s\n' "${KAFKA_SASL_SSL_PORT}"
  printf 'KAFKA_SASL_SSL_CA_FILE=%s\n' "${TLS_DIR}/ca.pem"
  printf 'KAFKA_SASL_SSL_ADMIN_PASSWORD_FILE=%s\n' "${TLS_DIR}/admin.password"
}

cmd_stop() {
  lock_state
  local pid
  if ! pid="$(broker_pid)"; then
    rm -f "${PID_FILE}"
    log "not running"
    return 0
  fi
  log "stopping broker (pid ${pid})"
  kill_broker "$pid"
  rm -f "${PID_FILE}"
  log "stopped"
}

cmd_status() {
  local pid
  if ! pid="$(broker_pid)"; then
    echo "kafka: not running"
    return 1
  fi
  if broker_answers; then
    echo "kafka: running (pid ${pid}, version $(running_version)) at ${BROKERS}"
    return 0
  fi
  echo "kafka: pid ${pid} alive but not answering on ${BROKERS}"
  return 1
}

cmd_version() {
  if broker_pid >/dev/null; then
    running_version
  else
    printf '%s\n' "${KAFKA_VERSION}"
  fi
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
version) cmd_version ;;
fetch) find_java && fetch_jars && log "jars in ${LIBS}" ;;
classpath) fetch_jars && classpath && echo ;;
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
