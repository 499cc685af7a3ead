#!/usr/bin/env bash
# Runs the Kinesis emulator (kinesis-mock, npm package `kinesis-local`) as a
# local process on 127.0.0.1, for memstate's tests.
#
#   kinesis.sh install   install the pinned kinesis-local into the cache dir
#   kinesis.sh start     install if needed, start, wait until it answers, print the endpoint
#   kinesis.sh stop      stop the emulator started by `start`
#   kinesis.sh status    say whether it runs and answers (exit 0) or not (exit 1)
#   kinesis.sh env       print `export MEMSTATE_KINESIS_ENDPOINT=...` (for eval)
#
# Settings (environment):
#   KINESIS_LOCAL_VERSION     npm version of kinesis-local (default: the pinned one below)
#   MEMSTATE_KINESIS_CACHE    install dir (default: $HOME/.cache/memstate/kinesis-local-<version>)
#   MEMSTATE_BACKENDS_DIR     run dir parent; pid file and log go to <it>/kinesis
#                             (default: <repo>/.backends)
#   KINESIS_MOCK_PLAIN_PORT   plain-HTTP port (default 14567): the one the tests use
#   KINESIS_MOCK_TLS_PORT     TLS port (default 14568; rustls rejects its self-signed certificate)
#   MEMSTATE_KINESIS_START_TIMEOUT  seconds to wait for readiness (default 60)
#   KINESIS_MOCK_LOG_LEVEL    emulator log level (default WARN: handled errors, with stack traces)
#
# The emulator is started with stream creation/deletion delays of 10 ms (tests
# create a fresh stream per case), a shard limit of 100000 (its default of 50
# would cap the number of one-shard streams alive at once), no persistence.
#
# kinesis-local is kinesis-mock compiled to JavaScript: one main.js run by Node
# (no Java), with its self-signed TLS certificate in server.json beside it.
# It always listens on 0.0.0.0; kinesis/bind-loopback.cjs is preloaded to bind
# it to 127.0.0.1 only.
set -euo pipefail

VERSION="${KINESIS_LOCAL_VERSION:-0.6.2}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
CACHE_DIR="${MEMSTATE_KINESIS_CACHE:-${HOME:-/root}/.cache/memstate/kinesis-local-$VERSION}"
RUN_DIR="${MEMSTATE_BACKENDS_DIR:-$REPO_DIR/.backends}/kinesis"
PLAIN_PORT="${KINESIS_MOCK_PLAIN_PORT:-14567}"
TLS_PORT="${KINESIS_MOCK_TLS_PORT:-14568}"
START_TIMEOUT="${MEMSTATE_KINESIS_START_TIMEOUT:-60}"
PACKAGE_DIR="$CACHE_DIR/node_modules/kinesis-local"
PID_FILE="$RUN_DIR/kinesis.pid"
LOG_FILE="$RUN_DIR/kinesis.log"
ENDPOINT="http://127.0.0.1:$PLAIN_PORT"

say() { printf 'kinesis.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

installed() {
    [[ -f "$PACKAGE_DIR/main.js" && -f "$PACKAGE_DIR/server.json" ]] &&
        grep -q "\"version\" *: *\"$VERSION\"" "$PACKAGE_DIR/package.json" 2>/dev/null
}

cmd_install() {
    if installed; then
        say "kinesis-local $VERSION already installed in $CACHE_DIR"
        return 0
    fi
    command -v node >/dev/null || die "node is not installed (apt-get install nodejs npm)"
    command -v npm >/dev/null || die "npm is not installed (apt-get install npm)"
    mkdir -p "$CACHE_DIR"
    # A package.json of its own keeps npm from walking up into another project.
    [[ -f "$CACHE_DIR/package.json" ]] || printf '{"name":"memstate-kinesis-local","private":true}\n' >"$CACHE_DIR/package.json"
    say "installing kinesis-local@$VERSION into $CACHE_DIR"
    npm install --prefix "$CACHE_DIR" --no-audit --no-fund --no-save --loglevel=error \
        "kinesis-local@$VERSION" >&2
    installed || die "install finished but $PACKAGE_DIR/main.js or server.json is missing"
}

running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    # A recycled pid belongs to something else: check it is our node process.
    grep -q "kinesis-local" "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

# A ListStreams call. kinesis-mock checks that a signature is present but not
# that it is valid, so a placeholder signature is enough.
answers() {
    local now day
    now="$(date -u +%Y%m%dT%H%M%SZ)"
    day="${now%%T*}"
    curl -sS -m 3 -o /dev/null -w '%{http_code}' -X POST "$ENDPOINT/" \
        -H 'Content-Type: application/x-amz-json-1.1' \
        -H 'X-Amz-Target: Kinesis_20131202.ListStreams' \
        -H "X-Amz-Date: $now" \
        -H "Authorization: AWS4-HMAC-SHA256 Credential=memstate-test/$day/us-east-1/kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=0" \
        -d '{}' 2>/dev/null | grep -q '^200$'
}

cmd_start() {
    local pid
    if pid="$(running_pid)"; then
        answers || die "kinesis-local (pid $pid) runs but does not answer on $ENDPOINT; see $LOG_FILE"
        say "already running (pid $pid)"
        echo "$ENDPOINT"
        return 0
    fi
    cmd_install
    if answers; then
        die "something else already answers on $ENDPOINT; stop it or set KINESIS_MOCK_PLAIN_PORT"
    fi
    mkdir -p "$RUN_DIR"
    local started=$SECONDS
    rm -f "$PID_FILE"
    # setsid: the emulator outlives this script and its terminal. The process
    # that becomes node writes the pid file itself (setsid may fork).
    (
        cd "$RUN_DIR"
        # shellcheck disable=SC2016 # $$ and $0 expand in the inner bash, as meant.
        exec env \
            KINESIS_MOCK_CERT_PATH="$PACKAGE_DIR/server.json" \
            KINESIS_MOCK_PLAIN_PORT="$PLAIN_PORT" \
            KINESIS_MOCK_TLS_PORT="$TLS_PORT" \
            MEMSTATE_BIND_HOST=127.0.0.1 \
            AWS_REGION=us-east-1 \
            CREATE_STREAM_DURATION=10ms \
            DELETE_STREAM_DURATION=10ms \
            REGISTER_STREAM_CONSUMER_DURATION=10ms \
            DEREGISTER_STREAM_CONSUMER_DURATION=10ms \
            SHARD_LIMIT=100000 \
            SHOULD_PERSIST_DATA=false \
            LOG_LEVEL="${KINESIS_MOCK_LOG_LEVEL:-WARN}" \
            setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
            node --require "$SCRIPT_DIR/kinesis/bind-loopback.cjs" "$PACKAGE_DIR/main.js" \
            </dev/null >"$LOG_FILE" 2>&1
    ) &
    for _ in $(seq 1 50); do
        [[ -s "$PID_FILE" ]] && break
        sleep 0.1
    done
    [[ -s "$PID_FILE" ]] || die "kinesis-local did not start; log: $LOG_FILE"
    pid="$(cat "$PID_FILE")"
    until answers; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$LOG_FILE" >&2 || true
            rm -f "$PID_FILE"
            die "kinesis-local exited during start-up; log: $LOG_FILE"
        fi
        if ((SECONDS - started >= START_TIMEOUT)); then
            tail -n 30 "$LOG_FILE" >&2 || true
            cmd_stop || true
            die "kinesis-local did not answer on $ENDPOINT within ${START_TIMEOUT}s; log: $LOG_FILE"
        fi
        sleep 0.2
    done
    say "kinesis-local $VERSION answers on $ENDPOINT (pid $pid, ready in $((SECONDS - started))s, log $LOG_FILE)"
    echo "$ENDPOINT"
}

cmd_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PID_FILE"
        say "not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid ignored SIGTERM for 5s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
    say "stopped (pid $pid)"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        if answers; then
            say "running (pid $pid), answering on $ENDPOINT"
            return 0
        fi
        say "running (pid $pid) but not answering on $ENDPOINT; log: $LOG_FILE"
        return 1
    fi
    say "not running"
    return 1
}

cmd_env() {
    echo "export MEMSTATE_KINESIS_ENDPOINT=$ENDPOINT"
    # The AWS SDK must never probe the EC2 instance-metadata address in tests.
    echo "export AWS_EC2_METADATA_DISABLED=true"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
*)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
