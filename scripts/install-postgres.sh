#!/usr/bin/env bash
# Installs Debian's PostgreSQL server for the tests that run the collector on PostgreSQL
# (tests/support/postgres.py starts a throwaway cluster of its own with initdb + pg_ctl as
# the `postgres` system user the package creates). No cluster is created or started here.
# Idempotent: what is already there is kept.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    echo "install-postgres: $(ls -d /usr/lib/postgresql/*/bin | tail -1) already installed"
    exit 0
fi
# The package would otherwise create (and try to start) a cluster "main" on port 5432.
$SUDO mkdir -p /etc/postgresql-common
echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends postgresql
echo "install-postgres: installed $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
