/*  billing_probe: drives a running tollgate-billing (with a tollgate-ledger
    behind it) the way ingress and dispatch do, and checks PostgreSQL.
    Started by ledger/ledger_test.sh in its `billing` mode, which owns the
    database and both processes.

    usage: billing_probe BILLING_ENDPOINT BILLING_CONTROL_ENDPOINT [reload LEDGER_ENDPOINT]
    environment: TOLLGATE_TEST_DATABASE_URL  the migrated database

    With `reload` the probe is billing's ledger instead (bound at billing's
    ledger.bind) and checks only that a catalog reload between a ledger
    commit and its COMMIT leaves each charge subtracted once.

    Checks: every ADMIT refusal (unknown, revoked, disabled, expired key,
    disabled account, unknown/disabled/not-allowed model) with its code and
    message; admission's reserve (4096 output tokens, or the model's
    max_output_tokens, a max_tokens above it refused 400); SETTLE -> COMMIT with the cost priced by
    the documented rule (cache tokens, provider multiplier) written to
    usage, the journal and the balance; a re-sent SETTLE answered COMMIT
    without a second row; a failed request recorded at cost 0; the PONG
    status figures; a burst of settlements; the ledger check.
*/
#include "billing_grant.h"
#include "proto_crypto.h"
#include "proto_price.h"
#include "proto_ledger_check.h"
#include "proto_socket.h"
#include "proto_log.h"
#include "proto_loop.h"
#include "proto_batch.h"
#include "proto_msg.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_BALANCE 10000000LL
#define S_TIMEOUT_MS 10000
//  Settlements of 5000 micros on the main account by the limit checks.
#define S_LIMIT_SETTLES 5

#define S_CHECK(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "billing_probe: FAIL %s:%d: ", __FILE__, __LINE__);                    \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static PGconn *s_db;              //  probe's own connection
static zsock_t *s_billing;        //  DEALER to billing.bind, as ingress and dispatch
static zlistx_t *s_queue;         //  messages a BATCH brought that were not read yet
static int s_next_rid;            //  request id counter
static billing_grant_t *s_grants; //  billing's grants, from its secret_key

static int64_t s_query_int(const char *format, ...) __attribute__((format(printf, 1, 2)));

//  An account with an opening balance and its 'topup' journal entry, as
//  the admin API writes it. Returns its id.
static int64_t s_account(const char *name, long long balance)
{
    return s_query_int(
        "WITH a AS (INSERT INTO accounts (name, balance_micros) VALUES ('%s', %lld)"
        " RETURNING id), la AS (INSERT INTO ledger_accounts (account_id) SELECT id FROM a"
        " RETURNING id), e AS (INSERT INTO journal_entries (kind) VALUES ('topup') RETURNING id),"
        " l AS (INSERT INTO journal_lines (entry_id, ledger_account_id, amount_micros)"
        " SELECT e.id, la.id, %lld FROM e, la UNION ALL SELECT e.id, (SELECT id FROM"
        " ledger_accounts WHERE system_name = 'funding'), -%lld FROM e) SELECT id FROM a",
        name, balance, balance, balance);
}

//  One integer that a statement on `db` returns.
static int64_t s_vquery_int(PGconn *db, const char *format, va_list args)
{
    char sql[4096];
    vsnprintf(sql, sizeof sql, format, args);
    PGresult *result = PQexec(db, sql);
    S_CHECK(PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1, "%s: %s", sql,
            PQerrorMessage(db));
    int64_t value = strtoll(PQgetvalue(result, 0, 0), NULL, 10);
    PQclear(result);
    return value;
}

static int64_t s_query_int(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    int64_t value = s_vquery_int(s_db, format, args);
    va_end(args);
    return value;
}

static int64_t s_query_int_on(PGconn *db, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

static int64_t s_query_int_on(PGconn *db, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    int64_t value = s_vquery_int(db, format, args);
    va_end(args);
    return value;
}

//  An API key row; returns its id.
static uint64_t s_key(int64_t account, const char *status, const char *extra_columns,
                      const char *extra_values)
{
    static int counter;
    return (uint64_t)s_query_int(
        "INSERT INTO api_keys (account_id, key_hash, key_prefix, status%s) VALUES (%" PRId64
        ", encode(sha256('billing-probe-%d-%d'::bytea), 'hex'), 'tg-probe', '%s'%s) RETURNING id",
        extra_columns, account, (int)getpid(), counter++, status, extra_values);
}

//  Sends a message and waits for the reply with the same request id.
static proto_msg_t *s_request(proto_msg_t **msg_p)
{
    char rid[PROTO_MSG_RID_MAX + 1];
    snprintf(rid, sizeof rid, "%s", proto_msg_request_id(*msg_p));
    S_CHECK(proto_msg_send(msg_p, s_billing) == 0, "send");
    zpoller_t *poller = zpoller_new(s_billing, NULL);
    uint64_t deadline = proto_loop_now_ms() + S_TIMEOUT_MS;
    proto_msg_t *reply = NULL;
    while (!reply && proto_loop_now_ms() < deadline) {
        if (!zlistx_size(s_queue) && !zpoller_wait(poller, (int)(deadline - proto_loop_now_ms())))
            continue;
        S_CHECK(proto_batch_recv_one(s_billing, s_queue, &reply) == 0, "malformed reply");
        if (strcmp(proto_msg_request_id(reply), rid) != 0)
            proto_msg_destroy(&reply); //  a late answer to an earlier question
    }
    zpoller_destroy(&poller);
    S_CHECK(reply, "no reply to %s", rid);
    return reply;
}

static proto_msg_t *s_admit_out(uint64_t key_id, uint64_t account_id, const char *model,
                                uint64_t tokens_out, char *rid_out)
{
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_ADMIT);
    char rid[64];
    snprintf(rid, sizeof rid, "probe-%d-%06d", (int)getpid(), s_next_rid++);
    if (rid_out)
        strcpy(rid_out, rid);
    proto_msg_set_request_id(msg, rid);
    proto_msg_set_key_id(msg, key_id);
    proto_msg_set_account_id(msg, account_id);
    proto_msg_set_model(msg, model);
    proto_msg_set_tokens_in(msg, 1000);
    if (tokens_out)
        proto_msg_set_tokens_out(msg, tokens_out);
    proto_msg_t *reply = s_request(&msg);
    S_CHECK(proto_msg_type(reply) == PROTO_MSG_ADMIT_REPLY, "ADMIT answered %s",
            proto_msg_type_name(proto_msg_type(reply)));
    return reply;
}

static proto_msg_t *s_admit(uint64_t key_id, uint64_t account_id, const char *model, char *rid_out)
{
    return s_admit_out(key_id, account_id, model, 0, rid_out);
}

static void s_expect_refusal(uint64_t key_id, uint64_t account_id, const char *model,
                             uint64_t status, const char *code, const char *message_part)
{
    proto_msg_t *reply = s_admit(key_id, account_id, model, NULL);
    S_CHECK(proto_msg_status(reply) == status, "key %" PRIu64 " model %s: status %" PRIu64, key_id,
            model, proto_msg_status(reply));
    S_CHECK(strcmp(proto_msg_error_code(reply), code) == 0, "error_code %s",
            proto_msg_error_code(reply));
    S_CHECK(strstr(proto_msg_error_message(reply), message_part), "message '%s' lacks '%s'",
            proto_msg_error_message(reply), message_part);
    proto_msg_destroy(&reply);
}

static proto_msg_t *s_settle_msg(const char *rid, uint64_t key_id, uint64_t account_id,
                                 uint64_t provider_key_id, uint64_t status)
{
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_SETTLE);
    proto_msg_set_request_id(msg, rid);
    proto_msg_set_account_id(msg, account_id);
    proto_msg_set_key_id(msg, key_id);
    proto_msg_set_model(msg, "probe-model");
    proto_msg_set_provider_key_id(msg, provider_key_id);
    proto_msg_set_upstream_model(msg, "upstream-x");
    proto_msg_set_status(msg, status);
    proto_msg_set_started_us(msg, proto_loop_wall_us());
    if (status < 400) {
        proto_msg_set_tokens_in(msg, 1000);
        proto_msg_set_tokens_out(msg, 500);
        proto_msg_set_tokens_cache_read(msg, 2000);
    }
    //  Billing's voucher for the request, as its ADMIT_REPLY gave it (the
    //  burst's were never admitted by this process: as after a restart).
    char grant[BILLING_GRANT_MAX + 1];
    billing_grant_admit(s_grants, rid, account_id, key_id, grant);
    proto_msg_set_grant(msg, grant);
    return msg;
}

static void s_expect_commit(proto_msg_t **settle_p)
{
    proto_msg_t *reply = s_request(settle_p);
    S_CHECK(proto_msg_type(reply) == PROTO_MSG_COMMIT, "SETTLE answered %s",
            proto_msg_type_name(proto_msg_type(reply)));
    proto_msg_destroy(&reply);
}

static char *s_pong(const char *control)
{
    zsock_t *dealer = proto_socket_client(ZMQ_DEALER, "billing.control", control);
    S_CHECK(dealer, "connect %s", control);
    proto_msg_t *ping = proto_msg_new(PROTO_MSG_PING);
    proto_msg_send(&ping, dealer);
    zpoller_t *poller = zpoller_new(dealer, NULL);
    S_CHECK(zpoller_wait(poller, S_TIMEOUT_MS), "no PONG");
    proto_msg_t *pong = NULL;
    S_CHECK(proto_msg_recv(&pong, dealer) == 0, "bad PONG");
    char *meta = strdup(proto_msg_meta(pong));
    proto_msg_destroy(&pong);
    zpoller_destroy(&poller);
    zsock_destroy(&dealer);
    return meta;
}

//  What the probe made and learned, shared by its steps.
typedef struct {
    int pid;               //  ours, in names and request ids
    int64_t account;       //  the main account
    int64_t poor;          //  an account with room for one reservation
    int64_t closed;        //  a disabled account
    uint64_t provider_key; //  at half price (multiplier 0.5)
    uint64_t key_ok, key_revoked, key_disabled, key_expired, key_limited, key_closed; //  keys
    uint64_t key_rpm, key_tpm, key_one, key_capped, key_poor; //  keys with limits
    char rid[64];    //  the request admitted first, settled later
    int64_t reserve; //  what its admission reserved
} s_world_t;

//  The configuration, as the admin API would write it: accounts with their opening
//  'topup' entries, keys in every state, models, a provider key at half price, in one
//  transaction so that billing's reload on the NOTIFY sees all of it or none.
static void s_seed(s_world_t *w)
{
    char name[64];
    w->pid = (int)getpid();
    PQclear(PQexec(s_db, "BEGIN"));
    snprintf(name, sizeof name, "bp-%d", w->pid);
    w->account = s_account(name, S_BALANCE);
    //  Enough for one reservation of 43460 micros, not two.
    snprintf(name, sizeof name, "bp-poor-%d", w->pid);
    w->poor = s_account(name, 50000);
    w->closed = s_query_int("INSERT INTO accounts (name, status) VALUES ('bp-off-%d',"
                            " 'disabled') RETURNING id",
                            w->pid);
    s_query_int("WITH m AS (INSERT INTO models (name, price_in_micros, price_out_micros,"
                " price_cache_read_micros) VALUES ('probe-model', 2500000, 10000000, 1250000),"
                " ('probe-other', 0, 0, 0) RETURNING 1) SELECT count(*) FROM m");
    s_query_int("INSERT INTO models (name, status) VALUES ('probe-off', 'disabled') RETURNING 1");
    //  probe-model has no max_output_tokens (4096 reserved); probe-capped has 1000.
    s_query_int("INSERT INTO models (name, price_in_micros, price_out_micros, max_output_tokens)"
                " VALUES ('probe-capped', 2500000, 10000000, 1000) RETURNING 1");
    int64_t provider = s_query_int("INSERT INTO providers (name, protocol, base_url) VALUES"
                                   " ('probe-provider', 'openai', 'http://127.0.0.1:9')"
                                   " RETURNING id");
    w->provider_key = (uint64_t)s_query_int(
        "INSERT INTO provider_keys (provider_id, secret_sealed, secret_nonce, multiplier_ppm)"
        " VALUES (%" PRId64 ", '\\x00', '\\x00', 500000) RETURNING id",
        provider);
    w->key_ok = s_key(w->account, "active", "", "");
    w->key_revoked = s_key(w->account, "revoked", "", "");
    w->key_disabled = s_key(w->account, "disabled", "", "");
    w->key_expired = s_key(w->account, "active", ", expires_at", ", now() - interval '1 minute'");
    w->key_limited = s_key(w->account, "active", ", allowed_models", ", '{probe-other}'");
    w->key_closed = s_key(w->closed, "active", "", "");
    w->key_rpm = s_key(w->account, "active", ", rpm_limit", ", 2");
    w->key_tpm = s_key(w->account, "active", ", tpm_limit", ", 1500");
    w->key_one = s_key(w->account, "active", ", concurrency_limit", ", 1");
    w->key_capped = s_key(w->account, "active", ", daily_spend_micros", ", 40000");
    w->key_poor = s_key(w->poor, "active", "", "");
    PGresult *committed = PQexec(s_db, "COMMIT");
    S_CHECK(PQresultStatus(committed) == PGRES_COMMAND_OK, "COMMIT: %s", PQerrorMessage(s_db));
    PQclear(committed);
}

//  Billing has the new configuration once the new key is admitted (one question per
//  try, each waiting for its answer); the admission reserves by the price rule.
static void s_admitted(s_world_t *w)
{
    proto_msg_t *reply = NULL;
    uint64_t deadline = proto_loop_now_ms() + S_TIMEOUT_MS;
    do {
        proto_msg_destroy(&reply);
        reply = s_admit(w->key_ok, (uint64_t)w->account, "probe-model", w->rid);
    } while (proto_msg_status(reply) != 200 && proto_loop_now_ms() < deadline);
    S_CHECK(proto_msg_status(reply) == 200, "never admitted: %s", proto_msg_error_message(reply));
    //  Reserve: 1000 in at $2.50/M + 4096 out at $10/M, rounded up (probe-model
    //  has no max_output_tokens, so the request's missing max_tokens is 4096).
    proto_model_t model = {.price_in_micros = 2500000, .price_out_micros = 10000000};
    w->reserve = proto_price_reserve(&model, 1000, 0);
    S_CHECK(w->reserve == 43460, "reserve formula moved: %" PRId64, w->reserve);
    S_CHECK(proto_msg_reserve_micros(reply) == w->reserve, "reserve %" PRId64,
            proto_msg_reserve_micros(reply));
    proto_msg_destroy(&reply);
    printf("billing_probe: admitted, %" PRId64 " micros reserved\n", w->reserve);
}

//  A key newer than billing's catalog (its insert notified nobody, as when
//  the ADMIT of a key created a moment ago outruns the catalog's reload) is
//  admitted: billing holds the ADMIT, reloads and decides with the key.
static void s_new_key(s_world_t *w)
{
    PGresult *quiet = PQexec(s_db, "SET session_replication_role = replica");
    S_CHECK(PQresultStatus(quiet) == PGRES_COMMAND_OK, "triggers off: %s", PQerrorMessage(s_db));
    PQclear(quiet);
    char name[64];
    snprintf(name, sizeof name, "bp-new-%d", w->pid);
    uint64_t account = (uint64_t)s_account(name, S_BALANCE);
    uint64_t key = s_key((int64_t)account, "active", "", "");
    PQclear(PQexec(s_db, "SET session_replication_role = DEFAULT"));
    char rid[PROTO_MSG_RID_MAX + 1];
    proto_msg_t *reply = s_admit(key, account, "probe-model", rid);
    S_CHECK(proto_msg_status(reply) == 200, "a new key's first ADMIT: %" PRIu64 " %s",
            proto_msg_status(reply), proto_msg_error_message(reply));
    proto_msg_destroy(&reply);
    proto_msg_t *settle = s_settle_msg(rid, key, account, w->provider_key, 502);
    s_expect_commit(&settle);
    printf("billing_probe: a key newer than the catalog is admitted on its first ADMIT\n");
}

//  Every refusal with its code and message.
static void s_refusals(s_world_t *w)
{
    proto_msg_t *reply;
    s_expect_refusal(999999999, (uint64_t)w->account, "probe-model", 401, "invalid_api_key",
                     "not known");
    s_expect_refusal(w->key_revoked, (uint64_t)w->account, "probe-model", 401, "invalid_api_key",
                     "revoked");
    s_expect_refusal(w->key_disabled, (uint64_t)w->account, "probe-model", 401, "invalid_api_key",
                     "disabled");
    s_expect_refusal(w->key_expired, (uint64_t)w->account, "probe-model", 401, "invalid_api_key",
                     "expired");
    s_expect_refusal(w->key_closed, (uint64_t)w->closed, "probe-model", 401, "invalid_api_key",
                     "account is disabled");
    s_expect_refusal(w->key_ok, (uint64_t)w->account, "nope", 404, "model_not_found",
                     "The model 'nope' does not exist or you do not have access to it.");
    s_expect_refusal(w->key_ok, (uint64_t)w->account, "probe-off", 404, "model_not_found",
                     "probe-off");
    s_expect_refusal(w->key_limited, (uint64_t)w->account, "probe-model", 403, "model_not_allowed",
                     "not allowed to use the model 'probe-model'");
    reply = s_admit(w->key_limited, (uint64_t)w->account, "probe-other", NULL);
    S_CHECK(proto_msg_status(reply) == 200 && proto_msg_reserve_micros(reply) == 0,
            "limited key on its own model");
    proto_msg_destroy(&reply);
    //  A model's max_output_tokens (from PostgreSQL): the reservation of a
    //  request with no max_tokens is 1000 in at $2.50/M + 1000 out at $10/M;
    //  a max_tokens above it is refused 400. The admitted one is released by
    //  a failed settlement (cost 0), so the figures further on do not move.
    char capped[64];
    reply = s_admit(w->key_ok, (uint64_t)w->account, "probe-capped", capped);
    S_CHECK(proto_msg_status(reply) == 200 && proto_msg_reserve_micros(reply) == 12500,
            "probe-capped: %" PRIu64 " reserve %" PRId64, proto_msg_status(reply),
            proto_msg_reserve_micros(reply));
    proto_msg_destroy(&reply);
    reply = s_admit_out(w->key_ok, (uint64_t)w->account, "probe-capped", 1001, NULL);
    S_CHECK(proto_msg_status(reply) == 400 &&
                strcmp(proto_msg_error_code(reply), "invalid_value") == 0 &&
                strstr(proto_msg_error_message(reply), "max_tokens is too large: 1001"),
            "probe-capped max_tokens 1001: %" PRIu64 " %s", proto_msg_status(reply),
            proto_msg_error_message(reply));
    proto_msg_destroy(&reply);
    proto_msg_t *release =
        s_settle_msg(capped, w->key_ok, (uint64_t)w->account, w->provider_key, 502);
    s_expect_commit(&release);
    printf("billing_probe: refusals answered with their codes\n");
}

//  Limits. Each admission that passes is settled at the end, so the PONG figures
//  further on see no reservation left.
static void s_limits(s_world_t *w)
{
    proto_msg_t *reply;
    char held[8][64];
    int held_count = 0;
    uint64_t held_key[8];
    uint64_t held_account[8];
#define S_HOLD(key, acct)                                                                          \
    do {                                                                                           \
        reply = s_admit(key, (uint64_t)(acct), "probe-model", held[held_count]);                   \
        S_CHECK(proto_msg_status(reply) == 200, "key %" PRIu64 ": %s", (uint64_t)(key),            \
                proto_msg_error_message(reply));                                                   \
        proto_msg_destroy(&reply);                                                                 \
        held_key[held_count] = key;                                                                \
        held_account[held_count++] = (uint64_t)(acct);                                             \
    } while (0)
    //  rpm 2: the third request in the same minute waits ~30 s.
    S_HOLD(w->key_rpm, w->account);
    S_HOLD(w->key_rpm, w->account);
    reply = s_admit(w->key_rpm, (uint64_t)w->account, "probe-model", NULL);
    S_CHECK(proto_msg_status(reply) == 429 &&
                strcmp(proto_msg_error_code(reply), "rate_limit_exceeded") == 0,
            "rpm: %" PRIu64 " %s", proto_msg_status(reply), proto_msg_error_code(reply));
    S_CHECK(proto_msg_retry_after_ms(reply) > 25000 && proto_msg_retry_after_ms(reply) <= 30000,
            "rpm retry after %" PRIu64, proto_msg_retry_after_ms(reply));
    proto_msg_destroy(&reply);
    //  tpm 1500: 1000 estimated tokens pass, the next 1000 do not.
    S_HOLD(w->key_tpm, w->account);
    s_expect_refusal(w->key_tpm, (uint64_t)w->account, "probe-model", 429, "token_limit_exceeded",
                     "1500 tokens per minute");
    //  One at a time.
    S_HOLD(w->key_one, w->account);
    s_expect_refusal(w->key_one, (uint64_t)w->account, "probe-model", 429,
                     "concurrency_limit_exceeded", "limit is 1 at a time");
    //  A daily cap below one reservation.
    s_expect_refusal(w->key_capped, (uint64_t)w->account, "probe-model", 429,
                     "spend_limit_exceeded", "Daily spend limit of 0.040000");
    //  Balance: the first reservation fits, the second does not.
    S_HOLD(w->key_poor, w->poor);
    s_expect_refusal(w->key_poor, (uint64_t)w->poor, "probe-model", 402, "insufficient_balance",
                     "0.006540 USD available");
    //  Settling releases: the one-at-a-time key and the w->poor w->account
    //  admit again (the w->poor one's settlement cost 5000 of 50000).
    for (int i = 0; i < held_count; i++) {
        proto_msg_t *release =
            s_settle_msg(held[i], held_key[i], held_account[i], w->provider_key, 200);
        s_expect_commit(&release);
    }
    held_count = 0;
    S_HOLD(w->key_one, w->account);
    S_HOLD(w->key_poor, w->poor);
    for (int i = 0; i < held_count; i++) {
        proto_msg_t *release =
            s_settle_msg(held[i], held_key[i], held_account[i], w->provider_key, 200);
        s_expect_commit(&release);
    }
    S_CHECK(s_query_int("SELECT balance_micros FROM accounts WHERE id = %" PRId64, w->poor) ==
                50000 - 2 * 5000,
            "poor account's balance");
    printf("billing_probe: rpm, tpm, concurrency, daily cap and balance refusals\n");
}

//  Billing's figures for the account, as its PONG gives them.
static void s_expect_book(const char *control, int64_t account, int64_t balance, int64_t reserved,
                          int64_t pending, const char *when)
{
    char expect[256];
    snprintf(expect, sizeof expect,
             "\"id\":%" PRId64 ",\"balance_micros\":%" PRId64 ",\"reserved_micros\":%" PRId64
             ",\"pending_micros\":%" PRId64,
             account, balance, reserved, pending);
    char *meta = s_pong(control);
    S_CHECK(strstr(meta, expect), "%s: PONG %s lacks %s", when, meta, expect);
    free(meta);
}

//  Billing's figures with one reservation held, then its settlement: priced, re-sent
//  without a second row, and a failed request recorded at cost 0.
static void s_settlement(s_world_t *w, const char *control)
{
    s_expect_book(control, w->account, S_BALANCE - 5000LL * S_LIMIT_SETTLES, w->reserve, 0,
                  "before the settlement");

    //  Settle the admitted request: (1000 x 2.5 + 2000 x 1.25 + 500 x 10)
    //  = 10000 micros at list price, x 0.5 for the provider key.
    proto_msg_t *settle =
        s_settle_msg(w->rid, w->key_ok, (uint64_t)w->account, w->provider_key, 200);
    s_expect_commit(&settle);
    S_CHECK(s_query_int("SELECT cost_micros FROM usage WHERE request_id = '%s'", w->rid) == 5000,
            "cost of %s", w->rid);
    S_CHECK(s_query_int("SELECT balance_micros FROM accounts WHERE id = %" PRId64, w->account) ==
                S_BALANCE - 5000 * (1 + S_LIMIT_SETTLES),
            "balance after the first settlement");
    //  Re-sent (dispatch did not see the COMMIT): COMMIT again, nothing new.
    settle = s_settle_msg(w->rid, w->key_ok, (uint64_t)w->account, w->provider_key, 200);
    s_expect_commit(&settle);
    S_CHECK(s_query_int("SELECT count(*) FROM usage WHERE request_id = '%s'", w->rid) == 1,
            "one row");
    //  A failed request with no tokens: recorded, costs nothing.
    char failed[64];
    snprintf(failed, sizeof failed, "probe-%d-failed", w->pid);
    settle = s_settle_msg(failed, w->key_ok, (uint64_t)w->account, w->provider_key, 502);
    s_expect_commit(&settle);
    S_CHECK(s_query_int("SELECT cost_micros FROM usage WHERE request_id = '%s' AND status = 502",
                        failed) == 0,
            "failed request row");
    printf("billing_probe: settled at 5000 micros, re-send and failure recorded once\n");
}

//  SETTLEs no admission vouches for (docs/billing.md, "Who may settle"):
//  none is answered, none leaves a usage row or moves the balance.
static void s_forgeries(s_world_t *w)
{
    int64_t balance =
        s_query_int("SELECT balance_micros FROM accounts WHERE id = %" PRId64, w->account);
    char rid[4][64], other[BILLING_GRANT_MAX + 1];
    for (int i = 0; i < 4; i++) {
        snprintf(rid[i], sizeof rid[i], "probe-%d-forged-%d", w->pid, i);
        proto_msg_t *settle =
            s_settle_msg(rid[i], w->key_ok, (uint64_t)w->account, w->provider_key, 200);
        if (i == 0)
            proto_msg_set_grant(settle, ""); //  an empty one
        else if (i == 1) {
            billing_grant_admit(s_grants, "another-request", (uint64_t)w->account, w->key_ok,
                                other);
            proto_msg_set_grant(settle, other);
        } else if (i == 2) {
            billing_grant_t *stranger = billing_grant_new("");
            billing_grant_admit(stranger, rid[i], (uint64_t)w->account, w->key_ok, other);
            billing_grant_destroy(&stranger);
            proto_msg_set_grant(settle, other);
        } else {
            //  The grant of the poor account's request, settled on the main one.
            billing_grant_admit(s_grants, rid[i], (uint64_t)w->poor, w->key_poor, other);
            proto_msg_set_grant(settle, other);
        }
        S_CHECK(proto_msg_send(&settle, s_billing) == 0, "send");
    }
    zpoller_t *poller = zpoller_new(s_billing, NULL);
    uint64_t deadline = proto_loop_now_ms() + 1500;
    while (proto_loop_now_ms() < deadline) {
        if (!zlistx_size(s_queue) && !zpoller_wait(poller, (int)(deadline - proto_loop_now_ms())))
            continue;
        proto_msg_t *reply = NULL;
        S_CHECK(proto_batch_recv_one(s_billing, s_queue, &reply) == 0, "malformed");
        S_CHECK(strstr(proto_msg_request_id(reply), "-forged-") == NULL,
                "a forged SETTLE was answered: %s", proto_msg_request_id(reply));
        proto_msg_destroy(&reply);
    }
    zpoller_destroy(&poller);
    S_CHECK(s_query_int("SELECT count(*) FROM usage WHERE request_id LIKE 'probe-%d-forged-%%'",
                        w->pid) == 0,
            "a forged SETTLE left a usage row");
    S_CHECK(s_query_int("SELECT balance_micros FROM accounts WHERE id = %" PRId64, w->account) ==
                balance,
            "a forged SETTLE moved the balance");
    printf("billing_probe: 4 forged SETTLEs dropped, nothing charged\n");
}

//  Garbage dropped, then a burst of settlements as dispatch would send after many
//  requests; billing's own figures and the ledger check after it.
static void s_burst(s_world_t *w, const char *control)
{
    proto_msg_t *reply = NULL;
    //  Garbage is dropped, and billing goes on.
    zstr_send(s_billing, "garbage");

    //  A burst, as dispatch would send after many requests.
    const int burst = 2000;
    zhashx_t *waiting = zhashx_new();
    for (int i = 0; i < burst; i++) {
        char burst_rid[64];
        snprintf(burst_rid, sizeof burst_rid, "probe-%d-burst-%05d", w->pid, i);
        zhashx_insert(waiting, burst_rid, (void *)1);
        proto_msg_t *settle =
            s_settle_msg(burst_rid, w->key_ok, (uint64_t)w->account, w->provider_key, 200);
        S_CHECK(proto_msg_send(&settle, s_billing) == 0, "send");
    }
    zpoller_t *poller = zpoller_new(s_billing, NULL);
    uint64_t deadline = proto_loop_now_ms() + 30000;
    while (zhashx_size(waiting) && proto_loop_now_ms() < deadline) {
        if (!zlistx_size(s_queue) && !zpoller_wait(poller, (int)(deadline - proto_loop_now_ms())))
            continue;
        S_CHECK(proto_batch_recv_one(s_billing, s_queue, &reply) == 0, "malformed");
        S_CHECK(proto_msg_type(reply) == PROTO_MSG_COMMIT, "burst answered %s",
                proto_msg_type_name(proto_msg_type(reply)));
        zhashx_delete(waiting, proto_msg_request_id(reply));
        proto_msg_destroy(&reply);
    }
    zpoller_destroy(&poller);
    S_CHECK(zhashx_size(waiting) == 0, "%zu of the burst not committed", zhashx_size(waiting));
    zhashx_destroy(&waiting);
    int64_t expected = S_BALANCE - 5000LL * (burst + 1 + S_LIMIT_SETTLES);
    S_CHECK(s_query_int("SELECT balance_micros FROM accounts WHERE id = %" PRId64, w->account) ==
                expected,
            "balance after the burst");
    printf("billing_probe: a burst of %d settlements committed\n", burst);

    //  Billing's own figures: the balance moved, nothing reserved or pending
    //  for the w->account (the limited key's reservation was 0).
    s_expect_book(control, w->account, expected, 0, 0, "after the burst");
    char *meta = s_pong(control);
    S_CHECK(strstr(meta, "\"outbox\":0"), "PONG %s: outbox not empty", meta);
    free(meta);

    char *report = NULL;
    S_CHECK(proto_ledger_check_run(s_db, &report) == 0, "ledger check:\n%s", report);
    free(report);
}

//  --------------------------------------------------------------------------
//  Mode "reload": the probe is billing's ledger too, so it can hold a
//  COMMIT while billing loads a new catalog. Billing must subtract each
//  charge from the balance once, whether the catalog read the balance
//  after the ledger's transaction or while it was still running.

static zsock_t *s_ledger;       //  ROUTER at billing's ledger.bind
static zlistx_t *s_ledger_seen; //  messages a BATCH brought that were not read yet

static uint64_t s_loads(const char *control)
{
    char *meta = s_pong(control);
    const char *at = strstr(meta, "\"catalog_loads\":");
    S_CHECK(at, "PONG %s lacks catalog_loads", meta);
    uint64_t loads = strtoull(at + strlen("\"catalog_loads\":"), NULL, 10);
    free(meta);
    return loads;
}

//  Notifies as a configuration change does and waits until billing has a
//  catalog loaded after the notification.
static void s_reload(const char *control)
{
    uint64_t before = s_loads(control);
    PQclear(PQexec(s_db, "NOTIFY tollgate_config, 'accounts'"));
    uint64_t deadline = proto_loop_now_ms() + S_TIMEOUT_MS;
    while (s_loads(control) == before) {
        S_CHECK(proto_loop_now_ms() < deadline, "billing did not reload");
        zclock_sleep(5);
    }
}

//  The next ENTRY billing sends its ledger, which must be for rid. PINGs
//  (billing watching its ledgers) are answered on the way, SPANs dropped.
static proto_msg_t *s_next_entry(const char *rid)
{
    zpoller_t *poller = zpoller_new(s_ledger, NULL);
    proto_msg_t *entry = NULL;
    uint64_t deadline = proto_loop_now_ms() + S_TIMEOUT_MS;
    while (!entry && proto_loop_now_ms() < deadline) {
        if (!zlistx_size(s_ledger_seen) &&
            !zpoller_wait(poller, (int)(deadline - proto_loop_now_ms())))
            continue;
        S_CHECK(proto_batch_recv_one(s_ledger, s_ledger_seen, &entry) == 0, "malformed ENTRY");
        if (proto_msg_type(entry) == PROTO_MSG_PING) {
            proto_msg_t *pong = proto_msg_reply(entry, PROTO_MSG_PONG);
            proto_msg_set_instance(pong, "probe-ledger");
            proto_msg_send(&pong, s_ledger);
        }
        if (proto_msg_type(entry) != PROTO_MSG_ENTRY)
            proto_msg_destroy(&entry);
    }
    zpoller_destroy(&poller);
    S_CHECK(entry, "no ENTRY for %s", rid);
    S_CHECK(strcmp(proto_msg_request_id(entry), rid) == 0, "ENTRY for %s, not %s",
            proto_msg_request_id(entry), rid);
    return entry;
}

//  Admits and settles a request at 5000 micros; returns the ENTRY billing
//  sent its ledger for it.
static proto_msg_t *s_settle_to_entry(s_world_t *w)
{
    char rid[64];
    proto_msg_t *reply = s_admit(w->key_ok, (uint64_t)w->account, "probe-model", rid);
    S_CHECK(proto_msg_status(reply) == 200, "not admitted: %s", proto_msg_error_message(reply));
    proto_msg_destroy(&reply);
    proto_msg_t *settle = s_settle_msg(rid, w->key_ok, (uint64_t)w->account, w->provider_key, 200);
    S_CHECK(proto_msg_send(&settle, s_billing) == 0, "send");
    proto_msg_t *entry = s_next_entry(rid);
    S_CHECK(proto_msg_cost_micros(entry) == 5000, "cost %" PRId64, proto_msg_cost_micros(entry));
    return entry;
}

//  What the ledger does with an entry's money, on `db`, in a transaction
//  left open; returns its id (pg_current_xact_id).
static uint64_t s_charge_open(PGconn *db, const proto_msg_t *entry)
{
    PQclear(PQexec(db, "BEGIN"));
    return (uint64_t)s_query_int_on(db,
                                    "UPDATE accounts SET balance_micros = balance_micros - %" PRId64
                                    " WHERE id = %" PRIu64
                                    " RETURNING pg_current_xact_id()::text::bigint",
                                    proto_msg_cost_micros(entry), proto_msg_account_id(entry));
}

static void s_commit_open(PGconn *db)
{
    PGresult *done = PQexec(db, "COMMIT");
    S_CHECK(PQresultStatus(done) == PGRES_COMMAND_OK, "COMMIT: %s", PQerrorMessage(db));
    PQclear(done);
}

//  Answers the ENTRY as the ledger does and waits for billing to pass the
//  COMMIT on to the settler (the probe).
static void s_acknowledge(proto_msg_t **entry_p, uint64_t txid)
{
    proto_msg_t *commit = proto_msg_reply(*entry_p, PROTO_MSG_COMMIT);
    proto_msg_set_txid(commit, txid);
    S_CHECK(proto_msg_send(&commit, s_ledger) == 0, "send COMMIT");
    zpoller_t *poller = zpoller_new(s_billing, NULL);
    proto_msg_t *passed = NULL;
    if (zlistx_size(s_queue) || zpoller_wait(poller, S_TIMEOUT_MS))
        S_CHECK(proto_batch_recv_one(s_billing, s_queue, &passed) == 0, "malformed COMMIT");
    zpoller_destroy(&poller);
    S_CHECK(passed && proto_msg_type(passed) == PROTO_MSG_COMMIT &&
                strcmp(proto_msg_request_id(passed), proto_msg_request_id(*entry_p)) == 0,
            "COMMIT of %s not passed on", proto_msg_request_id(*entry_p));
    proto_msg_destroy(&passed);
    proto_msg_destroy(entry_p);
}

static void s_reload_mode(s_world_t *w, const char *control, const char *url)
{
    //  The admission's reservation given back (a failed request, no cost).
    proto_msg_t *settle =
        s_settle_msg(w->rid, w->key_ok, (uint64_t)w->account, w->provider_key, 502);
    S_CHECK(proto_msg_send(&settle, s_billing) == 0, "send");
    proto_msg_t *failed = s_next_entry(w->rid);
    s_acknowledge(&failed, 0);
    s_expect_book(control, w->account, S_BALANCE, 0, 0, "admitted");
    //  Committed, then a reload, then the COMMIT: the catalog holds the
    //  charge already.
    proto_msg_t *entry = s_settle_to_entry(w);
    uint64_t txid = s_charge_open(s_db, entry);
    s_commit_open(s_db);
    s_reload(control);
    s_expect_book(control, w->account, S_BALANCE - 5000, 0, 5000, "reloaded after the commit");
    s_acknowledge(&entry, txid);
    s_expect_book(control, w->account, S_BALANCE - 5000, 0, 0, "COMMIT seen by the catalog");
    printf("billing_probe: a charge the catalog read is not subtracted again\n");

    //  A reload while the ledger's transaction runs: the catalog does not
    //  hold the charge, so the COMMIT subtracts it.
    PGconn *ledger_db = PQconnectdb(url);
    S_CHECK(PQstatus(ledger_db) == CONNECTION_OK, "connect: %s", PQerrorMessage(ledger_db));
    entry = s_settle_to_entry(w);
    txid = s_charge_open(ledger_db, entry);
    s_reload(control);
    s_commit_open(ledger_db);
    s_expect_book(control, w->account, S_BALANCE - 5000, 0, 5000, "reloaded during the commit");
    s_acknowledge(&entry, txid);
    s_expect_book(control, w->account, S_BALANCE - 10000, 0, 0, "COMMIT not seen by the catalog");
    PQfinish(ledger_db);
    //  And the next catalog agrees with both.
    s_reload(control);
    s_expect_book(control, w->account, S_BALANCE - 10000, 0, 0, "reloaded again");
    printf("billing_probe: a charge committed during a reload is subtracted once\n");
}

int main(int argc, char **argv)
{
    bool reload = argc == 5 && strcmp(argv[3], "reload") == 0;
    S_CHECK(argc == 3 || reload,
            "usage: billing_probe BILLING_ENDPOINT CONTROL_ENDPOINT [reload LEDGER_ENDPOINT]");
    const char *url = getenv("TOLLGATE_TEST_DATABASE_URL");
    S_CHECK(url && *url, "TOLLGATE_TEST_DATABASE_URL is not set");
    proto_log_init("billing_probe", PROTO_LOG_WARN);
    zsys_init();
    zsys_set_linger(0);
    char socket_error[512];
    S_CHECK(proto_socket_init_env("probe", socket_error, sizeof socket_error) == 0, "%s",
            socket_error);
    s_db = PQconnectdb(url);
    S_CHECK(PQstatus(s_db) == CONNECTION_OK, "connect: %s", PQerrorMessage(s_db));

    const char *secret = getenv("TOLLGATE_TEST_SECRET_KEY");
    S_CHECK(proto_crypto_init() == 0, "libsodium");
    s_grants = billing_grant_new(secret);
    S_CHECK(billing_grant_durable(s_grants), "TOLLGATE_TEST_SECRET_KEY is not 64 hex digits");
    s_world_t world = {0};
    s_seed(&world);

    s_billing = proto_socket_new(ZMQ_DEALER);
    s_queue = zlistx_new();
    zsock_set_rcvhwm(s_billing, 100000);
    zsock_set_sndhwm(s_billing, 100000);
    S_CHECK(proto_socket_connect(s_billing, "billing", argv[1]) == 0, "connect %s", argv[1]);
    if (reload) {
        s_ledger = proto_socket_server(ZMQ_ROUTER, argv[4]);
        S_CHECK(s_ledger, "bind %s", argv[4]);
        s_ledger_seen = zlistx_new();
        s_admitted(&world);
        s_reload_mode(&world, argv[2], url);
        zsock_destroy(&s_ledger);
        zlistx_destroy(&s_ledger_seen);
    } else {
        s_admitted(&world);
        s_refusals(&world);
        s_new_key(&world);
        s_limits(&world);
        s_settlement(&world, argv[2]);
        s_forgeries(&world);
        s_burst(&world, argv[2]);
    }
    zsock_destroy(&s_billing);
    billing_grant_destroy(&s_grants);
    PQfinish(s_db);
    printf("billing_probe: OK\n");
    return 0;
}
