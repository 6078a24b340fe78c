# Shell functions the PostgreSQL scripts share (sourced by pg-cluster.sh and pg-failover.sh):
# where the machine's PostgreSQL programs are (installing them from Debian's packages if
# missing), running a program as the cluster's owner, and a free loopback port.

pg_bin() {
    local initdb
    initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)
    if [[ -z "$initdb" ]]; then
        echo "installing PostgreSQL from the machine's packages" >&2
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
