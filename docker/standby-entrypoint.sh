#!/bin/bash
# Standby entrypoint for the postgres:15 image: on first start, clone the
# primary with pg_basebackup (-R writes standby.signal), name the walreceiver
# connection server<N> (pgpool's backend_application_nameN), then hand over
# to the image's normal entrypoint, which skips initdb for a non-empty PGDATA.
set -euo pipefail

: "${PRIMARY_HOST:=primary}"
: "${PRIMARY_PORT:=5432}"
: "${REPLICATION_USER:=replicator}"
: "${REPLICATION_PASSWORD:=replicator}"
: "${APPLICATION_NAME:?set APPLICATION_NAME (server1, server2, ...)}"
: "${PGDATA:=/var/lib/postgresql/data}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "standby ${APPLICATION_NAME}: waiting for ${PRIMARY_HOST}:${PRIMARY_PORT}"
  for _ in $(seq 1 120); do
    pg_isready -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -q && break
    sleep 1
  done
  mkdir -p "$PGDATA"
  chown -R postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  echo "standby ${APPLICATION_NAME}: pg_basebackup from ${PRIMARY_HOST}:${PRIMARY_PORT}"
  gosu postgres env PGPASSWORD="$REPLICATION_PASSWORD" \
    pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" \
      -D "$PGDATA" -R -X stream --checkpoint=fast -w
  # Replace the primary_conninfo written by -R with one carrying application_name.
  sed -i '/^primary_conninfo/d' "$PGDATA/postgresql.auto.conf"
  echo "primary_conninfo = 'host=${PRIMARY_HOST} port=${PRIMARY_PORT} user=${REPLICATION_USER} password=${REPLICATION_PASSWORD} application_name=${APPLICATION_NAME}'" \
    | gosu postgres tee -a "$PGDATA/postgresql.auto.conf" >/dev/null
fi

exec docker-entrypoint.sh "$@"
