#!/usr/bin/env bash
# Starts, as local processes on 127.0.0.1, every backend this machine can run,
# and stops them again. Used by `make backends-up`, `make backends-down` and
# `make test`.
#
#   backends.sh up          start what can run here; write <backends dir>/env
#   backends.sh down        stop everything `up` started
#   backends.sh run -- CMD  up, run CMD with the endpoint variables exported, down (always)
#
# Kafka runs where Java and Maven are present (kafka.sh), the Kinesis emulator
# where Node and npm are (kinesis.sh). EventStoreDB/KurrentDB has no
# distribution that installs without Docker: its cases run where
# MEMSTATE_EVENTSTORE_URL is set or a Docker engine answers (testcontainers).
#
# A backend that fails to start is reported and left out; the tests then show
# its cases as ignored, or fail them when MEMSTATE_REQUIRE names it.
# MEMSTATE_BACKENDS=kafka,kinesis limits which backends `up` tries.
set -uo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
WORK="${MEMSTATE_BACKENDS_DIR:-$REPO_ROOT/.backends}"
ENV_FILE="$WORK/env"
WANTED="${MEMSTATE_BACKENDS:-kafka,kinesis}"

say() { printf 'backends: %s\n' "$*" >&2; }
wanted() { [[ ",$WANTED," == *",$1,"* ]]; }
have() { command -v "$1" >/dev/null 2>&1; }

up() {
    mkdir -p "$WORK"
    : >"$ENV_FILE"
    if wanted kafka; then
        if have java && have mvn; then
            if bash "$SCRIPT_DIR/kafka.sh" install && bash "$SCRIPT_DIR/kafka.sh" start >/dev/null; then
                bash "$SCRIPT_DIR/kafka.sh" env >>"$ENV_FILE"
            else
                say "Kafka did not start; its cases will be ignored (or fail under MEMSTATE_REQUIRE)"
            fi
        else
            say "no java/mvn: Kafka not started (set MEMSTATE_KAFKA_BOOTSTRAP to use an existing broker)"
        fi
    fi
    if wanted kinesis; then
        if have node && have npm; then
            if bash "$SCRIPT_DIR/kinesis.sh" start >/dev/null; then
                bash "$SCRIPT_DIR/kinesis.sh" env >>"$ENV_FILE"
            else
                say "the Kinesis emulator did not start; its cases will be ignored (or fail under MEMSTATE_REQUIRE)"
            fi
        else
            say "no node/npm: Kinesis emulator not started (set MEMSTATE_KINESIS_ENDPOINT to use an existing one)"
        fi
    fi
    say "endpoints written to $ENV_FILE:"
    sed 's/^/  /' "$ENV_FILE" >&2
}

down() {
    bash "$SCRIPT_DIR/kafka.sh" stop >/dev/null 2>&1 || true
    bash "$SCRIPT_DIR/kinesis.sh" stop >/dev/null 2>&1 || true
    rm -f "$ENV_FILE"
    say "stopped"
}

run() {
    [[ "${1:-}" == "--" ]] && shift
    [[ $# -gt 0 ]] || { say "usage: backends.sh run -- COMMAND..."; exit 2; }
    trap down EXIT
    up
    set -a
    # shellcheck disable=SC1090
    source "$ENV_FILE"
    set +a
    "$@"
}

case "${1:-}" in
up) up ;;
down) down ;;
run) shift; run "$@" ;;
*) say "usage: backends.sh up|down|run -- COMMAND..."; exit 2 ;;
esac
