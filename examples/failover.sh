#!/bin/sh
# pgrelay sample failover_command (pgpool-II compatible) for a LOCAL cluster:
# every PostgreSQL server runs on this machine, so the new primary is promoted
# with `pg_ctl promote -D <its data directory>` (a remote setup would ssh).
#
#   failover_command = '/path/to/examples/failover.sh %d %h %p %D %m %H %M %P %r %R %N %S'
#
# Placeholders (pgrelay expands them like pgpool-II, without pgpool's leading
# space before %d %p %m; an empty value is passed as "" so positions never shift):
#   %d failed node id          %h failed node host      %p failed node port
#   %D failed node data dir    %m new main node id      %H new main host
#   %M old main node id        %P old primary node id   %r new main port
#   %R new main data dir       %N old primary host      %S old primary port
#   %% a literal %
# The "new main node" is the lowest-id node still up; pgrelay runs
# failover_command for EVERY failed node (standbys too, as pgpool does), so
# this script does nothing unless the failed node was the primary.
# pgrelay kills the command after 60 s.
#
# Environment:
#   PG_BIN                    directory of pg_ctl (default: from PATH, else /usr/lib/postgresql/*/bin)
#   PGRELAY_FAILOVER_RECORD   if set, append the arguments received (one line per call) to this file
#   PGRELAY_PG_USER           OS user owning the data directories when run as root (default postgres)

FAILED_NODE_ID="$1"
FAILED_HOST="$2"
FAILED_PORT="$3"
FAILED_DATA_DIR="$4"
NEW_MAIN_ID="$5"
NEW_MAIN_HOST="$6"
OLD_MAIN_ID="$7"
OLD_PRIMARY_ID="$8"
NEW_MAIN_PORT="$9"
NEW_MAIN_DATA_DIR="${10}"
OLD_PRIMARY_HOST="${11}"
OLD_PRIMARY_PORT="${12}"

log() { echo "failover.sh: $*"; }

if [ -n "$PGRELAY_FAILOVER_RECORD" ]; then
    echo "$FAILED_NODE_ID|$FAILED_HOST|$FAILED_PORT|$FAILED_DATA_DIR|$NEW_MAIN_ID|$NEW_MAIN_HOST|$OLD_MAIN_ID|$OLD_PRIMARY_ID|$NEW_MAIN_PORT|$NEW_MAIN_DATA_DIR|$OLD_PRIMARY_HOST|$OLD_PRIMARY_PORT" >> "$PGRELAY_FAILOVER_RECORD"
fi

log "failed node $FAILED_NODE_ID ($FAILED_HOST:$FAILED_PORT), old primary $OLD_PRIMARY_ID, new main $NEW_MAIN_ID ($NEW_MAIN_HOST:$NEW_MAIN_PORT)"

if [ "$FAILED_NODE_ID" != "$OLD_PRIMARY_ID" ]; then
    log "a standby failed: nothing to do"
    exit 0
fi
if [ "$NEW_MAIN_ID" -lt 0 ] 2>/dev/null || [ -z "$NEW_MAIN_DATA_DIR" ]; then
    log "no node left to promote (new main $NEW_MAIN_ID, data dir '$NEW_MAIN_DATA_DIR')"
    exit 1
fi

PG_CTL=""
if [ -n "$PG_BIN" ] && [ -x "$PG_BIN/pg_ctl" ]; then
    PG_CTL="$PG_BIN/pg_ctl"
elif command -v pg_ctl >/dev/null 2>&1; then
    PG_CTL=$(command -v pg_ctl)
else
    PG_CTL=$(ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n 1)
fi
if [ -z "$PG_CTL" ]; then
    log "pg_ctl not found (set PG_BIN)"
    exit 1
fi

# initdb'd clusters belong to an unprivileged user; pg_ctl refuses root.
AS_OWNER=""
if [ "$(id -u)" = 0 ]; then
    AS_OWNER="runuser -u ${PGRELAY_PG_USER:-postgres} --"
fi

log "promoting node $NEW_MAIN_ID: pg_ctl promote -D $NEW_MAIN_DATA_DIR"
cd / && $AS_OWNER "$PG_CTL" promote -w -t 50 -D "$NEW_MAIN_DATA_DIR"
rc=$?
if [ $rc -ne 0 ]; then
    log "pg_ctl promote failed (exit $rc)"
    exit $rc
fi
log "node $NEW_MAIN_ID promoted"
exit 0
