#!/usr/bin/env bash
# Runs a real Apache Kafka (KRaft, combined broker + controller, one node) on
# 127.0.0.1 from Kafka's own jars, fetched through Maven. No Docker.
#
#   kafka.sh install   fetch kafka_2.13 and its runtime dependencies into the cache (idempotent)
#   kafka.sh start     format storage once, start in the background, wait until it answers
#   kafka.sh stop      stop the broker started by `start` and wait for it to exit
#   kafka.sh kill      SIGKILL the broker (fault tests) and wait until it is gone
#   kafka.sh status    say whether it runs (exit 0) or not (exit 3)
#   kafka.sh run -- CMD  install, start, run CMD with the env exported, stop (always)
#   kafka.sh env       print `export MEMSTATE_KAFKA_BOOTSTRAP=127.0.0.1:PORT` (and, with
#                      SASL_SSL, `export MEMSTATE_KAFKA_PROPERTIES_FILE=<client properties>`)
#
# The same script runs other instances beside the default one, each with its
# own name, ports and work dir: a TLS + SASL/SCRAM broker, or the nodes of the
# three-node cluster that kafka-cluster.sh starts.
#
# Settings (environment):
#   MEMSTATE_KAFKA_VERSION          Kafka version (default 4.4.0)
#   MEMSTATE_KAFKA_CACHE            where the jars go (default $HOME/.cache/memstate/kafka-<version>)
#   MEMSTATE_BACKENDS_DIR           work dirs of local backends (default <repo>/.backends); Kafka uses ./kafka
#   MEMSTATE_KAFKA_PORT             client listener port (default 19092)
#   MEMSTATE_KAFKA_CONTROLLER_PORT  controller listener port (default 19093)
#   MEMSTATE_KAFKA_HEAP_OPTS        JVM heap flags (default "-Xms256m -Xmx512m")
#   MEMSTATE_KAFKA_NAME             instance name: its work dir is <backends dir>/<name> (default kafka)
#   MEMSTATE_KAFKA_SECURITY         plaintext (default) or sasl_ssl: the client listener is then
#                                   SASL_SSL with SCRAM-SHA-512 users, certificates made here by keytool
#   MEMSTATE_KAFKA_NODE_ID          node.id (default 1)
#   MEMSTATE_KAFKA_VOTERS           a static controller quorum, id@127.0.0.1:port,... (default: this
#                                   node alone, formatted --standalone)
#   MEMSTATE_KAFKA_CLUSTER_ID       the cluster id to format with (the same on every node of a cluster)
#   MEMSTATE_KAFKA_REPLICATION      default and internal topics' replication factor (default 1)
#   MEMSTATE_KAFKA_MIN_ISR          min.insync.replicas (default 1)
#   MEMSTATE_KAFKA_READY_TIMEOUT    seconds `start` waits for readiness (default 180)
#   JAVA_HOME                       Java 17 or newer (default: java on PATH)
set -euo pipefail

KAFKA_VERSION="${MEMSTATE_KAFKA_VERSION:-4.4.0}"
# Kafka's slf4j/log4j2 bridge is not among kafka_2.13's declared dependencies
# (the distribution adds it by hand); without it the broker logs nothing.
SLF4J_VERSION="2.0.17"
LOG4J_VERSION="2.25.5"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
CACHE_DIR="${MEMSTATE_KAFKA_CACHE:-$HOME/.cache/memstate/kafka-$KAFKA_VERSION}"
LIBS="$CACHE_DIR/libs"
NAME="${MEMSTATE_KAFKA_NAME:-kafka}"
[[ "$NAME" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "kafka.sh: MEMSTATE_KAFKA_NAME must be a plain name" >&2; exit 2; }
WORK="${MEMSTATE_BACKENDS_DIR:-$REPO_ROOT/.backends}/$NAME"
SECURITY="${MEMSTATE_KAFKA_SECURITY:-plaintext}"
NODE_ID="${MEMSTATE_KAFKA_NODE_ID:-1}"
VOTERS="${MEMSTATE_KAFKA_VOTERS:-}"
REPLICATION="${MEMSTATE_KAFKA_REPLICATION:-1}"
MIN_ISR="${MEMSTATE_KAFKA_MIN_ISR:-1}"
PORT="${MEMSTATE_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${MEMSTATE_KAFKA_CONTROLLER_PORT:-19093}"
HEAP_OPTS="${MEMSTATE_KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
READY_TIMEOUT="${MEMSTATE_KAFKA_READY_TIMEOUT:-180}"
BOOTSTRAP="127.0.0.1:$PORT"
PID_FILE="$WORK/kafka.pid"
LOG_FILE="$WORK/kafka.log"
CONFIG="$WORK/server.properties"
LOG4J_CONFIG="$WORK/log4j2.properties"
TOOLS_LOG4J_CONFIG="$WORK/tools-log4j2.properties"
DATA_DIR="$WORK/data"
TLS_DIR="$WORK/tls"
# librdkafka properties for a client of this broker (SASL_SSL only).
CLIENT_PROPERTIES="$WORK/client.properties"
# The same for Kafka's own Java tools (the readiness check).
ADMIN_PROPERTIES="$WORK/admin.properties"
case "$SECURITY" in
plaintext) CLIENT_LISTENER=PLAINTEXT ;;
sasl_ssl) CLIENT_LISTENER=SASL_SSL ;;
*)
    echo "kafka.sh: MEMSTATE_KAFKA_SECURITY must be plaintext or sasl_ssl, not '$SECURITY'" >&2
    exit 2
    ;;
esac

if [[ -n "${JAVA_HOME:-}" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA="java"; fi

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

check_java() {
    command -v "$JAVA" >/dev/null 2>&1 || die "no java found (install a JDK 17+ or set JAVA_HOME)"
    local version major
    version="$("$JAVA" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
    major="${version%%.*}"
    [[ "$major" =~ ^[0-9]+$ ]] || die "cannot read the Java version from '$JAVA -version'"
    ((major >= 17)) || die "Kafka $KAFKA_VERSION needs Java 17 or newer; $JAVA is $version (set JAVA_HOME)"
}

java_cp() { "$JAVA" -cp "$LIBS/*" "$@"; }

cmd_install() {
    if [[ -f "$LIBS/.complete" ]]; then
        log "Kafka $KAFKA_VERSION already installed in $LIBS"
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn (Apache Maven) is needed to fetch Kafka's jars"
    check_java
    local started tmp
    started=$(date +%s)
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064 # expand now: tmp is local
    trap "rm -rf '$tmp'" EXIT
    # kafka_2.13 is the broker (kafka.Kafka, kafka.tools.StorageTool); kafka-tools
    # gives the admin commands used for the readiness check and for debugging.
    cat >"$tmp/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.memstate</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
    log "fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its runtime dependencies through Maven"
    if ! mvn -B -q -f "$tmp/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp/libs" >"$tmp/mvn.log" 2>&1; then
        cat "$tmp/mvn.log" >&2
        die "Maven could not fetch Kafka $KAFKA_VERSION (see above)"
    fi
    [[ -f "$tmp/libs/kafka_2.13-$KAFKA_VERSION.jar" ]] || die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is missing"
    # Smoke test before publishing the cache: both entry points must load.
    "$JAVA" -cp "$tmp/libs/*" kafka.tools.StorageTool random-uuid >/dev/null 2>"$tmp/smoke.log" \
        || { cat "$tmp/smoke.log" >&2; die "kafka.tools.StorageTool does not start from the fetched jars"; }
    "$JAVA" -cp "$tmp/libs/*" kafka.Kafka --version >"$tmp/version.txt" 2>"$tmp/smoke.log" \
        || { cat "$tmp/smoke.log" >&2; die "kafka.Kafka does not start from the fetched jars"; }
    mkdir -p "$CACHE_DIR"
    rm -rf "$LIBS"
    mv "$tmp/libs" "$LIBS"
    touch "$LIBS/.complete"
    log "installed Kafka $(head -n1 "$tmp/version.txt") into $LIBS ($(find "$LIBS" -name '*.jar' | wc -l) jars) in $(($(date +%s) - started)) s"
}

# The pid in the pid file, when that process is alive and is a java process.
running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    grep -q 'kafka\.Kafka' "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

random_secret() { od -An -N12 -tx1 /dev/urandom | tr -d ' \n'; }

# A CA, a broker certificate for 127.0.0.1/localhost signed by it, and the
# SCRAM passwords: made once per work dir with keytool (part of every JDK).
make_tls() {
    [[ -f "$TLS_DIR/.complete" ]] && return 0
    command -v keytool >/dev/null 2>&1 || die "keytool (part of the JDK) is needed for MEMSTATE_KAFKA_SECURITY=sasl_ssl"
    rm -rf "$TLS_DIR"
    mkdir -p "$TLS_DIR"
    local pass dname="OU=memstate test,O=memstate"
    pass="$(random_secret)"
    echo "$pass" >"$TLS_DIR/store.password"
    random_secret >"$TLS_DIR/admin.password"
    random_secret >"$TLS_DIR/client.password"
    local kt=(keytool -noprompt -storetype PKCS12 -storepass "$pass" -keypass "$pass")
    "${kt[@]}" -genkeypair -keystore "$TLS_DIR/ca.p12" -alias ca -keyalg RSA -keysize 2048 \
        -validity 3650 -dname "CN=memstate test CA,$dname" -ext bc:c >"$TLS_DIR/keytool.log" 2>&1 \
        || { cat "$TLS_DIR/keytool.log" >&2; die "keytool could not make the CA"; }
    {
        "${kt[@]}" -exportcert -rfc -keystore "$TLS_DIR/ca.p12" -alias ca -file "$TLS_DIR/ca.pem" &&
            "${kt[@]}" -genkeypair -keystore "$TLS_DIR/broker.p12" -alias broker -keyalg RSA -keysize 2048 \
                -validity 3650 -dname "CN=localhost,$dname" &&
            "${kt[@]}" -certreq -keystore "$TLS_DIR/broker.p12" -alias broker -file "$TLS_DIR/broker.csr" &&
            "${kt[@]}" -gencert -keystore "$TLS_DIR/ca.p12" -alias ca -infile "$TLS_DIR/broker.csr" \
                -outfile "$TLS_DIR/broker.pem" -rfc -validity 3650 -ext "SAN=IP:127.0.0.1,DNS:localhost" \
                -ext "ku:c=digitalSignature,keyEncipherment" -ext "eku=serverAuth,clientAuth" &&
            "${kt[@]}" -importcert -keystore "$TLS_DIR/broker.p12" -alias ca -file "$TLS_DIR/ca.pem" &&
            "${kt[@]}" -importcert -keystore "$TLS_DIR/broker.p12" -alias broker -file "$TLS_DIR/broker.pem" &&
            "${kt[@]}" -importcert -keystore "$TLS_DIR/truststore.p12" -alias ca -file "$TLS_DIR/ca.pem"
    } >>"$TLS_DIR/keytool.log" 2>&1 || { cat "$TLS_DIR/keytool.log" >&2; die "keytool could not make the broker certificate"; }
    rm -f "$TLS_DIR/broker.csr"
    touch "$TLS_DIR/.complete"
    log "made a CA and a broker certificate for 127.0.0.1 in $TLS_DIR"
}

write_config() {
    mkdir -p "$WORK" "$DATA_DIR"
    local quorum internal_isr=1
    if [[ -n "$VOTERS" ]]; then
        quorum="controller.quorum.voters=$VOTERS"
    else
        quorum="controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT"
    fi
    ((REPLICATION > 1)) && internal_isr=$MIN_ISR
    cat >"$CONFIG" <<EOF
# Generated by integration-tests/scripts/kafka.sh: a KRaft node, broker and controller.
process.roles=broker,controller
node.id=$NODE_ID
$quorum
listeners=$CLIENT_LISTENER://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=$CLIENT_LISTENER://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
inter.broker.listener.name=$CLIENT_LISTENER
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,$CLIENT_LISTENER:$CLIENT_LISTENER
log.dirs=$DATA_DIR
num.partitions=1
default.replication.factor=$REPLICATION
min.insync.replicas=$MIN_ISR
offsets.topic.replication.factor=$REPLICATION
transaction.state.log.replication.factor=$REPLICATION
transaction.state.log.min.isr=$internal_isr
share.coordinator.state.topic.replication.factor=$REPLICATION
share.coordinator.state.topic.min.isr=$internal_isr
group.initial.rebalance.delay.ms=0
# Left at Kafka's default (true) on purpose: memstate-kafka must detect a
# missing topic itself instead of relying on the broker to refuse it.
auto.create.topics.enable=true
EOF
    : >"$ADMIN_PROPERTIES"
    if [[ "$SECURITY" == sasl_ssl ]]; then
        make_tls
        local pass admin client
        pass="$(cat "$TLS_DIR/store.password")"
        admin="$(cat "$TLS_DIR/admin.password")"
        client="$(cat "$TLS_DIR/client.password")"
        cat >>"$CONFIG" <<EOF
# TLS on the client listener (broker-to-broker traffic uses it too) with
# SCRAM-SHA-512 users made at format time: admin (inter-broker), memstate.
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/broker.p12
ssl.keystore.password=$pass
ssl.key.password=$pass
ssl.truststore.type=PKCS12
ssl.truststore.location=$TLS_DIR/truststore.p12
ssl.truststore.password=$pass
EOF
        cat >"$ADMIN_PROPERTIES" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
ssl.truststore.type=PKCS12
ssl.truststore.location=$TLS_DIR/truststore.p12
ssl.truststore.password=$pass
EOF
        # What a librdkafka client needs: KafkaConfig properties, one per line.
        cat >"$CLIENT_PROPERTIES" <<EOF
# librdkafka properties for the SASL_SSL broker at $BOOTSTRAP (made by kafka.sh)
security.protocol=SASL_SSL
ssl.ca.location=$TLS_DIR/ca.pem
sasl.mechanism=SCRAM-SHA-512
sasl.username=memstate
sasl.password=$client
EOF
    fi
    cat >"$LOG4J_CONFIG" <<EOF
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
    # The admin tools run by the readiness check log their whole config at INFO.
    sed 's/^rootLogger.level = INFO/rootLogger.level = WARN/' "$LOG4J_CONFIG" >"$TOOLS_LOG4J_CONFIG"
}

cmd_start() {
    local pid
    if pid="$(running_pid)"; then
        if [[ -f "$WORK/formatted-ports" && "$(cat "$WORK/formatted-ports")" != "$PORT/$CONTROLLER_PORT" ]]; then
            die "already running (pid $pid) with ports $(cat "$WORK/formatted-ports") (client/controller), not $PORT/$CONTROLLER_PORT; stop it first"
        fi
        log "already running (pid $pid) on $BOOTSTRAP"
        echo "$BOOTSTRAP"
        return 0
    fi
    [[ -f "$LIBS/.complete" ]] || die "Kafka $KAFKA_VERSION is not installed; run: $0 install"
    check_java
    if port_open "$PORT" || port_open "$CONTROLLER_PORT"; then
        die "port $PORT or $CONTROLLER_PORT on 127.0.0.1 is already in use by another process (set MEMSTATE_KAFKA_PORT / MEMSTATE_KAFKA_CONTROLLER_PORT)"
    fi
    write_config
    local started
    started=$(date +%s)
    # KRaft stores the controller's endpoint in the formatted log: a data dir
    # formatted for other ports would not elect itself.
    local formatted_for="$PORT/$CONTROLLER_PORT"
    if [[ -f "$DATA_DIR/meta.properties" && -f "$WORK/formatted-ports" ]] \
        && [[ "$(cat "$WORK/formatted-ports")" != "$formatted_for" ]]; then
        die "$DATA_DIR was formatted for ports $(cat "$WORK/formatted-ports") (client/controller), not $formatted_for; remove $WORK to start afresh"
    fi
    if [[ ! -f "$DATA_DIR/meta.properties" ]]; then
        local cluster_id="${MEMSTATE_KAFKA_CLUSTER_ID:-}"
        [[ -n "$cluster_id" ]] || cluster_id="$(java_cp kafka.tools.StorageTool random-uuid 2>/dev/null)"
        local format_args=(--config "$CONFIG" --cluster-id "$cluster_id")
        # A static quorum (controller.quorum.voters) is formatted without a flag.
        [[ -n "$VOTERS" ]] || format_args+=(--standalone)
        if [[ "$SECURITY" == sasl_ssl ]]; then
            format_args+=(--add-scram "SCRAM-SHA-512=[name=admin,password=$(cat "$TLS_DIR/admin.password")]")
            format_args+=(--add-scram "SCRAM-SHA-512=[name=memstate,password=$(cat "$TLS_DIR/client.password")]")
        fi
        log "formatting storage in $DATA_DIR (cluster $cluster_id)"
        java_cp -Dlog4j2.configurationFile="$LOG4J_CONFIG" kafka.tools.StorageTool format \
            "${format_args[@]}" >"$WORK/format.log" 2>&1 \
            || { cat "$WORK/format.log" >&2; die "formatting storage failed"; }
        echo "$formatted_for" >"$WORK/formatted-ports"
    fi
    # setsid: the broker outlives this shell and is not hit by its terminal's signals.
    # shellcheck disable=SC2086 # HEAP_OPTS holds several flags
    setsid "$JAVA" $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J_CONFIG" -Dkafka.logs.dir="$WORK" \
        -cp "$LIBS/*" kafka.Kafka "$CONFIG" >"$LOG_FILE" 2>&1 </dev/null &
    pid=$!
    # Not a job of this shell: `run` would report a SIGKILL from `kill` as its own.
    disown "$pid" 2>/dev/null || true
    echo "$pid" >"$PID_FILE"
    log "started pid $pid, log $LOG_FILE; waiting up to ${READY_TIMEOUT}s for $BOOTSTRAP"
    local deadline=$((started + READY_TIMEOUT))
    # Ready means: the server logged that it started, its port accepts
    # connections, and a metadata request (describeCluster) succeeds.
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            die "Kafka exited during startup (log: $LOG_FILE)"
        fi
        if grep -q 'Kafka Server started' "$LOG_FILE" 2>/dev/null && port_open "$PORT"; then
            if timeout 60 "$JAVA" -Xmx128m -Dlog4j2.configurationFile="$TOOLS_LOG4J_CONFIG" \
                -cp "$LIBS/*" org.apache.kafka.tools.ClusterTool cluster-id --bootstrap-server "$BOOTSTRAP" \
                --command-config "$ADMIN_PROPERTIES" \
                >"$WORK/ready.log" 2>&1; then
                break
            fi
        fi
        if (($(date +%s) >= deadline)); then
            tail -n 40 "$LOG_FILE" >&2 || true
            die "Kafka did not answer on $BOOTSTRAP within ${READY_TIMEOUT}s (still running as pid $pid; log: $LOG_FILE; stop it with: $0 stop)"
        fi
        sleep 1
    done
    log "ready on $BOOTSTRAP after $(($(date +%s) - started)) s ($(grep -m1 -o 'Cluster ID: .*' "$WORK/ready.log" || echo 'cluster id unknown'))"
    echo "$BOOTSTRAP"
}

# Waits up to $2 seconds for pid $1 to exit; fails if it is still alive.
wait_gone() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    ! kill -0 "$1" 2>/dev/null
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        log "not running"
        rm -f "$PID_FILE"
        return 0
    fi
    log "stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 60; then
        log "pid $pid did not exit within 60 s of SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || die "pid $pid is still alive"
    fi
    rm -f "$PID_FILE"
    log "stopped"
}

# SIGKILL, as a crash would: no controlled shutdown, no flush.
cmd_kill() {
    local pid
    if ! pid="$(running_pid)"; then
        log "not running"
        return 0
    fi
    log "killing pid $pid (SIGKILL)"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "pid $pid is still alive after SIGKILL"
    rm -f "$PID_FILE"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        if port_open "$PORT"; then
            echo "running: pid $pid, bootstrap $BOOTSTRAP, log $LOG_FILE"
        else
            echo "starting: pid $pid, $BOOTSTRAP not open yet, log $LOG_FILE"
        fi
        return 0
    fi
    echo "not running (Kafka $KAFKA_VERSION; installed: $([[ -f "$LIBS/.complete" ]] && echo yes || echo no))"
    return 3
}

cmd_env() {
    echo "export MEMSTATE_KAFKA_BOOTSTRAP=$BOOTSTRAP"
    if [[ "$SECURITY" == sasl_ssl ]]; then
        [[ -f "$CLIENT_PROPERTIES" ]] || die "no $CLIENT_PROPERTIES yet: run $0 start first"
        echo "export MEMSTATE_KAFKA_PROPERTIES_FILE=$CLIENT_PROPERTIES"
    fi
}

cmd_run() {
    [[ "${1:-}" == "--" ]] && shift
    [[ $# -gt 0 ]] || die "usage: $0 run -- COMMAND..."
    cmd_install
    trap cmd_stop EXIT
    cmd_start >/dev/null
    eval "$(cmd_env)"
    export MEMSTATE_KAFKA_BOOTSTRAP
    [[ "$SECURITY" == sasl_ssl ]] && export MEMSTATE_KAFKA_PROPERTIES_FILE
    "$@"
}

case "${1:-}" in
    install) cmd_install ;;
    run)
        shift
        cmd_run "$@"
        ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    kill) cmd_kill ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *)
        echo "usage: $0 install|start|stop|kill|status|env|run -- CMD" >&2
        exit 2
        ;;
esac
