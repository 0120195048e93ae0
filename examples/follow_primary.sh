#!/bin/sh
# pgrelay sample follow_primary_command (pgpool-II compatible): re-point a
# standby at the new primary after a failover (or pcp_promote_node).
#
#   follow_primary_command = '/path/to/examples/follow_primary.sh %d %h %p %D %m %H %M %P %r %R %N %S'
#
# Placeholders (as for failover_command, but %m %H %r %R describe the NEW PRIMARY):
#   %d node to re-point (id)   %h its host              %p its port
#   %D its data directory      %m new primary id        %H new primary host
#   %M old main node id        %P old primary node id   %r new primary port
#   %R new primary data dir    %N old primary host      %S old primary port
#   %% a literal %
# pgrelay detaches every node except the new primary (status down), then runs
# this command once per node. This script:
#   - skips a node that is not running (e.g. the failed old primary);
#   - refuses a node that is not in recovery (an old primary must be rebuilt
#     or pg_rewind'ed first: not done here);
#   - rewrites primary_conninfo with ALTER SYSTEM, keeping every keyword
#     (user, password, application_name...) but host and port, and reloads
#     (PostgreSQL >= 13 applies primary_conninfo without a restart);
#   - then runs $PGRELAY_ATTACH_COMMAND <node id> if set (e.g. `pgrelay attach`),
#     otherwise leaves the node to auto_failback (on in pgrelay's sample config:
#     the sr check re-attaches it once it streams from the new primary).
# pgrelay kills the command after 60 s.
#
# Environment:
#   PGUSER / PGPASSWORD / PGDATABASE   how psql connects to the standby (default user postgres)
#   PGRELAY_FOLLOW_RECORD               if set, append the arguments received to this file
#   PGRELAY_ATTACH_COMMAND              command to attach the node afterwards (node id appended)

NODE_ID="$1"
NODE_HOST="$2"
NODE_PORT="$3"
NODE_DATA_DIR="$4"
NEW_PRIMARY_ID="$5"
NEW_PRIMARY_HOST="$6"
OLD_MAIN_ID="$7"
OLD_PRIMARY_ID="$8"
NEW_PRIMARY_PORT="$9"
NEW_PRIMARY_DATA_DIR="${10}"
OLD_PRIMARY_HOST="${11}"
OLD_PRIMARY_PORT="${12}"

log() { echo "follow_primary.sh: $*"; }

if [ -n "$PGRELAY_FOLLOW_RECORD" ]; then
    echo "$NODE_ID|$NODE_HOST|$NODE_PORT|$NODE_DATA_DIR|$NEW_PRIMARY_ID|$NEW_PRIMARY_HOST|$OLD_MAIN_ID|$OLD_PRIMARY_ID|$NEW_PRIMARY_PORT|$NEW_PRIMARY_DATA_DIR|$OLD_PRIMARY_HOST|$OLD_PRIMARY_PORT" >> "$PGRELAY_FOLLOW_RECORD"
fi

if [ "$NODE_ID" = "$NEW_PRIMARY_ID" ]; then
    log "node $NODE_ID is the new primary: nothing to do"
    exit 0
fi

export PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-5}"
PSQL="psql -X -A -t -q -h $NODE_HOST -p $NODE_PORT -U ${PGUSER:-postgres} -d ${PGDATABASE:-postgres}"

RECOVERY=$($PSQL -c 'SELECT pg_is_in_recovery()' 2>/dev/null)
if [ -z "$RECOVERY" ]; then
    log "node $NODE_ID ($NODE_HOST:$NODE_PORT) is not running: skipped"
    exit 0
fi
if [ "$RECOVERY" != "t" ]; then
    log "node $NODE_ID is not in recovery (an old primary?): rebuild it or pg_rewind it first; not re-pointed"
    exit 1
fi

OLD_CONNINFO=$($PSQL -c 'SHOW primary_conninfo')
NEW_CONNINFO=$(printf '%s' "$OLD_CONNINFO" | sed -E -e "s/(^| )host=[^ ]*/\\1host=$NEW_PRIMARY_HOST/" -e "s/(^| )port=[^ ]*/\\1port=$NEW_PRIMARY_PORT/")
case " $NEW_CONNINFO" in *" host="*) ;; *) NEW_CONNINFO="$NEW_CONNINFO host=$NEW_PRIMARY_HOST" ;; esac
case " $NEW_CONNINFO" in *" port="*) ;; *) NEW_CONNINFO="$NEW_CONNINFO port=$NEW_PRIMARY_PORT" ;; esac
QUOTED=$(printf '%s' "$NEW_CONNINFO" | sed "s/'/''/g")

log "node $NODE_ID: primary_conninfo -> host=$NEW_PRIMARY_HOST port=$NEW_PRIMARY_PORT"
if ! $PSQL -v ON_ERROR_STOP=1 -c "ALTER SYSTEM SET primary_conninfo = '$QUOTED'" -c 'SELECT pg_reload_conf()' >/dev/null; then
    log "could not update primary_conninfo on node $NODE_ID"
    exit 1
fi

if [ -n "$PGRELAY_ATTACH_COMMAND" ]; then
    log "attaching node $NODE_ID: $PGRELAY_ATTACH_COMMAND $NODE_ID"
    $PGRELAY_ATTACH_COMMAND "$NODE_ID" || exit 1
else
    log "node $NODE_ID re-pointed; auto_failback (or pgrelay attach $NODE_ID) brings it back"
fi
exit 0
