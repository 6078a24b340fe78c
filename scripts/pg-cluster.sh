#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and the benchmark: the machine's packages
# (installed from Debian's if missing), a temporary directory, a loopback port, trust auth.
#
#   eval "$(scripts/pg-cluster.sh start)"   # exports OCX_TEST_POSTGRES and OCX_PG_DIR
#   scripts/pg-cluster.sh stop "$OCX_PG_DIR" # stops it and removes the directory
#   scripts/pg-cluster.sh bin                 # the directory of the PostgreSQL programs
#
# `start` prints shell assignments on stdout and everything else on stderr.
set -euo pipefail

pg_bin() {
    local initdb
    initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)
    if [[ -z "$initdb" ]]; then
        echo "pg-cluster: installing PostgreSQL from the machine's packages" >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y --no-install-recommends postgresql >&2; then
            apt-get update >&2
            apt-get install -y --no-install-recommends postgresql >&2
        fi
        initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)
    fi
    dirname "$initdb"
}

# Runs a PostgreSQL program as the cluster's owner (initdb refuses to run as root).
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "${1:-}" in
bin)
    # The directory of the PostgreSQL programs (installing them if missing).
    pg_bin
    ;;
start)
    bin=$(pg_bin)
    dir=$(mktemp -d /tmp/ocx-pg.XXXXXX)
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$dir"
    fi
    port=$(free_port)
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U ocx --no-sync >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    # Defaults stay as shipped (fsync on, synchronous_commit on): what is measured and tested
    # is a durable configuration. Only the connection limit is raised, for several replicas'
    # pools and the tests' stores at once.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=300" \
        start >&2 || { cat "$dir/server.log" >&2; exit 1; }
    echo "pg-cluster: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port in $dir" >&2
    echo "export OCX_PG_DIR=$dir"
    echo "export OCX_TEST_POSTGRES=postgres://ocx@127.0.0.1:$port/postgres"
    ;;
stop)
    dir=${2:?usage: pg-cluster.sh stop DIR}
    bin=$(pg_bin)
    if [[ -d "$dir/data" ]]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start | stop DIR | bin" >&2
    exit 2
    ;;
esac
