#!/bin/sh
# failover_command for SYNCHRONOUS replication with a quorum
# (synchronous_standby_names = 'ANY 1 (server1, server2)'): promote the standby
# that has received the most WAL, not simply pgrelay's new main node (%m, the
# lowest-id live node).
#
# Why: with ANY 1 a COMMIT is acknowledged once ONE standby has flushed it. The
# standby with the highest pg_last_wal_receive_lsn() therefore has every
# acknowledged transaction; the lowest-id standby may not (it may be the one
# that lagged or was disconnected). Promoting it could lose acknowledged commits.
#
#   failover_command = '/path/to/failover-most-advanced.sh %d %h %p %D %m %H %M %P %r %R %N %S'
#
# Environment:
#   PGRELAY_CANDIDATES        space-separated "id:host:port:datadir" of every standby that may be promoted
#   PG_BIN                    directory of pg_ctl and psql (default: from PATH)
#   PGRELAY_FAILOVER_RECORD   if set, append "chosen|<id>|<lsn>|candidates|<id>=<lsn>,..." to this file
#   PGRELAY_PG_USER           OS user owning the data directories when run as root (default postgres)
#   PGUSER / PGPASSWORD       how psql connects to the standbys (default user postgres)
#
# The node promoted may differ from %m: pgrelay's primary search finds the node
# that left recovery, and follow_primary_command then gets the real new primary.

FAILED_NODE_ID="$1"
NEW_MAIN_ID="$5"
OLD_PRIMARY_ID="$8"

log() { echo "failover-most-advanced.sh: $*"; }

if [ "$FAILED_NODE_ID" != "$OLD_PRIMARY_ID" ]; then
    log "node $FAILED_NODE_ID (a standby) failed: nothing to do"
    exit 0
fi

BIN=""
[ -n "$PG_BIN" ] && BIN="$PG_BIN/"
export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-3}"

# LSN "X/Y" (hex) -> decimal, with 64-bit shell arithmetic.
lsn_num() {
    hi=${1%%/*}
    lo=${1##*/}
    echo $(( (0x$hi << 32) + 0x$lo ))
}

best_id=""
best_dir=""
best_num=-1
best_lsn=""
seen=""
for c in $PGRELAY_CANDIDATES; do
    id=${c%%:*}; rest=${c#*:}
    host=${rest%%:*}; rest=${rest#*:}
    port=${rest%%:*}; dir=${rest#*:}
    [ "$id" = "$FAILED_NODE_ID" ] && continue
    # The most advanced of what was received (flushed) and what was replayed.
    lsn=$("${BIN}psql" -X -A -t -q -h "$host" -p "$port" -U "${PGUSER:-postgres}" -d postgres -c \
        "SELECT CASE WHEN pg_is_in_recovery() THEN greatest(coalesce(pg_last_wal_receive_lsn(), '0/0'), coalesce(pg_last_wal_replay_lsn(), '0/0')) END" 2>/dev/null)
    if [ -z "$lsn" ]; then
        log "node $id ($host:$port): not reachable or not a standby, skipped"
        seen="$seen${seen:+,}$id=none"
        continue
    fi
    n=$(lsn_num "$lsn")
    log "node $id ($host:$port): WAL received up to $lsn"
    seen="$seen${seen:+,}$id=$lsn"
    if [ "$n" -gt "$best_num" ]; then
        best_num=$n; best_id=$id; best_dir=$dir; best_lsn=$lsn
    fi
done

if [ -z "$best_id" ]; then
    log "no standby to promote (pgrelay's candidate was node $NEW_MAIN_ID)"
    exit 1
fi
[ -n "$PGRELAY_FAILOVER_RECORD" ] && echo "chosen|$best_id|$best_lsn|candidates|$seen|new_main|$NEW_MAIN_ID" >> "$PGRELAY_FAILOVER_RECORD"

AS_OWNER=""
if [ "$(id -u)" = 0 ]; then
    AS_OWNER="runuser -u ${PGRELAY_PG_USER:-postgres} --"
fi
log "promoting node $best_id (WAL up to $best_lsn; pgrelay's new main node was $NEW_MAIN_ID): pg_ctl promote -D $best_dir"
cd / && $AS_OWNER "${BIN}pg_ctl" promote -w -t 50 -D "$best_dir"
rc=$?
[ $rc -ne 0 ] && log "pg_ctl promote failed (exit $rc)"
exit $rc
