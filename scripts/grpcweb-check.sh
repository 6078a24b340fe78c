#!/usr/bin/env bash
# gRPC-Web from a third-party client: `buf curl --protocol grpcweb` against a real
# `ocx-server --demo` on a free loopback port, over HTTP/1.1 (buf curl's choice for an http://
# URL with gRPC-Web), on the same port that serves gRPC: a unary call (ListNumbers), a feed
# (WatchNumberEvents, read for a few seconds while it stays open), and a call without a key,
# which the gate refuses as it does over gRPC. The schema comes from proto/ (server reflection
# needs HTTP/2).
#
#   bash scripts/grpcweb-check.sh
#
# Uses `buf` from PATH if it is the pinned version; otherwise installs the pinned @bufbuild/buf
# with npm into a temporary directory. Needs cargo, python3, and npm unless buf is on PATH.
# Prints one line per check; exits non-zero at the first failure, saying what failed.
set -euo pipefail

BUF_VERSION=1.75.0 # @bufbuild/buf on npm, as in scripts/buf-check.sh
FEED_SECONDS=3     # how long the feed is read

# shellcheck source=scripts/demo-server.sh
source "$(dirname "${BASH_SOURCE[0]}")/demo-server.sh"

# --- buf ---------------------------------------------------------------------------------------
BUF=
if [[ ${OCX_BUF_INSTALL:-0} != 1 ]] && command -v buf >/dev/null 2>&1 &&
    [[ $(buf --version 2>/dev/null) == "$BUF_VERSION" ]]; then
    BUF=$(command -v buf)
else
    command -v npm >/dev/null 2>&1 || fail "buf $BUF_VERSION is not on PATH and npm is not installed"
    npm install --prefix "$TMP/buf" --no-audit --no-fund --no-save --loglevel=error \
        "@bufbuild/buf@$BUF_VERSION" >"$TMP/npm.log" 2>&1 ||
        fail "npm install @bufbuild/buf@$BUF_VERSION failed: $(tail -n 5 "$TMP/npm.log")"
    BUF=$TMP/buf/node_modules/.bin/buf
fi
ok "buf $("$BUF" --version)"

# --- the server --------------------------------------------------------------------------------
start_demo_server
URL=http://127.0.0.1:$PORT

# curl_web NAME KEY DATA METHOD [buf curl flags...]: a gRPC-Web call; output in $TMP/NAME.json.
curl_web() {
    local name=$1 key=$2 data=$3 method=$4
    shift 4
    local args=(curl --protocol grpcweb --schema proto --data "$data" "$@")
    [[ -n $key ]] && args+=(--header "authorization: Bearer $key")
    "$BUF" "${args[@]}" "$URL/$method" >"$TMP/$name.json" 2>"$TMP/$name.err"
}

KEY=$(cat "$DATA/demo-carrier.key")

# --- a unary call ------------------------------------------------------------------------------
curl_web unary "$KEY" '{}' ocx.v1.NumberService/ListNumbers ||
    fail "ListNumbers over gRPC-Web: $(cat "$TMP/unary.err")"
count=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
numbers = d.get("phoneNumbers", [])
assert numbers and all(n["number"].startswith("+") and n["tenantId"] for n in numbers), d
print(len(numbers))' "$TMP/unary.json") || fail "ListNumbers answer: $(head -c 500 "$TMP/unary.json")"
ok "unary over gRPC-Web and HTTP/1.1: ListNumbers answered $count of the demo carrier's numbers"

# --- a feed ------------------------------------------------------------------------------------
# The feed stays open: read it for a while, then stop the client (timeout's status 124).
rc=0
timeout "$FEED_SECONDS" "$BUF" curl --protocol grpcweb --schema proto \
    --header "authorization: Bearer $KEY" --data '{"afterSequence": "0"}' \
    "$URL/ocx.v1.NumberService/WatchNumberEvents" >"$TMP/feed.json" 2>"$TMP/feed.err" || rc=$?
[[ $rc == 124 ]] || fail "WatchNumberEvents ended by itself (status $rc): $(cat "$TMP/feed.err")"
events=$(python3 -c '
import json, sys
text, decoder, i, seqs = open(sys.argv[1]).read(), json.JSONDecoder(), 0, []
while True:
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text):
        break
    message, i = decoder.raw_decode(text, i)
    seqs.append(int(message["event"]["sequence"]))
assert seqs and seqs == list(range(1, len(seqs) + 1)), seqs
print(len(seqs))' "$TMP/feed.json") ||
    fail "WatchNumberEvents over gRPC-Web: $(head -c 500 "$TMP/feed.json") $(cat "$TMP/feed.err")"
ok "feed over gRPC-Web: WatchNumberEvents replayed events 1 to $events in order, and stayed open"

# --- the gate ----------------------------------------------------------------------------------
if curl_web nokey "" '{}' ocx.v1.NumberService/ListNumbers; then
    fail "ListNumbers without a key succeeded over gRPC-Web"
fi
grep -qi "unauthenticated" "$TMP/nokey.err" ||
    fail "without a key: expected unauthenticated, got $(cat "$TMP/nokey.err")"
ok "without a key over gRPC-Web: unauthenticated, as over gRPC"
