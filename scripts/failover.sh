# shellcheck shell=bash
# scripts/failover.sh: pg_auto_failover for ./scripts/test --failover (source it after scripts/lib.sh).
#
#   fincore_failover_start DIR   a monitor and two nodes (a primary and its synchronous standby) on
#                                127.0.0.1, each kept by its own `pg_autoctl run`, fincore installed
#   fincore_failover_stop DIR    stop them all
#
# The servers and their keepers never run as root: under root they run as postgres.  The monitor
# checks the nodes every second and calls a node unhealthy after 3 s; it waits
# FINCORE_FAILOVER_DEMOTE_TIMEOUT_MS (default 10 s) for a lost primary to demote itself before
# the standby takes writes (docs/scale-out.md, "Failover").

FINCORE_FAILOVER_PORT=${FINCORE_FAILOVER_PORT:-57400}   # the monitor's; the nodes take the next two
FINCORE_FAILOVER_DEMOTE_TIMEOUT_MS=${FINCORE_FAILOVER_DEMOTE_TIMEOUT_MS:-10000}

fincore_failover_as_server() {
    local dir=$1
    shift
    local -a env=(env "XDG_CONFIG_HOME=$dir/xdg/config" "XDG_DATA_HOME=$dir/xdg/data"
                  "XDG_RUNTIME_DIR=$dir/xdg/run" "PATH=$("$FINCORE_PG_CONFIG" --bindir):$PATH")
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "${env[@]}" "$@"
    else
        "${env[@]}" "$@"
    fi
}

# Start `pg_autoctl run` for a node in the background; its pid in DIR/NODE.keeper.pid.
fincore_failover_keep() {
    local dir=$1 node=$2
    fincore_failover_as_server "$dir" bash -c \
        "nohup pg_autoctl run --pgdata '$dir/$node' >'$dir/$node.log' 2>&1 & echo \$! >'$dir/$node.keeper.pid'"
}

# Wait (up to three minutes: a secondary's base backup on a busy 2-CPU machine took over one) until
# the monitor reports NODE in STATE, assigned and reached.
fincore_failover_wait() {
    local dir=$1 node=$2 state=$3 wait=0
    until fincore_failover_as_server "$dir" pg_autoctl show state --pgdata "$dir/monitor" 2>/dev/null |
        grep -Eq "^ *$node .*\| *$state *\| *$state *\$"; do
        wait=$((wait + 1))
        [[ $wait -lt 360 ]] || { tail -20 "$dir/${node/_/}.log"; fincore_die "$node did not reach $state"; }
        sleep 0.5
    done
}

fincore_failover_start() {
    local dir=$1 n port monitor
    for n in 0 1 2; do
        port=$((FINCORE_FAILOVER_PORT + n))
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            fincore_die "port $port on 127.0.0.1 is taken (set FINCORE_FAILOVER_PORT)"
        fi
    done
    [[ $(id -u) -ne 0 ]] || chown postgres "$dir"
    fincore_failover_as_server "$dir" mkdir -p "$dir/xdg/config" "$dir/xdg/data" "$dir/xdg/run"
    # Always on the loopback address: pg_autoctl listens on every address unless told.
    fincore_failover_as_server "$dir" pg_autoctl create monitor --pgdata "$dir/monitor" \
        --pgport "$FINCORE_FAILOVER_PORT" --hostname 127.0.0.1 --listen 127.0.0.1 --auth trust --no-ssl \
        >"$dir/monitor.create.log" 2>&1 || { cat "$dir/monitor.create.log"; fincore_die "creating the monitor failed"; }
    fincore_failover_as_server "$dir" bash -c "cat >>'$dir/monitor/postgresql.conf'" <<CONF
pgautofailover.health_check_period = 1000
pgautofailover.health_check_timeout = 1000
pgautofailover.health_check_max_retries = 1
pgautofailover.health_check_retry_delay = 500
pgautofailover.node_considered_unhealthy_timeout = 3000
pgautofailover.primary_demote_timeout = $FINCORE_FAILOVER_DEMOTE_TIMEOUT_MS
CONF
    fincore_failover_keep "$dir" monitor
    monitor="postgres://autoctl_node@127.0.0.1:$FINCORE_FAILOVER_PORT/pg_auto_failover?sslmode=disable"
    for n in 1 2; do
        local tries=0
        until fincore_failover_as_server "$dir" pg_autoctl create postgres --pgdata "$dir/node$n" \
            --pgport $((FINCORE_FAILOVER_PORT + n)) --hostname 127.0.0.1 --listen 127.0.0.1 --auth trust --no-ssl \
            --pgctl "$("$FINCORE_PG_CONFIG" --bindir)/pg_ctl" --monitor "$monitor" >"$dir/node$n.create.log" 2>&1; do
            # The monitor may still be starting.
            tries=$((tries + 1))
            [[ $tries -lt 10 ]] || { cat "$dir/node$n.create.log"; fincore_die "creating node$n failed"; }
            sleep 1
        done
        fincore_failover_keep "$dir" "node$n"
        # The first node runs alone ("single") before the second joins as its standby.
        fincore_failover_wait "$dir" "node_$n" "$([[ $n -eq 1 ]] && echo single || echo secondary)"
    done
    fincore_failover_wait "$dir" node_1 primary
    fincore_psql "host=127.0.0.1 port=$((FINCORE_FAILOVER_PORT + 1)) user=postgres dbname=postgres" \
        -c "SET client_min_messages = warning; CREATE EXTENSION fincore CASCADE" >/dev/null
}

fincore_failover_stop() {
    local dir=$1 node pid
    for node in node1 node2 monitor; do
        [[ -d $dir/$node ]] || continue
        fincore_failover_as_server "$dir" pg_autoctl stop --pgdata "$dir/$node" >/dev/null 2>&1 || true
    done
    sleep 1
    for node in node1 node2 monitor; do
        [[ -r $dir/$node.keeper.pid ]] || continue
        pid=$(cat "$dir/$node.keeper.pid")
        pkill -9 -P "$pid" 2>/dev/null || true
        kill -9 "$pid" 2>/dev/null || true
        fincore_failover_as_server "$dir" "$("$FINCORE_PG_CONFIG" --bindir)/pg_ctl" -D "$dir/$node" -m immediate \
            stop >/dev/null 2>&1 || true
    done
}
