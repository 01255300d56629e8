#include "proto_ledger_check.h"
#include "proto_db.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Examples of each problem shown in the report.
#define S_EXAMPLES 10

typedef struct {
    const char *name;    //  what must hold
    const char *problem; //  how one violation is described; %s are the columns
    const char *count;   //  SQL: how many violate it
    const char *sample;  //  SQL: up to S_EXAMPLES violations, 3 text columns
} s_check_t;

//  `tollgate ledger prune` drops usage partitions (and so rows) before the
//  month it records in settings; journal entries and daily rollups stay.
//  Checks that pair them with rows look only after that month (a day more
//  for journal entries, which are written a little after a row's start).
#define S_PRUNED_BEFORE                                                                            \
    "(SELECT coalesce(max((value #>> '{}')::date), '-infinity'::date) FROM settings"               \
    " WHERE key = 'usage_pruned_before')"
#define S_AFTER_PRUNE " AND e.created_at >= " S_PRUNED_BEFORE " + 1"
#define S_DAYS_KEPT " AND day >= " S_PRUNED_BEFORE

static const s_check_t s_checks[] = {
    {"account balances equal their journal lines",
     "account %s: balance_micros %s, journal lines sum to %s",
     "SELECT count(*) FROM (SELECT a.id FROM accounts a"
     " LEFT JOIN ledger_accounts la ON la.account_id = a.id"
     " LEFT JOIN journal_lines l ON l.ledger_account_id = la.id"
     " GROUP BY a.id, a.balance_micros"
     " HAVING a.balance_micros <> coalesce(sum(l.amount_micros), 0)) bad",
     "SELECT a.id::text, a.balance_micros::text, coalesce(sum(l.amount_micros), 0)::text"
     " FROM accounts a"
     " LEFT JOIN ledger_accounts la ON la.account_id = a.id"
     " LEFT JOIN journal_lines l ON l.ledger_account_id = la.id"
     " GROUP BY a.id, a.balance_micros"
     " HAVING a.balance_micros <> coalesce(sum(l.amount_micros), 0) ORDER BY a.id LIMIT 10"},
    {"journal entries balance to zero", "journal entry %s: %s lines summing to %s",
     "SELECT count(*) FROM (SELECT e.id FROM journal_entries e"
     " LEFT JOIN journal_lines l ON l.entry_id = e.id GROUP BY e.id"
     " HAVING count(l.entry_id) < 2 OR coalesce(sum(l.amount_micros), 0) <> 0) bad",
     "SELECT e.id::text, count(l.entry_id)::text, coalesce(sum(l.amount_micros), 0)::text"
     " FROM journal_entries e LEFT JOIN journal_lines l ON l.entry_id = e.id GROUP BY e.id"
     " HAVING count(l.entry_id) < 2 OR coalesce(sum(l.amount_micros), 0) <> 0"
     " ORDER BY e.id LIMIT 10"},
    //  Usage is journaled per (account, batch) (migration 0020): a request's
    //  money is its journal_requests row (request_id is its primary key, so
    //  "exactly one" is "one that exists"), inside the entry that holds its
    //  account's line.
    {"costed usage rows have their journaled request", "usage %s: cost_micros %s, journaled %s",
     "SELECT count(*) FROM usage u"
     " LEFT JOIN journal_requests r ON r.request_id = u.request_id"
     " LEFT JOIN journal_entries e ON e.id = r.entry_id AND e.kind = 'usage'"
     " LEFT JOIN ledger_accounts la ON la.account_id = u.account_id"
     " LEFT JOIN journal_lines l ON l.entry_id = e.id AND l.ledger_account_id = la.id"
     " WHERE u.cost_micros > 0 AND (l.amount_micros IS NULL OR r.amount_micros <> u.cost_micros)",
     "SELECT u.request_id, u.cost_micros::text,"
     " CASE WHEN r.request_id IS NULL THEN 'missing'"
     " WHEN l.amount_micros IS NULL THEN r.amount_micros || ' in entry ' || r.entry_id"
     " || ' without a line of account ' || u.account_id"
     " ELSE r.amount_micros || ' in entry ' || r.entry_id END"
     " FROM usage u"
     " LEFT JOIN journal_requests r ON r.request_id = u.request_id"
     " LEFT JOIN journal_entries e ON e.id = r.entry_id AND e.kind = 'usage'"
     " LEFT JOIN ledger_accounts la ON la.account_id = u.account_id"
     " LEFT JOIN journal_lines l ON l.entry_id = e.id AND l.ledger_account_id = la.id"
     " WHERE u.cost_micros > 0 AND (l.amount_micros IS NULL OR r.amount_micros <> u.cost_micros)"
     " ORDER BY u.request_id LIMIT 10"},
    //  An entry's one customer line is minus the sum of its requests, so
    //  the journal alone (usage partitions get pruned) ties every request
    //  to the money that moved for it.
    {"usage entries equal their requests", "journal entry %s: %s, customer lines %s",
     "SELECT count(*) FROM journal_entries e"
     " LEFT JOIN (SELECT entry_id, count(*) AS n, sum(amount_micros) AS total"
     " FROM journal_requests GROUP BY entry_id) r ON r.entry_id = e.id"
     " LEFT JOIN (SELECT l.entry_id, count(*) AS n, sum(l.amount_micros) AS total"
     " FROM journal_lines l JOIN ledger_accounts la ON la.id = l.ledger_account_id"
     " WHERE la.account_id IS NOT NULL GROUP BY l.entry_id) c ON c.entry_id = e.id"
     " WHERE e.kind = 'usage' AND (r.n IS NULL OR c.n IS DISTINCT FROM 1 OR c.total <> -r.total)",
     "SELECT e.id::text, coalesce(r.n, 0) || ' requests of ' || coalesce(r.total, 0) || ' micros',"
     " coalesce(c.n, 0) || ' summing to ' || coalesce(c.total, 0)"
     " FROM journal_entries e"
     " LEFT JOIN (SELECT entry_id, count(*) AS n, sum(amount_micros) AS total"
     " FROM journal_requests GROUP BY entry_id) r ON r.entry_id = e.id"
     " LEFT JOIN (SELECT l.entry_id, count(*) AS n, sum(l.amount_micros) AS total"
     " FROM journal_lines l JOIN ledger_accounts la ON la.id = l.ledger_account_id"
     " WHERE la.account_id IS NOT NULL GROUP BY l.entry_id) c ON c.entry_id = e.id"
     " WHERE e.kind = 'usage' AND (r.n IS NULL OR c.n IS DISTINCT FROM 1 OR c.total <> -r.total)"
     " ORDER BY e.id LIMIT 10"},
    //  With "entries balance" and "one customer line" above, two lines of
    //  which one is revenue's make that line +total: the money went to
    //  revenue, not to another system account (grants, funding).
    {"usage entries credit revenue", "journal entry %s: %s lines, %s of them on revenue",
     "SELECT count(*) FROM journal_entries e LEFT JOIN (SELECT l.entry_id, count(*) AS n,"
     " count(*) FILTER (WHERE la.system_name = 'revenue') AS revenue FROM journal_lines l"
     " JOIN ledger_accounts la ON la.id = l.ledger_account_id GROUP BY l.entry_id) x"
     " ON x.entry_id = e.id"
     " WHERE e.kind = 'usage' AND (x.n IS DISTINCT FROM 2 OR x.revenue IS DISTINCT FROM 1)",
     "SELECT e.id::text, coalesce(x.n, 0)::text, coalesce(x.revenue, 0)::text"
     " FROM journal_entries e LEFT JOIN (SELECT l.entry_id, count(*) AS n,"
     " count(*) FILTER (WHERE la.system_name = 'revenue') AS revenue FROM journal_lines l"
     " JOIN ledger_accounts la ON la.id = l.ledger_account_id GROUP BY l.entry_id) x"
     " ON x.entry_id = e.id"
     " WHERE e.kind = 'usage' AND (x.n IS DISTINCT FROM 2 OR x.revenue IS DISTINCT FROM 1)"
     " ORDER BY e.id LIMIT 10"},
    {"journaled requests have their usage entry", "request %s: entry %s %s",
     "SELECT count(*) FROM journal_requests r WHERE NOT EXISTS"
     " (SELECT 1 FROM journal_entries e WHERE e.id = r.entry_id AND e.kind = 'usage')",
     "SELECT r.request_id, r.entry_id::text, 'is not a usage entry' FROM journal_requests r"
     " WHERE NOT EXISTS"
     " (SELECT 1 FROM journal_entries e WHERE e.id = r.entry_id AND e.kind = 'usage')"
     " ORDER BY r.request_id LIMIT 10"},
    //  Of the same cost: money journaled for a request whose row says it
    //  was free (or cost something else) is money charged for nothing.
    {"journaled requests have their usage row", "journal entry %s for request %s: %s",
     "SELECT count(*) FROM journal_requests r JOIN journal_entries e ON e.id = r.entry_id"
     " WHERE true" S_AFTER_PRUNE " AND NOT EXISTS (SELECT 1 FROM usage u"
     " WHERE u.request_id = r.request_id AND u.cost_micros = r.amount_micros)",
     "SELECT e.id::text, r.request_id, r.amount_micros || ' journaled, ' || coalesce("
     "(SELECT 'usage row costs ' || string_agg(u.cost_micros::text, ', ') FROM usage u"
     " WHERE u.request_id = r.request_id), 'no usage row')"
     " FROM journal_requests r JOIN journal_entries e ON e.id = r.entry_id WHERE true" S_AFTER_PRUNE
     " AND NOT EXISTS (SELECT 1 FROM usage u"
     " WHERE u.request_id = r.request_id AND u.cost_micros = r.amount_micros)"
     " ORDER BY e.id, r.request_id LIMIT 10"},
    {"every request id has one usage row", "request %s: %s rows, first started %s",
     "SELECT count(*) FROM (SELECT request_id FROM usage GROUP BY request_id"
     " HAVING count(*) > 1) dup",
     "SELECT request_id, count(*)::text, min(started_at)::text FROM usage GROUP BY request_id"
     " HAVING count(*) > 1 ORDER BY request_id LIMIT 10"},
    //  An upstream call lost with its dispatch is the operator's, never the
    //  account's (docs/billing.md, "Every upstream call, once").
    {"operator's losses charge nothing", "usage %s: cost_micros %s charged to account %s",
     "SELECT count(*) FROM usage WHERE operator_loss AND cost_micros <> 0",
     "SELECT request_id, cost_micros::text, account_id::text FROM usage"
     " WHERE operator_loss AND cost_micros <> 0 ORDER BY request_id LIMIT 10"},
    //  The rollups are written in the same statement as the rows (without
    //  the operator's losses); compared per day and account (a full scan of
    //  usage: this is an audit).
    {"daily rollups equal the usage rows", "day %s account %s: %s",
     "SELECT count(*) FROM (SELECT day, account_id, sum(requests) AS n, sum(cost_micros) AS c,"
     " sum(images) AS i FROM usage_daily GROUP BY 1, 2) r FULL JOIN (SELECT (started_at AT TIME"
     " ZONE 'UTC')::date AS day, account_id, count(*) AS n, sum(cost_micros) AS c, sum(images)"
     " AS i FROM usage WHERE NOT operator_loss GROUP BY 1, 2) u"
     " USING (day, account_id) WHERE (r.n IS DISTINCT FROM u.n OR r.c IS DISTINCT FROM u.c"
     " OR r.i IS DISTINCT FROM u.i)" S_DAYS_KEPT,
     "SELECT day::text, account_id::text, 'rollup ' || coalesce(r.n, 0) || ' requests '"
     " || coalesce(r.c, 0) || ' micros ' || coalesce(r.i, 0) || ' images, usage '"
     " || coalesce(u.n, 0) || ' requests ' || coalesce(u.c, 0) || ' micros '"
     " || coalesce(u.i, 0) || ' images'"
     " FROM (SELECT day, account_id, sum(requests) AS n, sum(cost_micros) AS c,"
     " sum(images) AS i FROM usage_daily GROUP BY 1, 2) r FULL JOIN (SELECT (started_at AT TIME"
     " ZONE 'UTC')::date AS day, account_id, count(*) AS n, sum(cost_micros) AS c, sum(images)"
     " AS i FROM usage WHERE NOT operator_loss GROUP BY 1, 2) u"
     " USING (day, account_id) WHERE (r.n IS DISTINCT FROM u.n OR r.c IS DISTINCT FROM u.c"
     " OR r.i IS DISTINCT FROM u.i)" S_DAYS_KEPT " ORDER BY 1, 2 LIMIT 10"},
};
#define S_CHECK_COUNT (sizeof s_checks / sizeof s_checks[0])

//  Appends formatted text to a growing report.
static void s_append(char **report, size_t *used, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static void s_append(char **report, size_t *used, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    char *line = NULL;
    int length = vasprintf(&line, format, args);
    va_end(args);
    assert(length >= 0);
    *report = realloc(*report, *used + (size_t)length + 1);
    assert(*report);
    memcpy(*report + *used, line, (size_t)length + 1);
    *used += (size_t)length;
    free(line);
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

int proto_ledger_check_run(PGconn *db, char **report)
{
    assert(db && report);
    *report = NULL;
    size_t used = 0;
    s_append(report, &used, "%s", "");
    char error[512];
    if (proto_db_exec(db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", error, sizeof error) !=
        0) {
        s_append(report, &used, "ledger check failed: %s\n", error);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < S_CHECK_COUNT && rc >= 0; i++) {
        const s_check_t *check = &s_checks[i];
        PGresult *count = s_query(db, check->count, error, sizeof error);
        if (!count) {
            s_append(report, &used, "ledger check failed: %s: %s\n", check->name, error);
            rc = -1;
            break;
        }
        long long bad = strtoll(PQgetvalue(count, 0, 0), NULL, 10);
        PQclear(count);
        if (bad == 0) {
            s_append(report, &used, "ok    %s\n", check->name);
            continue;
        }
        rc = 1;
        s_append(report, &used, "FAIL  %s: %lld violation%s\n", check->name, bad,
                 bad == 1 ? "" : "s");
        PGresult *sample = s_query(db, check->sample, error, sizeof error);
        if (!sample) {
            s_append(report, &used, "ledger check failed: %s: %s\n", check->name, error);
            rc = -1;
            break;
        }
        for (int row = 0; row < PQntuples(sample) && row < S_EXAMPLES; row++) {
            s_append(report, &used, "      ");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
            s_append(report, &used, check->problem, PQgetvalue(sample, row, 0),
                     PQgetvalue(sample, row, 1), PQgetvalue(sample, row, 2));
#pragma GCC diagnostic pop
            s_append(report, &used, "\n");
        }
        PQclear(sample);
    }
    proto_db_exec(db, "ROLLBACK", error, sizeof error);
    return rc;
}
