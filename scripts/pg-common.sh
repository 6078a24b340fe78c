# Shell functions the PostgreSQL scripts share (sourced by pg-cluster.sh and pg-failover.sh):
# where the machine's PostgreSQL programs are (installing them from Debian's packages if
# missing), running a program as the cluster's owner, a free loopback port, a directory the
# owner may write in, and initdb.

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

# A new temporary directory /tmp/PREFIX.XXXXXX that the cluster's owner may write in.
owned_tmpdir() {
    local dir
    dir=$(mktemp -d "/tmp/$1.XXXXXX")
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$dir"
    fi
    echo "$dir"
}

# initdb of a throwaway cluster in DATADIR (superuser ocx, trust auth, no syncing while it is
# made), its output in LOG, shown only if it fails:  init_cluster BIN DATADIR LOG
init_cluster() {
    as_owner "$1/initdb" -D "$2" -A trust -U ocx --no-sync >"$3" 2>&1 || { cat "$3" >&2; exit 1; }
}
