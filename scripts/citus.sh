# shellcheck shell=bash
# scripts/citus.sh: Citus for ./scripts/test --citus (source it after scripts/lib.sh).
#
#   fincore_citus_ensure        Citus installed into PostgreSQL 15: as it is, or built from $CITUS_SRC
#                               (a source tree or a .tar.xz) or ../shared/vendor/citus-*.tar.xz (its
#                               .sha256 checked, its .patch files applied); status 1 if there is none
#   fincore_citus_start DIR     a coordinator and two workers on 127.0.0.1 in DIR, fincore installed
#                               and distributed (fincore.distribute()) in the database fincore
#   fincore_citus_stop DIR      stop them
#
# Citus is not packaged in Debian 12, and 13.2 is the last line that supports PostgreSQL 15
# (docs/scale-out.md).  The servers never run as root: under root they run as postgres.

FINCORE_CITUS_DB=fincore
# The coordinator's port; the workers take the next two.
FINCORE_CITUS_PORT=${FINCORE_CITUS_PORT:-55432}

fincore_citus_installed() {
    [[ -r $("$FINCORE_PG_CONFIG" --pkglibdir)/citus.so &&
        -r $("$FINCORE_PG_CONFIG" --sharedir)/extension/citus.control ]]
}

# The source to build Citus from, or nothing.
fincore_citus_source() {
    if [[ -n ${CITUS_SRC:-} ]]; then
        [[ -e $CITUS_SRC ]] || fincore_die "CITUS_SRC=$CITUS_SRC does not exist"
        printf '%s\n' "$CITUS_SRC"
        return 0
    fi
    local f
    for f in "$FINCORE_ROOT"/../shared/vendor/citus-*.tar.xz; do
        [[ -r $f ]] && { printf '%s\n' "$f"; return 0; }
    done
    return 0
}

fincore_citus_ensure() {
    if fincore_citus_installed; then
        fincore_say "Citus is installed ($("$FINCORE_PG_CONFIG" --pkglibdir)/citus.so)"
        return 0
    fi
    local src tree build
    src=$(fincore_citus_source)
    [[ -n $src ]] || return 1
    build=$(mktemp -d -t fincore-citus.XXXXXX)
    if [[ -d $src ]]; then
        tree=$src
    else
        if [[ -r $src.sha256 ]]; then
            (cd "$(dirname -- "$src")" && sha256sum --quiet -c "$(basename -- "$src").sha256") ||
                fincore_die "$src does not match $src.sha256"
        fi
        fincore_say "Building Citus from $src (about a minute)"
        tar -xf "$src" -C "$build"
        tree=$(find "$build" -mindepth 1 -maxdepth 1 -type d -name 'citus-*' | head -1)
        local patch version
        version=$(basename -- "$src" .tar.xz)
        for patch in "$(dirname -- "$src")/$version"-*.patch; do
            [[ -r $patch ]] || continue
            fincore_say "Applying $(basename -- "$patch")"
            patch -d "$tree" -p1 -s <"$patch"
        done
    fi
    # with_llvm=no for both: otherwise install compiles the LLVM bitcode itself.
    (cd "$tree" && ./configure -q PG_CONFIG="$FINCORE_PG_CONFIG" >/dev/null &&
        make -s -j"$(nproc)" with_llvm=no >/dev/null) || fincore_die "building Citus failed"
    (cd "$tree" && fincore_as_root make -s install with_llvm=no >/dev/null) || fincore_die "installing Citus failed"
    rm -rf -- "$build"
    fincore_citus_installed || fincore_die "Citus was built but is not installed"
}

# Run a command as the servers' user: postgres under root, else ourselves.
fincore_citus_as_server() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

fincore_citus_psql() {
    local port=$1
    shift
    fincore_psql -h 127.0.0.1 -p "$port" -U postgres "$@"
}

fincore_citus_start() {
    local dir=$1 bin n port
    bin=$("$FINCORE_PG_CONFIG" --bindir)
    for n in 0 1 2; do
        port=$((FINCORE_CITUS_PORT + n))
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            fincore_die "port $port on 127.0.0.1 is taken (set FINCORE_CITUS_PORT)"
        fi
    done
    [[ $(id -u) -ne 0 ]] || chown postgres "$dir"
    for n in 0 1 2; do
        port=$((FINCORE_CITUS_PORT + n))
        fincore_citus_as_server "$bin/initdb" -D "$dir/node$n" -A trust -U postgres >/dev/null
        # citus first in shared_preload_libraries, as Citus requires; prepared transactions for its
        # two-phase commits; the servers listen on the loopback address only.
        cat >>"$dir/node$n/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
shared_preload_libraries = 'citus,pg_cron,fincore'
cron.database_name = '$FINCORE_CITUS_DB'
max_prepared_transactions = 100
max_connections = 200
CONF
        fincore_citus_as_server "$bin/pg_ctl" -D "$dir/node$n" -l "$dir/node$n.log" -w start >/dev/null
    done
    for n in 0 1 2; do
        port=$((FINCORE_CITUS_PORT + n))
        fincore_citus_psql "$port" -d postgres -c "CREATE DATABASE $FINCORE_CITUS_DB"
        fincore_citus_psql "$port" -d "$FINCORE_CITUS_DB" -c "SET client_min_messages = warning; CREATE EXTENSION citus"
    done
    # The coordinator names itself and its workers; fincore, created on the coordinator, reaches
    # the workers with the extension (pg_cron stays on the coordinator).
    fincore_citus_psql "$FINCORE_CITUS_PORT" -d "$FINCORE_CITUS_DB" \
        -c "SELECT citus_set_coordinator_host('127.0.0.1', $FINCORE_CITUS_PORT)" \
        -c "SELECT citus_add_node('127.0.0.1', $((FINCORE_CITUS_PORT + 1)))" \
        -c "SELECT citus_add_node('127.0.0.1', $((FINCORE_CITUS_PORT + 2)))" >/dev/null
    fincore_citus_psql "$FINCORE_CITUS_PORT" -d "$FINCORE_CITUS_DB" \
        -c "SET client_min_messages = warning; SET citus.enable_ddl_propagation = off; CREATE EXTENSION pg_cron" >/dev/null
    fincore_citus_psql "$FINCORE_CITUS_PORT" -d "$FINCORE_CITUS_DB" \
        -c "SET client_min_messages = warning; CREATE EXTENSION fincore CASCADE" >/dev/null
}

fincore_citus_stop() {
    local dir=$1 bin n
    bin=$("$FINCORE_PG_CONFIG" --bindir)
    for n in 0 1 2; do
        [[ -d $dir/node$n ]] || continue
        fincore_citus_as_server "$bin/pg_ctl" -D "$dir/node$n" -m fast -w stop >/dev/null 2>&1 || true
    done
}
