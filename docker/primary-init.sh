#!/bin/bash
# Runs once, from /docker-entrypoint-initdb.d, when the primary's data
# directory is initialised: a replication role and pg_hba entries for it.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE ${REPLICATION_USER:-replicator} WITH REPLICATION LOGIN PASSWORD '${REPLICATION_PASSWORD:-replicator}';
SQL

# The image's default pg_hba 'host all all all' line does not cover
# replication connections.
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
