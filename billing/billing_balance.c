#include "billing_balance.h"
#include "proto_check.h"
#include "billing_limit.h"
#include "proto_check.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  A limit counter's spend, counting only the current day and month: a
//  counter nobody touched since midnight still holds yesterday's.
static json_t *s_spend(const billing_limit_t *limit, uint64_t wall_us)
{
    int64_t day = 0, month = 0;
    if (limit && limit->day == billing_limit_day(wall_us))
        day = limit->day_micros;
    if (limit && limit->month == billing_limit_month(wall_us))
        month = limit->month_micros;
    return json_pack("{s:I, s:I}", "day_micros", (json_int_t)day, "month_micros",
                     (json_int_t)month);
}

char *billing_balance_meta(billing_book_t *book, proto_catalog_t *catalog,
                           const proto_api_key_t *key, const proto_account_t *account,
                           uint64_t wall_us)
{
    (void)catalog;
    const billing_account_t *figures = billing_book_find(book, account->id);
    int64_t balance =
        figures ? figures->balance_micros - figures->pending_micros : account->balance_micros;
    int64_t available = figures ? billing_book_available(book, account) : account->balance_micros;
    json_t *root = json_pack("{s:I, s:I, s:I, s:o, s:o}", "balance_micros", (json_int_t)balance,
                             "available_micros", (json_int_t)available, "reserved_micros",
                             (json_int_t)(figures ? figures->reserved_micros : 0), "account_spend",
                             s_spend(figures ? &figures->limit : NULL, wall_us), "key_spend",
                             s_spend(billing_book_key(book, key->id), wall_us));
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    assert(text);
    return text;
}

void billing_balance_test(bool verbose)
{
    if (verbose)
        printf(" * billing_balance: ");
    char error[256];
    proto_catalog_t *catalog = proto_catalog_from_json(
        "{\"accounts\":[{\"id\":1,\"name\":\"a\",\"balance_micros\":5000000}],"
        "\"keys\":[{\"id\":7,\"account_id\":1,\"hash\":\"h\"}],"
        "\"models\":[{\"id\":1,\"name\":\"m\"}]}",
        error, sizeof error);
    PROTO_CHECK(catalog);
    const proto_api_key_t *key = proto_catalog_key(catalog, 7);
    const proto_account_t *account = proto_catalog_account(catalog, 1);
    billing_book_t *book = billing_book_new();
    uint64_t wall_us = 1764720000ULL * 1000000; //  2025-12-03 00:00 UTC
    //  An account billing has not seen: the catalog's balance, no spend.
    char *text = billing_balance_meta(book, catalog, key, account, wall_us);
    json_t *root = json_loads(text, 0, NULL);
    PROTO_CHECK(json_integer_value(json_object_get(root, "balance_micros")) == 5000000);
    PROTO_CHECK(json_integer_value(json_object_get(root, "available_micros")) == 5000000);
    json_decref(root);
    free(text);
    //  One request admitted and settled at 1.25: the balance counts it
    //  before the ledger commits it, and so do the day and month.
    billing_denial_t denial;
    PROTO_CHECK(billing_book_admit(book, "r1", account, key, 10, 2000000, 1000, wall_us, &denial));
    billing_book_admit(book, "r2", account, key, 10, 500000, 1000, wall_us, &denial);
    billing_book_settle(book, catalog, "r1", 1, 7, 1250000, 10, false, 1001, wall_us);
    text = billing_balance_meta(book, catalog, key, account, wall_us);
    root = json_loads(text, 0, NULL);
    PROTO_CHECK(json_integer_value(json_object_get(root, "balance_micros")) == 3750000);
    PROTO_CHECK(json_integer_value(json_object_get(root, "reserved_micros")) == 500000);
    PROTO_CHECK(json_integer_value(json_object_get(root, "available_micros")) == 3250000);
    json_t *spend = json_object_get(root, "key_spend");
    PROTO_CHECK(json_integer_value(json_object_get(spend, "day_micros")) == 1250000);
    PROTO_CHECK(json_integer_value(json_object_get(spend, "month_micros")) == 1250000);
    spend = json_object_get(root, "account_spend");
    PROTO_CHECK(json_integer_value(json_object_get(spend, "day_micros")) == 1250000);
    json_decref(root);
    free(text);
    //  The next day: the day starts at zero, the month goes on.
    text = billing_balance_meta(book, catalog, key, account, wall_us + 86400ULL * 1000000);
    root = json_loads(text, 0, NULL);
    spend = json_object_get(root, "key_spend");
    PROTO_CHECK(json_integer_value(json_object_get(spend, "day_micros")) == 0);
    PROTO_CHECK(json_integer_value(json_object_get(spend, "month_micros")) == 1250000);
    json_decref(root);
    free(text);
    billing_book_destroy(&book);
    proto_catalog_destroy(&catalog);
    if (verbose)
        printf("OK\n");
}
