/*  ledger_probe: drives a running tollgate-ledger from a DEALER and checks
    PostgreSQL behind it. Started by ledger_test.sh, which owns the database
    and the ledger process.

    usage: ledger_probe ENDPOINT [bench COUNT]
           ledger_probe check     (only the ledger check, report on stdout)
    environment: TOLLGATE_TEST_DATABASE_URL  the migrated database
                 LEDGER_TEST_PG_STOP, LEDGER_TEST_PG_START  shell commands
                 that stop and start that PostgreSQL (the outage scenario
                 is skipped when they are unset)

    Scenarios: a batch of N entries gives N usage rows, balanced journal and
    moved balances; the same entries again give no new rows and all COMMITs;
    a malformed frame is survived; with PostgreSQL stopped, entries are not
    acknowledged, and after it is back they are committed, then acknowledged.
    `bench COUNT` instead measures entries per second into PostgreSQL.
*/
#include "proto_ledger_check.h"
#include "proto_socket.h"
#include "proto_log.h"
#include "proto_loop.h"
#include "proto_batch.h"
#include "proto_msg.h"

#include <assert.h>
#include <inttypes.h>
#include <sys/wait.h>
#include <unistd.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_ACCOUNTS 3
#define S_INITIAL_MICROS 1000000000LL

static PGconn *s_db;                   //  probe's own connection
static int64_t s_account[S_ACCOUNTS];  //  accounts.id of the probe's accounts
static int64_t s_expected[S_ACCOUNTS]; //  expected balance_micros of each

#define S_CHECK(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "ledger_probe: FAIL %s:%d: ", __FILE__, __LINE__);                     \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static char *s_query_value(const char *sql)
{
    PGresult *result = PQexec(s_db, sql);
    S_CHECK(PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1, "%s: %s", sql,
            PQerrorMessage(s_db));
    char *value = strdup(PQgetvalue(result, 0, 0));
    PQclear(result);
    return value;
}

static int64_t s_query_int(const char *format, ...) __attribute__((format(printf, 1, 2)));

static int64_t s_query_int(const char *format, ...)
{
    char sql[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(sql, sizeof sql, format, args);
    va_end(args);
    char *value = s_query_value(sql);
    int64_t number = strtoll(value, NULL, 10);
    free(value);
    return number;
}

//  An account with an opening balance, and its 'topup' journal entry in the
//  same transaction (as the admin API does).
static int64_t s_create_account(const char *name, int64_t balance)
{
    char sql[2048];
    snprintf(
        sql, sizeof sql,
        "WITH a AS (INSERT INTO accounts (name, balance_micros) VALUES ('%s', %" PRId64
        ") RETURNING id),"
        " la AS (INSERT INTO ledger_accounts (account_id) SELECT id FROM a RETURNING id),"
        " e AS (INSERT INTO journal_entries (kind, reason) VALUES ('topup', 'opening')"
        " RETURNING id),"
        " l AS (INSERT INTO journal_lines (entry_id, ledger_account_id, amount_micros)"
        " SELECT e.id, la.id, %" PRId64 " FROM e, la UNION ALL"
        " SELECT e.id, (SELECT id FROM ledger_accounts WHERE system_name = 'funding'), -%" PRId64
        " FROM e)"
        " SELECT id FROM a",
        name, balance, balance, balance);
    char *value = s_query_value(sql);
    int64_t id = strtoll(value, NULL, 10);
    free(value);
    return id;
}

static void s_ledger_check(const char *when)
{
    char *report = NULL;
    int rc = proto_ledger_check_run(s_db, &report);
    S_CHECK(rc == 0, "ledger check %s:\n%s", when, report);
    free(report);
}

static void s_check_balances(const char *when)
{
    for (int i = 0; i < S_ACCOUNTS; i++) {
        int64_t balance =
            s_query_int("SELECT balance_micros FROM accounts WHERE id = %" PRId64, s_account[i]);
        S_CHECK(balance == s_expected[i],
                "%s: account %" PRId64 " has %" PRId64 ", expected %" PRId64, when, s_account[i],
                balance, s_expected[i]);
    }
}

//  The ENTRY for request number i of a scenario; the cost is charged to
//  s_expected when `count` is set.
static proto_msg_t *s_entry(const char *prefix, int i, bool count)
{
    char rid[64];
    snprintf(rid, sizeof rid, "%s-%06d", prefix, i);
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_ENTRY);
    proto_msg_set_request_id(msg, rid);
    int slot = i % S_ACCOUNTS;
    int64_t cost = i % 7 == 0 ? 0 : i % 1000 + 1;
    proto_msg_set_account_id(msg, (uint64_t)s_account[slot]);
    proto_msg_set_key_id(msg, 1);
    proto_msg_set_model(msg, i % 5 ? "gpt-probe" : "claude \"probe\", {odd}");
    proto_msg_set_status(msg, i % 11 == 0 ? 502 : 200);
    //  A re-send carries the started_us of the first send (senders keep the
    //  encoded message): part of usage's key since partitioning.
    static uint64_t base_us;
    if (!base_us)
        base_us = proto_loop_wall_us();
    proto_msg_set_started_us(msg, base_us + (uint64_t)i);
    proto_msg_set_provider_id(msg, 4);
    proto_msg_set_provider_key_id(msg, 5);
    proto_msg_set_upstream_model(msg, "upstream-probe");
    proto_msg_set_tokens_in(msg, (uint64_t)i);
    proto_msg_set_tokens_out(msg, 10);
    proto_msg_set_latency_us(msg, 1234567);
    proto_msg_set_cost_micros(msg, cost);
    if (count)
        s_expected[slot] -= cost;
    return msg;
}

//  Everything we ever sent, for s_wait_commits' sanity check.
static zhashx_t *s_sent;

//  Sends `count` entries, each added to `waiting` and to s_sent.
static void s_send_range(zsock_t *dealer, const char *prefix, int count, bool charge,
                         zhashx_t *waiting)
{
    for (int i = 0; i < count; i++) {
        proto_msg_t *msg = s_entry(prefix, i, charge);
        zhashx_insert(waiting, proto_msg_request_id(msg), (void *)1);
        zhashx_insert(s_sent, proto_msg_request_id(msg), (void *)1);
        S_CHECK(proto_msg_send(&msg, dealer) == 0, "send");
    }
}

//  Reads COMMITs until none of `waiting` is left or timeout_ms passes.
//  Returns how many were still waiting. Every COMMIT must name a request
//  we sent (unknown ones fail the probe).
static size_t s_wait_commits(zsock_t *dealer, zhashx_t *waiting, zhashx_t *sent, int64_t timeout_ms)
{
    uint64_t deadline = proto_loop_now_ms() + (uint64_t)timeout_ms;
    zpoller_t *poller = zpoller_new(dealer, NULL);
    zlistx_t *queue = zlistx_new();
    while (zhashx_size(waiting) && proto_loop_now_ms() < deadline) {
        if (!zlistx_size(queue) && !zpoller_wait(poller, (int)(deadline - proto_loop_now_ms())))
            continue;
        proto_msg_t *msg = NULL;
        S_CHECK(proto_batch_recv_one(dealer, queue, &msg) == 0, "malformed reply from the ledger");
        S_CHECK(proto_msg_type(msg) == PROTO_MSG_COMMIT, "got %s",
                proto_msg_type_name(proto_msg_type(msg)));
        S_CHECK(zhashx_lookup(sent, proto_msg_request_id(msg)), "COMMIT for unknown %s",
                proto_msg_request_id(msg));
        zhashx_delete(waiting, proto_msg_request_id(msg));
        proto_msg_destroy(&msg);
    }
    for (proto_msg_t *left = zlistx_detach(queue, NULL); left; left = zlistx_detach(queue, NULL))
        proto_msg_destroy(&left);
    zlistx_destroy(&queue);
    zpoller_destroy(&poller);
    return zhashx_size(waiting);
}

static void s_scenario(zsock_t *dealer, const char *prefix, int count, bool charge,
                       int64_t timeout_ms)
{
    zhashx_t *waiting = zhashx_new();
    s_send_range(dealer, prefix, count, charge, waiting);
    size_t left = s_wait_commits(dealer, waiting, s_sent, timeout_ms);
    S_CHECK(left == 0, "%s: %zu of %d entries not acknowledged", prefix, left, count);
    zhashx_destroy(&waiting);
}

#define S_PACE_BURST 2000   //  entries sent at once: transactions back to back
#define S_PACE_HOLD_MS 1000 //  how long the ledger stays busy (ledger.c, S_BUSY_HOLD_MS)

//  Sends `count` entries at once and returns the milliseconds until the
//  last COMMIT.
static int64_t s_timed(zsock_t *dealer, const char *prefix, int count)
{
    uint64_t started = proto_loop_now_ms();
    s_scenario(dealer, prefix, count, true, 60000);
    return (int64_t)(proto_loop_now_ms() - started);
}

//  How long a batch waits: ledger.batch_idle_delay_ms = idle_ms, or
//  ledger.batch_delay_ms = busy_ms for a second after the ledger's
//  transactions took ledger.batch_busy_db_pct of a quarter second (1 % in
//  ledger_test.sh, so that a burst makes it busy however fast the machine).
//  Timers never fire early, so the lower bounds are exact; the upper ones
//  leave seconds of slack for a loaded machine.
static int s_pace(zsock_t *dealer, int64_t idle_ms, int64_t busy_ms)
{
    int64_t alone = s_timed(dealer, "q1", 1);
    S_CHECK(alone >= idle_ms - 1 && alone < busy_ms - 1000,
            "a lone entry while idle took %" PRId64 " ms (idle %" PRId64 ", busy %" PRId64 ")",
            alone, idle_ms, busy_ms);
    //  Right after a burst of transactions, a lone entry waits the busy delay.
    int64_t burst = s_timed(dealer, "q2", S_PACE_BURST);
    int64_t busy = s_timed(dealer, "q3", 1);
    S_CHECK(busy >= busy_ms - 1,
            "a lone entry right after %d entries (%" PRId64 " ms) took %" PRId64
            " ms, not %" PRId64,
            S_PACE_BURST, burst, busy, busy_ms);
    //  A second later the ledger is idle again.
    zclock_sleep(S_PACE_HOLD_MS + 300);
    int64_t again = s_timed(dealer, "q4", 1);
    S_CHECK(again < busy_ms - 1000, "a lone entry after the busy spell took %" PRId64 " ms", again);
    s_check_balances("after the pace scenario");
    s_ledger_check("after the pace scenario");
    printf("ledger_probe: batches wait %" PRId64 " ms idle (%" PRId64 " and %" PRId64
           " ms seen), %" PRId64 " ms busy (%" PRId64 " ms seen)\n",
           idle_ms, alone, again, busy_ms, busy);
    return 0;
}

//  With ledger.batch_busy_idle_pct = 100 the ledger is busy once its host
//  was less than fully idle for a whole second: a child process keeps a CPU
//  busy from before that second until after the lone entry went.
static int s_pace_host(zsock_t *dealer, int64_t busy_ms)
{
    pid_t child = fork();
    S_CHECK(child >= 0, "fork");
    if (child == 0) {
        uint64_t until = proto_loop_now_ms() + 3500;
        volatile uint64_t spin = 0;
        while (proto_loop_now_ms() < until)
            spin++;
        _exit(0);
    }
    zclock_sleep(2200);
    int64_t busy = s_timed(dealer, "h1", 1);
    waitpid(child, NULL, 0);
    S_CHECK(busy >= busy_ms - 1,
            "a lone entry while the host was busy took %" PRId64 " ms, not %" PRId64, busy,
            busy_ms);
    printf("ledger_probe: with the host busy a batch waits %" PRId64 " ms (%" PRId64 " ms seen)\n",
           busy_ms, busy);
    return 0;
}

static void s_drain_replies(zsock_t *dealer)
{
    while (zsock_events(dealer) & ZMQ_POLLIN) {
        proto_msg_t *msg = NULL;
        proto_msg_recv(&msg, dealer);
        proto_msg_destroy(&msg);
    }
}

static int s_bench(zsock_t *dealer, int count)
{
    zhashx_t *waiting = zhashx_new();
    //  LEDGER_BENCH_MARK: a shell command run just before the first ENTRY and
    //  just after the last COMMIT (ledger_test.sh samples PostgreSQL's CPU
    //  time and WAL position with it, leaving out the ledger check after).
    const char *mark = getenv("LEDGER_BENCH_MARK");
    if (mark && *mark)
        S_CHECK(system(mark) == 0, "%s failed", mark);
    uint64_t started = proto_loop_now_us();
    s_send_range(dealer, "bench", count, false, waiting);
    size_t left = s_wait_commits(dealer, waiting, s_sent, 600000);
    double seconds = (double)(proto_loop_now_us() - started) / 1e6;
    S_CHECK(left == 0, "bench: %zu not acknowledged", left);
    if (mark && *mark)
        S_CHECK(system(mark) == 0, "%s failed", mark);
    printf("ledger bench: %d entries committed in %.3f s: %.0f entries/s\n", count, seconds,
           count / seconds);
    zhashx_destroy(&waiting);
    return 0;
}

int main(int argc, char **argv)
{
    S_CHECK(
        argc >= 2,
        "usage: ledger_probe ENDPOINT [bench COUNT | pace IDLE_MS BUSY_MS | pace-host BUSY_MS]");
    const char *url = getenv("TOLLGATE_TEST_DATABASE_URL");
    S_CHECK(url && *url, "TOLLGATE_TEST_DATABASE_URL is not set");
    proto_log_init("ledger_probe", PROTO_LOG_WARN);
    zsys_init();
    zsys_set_linger(0);
    char socket_error[512];
    S_CHECK(proto_socket_init_env("probe", socket_error, sizeof socket_error) == 0, "%s",
            socket_error);
    s_db = PQconnectdb(url);
    S_CHECK(PQstatus(s_db) == CONNECTION_OK, "connect: %s", PQerrorMessage(s_db));
    if (strcmp(argv[1], "check") == 0) {
        char *report = NULL;
        int rc = proto_ledger_check_run(s_db, &report);
        printf("%s", report);
        free(report);
        PQfinish(s_db);
        return rc == 0 ? 0 : 1;
    }
    s_sent = zhashx_new();
    zsock_t *dealer = proto_socket_new(ZMQ_DEALER);
    zsock_set_sndhwm(dealer, 1000000);
    zsock_set_rcvhwm(dealer, 1000000);
    S_CHECK(proto_socket_connect(dealer, "ledger", argv[1]) == 0, "connect %s", argv[1]);

    char name[64];
    for (int i = 0; i < S_ACCOUNTS; i++) {
        snprintf(name, sizeof name, "probe-%d-%d", (int)getpid(), i);
        s_account[i] = s_create_account(name, S_INITIAL_MICROS);
        s_expected[i] = S_INITIAL_MICROS;
    }
    s_ledger_check("before anything");

    bool pace = argc >= 5 && strcmp(argv[2], "pace") == 0;
    if (pace || (argc >= 4 && strcmp(argv[2], "pace-host") == 0)) {
        int rc = pace ? s_pace(dealer, atoll(argv[3]), atoll(argv[4]))
                      : s_pace_host(dealer, atoll(argv[3]));
        zsock_destroy(&dealer);
        zhashx_destroy(&s_sent);
        PQfinish(s_db);
        return rc;
    }
    if (argc >= 4 && strcmp(argv[2], "bench") == 0) {
        int rc = s_bench(dealer, atoi(argv[3]));
        s_ledger_check("after the bench");
        zsock_destroy(&dealer);
        zhashx_destroy(&s_sent);
        PQfinish(s_db);
        return rc;
    }

    //  1. A batch of N: N rows, journal balanced, balances moved.
    const int n = 5000;
    s_scenario(dealer, "p1", n, true, 30000);
    S_CHECK(s_query_int("SELECT count(*) FROM usage WHERE request_id LIKE 'p1-%%'") == n,
            "usage rows after p1");
    //  Only costed rows are journaled; i % 7 == 0 costs 0.
    int64_t costed = n - (n + 6) / 7;
    S_CHECK(s_query_int("SELECT count(*) FROM journal_requests WHERE request_id LIKE 'p1-%%'") ==
                costed,
            "journal entries after p1");
    S_CHECK(s_query_int("SELECT count(*) FROM usage WHERE request_id = 'p1-000005'"
                        " AND model = 'claude \"probe\", {odd}' AND upstream_model ="
                        " 'upstream-probe' AND latency_ms = 1234 AND provider_id = 4"
                        " AND tokens_in = 5 AND status = 200 AND attempts = 1"
                        " AND started_at > now() - interval '1 hour'") == 1,
            "row p1-000005 as sent");
    s_check_balances("after p1");
    s_ledger_check("after p1");
    printf("ledger_probe: %d entries committed, journal balanced\n", n);

    //  2. The same entries again: all acknowledged, nothing new, no money moved.
    s_scenario(dealer, "p1", n, false, 30000);
    S_CHECK(s_query_int("SELECT count(*) FROM usage WHERE request_id LIKE 'p1-%%'") == n,
            "usage rows after re-sending p1");
    s_check_balances("after re-sending p1");
    s_ledger_check("after re-sending p1");
    printf("ledger_probe: re-sent entries acknowledged, counted once\n");

    //  3. Garbage and a wrong message type are dropped; the ledger goes on.
    zstr_send(dealer, "not a tollgate message");
    proto_msg_t *ping = proto_msg_new(PROTO_MSG_PING);
    proto_msg_send(&ping, dealer);
    s_scenario(dealer, "p3", 10, true, 10000);
    s_check_balances("after p3");
    printf("ledger_probe: malformed input survived\n");

    //  4. PostgreSQL stops mid-run: nothing acknowledged until it is back.
    const char *stop = getenv("LEDGER_TEST_PG_STOP");
    const char *start = getenv("LEDGER_TEST_PG_START");
    if (stop && start) {
        PQfinish(s_db);
        s_db = NULL;
        S_CHECK(system(stop) == 0, "%s", stop);
        zhashx_t *waiting = zhashx_new();
        const int m = 300;
        s_send_range(dealer, "p4", m, true, waiting);
        //  Nothing can be committed, so nothing may be acknowledged: give it
        //  time to try (several retries) and see that no COMMIT comes.
        size_t left = s_wait_commits(dealer, waiting, s_sent, 1500);
        S_CHECK(left == (size_t)m, "%zu COMMITs while PostgreSQL was down", m - left);
        S_CHECK(system(start) == 0, "%s", start);
        left = s_wait_commits(dealer, waiting, s_sent, 30000);
        S_CHECK(left == 0, "%zu entries not acknowledged after PostgreSQL came back", left);
        zhashx_destroy(&waiting);
        s_db = PQconnectdb(url);
        S_CHECK(PQstatus(s_db) == CONNECTION_OK, "reconnect: %s", PQerrorMessage(s_db));
        S_CHECK(s_query_int("SELECT count(*) FROM usage WHERE request_id LIKE 'p4-%%'") == m,
                "usage rows after the outage");
        s_check_balances("after the outage");
        s_ledger_check("after the outage");
        printf("ledger_probe: %d entries held through a PostgreSQL outage, then committed\n", m);
    } else
        printf("ledger_probe: outage scenario skipped (no LEDGER_TEST_PG_STOP/START)\n");

    s_drain_replies(dealer);
    zsock_destroy(&dealer);
    zhashx_destroy(&s_sent);
    PQfinish(s_db);
    printf("ledger_probe: OK\n");
    return 0;
}
