/*  ops_admin_catalog: the admin CLI's commands for providers and logical models.

    Providers with their keys, models and how they are reached; logical models with their
    prices, rules and mappings. `first` indexes the first positional after the command words.
*/
#include "ops_admin_cli.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  What a model's prices and policies are set with, on add and set.
static const oa_settable_t s_model_settables[] = {
    {"price-in", "price_in", OA_SET_MONEY},
    {"price-out", "price_out", OA_SET_MONEY},
    {"price-cache-read", "price_cache_read", OA_SET_MONEY},
    {"price-cache-write", "price_cache_write", OA_SET_MONEY},
    {"price-cache-write-1h", "price_cache_write_1h", OA_SET_MONEY},
    {"price-request", "price_request", OA_SET_MONEY},
    {"price-image", "price_image", OA_SET_MONEY},
    {"long-context-threshold", "long_context_threshold", OA_SET_INT},
    {"long-price-in", "long_price_in", OA_SET_MONEY},
    {"long-price-out", "long_price_out", OA_SET_MONEY},
    {"max-output-tokens", "max_output_tokens", OA_SET_INT},
    {"force-capabilities", "force_capabilities", OA_SET_TAGS},
    {NULL, NULL, OA_SET_TEXT}};
#define S_MODEL_OPTIONS                                                                            \
    "price-in price-out price-cache-read price-cache-write price-cache-write-1h price-request "    \
    "price-image long-context-threshold long-price-in long-price-out max-output-tokens "           \
    "force-capabilities"
#define S_MODEL_USAGE                                                                              \
    "[--price-in P] [--price-out P] [--price-cache-read P] [--price-cache-write P] "               \
    "[--price-cache-write-1h P|none] [--price-request P] [--price-image P|none] "                  \
    "[--long-context-threshold TOKENS|none] "                                                      \
    "[--long-price-in P|none] [--long-price-out P|none] [--max-output-tokens TOKENS|none] "        \
    "[--force-capabilities TAG,TAG|none]"

//  A provider's default prices: what the models it lists cost when no
//  logical model has their name (docs/billing.md "Names no logical model has").
static const oa_settable_t s_provider_settables[] = {
    {"default-price-in", "default_price_in", OA_SET_MONEY},
    {"default-price-out", "default_price_out", OA_SET_MONEY},
    {"default-price-cache-read", "default_price_cache_read", OA_SET_MONEY},
    {"default-price-cache-write", "default_price_cache_write", OA_SET_MONEY},
    {"default-price-request", "default_price_request", OA_SET_MONEY},
    {NULL, NULL, OA_SET_TEXT}};
#define S_PROVIDER_PRICE_OPTIONS                                                                   \
    " default-price-in default-price-out default-price-cache-read default-price-cache-write "      \
    "default-price-request"
#define S_PROVIDER_PRICE_USAGE                                                                     \
    " [--default-price-in P|none --default-price-out P|none] [--default-price-cache-read P|none] " \
    "[--default-price-cache-write P|none] [--default-price-request P|none]"

static const oa_settable_t s_provider_key_settables[] = {
    {"multiplier", "multiplier_ppm", OA_SET_MULTIPLIER}, {NULL, NULL, OA_SET_TEXT}};

//  "a,b,c" as a JSON array of integers into body[key]; "none" is [].
//  Returns 0, or -1 (usage).
static int s_put_ints(json_t *body, oa_args_t *args, const char *option, const char *key)
{
    const char *value = oa_option(args, option);
    if (!value)
        return 0;
    json_t *list = json_array();
    if (strcmp(value, "none") != 0) {
        json_t *items = oa_split_list(value);
        size_t index;
        json_t *item;
        json_array_foreach(items, index, item)
        {
            char *end;
            errno = 0;
            long long number = strtoll(json_string_value(item), &end, 10);
            if (*end || errno) {
                fprintf(stderr, "tollgate: --%s takes statuses such as 429,503 (or none)\n",
                        option);
                json_decref(items);
                json_decref(list);
                return -1;
            }
            json_array_append_new(list, json_integer(number));
        }
        json_decref(items);
    }
    json_object_set_new(body, key, list);
    return 0;
}

//  How a provider is reached (docs/routing.md "Reaching providers as they
//  are"): --header 'Name: value' and --proxy URL repeat (each set replaces
//  the provider's whole list; "none" empties it; --proxy - reads proxies
//  from stdin, one a line, so a password stays out of the process list),
//  --path P|default, --blocked-models a,b|none, --failover-statuses and
//  --return-statuses 429,503|none. Returns 0, or -1 (usage).
static int s_put_reach(json_t *body, oa_args_t *args)
{
    json_t *headers = NULL, *proxies = NULL;
    for (int i = 0; i < args->option_count; i++) {
        const char *value = args->values[i] ? args->values[i] : "";
        if (strcmp(args->names[i], "header") == 0) {
            if (!headers)
                headers = json_object();
            if (strcmp(value, "none") == 0)
                continue;
            const char *colon = strchr(value, ':');
            if (!colon || colon == value) {
                fprintf(stderr, "tollgate: --header takes 'Name: value' (or none)\n");
                json_decref(headers);
                json_decref(proxies);
                return -1;
            }
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)(colon - value), value);
            const char *text = colon + 1;
            while (*text == ' ')
                text++;
            json_object_set_new(headers, name, json_string(text));
        } else if (strcmp(args->names[i], "proxy") == 0) {
            if (!proxies)
                proxies = json_array();
            if (strcmp(value, "none") == 0)
                continue;
            if (strcmp(value, "-") == 0) {
                char *line = NULL;
                size_t size = 0;
                while (getline(&line, &size, stdin) >= 0) {
                    line[strcspn(line, "\r\n")] = '\0';
                    if (*line)
                        json_array_append_new(proxies, json_string(line));
                }
                if (line)
                    memset(line, 0, size);
                free(line);
            } else
                json_array_append_new(proxies, json_string(value));
        }
    }
    if (headers)
        json_object_set_new(body, "headers", headers);
    if (proxies)
        json_object_set_new(body, "proxies", proxies);
    //  --account NAME|none: the provider is that account's own (bring your own key).
    const char *account = oa_option(args, "account");
    if (account)
        json_object_set_new(body, "account",
                            strcmp(account, "none") == 0 ? json_null() : json_string(account));
    const char *path = oa_option(args, "path");
    if (path)
        json_object_set_new(body, "path",
                            strcmp(path, "default") == 0 ? json_null() : json_string(path));
    const char *blocked = oa_option(args, "blocked-models");
    if (blocked)
        json_object_set_new(body, "blocked_models",
                            strcmp(blocked, "none") == 0 ? json_array() : oa_split_list(blocked));
    if (s_put_ints(body, args, "failover-statuses", "failover_statuses") ||
        s_put_ints(body, args, "return-statuses", "return_statuses"))
        return -1;
    return 0;
}

static int s_provider_add(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "name", args->words[first]);
    oa_put_str(body, args, "protocol", "protocol");
    oa_put_str(body, args, "base-url", "base_url");
    if (!oa_option(args, "protocol") || !oa_option(args, "base-url")) {
        fprintf(stderr, "tollgate: provider add needs --protocol and --base-url\n");
        json_decref(body);
        return 2;
    }
    if (oa_put_int(body, args, "priority", "priority") ||
        oa_put_int(body, args, "weight", "weight") || s_put_reach(body, args) ||
        oa_put_settables(body, args, s_provider_settables)) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", "/admin/providers", body, &answer);
    if (rc == 0 && !client->json)
        printf("provider %s added (id %" JSON_INTEGER_FORMAT "): %s at %s\n",
               oa_str(answer, "name"), oa_int(answer, "id"), oa_str(answer, "protocol"),
               oa_str(answer, "base_url"));
    json_decref(answer);
    return rc;
}

static int s_provider_list(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", "/admin/providers", NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_table(client, "provider", json_object_get(answer, "data"), "no providers");
    json_decref(answer);
    return rc;
}

static int s_provider_show(oa_client_t *client, oa_args_t *args, int first)
{
    char *name = oa_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/providers/%s", name);
    free(name);
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_fields(client, "provider", answer);
    json_decref(answer);
    return rc;
}

static int s_provider_key_add(oa_client_t *client, oa_args_t *args, int first)
{
    const char *secret_option = oa_option(args, "secret");
    if (!secret_option) {
        fprintf(stderr, "tollgate: provider key add needs --secret SECRET (or --secret - to "
                        "read it from stdin)\n");
        return 2;
    }
    char *secret = oa_secret_value(secret_option);
    json_t *body = json_pack("{s:s}", "secret", secret);
    memset(secret, 0, strlen(secret));
    free(secret);
    oa_put_str(body, args, "name", "name");
    if (oa_put_int(body, args, "priority", "priority") ||
        oa_put_int(body, args, "weight", "weight") ||
        oa_put_settables(body, args, s_provider_key_settables)) {
        json_decref(body);
        return 2;
    }
    char *provider = oa_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/providers/%s/keys", provider);
    free(provider);
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", path, body, &answer);
    if (rc == 0 && !client->json)
        printf("key %" JSON_INTEGER_FORMAT " added to provider %s (secret %s)\n",
               oa_int(answer, "id"), oa_str(answer, "provider"), oa_str(answer, "secret_hint"));
    json_decref(answer);
    return rc;
}

static int s_provider_key_list(oa_client_t *client, oa_args_t *args, int first)
{
    char *provider = oa_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/providers/%s/keys", provider);
    free(provider);
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_table(client, "provider_key", json_object_get(answer, "data"), "no keys");
    json_decref(answer);
    return rc;
}

static int s_model_add(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "name", args->words[first]);
    json_t *routes = json_array();
    for (int i = 0; i < args->option_count; i++) {
        if (strcmp(args->names[i], "route") != 0)
            continue;
        //  Provider names cannot hold ':', so the first one ends the
        //  provider and the upstream model may contain more ("llama3:8b").
        const char *value = args->values[i];
        const char *colon = strchr(value, ':');
        json_t *route = json_object();
        json_object_set_new(route, "provider",
                            colon ? json_stringn(value, (size_t)(colon - value))
                                  : json_string(value));
        if (colon && colon[1])
            json_object_set_new(route, "upstream_model", json_string(colon + 1));
        json_array_append_new(routes, route);
    }
    json_object_set_new(body, "routes", routes);
    if (oa_put_settables(body, args, s_model_settables) != 0) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", "/admin/models", body, &answer);
    if (rc == 0 && !client->json) {
        char in[32], out[32];
        ops_admin_format_micros(oa_int(answer, "price_in_micros"), in, sizeof in);
        ops_admin_format_micros(oa_int(answer, "price_out_micros"), out, sizeof out);
        printf("model %s added (id %" JSON_INTEGER_FORMAT "), %zu route(s), price %s in / %s "
               "out per million tokens\n",
               oa_str(answer, "name"), oa_int(answer, "id"),
               json_array_size(json_object_get(answer, "routes")), in, out);
    }
    json_decref(answer);
    return rc;
}

static int s_model_list(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", "/admin/models", NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_table(client, "model", json_object_get(answer, "data"), "no models");
    json_decref(answer);
    return rc;
}

static int s_model_show(oa_client_t *client, oa_args_t *args, int first)
{
    char *name = oa_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/models/%s", name);
    free(name);
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_fields(client, "model", answer);
    json_decref(answer);
    return rc;
}

static int s_rule_add(oa_client_t *client, oa_args_t *args, int first)
{
    if (!oa_option(args, "kind")) {
        fprintf(stderr, "tollgate: model rule add needs --kind exact|prefix|keyword|regex|"
                        "exclude_keyword|include|exclude_provider\n");
        return 2;
    }
    json_t *body = json_object();
    oa_put_str(body, args, "kind", "kind");
    oa_put_str(body, args, "pattern", "pattern");
    oa_put_str(body, args, "provider", "provider");
    if (oa_put_int(body, args, "priority", "priority") ||
        oa_put_int(body, args, "weight", "weight")) {
        json_decref(body);
        return 2;
    }
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/models", args->words[first], "/rules");
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", path, body, &answer);
    if (rc == 0 && !client->json)
        printf("rule %" JSON_INTEGER_FORMAT " added to model %s: %s '%s'%s%s\n",
               oa_int(answer, "id"), oa_str(answer, "model"), oa_str(answer, "kind"),
               oa_str(answer, "pattern"), *oa_str(answer, "provider") ? " at " : "",
               oa_str(answer, "provider"));
    json_decref(answer);
    return rc;
}

static int s_rule_list(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/models", args->words[first], "/rules");
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_table(client, "rule", json_object_get(answer, "data"), "no rules");
    json_decref(answer);
    return rc;
}

static int s_rule_rm(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/rules", args->words[first], "");
    json_t *answer = NULL;
    int rc = oa_call(client, "DELETE", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("rule %" JSON_INTEGER_FORMAT " (%s '%s') of model %s deleted\n",
               oa_int(answer, "id"), oa_str(answer, "kind"), oa_str(answer, "pattern"),
               oa_str(answer, "model"));
    json_decref(answer);
    return rc;
}

static const oa_column_t s_mapping_columns[] = {
    {"PROVIDER", "provider", OA_COL_TEXT},   {"UPSTREAM MODEL", "upstream_model", OA_COL_TEXT},
    {"SOURCE", "source", OA_COL_TEXT},       {"RULE", "rule_id", OA_COL_TEXT},
    {"PRIORITY", "priority", OA_COL_TEXT},   {"WEIGHT", "weight", OA_COL_TEXT},
    {"RESOLVED", "resolved_at", OA_COL_TIME}};

static int s_model_mappings(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/models", args->words[first], "/mappings");
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        oa_table(json_object_get(answer, "data"), s_mapping_columns, OA_COUNT(s_mapping_columns),
                 "no mappings (yet: tollgate-health writes them after a model-list fetch)");
    json_decref(answer);
    return rc;
}

//  --strict-conversion on|off: refuse what conversion would drop (docs/conversion.md).
static int s_put_strict(json_t *body, oa_args_t *args)
{
    const char *value = oa_option(args, "strict-conversion");
    if (!value)
        return 0;
    if (strcmp(value, "on") && strcmp(value, "off")) {
        fprintf(stderr, "tollgate: --strict-conversion takes on or off\n");
        return -1;
    }
    json_object_set_new(body, "strict_conversion", json_boolean(strcmp(value, "on") == 0));
    return 0;
}

static int s_provider_set(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *body = json_object();
    oa_put_str(body, args, "status", "status");
    oa_put_str(body, args, "base-url", "base_url");
    if (s_put_strict(body, args) || oa_put_int(body, args, "priority", "priority") ||
        oa_put_int(body, args, "weight", "weight") || s_put_reach(body, args) ||
        oa_put_settables(body, args, s_provider_settables)) {
        json_decref(body);
        return 2;
    }
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/providers", args->words[first], "");
    json_t *answer = NULL;
    int rc = oa_call(client, "PATCH", path, body, &answer);
    if (rc == 0 && !client->json)
        printf("provider %s: %s, %s, strict conversion %s\n", oa_str(answer, "name"),
               oa_str(answer, "protocol"), oa_str(answer, "status"),
               json_is_true(json_object_get(answer, "strict_conversion")) ? "on" : "off");
    json_decref(answer);
    return rc;
}

static int s_model_set(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *body = json_object();
    oa_put_str(body, args, "scheduling", "scheduling");
    oa_put_str(body, args, "status", "status");
    if (s_put_strict(body, args) || oa_put_settables(body, args, s_model_settables)) {
        json_decref(body);
        return 2;
    }
    if (oa_option(args, "capabilities"))
        json_object_set_new(body, "capabilities", oa_split_list(oa_option(args, "capabilities")));
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/models", args->words[first], "");
    json_t *answer = NULL;
    int rc = oa_call(client, "PATCH", path, body, &answer);
    if (rc == 0 && !client->json) {
        char tags[OA_CELL];
        oa_column_t column = {"", "capabilities", OA_COL_LIST};
        oa_cell(answer, &column, tags, sizeof tags);
        printf("model %s: scheduling %s, capabilities %s, %s\n", oa_str(answer, "name"),
               oa_str(answer, "scheduling"), tags, oa_str(answer, "status"));
    }
    json_decref(answer);
    return rc;
}

static int s_provider_key_set(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *body = json_object();
    //  "none" lifts a limit.
    const char *limits[][2] = {{"max-rps", "max_rps"}, {"max-concurrent", "max_concurrent"}};
    for (int i = 0; i < 2; i++) {
        const char *value = oa_option(args, limits[i][0]);
        if (value && strcmp(value, "none") == 0)
            json_object_set_new(body, limits[i][1], json_null());
        else if (oa_put_int(body, args, limits[i][0], limits[i][1]) != 0) {
            json_decref(body);
            return 2;
        }
    }
    if (oa_put_int(body, args, "priority", "priority") ||
        oa_put_int(body, args, "weight", "weight") ||
        oa_put_settables(body, args, s_provider_key_settables)) {
        json_decref(body);
        return 2;
    }
    oa_put_str(body, args, "status", "status");
    if (oa_option(args, "capabilities"))
        json_object_set_new(body, "capabilities", oa_split_list(oa_option(args, "capabilities")));
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/provider-keys", args->words[first], "");
    json_t *answer = NULL;
    int rc = oa_call(client, "PATCH", path, body, &answer);
    if (rc == 0 && !client->json) {
        char tags[OA_CELL], rps[32], concurrent[32];
        oa_column_t column = {"", "capabilities", OA_COL_LIST};
        oa_cell(answer, &column, tags, sizeof tags);
        oa_column_t rps_column = {"", "max_rps", OA_COL_TEXT};
        oa_column_t concurrent_column = {"", "max_concurrent", OA_COL_TEXT};
        oa_cell(answer, &rps_column, rps, sizeof rps);
        oa_cell(answer, &concurrent_column, concurrent, sizeof concurrent);
        printf("provider key %" JSON_INTEGER_FORMAT " (%s): %s, capabilities %s, max rps %s, max "
               "concurrent %s\n",
               oa_int(answer, "id"), oa_str(answer, "provider"), oa_str(answer, "status"), tags,
               rps, concurrent);
    }
    json_decref(answer);
    return rc;
}

//  provider model set PROVIDER MODEL: creates the (provider, model)
//  setting or changes the one there is.
static int s_provider_model_set(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *body = json_object();
    const char *values[][2] = {{"protocol", "protocol"}, {"path", "path"}};
    for (int i = 0; i < 2; i++) {
        const char *value = oa_option(args, values[i][0]);
        if (value)
            json_object_set_new(body, values[i][1],
                                strcmp(value, "default") == 0 ? json_null() : json_string(value));
    }
    if (!json_object_size(body)) {
        fprintf(stderr, "tollgate: provider model set needs --protocol or --path\n");
        json_decref(body);
        return 2;
    }
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/providers", args->words[first], "/model-settings");
    json_t *list = NULL;
    bool json = client->json;
    client->json = false; //  the lookup is ours, not the command's output
    int rc = oa_call(client, "GET", path, NULL, &list);
    client->json = json;
    json_int_t existing = 0;
    size_t index;
    json_t *item;
    json_array_foreach(json_object_get(list, "data"), index,
                       item) if (strcmp(oa_str(item, "model"), args->words[first + 1]) == 0)
        existing = oa_int(item, "id");
    json_decref(list);
    if (rc != 0) {
        json_decref(body);
        return rc;
    }
    json_t *answer = NULL;
    if (existing) {
        snprintf(path, sizeof path, "/admin/provider-model-settings/%" JSON_INTEGER_FORMAT,
                 existing);
        rc = oa_call(client, "PATCH", path, body, &answer);
    } else {
        json_object_set_new(body, "model", json_string(args->words[first + 1]));
        rc = oa_call(client, "POST", path, body, &answer);
    }
    if (rc == 0 && !client->json)
        printf("provider %s model %s: protocol %s, path %s\n", oa_str(answer, "provider"),
               oa_str(answer, "model"),
               *oa_str(answer, "protocol") ? oa_str(answer, "protocol") : "the provider's",
               *oa_str(answer, "path") ? oa_str(answer, "path") : "the provider's");
    json_decref(answer);
    return rc;
}

static int s_provider_model_list(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/providers", args->words[first], "/model-settings");
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_table(client, "provider_model", json_object_get(answer, "data"),
                          "no model settings");
    json_decref(answer);
    return rc;
}

static int s_provider_model_unset(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/providers", args->words[first], "/model-settings");
    json_t *list = NULL;
    bool json = client->json;
    client->json = false; //  the lookup is ours, not the command's output
    int rc = oa_call(client, "GET", path, NULL, &list);
    client->json = json;
    json_int_t existing = 0;
    size_t index;
    json_t *item;
    json_array_foreach(json_object_get(list, "data"), index,
                       item) if (strcmp(oa_str(item, "model"), args->words[first + 1]) == 0)
        existing = oa_int(item, "id");
    json_decref(list);
    if (rc != 0)
        return rc;
    if (!existing) {
        fprintf(stderr, "tollgate: provider %s has no settings for model %s\n", args->words[first],
                args->words[first + 1]);
        return 1;
    }
    snprintf(path, sizeof path, "/admin/provider-model-settings/%" JSON_INTEGER_FORMAT, existing);
    json_t *answer = NULL;
    rc = oa_call(client, "DELETE", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("provider %s model %s: the provider's protocol and path again\n", args->words[first],
               args->words[first + 1]);
    json_decref(answer);
    return rc;
}

static int s_provider_models(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/providers", args->words[first], "/models");
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        json_t *fetch = json_object_get(answer, "fetch");
        size_t index;
        json_t *model;
        json_array_foreach(json_object_get(answer, "data"), index, model)
            printf("%s\n", oa_str(model, "model"));
        if (json_is_object(fetch))
            printf("(%s fetch at %.19s: %" JSON_INTEGER_FORMAT " models%s%s)\n",
                   json_is_true(json_object_get(fetch, "ok")) ? "last" : "failed",
                   oa_str(fetch, "fetched_at"), oa_int(fetch, "model_count"),
                   *oa_str(fetch, "error") ? ", " : "", oa_str(fetch, "error"));
        else
            printf("(never fetched)\n");
    }
    json_decref(answer);
    return rc;
}

static int s_provider_models_refresh(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/providers", args->words[first], "/models/refresh");
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("model list of provider %s requested; `tollgate provider models %s` shows it\n",
               args->words[first], args->words[first]);
    json_decref(answer);
    return rc;
}

const oa_command_t oa_catalog_commands[] = {
    {"provider add", 1,
     "protocol base-url priority weight header proxy path blocked-models failover-statuses "
     "return-statuses account" S_PROVIDER_PRICE_OPTIONS,
     s_provider_add,
     "provider add NAME --protocol openai|openai-responses|anthropic|gemini --base-url URL "
     "[--priority N] [--weight N] "
     "[--header 'Name: value']... [--proxy URL|-]... [--path PATH|default] "
     "[--blocked-models PATTERN,...|none] [--failover-statuses S,...|none] "
     "[--return-statuses S,...|none] [--account ACCOUNT|none]" S_PROVIDER_PRICE_USAGE},
    {"provider key add", 1, "secret name priority weight multiplier", s_provider_key_add,
     "provider key add PROVIDER --secret SECRET|- [--name LABEL] [--priority N] [--weight N] "
     "[--multiplier M]   (M: 1 = list price, 0.5 = half, 0 = free)"},
    {"provider key list", 1, "", s_provider_key_list, "provider key list PROVIDER [--json]"},
    {"provider list", 0, "", s_provider_list, "provider list [--json]"},
    {"provider show", 1, "", s_provider_show, "provider show NAME [--json]"},
    {"model add", 1, "route " S_MODEL_OPTIONS, s_model_add,
     "model add NAME --route PROVIDER[:UPSTREAM_MODEL] [--route ...] " S_MODEL_USAGE},
    {"model list", 0, "", s_model_list, "model list [--json]"},
    {"model show", 1, "", s_model_show, "model show NAME [--json]"},
    {"model set", 1, "scheduling capabilities status strict-conversion " S_MODEL_OPTIONS,
     s_model_set,
     "model set NAME [--scheduling "
     "priority|key_priority|weighted|latency|cost|reliability|balanced] "
     "[--capabilities TAG,TAG] [--status active|disabled] [--strict-conversion "
     "on|off] " S_MODEL_USAGE},
    {"provider set", 1,
     "status base-url strict-conversion priority weight header proxy path blocked-models "
     "failover-statuses return-statuses account" S_PROVIDER_PRICE_OPTIONS,
     s_provider_set,
     "provider set NAME [--status active|disabled] [--base-url URL] [--strict-conversion on|off] "
     "[--priority N] [--weight N] "
     "[--header 'Name: value']... [--proxy URL|-]... [--path PATH|default] "
     "[--blocked-models PATTERN,...|none] [--failover-statuses S,...|none] "
     "[--return-statuses S,...|none] [--account ACCOUNT|none]" S_PROVIDER_PRICE_USAGE},
    {"provider model set", 2, "protocol path", s_provider_model_set,
     "provider model set PROVIDER MODEL [--protocol openai|openai-responses|anthropic|gemini|"
     "default] [--path PATH|default]"},
    {"provider model list", 1, "", s_provider_model_list, "provider model list PROVIDER [--json]"},
    {"provider model unset", 2, "", s_provider_model_unset, "provider model unset PROVIDER MODEL"},
    {"model rule add", 1, "kind pattern provider priority weight", s_rule_add,
     "model rule add MODEL --kind exact|prefix|keyword|regex|exclude_keyword|include|"
     "exclude_provider [--pattern P] [--provider P] [--priority N] [--weight N]"},
    {"model rule list", 1, "", s_rule_list, "model rule list MODEL [--json]"},
    {"model rule rm", 1, "", s_rule_rm, "model rule rm ID"},
    {"model mappings", 1, "", s_model_mappings, "model mappings MODEL [--json]"},
    {"provider key set", 1, "capabilities max-rps max-concurrent priority weight status multiplier",
     s_provider_key_set,
     "provider key set ID [--capabilities TAG,TAG] [--max-rps N|none] [--max-concurrent N|none] "
     "[--priority N] [--weight N] [--status active|disabled] [--multiplier M]"},
    {"provider models", 1, "", s_provider_models, "provider models PROVIDER [--json]"},
    {"provider models refresh", 1, "", s_provider_models_refresh,
     "provider models refresh PROVIDER"},
    OA_COMMANDS_END};
