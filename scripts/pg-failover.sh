#!/usr/bin/env bash
# A PostgreSQL primary and a synchronous streaming standby on loopback, for the failover test
# (server/tests/it/failover.rs) and for trying failover by hand. The machine's packages
# (installed from Debian's if missing, as scripts/pg-cluster.sh does), a temporary directory,
# two loopback ports, trust auth.
#
#   eval "$(scripts/pg-failover.sh start)"     # exports OCX_FAILOVER_DIR and OCX_FAILOVER_URL
#   scripts/pg-failover.sh kill-primary DIR    # SIGKILL the primary's postmaster and every backend
#   scripts/pg-failover.sh promote DIR         # the standby becomes the primary (waits for it)
#   scripts/pg-failover.sh stop DIR            # stops what runs and removes the directory
#
# OCX_FAILOVER_URL names both servers, the primary first, with
# target_session_attrs=read-write: OCX connects to whichever accepts writes, so after the
# promotion it finds the new primary by itself.
#
# The primary runs with synchronous_standby_names = 'FIRST 1 (standby)' and synchronous_commit
# = on: a commit returns only once the standby has flushed its WAL, so a transaction OCX
# acknowledged is on the standby when the primary dies. The standby runs with
# synchronous_standby_names = '': promoted, it has no standby to wait for (until one is
# attached to it, it is a single copy).
#
# `start` prints shell assignments on stdout and everything else on stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=pg-common.sh
source "$here/pg-common.sh"

# The postmaster's pid of the data directory $1, if it runs.
postmaster() {
    [[ -f "$1/postmaster.pid" ]] && head -1 "$1/postmaster.pid"
}

# Whether process $1 runs (a zombie that nobody reaped yet does not).
alive() {
    [[ -e "/proc/$1/stat" ]] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null
}

case "${1:-}" in
start)
    bin=$(pg_bin)
    dir=$(owned_tmpdir ocx-failover)
    p1=$(free_port)
    p2=$(free_port)
    init_cluster "$bin" "$dir/primary" "$dir/initdb.log"
    as_owner tee -a "$dir/primary/pg_hba.conf" > /dev/null <<HBA
host replication ocx 127.0.0.1/32 trust
HBA
    # A commit waits for the standby's flush (FIRST 1: the one standby named "standby").
    as_owner tee -a "$dir/primary/postgresql.conf" > /dev/null <<CONF
listen_addresses = '127.0.0.1'
port = $p1
unix_socket_directories = '$dir'
max_connections = 300
wal_level = replica
max_wal_senders = 4
synchronous_standby_names = 'FIRST 1 (standby)'
synchronous_commit = on
CONF
    as_owner "$bin/pg_ctl" -D "$dir/primary" -l "$dir/primary.log" -w -t 60 start >&2 ||
        { cat "$dir/primary.log" >&2; exit 1; }
    # The standby: a base backup with -R (standby.signal and primary_conninfo), named
    # "standby" so that the primary counts it as its synchronous standby.
    as_owner "$bin/pg_basebackup" -h 127.0.0.1 -p "$p1" -U ocx -D "$dir/standby" -R -X stream \
        -d "application_name=standby" >"$dir/basebackup.log" 2>&1 ||
        { cat "$dir/basebackup.log" >&2; exit 1; }
    # The base backup copied the primary's settings. Once promoted, the standby must not wait
    # for a synchronous standby of its own, which does not exist: every commit would hang.
    as_owner tee -a "$dir/standby/postgresql.conf" > /dev/null <<CONF
port = $p2
hot_standby = on
synchronous_standby_names = ''
# When streaming from the primary fails, the standby waits this long before it tries again,
# and a promotion asked for meanwhile can wait as long (5 s by default).
wal_retrieve_retry_interval = '100ms'
CONF
    as_owner "$bin/pg_ctl" -D "$dir/standby" -l "$dir/standby.log" -w -t 60 start >&2 ||
        { cat "$dir/standby.log" >&2; exit 1; }
    # Ready when the primary sees its standby as synchronous.
    for _ in $(seq 1 600); do
        state=$("$bin/psql" -h 127.0.0.1 -p "$p1" -U ocx -d postgres -Atc \
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'" 2>/dev/null || true)
        [[ "$state" == sync ]] && break
        sleep 0.1
    done
    [[ "$state" == sync ]] ||
        { echo "pg-failover: the standby never became synchronous ($state)" >&2; exit 1; }
    echo "$p1" > "$dir/primary.port"
    echo "$p2" > "$dir/standby.port"
    echo "pg-failover: primary on 127.0.0.1:$p1, synchronous standby on 127.0.0.1:$p2, in $dir" >&2
    echo "export OCX_FAILOVER_DIR=$dir"
    echo "export OCX_FAILOVER_URL='postgres://ocx@127.0.0.1:$p1,127.0.0.1:$p2/postgres?target_session_attrs=read-write'"
    ;;
kill-primary)
    dir=${2:?usage: pg-failover.sh kill-primary DIR}
    pid=$(postmaster "$dir/primary") || { echo "pg-failover: no primary runs" >&2; exit 1; }
    # The postmaster is stopped first, so that it forks no backend while its children are
    # listed; then all of them at once: no backend gets to finish anything.
    kill -STOP "$pid"
    children=$(ps -o pid= --ppid "$pid" | tr -d ' ' || true)
    # shellcheck disable=SC2086
    kill -KILL "$pid" $children
    while alive "$pid"; do sleep 0.01; done
    echo "pg-failover: SIGKILLed the primary (postmaster $pid and $(wc -w <<<"$children") children)" >&2
    ;;
promote)
    dir=${2:?usage: pg-failover.sh promote DIR}
    bin=$(pg_bin)
    as_owner "$bin/pg_ctl" -D "$dir/standby" -w -t 60 promote >&2
    ;;
stop)
    dir=${2:?usage: pg-failover.sh stop DIR}
    bin=$(pg_bin)
    for node in primary standby; do
        if [[ -f "$dir/$node/postmaster.pid" ]]; then
            as_owner "$bin/pg_ctl" -D "$dir/$node" -m immediate -w stop >&2 2>/dev/null || true
        fi
    done
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start | kill-primary DIR | promote DIR | stop DIR" >&2
    exit 2
    ;;
esac
