#!/bin/sh
#  Runs dispatch_probe against a throwaway PostgreSQL.
#    dispatch_probe.sh PROBE TOLLGATE_DISPATCH MIGRATION.sql  (and every migration beside it)
#  Exit 77 (skipped) when PostgreSQL's binaries are missing.
set -eu
#  These probes play other programs (billing, dispatch.events) with no
#  certificate of theirs: plain sockets here; CURVE is tested end to end
#  in tests/security.
export TOLLGATE_SECURITY=none
probe=$1
dispatch=$2
migration=$3
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
[ -x "$pgbin/initdb" ] || { echo "no PostgreSQL in $pgbin"; exit 77; }

. "$(dirname "$0")/../../tests/lib/reap.sh"
tg_reap_stale /tmp/dispatch_probe_pg
dir=$(mktemp -d /tmp/dispatch_probe_pg.XXXXXX)
tg_claim "$dir"
port=$(( 20000 + $$ % 20000 ))
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
    as_pg "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
[ "$(id -u)" = 0 ] && chown postgres "$dir"
as_pg "$pgbin/initdb" -D "$dir/data" -A trust --no-sync -U postgres >/dev/null
#  Unix socket only, in our folder: no TCP port to collide with.
as_pg "$pgbin/pg_ctl" -D "$dir/data" -w -l "$dir/log" \
    -o "-k $dir -p $port -c listen_addresses= -c fsync=off" start >/dev/null
url="postgresql:///postgres?host=$dir&port=$port&user=postgres"
#  Every migration beside the one named, in order: the catalog reads them all.
for file in "$(dirname "$migration")"/[0-9][0-9][0-9][0-9]_*.sql; do
    "$pgbin/psql" -q -v ON_ERROR_STOP=1 "$url" -f "$file" >/dev/null
done
"$probe" "$url" "$dispatch"
