#!/usr/bin/env bash
# The Rust SDK's examples (client-sdk/examples), run as a carrier's engineer would run them,
# against a real `ocx-server --demo` on a free loopback port with the demo carrier's key:
#   - mirror_numbers: mirrors the numbers into a table until it matches ListNumbers, then
#     again from the saved table (it resumes after the last event and has nothing to do);
#   - follow_calls: follows the call-record feed for 50 records, then 50 more from the saved
#     position (the second run starts where the first stopped);
#   - reconcile_day: uploads yesterday's durations and prints the reconciliation, then again
#     (every report comes back unchanged).
#
#   bash scripts/sdk-examples.sh
#
# Needs cargo and python3. Prints one line per check; exits non-zero at the first failure.
set -euo pipefail

# shellcheck source=scripts/demo-server.sh
source "$(dirname "${BASH_SOURCE[0]}")/demo-server.sh"

start_demo_server -p ocx-client --examples
export OCX_ENDPOINT=http://127.0.0.1:$PORT OCX_KEY_FILE=$DATA/demo-carrier.key

example() {
    local name=$1
    shift
    "$TARGET/examples/$name" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" ||
        fail "$name $*: $(tail -n 5 "$TMP/$name.err")"
}

# --- mirror_numbers ------------------------------------------------------------------------------
example mirror_numbers "$TMP/numbers.tsv" --until-caught-up
grep -q '^caught up: 26 numbers (5 assigned)' "$TMP/mirror_numbers.out" ||
    fail "mirror_numbers: $(tail -n 3 "$TMP/mirror_numbers.out")"
events=$(grep -c $'\t' "$TMP/mirror_numbers.out")
ok "mirror_numbers: $(tail -n 1 "$TMP/mirror_numbers.out") ($events events applied)"
example mirror_numbers "$TMP/numbers.tsv" --until-caught-up
[[ $(grep -c $'\t' "$TMP/mirror_numbers.out" || true) == 0 ]] ||
    fail "mirror_numbers resumed and applied events again: $(head -n 3 "$TMP/mirror_numbers.out")"
ok "mirror_numbers again: resumed after the saved event, nothing to apply, $(tail -n 1 "$TMP/mirror_numbers.out")"

# --- follow_calls --------------------------------------------------------------------------------
example follow_calls "$TMP/calls.position" --limit 50
cp "$TMP/follow_calls.out" "$TMP/first.out"
[[ $(wc -l <"$TMP/first.out") == 50 ]] || fail "follow_calls: $(wc -l <"$TMP/first.out") records, not 50"
example follow_calls "$TMP/calls.position" --limit 50
python3 - "$TMP/first.out" "$TMP/follow_calls.out" <<'PY' || fail "follow_calls did not resume where it stopped"
import sys
first = [int(l.split("\t")[0]) for l in open(sys.argv[1])]
second = [int(l.split("\t")[0]) for l in open(sys.argv[2])]
both = first + second
assert len(second) == 50 and both == sorted(set(both)), (first[-3:], second[:3])
PY
ok "follow_calls: 50 records, then 50 more from the saved position (feed sequences $(head -c 12 "$TMP/first.out" | cut -f1) onwards, increasing, none twice)"

# --- reconcile_day -------------------------------------------------------------------------------
DAY=$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) - d.timedelta(days=1)).date())')
example reconcile_day "$DAY"
grep -q "^uploaded: [1-9][0-9]* created, 0 unchanged, 0 corrected, 0 rejected" "$TMP/reconcile_day.out" ||
    fail "reconcile_day: $(cat "$TMP/reconcile_day.out")"
grep -q "^$DAY: [1-9][0-9]* matched, [1-9][0-9]* mismatched" "$TMP/reconcile_day.out" ||
    fail "reconcile_day: no reconciliation: $(cat "$TMP/reconcile_day.out")"
ok "reconcile_day $DAY: $(grep '^uploaded' "$TMP/reconcile_day.out"); $(grep "^$DAY" "$TMP/reconcile_day.out")"
example reconcile_day "$DAY"
grep -q "^uploaded: 0 created, [1-9][0-9]* unchanged, 0 corrected, 0 rejected" "$TMP/reconcile_day.out" ||
    fail "reconcile_day again: $(cat "$TMP/reconcile_day.out")"
ok "reconcile_day again: $(grep '^uploaded' "$TMP/reconcile_day.out")"
