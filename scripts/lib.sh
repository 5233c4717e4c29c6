# shellcheck shell=bash
# scripts/lib.sh: the parts scripts/demo and scripts/test share.  Source it, do not run it.
#
# One way to do each thing:
#   fincore_ensure_deps    install the Debian packages that are missing (apt-get, sudo when not root)
#   fincore_build_install  make; make install (sudo when not root)
#   fincore_in_cluster     run the calling script again inside a throwaway pg_virtualenv cluster
#   fincore_create_db      create a database with fincore (and any other extensions) in it
#
# Sourcing it also sets strict mode, makes the run non-interactive and cds to the project root,
# so the scripts work from any directory.

set -euo pipefail
shopt -s inherit_errexit

FINCORE_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
# The script that sourced this file, as an absolute path (it re-runs itself inside the cluster).
FINCORE_SELF=$(cd -- "$(dirname -- "${BASH_SOURCE[1]}")" && pwd -P)/$(basename -- "${BASH_SOURCE[1]}")

FINCORE_PG_VERSION=15
FINCORE_PG_CONFIG=/usr/lib/postgresql/$FINCORE_PG_VERSION/bin/pg_config

# Everything the demo and the tests need on Debian 12.  pg_prove is not in pgtap itself but in
# libtap-parser-sourcehandler-pgtap-perl (a dependency of pgtap); it is listed so the check is explicit.
FINCORE_PACKAGES=(
    "postgresql-$FINCORE_PG_VERSION"
    "postgresql-server-dev-$FINCORE_PG_VERSION"
    postgresql-contrib
    "postgresql-$FINCORE_PG_VERSION-cron"
    "postgresql-$FINCORE_PG_VERSION-pgtap"
    pgtap
    libtap-parser-sourcehandler-pgtap-perl
    build-essential
    libasan8
    libubsan1
    postgresql-common
    python3
    python3-pytest
    python3-hypothesis
    python3-psycopg
    pgbouncer
    "postgresql-$FINCORE_PG_VERSION-pgq3"
    # Citus is not packaged in Debian 12: ./scripts/test --citus builds it from source, with these.
    autoconf flex bison libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libssl-dev
    libselinux1-dev libxslt1-dev libpam0g-dev libreadline-dev zlib1g-dev xz-utils
    # pg_auto_failover, for ./scripts/test --failover.
    "postgresql-$FINCORE_PG_VERSION-auto-failover"
    pg-auto-failover-cli
    # The Node.js example worker (examples/node); npm is checked apart (fincore_ensure_npm).
    nodejs
)

export DEBIAN_FRONTEND=noninteractive
# One locale everywhere (clients, and the cluster through initdb below), whatever the caller's is:
# server messages, sorting and encoding are then the same on every machine.
export LC_ALL=C.UTF-8
exec </dev/null
cd -- "$FINCORE_ROOT"

fincore_say() { printf '\n==> %s\n' "$*"; }
fincore_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly when we are root, through sudo otherwise.
fincore_as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -- "$@"
    else
        fincore_die "not root and sudo is not installed; cannot run: $*"
    fi
}

# Print the packages of FINCORE_PACKAGES that are not installed, one a line.
fincore_missing_packages() {
    local pkg
    for pkg in "${FINCORE_PACKAGES[@]}"; do
        if [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true) != ii* ]]; then
            printf '%s\n' "$pkg"
        fi
    done
}

# Install what is missing; a machine that has everything does no apt work at all.
fincore_ensure_deps() {
    command -v dpkg-query >/dev/null 2>&1 || fincore_die "dpkg-query not found: this script needs Debian 12"
    local missing
    missing=$(fincore_missing_packages)
    if [[ -z $missing ]]; then
        fincore_say "All ${#FINCORE_PACKAGES[@]} required Debian packages are installed"
        return 0
    fi
    local -a pkgs
    mapfile -t pkgs <<<"$missing"
    fincore_say "Installing missing Debian packages: ${pkgs[*]}"
    # sudo resets the environment, so pass DEBIAN_FRONTEND explicitly.
    fincore_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    fincore_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${pkgs[@]}"
    missing=$(fincore_missing_packages)
    [[ -z $missing ]] || fincore_die "still not installed after apt-get: ${missing//$'\n'/ }"
}

# npm, for the Node example worker's one dependency (pg).  Debian's nodejs leaves it to the npm
# package; a nodejs package that bundles npm (NodeSource's) conflicts with that one, so the
# package is installed only when no npm command is there.
fincore_ensure_npm() {
    command -v npm >/dev/null 2>&1 && return 0
    fincore_say "Installing npm (Debian package)"
    fincore_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    fincore_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends npm
}

# Build fincore as the caller, install it as root.
fincore_build_install() {
    fincore_say "Building fincore (make)"
    make -s -j"$(nproc)" PG_CONFIG="$FINCORE_PG_CONFIG"
    fincore_say "Installing fincore into PostgreSQL $FINCORE_PG_VERSION (make install)"
    fincore_as_root make -s install PG_CONFIG="$FINCORE_PG_CONFIG"
}

# Run the calling script again inside a throwaway cluster; return its exit status.
#
# pg_virtualenv creates the cluster (as root: cluster 15/regress in the standard locations, run by the
# postgres user; otherwise in a temporary directory as the caller), exports PGHOST/PGPORT/PGUSER/
# PGPASSWORD/PGDATABASE, runs the command and drops the cluster on exit.  Its own messages ("Dropping
# cluster ...", the server log it dumps when the command fails) go to a log file, so that what the
# caller sees ends with the command's own last line; the command gets the caller's stdout and stderr
# on fds 3 and 4 and takes them back in fincore_enter_cluster.  The log is shown only if the cluster
# could not be set up.  (The server inherits fds 3 and 4 as it would inherit stdout anyway; they
# close when pg_virtualenv stops it, before this function returns.)
# Arguments are passed to the inside copy; FINCORE_SERVER_OPTS (an array of name=value) adds
# server settings.
FINCORE_SERVER_OPTS=()
fincore_in_cluster() {
    local run_dir rc=0 opt
    # pg_cron runs its jobs in background workers: pg_virtualenv gives postgres a password pg_cron would not know.
    local -a server_opts=(-o shared_preload_libraries=pg_cron,fincore -o cron.database_name=postgres -o cron.use_background_workers=on)
    for opt in "${FINCORE_SERVER_OPTS[@]}"; do
        server_opts+=(-o "$opt")
    done
    run_dir=$(mktemp -d -t fincore-run.XXXXXX)
    FINCORE_IN_CLUSTER=1 FINCORE_RUN_DIR=$run_dir \
        pg_virtualenv -v "$FINCORE_PG_VERSION" -i '--encoding=UTF8 --locale=C.UTF-8' \
            "${server_opts[@]}" \
            bash "$FINCORE_SELF" "$@" \
        3>&1 4>&2 >"$run_dir/pg_virtualenv.log" 2>&1 || rc=$?
    if [[ ! -e $run_dir/started ]]; then
        printf 'error: pg_virtualenv could not set up the throwaway cluster (exit %s); its output:\n' "$rc" >&2
        cat -- "$run_dir/pg_virtualenv.log" >&2
        [[ $rc -ne 0 ]] || rc=1
    fi
    rm -rf -- "$run_dir"
    return "$rc"
}

# True when this script is the copy that fincore_in_cluster runs inside the cluster.
fincore_inside_cluster() { [[ ${FINCORE_IN_CLUSTER:-} == 1 ]]; }

# First thing the inside copy does: take back the caller's stdout/stderr, say we started.
fincore_enter_cluster() {
    exec 1>&3 2>&4 3>&- 4>&-
    : >"$FINCORE_RUN_DIR/started"
    unset FINCORE_IN_CLUSTER FINCORE_RUN_DIR
}

# psql as the scripts use it: no psqlrc, stop at the first error, quiet, no pager.
fincore_psql() { psql -X -q -v ON_ERROR_STOP=1 -P pager=off "$@"; }

# fincore_create_db NAME [EXTENSION...]: a new database with the given extensions, then fincore.
fincore_create_db() {
    local db=$1 ext sql="SET client_min_messages = warning; "
    shift
    for ext in "$@" fincore; do
        sql+="CREATE EXTENSION $ext CASCADE; "
    done
    fincore_psql -d postgres -c "CREATE DATABASE $db" &&
        fincore_psql -d "$db" -c "$sql"
}

# fincore_create_db_nonsuperuser_owner NAME OWNER [EXTENSION...]: like fincore_create_db, but fincore
# (and the database) belong to OWNER, a role that is not a superuser: the way managed PostgreSQL
# installs extensions, and what a demoted owner looks like.  OWNER is created a superuser, installs
# fincore, and is then demoted (docs/security.md, "A non-superuser owner").
fincore_create_db_nonsuperuser_owner() {
    local db=$1 owner=$2 ext sql="SET client_min_messages = warning; "
    shift 2
    for ext in "$@"; do
        sql+="CREATE EXTENSION $ext CASCADE; "
    done
    sql+="SET ROLE $owner; CREATE EXTENSION fincore CASCADE; RESET ROLE; ALTER ROLE $owner NOSUPERUSER;"
    fincore_psql -d postgres -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$owner') THEN CREATE ROLE $owner NOLOGIN; END IF; END \$\$" \
        -c "ALTER ROLE $owner SUPERUSER" -c "CREATE DATABASE $db OWNER $owner" &&
        fincore_psql -d "$db" -c "$sql"
}

# fincore_copy_pg_tree TREE: a private copy of the PostgreSQL tree (binaries, share, headers, and
# the extensions installed there), whose pg_config points into the copy: builds installed with it
# never touch the system's PostgreSQL.
fincore_copy_pg_tree() {
    local tree=$1
    mkdir -p "$tree/usr/lib/postgresql" "$tree/usr/share/postgresql" "$tree/usr/include"
    cp -a "/usr/lib/postgresql/$FINCORE_PG_VERSION" "$tree/usr/lib/postgresql/"
    cp -a "/usr/share/postgresql/$FINCORE_PG_VERSION" "$tree/usr/share/postgresql/"
    cp -a /usr/include/postgresql "$tree/usr/include/"
    [[ $("$tree/usr/lib/postgresql/$FINCORE_PG_VERSION/bin/pg_config" --pkglibdir) == "$tree"/* ]] ||
        fincore_die "the copied pg_config does not point into its own tree"
}

# fincore_private_server_start PGBIN DIR: initdb and start a server of PGBIN's tree in DIR (data,
# server.log, socket), as postgres when we are root, with pg_cron and fincore preloaded; exports
# PGHOST, PGPORT, PGUSER, PGDATABASE for it and sets FINCORE_PRIVATE_PG_CTL (the command that
# controls it: append start, stop, restart and their options).
fincore_private_server_start() {
    local pgbin=$1 dir=$2 data=$2/data log=$2/server.log sock=$2/socket
    local -a as_pg=()
    mkdir -p "$data" "$sock"
    : >"$log"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres "$data" "$sock" "$log"
        as_pg=(runuser -u postgres --)
    fi
    "${as_pg[@]}" "$pgbin/initdb" -D "$data" --encoding=UTF8 --locale=C.UTF-8 -A trust -U postgres >/dev/null || return 1
    FINCORE_PRIVATE_PG_CTL=("${as_pg[@]}" "$pgbin/pg_ctl" -D "$data" -l "$log" -w -t 120
        -o "-p 5432 -k $sock -c listen_addresses='' -c shared_preload_libraries=pg_cron,fincore -c cron.database_name=postgres -c cron.use_background_workers=on")
    "${FINCORE_PRIVATE_PG_CTL[@]}" start >/dev/null || { cat "$log"; return 1; }
    export PGHOST=$sock PGPORT=5432 PGUSER=postgres PGDATABASE=postgres
}

# --- the sanitizer build (./scripts/test --sanitize) ---------------------------------------------
#
# fincore is built with AddressSanitizer and UndefinedBehaviorSanitizer and installed into a private
# copy of the PostgreSQL tree (PostgreSQL finds its share and lib directories relative to its own
# binaries, so a copied tree runs as it is), never over the system one.  test/sanitize/options.c is
# linked in: backends cannot read ASAN_OPTIONS, and it says why asan-stack is off.
FINCORE_SANITIZE_FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer --param asan-stack=0 -g -O1"
FINCORE_SANITIZER_REPORT='runtime error:|ERROR: AddressSanitizer|terminated by signal'

# fincore_sanitized_cluster_run COMMAND [ARG...]: build the sanitized fincore and the canary into a
# private tree, start a cluster of that tree, prove the check live, run COMMAND against the cluster
# (PGHOST, PGPORT, PGUSER, FINCORE_PG_CONFIG, FINCORE_SERVER_LOG_FILE are set), then fail if the
# server log has any sanitizer report.  Returns COMMAND's status, or 1.
fincore_sanitized_cluster_run() {
    local run_dir tree pgbin pgc build log rc=0 mark
    run_dir=$(mktemp -d -t fincore-sanitize.XXXXXX)
    chmod 755 "$run_dir"
    tree=$run_dir/tree
    fincore_say "Copying the PostgreSQL $FINCORE_PG_VERSION tree to $tree (the sanitized build goes there)"
    fincore_copy_pg_tree "$tree"
    pgbin=$tree/usr/lib/postgresql/$FINCORE_PG_VERSION/bin
    pgc=$pgbin/pg_config

    fincore_say "Building fincore with $FINCORE_SANITIZE_FLAGS"
    build=$run_dir/build
    mkdir -p "$build"
    cp -a Makefile fincore.control src sql test "$build/"
    (cd "$build" && make -s clean PG_CONFIG="$pgc" with_llvm=no &&
        make -s -j"$(nproc)" PG_CONFIG="$pgc" with_llvm=no SANITIZE_OBJS=test/sanitize/options.o \
            PG_CFLAGS="$FINCORE_SANITIZE_FLAGS" SHLIB_LINK="-fsanitize=address,undefined" &&
        make -s install PG_CONFIG="$pgc" with_llvm=no) || return 1
    # shellcheck disable=SC2086 # the flags are words
    gcc -fPIC -shared $FINCORE_SANITIZE_FLAGS -I"$("$pgc" --includedir-server)" \
        test/sanitize/canary.c test/sanitize/options.c -o "$("$pgc" --pkglibdir)/fincore_canary.so" || return 1

    # The server never runs as root: as root, it runs as the postgres user.
    log=$run_dir/server.log
    fincore_private_server_start "$pgbin" "$run_dir" || return 1
    export FINCORE_PG_CONFIG=$pgc FINCORE_SERVER_LOG_FILE=$log

    if fincore_sanitizer_canary "$log"; then
        mark=$(wc -c <"$log")
        "$@" || rc=$?
        if fincore_log_has "$log" "$mark" -E "$FINCORE_SANITIZER_REPORT"; then
            printf '\nFAIL: the sanitizers reported (server log %s):\n' "$log"
            tail -c +"$((mark + 1))" -- "$log" | grep -E -A40 "$FINCORE_SANITIZER_REPORT" | head -200 || true
            rc=1
        fi
    else
        rc=1
    fi
    "${FINCORE_PRIVATE_PG_CTL[@]}" -m immediate stop >/dev/null 2>&1 || true
    [[ $rc -ne 0 ]] || rm -rf -- "$run_dir"
    return "$rc"
}

# fincore_log_has LOG MARK GREP-OPTION PATTERN: whether LOG, from byte MARK on, has a matching line.
# Never `tail | grep -q`: under pipefail, grep -q quits at its first match, tail can then die of
# SIGPIPE and fail the pipeline, and a match reads as none (that made the canary check flaky, and
# could have hidden a sanitizer report).  Plain grep reads its input to the end.
fincore_log_has() {
    local log=$1 mark=$2
    shift 2
    tail -c +"$((mark + 1))" -- "$log" | grep "$@" >/dev/null
}

# fincore_sanitizer_canary LOG: the canary module commits an ASan and a UBSan error; both reports
# must reach LOG, else the sanitizer check is not live and the run fails (printing what LOG says).
# Each error crashes its backend, and the postmaster restarts every backend after it: psql returns
# as soon as its backend dies, before the postmaster has even noticed, so a connection made then can
# be refused ("the database system is in recovery mode") or killed.  Hence the wait on the log, and
# a canary whose call never reached a backend (no crash at all) is tried again, at most 3 times.
fincore_sanitizer_canary() {
    local log=$1 kind expect mark attempt
    fincore_psql -d postgres -c "CREATE DATABASE fincore_canary" || return 1
    fincore_psql -d fincore_canary -c "CREATE FUNCTION canary(text) RETURNS integer LANGUAGE c STRICT
        AS 'fincore_canary', 'fincore_sanitizer_canary'" || return 1
    for kind in global-buffer-overflow signed-integer-overflow; do
        case $kind in
            global-buffer-overflow) expect='ERROR: AddressSanitizer: global-buffer-overflow' ;;
            signed-integer-overflow) expect='runtime error: signed integer overflow' ;;
        esac
        for attempt in 1 2 3; do
            mark=$(wc -c <"$log")
            if fincore_psql -d fincore_canary -c "SELECT canary('$kind')" >/dev/null 2>&1; then
                printf 'FAIL: the canary %s ran to its end: the sanitizers are not live\n' "$kind"
                return 1
            fi
            fincore_wait_crash_restart "$log" "$mark"
            if fincore_log_has "$log" "$mark" -F "$expect"; then
                break
            fi
            if [[ $attempt -eq 3 ]] || fincore_log_has "$log" "$mark" -F 'terminated by signal'; then
                printf 'FAIL: the canary %s left no "%s" in the server log: the check is not live\n' "$kind" "$expect"
                printf 'The server log since the call (%s):\n' "$log"
                tail -c +"$((mark + 1))" -- "$log" | head -60 || true
                return 1
            fi
        done
        fincore_say "Sanitizer check is live: the canary's $kind was reported"
    done
    fincore_psql -d postgres -c "DROP DATABASE fincore_canary"
}

# fincore_wait_crash_restart LOG MARK: if a backend crashed after byte MARK of LOG, wait (60 s at
# most) until the postmaster has restarted and accepts connections again.  Without a crash, it
# waits a moment for the postmaster to log one, then returns.
fincore_wait_crash_restart() {
    local log=$1 mark=$2 i
    for i in $(seq 1 120); do
        if fincore_log_has "$log" "$mark" -F 'terminated by signal'; then
            if fincore_log_has "$log" "$mark" -F 'database system is ready to accept connections'; then
                pg_isready -q && return 0
            fi
        elif [[ $i -ge 4 ]]; then
            return 0
        fi
        sleep 0.5
    done
}

# The server log of the throwaway cluster (valid inside it).
fincore_server_log() {
    pg_lsclusters -h | awk -v v="$FINCORE_PG_VERSION" '$1 == v && $2 == "regress" { print $7 }'
}

# --- the upgrade from the released version (./scripts/test --upgrade) ----------------------------

# fincore_release_commit VERSION: the commit that released VERSION, the last one whose
# fincore.control has default_version = 'VERSION' (the parent of the first commit after it that
# changed the version).  Fails without the history (no .git, or a shallow clone that cannot be
# deepened).
fincore_release_commit() {
    local version=$1 c had=0 has
    git -C "$FINCORE_ROOT" rev-parse --git-dir >/dev/null 2>&1 || return 1
    if [[ $(git -C "$FINCORE_ROOT" rev-parse --is-shallow-repository) == true ]]; then
        git -C "$FINCORE_ROOT" fetch -q --unshallow >/dev/null 2>&1 || return 1
    fi
    for c in $(git -C "$FINCORE_ROOT" rev-list --reverse HEAD -- fincore.control); do
        has=0
        grep -q "^default_version = '$version'$" <<<"$(git -C "$FINCORE_ROOT" show "$c:fincore.control")" && has=1
        if [[ $had -eq 1 && $has -eq 0 ]]; then
            git -C "$FINCORE_ROOT" rev-parse "$c^"
            return 0
        fi
        had=$has
    done
    return 1
}

# fincore_upgrade_run: fincore 0.1.0 built from the commit that released it and installed into a
# private copy of the PostgreSQL tree; a server of that tree; a database filled through 0.1.0's
# API (test/upgrade/fill-0.1.0.sql); this build installed over 0.1.0's (as a package upgrade
# would) and the server restarted; ALTER EXTENSION fincore UPDATE; then the pgTAP suite in the
# upgraded database and pytest test/upgrade (its catalogue equals a new install's, its data
# works).  Returns non-zero if anything failed.
fincore_upgrade_run() {
    local release run_dir tree pgbin pgc rc=0
    local -a tap_files=()
    release=$(fincore_release_commit 0.1.0) || {
        fincore_say "FAIL: the commit that released 0.1.0 is not in this checkout's history (a git clone with history is needed)"
        return 1
    }
    run_dir=$(mktemp -d -t fincore-upgrade.XXXXXX)
    chmod 755 "$run_dir"
    tree=$run_dir/tree
    fincore_say "Copying the PostgreSQL $FINCORE_PG_VERSION tree to $tree (0.1.0, then this build, go there)"
    fincore_copy_pg_tree "$tree"
    pgbin=$tree/usr/lib/postgresql/$FINCORE_PG_VERSION/bin
    pgc=$pgbin/pg_config

    fincore_say "Building and installing fincore 0.1.0 from commit ${release:0:12} (the last with default_version = '0.1.0')"
    mkdir -p "$run_dir/old" "$run_dir/new"
    git -C "$FINCORE_ROOT" archive "$release" | tar -x -C "$run_dir/old" || return 1
    (cd "$run_dir/old" && make -s -j"$(nproc)" PG_CONFIG="$pgc" with_llvm=no >/dev/null &&
        make -s install PG_CONFIG="$pgc" with_llvm=no) || return 1
    fincore_private_server_start "$pgbin" "$run_dir" || return 1
    fincore_say "A database at 0.1.0, filled through 0.1.0's API"
    if fincore_psql -d postgres -c "CREATE DATABASE fincore_upgraded" &&
        fincore_psql -d fincore_upgraded -c "SET client_min_messages = warning; CREATE EXTENSION pgtap;
            CREATE EXTENSION fincore VERSION '0.1.0' CASCADE" &&
        fincore_psql -d fincore_upgraded -f test/upgrade/fill-0.1.0.sql >/dev/null; then
        fincore_say "Installing this build over 0.1.0 (make install, as a package upgrade would), restarting the server"
        cp -a Makefile fincore.control src sql test "$run_dir/new/"
        if (cd "$run_dir/new" && make -s clean PG_CONFIG="$pgc" with_llvm=no &&
            make -s -j"$(nproc)" PG_CONFIG="$pgc" with_llvm=no >/dev/null &&
            make -s install PG_CONFIG="$pgc" with_llvm=no) &&
            "${FINCORE_PRIVATE_PG_CTL[@]}" restart >/dev/null &&
            fincore_psql -d fincore_upgraded -c "CREATE EXTENSION IF NOT EXISTS btree_gist" \
                -c "ALTER EXTENSION fincore UPDATE"; then
            shopt -s nullglob
            tap_files=(test/pgtap/*.sql)
            shopt -u nullglob
            fincore_say "pgTAP (pg_prove test/pgtap/*.sql) in the upgraded database"
            pg_prove -d fincore_upgraded "${tap_files[@]}" || rc=1
            fincore_say "pytest test/upgrade: the upgraded catalogue equals a new install's; 0.1.0's data works"
            FINCORE_UPGRADED_DB=fincore_upgraded FINCORE_PG_CONFIG=$pgc \
                /usr/bin/python3 -m pytest -c test/pytest.ini test/upgrade || rc=1
        else
            rc=1
        fi
    else
        rc=1
    fi
    "${FINCORE_PRIVATE_PG_CTL[@]}" -m immediate stop >/dev/null 2>&1 || true
    [[ $rc -ne 0 ]] || rm -rf -- "$run_dir"
    return "$rc"
}
