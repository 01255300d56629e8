#include "ops_ledger.h"
#include "proto_check.h"
#include "ops_tz.h"
#include "proto_ledger_check.h"
#include "admin_report.h"
#include "proto_config.h"
#include "proto_db.h"

#include <assert.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int ops_ledger_parse_time(const char *text, int64_t *us)
{
    struct tm tm = {0};
    const char *end = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end) {
        memset(&tm, 0, sizeof tm);
        end = strptime(text, "%Y-%m-%d", &tm);
    }
    if (!end || (*end && strcmp(end, "Z") != 0))
        return -1;
    time_t seconds = timegm(&tm);
    if (seconds < 0)
        return -1;
    *us = (int64_t)seconds * 1000000;
    return 0;
}

//  The database URL, first found wins (see the header). Returns NULL after
//  printing why. The returned string lives as long as *config.
static const char *s_database_url(const char *url, const char *dir, proto_config_t **config)
{
    if (url)
        return url;
    if (getenv("TOLLGATE_DATABASE_URL") && *getenv("TOLLGATE_DATABASE_URL"))
        return getenv("TOLLGATE_DATABASE_URL");
    if (!dir)
        dir = getenv("TOLLGATE_DIR") && *getenv("TOLLGATE_DIR") ? getenv("TOLLGATE_DIR") : "./var";
    char state_file[4096];
    snprintf(state_file, sizeof state_file, "%s/tollgate.conf", dir);
    const char *config_file = getenv("TOLLGATE_CONFIG");
    const char *file = config_file && *config_file     ? config_file
                       : access(state_file, R_OK) == 0 ? state_file
                                                       : NULL;
    if (!file) {
        fprintf(stderr, "tollgate ledger: no database given: use --database-url URL, "
                        "TOLLGATE_DATABASE_URL, TOLLGATE_CONFIG or --dir with a tollgate.conf\n");
        return NULL;
    }
    char error[1024];
    *config = proto_config_new();
    if (proto_config_load_file(*config, file, error, sizeof error) != 0) {
        fprintf(stderr, "tollgate ledger: %s\n", error);
        return NULL;
    }
    return proto_config_str(*config, "database_url");
}

static void s_usage(FILE *out)
{
    fprintf(out, "usage: tollgate ledger check|balances|spend|usage|partitions|prune [OPTIONS]\n"
                 "  check                     prove balances equal the journal, usage and journal "
                 "agree\n"
                 "  balances [RANGE] [--account ID] [--json]\n"
                 "  spend [--by account|key|model|provider|hour|day] [RANGE] [FILTERS] "
                 "[--json|--csv]\n"
                 "  usage [RANGE] [FILTERS] [--errors] [--limit N] [--cursor C] [--tz ZONE] "
                 "[--json|--csv]\n"
                 "  partitions                create this and next month's partitions, list all\n"
                 "  prune --before YYYY-MM [--dry-run]\n"
                 "RANGE: --from T --to T (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC)\n"
                 "FILTERS: --account ID --key ID --model NAME --provider ID\n"
                 "database: --database-url URL or --dir DIR (default $TOLLGATE_DIR, ./var)\n");
}

static int s_check(PGconn *db)
{
    char *report = NULL;
    int rc = proto_ledger_check_run(db, &report);
    fputs(report ? report : "", rc == -1 ? stderr : stdout);
    free(report);
    if (rc == 0)
        printf("ledger check: OK\n");
    return rc == 0 ? 0 : 1;
}

static void s_print_json(json_t *json)
{
    char *text = json_dumps(json, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", text);
    free(text);
}

static void s_money(json_int_t micros, char *out, size_t size)
{
    long long value = (long long)micros;
    unsigned long long magnitude =
        value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
    snprintf(out, size, "%s%llu.%06llu", value < 0 ? "-" : "", magnitude / 1000000,
             magnitude % 1000000);
}

static json_int_t s_get(json_t *object, const char *name)
{
    return json_integer_value(json_object_get(object, name));
}

static int s_spend(PGconn *db, const admin_report_query_t *query, char format)
{
    json_t *out = NULL;
    char error[1024];
    if (admin_report_spend(db, query, &out, error, sizeof error) != 0) {
        fprintf(stderr, "tollgate ledger spend: %s\n", error);
        return 1;
    }
    if (format == 'j')
        s_print_json(out);
    else {
        static const char *columns[] = {
            "requests",           "errors",      "tokens_in", "tokens_out", "tokens_cache_read",
            "tokens_cache_write", "cost_micros", "images"};
        enum { S_COLUMNS = sizeof columns / sizeof columns[0] };
        const char *group_by = json_string_value(json_object_get(out, "group_by"));
        if (format == 'c') {
            printf("%s", group_by);
            for (int c = 0; c < S_COLUMNS; c++)
                printf(",%s", columns[c]);
            printf("\n");
        } else
            printf("%-24s %10s %8s %14s %14s %8s %16s\n", group_by, "requests", "errors",
                   "tokens in", "tokens out", "images", "cost");
        size_t index;
        json_t *row;
        json_array_foreach(json_object_get(out, "rows"), index, row)
        {
            const char *group = json_string_value(json_object_get(row, "group"));
            if (format == 'c') {
                printf("\"");
                for (const char *c = group; *c; c++)
                    printf(*c == '"' ? "\"\"" : "%c", *c);
                printf("\"");
                for (int c = 0; c < S_COLUMNS; c++)
                    printf(",%" JSON_INTEGER_FORMAT, s_get(row, columns[c]));
                printf("\n");
            } else {
                char cost[40];
                s_money(s_get(row, "cost_micros"), cost, sizeof cost);
                printf("%-24s %10" JSON_INTEGER_FORMAT " %8" JSON_INTEGER_FORMAT
                       " %14" JSON_INTEGER_FORMAT " %14" JSON_INTEGER_FORMAT
                       " %8" JSON_INTEGER_FORMAT " %16s\n",
                       group, s_get(row, "requests"), s_get(row, "errors"), s_get(row, "tokens_in"),
                       s_get(row, "tokens_out"), s_get(row, "images"), cost);
            }
        }
        if (format != 'c') {
            json_t *total = json_object_get(out, "total");
            char cost[40];
            s_money(s_get(total, "cost_micros"), cost, sizeof cost);
            printf("%-24s %10" JSON_INTEGER_FORMAT " %8" JSON_INTEGER_FORMAT
                   " %14" JSON_INTEGER_FORMAT " %14" JSON_INTEGER_FORMAT " %8" JSON_INTEGER_FORMAT
                   " %16s\n",
                   "total", s_get(total, "requests"), s_get(total, "errors"),
                   s_get(total, "tokens_in"), s_get(total, "tokens_out"), s_get(total, "images"),
                   cost);
        }
    }
    json_decref(out);
    return 0;
}

static int s_balances(PGconn *db, const admin_report_query_t *query, char format)
{
    json_t *out = NULL;
    char error[1024];
    if (admin_report_balances(db, query, &out, error, sizeof error) != 0) {
        fprintf(stderr, "tollgate ledger balances: %s\n", error);
        return 1;
    }
    if (format == 'j')
        s_print_json(out);
    else {
        printf("%8s %-24s %16s %16s %16s %16s %10s\n", "id", "account", "balance", "spent",
               "topped up", "granted", "requests");
        size_t index;
        json_t *row;
        json_array_foreach(json_object_get(out, "accounts"), index, row)
        {
            char balance[40], spent[40], topped[40], granted[40];
            s_money(s_get(row, "balance_micros"), balance, sizeof balance);
            s_money(s_get(row, "spent_micros"), spent, sizeof spent);
            s_money(s_get(row, "topped_up_micros"), topped, sizeof topped);
            s_money(s_get(row, "granted_micros"), granted, sizeof granted);
            printf("%8" JSON_INTEGER_FORMAT " %-24s %16s %16s %16s %16s %10" JSON_INTEGER_FORMAT
                   "\n",
                   s_get(row, "id"), json_string_value(json_object_get(row, "name")), balance,
                   spent, topped, granted, s_get(row, "requests"));
        }
    }
    json_decref(out);
    return 0;
}

static int s_usage_records(PGconn *db, const admin_report_query_t *query, char format,
                           const char *zone)
{
    char error[1024];
    if (format == 'c') {
        if (admin_report_usage_csv(db, query, stdout, error, sizeof error) < 0) {
            fprintf(stderr, "tollgate ledger usage: %s\n", error);
            return 1;
        }
        return 0;
    }
    json_t *out = NULL;
    if (admin_report_usage(db, query, &out, error, sizeof error) != 0) {
        fprintf(stderr, "tollgate ledger usage: %s\n", error);
        return 1;
    }
    if (format == 'j')
        s_print_json(out);
    else {
        printf("%-27s %-34s %8s %-20s %6s %9s %9s %14s\n", "started", "request", "account", "model",
               "status", "in", "out", "cost");
        size_t index;
        json_t *row;
        json_array_foreach(json_object_get(out, "records"), index, row)
        {
            char cost[40], started[64];
            s_money(s_get(row, "cost_micros"), cost, sizeof cost);
            //  UTC as stored unless --tz or TZ names a zone (ops_tz).
            const char *at = json_string_value(json_object_get(row, "started_at"));
            if (!*zone || ops_tz_format(at ? at : "", zone, started, sizeof started) != 0)
                snprintf(started, sizeof started, "%s", at ? at : "-");
            printf("%-27s %-34s %8" JSON_INTEGER_FORMAT " %-20s %6" JSON_INTEGER_FORMAT
                   " %9" JSON_INTEGER_FORMAT " %9" JSON_INTEGER_FORMAT " %14s%s%s\n",
                   started, json_string_value(json_object_get(row, "request_id")),
                   s_get(row, "account_id"), json_string_value(json_object_get(row, "model")),
                   s_get(row, "status"), s_get(row, "tokens_in"), s_get(row, "tokens_out"), cost,
                   json_is_true(json_object_get(row, "estimated")) ? " (estimated)" : "",
                   json_is_true(json_object_get(row, "operator_loss")) ? " (operator's loss)" : "");
        }
        json_t *next = json_object_get(out, "next_cursor");
        if (json_is_string(next))
            printf("more: --cursor %s\n", json_string_value(next));
    }
    json_decref(out);
    return 0;
}

static PGresult *s_exec(PGconn *db, const char *sql)
{
    PGresult *result = PQexec(db, sql);
    ExecStatusType status = PQresultStatus(result);
    if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK)
        return result;
    char error[1024];
    proto_db_error(db, error, sizeof error);
    fprintf(stderr, "tollgate ledger: %s\n", error);
    PQclear(result);
    return NULL;
}

static const char *s_partitions_sql =
    "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid),"
    " greatest(c.reltuples, 0)::bigint FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = 'usage'::regclass ORDER BY 1";

static int s_partitions(PGconn *db)
{
    PGresult *result = s_exec(db, "SELECT tollgate_usage_partition(now()),"
                                  " tollgate_usage_partition(now() + interval '1 month')");
    if (!result)
        return 1;
    PQclear(result);
    if (!(result = s_exec(db, s_partitions_sql)))
        return 1;
    for (int row = 0; row < PQntuples(result); row++)
        printf("%-16s %-80s ~%s rows\n", PQgetvalue(result, row, 0), PQgetvalue(result, row, 1),
               PQgetvalue(result, row, 2));
    PQclear(result);
    return 0;
}

//  Detaches and drops whole month partitions older than `before`
//  (YYYY-MM). DETACH ... CONCURRENTLY takes no lock that an INSERT waits
//  for (it waits for running transactions instead), so the ledger keeps
//  writing; the DROP then touches only the detached table.
static int s_prune(PGconn *db, const char *before, bool dry_run)
{
    int year, month;
    char extra;
    if (!before || sscanf(before, "%4d-%2d%c", &year, &month, &extra) != 2 || month < 1 ||
        month > 12) {
        fprintf(stderr, "tollgate ledger prune: --before takes YYYY-MM\n");
        return 2;
    }
    char cutoff_name[32];
    snprintf(cutoff_name, sizeof cutoff_name, "usage_%04dm%02d", year, month);
    //  The current month is being written: only whole past months go.
    time_t now = time(NULL);
    struct tm today;
    gmtime_r(&now, &today);
    if (year * 12 + month > (today.tm_year + 1900) * 12 + today.tm_mon + 1) {
        fprintf(stderr,
                "tollgate ledger prune: --before may be this month at the latest "
                "(%04d-%02d)\n",
                today.tm_year + 1900, today.tm_mon + 1);
        return 2;
    }
    PGresult *result = s_exec(db, s_partitions_sql);
    if (!result)
        return 1;
    int rc = 0, dropped = 0;
    for (int row = 0; row < PQntuples(result) && rc == 0; row++) {
        const char *name = PQgetvalue(result, row, 0);
        //  usage_YYYYmMM sorts by month.
        if (strlen(name) != strlen(cutoff_name) || strcmp(name, cutoff_name) >= 0)
            continue;
        printf("%s %s\n", dry_run ? "would drop" : "dropping", name);
        if (dry_run)
            continue;
        char sql[256];
        snprintf(sql, sizeof sql, "ALTER TABLE usage DETACH PARTITION %s CONCURRENTLY", name);
        PGresult *done = s_exec(db, sql);
        if (done) {
            PQclear(done);
            snprintf(sql, sizeof sql, "DROP TABLE %s", name);
            done = s_exec(db, sql);
        }
        if (!done)
            rc = 1;
        PQclear(done);
        dropped++;
    }
    PQclear(result);
    if (rc == 0 && !dry_run) {
        //  Hourly rollups go with the rows; daily ones stay (they are small
        //  and keep the history). The cutoff tells `ledger check` where the
        //  rows end.
        char sql[512];
        snprintf(sql, sizeof sql,
                 "WITH h AS (DELETE FROM usage_hourly WHERE hour < '%04d-%02d-01T00:00:00Z'),"
                 " s AS (INSERT INTO settings (key, value) VALUES ('usage_pruned_before',"
                 " to_jsonb('%04d-%02d-01'::text)) ON CONFLICT (key) DO UPDATE SET value ="
                 " excluded.value, updated_at = now()) SELECT 1",
                 year, month, year, month);
        PGresult *done = s_exec(db, sql);
        rc = done ? 0 : 1;
        PQclear(done);
        printf("%d partition(s) dropped\n", dropped);
    }
    return rc;
}

//  The zone of usage tables (ops_tz). Returns 0, or -1 after saying why.
static int s_zone(const char *option, char *zone, size_t size)
{
    char problem[256];
    if (ops_tz_choose(option, zone, size, problem, sizeof problem) == 0)
        return 0;
    fprintf(stderr, "tollgate ledger: %s\n", problem);
    return -1;
}

int ops_ledger_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        s_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *command = argv[1];
    static const struct option options[] = {{"database-url", required_argument, NULL, 'u'},
                                            {"dir", required_argument, NULL, 'd'},
                                            {"from", required_argument, NULL, 'f'},
                                            {"to", required_argument, NULL, 't'},
                                            {"account", required_argument, NULL, 'a'},
                                            {"key", required_argument, NULL, 'k'},
                                            {"model", required_argument, NULL, 'm'},
                                            {"provider", required_argument, NULL, 'p'},
                                            {"by", required_argument, NULL, 'b'},
                                            {"limit", required_argument, NULL, 'l'},
                                            {"cursor", required_argument, NULL, 'c'},
                                            {"errors", no_argument, NULL, 'e'},
                                            {"json", no_argument, NULL, 'J'},
                                            {"tz", required_argument, NULL, 'z'},
                                            {"csv", no_argument, NULL, 'C'},
                                            {"before", required_argument, NULL, 'B'},
                                            {"dry-run", no_argument, NULL, 'n'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    const char *url = NULL, *dir = NULL, *before = NULL, *tz = NULL;
    admin_report_query_t query = {0};
    char format = 't';
    bool dry_run = false;
    optind = 0; //  reinitialise getopt: main may have used it
    int option;
    while ((option = getopt_long(argc - 1, argv + 1, "", options, NULL)) != -1) {
        char *end = NULL;
        switch (option) {
        case 'u':
            url = optarg;
            break;
        case 'd':
            dir = optarg;
            break;
        case 'f':
        case 't':
            if (ops_ledger_parse_time(optarg, option == 'f' ? &query.from_us : &query.to_us) != 0) {
                fprintf(stderr, "tollgate ledger: --%s takes YYYY-MM-DD[THH:MM:SSZ], not '%s'\n",
                        option == 'f' ? "from" : "to", optarg);
                return 2;
            }
            break;
        case 'a':
        case 'k':
        case 'p': {
            unsigned long long id = strtoull(optarg, &end, 10);
            if (!*optarg || *end || id == 0) {
                fprintf(stderr, "tollgate ledger: ids are positive numbers, not '%s'\n", optarg);
                return 2;
            }
            *(option == 'a'   ? &query.account_id
              : option == 'k' ? &query.key_id
                              : &query.provider_id) = id;
            break;
        }
        case 'm':
            query.model = optarg;
            break;
        case 'b':
            query.group_by = optarg;
            break;
        case 'l':
            query.limit = (size_t)strtoull(optarg, &end, 10);
            if (!*optarg || *end || query.limit == 0) {
                fprintf(stderr, "tollgate ledger: --limit takes a positive number\n");
                return 2;
            }
            break;
        case 'c':
            query.cursor = optarg;
            break;
        case 'e':
            query.status_min = 400;
            break;
        case 'J':
            format = 'j';
            break;
        case 'z':
            tz = optarg;
            break;
        case 'C':
            format = 'c';
            break;
        case 'B':
            before = optarg;
            break;
        case 'n':
            dry_run = true;
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (optind < argc - 1) {
        fprintf(stderr, "tollgate ledger %s: unexpected argument '%s'\n", command,
                argv[optind + 1]);
        return 2;
    }
    static const char *commands[] = {"check", "balances", "spend", "usage", "partitions", "prune"};
    bool known = false;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        known = known || strcmp(command, commands[i]) == 0;
    if (!known) {
        fprintf(stderr, "tollgate ledger: unknown command '%s'\n", command);
        s_usage(stderr);
        return 2;
    }
    char zone[128];
    if (s_zone(tz, zone, sizeof zone) != 0)
        return 2;
    proto_config_t *config = NULL;
    const char *database = s_database_url(url, dir, &config);
    if (!database) {
        proto_config_destroy(&config);
        return 2;
    }
    char error[1024];
    PGconn *db = proto_db_connect_once(database, error, sizeof error);
    proto_config_destroy(&config);
    if (!db) {
        fprintf(stderr, "tollgate ledger: %s\n", error);
        return 1;
    }
    int rc;
    if (strcmp(command, "check") == 0)
        rc = s_check(db);
    else if (strcmp(command, "balances") == 0)
        rc = s_balances(db, &query, format);
    else if (strcmp(command, "spend") == 0)
        rc = s_spend(db, &query, format);
    else if (strcmp(command, "usage") == 0)
        rc = s_usage_records(db, &query, format, zone);
    else if (strcmp(command, "partitions") == 0)
        rc = s_partitions(db);
    else
        rc = s_prune(db, before, dry_run);
    PQfinish(db);
    return rc;
}

//  --------------------------------------------------------------------------
//  Self test

void ops_ledger_test(bool verbose)
{
    if (verbose)
        printf(" * ops_ledger: ");
    int64_t us = 0;
    PROTO_CHECK(ops_ledger_parse_time("2024-02-29", &us) == 0 && us == 1709164800LL * 1000000);
    PROTO_CHECK(ops_ledger_parse_time("2024-02-29T12:00:00Z", &us) == 0 &&
                us == 1709208000LL * 1000000);
    PROTO_CHECK(ops_ledger_parse_time("2024-02-29T12:00:00", &us) == 0);
    PROTO_CHECK(ops_ledger_parse_time("yesterday", &us) == -1);
    PROTO_CHECK(ops_ledger_parse_time("2024-02-29 junk", &us) == -1);
    char *no_args[] = {"ledger", NULL};
    PROTO_CHECK(ops_ledger_main(1, no_args) == 2);
    char *unknown[] = {"ledger", "nope", "--database-url", "x", NULL};
    PROTO_CHECK(ops_ledger_main(4, unknown) == 2);
    char *bad_time[] = {"ledger", "spend", "--from", "soon", NULL};
    PROTO_CHECK(ops_ledger_main(4, bad_time) == 2);
    if (verbose)
        printf("OK\n");
}
