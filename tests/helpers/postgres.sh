#!/usr/bin/env bash
# PostgreSQL for the integration tests (`make test` runs this first): the server on 127.0.0.1:5432,
# the `test` database, and the password login tests/helpers/pipeline.py uses (Debian's pg_hba.conf
# asks for a password on 127.0.0.1, so a password rather than trust). Installs Debian's package when
# no server is there and none is installed; a server that already answers is left as it is, with
# GUARDSTREAM_TEST_PG naming another URL if its access differs.
set -euo pipefail
PORT=5432
PASSWORD=postgres

answers() { pg_isready -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; }

if ! command -v pg_lsclusters >/dev/null; then
  echo "installing PostgreSQL (Debian's postgresql) for the integration tests"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

if ! answers; then
  cluster=$(pg_lsclusters --no-header | awk -v port="$PORT" '$3 == port {print $1, $2; exit}')
  if [ -z "$cluster" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -1)
    echo "creating PostgreSQL cluster $version/main on port $PORT"
    pg_createcluster --port "$PORT" "$version" main >/dev/null
    cluster="$version main"
  fi
  echo "starting PostgreSQL $cluster"
  pg_ctlcluster $cluster start
  for _ in $(seq 60); do answers && break; sleep 0.5; done
  answers || { echo "PostgreSQL did not answer on 127.0.0.1:$PORT; see /var/log/postgresql/" >&2; exit 1; }
fi

if [ -n "${GUARDSTREAM_TEST_PG:-}" ]; then exit 0; fi
# the local server: the superuser's password and the database, through the local socket as postgres
as_postgres() { su postgres -s /bin/sh -c "psql -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p $PORT $*"; }
as_postgres "-c \"ALTER USER postgres PASSWORD '$PASSWORD'\"" >/dev/null
as_postgres "-tAc \"SELECT 1 FROM pg_database WHERE datname = 'test'\"" | grep -q 1 \
  || as_postgres "-c 'CREATE DATABASE test'" >/dev/null
