#!/usr/bin/env bash
# A three-node Apache Kafka cluster on 127.0.0.1 from the same jars as
# kafka.sh: three combined broker + controller nodes (a static KRaft quorum of
# three voters), replication factor 3 and min.insync.replicas=2, so that an
# acknowledged record (acks=all) survives the loss of any one broker.
# Each node is a kafka.sh instance with its own name, ports and work dir.
#
#   kafka-cluster.sh start          start the three nodes, wait until each answers
#   kafka-cluster.sh stop           stop them
#   kafka-cluster.sh kill N         SIGKILL node N (1..3)
#   kafka-cluster.sh start-node N   start node N again and wait until it answers
#   kafka-cluster.sh status         one line per node
#   kafka-cluster.sh env            print `export MEMSTATE_KAFKA_BOOTSTRAP=...` (all three)
#   kafka-cluster.sh run -- CMD     install, start, run CMD with the env exported, stop (always)
#
# Settings (environment):
#   MEMSTATE_KAFKA_CLUSTER_BASE_PORT  node N listens on BASE+10N (clients) and BASE+10N+1
#                                     (controller); default 19500: 19510/19511, 19520/19521, 19530/19531
#   MEMSTATE_KAFKA_CLUSTER_HEAP_OPTS  JVM heap flags of each node (default "-Xms128m -Xmx256m")
#   and kafka.sh's MEMSTATE_KAFKA_VERSION, MEMSTATE_KAFKA_CACHE, MEMSTATE_BACKENDS_DIR, JAVA_HOME
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
KAFKA_SH="$SCRIPT_DIR/kafka.sh"
BASE="${MEMSTATE_KAFKA_CLUSTER_BASE_PORT:-19500}"
HEAP="${MEMSTATE_KAFKA_CLUSTER_HEAP_OPTS:--Xms128m -Xmx256m}"
WORK="${MEMSTATE_BACKENDS_DIR:-$REPO_ROOT/.backends}/kafka-cluster"
NODES=(1 2 3)

log() { printf 'kafka-cluster.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

client_port() { echo $((BASE + 10 * $1)); }
controller_port() { echo $((BASE + 10 * $1 + 1)); }

voters() {
    local n out=()
    for n in "${NODES[@]}"; do out+=("$n@127.0.0.1:$(controller_port "$n")"); done
    (IFS=,; echo "${out[*]}")
}

bootstrap() {
    local n out=()
    for n in "${NODES[@]}"; do out+=("127.0.0.1:$(client_port "$n")"); done
    (IFS=,; echo "${out[*]}")
}

# Every node must be formatted with the same cluster id.
cluster_id() {
    mkdir -p "$WORK"
    if [[ ! -s "$WORK/cluster-id" ]]; then
        local libs="${MEMSTATE_KAFKA_CACHE:-$HOME/.cache/memstate/kafka-${MEMSTATE_KAFKA_VERSION:-4.4.0}}/libs"
        java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null >"$WORK/cluster-id.tmp" \
            || die "cannot make a cluster id (is Kafka installed? run: $KAFKA_SH install)"
        mv "$WORK/cluster-id.tmp" "$WORK/cluster-id"
    fi
    cat "$WORK/cluster-id"
}

check_node() { [[ "${1:-}" =~ ^[123]$ ]] || die "node must be 1, 2 or 3, not '${1:-}'"; }

# kafka.sh for node $1 with the remaining arguments.
node_sh() {
    local n=$1
    shift
    MEMSTATE_KAFKA_NAME="kafka-cluster-node$n" \
        MEMSTATE_KAFKA_PORT="$(client_port "$n")" \
        MEMSTATE_KAFKA_CONTROLLER_PORT="$(controller_port "$n")" \
        MEMSTATE_KAFKA_NODE_ID="$n" \
        MEMSTATE_KAFKA_VOTERS="$(voters)" \
        MEMSTATE_KAFKA_CLUSTER_ID="$(cluster_id)" \
        MEMSTATE_KAFKA_REPLICATION=3 \
        MEMSTATE_KAFKA_MIN_ISR=2 \
        MEMSTATE_KAFKA_HEAP_OPTS="$HEAP" \
        MEMSTATE_KAFKA_SECURITY=plaintext \
        bash "$KAFKA_SH" "$@"
}

cmd_start() {
    bash "$KAFKA_SH" install
    cluster_id >/dev/null
    # In parallel: a node answers only once a majority of the quorum is up.
    local n pids=() failed=0
    for n in "${NODES[@]}"; do
        node_sh "$n" start >/dev/null &
        pids+=($!)
    done
    for n in "${!pids[@]}"; do wait "${pids[$n]}" || failed=1; done
    ((failed == 0)) || die "a node did not start (logs: .backends/kafka-cluster-node*/kafka.log)"
    log "three nodes ready on $(bootstrap)"
}

cmd_stop() {
    local n
    for n in "${NODES[@]}"; do node_sh "$n" stop || true; done
}

cmd_run() {
    [[ "${1:-}" == "--" ]] && shift
    [[ $# -gt 0 ]] || die "usage: $0 run -- COMMAND..."
    trap cmd_stop EXIT
    cmd_start
    export MEMSTATE_KAFKA_BOOTSTRAP
    MEMSTATE_KAFKA_BOOTSTRAP="$(bootstrap)"
    "$@"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
kill)
    check_node "${2:-}"
    node_sh "$2" kill
    ;;
start-node)
    check_node "${2:-}"
    node_sh "$2" start >/dev/null
    ;;
status)
    for n in "${NODES[@]}"; do printf 'node %s: %s\n' "$n" "$(node_sh "$n" status || true)"; done
    ;;
env) echo "export MEMSTATE_KAFKA_BOOTSTRAP=$(bootstrap)" ;;
run)
    shift
    cmd_run "$@"
    ;;
*)
    echo "usage: $0 start|stop|kill N|start-node N|status|env|run -- CMD" >&2
    exit 2
    ;;
esac
