# Sourced by the scripts that check a client against a fresh `ocx-server --demo`
# (grpcweb-check.sh, sdk-examples.sh): a temp dir removed on exit, `ok`/`fail` lines, and
# `start_demo_server`, which builds the server (and any extra cargo packages named), starts it on
# a free loopback port and waits until it serves.
#
# Sets: ROOT (the repository), TMP, TARGET (cargo's debug dir), and after start_demo_server
# PORT, DATA (its data dir: platform.key, demo-carrier.key), SERVER_PID. The server's log is
# $TMP/server.log; `fail` prints its tail. Callers set `set -euo pipefail` themselves.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ocx-$(basename "$0" .sh).XXXXXX")
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/debug
SERVER_PID=

cleanup() {
    local rc=$?
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT

ok() { printf 'ok    %s\n' "$*"; }
fail() {
    printf 'FAIL  %s\n' "$*" >&2
    if [[ -s $TMP/server.log ]]; then tail -n 20 "$TMP/server.log" >&2; fi
    exit 1
}

# start_demo_server [CARGO BUILD ARGS...]: builds ocx-server (and what the arguments add, e.g.
# `-p ocx-client --examples`), starts it with --demo on a free loopback port, and waits (0.2 s
# apart, 30 s at most) until it logs that it serves and has written the demo keys.
start_demo_server() {
    cargo build --locked --quiet -p ocx-server "$@" || fail "cargo build -p ocx-server $* failed"
    PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    DATA=$TMP/data
    "$TARGET/ocx-server" --demo --data-dir "$DATA" --listen "127.0.0.1:$PORT" >"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    local try
    for try in $(seq 1 150); do
        kill -0 "$SERVER_PID" 2>/dev/null || fail "ocx-server exited before serving"
        if grep -q "serving" "$TMP/server.log" && [[ -s $DATA/demo-carrier.key ]]; then
            return 0
        fi
        sleep 0.2
    done
    fail "ocx-server did not serve on 127.0.0.1:$PORT within 30 s"
}
