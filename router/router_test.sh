#!/usr/bin/env bash
#  PostgreSQL-backed test of tollgate-router and tollgate-health together:
#  a throwaway PostgreSQL with every migration, then router_probe (see there).
#
#  usage: router_test.sh BIN_DIR
#  Exit 0 = pass, 1 = fail, 77 = skipped (no PostgreSQL server binaries).
set -u
#  These probes play other programs (billing, dispatch.events) with no
#  certificate of theirs: plain sockets here; CURVE is tested end to end
#  in tests/security.
export TOLLGATE_SECURITY=none
BIN=${1:?usage: $0 BIN_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
    echo "SKIP: no PostgreSQL server binaries (initdb) found"
    exit 77
fi
. "$(dirname "$0")/../tests/lib/reap.sh"
tg_reap_stale /tmp/tollgate-router-test
TMP=$(mktemp -d /tmp/tollgate-router-test.XXXXXX)
chmod 755 "$TMP"
tg_claim "$TMP"
as_pg() { #  PostgreSQL refuses to run as root
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$TMP/data" -m immediate -w stop >/dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/data"
[ "$(id -u)" = 0 ] && chown postgres "$TMP/data" "$TMP"
as_pg "$PGBIN/initdb" -D "$TMP/data" -A trust -U postgres --no-sync >"$TMP/initdb.out" 2>&1 ||
    { cat "$TMP/initdb.out"; exit 1; }
#  Unix socket only (listen_addresses=''): no TCP port can collide.
as_pg "$PGBIN/pg_ctl" -D "$TMP/data" -l "$TMP/postgres.log" -w \
    -o "-k $TMP -p 5432 -c listen_addresses= -c fsync=off" start >/dev/null ||
    { cat "$TMP/postgres.log"; exit 1; }
URL="postgresql:///postgres?host=$TMP&port=5432&user=postgres"
for migration in "$HERE"/../ops/migrations/*.sql; do
    "$PGBIN/psql" -q -v ON_ERROR_STOP=1 "$URL" -f "$migration" >/dev/null ||
        { echo "FAIL: migration $migration"; exit 1; }
done
"$BIN/router_probe" "$URL" "$BIN"
