#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and the benchmark: the machine's packages
# (installed from Debian's if missing), a temporary directory, a loopback port, trust auth.
#
#   eval "$(scripts/pg-cluster.sh start)"   # exports OCX_TEST_POSTGRES and OCX_PG_DIR
#   scripts/pg-cluster.sh stop "$OCX_PG_DIR" # stops it and removes the directory
#
# `start` prints shell assignments on stdout and everything else on stderr.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=pg-common.sh
source "$here/pg-common.sh"

case "${1:-}" in
start)
    bin=$(pg_bin)
    dir=$(owned_tmpdir ocx-pg)
    port=$(free_port)
    init_cluster "$bin" "$dir/data" "$dir/initdb.log"
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
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
