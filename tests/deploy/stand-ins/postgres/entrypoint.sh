#!/bin/sh
# As the official image: on an empty data directory, a cluster whose superuser is POSTGRES_USER with
# POSTGRES_PASSWORD, and the database POSTGRES_DB; password sign-ins from the network.
set -eu
install -d -o postgres -g postgres -m 700 "$PGDATA"
install -d -o postgres -g postgres /var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/password
  chown postgres /tmp/password
  su postgres -c "initdb -D '$PGDATA' -U '$POSTGRES_USER' --pwfile=/tmp/password --auth-local=trust --auth-host=scram-sha-256" >/dev/null
  rm /tmp/password
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  su postgres -c "pg_ctl -D '$PGDATA' -w -o '-c listen_addresses=' start" >/dev/null
  su postgres -c "psql -q -U '$POSTGRES_USER' -d postgres -c 'CREATE DATABASE \"$POSTGRES_DB\"'"
  su postgres -c "pg_ctl -D '$PGDATA' -w stop" >/dev/null
fi
exec su postgres -c "exec postgres -D '$PGDATA' -c listen_addresses='*'"
