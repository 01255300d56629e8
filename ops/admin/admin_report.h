/*  admin_report: the reports operators read, as SQL over the ledger's
    tables. The ledger program writes these tables; the admin side reads
    them: the admin API's report routes (admin_reads.c) and `tollgate
    ledger ...` (ops/ops_ledger.c) both use this module (docs/billing.md
    lists the reports).

    Read-only. Every function takes an open connection and a query, returns
    0 with *out set (caller owns it, json_decref), or -1 with a one-line
    reason in error (bad query values are reported the same way, without
    touching the database).

    Time ranges are [from_us, to_us) in epoch microseconds, 0 meaning open.
    Spend reports read the hourly rollup, so their edges are rounded down to
    whole UTC hours; usage records read the rows themselves.
*/
#ifndef ADMIN_REPORT_H_INCLUDED
#define ADMIN_REPORT_H_INCLUDED

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

//  What a report is about. Zeroed means everything.
typedef struct {
    int64_t from_us;      //  from (inclusive), epoch us; 0 = the beginning
    int64_t to_us;        //  to (exclusive), epoch us; 0 = now and beyond
    uint64_t account_id;  //  only this account; 0 = any
    uint64_t key_id;      //  only this API key; 0 = any
    uint64_t provider_id; //  only this provider; 0 = any
    const char *model;    //  only this logical model; NULL = any
    const char *group_by; //  spend: account, key, model, provider, hour or day
    int status_min;       //  usage: status >= this; 0 = any
    size_t limit;         //  usage: records per page (1..10000, default 100)
    const char *cursor;   //  usage: next_cursor of the previous page, or NULL
} admin_report_query_t;

//  Spend per group over the range: {"group_by", "rows": [{"group", "requests",
//  "errors", "tokens_in", "tokens_out", "tokens_cache_read",
//  "tokens_cache_write", "cost_micros"}], "total": {same figures}}, rows by
//  cost, largest first.
int admin_report_spend(PGconn *db, const admin_report_query_t *query, json_t **out, char *error,
                       size_t error_size);

//  Accounts with their balance and, over the range, their spend and
//  top-ups: {"accounts": [{"id", "name", "balance_micros", "spent_micros",
//  "topped_up_micros", "granted_micros", "requests"}]} (granted:
//  recurring grants, apart from top-ups and adjustments). account_id narrows it to one.
int admin_report_balances(PGconn *db, const admin_report_query_t *query, json_t **out, char *error,
                          size_t error_size);

//  Usage records, newest first, with keyset paging: {"records": [{...every
//  usage column...}], "next_cursor": "..." or null}.
int admin_report_usage(PGconn *db, const admin_report_query_t *query, json_t **out, char *error,
                       size_t error_size);

//  The same records (no paging: the whole range) as CSV with a header line,
//  streamed to `out` with COPY. Returns rows written, or -1.
int64_t admin_report_usage_csv(PGconn *db, const admin_report_query_t *query, FILE *out,
                               char *error, size_t error_size);

//  Self test: query validation and SQL building (no database).
void admin_report_test(bool verbose);

#endif
