#!/usr/bin/env bash
#  PostgreSQL-backed tests of the ledger (and of billing with it).
#
#  usage: ledger_test.sh BIN_DIR MODE
#    MODE ledger   ledger_store's database selftest, then tollgate-ledger driven
#                  by ledger_probe (batches, duplicates, malformed input, a
#                  PostgreSQL outage mid-run), SIGTERM drain, and a start against
#                  an unreachable database
#    MODE billing  tollgate-billing + tollgate-ledger driven by billing_probe
#    MODE bench    ledger throughput with batches of 2000 (prints entries/s)
#
#  Starts a throwaway PostgreSQL in a mktemp -d folder. It listens only on a
#  Unix socket inside that folder (listen_addresses=''), so no TCP port can
#  collide with anything else on the machine; the port number only names the
#  socket file. Exit 0 = pass, 1 = fail, 77 = skipped (no PostgreSQL binaries).
set -u
#  These probes play other programs (billing, dispatch.events) with no
#  certificate of theirs: plain sockets here; CURVE is tested end to end
#  in tests/security.
export TOLLGATE_SECURITY=none

BIN=${1:?usage: $0 BIN_DIR ledger|billing|bench}
MODE=${2:-ledger}
HERE=$(cd "$(dirname "$0")" && pwd)
MIGRATIONS="$HERE/../ops/migrations"
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
    echo "SKIP: no PostgreSQL server binaries (initdb) found"
    exit 77
fi

. "$(dirname "$0")/../tests/lib/reap.sh"
tg_reap_stale /tmp/tollgate-ledger-test
TMP=$(mktemp -d /tmp/tollgate-ledger-test.XXXXXX)
chmod 755 "$TMP"
tg_claim "$TMP"
PIDS=()
PG_STARTED=""
as_pg() { #  PostgreSQL refuses to run as root
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    [ -n "$PG_STARTED" ] && as_pg "$PGBIN/pg_ctl" -D "$TMP/data" -m immediate -w stop >/dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for log in "$TMP"/*.log; do
        [ -f "$log" ] && { echo "--- $log"; tail -n 30 "$log"; }
    done
    exit 1
}

#  ---------------------------------------------------------------- PostgreSQL
mkdir -p "$TMP/data" "$TMP/sock"
[ "$(id -u)" = 0 ] && chown postgres "$TMP/data" "$TMP/sock"
PGPORT=5432
as_pg "$PGBIN/initdb" -D "$TMP/data" -A trust -U postgres --no-sync >"$TMP/initdb.out" 2>&1 ||
    { cat "$TMP/initdb.out"; fail "initdb"; }
PG_OPTIONS="-k $TMP/sock -p $PGPORT -c listen_addresses= -c fsync=off"
#  BENCH_PGSS=1 (bench mode): pg_stat_statements, to see where PostgreSQL's time goes
[ "$MODE" = bench ] && [ "${BENCH_PGSS:-0}" = 1 ] &&
    PG_OPTIONS="$PG_OPTIONS -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on"
PG_START="$PGBIN/pg_ctl -D $TMP/data -l $TMP/postgres.log -w -o \"$PG_OPTIONS\" start"
PG_STOP="$PGBIN/pg_ctl -D $TMP/data -m fast -w stop"
if [ "$(id -u)" = 0 ]; then
    PG_START="runuser -u postgres -- $PG_START"
    PG_STOP="runuser -u postgres -- $PG_STOP"
fi
#  postgres.log is written by the server user
touch "$TMP/postgres.log" && [ "$(id -u)" = 0 ] && chown postgres "$TMP/postgres.log"
eval "$PG_START" >/dev/null || fail "PostgreSQL did not start"
PG_STARTED=1
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP/sock" -p "$PGPORT" -U postgres)
for db in tollgate storetest; do
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE $db" >/dev/null || fail "create database $db"
    for file in "$MIGRATIONS"/*.sql; do
        "${PSQL[@]}" -d "$db" -f "$file" >/dev/null || fail "migration $file"
    done
done

#  oldjournal: money journaled per request as before migration 0020 (an
#  entry with request_id and two lines per costed usage row); the migration
#  must turn it into journal_requests that `ledger check` accepts, and the
#  check must see an amount that no longer matches.
old_journal() {
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE oldjournal" >/dev/null || fail "create oldjournal"
    local file
    for file in "$MIGRATIONS"/*.sql; do
        [ "$(basename "$file" | cut -c1-4)" -lt 20 ] || continue
        "${PSQL[@]}" -d oldjournal -f "$file" >/dev/null || fail "migration $file"
    done
    "${PSQL[@]}" -d oldjournal >/dev/null <<'SQL' || fail "old journal data"
SELECT tollgate_usage_partition(now());
WITH a AS (INSERT INTO accounts (name, balance_micros) VALUES ('old', -30) RETURNING id),
     la AS (INSERT INTO ledger_accounts (account_id) SELECT id FROM a RETURNING id),
     u AS (INSERT INTO usage (request_id, started_at, account_id, api_key_id, model, status,
                              cost_micros)
           SELECT r, now(), a.id, 1, 'm', 200, c FROM a, (VALUES ('old-1', 10), ('old-2', 20),
                  ('old-3', 0)) v(r, c) RETURNING request_id, cost_micros),
     d AS (INSERT INTO usage_daily (day, account_id, api_key_id, model, provider_id, requests,
                                    cost_micros)
           SELECT (now() AT TIME ZONE 'UTC')::date, id, 1, 'm', 0, 3, 30 FROM a),
     e AS (INSERT INTO journal_entries (kind, request_id)
           SELECT 'usage', request_id FROM u WHERE cost_micros > 0 RETURNING id, request_id)
INSERT INTO journal_lines (entry_id, ledger_account_id, amount_micros)
SELECT e.id, la.id, -u.cost_micros FROM e JOIN u USING (request_id), la
UNION ALL
SELECT e.id, (SELECT id FROM ledger_accounts WHERE system_name = 'revenue'), u.cost_micros
FROM e JOIN u USING (request_id);
SQL
    for file in "$MIGRATIONS"/*.sql; do
        [ "$(basename "$file" | cut -c1-4)" -ge 20 ] || continue
        "${PSQL[@]}" -d oldjournal -f "$file" >/dev/null || fail "migration $file"
    done
    local old_url="host=$TMP/sock port=$PGPORT user=postgres dbname=oldjournal"
    [ "$("${PSQL[@]}" -d oldjournal -Atc "SELECT string_agg(request_id || '=' || amount_micros, ','
        ORDER BY request_id) FROM journal_requests")" = "old-1=10,old-2=20" ] ||
        fail "migration 0020 did not carry the per-request entries into journal_requests"
    TOLLGATE_TEST_DATABASE_URL="$old_url" "$BIN/ledger_probe" check >"$TMP/oldjournal.out" ||
        { cat "$TMP/oldjournal.out"; fail "ledger check after migration 0020"; }
    #  An old ledger still running after the migration (a rolling upgrade)
    #  journals old-4 per request: the check fails until a new ledger starts
    #  and carries it over.
    "${PSQL[@]}" -d oldjournal >/dev/null <<'SQL' || fail "old-shape entry after migrating"
WITH u AS (INSERT INTO usage (request_id, started_at, account_id, api_key_id, model, status,
                              cost_micros)
           SELECT 'old-4', now(), id, 1, 'm', 200, 40 FROM accounts WHERE name = 'old'
           RETURNING account_id, cost_micros),
     d AS (UPDATE usage_daily SET requests = requests + 1, cost_micros = cost_micros + 40
           WHERE account_id = (SELECT account_id FROM u)),
     b AS (UPDATE accounts SET balance_micros = balance_micros - 40 WHERE name = 'old'),
     e AS (INSERT INTO journal_entries (kind, request_id) VALUES ('usage', 'old-4') RETURNING id)
INSERT INTO journal_lines (entry_id, ledger_account_id, amount_micros)
SELECT e.id, la.id, -40 FROM e, u JOIN ledger_accounts la USING (account_id)
UNION ALL
SELECT e.id, (SELECT id FROM ledger_accounts WHERE system_name = 'revenue'), 40 FROM e;
SQL
    TOLLGATE_TEST_DATABASE_URL="$old_url" "$BIN/ledger_probe" check >"$TMP/oldjournal.out" &&
        fail "ledger check passed on an old-shape entry not carried over"
    URL="$old_url" start ledger
    local tries=0
    until grep -q 'carried 1 per-request journal entries' "$TMP/ledger.log"; do
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || fail "the new ledger did not carry old-4 over at start"
        sleep 0.1
    done
    stop ledger
    [ "$("${PSQL[@]}" -d oldjournal -Atc "SELECT amount_micros FROM journal_requests
        WHERE request_id = 'old-4'")" = 40 ] || fail "old-4 not in journal_requests"
    TOLLGATE_TEST_DATABASE_URL="$old_url" "$BIN/ledger_probe" check >"$TMP/oldjournal.out" ||
        { cat "$TMP/oldjournal.out"; fail "ledger check after a new ledger carried old-4 over"; }
    "${PSQL[@]}" -d oldjournal -c "UPDATE journal_requests SET amount_micros = 11
        WHERE request_id = 'old-1'" >/dev/null || fail "tamper"
    TOLLGATE_TEST_DATABASE_URL="$old_url" "$BIN/ledger_probe" check >"$TMP/oldjournal.out" &&
        fail "ledger check missed a request whose amount differs from its usage row"
    grep -q 'FAIL  costed usage rows have their journaled request: 1 violation' \
        "$TMP/oldjournal.out" && grep -q 'FAIL  usage entries equal their requests: 1 violation' \
        "$TMP/oldjournal.out" || { cat "$TMP/oldjournal.out"; fail "ledger check's report"; }
    #  Money journaled for a request whose usage row says it was free.
    "${PSQL[@]}" -d oldjournal -c "UPDATE journal_requests SET amount_micros = 10
        WHERE request_id = 'old-1'; UPDATE usage SET cost_micros = 0
        WHERE request_id = 'old-2'" >/dev/null || fail "tamper"
    TOLLGATE_TEST_DATABASE_URL="$old_url" "$BIN/ledger_probe" check >"$TMP/oldjournal.out"
    grep -q 'FAIL  journaled requests have their usage row: 1 violation' "$TMP/oldjournal.out" &&
        grep -q 'request old-2: 20 journaled, usage row costs 0' "$TMP/oldjournal.out" ||
        { cat "$TMP/oldjournal.out"; fail "ledger check missed money charged for a free request"; }
    #  A usage entry whose counter-line credits another system account.
    "${PSQL[@]}" -d oldjournal -c "UPDATE usage SET cost_micros = 20 WHERE request_id = 'old-2';
        UPDATE journal_lines SET ledger_account_id = (SELECT id FROM ledger_accounts
        WHERE system_name = 'grants') WHERE amount_micros > 0 AND entry_id = (SELECT entry_id
        FROM journal_requests WHERE request_id = 'old-1')" >/dev/null || fail "tamper"
    TOLLGATE_TEST_DATABASE_URL="$old_url" "$BIN/ledger_probe" check >"$TMP/oldjournal.out" &&
        fail "ledger check missed a usage entry that does not credit revenue"
    grep -q 'FAIL  usage entries credit revenue: 1 violation' "$TMP/oldjournal.out" &&
        [ "$(grep -c '^FAIL' "$TMP/oldjournal.out")" = 1 ] ||
        { cat "$TMP/oldjournal.out"; fail "ledger check's report on the revenue line"; }
}
URL="host=$TMP/sock port=$PGPORT user=postgres dbname=tollgate"

#  Programs reject unknown TOLLGATE_* variables, so the test's own must not
#  reach them. (A variable, not a function: `function &` would fork a shell
#  and $! would be that shell's pid, not the program's.)
PROGRAM_ENV=(env -u TOLLGATE_TEST_DATABASE_URL -u TOLLGATE_CONFIG)

#  start NAME ARGS...: runs a program in the background, logging to NAME.log
start() {
    local name=$1
    shift
    "${PROGRAM_ENV[@]}" "$BIN/tollgate-$name" --set "database_url=$URL" --set log_level=info \
        --set "ledger.bind=ipc://$TMP/ledger.sock" \
        --set "ledger.control_bind=ipc://$TMP/ledger-control.sock" \
        --set "billing.bind=ipc://$TMP/billing.sock" \
        --set "billing.control_bind=ipc://$TMP/billing-control.sock" \
        "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    eval "PID_$name=$!"
}

#  stop NAME: SIGTERM, and the program must drain and exit 0
stop() {
    local pid
    eval "pid=\$PID_$1"
    kill -TERM "$pid"
    wait "$pid"
    local rc=$?
    [ "$rc" = 0 ] || fail "tollgate-$1 exited $rc after SIGTERM"
    grep -q '"stopped"' "$TMP/$1.log" || fail "tollgate-$1 did not log that it stopped"
}

export TOLLGATE_TEST_DATABASE_URL="$URL"
case "$MODE" in
ledger)
    old_journal
    TOLLGATE_TEST_DATABASE_URL="host=$TMP/sock port=$PGPORT user=postgres dbname=storetest" \
        "$BIN/ledger_selftest" ledger_store || fail "ledger_store selftest against PostgreSQL"

    start ledger --set ledger.batch_max=500 --set ledger.batch_delay_ms=5
    LEDGER_TEST_PG_STOP="$PG_STOP" LEDGER_TEST_PG_START="$PG_START" \
        "$BIN/ledger_probe" "ipc://$TMP/ledger.sock" || fail "ledger_probe"
    grep -q 'cannot commit a batch' "$TMP/ledger.log" || fail "the outage was not logged"
    [ "$(grep -c 'cannot commit a batch' "$TMP/ledger.log")" = 1 ] ||
        fail "the outage was logged more than once"
    grep -q 'database back' "$TMP/ledger.log" || fail "the recovery was not logged"
    stop ledger

    #  Batches wait little while the ledger is idle, long once it is busy:
    #  its transactions took 1 % of a quarter second after the probe's burst
    #  (the host's load left out here, other tests run beside this one)...
    #  The metrics say which line was crossed.
    metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    busy_windows() { #  REASON: quarter seconds the ledger counted busy for it
        curl -s "http://127.0.0.1:$metrics_port/metrics" |
            sed -n "s/^tollgate_ledger_busy_windows_total{reason=\"$1\"} //p"
    }
    start ledger --set ledger.batch_max=500 --set ledger.batch_idle_delay_ms=200 \
        --set ledger.batch_delay_ms=3000 --set ledger.batch_busy_idle_pct=0 \
        --set ledger.batch_busy_db_pct=1 --set "ledger.metrics_listen=127.0.0.1:$metrics_port"
    "$BIN/ledger_probe" "ipc://$TMP/ledger.sock" pace 200 3000 || fail "ledger_probe pace"
    [ "$(busy_windows database)" -gt 0 ] && [ "$(busy_windows host)" = 0 ] ||
        fail "busy windows after the burst: database $(busy_windows database), host $(busy_windows host)"
    stop ledger
    #  ... or the host is busier than ledger.batch_busy_idle_pct allows.
    start ledger --set ledger.batch_idle_delay_ms=200 --set ledger.batch_delay_ms=3000 \
        --set ledger.batch_busy_idle_pct=100 --set "ledger.metrics_listen=127.0.0.1:$metrics_port"
    "$BIN/ledger_probe" "ipc://$TMP/ledger.sock" pace-host 3000 || fail "ledger_probe pace-host"
    [ "$(busy_windows host)" -gt 0 ] || fail "no busy window counted for the host"
    stop ledger

    #  An unreachable database: one clear line, exit 1.
    "${PROGRAM_ENV[@]}" "$BIN/tollgate-ledger" --set "database_url=host=$TMP/nowhere user=postgres" \
        --set db_connect_attempts=2 --set db_retry_interval_ms=10 \
        --set "ledger.bind=ipc://$TMP/ledger2.sock" \
        --set "ledger.control_bind=ipc://$TMP/ledger2-control.sock" >"$TMP/unreachable.out" 2>&1
    rc=$?
    [ "$rc" = 1 ] || fail "ledger with no database exited $rc, not 1"
    [ "$(grep -c '"level":"error"' "$TMP/unreachable.out")" = 1 ] ||
        { cat "$TMP/unreachable.out"; fail "expected one error line"; }
    grep -q 'cannot connect to PostgreSQL' "$TMP/unreachable.out" ||
        { cat "$TMP/unreachable.out"; fail "the error line does not say why"; }
    ;;
billing)
    #  The probe makes the grants of requests billing admitted before (as
    #  a billing restarted with the same secret_key would check them).
    SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    start ledger
    start billing --set "secret_key=$SECRET"
    TOLLGATE_TEST_SECRET_KEY="$SECRET" "$BIN/billing_probe" "ipc://$TMP/billing.sock" "ipc://$TMP/billing-control.sock" ||
        fail "billing_probe"
    stop billing
    stop ledger
    #  The probe as billing's ledger: catalogs reloaded between a ledger
    #  commit and its COMMIT (a database of its own: the probe seeds again).
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE reload" >/dev/null || fail "create reload"
    for file in "$MIGRATIONS"/*.sql; do
        "${PSQL[@]}" -d reload -f "$file" >/dev/null || fail "migration $file"
    done
    reload_url="host=$TMP/sock port=$PGPORT user=postgres dbname=reload"
    start billing --set "secret_key=$SECRET" --set "database_url=$reload_url" \
        --set "ledger.bind=ipc://$TMP/probe-ledger.sock"
    TOLLGATE_TEST_SECRET_KEY="$SECRET" TOLLGATE_TEST_DATABASE_URL="$reload_url" \
        "$BIN/billing_probe" "ipc://$TMP/billing.sock" "ipc://$TMP/billing-control.sock" \
        reload "ipc://$TMP/probe-ledger.sock" || fail "billing_probe reload"
    stop billing
    ;;
bench)
    #  BENCH_BATCH_MAX: entries per transaction (the gateway's batches are
    #  smaller than 2000: ~10 ms of requests each).
    start ledger --set ledger.batch_max="${BENCH_BATCH_MAX:-2000}" --set ledger.batch_delay_ms=10
    if [ "${BENCH_PGSS:-0}" = 1 ]; then
        "${PSQL[@]}" -d tollgate -c "CREATE EXTENSION pg_stat_statements" >/dev/null ||
            fail "pg_stat_statements"
    fi
    #  CPU time of the cluster (postmaster and its children: backends,
    #  walwriter, checkpointer, autovacuum) and of the ledger, and the WAL
    #  position, just before the first ENTRY and after the last COMMIT.
    cat >"$TMP/mark.sh" <<MARK
#!/usr/bin/env bash
postmaster=\$(head -n 1 "$TMP/data/postmaster.pid")
pg=0
for p in \$postmaster \$(pgrep -P "\$postmaster"); do
    pg=\$((pg + \$(awk '{print \$14 + \$15}' /proc/\$p/stat 2>/dev/null || echo 0)))
done
ledger=\$(awk '{print \$14 + \$15}' /proc/$PID_ledger/stat)
wal=\$(${PSQL[*]} -d tollgate -Atc "SELECT pg_current_wal_lsn() - '0/0'")
echo "\$pg \$ledger \$wal" >>"$TMP/marks"
if [ "${BENCH_PGSS:-0}" = 1 ] && [ ! -s "$TMP/pgss-reset" ]; then
    ${PSQL[*]} -d tollgate -Atc "SELECT pg_stat_statements_reset()" >"$TMP/pgss-reset"
fi
MARK
    chmod +x "$TMP/mark.sh"
    count=${BENCH_COUNT:-200000}
    LEDGER_BENCH_MARK="$TMP/mark.sh" "$BIN/ledger_probe" "ipc://$TMP/ledger.sock" bench "$count" ||
        fail "bench"
    hz=$(getconf CLK_TCK)
    read -r pg0 ledger0 wal0 < <(sed -n 1p "$TMP/marks")
    read -r pg1 ledger1 wal1 < <(sed -n 2p "$TMP/marks")
    awk -v n="$count" -v hz="$hz" -v pg=$((pg1 - pg0)) -v l=$((ledger1 - ledger0)) \
        -v w=$((wal1 - wal0)) 'BEGIN { printf "ledger bench cost: postgres %.1f us, ledger %.1f us CPU, WAL %.0f bytes per entry\n", pg * 1e6 / hz / n, l * 1e6 / hz / n, w / n }'
    if [ "${BENCH_PGSS:-0}" = 1 ]; then
        "${PSQL[@]}" -d tollgate -P pager=off -c "SELECT calls, rows,
            round((total_exec_time * 1000 / $count)::numeric, 1) AS exec_us_per_entry,
            round((total_plan_time * 1000 / $count)::numeric, 1) AS plan_us_per_entry,
            round((wal_bytes / $count)::numeric) AS wal_bytes_per_entry,
            shared_blks_hit + shared_blks_read + shared_blks_dirtied AS blocks,
            left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS query
            FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'
            ORDER BY total_exec_time + total_plan_time DESC LIMIT 12"
    fi
    stop ledger
    ;;
*)
    echo "unknown mode $MODE"
    exit 2
    ;;
esac
echo "ledger_test.sh $MODE: OK"
