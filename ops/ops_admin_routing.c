/*  ops_admin_routing: the admin CLI's commands for what the routers decide and hold.

    routing decide (a decision explained), breakers, sticky bindings, health. `first`
    indexes the first positional after the command words.
*/
#include "ops_admin_cli.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

//  An object's fields as "a=1 b=2", for a table cell.
static void s_pairs_text(json_t *object, char *out, size_t size)
{
    const char *name;
    json_t *value;
    *out = '\0';
    json_object_foreach(object, name, value)
    {
        size_t used = strlen(out);
        if (json_is_integer(value))
            snprintf(out + used, size - used, "%s%s=%" JSON_INTEGER_FORMAT, used ? " " : "", name,
                     json_integer_value(value));
        else if (json_is_boolean(value))
            snprintf(out + used, size - used, "%s%s=%s", used ? " " : "", name,
                     json_is_true(value) ? "yes" : "no");
        else if (json_is_string(value))
            snprintf(out + used, size - used, "%s%s=%s", used ? " " : "", name,
                     json_string_value(value));
    }
}

//  Adds the text columns routing tables show: "key_text" (id and name),
//  "score_text" and "routers_text" (indexes of the routers that hold it).
static void s_routing_cells(json_t *rows)
{
    size_t index;
    json_t *row;
    json_array_foreach(rows, index, row)
    {
        char text[OA_CELL];
        json_t *key = json_object_get(row, "provider_key_id");
        if (json_is_integer(key)) {
            const char *name = oa_str(row, "key");
            snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT "%s%s%s", json_integer_value(key),
                     *name ? " (" : "", name, *name ? ")" : "");
            json_object_set_new(row, "key_text", json_string(text));
        }
        if (json_is_object(json_object_get(row, "score"))) {
            s_pairs_text(json_object_get(row, "score"), text, sizeof text);
            json_object_set_new(row, "score_text", json_string(text));
        }
        json_t *routers = json_object_get(row, "routers");
        if (json_is_array(routers)) {
            *text = '\0';
            size_t at;
            json_t *item;
            json_array_foreach(routers, at, item)
            {
                size_t used = strlen(text);
                snprintf(text + used, sizeof text - used, "%s%" JSON_INTEGER_FORMAT, at ? "," : "",
                         json_integer_value(item));
            }
            json_object_set_new(row, "routers_text", json_string(text));
        }
    }
}

static const oa_column_t s_candidate_columns[] = {
    {"RANK", "rank", OA_COL_TEXT},     {"PROVIDER", "provider", OA_COL_TEXT},
    {"KEY", "key_text", OA_COL_TEXT},  {"UPSTREAM MODEL", "upstream_model", OA_COL_TEXT},
    {"SOURCE", "source", OA_COL_TEXT}, {"BREAKER", "breaker", OA_COL_TEXT},
    {"STICKY", "sticky", OA_COL_TEXT}, {"SCORE", "score_text", OA_COL_TEXT}};

static const oa_column_t s_excluded_columns[] = {{"PROVIDER", "provider", OA_COL_TEXT},
                                                 {"KEY", "key_text", OA_COL_TEXT},
                                                 {"UPSTREAM MODEL", "upstream_model", OA_COL_TEXT},
                                                 {"WHY", "why", OA_COL_TEXT},
                                                 {"DETAIL", "detail", OA_COL_TEXT}};

static int s_routing_decide(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "model", args->words[first]);
    oa_put_str(body, args, "key", "key");
    oa_put_str(body, args, "session", "session");
    if (oa_option(args, "capabilities"))
        json_object_set_new(body, "capabilities", oa_split_list(oa_option(args, "capabilities")));
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", "/admin/routing/decide", body, &answer);
    if (rc == 0 && !client->json) {
        printf("model %s, mode %s: %" JSON_INTEGER_FORMAT "%s%s%s (router %" JSON_INTEGER_FORMAT
               ")\n",
               oa_str(answer, "model"), oa_str(answer, "mode"), oa_int(answer, "status"),
               *oa_str(answer, "error_code") ? " " : "", oa_str(answer, "error_code"),
               json_is_true(json_object_get(answer, "last_resort")) ? ", last resort" : "",
               oa_int(answer, "router"));
        json_t *candidates = json_object_get(answer, "candidates");
        json_t *excluded = json_object_get(answer, "excluded");
        s_routing_cells(candidates);
        s_routing_cells(excluded);
        oa_table(candidates, s_candidate_columns, OA_COUNT(s_candidate_columns), "no candidates");
        if (json_array_size(excluded)) {
            printf("excluded:\n");
            oa_table(excluded, s_excluded_columns, OA_COUNT(s_excluded_columns), "");
        }
    }
    json_decref(answer);
    return rc;
}

static const oa_column_t s_breaker_columns[] = {
    {"LAYER", "layer", OA_COL_TEXT},        {"PROVIDER", "provider", OA_COL_TEXT},
    {"KEY", "key_text", OA_COL_TEXT},       {"UPSTREAM MODEL", "upstream_model", OA_COL_TEXT},
    {"STATE", "state", OA_COL_TEXT},        {"REASON", "reason", OA_COL_TEXT},
    {"REOPENS", "reopens_at", OA_COL_TIME}, {"ROUTERS", "routers_text", OA_COL_TEXT}};

//  Prints which routers did not answer a list question.
static void s_routers_note(json_t *answer)
{
    size_t index;
    json_t *router;
    json_array_foreach(json_object_get(answer, "routers"), index, router)
    {
        if (!json_is_true(json_object_get(router, "answered")))
            printf("router %" JSON_INTEGER_FORMAT " (%s) did not answer\n",
                   oa_int(router, "router"), oa_str(router, "endpoint"));
        else if (json_object_get(router, "error"))
            printf("router %" JSON_INTEGER_FORMAT " answered %s\n", oa_int(router, "router"),
                   oa_str(router, "error"));
    }
}

//  GET BASE[?PARAM=value of --PARAM] answered by every router: a table of
//  its `data` with the router cells, or the JSON with --json.
static int s_routing_list(oa_client_t *client, oa_args_t *args, const char *base, const char *param,
                          const oa_column_t *columns, int column_count, const char *empty)
{
    char path[2048];
    snprintf(path, sizeof path, "%s", base);
    const char *value = oa_option(args, param);
    if (value) {
        char *escaped = oa_escape(value);
        snprintf(path, sizeof path, "%s?%s=%s", base, param, escaped);
        free(escaped);
    }
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        s_routing_cells(json_object_get(answer, "data"));
        oa_table(json_object_get(answer, "data"), columns, column_count, empty);
        s_routers_note(answer);
    }
    json_decref(answer);
    return rc;
}

static int s_breakers_list(oa_client_t *client, oa_args_t *args, int first)
{
    return s_routing_list(client, args, "/admin/breakers", "router", s_breaker_columns,
                          OA_COUNT(s_breaker_columns), "every breaker is closed");
}

static int s_breakers_reset(oa_client_t *client, oa_args_t *args, int first)
{
    const char *key = oa_option(args, "key");
    const char *provider = oa_option(args, "provider");
    const char *model = oa_option(args, "model");
    if (!key == !(provider && model) || (key && (provider || model))) {
        fprintf(stderr, "tollgate: breakers reset needs --key ID, or --provider P and --model M\n");
        return 2;
    }
    json_t *body = json_object();
    if (key && oa_put_int(body, args, "key", "provider_key_id") != 0) {
        json_decref(body);
        return 2;
    }
    if (!key) {
        json_object_set_new(body, "provider", json_string(provider));
        json_object_set_new(body, "upstream_model", json_string(model));
    }
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", "/admin/breakers/reset", body, &answer);
    if (rc == 0 && !client->json)
        printf("%" JSON_INTEGER_FORMAT " breaker(s) closed by %" JSON_INTEGER_FORMAT
               " router(s)%s%s\n",
               oa_int(answer, "reset"), oa_int(answer, "routers"),
               json_is_true(json_object_get(answer, "broadcast")) ? ", told to every router" : "",
               json_is_true(json_object_get(answer, "reenabled")) ? "; the key is active again"
                                                                  : "");
    json_decref(answer);
    return rc;
}

static const oa_column_t s_binding_columns[] = {
    {"SESSION", "session", OA_COL_TEXT},    {"PROVIDER", "provider", OA_COL_TEXT},
    {"KEY", "key_text", OA_COL_TEXT},       {"UPSTREAM MODEL", "upstream_model", OA_COL_TEXT},
    {"EXPIRES", "expires_at", OA_COL_TIME}, {"ROUTERS", "routers_text", OA_COL_TEXT}};

static int s_sticky_list(oa_client_t *client, oa_args_t *args, int first)
{
    return s_routing_list(client, args, "/admin/sticky", "session", s_binding_columns,
                          OA_COUNT(s_binding_columns), "no bindings");
}

static int s_sticky_rm(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/sticky", args->words[first], "");
    json_t *answer = NULL;
    int rc = oa_call(client, "DELETE", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("session %s: %" JSON_INTEGER_FORMAT " binding(s) dropped\n", args->words[first],
               oa_int(answer, "deleted"));
    json_decref(answer);
    return rc;
}

static const oa_column_t s_health_columns[] = {
    {"PROVIDER", "provider", OA_COL_TEXT},    {"KEY", "key_text", OA_COL_TEXT},
    {"MODEL", "model_text", OA_COL_TEXT},     {"STATE", "state", OA_COL_TEXT},
    {"SUCCESS", "success_text", OA_COL_TEXT}, {"LATENCY MS", "latency_ms", OA_COL_TEXT},
    {"TTFB MS", "ttfb_ms", OA_COL_TEXT},      {"ATTEMPTS", "attempts", OA_COL_TEXT},
    {"LAST", "last_text", OA_COL_TEXT},       {"UPDATED", "updated_at", OA_COL_TIME}};

static const oa_column_t s_fetch_columns[] = {{"PROVIDER", "provider", OA_COL_TEXT},
                                              {"FETCHED", "fetched_at", OA_COL_TIME},
                                              {"OK", "ok", OA_COL_TEXT},
                                              {"MODELS", "model_count", OA_COL_TEXT},
                                              {"ERROR", "error", OA_COL_TEXT}};

static int s_health(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048] = "/admin/health";
    const char *provider = oa_option(args, "provider");
    if (provider) {
        char *escaped = oa_escape(provider);
        snprintf(path, sizeof path, "/admin/health?provider=%s", escaped);
        free(escaped);
    }
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        json_t *rows = json_object_get(answer, "data");
        s_routing_cells(rows);
        size_t index;
        json_t *row;
        json_array_foreach(rows, index, row)
        {
            char text[OA_CELL];
            const char *model = oa_str(row, "upstream_model");
            json_object_set_new(row, "model_text", json_string(*model ? model : "(probe)"));
            snprintf(text, sizeof text, "%.1f%%", (double)oa_int(row, "success_ppm") / 10000.0);
            json_object_set_new(row, "success_text", json_string(text));
            json_object_set_new(row, "latency_ms", json_integer(oa_int(row, "latency_us") / 1000));
            json_object_set_new(row, "ttfb_ms", json_integer(oa_int(row, "ttfb_us") / 1000));
            snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT "%s%s", oa_int(row, "last_status"),
                     *oa_str(row, "last_error") ? " " : "", oa_str(row, "last_error"));
            json_object_set_new(row, "last_text", json_string(text));
        }
        oa_table(rows, s_health_columns, OA_COUNT(s_health_columns), "no health reported yet");
        if (json_array_size(json_object_get(answer, "fetches"))) {
            printf("model lists:\n");
            oa_table(json_object_get(answer, "fetches"), s_fetch_columns, OA_COUNT(s_fetch_columns),
                     "");
        }
    }
    json_decref(answer);
    return rc;
}

static const oa_column_t s_probe_columns[] = {
    {"PROVIDER", "provider", OA_COL_TEXT},    {"KEY", "key_text", OA_COL_TEXT},
    {"MODEL", "upstream_model", OA_COL_TEXT}, {"OK", "ok_text", OA_COL_TEXT},
    {"STATUS", "status", OA_COL_TEXT},        {"LATENCY MS", "latency_ms", OA_COL_TEXT},
    {"ERROR", "error", OA_COL_TEXT},          {"PROBED", "probed_at", OA_COL_TIME}};

//  health probe PROVIDER [--model M]: asks for 1-token completion probes of
//  the provider's (key, model) pairs, then waits for their results (new
//  rows of GET .../probes, until none came for a second, or --wait runs
//  out). Exit 0 when every probe passed, 1 when one failed or none came.
static int s_health_probe(oa_client_t *client, oa_args_t *args, int first)
{
    long wait_s = 30;
    const char *wait = oa_option(args, "wait");
    if (wait) {
        char *end;
        wait_s = strtol(wait, &end, 10);
        if (!*wait || *end || wait_s < 1 || wait_s > 600) {
            fprintf(stderr, "tollgate: --wait takes seconds from 1 to 600\n");
            return 2;
        }
    }
    json_t *body = json_object();
    oa_put_str(body, args, "model", "model");
    char path[2048];
    oa_path_of(path, sizeof path, "/admin/providers", args->words[first], "/probe");
    bool json = client->json;
    client->json = false; //  the command's output is the results, below
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", path, body, &answer);
    json_int_t requested = oa_int(answer, "requested_at_ms");
    json_decref(answer);
    if (rc != 0) {
        client->json = json;
        return rc;
    }
    oa_path_of(path, sizeof path, "/admin/providers", args->words[first], "/probes");
    json_t *fresh = json_array();
    size_t last_count = 0;
    int quiet_ms = 0;
    for (long waited_ms = 0; waited_ms < wait_s * 1000; waited_ms += 200) {
        json_t *list = NULL;
        if (oa_call(client, "GET", path, NULL, &list) != 0) {
            rc = 1;
            break;
        }
        json_array_clear(fresh);
        size_t index;
        json_t *row;
        json_array_foreach(json_object_get(list, "data"), index,
                           row) if (oa_int(row, "probed_at_ms") >= requested)
            json_array_append(fresh, row);
        json_decref(list);
        quiet_ms = json_array_size(fresh) == last_count ? quiet_ms + 200 : 0;
        last_count = json_array_size(fresh);
        if (last_count && quiet_ms >= 1000)
            break;
        usleep(200000);
    }
    client->json = json;
    bool all_ok = json_array_size(fresh) > 0;
    size_t index;
    json_t *row;
    json_array_foreach(fresh, index, row)
    {
        all_ok = all_ok && json_is_true(json_object_get(row, "ok"));
        char text[OA_CELL];
        snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT " %s", oa_int(row, "provider_key_id"),
                 oa_str(row, "key"));
        json_object_set_new(row, "key_text", json_string(text));
        json_object_set_new(row, "ok_text",
                            json_string(json_is_true(json_object_get(row, "ok")) ? "yes" : "NO"));
        json_object_set_new(row, "latency_ms", json_integer(oa_int(row, "latency_us") / 1000));
    }
    if (json) {
        json_t *out = json_pack("{s:s, s:I, s:O, s:b}", "provider", args->words[first],
                                "requested_at_ms", requested, "data", fresh, "ok", all_ok);
        char *text = json_dumps(out, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(out);
    } else if (rc == 0) {
        oa_table(fresh, s_probe_columns, OA_COUNT(s_probe_columns), "");
        if (!json_array_size(fresh))
            fprintf(stderr,
                    "tollgate: no probe answered within %ld s (is tollgate-health running, "
                    "and does the provider have active keys and models?)\n",
                    wait_s);
    }
    json_decref(fresh);
    return rc ? rc : all_ok ? 0 : 1;
}

const oa_command_t oa_routing_commands[] = {
    {"routing decide", 1, "key session capabilities", s_routing_decide,
     "routing decide MODEL [--key ID_OR_KEY] [--session S] [--capabilities TAG,TAG] [--json]"},
    {"breakers", 0, "router", s_breakers_list, "breakers [--router N] [--json]"},
    {"breakers list", 0, "router", s_breakers_list, "breakers list [--router N] [--json]"},
    {"breakers reset", 0, "key provider model", s_breakers_reset,
     "breakers reset --key PROVIDER_KEY_ID | --provider P --model UPSTREAM_MODEL"},
    {"sticky", 0, "session", s_sticky_list, "sticky [--session S] [--json]"},
    {"sticky rm", 1, "", s_sticky_rm, "sticky rm SESSION"},
    {"health", 0, "provider", s_health, "health [--provider P] [--json]"},
    {"health probe", 1, "model wait", s_health_probe,
     "health probe PROVIDER [--model M] [--wait SECONDS] [--json]   (1-token completions)"},
    OA_COMMANDS_END};
