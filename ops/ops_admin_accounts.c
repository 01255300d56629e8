/*  ops_admin_accounts: the admin CLI's commands for accounts and client API keys.

    Accounts with their limits, balances and recurring grants; client API keys; usage
    records. `first` indexes the first positional after the command words.
*/
#include "ops_admin_cli.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Limits shared by accounts and keys (docs/billing.md, "The limits").
#define S_LIMIT_SETTABLES                                                                          \
    {"rpm-limit", "rpm_limit", OA_SET_INT}, {"tpm-limit", "tpm_limit", OA_SET_INT},                \
        {"concurrency-limit", "concurrency_limit", OA_SET_INT},                                    \
        {"daily-spend", "daily_spend", OA_SET_MONEY},                                              \
        {"monthly-spend", "monthly_spend", OA_SET_MONEY},                                          \
    {                                                                                              \
        "force-capabilities", "force_capabilities", OA_SET_TAGS                                    \
    }
#define S_LIMIT_OPTIONS                                                                            \
    "rpm-limit tpm-limit concurrency-limit daily-spend monthly-spend force-capabilities"
#define S_LIMIT_USAGE                                                                              \
    "[--rpm-limit N|none] [--tpm-limit N|none] [--concurrency-limit N|none] "                      \
    "[--daily-spend AMOUNT|none] [--monthly-spend AMOUNT|none] [--force-capabilities "             \
    "TAG,TAG|none]"

static const oa_settable_t s_account_settables[] = {
    S_LIMIT_SETTABLES,
    {"status", "status", OA_SET_TEXT},
    {"models", "allowed_models", OA_SET_MODELS},
    {"multiplier", "multiplier_ppm", OA_SET_MULTIPLIER},
    {NULL, NULL, OA_SET_TEXT}};

static const oa_settable_t s_key_settables[] = {S_LIMIT_SETTABLES,
                                                {"name", "name", OA_SET_TEXT},
                                                {"status", "status", OA_SET_TEXT},
                                                {"models", "models", OA_SET_MODELS},
                                                {"expires-at", "expires_at", OA_SET_TIME},
                                                {NULL, NULL, OA_SET_TEXT}};

//  A limit for people: "none" for null.
static void s_limit_text(json_t *object, const char *key, bool money, char *out, size_t size)
{
    json_t *value = json_object_get(object, key);
    if (!json_is_integer(value))
        snprintf(out, size, "none");
    else if (money)
        ops_admin_format_micros(json_integer_value(value), out, size);
    else
        snprintf(out, size, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
}

//  "rpm 10, tpm none, ..." of an account or a key.
static void s_limits_line(json_t *object, char *out, size_t size)
{
    char rpm[32], tpm[32], concurrency[32], daily[32], monthly[32];
    s_limit_text(object, "rpm_limit", false, rpm, sizeof rpm);
    s_limit_text(object, "tpm_limit", false, tpm, sizeof tpm);
    s_limit_text(object, "concurrency_limit", false, concurrency, sizeof concurrency);
    s_limit_text(object, "daily_spend_micros", true, daily, sizeof daily);
    s_limit_text(object, "monthly_spend_micros", true, monthly, sizeof monthly);
    snprintf(out, size, "rpm %s, tpm %s, concurrency %s, daily spend %s, monthly spend %s", rpm,
             tpm, concurrency, daily, monthly);
}

//  GET /admin/accounts/NAME, or POST to one of its sub-paths.
static int s_account_call(oa_client_t *client, const char *method, const char *account,
                          const char *suffix, json_t *body, json_t **answer)
{
    char *name = oa_escape(account);
    char path[2048];
    snprintf(path, sizeof path, "/admin/accounts/%s%s", name, suffix);
    free(name);
    return oa_call(client, method, path, body, answer);
}

static int s_account_add(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "name", args->words[first]);
    oa_put_str(body, args, "balance", "balance");
    oa_put_str(body, args, "currency", "currency");
    if (oa_put_settables(body, args, s_account_settables) != 0) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", "/admin/accounts", body, &answer);
    if (rc == 0 && !client->json) {
        char balance[32];
        ops_admin_format_micros(oa_int(answer, "balance_micros"), balance, sizeof balance);
        printf("account %s added (id %" JSON_INTEGER_FORMAT "), balance %s %s\n",
               oa_str(answer, "name"), oa_int(answer, "id"), balance, oa_str(answer, "currency"));
    }
    json_decref(answer);
    return rc;
}

static int s_account_list(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", "/admin/accounts", NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_table(client, "account", json_object_get(answer, "data"), "no accounts");
    json_decref(answer);
    return rc;
}

static int s_account_show(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = s_account_call(client, "GET", args->words[first], "", NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_fields(client, "account", answer);
    json_decref(answer);
    return rc;
}

static int s_account_topup(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "amount", args->words[first + 1]);
    oa_put_str(body, args, "reason", "reason");
    json_t *answer = NULL;
    int rc = s_account_call(client, "POST", args->words[first], "/topup", body, &answer);
    if (rc == 0 && !client->json) {
        json_t *entry = json_object_get(answer, "journal_entry");
        char amount[32], balance[32];
        ops_admin_format_micros(oa_int(entry, "amount_micros"), amount, sizeof amount);
        ops_admin_format_micros(oa_int(answer, "balance_micros"), balance, sizeof balance);
        printf("account %s: %s of %s, balance now %s %s (journal entry %" JSON_INTEGER_FORMAT ")\n",
               oa_str(answer, "name"), oa_str(entry, "kind"), amount, balance,
               oa_str(answer, "currency"), oa_int(entry, "id"));
    }
    json_decref(answer);
    return rc;
}

static int s_account_set(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *body = json_object();
    if (oa_put_settables(body, args, s_account_settables) != 0) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = s_account_call(client, "PATCH", args->words[first], "", body, &answer);
    if (rc == 0 && !client->json) {
        char limits[256], multiplier[32];
        s_limits_line(answer, limits, sizeof limits);
        ops_admin_format_micros(oa_int(answer, "multiplier_ppm"), multiplier, sizeof multiplier);
        printf("account %s: %s, multiplier %s, %s\n", oa_str(answer, "name"),
               oa_str(answer, "status"), multiplier, limits);
    }
    json_decref(answer);
    return rc;
}

static const oa_settable_t s_grant_settables[] = {{"amount", "amount", OA_SET_MONEY},
                                                  {"every", "every", OA_SET_TEXT},
                                                  {"starts-at", "starts_at", OA_SET_TIME},
                                                  {"reason", "reason", OA_SET_TEXT},
                                                  {NULL, NULL, OA_SET_TEXT}};

//  A recurring credit: the ledger grants it once per period (docs/billing.md).
static int s_account_grant(oa_client_t *client, oa_args_t *args, int first)
{
    if (!oa_option(args, "amount") || !oa_option(args, "every")) {
        fprintf(stderr, "tollgate: account grant needs --amount AMOUNT and --every "
                        "day|week|month\n");
        return 2;
    }
    json_t *body = json_object();
    if (oa_put_settables(body, args, s_grant_settables) != 0) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = s_account_call(client, "POST", args->words[first], "/grants", body, &answer);
    if (rc == 0 && !client->json) {
        char amount[32];
        ops_admin_format_micros(oa_int(answer, "amount_micros"), amount, sizeof amount);
        printf("grant %" JSON_INTEGER_FORMAT ": account %s gets %s every %s from the %s of %.10s "
               "(the ledger grants each %s once)\n",
               oa_int(answer, "id"), oa_str(answer, "account"), amount, oa_str(answer, "every"),
               oa_str(answer, "every"), oa_str(answer, "starts_at"), oa_str(answer, "every"));
    }
    json_decref(answer);
    return rc;
}

static int s_account_grant_list(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = s_account_call(client, "GET", args->words[first], "/grants", NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_table(client, "grant", json_object_get(answer, "data"), "no grants");
    json_decref(answer);
    return rc;
}

static int s_account_grant_rm(oa_client_t *client, oa_args_t *args, int first)
{
    char *id = oa_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/grants/%s", id);
    free(id);
    json_t *answer = NULL;
    int rc = oa_call(client, "DELETE", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("grant %" JSON_INTEGER_FORMAT " of account %s removed; %" JSON_INTEGER_FORMAT
               " period(s) were granted\n",
               oa_int(answer, "id"), oa_str(answer, "account"), oa_int(answer, "granted_periods"));
    json_decref(answer);
    return rc;
}

static int s_key_create(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "account", args->words[first]);
    if (oa_put_settables(body, args, s_key_settables) != 0) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", "/admin/keys", body, &answer);
    if (rc == 0 && !client->json)
        //  The key is the last line, alone, so scripts can take it with tail -1.
        printf("key %" JSON_INTEGER_FORMAT " created for account %s; it is shown only now:\n%s\n",
               oa_int(answer, "id"), oa_str(answer, "account"), oa_str(answer, "key"));
    json_decref(answer);
    return rc;
}

static int s_key_revoke(oa_client_t *client, oa_args_t *args, int first)
{
    const char *ident = args->words[first];
    json_t *answer = NULL;
    int rc;
    //  A full key travels in the body, never in the URL, which servers log.
    //  Anything but an id is a key, whatever its prefix (settings
    //  'client_keys').
    if (strspn(ident, "0123456789") != strlen(ident) || !*ident)
        rc = oa_call(client, "POST", "/admin/keys/revoke", json_pack("{s:s}", "key", ident),
                     &answer);
    else {
        char *id = oa_escape(ident);
        char path[2048];
        snprintf(path, sizeof path, "/admin/keys/%s/revoke", id);
        free(id);
        rc = oa_call(client, "POST", path, NULL, &answer);
    }
    if (rc == 0 && !client->json)
        printf("key %" JSON_INTEGER_FORMAT " (%s) of account %s revoked\n", oa_int(answer, "id"),
               oa_str(answer, "prefix"), oa_str(answer, "account"));
    json_decref(answer);
    return rc;
}

//  A key is named by its id here: its secret never travels in a URL.
static int s_key_set(oa_client_t *client, oa_args_t *args, int first)
{
    const char *word = args->words[first];
    if (!*word || strspn(word, "0123456789") != strlen(word)) {
        fprintf(stderr, "tollgate: key set takes the key's id (tollgate key list), not the key\n");
        return 2;
    }
    json_t *body = json_object();
    if (oa_put_settables(body, args, s_key_settables) != 0) {
        json_decref(body);
        return 2;
    }
    char *id = oa_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/keys/%s", id);
    free(id);
    json_t *answer = NULL;
    int rc = oa_call(client, "PATCH", path, body, &answer);
    if (rc == 0 && !client->json) {
        char limits[256];
        s_limits_line(answer, limits, sizeof limits);
        const char *expires = json_string_value(json_object_get(answer, "expires_at"));
        printf("key %" JSON_INTEGER_FORMAT " (%s) of account %s: %s, expires %s, %s\n",
               oa_int(answer, "id"), oa_str(answer, "prefix"), oa_str(answer, "account"),
               oa_str(answer, "status"), expires ? expires : "never", limits);
    }
    json_decref(answer);
    return rc;
}

static int s_key_list(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048] = "/admin/keys";
    const char *account = oa_option(args, "account");
    if (account) {
        char *escaped = oa_escape(account);
        snprintf(path, sizeof path, "/admin/keys?account=%s", escaped);
        free(escaped);
    }
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_table(client, "key", json_object_get(answer, "data"), "no keys");
    json_decref(answer);
    return rc;
}

static const oa_column_t s_usage_columns[] = {
    {"STARTED", "started_at", OA_COL_TIME}, {"REQUEST", "request_id", OA_COL_TEXT},
    {"ACCOUNT", "account_id", OA_COL_TEXT}, {"MODEL", "model", OA_COL_TEXT},
    {"STATUS", "status", OA_COL_TEXT},      {"IN", "tokens_in", OA_COL_TEXT},
    {"OUT", "tokens_out", OA_COL_TEXT},     {"COST", "cost_micros", OA_COL_MONEY},
    {"MS", "latency_ms", OA_COL_TEXT}};

static int s_usage(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048] = "/admin/usage?";
    const char *names[] = {"account", "limit", "before"};
    for (int i = 0; i < 3; i++) {
        const char *value = oa_option(args, names[i]);
        if (!value)
            continue;
        char *escaped = oa_escape(value);
        snprintf(path + strlen(path), sizeof path - strlen(path), "%s=%s&", names[i], escaped);
        free(escaped);
    }
    path[strlen(path) - 1] = '\0'; //  the last '&' or the '?'
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        oa_table(json_object_get(answer, "data"), s_usage_columns, OA_COUNT(s_usage_columns),
                 "no usage");
        const char *next = json_string_value(json_object_get(answer, "next_before"));
        if (next)
            printf("older: --before %s\n", next);
    }
    json_decref(answer);
    return rc;
}

const oa_command_t oa_account_commands[] = {
    {"account add", 1, "balance currency models multiplier " S_LIMIT_OPTIONS, s_account_add,
     "account add NAME [--balance AMOUNT] [--currency C] [--models M1,M2] [--multiplier "
     "M] " S_LIMIT_USAGE},
    {"account set", 1, "status models multiplier " S_LIMIT_OPTIONS, s_account_set,
     "account set NAME [--status active|disabled] [--models M1,M2|any] [--multiplier "
     "M] " S_LIMIT_USAGE "   (M: 1 = list price, 0 = free tier)"},
    {"account list", 0, "", s_account_list, "account list [--json]"},
    {"account show", 1, "", s_account_show, "account show NAME [--json]"},
    {"account topup", 2, "reason", s_account_topup,
     "account topup NAME AMOUNT [--reason TEXT]   (a negative AMOUNT is an adjustment)"},
    {"account grant", 1, "amount every starts-at reason", s_account_grant,
     "account grant ACCOUNT --amount AMOUNT --every day|week|month [--starts-at TIME] "
     "[--reason TEXT]   (granted by the ledger once per UTC period)"},
    {"account grant list", 1, "", s_account_grant_list, "account grant list ACCOUNT [--json]"},
    {"account grant rm", 1, "", s_account_grant_rm, "account grant rm ID"},
    {"key create", 1, "name models expires-at " S_LIMIT_OPTIONS, s_key_create,
     "key create ACCOUNT [--name LABEL] [--models M1,M2] [--expires-at TIME] " S_LIMIT_USAGE},
    {"key set", 1, "name status models expires-at " S_LIMIT_OPTIONS, s_key_set,
     "key set ID [--name LABEL] [--status active|disabled|revoked] [--models M1,M2|any] "
     "[--expires-at TIME|none] " S_LIMIT_USAGE},
    {"key revoke", 1, "", s_key_revoke, "key revoke KEY_OR_ID"},
    {"key list", 0, "account", s_key_list, "key list [--account NAME] [--json]"},
    {"usage", 0, "account limit before", s_usage,
     "usage [--account NAME] [--limit N] [--before TIME] [--json]"},
    OA_COMMANDS_END};
