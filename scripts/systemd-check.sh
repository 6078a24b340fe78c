#!/usr/bin/env bash
# Checks deploy/systemd: the unit passes `systemd-analyze verify`, its sandboxing scores at most
# 2.0 on `systemd-analyze security` (0 is best, 10 worst), and the server accepts its settings
# file. systemd-analyze comes from the machine's packages (installed from Debian's if missing);
# it checks the unit offline, so no running systemd is needed.
#
#   scripts/systemd-check.sh [SERVER_BINARY]   # default: target/debug/ocx-server, built if missing
set -euo pipefail
cd "$(dirname "$0")/.."

unit=deploy/systemd/ocx-server.service
settings=deploy/systemd/ocx.toml
server=${1:-target/debug/ocx-server}
[[ -x "$server" ]] || cargo build -q --locked -p ocx-server
server=$(realpath "$server")

if ! command -v systemd-analyze > /dev/null; then
    echo "systemd-check: installing systemd-analyze from the machine's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends systemd > /dev/null ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd > /dev/null; }
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# verify checks that ExecStart's program exists: point it at the binary just built.
grep -q '^ExecStart=/usr/local/bin/ocx-server ' "$unit" ||
    { echo "systemd-check: $unit no longer starts /usr/local/bin/ocx-server" >&2; exit 1; }
sed "s#^ExecStart=/usr/local/bin/ocx-server #ExecStart=$server #" "$unit" > "$work/ocx-server.service"
systemd-analyze verify --man=no "$work/ocx-server.service"
echo "systemd-check: systemd-analyze verify: clean"

# The exposure score, on the 0-100 scale --threshold takes (what `security` prints as 0.0-10.0).
# `security --offline` needs systemd 252 or later; older ones verify only.
version=$(systemd-analyze --version | awk 'NR==1 {print $2}')
if (( version < 252 )); then
    echo "systemd-check: systemd $version cannot score a unit file offline (252 can): skipped" >&2
elif ! systemd-analyze security --offline=yes --threshold=20 "$work/ocx-server.service" > "$work/security.txt" 2>&1; then
    cat "$work/security.txt" >&2
    echo "systemd-check: the unit's exposure is above 2.0: sandboxing was weakened" >&2
    exit 1
else
    grep 'Overall exposure level' "$work/security.txt" | sed 's/^/systemd-check: /'
fi

# The settings file is one the server reads: an unknown key or a bad value would stop it
# here. Its data-dir is the unit's state directory, so a flag points it at a temporary one.
"$server" --config "$settings" --data-dir "$work/state" init > "$work/init.log" 2>&1 ||
    { cat "$work/init.log" >&2; exit 1; }
[[ -s "$work/state/platform.key" ]] ||
    { echo "systemd-check: init with $settings wrote no platform key" >&2; exit 1; }
echo "systemd-check: the server reads $settings"

# The unit's stop timeout leaves room for the server's own graceful stop.
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$unit")
grace=$(sed -n 's/^shutdown-timeout = "\([0-9]*\)s"$/\1/p' "$settings")
if [[ -z "$stop" || -z "$grace" ]] || (( stop <= grace )); then
    echo "systemd-check: TimeoutStopSec ($stop s) must exceed shutdown-timeout ($grace s)" >&2
    exit 1
fi
echo "systemd-check: stops within ${stop}s (graceful stop ${grace}s)"
