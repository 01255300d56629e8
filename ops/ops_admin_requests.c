/*  ops_admin_requests: the admin CLI's commands for the request log and run-time settings.

    requests and their timelines, request-log, log-level, key-prefix. `first` indexes the
    first positional after the command words.
*/
#include "ops_admin_cli.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const oa_column_t s_request_columns[] = {
    {"STARTED", "started_at", OA_COL_TIME}, {"REQUEST", "request_id", OA_COL_TEXT},
    {"ACCOUNT", "account", OA_COL_TEXT},    {"MODEL", "model", OA_COL_TEXT},
    {"PROVIDER", "provider", OA_COL_TEXT},  {"STATUS", "status", OA_COL_TEXT},
    {"TRIES", "attempts", OA_COL_TEXT},     {"MS", "latency_ms", OA_COL_TEXT},
    {"TTFB", "ttfb_ms", OA_COL_TEXT},       {"COST", "cost_micros", OA_COL_MONEY}};

static const oa_column_t s_request_detail[] = {{"request", "request_id", OA_COL_TEXT},
                                               {"started", "started_at", OA_COL_TIME},
                                               {"account", "account", OA_COL_TEXT},
                                               {"key", "key_prefix", OA_COL_TEXT},
                                               {"model", "model", OA_COL_TEXT},
                                               {"provider", "provider", OA_COL_TEXT},
                                               {"upstream model", "upstream_model", OA_COL_TEXT},
                                               {"status", "status", OA_COL_TEXT},
                                               {"attempts", "attempts", OA_COL_TEXT},
                                               {"latency ms", "latency_ms", OA_COL_TEXT},
                                               {"ttfb ms", "ttfb_ms", OA_COL_TEXT},
                                               {"tokens in", "tokens_in", OA_COL_TEXT},
                                               {"tokens out", "tokens_out", OA_COL_TEXT},
                                               {"cost", "cost_micros", OA_COL_MONEY}};

static int s_requests(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048] = "/admin/requests";
    static const char *const options[] = {"account", "key",   "model",  "provider", "status",
                                          "errors",  "since", "before", "limit"};
    oa_add_query(path, sizeof path, args, options, options, 9);
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        oa_table(json_object_get(answer, "data"), s_request_columns, OA_COUNT(s_request_columns),
                 "no requests");
        const char *next = json_string_value(json_object_get(answer, "next_before"));
        if (next)
            printf("older: --before %s\n", next);
    }
    json_decref(answer);
    return rc;
}

//  The request's spans, one line each: time of day, duration, what, where,
//  and the outcome (docs/observability.md).
static void s_request_timeline(json_t *spans)
{
    if (!json_array_size(spans))
        return;
    printf("timeline\n");
    size_t index;
    json_t *span;
    json_array_foreach(spans, index, span)
    {
        const char *at = oa_str(span, "started_at");
        char line[512];
        int n = snprintf(line, sizeof line, "  %.12s %9.3f ms  %-20s %-9s",
                         strlen(at) > 11 ? at + 11 : at,
                         json_number_value(json_object_get(span, "duration_ms")),
                         oa_str(span, "name"), oa_str(span, "program"));
        static const char *fields[] = {"status",         "attempt",    "provider",
                                       "upstream_model", "error_code", NULL};
        for (int i = 0; fields[i] && n > 0 && (size_t)n < sizeof line; i++) {
            json_t *value = json_object_get(span, fields[i]);
            if (json_is_integer(value))
                n += snprintf(line + n, sizeof line - (size_t)n, " %s=%" JSON_INTEGER_FORMAT,
                              fields[i], json_integer_value(value));
            else if (json_is_string(value))
                n += snprintf(line + n, sizeof line - (size_t)n, " %s=%s", fields[i],
                              json_string_value(value));
        }
        printf("%s\n", line);
    }
}

static int s_request_show(oa_client_t *client, oa_args_t *args, int first)
{
    char *id = oa_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/requests/%s", id);
    free(id);
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        int rows = OA_COUNT(s_request_detail);
        for (int i = 0; i < rows; i++) {
            char cell[OA_CELL];
            oa_cell(answer, &s_request_detail[i], cell, sizeof cell);
            printf("%-16s %s\n", s_request_detail[i].title, cell);
        }
        json_t *details = json_object_get(answer, "details");
        printf("%-16s %s\n", "details",
               json_is_object(details) ? oa_str(details, "level") : "none (level base)");
        s_request_timeline(json_object_get(answer, "spans"));
    }
    json_decref(answer);
    return rc;
}

static int s_request_log(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", "/admin/settings/request-log", NULL, &answer);
    if (rc == 0 && !client->json)
        printf("level %s, bodies up to %" JSON_INTEGER_FORMAT " bytes, kept %" JSON_INTEGER_FORMAT
               " days\n",
               oa_str(answer, "level"), oa_int(answer, "max_body_bytes"),
               oa_int(answer, "retention_days"));
    json_decref(answer);
    return rc;
}

static int s_request_log_set(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *body = json_object();
    oa_put_str(body, args, "level", "level");
    if (oa_put_int(body, args, "max-body-bytes", "max_body_bytes") ||
        oa_put_int(body, args, "retention-days", "retention_days")) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = oa_call(client, "PATCH", "/admin/settings/request-log", body, &answer);
    if (rc == 0 && !client->json)
        printf("request log: level %s, bodies up to %" JSON_INTEGER_FORMAT
               " bytes, kept %" JSON_INTEGER_FORMAT " days\n",
               oa_str(answer, "level"), oa_int(answer, "max_body_bytes"),
               oa_int(answer, "retention_days"));
    json_decref(answer);
    return rc;
}

//  The log level in force: for every program, then each program's own.
static void s_log_level_print(json_t *answer)
{
    json_t *level = json_object_get(answer, "level");
    printf("every program: %s\n",
           json_is_string(level) ? json_string_value(level) : "configured log_level");
    const char *program;
    json_t *value;
    json_object_foreach(json_object_get(answer, "programs"), program, value)
        printf("%s: %s\n", program, json_string_value(value));
}

static int s_log_level(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", "/admin/settings/log-level", NULL, &answer);
    if (rc == 0 && !client->json)
        s_log_level_print(answer);
    json_decref(answer);
    return rc;
}

static int s_log_level_set(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "level", args->words[first]);
    oa_put_str(body, args, "program", "program");
    json_t *answer = NULL;
    int rc = oa_call(client, "PATCH", "/admin/settings/log-level", body, &answer);
    if (rc == 0 && !client->json)
        s_log_level_print(answer);
    json_decref(answer);
    return rc;
}

//  settings 'client_keys': the prefix new client keys get.
static int s_key_prefix(oa_client_t *client, oa_args_t *args, int first)
{
    bool set = args->word_count > first;
    json_t *answer = NULL;
    int rc = set ? oa_call(client, "PATCH", "/admin/settings/client-keys",
                           json_pack("{s:s}", "prefix", args->words[first]), &answer)
                 : oa_call(client, "GET", "/admin/settings/client-keys", NULL, &answer);
    if (rc == 0 && !client->json)
        printf("client keys are made with the prefix %s%s\n", oa_str(answer, "prefix"),
               set ? " from now on (keys made before keep working)" : "");
    json_decref(answer);
    return rc;
}

const oa_command_t oa_request_commands[] = {
    {"requests", 0, "account key model provider status since before limit", s_requests,
     "requests [--account NAME] [--key ID] [--model M] [--provider NAME] [--status N] [--errors] "
     "[--since TIME] [--before TIME] [--limit N] [--json]"},
    {"requests show", 1, "", s_request_show, "requests show REQUEST_ID [--json]"},
    {"request-log", 0, "", s_request_log, "request-log [--json]"},
    {"request-log set", 0, "level max-body-bytes retention-days", s_request_log_set,
     "request-log set [--level base|headers|full] [--max-body-bytes N] [--retention-days N]"},
    {"log-level", 0, "", s_log_level, "log-level [--json]"},
    {"key-prefix", 0, "", s_key_prefix, "key-prefix [--json]"},
    {"key-prefix set", 1, "", s_key_prefix, "key-prefix set PREFIX [--json]"},
    {"log-level set", 1, "program", s_log_level_set,
     "log-level set debug|info|warn|error|default [--program NAME]"},
    OA_COMMANDS_END};
