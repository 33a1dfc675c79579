#!/bin/sh
# Runs once, when the compose `db` volume is first initialised (/docker-entrypoint-initdb.d): lets standbys of the
# `replica` profile stream from the primary over the network, with the password. An existing volume needs the same
# line added to its pg_hba.conf and `SELECT pg_reload_conf()` (docs/scaling.md).
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
