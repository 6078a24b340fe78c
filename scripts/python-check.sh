#!/usr/bin/env bash
# The Python SDK end to end: install client-sdk/python into a fresh virtual environment (its
# stubs generated from proto/ by grpcio-tools: no system protoc), run its unit tests, start the
# real ocx-server with demo data on a free loopback port, and run examples/tour.py's checks
# against it as the demo carrier and the platform. Exits non-zero if anything fails.
#
# Needs Python >= 3.10 with venv and pip (PYTHON, default python3), and cargo unless
# OCX_SERVER_BIN names a built ocx-server. Set OCX_KEEP_TMP=1 to keep the temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'python-check: %s\n' "$*" >&2; exit 1; }

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || fail "$python is older than 3.10"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ocx-python-check.XXXXXX")
server_pid=
follower_pid=
cleanup() {
  local status=$?
  local pid
  for pid in "$follower_pid" "$server_pid"; do
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [[ $status -ne 0 && -s $tmp/server.log ]]; then
    printf '\n--- ocx-server log (last 40 lines) ---\n' >&2
    tail -n 40 "$tmp/server.log" >&2 || true
  fi
  if [[ ${OCX_KEEP_TMP:-} == 1 ]]; then
    printf 'python-check: kept %s\n' "$tmp" >&2
  else
    rm -rf "$tmp"
  fi
  exit "$status"
}
trap cleanup EXIT

# Runs "$@" every 0.1 s until it succeeds, at most 300 times (about 30 s); $1 names what is
# awaited in the failure message.
wait_until() {
  local what=$1
  shift
  local _
  for _ in $(seq 1 300); do
    if "$@"; then
      return 0
    fi
    sleep 0.1
  done
  fail "timed out waiting for $what"
}

# Starts the server on $port with $data_dir in the background (log appended to server.log) and
# waits until it accepts connections: it binds only after writing both key files and seeding
# the demo, so an accepted connection means it is ready.
server_accepts() {
  kill -0 "$server_pid" 2>/dev/null || fail "ocx-server exited during start-up"
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}
start_server() {
  "$server_bin" --demo --data-dir "$data_dir" --listen "127.0.0.1:$port" >>"$tmp/server.log" 2>&1 &
  server_pid=$!
  wait_until "ocx-server to accept connections on 127.0.0.1:$port" server_accepts
}

# Stops the server gracefully (SIGINT, as Ctrl-C), as a deployment would.
stop_server() {
  kill -INT "$server_pid"
  wait_until "ocx-server to stop" eval '! kill -0 "$server_pid" 2>/dev/null'
  wait "$server_pid" || true
  server_pid=
}

if [[ -n ${OCX_SERVER_BIN:-} ]]; then
  server_bin=$OCX_SERVER_BIN
else
  step "cargo build -p ocx-server (reuses target/)"
  cargo build -p ocx-server --locked
  server_bin=${CARGO_TARGET_DIR:-$root/target}/debug/ocx-server
fi
[[ -x $server_bin ]] || fail "no server binary at $server_bin"

step "pip install ./client-sdk/python into a fresh venv ($("$python" --version))"
"$python" -m venv "$tmp/venv"
venv_python=$tmp/venv/bin/python
"$venv_python" -m pip install --quiet --disable-pip-version-check \
  -c client-sdk/python/constraints.txt ./client-sdk/python
"$venv_python" -c 'import grpc, google.protobuf, ocx_client
print("ocx_client", ocx_client.__version__, "grpcio", grpc.__version__,
      "protobuf", google.protobuf.__version__)'

step "unit tests (python -m unittest)"
# From the repository root, so the installed package is imported, not client-sdk/python/src.
"$venv_python" -m unittest discover -s client-sdk/python/tests

step "start ocx-server --demo on a free loopback port"
port=$("$venv_python" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()')
data_dir=$tmp/data
start_server
echo "serving on 127.0.0.1:$port (pid $server_pid)"
export OCX_ENDPOINT=http://127.0.0.1:$port
export OCX_CARRIER_KEY_FILE=$data_dir/demo-carrier.key
export OCX_PLATFORM_KEY_FILE=$data_dir/platform.key

step "examples/tour.py against it"
"$venv_python" client-sdk/python/examples/tour.py

step "follow number events across a server restart"
# The demo has 25 events and the tour adds none. The follower replays 21..25, the server stops
# gracefully (its streams end UNAVAILABLE) and starts again on the same port and data, and one
# assignment adds event 26: the follower must reconnect by itself and get exactly 21..26.
follower_script=client-sdk/python/tests/restart_follow.py
"$venv_python" "$follower_script" follow --after 20 --until 26 >"$tmp/follow.out" 2>"$tmp/follow.err" &
follower_pid=$!
wait_until "the follower's replay" grep -q '^25 ' "$tmp/follow.out"
stop_server
start_server
echo "restarted (pid $server_pid)"
"$venv_python" "$follower_script" assign --number +442079000019
wait_until "the follower's exit" eval '! kill -0 "$follower_pid" 2>/dev/null'
follower_status=0
wait "$follower_pid" || follower_status=$?
follower_pid=
cat "$tmp/follow.out" "$tmp/follow.err"
[[ $follower_status -eq 0 ]] || fail "the follower failed (exit $follower_status)"
grep -q 'reconnecting after sequence 25' "$tmp/follow.err" \
  || fail "the follower did not report a reconnect after sequence 25"

step "python-check: passed"
