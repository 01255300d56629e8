#include "ingress_usage.h"
#include "proto_check.h"

#include <assert.h>
#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

//  YYYY-MM-DD, a real date.
static bool s_date_ok(const char *text)
{
    if (strlen(text) != 10 || text[4] != '-' || text[7] != '-')
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && !isdigit((unsigned char)text[i]))
            return false;
    struct tm tm = {0};
    const char *end = strptime(text, "%Y-%m-%d", &tm);
    if (!end || *end)
        return false;
    //  strptime takes 2025-02-31; timegm moves it to March (in place).
    int day = tm.tm_mday, month = tm.tm_mon;
    timegm(&tm);
    return tm.tm_mday == day && tm.tm_mon == month;
}

int ingress_usage_check(const char *view, const char *start_date, const char *end_date, char *error,
                        size_t error_size)
{
    if (strcmp(view, INGRESS_USAGE_DASHBOARD) != 0)
        return 0;
    const char *names[] = {"start_date", "end_date"};
    const char *values[] = {start_date, end_date};
    for (int i = 0; i < 2; i++)
        if (values[i] && !s_date_ok(values[i])) {
            snprintf(error, error_size, "Invalid '%s': expected a date as YYYY-MM-DD", names[i]);
            return -1;
        }
    if (start_date && end_date && strcmp(start_date, end_date) > 0) {
        snprintf(error, error_size, "Invalid 'end_date': before 'start_date'");
        return -1;
    }
    return 0;
}

//  A limit of the catalog: 0 (or, for spend caps, -1) means none: null.
static json_t *s_limit(int64_t value, int64_t none)
{
    return value == none ? json_null() : json_integer((json_int_t)value);
}

static json_t *s_limits(const proto_limits_t *limits)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o}", "rpm", s_limit(limits->rpm, 0), "tpm",
                     s_limit(limits->tpm, 0), "concurrency", s_limit(limits->concurrency, 0),
                     "daily_spend_micros", s_limit(limits->daily_micros, -1),
                     "monthly_spend_micros", s_limit(limits->monthly_micros, -1));
}

static json_t *s_models(const proto_model_list_t *models)
{
    if (models->any)
        return json_null();
    json_t *list = json_array();
    for (size_t i = 0; i < models->count; i++)
        json_array_append_new(list, json_string(models->names[i]));
    return list;
}

//  Micro-units as a decimal text ("12.3456"): exact, for people.
static json_t *s_amount(int64_t micros)
{
    uint64_t magnitude = micros < 0 ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros;
    char text[48];
    snprintf(text, sizeof text, "%s%" PRIu64 ".%06" PRIu64, micros < 0 ? "-" : "",
             magnitude / 1000000, magnitude % 1000000);
    size_t length = strlen(text);
    while (text[length - 1] == '0' && text[length - 3] != '.')
        text[--length] = '\0';
    return json_string(text);
}

static int64_t s_get(json_t *object, const char *key)
{
    return (int64_t)json_integer_value(json_object_get(object, key));
}

static json_t *s_self(proto_catalog_t *catalog, const proto_api_key_t *key,
                      const proto_account_t *account, json_t *figures)
{
    json_t *expires = json_null();
    if (key->expires_us) {
        time_t seconds = (time_t)(key->expires_us / 1000000);
        struct tm utc;
        gmtime_r(&seconds, &utc);
        char text[32];
        strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
        expires = json_string(text);
    }
    (void)catalog;
    int64_t balance = s_get(figures, "balance_micros");
    return json_pack(
        "{s:s, s:s, s:o, s:I, s:I, s:I, "
        "s:{s:I, s:s, s:s, s:s, s:o, s:o, s:o, s:O}, "
        "s:{s:I, s:s, s:s, s:o, s:o, s:O}}",
        "object", "usage", "currency", account->currency ? account->currency : "", "balance",
        s_amount(balance), "balance_micros", (json_int_t)balance, "available_micros",
        (json_int_t)s_get(figures, "available_micros"), "reserved_micros",
        (json_int_t)s_get(figures, "reserved_micros"), "key", "id", (json_int_t)key->id, "name",
        key->name ? key->name : "", "prefix", key->prefix ? key->prefix : "", "status",
        key->status ? key->status : "", "expires_at", expires, "models", s_models(&key->models),
        "limits", s_limits(&key->limits), "spend", json_object_get(figures, "key_spend"), "account",
        "id", (json_int_t)account->id, "name", account->name ? account->name : "", "status",
        account->active ? "active" : "disabled", "models", s_models(&account->models), "limits",
        s_limits(&account->limits), "spend", json_object_get(figures, "account_spend"));
}

char *ingress_usage_answer(const char *view, proto_catalog_t *catalog, const proto_api_key_t *key,
                           const char *meta)
{
    const proto_account_t *account = proto_catalog_account(catalog, key->account_id);
    json_t *figures = meta ? json_loads(meta, 0, NULL) : NULL;
    if (!account || !json_is_integer(json_object_get(figures, "balance_micros")) ||
        !json_is_object(json_object_get(figures, "key_spend")) ||
        !json_is_object(json_object_get(figures, "account_spend"))) {
        json_decref(figures);
        return NULL;
    }
    int64_t balance = s_get(figures, "balance_micros");
    int64_t month = s_get(json_object_get(figures, "account_spend"), "month_micros");
    json_t *root;
    if (strcmp(view, INGRESS_USAGE_SUBSCRIPTION) == 0) {
        //  What dashboards show as "remaining" is hard_limit - total_usage:
        //  with the month's spend as usage, the hard limit is what the
        //  account had at the month's start less its other movements,
        //  i.e. balance + this month's spend. Amounts are in the account's
        //  currency whatever the field names say.
        double limit = (double)(balance + month) / 1e6;
        root = json_pack("{s:s, s:b, s:f, s:f, s:f, s:I, s:s, s:{s:s, s:s}}", "object",
                         "billing_subscription", "has_payment_method", 1, "soft_limit_usd", limit,
                         "hard_limit_usd", limit, "system_hard_limit_usd", limit, "access_until",
                         (json_int_t)(key->expires_us / 1000000), "account_name",
                         account->name ? account->name : "", "plan", "title", "tollgate", "id",
                         "tollgate");
    } else if (strcmp(view, INGRESS_USAGE_DASHBOARD) == 0)
        //  In cents, as the dashboard API counts.
        root = json_pack("{s:s, s:f, s:[]}", "object", "list", "total_usage", (double)month / 1e4,
                         "daily_costs");
    else
        root = s_self(catalog, key, account, figures);
    json_decref(figures);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

void ingress_usage_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_usage: ");
    char error[128];
    PROTO_CHECK(ingress_usage_check(INGRESS_USAGE_DASHBOARD, "2026-12-01", "2026-12-31", error,
                                    sizeof error) == 0);
    PROTO_CHECK(ingress_usage_check(INGRESS_USAGE_DASHBOARD, NULL, NULL, error, sizeof error) == 0);
    PROTO_CHECK(ingress_usage_check(INGRESS_USAGE_DASHBOARD, "2026-13-01", NULL, error,
                                    sizeof error) == -1 &&
                strstr(error, "'start_date'"));
    PROTO_CHECK(ingress_usage_check(INGRESS_USAGE_DASHBOARD, NULL, "2026-02-30", error,
                                    sizeof error) == -1 &&
                strstr(error, "'end_date'"));
    PROTO_CHECK(ingress_usage_check(INGRESS_USAGE_DASHBOARD, "2026-12-02", "2026-12-01", error,
                                    sizeof error) == -1);
    PROTO_CHECK(ingress_usage_check(INGRESS_USAGE_SELF, "junk", NULL, error, sizeof error) == 0);

    proto_catalog_t *catalog = proto_catalog_from_json(
        "{\"accounts\":[{\"id\":1,\"name\":\"acme\",\"currency\":\"EUR\",\"rpm\":60,"
        "\"daily_micros\":5000000}],"
        "\"keys\":[{\"id\":7,\"account_id\":1,\"hash\":\"h\",\"name\":\"ci\",\"prefix\":\"tg-abc\","
        "\"allowed_models\":[\"m\"]}]}",
        error, sizeof error);
    PROTO_CHECK(catalog);
    const proto_api_key_t *key = proto_catalog_key(catalog, 7);
    const char *meta = "{\"balance_micros\":12345000,\"available_micros\":12000000,"
                       "\"reserved_micros\":345000,\"account_spend\":{\"day_micros\":1000000,"
                       "\"month_micros\":2500000},\"key_spend\":{\"day_micros\":500000,"
                       "\"month_micros\":700000}}";
    char *text = ingress_usage_answer(INGRESS_USAGE_SELF, catalog, key, meta);
    json_t *root = json_loads(text, 0, NULL);
    PROTO_CHECK(root);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(root, "balance")), "12.345") == 0);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(root, "currency")), "EUR") == 0);
    json_t *k = json_object_get(root, "key");
    PROTO_CHECK(strcmp(json_string_value(json_object_get(k, "prefix")), "tg-abc") == 0);
    PROTO_CHECK(json_array_size(json_object_get(k, "models")) == 1);
    PROTO_CHECK(json_is_null(json_object_get(json_object_get(k, "limits"), "rpm")));
    PROTO_CHECK(json_integer_value(json_object_get(json_object_get(k, "spend"), "month_micros")) ==
                700000);
    json_t *a = json_object_get(root, "account");
    PROTO_CHECK(json_integer_value(json_object_get(json_object_get(a, "limits"), "rpm")) == 60);
    PROTO_CHECK(json_integer_value(json_object_get(json_object_get(a, "limits"),
                                                   "daily_spend_micros")) == 5000000);
    PROTO_CHECK(json_is_null(json_object_get(a, "models")));
    json_decref(root);
    free(text);
    text = ingress_usage_answer(INGRESS_USAGE_SUBSCRIPTION, catalog, key, meta);
    root = json_loads(text, 0, NULL);
    PROTO_CHECK(json_real_value(json_object_get(root, "hard_limit_usd")) == 14.845);
    json_decref(root);
    free(text);
    text = ingress_usage_answer(INGRESS_USAGE_DASHBOARD, catalog, key, meta);
    root = json_loads(text, 0, NULL);
    PROTO_CHECK(json_real_value(json_object_get(root, "total_usage")) == 250.0);
    json_decref(root);
    free(text);
    PROTO_CHECK(!ingress_usage_answer(INGRESS_USAGE_SELF, catalog, key, "{}"));
    PROTO_CHECK(!ingress_usage_answer(INGRESS_USAGE_SELF, catalog, key, "not json"));
    proto_catalog_destroy(&catalog);
    if (verbose)
        printf("OK\n");
}
