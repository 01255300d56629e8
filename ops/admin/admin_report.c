#include "admin_report.h"
#include "proto_check.h"
#include "proto_db.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define S_LIMIT_DEFAULT 100
#define S_LIMIT_MAX 10000

//  A growing SQL text. Values are written into it as literals: integers
//  printed by us, text through PQescapeLiteral, so no value can change the
//  statement. (COPY takes no parameters, and one builder serves both.)
typedef struct {
    char *text;  //  NUL-terminated
    size_t used; //  bytes before the NUL
} s_sql_t;

static void s_add(s_sql_t *sql, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void s_add(s_sql_t *sql, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    char *piece = NULL;
    int length = vasprintf(&piece, format, args);
    va_end(args);
    assert(length >= 0);
    sql->text = realloc(sql->text, sql->used + (size_t)length + 1);
    assert(sql->text);
    memcpy(sql->text + sql->used, piece, (size_t)length + 1);
    sql->used += (size_t)length;
    free(piece);
}

//  `column` compared with an epoch-microsecond value.
static void s_add_time(s_sql_t *sql, const char *column, const char *op, int64_t us)
{
    s_add(sql, " AND %s %s timestamptz 'epoch' + %" PRId64 " * interval '1 microsecond'", column,
          op, us);
}

//  Text as a literal; false when the connection refused to escape it.
static bool s_add_text(s_sql_t *sql, PGconn *db, const char *text)
{
    char *literal = PQescapeLiteral(db, text, strlen(text));
    if (!literal)
        return false;
    s_add(sql, "%s", literal);
    PQfreemem(literal);
    return true;
}

static int s_check_query(const admin_report_query_t *query, char *error, size_t error_size)
{
    if (query->from_us < 0 || query->to_us < 0 ||
        (query->to_us && query->from_us && query->to_us <= query->from_us)) {
        snprintf(error, error_size, "the time range is empty or negative");
        return -1;
    }
    if (query->limit > S_LIMIT_MAX) {
        snprintf(error, error_size, "limit is at most %d", S_LIMIT_MAX);
        return -1;
    }
    if (query->account_id > INT64_MAX || query->key_id > INT64_MAX ||
        query->provider_id > INT64_MAX) {
        snprintf(error, error_size, "an id does not fit a bigint");
        return -1;
    }
    return 0;
}

//  Filters shared by every report over usage or its rollups.
static bool s_add_filters(s_sql_t *sql, PGconn *db, const admin_report_query_t *query,
                          const char *time_column, bool round_to_hour)
{
    if (query->from_us) {
        int64_t from = query->from_us;
        if (round_to_hour)
            from -= from % 3600000000LL;
        s_add_time(sql, time_column, ">=", from);
    }
    if (query->to_us)
        s_add_time(sql, time_column, "<", query->to_us);
    if (query->account_id)
        s_add(sql, " AND account_id = %" PRIu64, query->account_id);
    if (query->key_id)
        s_add(sql, " AND api_key_id = %" PRIu64, query->key_id);
    if (query->provider_id)
        s_add(sql, " AND provider_id = %" PRIu64, query->provider_id);
    if (query->model) {
        s_add(sql, " AND model = ");
        if (!s_add_text(sql, db, query->model))
            return false;
    }
    return true;
}

//  The grouping expression of a spend report, or NULL when unknown.
static const char *s_group_expression(const char *group_by)
{
    static const struct {
        const char *name;       //  --by value
        const char *expression; //  over usage_hourly
    } groups[] = {
        {"account", "account_id::text"},
        {"key", "api_key_id::text"},
        {"model", "model"},
        {"provider", "provider_id::text"},
        {"hour", "to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:00:00\"Z\"')"},
        {"day", "to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD')"},
    };
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (strcmp(groups[i].name, group_by ? group_by : "account") == 0)
            return groups[i].expression;
    return NULL;
}

//  The SQL of a spend report. Caller owns return value (free()).
static char *s_spend_sql(PGconn *db, const admin_report_query_t *query, char *error,
                         size_t error_size)
{
    const char *group = s_group_expression(query->group_by);
    if (!group) {
        snprintf(error, error_size,
                 "group by account, key, model, provider, hour or day, not '%.40s'",
                 query->group_by);
        return NULL;
    }
    s_sql_t sql = {0};
    s_add(&sql,
          "SELECT %s, sum(requests), sum(errors), sum(tokens_in), sum(tokens_out),"
          " sum(tokens_cache_read), sum(tokens_cache_write), sum(cost_micros), sum(images)"
          " FROM usage_hourly WHERE true",
          group);
    if (!s_add_filters(&sql, db, query, "hour", true)) {
        snprintf(error, error_size, "cannot quote the model name");
        free(sql.text);
        return NULL;
    }
    s_add(&sql, " GROUP BY 1 ORDER BY 8 DESC, 1");
    return sql.text;
}

static PGresult *s_query(PGconn *db, const char *sql, char *error, size_t error_size)
{
    PGresult *result = PQexec(db, sql);
    if (PQresultStatus(result) == PGRES_TUPLES_OK)
        return result;
    proto_db_error(db, error, error_size);
    PQclear(result);
    return NULL;
}

static json_int_t s_int(PGresult *result, int row, int column)
{
    return PQgetisnull(result, row, column)
               ? 0
               : (json_int_t)strtoll(PQgetvalue(result, row, column), NULL, 10);
}

int admin_report_spend(PGconn *db, const admin_report_query_t *query, json_t **out, char *error,
                       size_t error_size)
{
    *out = NULL;
    if (s_check_query(query, error, error_size) != 0)
        return -1;
    char *sql = s_spend_sql(db, query, error, error_size);
    if (!sql)
        return -1;
    PGresult *result = s_query(db, sql, error, error_size);
    free(sql);
    if (!result)
        return -1;
    static const char *figures[] = {
        "requests",           "errors",      "tokens_in", "tokens_out", "tokens_cache_read",
        "tokens_cache_write", "cost_micros", "images"};
    enum { S_FIGURES = sizeof figures / sizeof figures[0] };
    json_t *rows = json_array();
    json_int_t total[S_FIGURES] = {0};
    for (int row = 0; row < PQntuples(result); row++) {
        json_t *item = json_object();
        json_object_set_new(item, "group", json_string(PQgetvalue(result, row, 0)));
        for (int f = 0; f < S_FIGURES; f++) {
            json_int_t value = s_int(result, row, f + 1);
            total[f] += value;
            json_object_set_new(item, figures[f], json_integer(value));
        }
        json_array_append_new(rows, item);
    }
    PQclear(result);
    json_t *sum = json_object();
    for (int f = 0; f < S_FIGURES; f++)
        json_object_set_new(sum, figures[f], json_integer(total[f]));
    *out = json_pack("{s:s, s:o, s:o}", "group_by", query->group_by ? query->group_by : "account",
                     "rows", rows, "total", sum);
    return 0;
}

int admin_report_balances(PGconn *db, const admin_report_query_t *query, json_t **out, char *error,
                          size_t error_size)
{
    *out = NULL;
    if (s_check_query(query, error, error_size) != 0)
        return -1;
    s_sql_t sql = {0};
    s_add(&sql, "SELECT a.id, a.name, a.balance_micros, coalesce(s.spent, 0),"
                " coalesce(t.topped, 0), coalesce(s.requests, 0), coalesce(t.granted, 0)"
                " FROM accounts a"
                " LEFT JOIN (SELECT account_id, sum(cost_micros) AS spent, sum(requests) AS"
                " requests FROM usage_hourly WHERE true");
    admin_report_query_t range = {.from_us = query->from_us, .to_us = query->to_us};
    s_add_filters(&sql, db, &range, "hour", true);
    s_add(&sql, " GROUP BY 1) s ON s.account_id = a.id"
                " LEFT JOIN (SELECT la.account_id,"
                " sum(l.amount_micros) FILTER (WHERE e.kind <> 'grant') AS topped,"
                " sum(l.amount_micros) FILTER (WHERE e.kind = 'grant') AS granted"
                " FROM journal_entries e JOIN journal_lines l ON l.entry_id = e.id"
                " JOIN ledger_accounts la ON la.id = l.ledger_account_id"
                " WHERE e.kind IN ('topup', 'adjustment', 'grant') AND la.account_id IS NOT NULL");
    s_add_filters(&sql, db, &range, "e.created_at", false);
    s_add(&sql, " GROUP BY 1) t ON t.account_id = a.id WHERE true");
    if (query->account_id)
        s_add(&sql, " AND a.id = %" PRIu64, query->account_id);
    s_add(&sql, " ORDER BY a.id");
    PGresult *result = s_query(db, sql.text, error, error_size);
    free(sql.text);
    if (!result)
        return -1;
    json_t *accounts = json_array();
    for (int row = 0; row < PQntuples(result); row++)
        json_array_append_new(
            accounts, json_pack("{s:I, s:s, s:I, s:I, s:I, s:I, s:I}", "id", s_int(result, row, 0),
                                "name", PQgetvalue(result, row, 1), "balance_micros",
                                s_int(result, row, 2), "spent_micros", s_int(result, row, 3),
                                "topped_up_micros", s_int(result, row, 4), "requests",
                                s_int(result, row, 5), "granted_micros", s_int(result, row, 6)));
    PQclear(result);
    *out = json_pack("{s:o}", "accounts", accounts);
    return 0;
}

//  Usage columns as the reports show them; started_us for the cursor.
static const char *s_usage_columns =
    "request_id, to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS "
    "started_at, (extract(epoch FROM started_at) * 1000000)::bigint AS started_us, account_id, "
    "api_key_id, model, provider_id, provider_key_id, upstream_model, status, tokens_in, "
    "tokens_out, tokens_cache_read, tokens_cache_write, cost_micros, latency_ms, ttfb_ms, "
    "attempts, estimated, operator_loss, tokens_cache_write_1h, images";

//  The SQL of a usage page (limit > 0) or of the whole range (limit 0).
//  Caller owns return value (free()).
static char *s_usage_sql(PGconn *db, const admin_report_query_t *query, size_t limit, char *error,
                         size_t error_size)
{
    s_sql_t sql = {0};
    s_add(&sql, "SELECT %s FROM usage WHERE true", s_usage_columns);
    bool ok = s_add_filters(&sql, db, query, "started_at", false);
    if (query->status_min)
        s_add(&sql, " AND status >= %d", query->status_min);
    if (ok && query->cursor && *query->cursor) {
        //  "STARTED_US:REQUEST_ID" of the last record of the previous page.
        char *end = NULL;
        long long started = strtoll(query->cursor, &end, 10);
        if (!end || *end != ':' || started < 0 || !end[1]) {
            snprintf(error, error_size, "the cursor is not one this report gave");
            free(sql.text);
            return NULL;
        }
        s_add(&sql,
              " AND (started_at, request_id) < (timestamptz 'epoch' + %lld * interval '1 "
              "microsecond', ",
              started);
        ok = s_add_text(&sql, db, end + 1);
        s_add(&sql, ")");
    }
    if (!ok) {
        snprintf(error, error_size, "cannot quote a text value");
        free(sql.text);
        return NULL;
    }
    s_add(&sql, " ORDER BY started_at DESC, request_id DESC");
    if (limit)
        s_add(&sql, " LIMIT %zu", limit);
    return sql.text;
}

int admin_report_usage(PGconn *db, const admin_report_query_t *query, json_t **out, char *error,
                       size_t error_size)
{
    *out = NULL;
    if (s_check_query(query, error, error_size) != 0)
        return -1;
    size_t limit = query->limit ? query->limit : S_LIMIT_DEFAULT;
    char *sql = s_usage_sql(db, query, limit, error, error_size);
    if (!sql)
        return -1;
    PGresult *result = s_query(db, sql, error, error_size);
    free(sql);
    if (!result)
        return -1;
    json_t *records = json_array();
    int rows = PQntuples(result);
    for (int row = 0; row < rows; row++) {
        json_t *record = json_object();
        for (int column = 0; column < PQnfields(result); column++) {
            const char *name = PQfname(result, column);
            json_t *value;
            if (PQgetisnull(result, row, column))
                value = json_null();
            else if (PQftype(result, column) == 16) //  bool
                value = json_boolean(PQgetvalue(result, row, column)[0] == 't');
            else if (PQftype(result, column) == 20 || PQftype(result, column) == 23) //  int8/4
                value = json_integer(s_int(result, row, column));
            else
                value = json_string(PQgetvalue(result, row, column));
            json_object_set_new(record, name, value);
        }
        json_array_append_new(records, record);
    }
    json_t *next = json_null();
    if (rows > 0 && (size_t)rows == limit) {
        char cursor[160];
        snprintf(cursor, sizeof cursor, "%s:%s", PQgetvalue(result, rows - 1, 2),
                 PQgetvalue(result, rows - 1, 0));
        json_decref(next);
        next = json_string(cursor);
    }
    PQclear(result);
    *out = json_pack("{s:o, s:o}", "records", records, "next_cursor", next);
    return 0;
}

int64_t admin_report_usage_csv(PGconn *db, const admin_report_query_t *query, FILE *out,
                               char *error, size_t error_size)
{
    if (s_check_query(query, error, error_size) != 0)
        return -1;
    char *select = s_usage_sql(db, query, query->limit, error, error_size);
    if (!select)
        return -1;
    s_sql_t sql = {0};
    s_add(&sql, "COPY (%s) TO STDOUT WITH (FORMAT csv, HEADER)", select);
    free(select);
    PGresult *result = PQexec(db, sql.text);
    free(sql.text);
    if (PQresultStatus(result) != PGRES_COPY_OUT) {
        proto_db_error(db, error, error_size);
        PQclear(result);
        return -1;
    }
    PQclear(result);
    int64_t lines = 0;
    char *buffer = NULL;
    int length;
    while ((length = PQgetCopyData(db, &buffer, 0)) > 0) {
        fwrite(buffer, 1, (size_t)length, out);
        lines++;
        PQfreemem(buffer);
    }
    result = PQgetResult(db);
    int rc = PQresultStatus(result) == PGRES_COMMAND_OK ? 0 : -1;
    if (rc != 0)
        proto_db_error(db, error, error_size);
    PQclear(result);
    while ((result = PQgetResult(db)))
        PQclear(result);
    return rc == 0 ? lines - 1 : -1; //  minus the header line
}

//  --------------------------------------------------------------------------
//  Self test

void admin_report_test(bool verbose)
{
    if (verbose)
        printf(" * admin_report: ");
    char error[256];
    admin_report_query_t query = {.from_us = 10, .to_us = 5};
    PROTO_CHECK(s_check_query(&query, error, sizeof error) == -1 && strstr(error, "range"));
    query = (admin_report_query_t){.limit = S_LIMIT_MAX + 1};
    PROTO_CHECK(s_check_query(&query, error, sizeof error) == -1);
    query = (admin_report_query_t){.account_id = (uint64_t)INT64_MAX + 1};
    PROTO_CHECK(s_check_query(&query, error, sizeof error) == -1);
    PROTO_CHECK(s_group_expression(NULL) && s_group_expression("day"));
    PROTO_CHECK(!s_group_expression("nope"));
    //  Without a connection PQescapeLiteral fails; queries without text
    //  values still build.
    query = (admin_report_query_t){
        .from_us = 7200000001LL, .to_us = 9000000000LL, .account_id = 3, .group_by = "model"};
    char *sql = s_spend_sql(NULL, &query, error, sizeof error);
    PROTO_CHECK(sql);
    //  The start is rounded down to its hour: 7200000001 us -> 7200000000.
    PROTO_CHECK(strstr(sql, "hour >= timestamptz 'epoch' + 7200000000 *"));
    PROTO_CHECK(strstr(sql, "account_id = 3") && strstr(sql, "GROUP BY 1"));
    free(sql);
    query.group_by = "x'; DROP TABLE usage; --";
    PROTO_CHECK(!s_spend_sql(NULL, &query, error, sizeof error) && strstr(error, "group by"));
    query = (admin_report_query_t){.cursor = "nonsense"};
    PROTO_CHECK(!s_usage_sql(NULL, &query, 10, error, sizeof error) && strstr(error, "cursor"));
    query = (admin_report_query_t){.status_min = 400};
    sql = s_usage_sql(NULL, &query, 10, error, sizeof error);
    PROTO_CHECK(sql && strstr(sql, "status >= 400") && strstr(sql, "LIMIT 10"));
    free(sql);
    if (verbose)
        printf("OK\n");
}
