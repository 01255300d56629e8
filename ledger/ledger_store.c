#include "ledger_store.h"
#include "proto_catalog.h"
#include "proto_text.h"
#include "proto_check.h"
#include "proto_db.h"
#include "proto_trace.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

//  Latest timestamp PostgreSQL's timestamptz takes comfortably: 9999-12-31.
#define S_MAX_STARTED_US 253402300799999999LL
#define S_COLUMNS 21

//  --------------------------------------------------------------------------
//  Fitting an ENTRY to the usage table

static int64_t s_fit_i64(uint64_t value)
{
    return value > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)value;
}

static int32_t s_fit_i32(uint64_t value)
{
    return value > (uint64_t)INT32_MAX ? INT32_MAX : (int32_t)value;
}

//  Length of the valid UTF-8 sequence at text, or 0 when it is not one.
static size_t s_utf8_length(const unsigned char *text)
{
    unsigned char lead = text[0];
    size_t length;
    uint32_t point;
    if (lead < 0x80)
        return 1;
    else if (lead >= 0xC2 && lead <= 0xDF)
        length = 2, point = lead & 0x1F;
    else if (lead >= 0xE0 && lead <= 0xEF)
        length = 3, point = lead & 0x0F;
    else if (lead >= 0xF0 && lead <= 0xF4)
        length = 4, point = lead & 0x07;
    else
        return 0;
    for (size_t i = 1; i < length; i++) {
        if ((text[i] & 0xC0) != 0x80)
            return 0;
        point = (point << 6) | (text[i] & 0x3F);
    }
    //  Overlong forms, surrogates and points beyond Unicode.
    if ((length == 3 && point < 0x800) || (length == 4 && point < 0x10000) || point > 0x10FFFF ||
        (point >= 0xD800 && point <= 0xDFFF))
        return 0;
    return length;
}

//  A copy of text that PostgreSQL will take: invalid UTF-8 and control
//  bytes become '?'. A model name is shown to people, not matched against.
static char *s_clean_text(const char *text)
{
    size_t size = strlen(text);
    char *clean = malloc(size + 1);
    assert(clean);
    const unsigned char *in = (const unsigned char *)text;
    size_t used = 0;
    for (size_t i = 0; i < size;) {
        size_t length = s_utf8_length(in + i);
        if (length == 0 || (length == 1 && (in[i] < 0x20 || in[i] == 0x7F))) {
            clean[used++] = '?';
            i++;
        } else {
            memcpy(clean + used, in + i, length);
            used += length;
            i += length;
        }
    }
    clean[used] = '\0';
    return clean;
}

ledger_entry_t *ledger_entry_new(const proto_msg_t *msg, char *why, size_t why_size)
{
    const char *request_id = proto_msg_request_id(msg);
    if (proto_msg_type(msg) != PROTO_MSG_ENTRY) {
        snprintf(why, why_size, "not an ENTRY but %s", proto_msg_type_name(proto_msg_type(msg)));
        return NULL;
    }
    if (!*request_id) {
        snprintf(why, why_size, "ENTRY without a request id");
        return NULL;
    }
    //  Ids beyond bigint would be somebody else's row if clamped: refuse.
    uint64_t ids[] = {proto_msg_account_id(msg), proto_msg_key_id(msg), proto_msg_provider_id(msg),
                      proto_msg_provider_key_id(msg)};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i] > (uint64_t)INT64_MAX) {
            snprintf(why, why_size, "id %" PRIu64 " does not fit a bigint", ids[i]);
            return NULL;
        }
    if (proto_msg_cost_micros(msg) < 0) {
        snprintf(why, why_size, "negative cost %" PRId64, proto_msg_cost_micros(msg));
        return NULL;
    }
    ledger_entry_t *self = calloc(1, sizeof *self);
    assert(self);
    snprintf(self->request_id, sizeof self->request_id, "%s", request_id);
    uint64_t started = proto_msg_started_us(msg);
    self->started_us = started > (uint64_t)S_MAX_STARTED_US ? S_MAX_STARTED_US : (int64_t)started;
    self->account_id = (int64_t)proto_msg_account_id(msg);
    self->key_id = (int64_t)proto_msg_key_id(msg);
    self->model = s_clean_text(proto_msg_model(msg));
    self->has_provider_id = proto_msg_has(msg, PROTO_FIELD_provider_id);
    self->provider_id = (int64_t)proto_msg_provider_id(msg);
    self->has_provider_key_id = proto_msg_has(msg, PROTO_FIELD_provider_key_id);
    self->provider_key_id = (int64_t)proto_msg_provider_key_id(msg);
    if (proto_msg_has(msg, PROTO_FIELD_upstream_model))
        self->upstream_model = s_clean_text(proto_msg_upstream_model(msg));
    self->status = s_fit_i32(proto_msg_status(msg));
    self->tokens_in = s_fit_i64(proto_msg_tokens_in(msg));
    self->tokens_out = s_fit_i64(proto_msg_tokens_out(msg));
    self->tokens_cache_read = s_fit_i64(proto_msg_tokens_cache_read(msg));
    self->tokens_cache_write = s_fit_i64(proto_msg_tokens_cache_write(msg));
    self->tokens_cache_write_1h = s_fit_i64(proto_msg_tokens_cache_write_1h(msg));
    self->images = s_fit_i32(proto_msg_images(msg));
    self->cost_micros = proto_msg_cost_micros(msg);
    self->latency_ms = s_fit_i32(proto_msg_latency_us(msg) / 1000);
    self->ttfb_ms = s_fit_i32(proto_msg_ttfb_us(msg) / 1000);
    self->attempts =
        proto_msg_has(msg, PROTO_FIELD_attempts) ? s_fit_i32(proto_msg_attempts(msg)) : 1;
    self->estimated = proto_msg_estimated(msg);
    self->operator_loss = proto_msg_loss(msg);
    self->waited_us = proto_trace_waited_us(proto_msg_stream(msg), proto_msg_latency_us(msg),
                                            proto_msg_ttfb_us(msg));
    return self;
}

void ledger_entry_destroy(ledger_entry_t **self_p)
{
    assert(self_p);
    ledger_entry_t *self = *self_p;
    if (!self)
        return;
    free(self->model);
    free(self->upstream_model);
    free(self);
    *self_p = NULL;
}

//  --------------------------------------------------------------------------
//  PostgreSQL array literals: {1,2,NULL} and {"a","b \"q\""}

typedef struct {
    char *data;  //  NUL-terminated text
    size_t used; //  bytes before the NUL
    size_t size; //  bytes allocated
} s_buf_t;

static void s_buf_reserve(s_buf_t *buf, size_t more)
{
    if (buf->used + more + 1 <= buf->size)
        return;
    size_t size = buf->size ? buf->size : 256;
    while (size < buf->used + more + 1)
        size *= 2;
    buf->data = realloc(buf->data, size);
    assert(buf->data);
    buf->size = size;
}

static void s_buf_add(s_buf_t *buf, const char *text, size_t length)
{
    s_buf_reserve(buf, length);
    memcpy(buf->data + buf->used, text, length);
    buf->used += length;
    buf->data[buf->used] = '\0';
}

//  Starts the next element: "{" before the first, "," before the others.
static void s_array_next(s_buf_t *buf)
{
    s_buf_add(buf, buf->used ? "," : "{", 1);
}

static void s_array_int(s_buf_t *buf, int64_t value)
{
    char text[PROTO_TEXT_INT_MAX];
    size_t length = proto_text_i64(text, value);
    s_array_next(buf);
    s_buf_add(buf, text, length);
}

static void s_array_null(s_buf_t *buf)
{
    s_array_next(buf);
    s_buf_add(buf, "NULL", 4);
}

static void s_array_bool(s_buf_t *buf, bool value)
{
    s_array_next(buf);
    s_buf_add(buf, value ? "t" : "f", 1);
}

//  Every text element is quoted, so NULL, braces, commas and spaces in it
//  are plain text; only the quote and the backslash need escaping.
static void s_array_text(s_buf_t *buf, const char *text)
{
    s_array_next(buf);
    s_buf_reserve(buf, 2 * strlen(text) + 2);
    buf->data[buf->used++] = '"';
    for (const char *c = text; *c; c++) {
        if (*c == '"' || *c == '\\')
            buf->data[buf->used++] = '\\';
        buf->data[buf->used++] = *c;
    }
    buf->data[buf->used++] = '"';
    buf->data[buf->used] = '\0';
}

//  Closes an array; an array with no elements is "{}".
static const char *s_array_end(s_buf_t *buf)
{
    s_buf_add(buf, buf->used ? "}" : "{}", buf->used ? 1 : 2);
    return buf->data;
}

//  --------------------------------------------------------------------------
//  The store

//  Months whose partition is known to exist, remembered at most.
#define S_MONTHS_MAX 64

//  Customer accounts known to have a ledger account, remembered at most.
#define S_LEDGER_KNOWN_MAX 4096

//  Batches written with s_write_batch after a connection is made or after a
//  batch held a row written before: rows written twice come in runs (a
//  ledger or billing that restarted sends again what it did not see
//  committed), and each would cost its batch a failed s_write_new_batch.
#define S_CAREFUL_BATCHES 16

struct _ledger_store_t {
    char *url;                                //  database_url, for reconnecting
    PGconn *db;                               //  open connection, or NULL while down
    bool prepared;                            //  the statements are prepared on db
    bool carried;                             //  old per-request entries carried over
    int64_t months[S_MONTHS_MAX];             //  year * 12 + month - 1 known partitioned
    size_t month_count;                       //  used entries of months
    int64_t ledger_known[S_LEDGER_KNOWN_MAX]; //  accounts.id with a ledger account, sorted
    size_t ledger_known_count;                //  used entries of ledger_known
    int careful;                              //  batches left to write with s_write_batch
    size_t new_batches;                       //  written with s_write_new_batch
    size_t rewritten;                         //  of them failed (23505) and written again
};

//  A whole batch is this one statement (an operator's loss,
//  an upstream call lost with its dispatch, has a row but is not the
//  account's request: the rollups leave it out): `ins` returns only
//  the rows that are new (a re-sent record has the same request id and
//  started_at, so ON CONFLICT drops it), and only those are added to the
//  hourly and daily rollups. Rollup rows are upserted in key order, so two
//  ledgers writing the same keys wait for each other instead of
//  deadlocking (and a deadlock would only fail the batch, which is retried).
//
//  Then the money, per (account, batch) (migration 0020): `batch` draws one
//  journal entry id per account with costed new rows and a ledger account
//  (a row whose account does not exist stays unjournaled, and `tollgate
//  ledger check` reports it, rather than failing the batch on a foreign
//  key); `charged` records each costed request under its account's entry,
//  unless its request id already has money (its usage row came back with
//  another started_at: a sender bug; `ledger check` shows the extra row);
//  only what `charged` really inserted makes the entries, their two lines
//  (customer -total, system 'revenue' +total) and the balance moves. The
//  foreign keys of journal_lines and journal_requests are checked at the end
//  of the statement, when the entries are there.
#define S_WRITE_BATCH(USAGE_CONFLICT, MONEY_CONFLICT)                                              \
    "WITH ins AS ("                                                                                \
    " INSERT INTO usage (request_id, started_at, account_id, api_key_id, model, provider_id, "     \
    " provider_key_id, upstream_model, status, tokens_in, tokens_out, tokens_cache_read, "         \
    " tokens_cache_write, cost_micros, latency_ms, ttfb_ms, attempts, estimated, "                 \
    " tokens_cache_write_1h, operator_loss, images) "                                              \
    " SELECT r, timestamptz 'epoch' + s * interval '1 microsecond', a, k, m, p, pk, um, st, ti, "  \
    " tou, cr, cw, c, l, t, n, e, cwh, ol, im "                                                    \
    " FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], "              \
    " $6::bigint[], $7::bigint[], $8::text[], $9::int[], $10::bigint[], $11::bigint[], "           \
    " $12::bigint[], $13::bigint[], $14::bigint[], $15::int[], $16::int[], $17::int[], "           \
    " $18::bool[], $19::bigint[], $20::bool[], $21::int[]) AS x(r, s, a, k, m, p, pk, um, st, ti," \
    " tou, cr, cw, c, l, t, n, e, cwh, ol, im) " USAGE_CONFLICT                                    \
    " RETURNING request_id, started_at, account_id, api_key_id, model, provider_id, status, "      \
    " tokens_in, tokens_out, tokens_cache_read, tokens_cache_write, cost_micros, operator_loss,"   \
    " images"                                                                                      \
    "), hourly AS ("                                                                               \
    " INSERT INTO usage_hourly AS h (hour, account_id, api_key_id, model, provider_id, requests,"  \
    " errors, tokens_in, tokens_out, tokens_cache_read, tokens_cache_write, cost_micros,"          \
    " images)"                                                                                     \
    " SELECT date_trunc('hour', started_at, 'UTC'), account_id, api_key_id, model,"                \
    " coalesce(provider_id, 0), count(*), count(*) FILTER (WHERE status >= 400), sum(tokens_in),"  \
    " sum(tokens_out), sum(tokens_cache_read), sum(tokens_cache_write), sum(cost_micros),"         \
    " sum(images)"                                                                                 \
    " FROM ins WHERE NOT operator_loss GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"              \
    " ON CONFLICT (hour, account_id, api_key_id, model, provider_id) DO UPDATE SET"                \
    " requests = h.requests + excluded.requests, errors = h.errors + excluded.errors,"             \
    " tokens_in = h.tokens_in + excluded.tokens_in, tokens_out = h.tokens_out + "                  \
    "excluded.tokens_out,"                                                                         \
    " tokens_cache_read = h.tokens_cache_read + excluded.tokens_cache_read,"                       \
    " tokens_cache_write = h.tokens_cache_write + excluded.tokens_cache_write,"                    \
    " cost_micros = h.cost_micros + excluded.cost_micros,"                                         \
    " images = h.images + excluded.images"                                                         \
    "), daily AS ("                                                                                \
    " INSERT INTO usage_daily AS d (day, account_id, api_key_id, model, provider_id, requests,"    \
    " errors, tokens_in, tokens_out, tokens_cache_read, tokens_cache_write, cost_micros,"          \
    " images)"                                                                                     \
    " SELECT (started_at AT TIME ZONE 'UTC')::date, account_id, api_key_id, model,"                \
    " coalesce(provider_id, 0), count(*), count(*) FILTER (WHERE status >= 400), sum(tokens_in),"  \
    " sum(tokens_out), sum(tokens_cache_read), sum(tokens_cache_write), sum(cost_micros),"         \
    " sum(images)"                                                                                 \
    " FROM ins WHERE NOT operator_loss GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"              \
    " ON CONFLICT (day, account_id, api_key_id, model, provider_id) DO UPDATE SET"                 \
    " requests = d.requests + excluded.requests, errors = d.errors + excluded.errors,"             \
    " tokens_in = d.tokens_in + excluded.tokens_in, tokens_out = d.tokens_out + "                  \
    "excluded.tokens_out,"                                                                         \
    " tokens_cache_read = d.tokens_cache_read + excluded.tokens_cache_read,"                       \
    " tokens_cache_write = d.tokens_cache_write + excluded.tokens_cache_write,"                    \
    " cost_micros = d.cost_micros + excluded.cost_micros,"                                         \
    " images = d.images + excluded.images"                                                         \
    "), costed AS ("                                                                               \
    " SELECT request_id, account_id, cost_micros FROM ins WHERE cost_micros > 0"                   \
    "), batch AS ("                                                                                \
    " SELECT la.account_id, la.id AS la, nextval(pg_get_serial_sequence('journal_entries', 'id'))" \
    " AS entry_id FROM ledger_accounts la"                                                         \
    " WHERE la.account_id IN (SELECT account_id FROM costed)"                                      \
    "), charged AS ("                                                                              \
    " INSERT INTO journal_requests (request_id, entry_id, amount_micros)"                          \
    " SELECT c.request_id, b.entry_id, c.cost_micros FROM costed c"                                \
    " JOIN batch b ON b.account_id = c.account_id" MONEY_CONFLICT                                  \
    " RETURNING entry_id, amount_micros"                                                           \
    "), totals AS ("                                                                               \
    " SELECT b.entry_id, b.account_id, b.la, t.total, t.n FROM batch b"                            \
    " JOIN (SELECT entry_id, sum(amount_micros) AS total, count(*) AS n FROM charged"              \
    " GROUP BY entry_id) t ON t.entry_id = b.entry_id"                                             \
    "), entries AS ("                                                                              \
    " INSERT INTO journal_entries (id, kind) SELECT entry_id, 'usage' FROM totals"                 \
    "), lines AS ("                                                                                \
    " INSERT INTO journal_lines (entry_id, ledger_account_id, amount_micros)"                      \
    " SELECT entry_id, la, -total FROM totals"                                                     \
    " UNION ALL"                                                                                   \
    " SELECT entry_id, (SELECT id FROM ledger_accounts WHERE system_name = 'revenue'), total"      \
    " FROM totals"                                                                                 \
    "), moved AS ("                                                                                \
    " UPDATE accounts SET balance_micros = balance_micros - t.total"                               \
    " FROM totals t WHERE accounts.id = t.account_id"                                              \
    ") SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM costed),"                          \
    " (SELECT coalesce(sum(n), 0) FROM totals),"                                                   \
    " (SELECT count(*) FROM costed c WHERE NOT EXISTS"                                             \
    " (SELECT 1 FROM batch b WHERE b.account_id = c.account_id)),"                                 \
    " pg_current_xact_id()::text"

//  The batch as it is written when no row of it can be there already: no
//  ON CONFLICT, so each row costs one look into each unique index instead of
//  two (the arbiter's check, then the insert's own), and no speculative
//  insertion (its lock and an extra WAL record per row): 28 against 24 us
//  of PostgreSQL's CPU per row in a 400-row batch. A row that is there after
//  all fails it whole with unique_violation (23505), nothing written, and
//  the batch is written again with s_write_batch.
static const char *s_write_new_batch = S_WRITE_BATCH(" ", "");

//  The batch whatever it holds: rows written before (a COMMIT lost, entries
//  re-sent), a request id that has money already, the same row twice.
static const char *s_write_batch = S_WRITE_BATCH(
    " ON CONFLICT (request_id, started_at) DO NOTHING ", " ON CONFLICT (request_id) DO NOTHING");

//  Makes sure the month partition of a timestamp (epoch microseconds) and
//  the next month's exist (migration 0004's function).
static const char *s_partition =
    "SELECT tollgate_usage_partition(timestamptz 'epoch' + $1::bigint * interval '1 microsecond'),"
    " tollgate_usage_partition(timestamptz 'epoch' + $1::bigint * interval '1 microsecond'"
    " + interval '1 month')";

//  Creates the ledger accounts of customer accounts that have none yet and
//  returns every id of $1 that has one (to remember: the batch statement
//  journals only accounts that do). Not in the batch's statement because
//  that one cannot see rows it inserts itself.
static const char *s_ledger_accounts =
    "WITH ins AS ("
    " INSERT INTO ledger_accounts (account_id) SELECT id FROM accounts WHERE id = ANY($1::bigint[])"
    " ON CONFLICT (account_id) DO NOTHING RETURNING account_id"
    ") SELECT account_id FROM ins"
    " UNION ALL SELECT account_id FROM ledger_accounts WHERE account_id = ANY($1::bigint[])";

//  Migration 0020's backfill, run again before this ledger's first batch:
//  ledgers older than 0020 that still run while the migration Job runs
//  (docs/cluster.md) go on journaling each request as its own entry
//  (journal_entries.request_id) with no journal_requests row. Carrying those
//  over makes `tollgate ledger check` pass on them, and their request ids
//  then conflict with a charge of the same request by this ledger (the
//  batch statement checks journal_requests only). Idempotent: ids already
//  carried (or charged since) are left as they are. In request id order, so
//  that ledgers starting together wait for each other instead of
//  deadlocking on ids they both insert.
static const char *s_carry_over =
    "INSERT INTO journal_requests (request_id, entry_id, amount_micros)"
    " SELECT e.request_id, e.id, -l.amount_micros FROM journal_entries e"
    " JOIN journal_lines l ON l.entry_id = e.id"
    " JOIN ledger_accounts la ON la.id = l.ledger_account_id AND la.account_id IS NOT NULL"
    " WHERE e.kind = 'usage' AND e.request_id IS NOT NULL AND l.amount_micros < 0"
    " ORDER BY e.request_id ON CONFLICT (request_id) DO NOTHING";

#define S_BATCH_NAME "ledger_batch"
#define S_NEW_BATCH_NAME "ledger_new_batch"
#define S_LEDGER_ACCOUNTS_NAME "ledger_accounts"

ledger_store_t *ledger_store_new(const char *database_url, PGconn **db_p)
{
    ledger_store_t *self = calloc(1, sizeof *self);
    assert(self);
    self->url = strdup(database_url);
    if (db_p) {
        self->db = *db_p;
        *db_p = NULL;
    }
    return self;
}

void ledger_store_destroy(ledger_store_t **self_p)
{
    assert(self_p);
    ledger_store_t *self = *self_p;
    if (!self)
        return;
    PQfinish(self->db);
    free(self->url);
    free(self);
    *self_p = NULL;
}

bool ledger_store_connected(ledger_store_t *self)
{
    return self->db && PQstatus(self->db) == CONNECTION_OK;
}

//  Runs one statement; returns its result when it succeeded, else NULL with
//  the reason in error.
static PGresult *s_exec(ledger_store_t *self, const char *sql, int count, const char **values,
                        char *error, size_t error_size)
{
    PGresult *result = PQexecParams(self->db, sql, count, NULL, values, NULL, NULL, 0);
    ExecStatusType status = PQresultStatus(result);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
        return result;
    proto_db_error(self->db, error, error_size);
    PQclear(result);
    return NULL;
}

static int s_prepare(ledger_store_t *self, char *error, size_t error_size);

int ledger_store_carry_over(ledger_store_t *self, size_t *carried, char *error, size_t error_size)
{
    *carried = 0;
    if (self->carried)
        return 0;
    if (!self->db) {
        self->db = proto_db_connect_once(self->url, error, error_size);
        if (!self->db)
            return -1;
        self->prepared = false;
    }
    //  Prepared (and configured: no sequential scans) before the carry-over
    //  checks its first foreign key, so that no plan is cached without it.
    PGresult *done = s_prepare(self, error, error_size) == 0
                         ? s_exec(self, s_carry_over, 0, NULL, error, error_size)
                         : NULL;
    if (!done) {
        if (PQstatus(self->db) != CONNECTION_OK) {
            PQfinish(self->db);
            self->db = NULL;
            self->prepared = false;
        }
        return -1;
    }
    *carried = (size_t)strtoull(PQcmdTuples(done), NULL, 10);
    PQclear(done);
    self->carried = true;
    return 0;
}

//  Forgets every prepared statement of the connection, so that the next
//  s_prepare starts from none: after a failed prepare (the first statement
//  prepared and the second not would make every retry fail with 42P05,
//  duplicate_prepared_statement) or when the server lost them (26000).
static void s_forget_prepared(ledger_store_t *self)
{
    self->prepared = false;
    PQclear(PQexec(self->db, "DEALLOCATE ALL"));
}

//  Prepares the statements on a new connection: a batch is then planned
//  once per connection instead of once per batch (planning cost 14 us of
//  PostgreSQL CPU per entry at batches of 50). Named prepared statements
//  need a direct connection or a pooler that keeps them (PgBouncer 1.21+
//  in transaction mode with max_prepared_statements set, or session mode:
//  docs/cluster.md); statements lost anyway are prepared again.
static int s_prepare(ledger_store_t *self, char *error, size_t error_size)
{
    if (self->prepared)
        return 0;
    //  Every journal_requests row is checked against journal_entries (its
    //  foreign key) by a plan the backend caches the first time, when that
    //  table is a page or two: a sequential scan. It stays cached as the
    //  table grows (until an ANALYZE happens to invalidate it) and then
    //  scans every entry for every request: 6 s of a 10 s run at 32
    //  connections in bench/run.sh, 70 against 19 us a request (perf:
    //  AfterTriggerEndQuery -> heap_getnextslot). Without sequential scans
    //  the check is an index lookup on the key, whatever the table's size;
    //  the batch statement reads nothing else that a scan would serve better.
    PGresult *set = PQexec(self->db, "SET enable_seqscan = off");
    bool set_ok = PQresultStatus(set) == PGRES_COMMAND_OK;
    if (!set_ok)
        proto_db_error(self->db, error, error_size);
    PQclear(set);
    if (!set_ok)
        return -1;
    const char *names[] = {S_BATCH_NAME, S_NEW_BATCH_NAME, S_LEDGER_ACCOUNTS_NAME};
    const char *sqls[] = {s_write_batch, s_write_new_batch, s_ledger_accounts};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        PGresult *result = PQprepare(self->db, names[i], sqls[i], 0, NULL);
        bool ok = PQresultStatus(result) == PGRES_COMMAND_OK;
        if (!ok)
            proto_db_error(self->db, error, error_size);
        PQclear(result);
        if (!ok) {
            s_forget_prepared(self);
            return -1;
        }
    }
    self->prepared = true;
    //  A new connection (or statements lost): maybe a restart, whose
    //  batches are often sent again.
    self->careful = S_CAREFUL_BATCHES;
    return 0;
}

static bool s_sqlstate_is(const PGresult *result, const char *sqlstate)
{
    const char *state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
    return state && strcmp(state, sqlstate) == 0;
}

//  Runs a prepared statement. One the server no longer has (26000,
//  invalid_sql_statement_name: a DISCARD ALL or DEALLOCATE ALL, a
//  transaction-mode pooler that moved us to another server connection) is
//  prepared again and run once more: it failed before it ran, so nothing of
//  it was done. On failure the SQLSTATE goes to sqlstate (6 bytes; may be
//  NULL).
static PGresult *s_exec_prepared(ledger_store_t *self, const char *name, int count,
                                 const char **values, char *sqlstate, char *error,
                                 size_t error_size)
{
    for (int attempt = 0;; attempt++) {
        PGresult *result = PQexecPrepared(self->db, name, count, values, NULL, NULL, 0);
        if (PQresultStatus(result) == PGRES_TUPLES_OK)
            return result;
        proto_db_error(self->db, error, error_size);
        const char *state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
        if (sqlstate)
            snprintf(sqlstate, 6, "%s", state ? state : "");
        bool lost = s_sqlstate_is(result, "26000");
        PQclear(result);
        if (!lost || attempt > 0 || PQstatus(self->db) != CONNECTION_OK)
            return NULL;
        s_forget_prepared(self);
        if (s_prepare(self, error, error_size) != 0)
            return NULL;
    }
}

//  Where account_id is in the sorted ledger_known, or where it would go.
static size_t s_ledger_known_at(const ledger_store_t *self, int64_t account_id)
{
    size_t low = 0, high = self->ledger_known_count;
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        if (self->ledger_known[middle] < account_id)
            low = middle + 1;
        else
            high = middle;
    }
    return low;
}

//  A binary search: asked once per costed entry of every batch, of up to
//  S_LEDGER_KNOWN_MAX accounts.
static bool s_ledger_known(const ledger_store_t *self, int64_t account_id)
{
    size_t at = s_ledger_known_at(self, account_id);
    return at < self->ledger_known_count && self->ledger_known[at] == account_id;
}

//  Remembers an account with a ledger account, keeping the array sorted
//  (an insert moves up to the whole array, but happens once per account).
static void s_ledger_remember(ledger_store_t *self, int64_t account_id)
{
    size_t at = s_ledger_known_at(self, account_id);
    if (at < self->ledger_known_count && self->ledger_known[at] == account_id)
        return;
    if (self->ledger_known_count == S_LEDGER_KNOWN_MAX) {
        self->ledger_known_count = 0; //  forget all; they are cheap to confirm
        at = 0;
    }
    memmove(&self->ledger_known[at + 1], &self->ledger_known[at],
            (self->ledger_known_count - at) * sizeof self->ledger_known[0]);
    self->ledger_known[at] = account_id;
    self->ledger_known_count++;
}

//  Makes sure the accounts charged in the batch have ledger accounts,
//  asking PostgreSQL only about accounts not seen with one before.
static int s_ensure_ledger_accounts(ledger_store_t *self, ledger_entry_t **entries, size_t count,
                                    char *error, size_t error_size)
{
    s_buf_t accounts = {0};
    for (size_t i = 0; i < count; i++)
        if (entries[i]->cost_micros > 0 && !s_ledger_known(self, entries[i]->account_id))
            s_array_int(&accounts, entries[i]->account_id);
    if (!accounts.used)
        return 0;
    const char *values[1] = {s_array_end(&accounts)};
    PGresult *known =
        s_exec_prepared(self, S_LEDGER_ACCOUNTS_NAME, 1, values, NULL, error, error_size);
    free(accounts.data);
    if (!known)
        return -1;
    for (int row = 0; row < PQntuples(known); row++) {
        s_ledger_remember(self, strtoll(PQgetvalue(known, row, 0), NULL, 10));
    }
    PQclear(known);
    return 0;
}

//  Runs the batch statement that fits: s_write_new_batch unless rows
//  written before are likely, s_write_batch when it is refused for one.
static PGresult *s_run_batch(ledger_store_t *self, const char **values, char *error,
                             size_t error_size)
{
    if (self->careful > 0) {
        self->careful--;
        return s_exec_prepared(self, S_BATCH_NAME, S_COLUMNS, values, NULL, error, error_size);
    }
    self->new_batches++;
    char sqlstate[6] = "";
    PGresult *done =
        s_exec_prepared(self, S_NEW_BATCH_NAME, S_COLUMNS, values, sqlstate, error, error_size);
    if (done || strcmp(sqlstate, "23505") != 0)
        return done;
    //  A row of it was there already; nothing of it was written.
    self->rewritten++;
    self->careful = S_CAREFUL_BATCHES - 1;
    return s_exec_prepared(self, S_BATCH_NAME, S_COLUMNS, values, NULL, error, error_size);
}

//  The batch statement: usage rows, rollups, journal and balances.
static int s_write_batch_rows(ledger_store_t *self, ledger_entry_t **entries, size_t count,
                              ledger_store_result_t *result, char *error, size_t error_size)
{
    s_buf_t columns[S_COLUMNS] = {{0}};
    for (size_t i = 0; i < count; i++) {
        const ledger_entry_t *entry = entries[i];
        s_array_text(&columns[0], entry->request_id);
        s_array_int(&columns[1], entry->started_us);
        s_array_int(&columns[2], entry->account_id);
        s_array_int(&columns[3], entry->key_id);
        s_array_text(&columns[4], entry->model);
        if (entry->has_provider_id)
            s_array_int(&columns[5], entry->provider_id);
        else
            s_array_null(&columns[5]);
        if (entry->has_provider_key_id)
            s_array_int(&columns[6], entry->provider_key_id);
        else
            s_array_null(&columns[6]);
        if (entry->upstream_model)
            s_array_text(&columns[7], entry->upstream_model);
        else
            s_array_null(&columns[7]);
        s_array_int(&columns[8], entry->status);
        s_array_int(&columns[9], entry->tokens_in);
        s_array_int(&columns[10], entry->tokens_out);
        s_array_int(&columns[11], entry->tokens_cache_read);
        s_array_int(&columns[12], entry->tokens_cache_write);
        s_array_int(&columns[13], entry->cost_micros);
        s_array_int(&columns[14], entry->latency_ms);
        s_array_int(&columns[15], entry->ttfb_ms);
        s_array_int(&columns[16], entry->attempts);
        s_array_bool(&columns[17], entry->estimated);
        s_array_int(&columns[18], entry->tokens_cache_write_1h);
        s_array_bool(&columns[19], entry->operator_loss);
        s_array_int(&columns[20], entry->images);
    }
    const char *values[S_COLUMNS];
    for (int i = 0; i < S_COLUMNS; i++)
        values[i] = s_array_end(&columns[i]);
    PGresult *done = s_run_batch(self, values, error, error_size);
    for (int i = 0; i < S_COLUMNS; i++)
        free(columns[i].data);
    if (!done)
        return -1;
    result->inserted = (size_t)strtoull(PQgetvalue(done, 0, 0), NULL, 10);
    size_t costed = (size_t)strtoull(PQgetvalue(done, 0, 1), NULL, 10);
    result->journaled = (size_t)strtoull(PQgetvalue(done, 0, 2), NULL, 10);
    result->orphans = (size_t)strtoull(PQgetvalue(done, 0, 3), NULL, 10);
    result->txid = strtoull(PQgetvalue(done, 0, 4), NULL, 10);
    //  The rest of the costed new rows had money already: their request id
    //  came back with another started_at.
    result->charged_before = costed - result->journaled - result->orphans;
    PQclear(done);
    return 0;
}

static int64_t s_month(int64_t started_us)
{
    time_t seconds = (time_t)(started_us / 1000000);
    struct tm tm;
    gmtime_r(&seconds, &tm);
    return (int64_t)(tm.tm_year + 1900) * 12 + tm.tm_mon;
}

//  Creates the partitions the batch needs (its months and each next one)
//  before the batch's transaction, each in its own short transaction: the
//  batch must never be the one that waits on a partition's DDL.
static int s_ensure_partitions(ledger_store_t *self, ledger_entry_t **entries, size_t count,
                               char *error, size_t error_size)
{
    for (size_t i = 0; i < count; i++) {
        int64_t month = s_month(entries[i]->started_us);
        bool known = false;
        for (size_t m = 0; m < self->month_count && !known; m++)
            known = self->months[m] == month;
        if (known)
            continue;
        char started[24];
        snprintf(started, sizeof started, "%" PRId64, entries[i]->started_us);
        const char *values[1] = {started};
        PGresult *done = s_exec(self, s_partition, 1, values, error, error_size);
        if (!done)
            return -1;
        PQclear(done);
        if (self->month_count == S_MONTHS_MAX)
            self->month_count = 0; //  forget all; they are cheap to confirm
        self->months[self->month_count++] = month;
    }
    return 0;
}

int ledger_store_write(ledger_store_t *self, ledger_entry_t **entries, size_t count,
                       ledger_store_result_t *result, char *error, size_t error_size)
{
    memset(result, 0, sizeof *result);
    if (!self->db) {
        self->db = proto_db_connect_once(self->url, error, error_size);
        if (!self->db)
            return -1;
        self->prepared = false;
    }
    //  Before the first batch (ledger_new does it at start; this is for a
    //  start that could not).
    size_t carried;
    int rc = ledger_store_carry_over(self, &carried, error, error_size);
    if (rc == 0)
        rc = s_prepare(self, error, error_size);
    if (rc == 0)
        rc = s_ensure_partitions(self, entries, count, error, error_size);
    if (rc == 0)
        rc = s_ensure_ledger_accounts(self, entries, count, error, error_size);
    //  One statement, so one transaction of its own: its failure (a broken
    //  connection as it committed included) leaves the rows maybe there or
    //  not, and the retry finds out by request id without counting anything
    //  twice.
    if (rc == 0)
        rc = s_write_batch_rows(self, entries, count, result, error, error_size);
    if (rc != 0) {
        memset(result, 0, sizeof *result);
        //  A partition dropped behind our back (an operator's prune) must
        //  not fail every retry: confirm them all again; the same for
        //  ledger accounts.
        self->month_count = 0;
        self->ledger_known_count = 0;
        if (PQstatus(self->db) != CONNECTION_OK) {
            PQfinish(self->db);
            self->db = NULL;
            self->prepared = false;
        }
    }
    return rc;
}

//  --------------------------------------------------------------------------
//  Self test

static proto_msg_t *s_test_msg(const char *request_id)
{
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_ENTRY);
    proto_msg_set_request_id(msg, request_id);
    proto_msg_set_account_id(msg, 1);
    proto_msg_set_key_id(msg, 2);
    proto_msg_set_model(msg, "m");
    proto_msg_set_status(msg, 200);
    proto_msg_set_started_us(msg, 1700000000000000ull);
    proto_msg_set_cost_micros(msg, 5);
    return msg;
}

//  One integer from SQL on a test connection.
static int64_t s_test_int(PGconn *db, const char *sql)
{
    PGresult *result = PQexec(db, sql);
    if (PQresultStatus(result) != PGRES_TUPLES_OK)
        fprintf(stderr, "ledger_store: %s: %s\n", sql, PQerrorMessage(db));
    PROTO_CHECK(PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1);
    int64_t value = strtoll(PQgetvalue(result, 0, 0), NULL, 10);
    PQclear(result);
    return value;
}

//  Writes one batch of the given ids, accounts, costs and starts.
static void s_test_write(ledger_store_t *store, size_t count, const char **ids,
                         const int64_t *accounts, const int64_t *costs, const uint64_t *started,
                         ledger_store_result_t *result)
{
    char why[256], error[512];
    ledger_entry_t *entries[8];
    assert(count <= 8);
    for (size_t i = 0; i < count; i++) {
        proto_msg_t *msg = s_test_msg(ids[i]);
        proto_msg_set_account_id(msg, (uint64_t)accounts[i]);
        proto_msg_set_cost_micros(msg, costs[i]);
        proto_msg_set_started_us(msg, started[i]);
        entries[i] = ledger_entry_new(msg, why, sizeof why);
        proto_msg_destroy(&msg);
    }
    int rc = ledger_store_write(store, entries, count, result, error, sizeof error);
    if (rc != 0)
        fprintf(stderr, "ledger_store: %s\n", error);
    PROTO_CHECK(rc == 0);
    for (size_t i = 0; i < count; i++)
        ledger_entry_destroy(&entries[i]);
}

//  The money of a batch: one journal entry per account, each request once.
static void s_test_money(const char *url)
{
    PGconn *db = PQconnectdb(url);
    PROTO_CHECK(PQstatus(db) == CONNECTION_OK);
    int64_t a = s_test_int(db, "INSERT INTO accounts (name) VALUES ('store-test-a') RETURNING id");
    int64_t b = s_test_int(db, "INSERT INTO accounts (name) VALUES ('store-test-b') RETURNING id");
    int64_t entries_before = s_test_int(db, "SELECT count(*) FROM journal_entries");
    ledger_store_t *store = ledger_store_new(url, NULL);
    ledger_store_result_t result;
    const uint64_t t = 1700000000000000ull, month = 31ull * 86400 * 1000000;
    //  Two accounts, three costed requests and one free: two entries.
    const char *ids[] = {"money-1", "money-2", "money-3", "money-4"};
    int64_t accounts[] = {a, b, a, b}, costs[] = {5, 7, 11, 0};
    uint64_t started[] = {t, t, t, t};
    s_test_write(store, 4, ids, accounts, costs, started, &result);
    PROTO_CHECK(result.inserted == 4 && result.journaled == 3 && result.orphans == 0);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT balance_micros FROM accounts WHERE id = %" PRId64, a);
    PROTO_CHECK(s_test_int(db, sql) == -16);
    snprintf(sql, sizeof sql, "SELECT balance_micros FROM accounts WHERE id = %" PRId64, b);
    PROTO_CHECK(s_test_int(db, sql) == -7);
    PROTO_CHECK(s_test_int(db, "SELECT count(*) FROM journal_entries") == entries_before + 2);
    PROTO_CHECK(s_test_int(db, "SELECT count(*) FROM journal_requests WHERE request_id LIKE "
                               "'money-%'") == 3);
    //  money-1 again, in another month (a sender bug): a second usage row,
    //  no second charge; money-5 is charged beside it.
    const char *again_ids[] = {"money-1", "money-5"};
    int64_t again_accounts[] = {a, a}, again_costs[] = {5, 3};
    uint64_t again_started[] = {t + month, t};
    s_test_write(store, 2, again_ids, again_accounts, again_costs, again_started, &result);
    PROTO_CHECK(result.inserted == 2 && result.journaled == 1 && result.orphans == 0 &&
                result.charged_before == 1);
    snprintf(sql, sizeof sql, "SELECT balance_micros FROM accounts WHERE id = %" PRId64, a);
    PROTO_CHECK(s_test_int(db, sql) == -19);
    PROTO_CHECK(s_test_int(db, "SELECT count(*) FROM journal_requests WHERE request_id LIKE "
                               "'money-%'") == 4);
    //  The journal ties each request to its money: entries' customer lines
    //  are minus the sums of their requests.
    PROTO_CHECK(s_test_int(db,
                           "SELECT count(*) FROM journal_entries e JOIN journal_lines l ON"
                           " l.entry_id = e.id JOIN ledger_accounts la ON la.id ="
                           " l.ledger_account_id AND la.account_id IS NOT NULL WHERE"
                           " e.kind = 'usage' AND -l.amount_micros <> (SELECT sum(amount_micros)"
                           " FROM journal_requests r WHERE r.entry_id = e.id)") == 0);
    ledger_store_destroy(&store);
    PQfinish(db);
}

//  Batches of new rows take s_write_new_batch; one holding a row written
//  before (or a request id with money) is refused by it whole and written
//  again with s_write_batch, which then stays for S_CAREFUL_BATCHES.
static void s_test_new_batch(const char *url)
{
    PGconn *db = PQconnectdb(url);
    PROTO_CHECK(PQstatus(db) == CONNECTION_OK);
    int64_t a = s_test_int(db, "INSERT INTO accounts (name) VALUES ('store-test-n') RETURNING id");
    ledger_store_t *store = ledger_store_new(url, NULL);
    ledger_store_result_t result;
    const uint64_t t = 1700000000000000ull, month = 31ull * 86400 * 1000000;
    //  Just connected: careful.
    const char *first[] = {"new-1"};
    int64_t accounts[] = {a, a, a}, costs[] = {5, 7, 11};
    uint64_t started[] = {t, t, t};
    s_test_write(store, 1, first, accounts, costs, started, &result);
    PROTO_CHECK(result.inserted == 1 && result.journaled == 1);
    PROTO_CHECK(store->new_batches == 0 && store->careful == S_CAREFUL_BATCHES - 1);
    store->careful = 0;
    const char *fresh[] = {"new-2", "new-3"};
    s_test_write(store, 2, fresh, accounts, costs, started, &result);
    PROTO_CHECK(result.inserted == 2 && result.journaled == 2);
    PROTO_CHECK(store->new_batches == 1 && store->rewritten == 0 && store->careful == 0);
    //  new-2 again beside new-4: written again, new-2 neither inserted nor
    //  charged twice.
    const char *again[] = {"new-2", "new-4"};
    s_test_write(store, 2, again, accounts, costs, started, &result);
    PROTO_CHECK(result.inserted == 1 && result.journaled == 1 && result.charged_before == 0);
    PROTO_CHECK(store->new_batches == 2 && store->rewritten == 1);
    PROTO_CHECK(store->careful == S_CAREFUL_BATCHES - 1);
    //  The same row twice in one batch, and a request id with money already
    //  (new-3 in another month): each refused by the new batch's statement.
    store->careful = 0;
    const char *twice[] = {"new-5", "new-5", "new-3"};
    uint64_t twice_started[] = {t, t, t + month};
    s_test_write(store, 3, twice, accounts, costs, twice_started, &result);
    PROTO_CHECK(result.inserted == 2 && result.journaled == 1 && result.charged_before == 1);
    PROTO_CHECK(store->new_batches == 3 && store->rewritten == 2);
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT balance_micros FROM accounts WHERE id = %" PRId64, a);
    //  new-1 5, new-2 5, new-3 7, new-4 7, new-5 5.
    PROTO_CHECK(s_test_int(db, sql) == -29);
    PROTO_CHECK(s_test_int(db, "SELECT count(*) FROM journal_requests WHERE request_id LIKE "
                               "'new-%'") == 5);
    PROTO_CHECK(s_test_int(db, "SELECT count(*) FROM usage WHERE request_id LIKE 'new-%'") == 6);
    ledger_store_destroy(&store);
    PQfinish(db);
}

//  A batch names its transaction, and a catalog tells whether it read the
//  balances before or after it: billing's way to subtract each charge once.
static void s_test_txid(const char *url)
{
    PGconn *db = PQconnectdb(url);
    PGconn *other = PQconnectdb(url);
    PROTO_CHECK(PQstatus(db) == CONNECTION_OK && PQstatus(other) == CONNECTION_OK);
    int64_t a = s_test_int(db, "INSERT INTO accounts (name) VALUES ('txid-a') RETURNING id");
    char error[256];
    proto_catalog_t *before = proto_catalog_load(db, NULL, error, sizeof error);
    PROTO_CHECK(before);
    ledger_store_t *store = ledger_store_new(url, NULL);
    ledger_store_result_t result;
    const char *ids[] = {"txid-1"};
    int64_t accounts[] = {a}, costs[] = {9};
    uint64_t started[] = {1700000000000000ull};
    s_test_write(store, 1, ids, accounts, costs, started, &result);
    PROTO_CHECK(result.journaled == 1 && result.txid > 0);
    proto_catalog_t *after = proto_catalog_load(db, NULL, error, sizeof error);
    PROTO_CHECK(after);
    PROTO_CHECK(!proto_catalog_saw_transaction(before, result.txid));
    PROTO_CHECK(proto_catalog_account(before, (uint64_t)a)->balance_micros == 0);
    PROTO_CHECK(proto_catalog_saw_transaction(after, result.txid));
    PROTO_CHECK(proto_catalog_account(after, (uint64_t)a)->balance_micros == -9);
    //  A transaction running while a catalog is read is not seen by it,
    //  even once it has committed; the next catalog sees it.
    PQclear(PQexec(other, "BEGIN"));
    int64_t running = s_test_int(other, "SELECT pg_current_xact_id()::text::bigint");
    proto_catalog_t *during = proto_catalog_load(db, NULL, error, sizeof error);
    PQclear(PQexec(other, "COMMIT"));
    proto_catalog_t *later = proto_catalog_load(db, NULL, error, sizeof error);
    PROTO_CHECK(during && later);
    PROTO_CHECK(!proto_catalog_saw_transaction(during, (uint64_t)running));
    PROTO_CHECK(proto_catalog_saw_transaction(during, result.txid));
    PROTO_CHECK(proto_catalog_saw_transaction(later, (uint64_t)running));
    proto_catalog_destroy(&before);
    proto_catalog_destroy(&after);
    proto_catalog_destroy(&during);
    proto_catalog_destroy(&later);
    ledger_store_destroy(&store);
    PQfinish(other);
    PQfinish(db);
}

//  A request an older ledger journaled per request (still running after
//  migration 0020) is carried over before the first batch, so a batch that
//  brings its usage row back with another started_at charges it no second
//  time (the batch statement looks in journal_requests only).
static void s_test_carry_over(const char *url)
{
    PGconn *db = PQconnectdb(url);
    PROTO_CHECK(PQstatus(db) == CONNECTION_OK);
    int64_t a = s_test_int(db, "INSERT INTO accounts (name) VALUES ('store-test-c') RETURNING id");
    char sql[1024];
    snprintf(sql, sizeof sql,
             "WITH la AS (INSERT INTO ledger_accounts (account_id) VALUES (%" PRId64
             ") RETURNING id), e AS (INSERT INTO journal_entries (kind, request_id)"
             " VALUES ('usage', 'legacy-1') RETURNING id),"
             " b AS (UPDATE accounts SET balance_micros = -9 WHERE id = %" PRId64 "),"
             " l AS (INSERT INTO journal_lines (entry_id, ledger_account_id, amount_micros)"
             " SELECT e.id, la.id, -9 FROM e, la UNION ALL SELECT e.id, (SELECT id FROM"
             " ledger_accounts WHERE system_name = 'revenue'), 9 FROM e) SELECT id FROM e",
             a, a);
    int64_t legacy_entry = s_test_int(db, sql);
    ledger_store_t *store = ledger_store_new(url, NULL);
    ledger_store_result_t result;
    int64_t accounts[] = {a, a}, costs[] = {9, 4};
    uint64_t started[] = {1700000000000000ull, 1700000000000000ull};
    const char *ids[] = {"legacy-1", "legacy-2"};
    s_test_write(store, 2, ids, accounts, costs, started, &result);
    PROTO_CHECK(result.inserted == 2 && result.journaled == 1 && result.charged_before == 1);
    PROTO_CHECK(s_test_int(db, "SELECT entry_id FROM journal_requests WHERE request_id ="
                               " 'legacy-1'") == legacy_entry);
    snprintf(sql, sizeof sql, "SELECT balance_micros FROM accounts WHERE id = %" PRId64, a);
    PROTO_CHECK(s_test_int(db, sql) == -13);
    ledger_store_destroy(&store);
    PQfinish(db);
}

//  Prepared statements lost on a live connection are prepared again.
static void s_test_prepared(const char *url)
{
    PGconn *db = PQconnectdb(url);
    PROTO_CHECK(PQstatus(db) == CONNECTION_OK);
    int64_t a = s_test_int(db, "INSERT INTO accounts (name) VALUES ('store-test-p') RETURNING id");
    ledger_store_t *store = ledger_store_new(url, NULL);
    ledger_store_result_t result;
    const uint64_t t = 1700000000000000ull;
    int64_t accounts[] = {a}, costs[] = {5};
    uint64_t started[] = {t};
    const char *first[] = {"prepared-1"};
    s_test_write(store, 1, first, accounts, costs, started, &result);
    PROTO_CHECK(result.inserted == 1 && result.journaled == 1 && store->prepared);
    //  What a pooler's DISCARD ALL or a server connection swap does: the
    //  next batch finds no statement (26000) and still commits.
    PQclear(PQexec(store->db, "DEALLOCATE ALL"));
    store->ledger_known_count = 0; //  so that ledger_accounts runs too
    const char *second[] = {"prepared-2"};
    s_test_write(store, 1, second, accounts, costs, started, &result);
    PROTO_CHECK(result.inserted == 1 && result.journaled == 1);
    PQclear(PQexec(store->db, "DEALLOCATE ledger_batch"));
    const char *third[] = {"prepared-3"};
    s_test_write(store, 1, third, accounts, costs, started, &result);
    PROTO_CHECK(result.inserted == 1 && result.journaled == 1);
    //  A prepare that failed halfway (ledger_batch prepared, ledger_accounts
    //  not): that batch fails, the next one prepares both again instead of
    //  failing with 42P05 forever.
    PQclear(PQexec(store->db, "DEALLOCATE ALL"));
    PQclear(PQprepare(store->db, S_LEDGER_ACCOUNTS_NAME, "SELECT 1", 0, NULL));
    store->prepared = false;
    char why[256], error[512];
    proto_msg_t *msg = s_test_msg("prepared-4");
    proto_msg_set_account_id(msg, (uint64_t)a);
    ledger_entry_t *entry = ledger_entry_new(msg, why, sizeof why);
    proto_msg_destroy(&msg);
    PROTO_CHECK(ledger_store_write(store, &entry, 1, &result, error, sizeof error) == -1);
    PROTO_CHECK(strstr(error, "already exists"));
    PROTO_CHECK(ledger_store_write(store, &entry, 1, &result, error, sizeof error) == 0);
    PROTO_CHECK(result.inserted == 1 && result.journaled == 1);
    ledger_entry_destroy(&entry);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT balance_micros FROM accounts WHERE id = %" PRId64, a);
    PROTO_CHECK(s_test_int(db, sql) == -20);
    ledger_store_destroy(&store);
    PQfinish(db);
}

void ledger_store_test(bool verbose)
{
    if (verbose)
        printf(" * ledger_store: ");
    char why[256];
    //  Fitting values to columns.
    proto_msg_t *msg = s_test_msg("r1");
    proto_msg_set_model(msg, "bad\x01\xff\xc0\xafmodel \xe2\x82\xac");
    proto_msg_set_tokens_in(msg, UINT64_MAX);
    proto_msg_set_latency_us(msg, UINT64_MAX);
    proto_msg_set_started_us(msg, UINT64_MAX);
    ledger_entry_t *entry = ledger_entry_new(msg, why, sizeof why);
    PROTO_CHECK(entry);
    PROTO_CHECK(strcmp(entry->model, "bad????model \xe2\x82\xac") == 0);
    PROTO_CHECK(entry->tokens_in == INT64_MAX && entry->latency_ms == INT32_MAX);
    PROTO_CHECK(entry->started_us == S_MAX_STARTED_US);
    PROTO_CHECK(entry->attempts == 1 && !entry->upstream_model && !entry->has_provider_id);
    ledger_entry_destroy(&entry);
    PROTO_CHECK(entry == NULL);
    proto_msg_set_account_id(msg, (uint64_t)INT64_MAX + 1);
    PROTO_CHECK(!ledger_entry_new(msg, why, sizeof why) && strstr(why, "bigint"));
    proto_msg_set_account_id(msg, 1);
    proto_msg_set_cost_micros(msg, -1);
    PROTO_CHECK(!ledger_entry_new(msg, why, sizeof why) && strstr(why, "negative"));
    proto_msg_destroy(&msg);
    msg = s_test_msg("");
    PROTO_CHECK(!ledger_entry_new(msg, why, sizeof why));
    proto_msg_destroy(&msg);

    //  Accounts known to have a ledger account: found after inserts in any
    //  order, forgotten all at once when full.
    ledger_store_t *known = ledger_store_new("", NULL);
    for (int64_t i = 0; i < S_LEDGER_KNOWN_MAX; i++)
        s_ledger_remember(known, (i * 7919) % S_LEDGER_KNOWN_MAX * 2);
    s_ledger_remember(known, 2);
    PROTO_CHECK(known->ledger_known_count == S_LEDGER_KNOWN_MAX);
    for (size_t i = 1; i < known->ledger_known_count; i++)
        PROTO_CHECK(known->ledger_known[i - 1] < known->ledger_known[i]);
    PROTO_CHECK(s_ledger_known(known, 0) && s_ledger_known(known, 2 * S_LEDGER_KNOWN_MAX - 2));
    PROTO_CHECK(!s_ledger_known(known, 1) && !s_ledger_known(known, 2 * S_LEDGER_KNOWN_MAX));
    s_ledger_remember(known, -5);
    PROTO_CHECK(known->ledger_known_count == 1 && s_ledger_known(known, -5));
    PROTO_CHECK(!s_ledger_known(known, 0));
    ledger_store_destroy(&known);

    //  Array literals.
    s_buf_t buf = {0};
    PROTO_CHECK(strcmp(s_array_end(&buf), "{}") == 0);
    free(buf.data);
    buf = (s_buf_t){0};
    s_array_text(&buf, "a\"b\\c");
    s_array_text(&buf, "NULL");
    s_array_null(&buf);
    s_array_int(&buf, -5);
    s_array_bool(&buf, true);
    PROTO_CHECK(strcmp(s_array_end(&buf), "{\"a\\\"b\\\\c\",\"NULL\",NULL,-5,t}") == 0);
    free(buf.data);

    //  A real write when a migrated database is at hand (ledger_test.sh).
    const char *url = getenv("TOLLGATE_TEST_DATABASE_URL");
    if (url && *url) {
        char error[512];
        ledger_store_t *store = ledger_store_new(url, NULL);
        PROTO_CHECK(!ledger_store_connected(store));
        ledger_entry_t *entries[3];
        const char *odd = "store-test-\"odd\",{id}";
        const char *ids[3] = {"store-test-1", odd, "store-test-1"};
        for (int i = 0; i < 3; i++) {
            msg = s_test_msg(ids[i]);
            proto_msg_set_upstream_model(msg, "up\\stream");
            proto_msg_set_account_id(msg, 999999); //  no such account: an orphan
            entries[i] = ledger_entry_new(msg, why, sizeof why);
            proto_msg_destroy(&msg);
        }
        ledger_store_result_t result;
        int rc = ledger_store_write(store, entries, 3, &result, error, sizeof error);
        if (rc != 0)
            fprintf(stderr, "ledger_store: %s\n", error);
        PROTO_CHECK(rc == 0);
        //  The same id twice in one batch is one row.
        PROTO_CHECK(result.inserted == 2 && result.journaled == 0 && result.orphans == 2 &&
                    result.charged_before == 0);
        PROTO_CHECK(ledger_store_write(store, entries, 3, &result, error, sizeof error) == 0);
        PROTO_CHECK(result.inserted == 0);
        for (int i = 0; i < 3; i++)
            ledger_entry_destroy(&entries[i]);
        ledger_store_destroy(&store);
        s_test_money(url);
        s_test_new_batch(url);
        s_test_prepared(url);
        s_test_carry_over(url);
        s_test_txid(url);
    } else if (verbose)
        printf("(no TOLLGATE_TEST_DATABASE_URL: database part skipped) ");
    if (verbose)
        printf("OK\n");
}
