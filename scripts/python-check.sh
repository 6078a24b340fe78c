#!/usr/bin/env bash
# The Python SDK end to end: install client-sdk/python into a fresh virtual environment (its
# stubs generated from proto/ by grpcio-tools: no system protoc), run its unit tests, start the
# real ocx-server with demo data on a free loopback port, run examples/tour.py's checks against
# it as the demo carrier and the platform, then restart the server in the middle of a follow
# and of two uploads (tests/restart_follow.py, tests/restart_upload.py) and stop a follower
# from another thread. Exits non-zero if anything fails.
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
uploader_pid=
cleanup() {
  local status=$?
  local pid
  for pid in "$follower_pid" "$uploader_pid" "$server_pid"; do
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [[ $status -ne 0 ]]; then
    local output
    for output in "$tmp"/*.out "$tmp"/*.err; do
      if [[ -s $output ]]; then
        printf '\n--- %s (last 20 lines) ---\n' "${output##*/}" >&2
        tail -n 20 "$output" >&2 || true
      fi
    done
  fi
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

# Kills the server (SIGKILL): a crash, with whatever it was doing left undone.
kill_server() {
  kill -KILL "$server_pid"
  wait "$server_pid" 2>/dev/null || true
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
  -c client-sdk/python/constraints.txt "./client-sdk/python[otel]"
"$venv_python" -c 'import grpc, google.protobuf, ocx_client
print("ocx_client", ocx_client.__version__, "grpcio", grpc.__version__,
      "protobuf", google.protobuf.__version__)'
# The type hints ship with the package (PEP 561): py.typed and the generated stubs' .pyi.
"$venv_python" -c 'import importlib.resources as r
package = r.files("ocx_client")
missing = [f for f in ("py.typed", "_gen/ocx/v1/platform_pb2.pyi") if not package.joinpath(f).is_file()]
assert not missing, f"not in the installed package: {missing}"
print("typed: py.typed and the generated .pyi stubs are installed")'

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

# restart_upload.py around a restart, in three parts. start_uploads NAME runs the ingest helper
# and the duration uploader side by side (1,200 items each, 100 a batch) and waits until the
# input of both has paused in the middle of batch 5; the caller then stops the server.
# resume_uploads lets the inputs go on and waits until both helpers have found their stream
# closed and logged their reconnect (they are now waiting for the server, which the caller
# then starts again). finish_uploads waits for the checks: every batch acknowledged once, in
# order, every item stored exactly once, the summaries adding up.
uploader_script=client-sdk/python/tests/restart_upload.py
uploads=
uploader_running() {
  if ! kill -0 "$uploader_pid" 2>/dev/null || grep -q ': FAILED' "$tmp/$uploads.out"; then
    fail "restart_upload.py failed early: $(cat "$tmp/$uploads.out" "$tmp/$uploads.err")"
  fi
}
both_logged() {  # FILE (out or err) INGEST_PATTERN DURATIONS_PATTERN
  uploader_running
  grep -q "$2" "$tmp/$uploads.$1" && grep -q "$3" "$tmp/$uploads.$1"
}
start_uploads() {
  uploads=$1
  "$venv_python" "$uploader_script" run --count 1200 --batch-size 100 --pause-at 450 \
    --go-file "$tmp/$uploads.go" >"$tmp/$uploads.out" 2>"$tmp/$uploads.err" &
  uploader_pid=$!
  wait_until "both uploads to pause in the middle ($uploads)" both_logged out \
    '^ingest_call_records: paused' '^upload_call_durations: paused'
}
resume_uploads() {
  touch "$tmp/$uploads.go"
  wait_until "both uploads to reconnect ($uploads)" both_logged err \
    'call records upload: .*reconnecting in' 'call durations upload: .*reconnecting in'
}
finish_uploads() {
  wait_until "the uploads' end ($uploads)" eval '! kill -0 "$uploader_pid" 2>/dev/null'
  local status=0
  wait "$uploader_pid" || status=$?
  uploader_pid=
  cat "$tmp/$uploads.out" "$tmp/$uploads.err"
  [[ $status -eq 0 ]] || fail "the uploads failed (exit $status)"
  grep -Eq 'to send [1-9][0-9]* unacknowledged batch\(es\) again' "$tmp/$uploads.err" \
    || fail "the uploads did not report sending unacknowledged batches again"
}

step "follow number events, ingest call records and upload durations across a server restart"
# The demo has 31 events (26 numbers uploaded, 5 assigned) and the tour adds none. The follower
# replays 27..31, the server stops gracefully (its streams end UNAVAILABLE) and starts again on
# the same port and data, and one assignment adds event 32: the follower must reconnect by
# itself and get exactly 27..32. The
# uploads, paused meanwhile, must reconnect by themselves and wait for the server.
follower_script=client-sdk/python/tests/restart_follow.py
"$venv_python" "$follower_script" follow --after 26 --until 32 >"$tmp/follow.out" 2>"$tmp/follow.err" &
follower_pid=$!
wait_until "the follower's replay" grep -q '^31 ' "$tmp/follow.out"
start_uploads graceful
stop_server
resume_uploads
start_server
echo "restarted (pid $server_pid)"
"$venv_python" "$follower_script" assign --number +442079000019
wait_until "the follower's exit" eval '! kill -0 "$follower_pid" 2>/dev/null'
follower_status=0
wait "$follower_pid" || follower_status=$?
follower_pid=
cat "$tmp/follow.out" "$tmp/follow.err"
[[ $follower_status -eq 0 ]] || fail "the follower failed (exit $follower_status)"
grep -q 'reconnecting after sequence 31' "$tmp/follow.err" \
  || fail "the follower did not report a reconnect after sequence 31"
finish_uploads

step "ingest call records and upload durations across a server crash (SIGKILL)"
# The same uploads, the server killed instead: batches it was committing or had committed
# without its acknowledgement reaching the client are sent again (a committed one comes back
# UNCHANGED), and still every item is stored exactly once.
start_uploads crash
kill_server
resume_uploads
start_server
echo "restarted after the crash (pid $server_pid)"
finish_uploads

step "a follower stopped from another thread"
"$venv_python" "$follower_script" stop

step "python-check: passed"
