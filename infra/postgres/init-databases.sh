#!/bin/sh
# Runs once, when the Postgres volume is first initialised (docker-entrypoint-initdb.d): one
# database for MLflow and one for Prefect, owned by POSTGRES_USER. Both tools keep their schema
# version in an `alembic_version` table, so they cannot share a database.
set -eu
for db in "${MLFLOW_DB_NAME:?}" "${PREFECT_DB_NAME:?}"; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set=db="$db" --set=owner="$POSTGRES_USER" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
SQL
done
