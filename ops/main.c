/*  tollgate: the operator's tool.

    One table of commands below; each entry names the words that select it
    ("migrate", later "provider add"), a one-line summary for --help, and a
    function that receives the remaining arguments (argv[0] is the last word
    of the command) and returns the exit code. Add a command by adding a
    function and a row.
*/
#include "ops_cluster.h"
#include "ops_migrate.h"
#include "proto_config.h"
#include "proto_db.h"
#include "proto_log.h"

#include <czmq.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ops_admin.h"
#include "ops_cert.h"
#include "ops_ledger.h"
#include "ops_reset.h"
#include "ops_top.h"

#ifndef TOLLGATE_VERSION
#define TOLLGATE_VERSION "0.0.0"
#endif

#define S_DEFAULT_DIR "./var"
#define S_DEFAULT_HOST "127.0.0.1"
#define S_DEFAULT_PORT 8080
#define S_DEFAULT_ADMIN_PORT 8081
#define S_DEFAULT_UP_TIMEOUT_MS 30000

typedef int(s_command_fn)(int argc, char **argv);

typedef struct {
    const char *words;   //  "migrate" or "provider add": what selects it
    s_command_fn *run;   //  gets the arguments after the words
    const char *usage;   //  options, for --help
    const char *summary; //  one line, for --help
    bool hidden;         //  internal: not listed
} s_command_t;

static int s_cmd_up(int argc, char **argv);
static int s_cmd_down(int argc, char **argv);
static int s_cmd_status(int argc, char **argv);
static int s_cmd_migrate(int argc, char **argv);
static int s_cmd_ping(int argc, char **argv);
static int s_cmd_restart(int argc, char **argv);
static int s_cmd_supervise(int argc, char **argv);
static int s_cmd_version(int argc, char **argv);
static int s_cmd_help(int argc, char **argv);

static const s_command_t s_commands[] = {
    {"up", s_cmd_up,
     "[--dir DIR] [--port N] [--admin-port N] [--host ADDR] [--timeout SECONDS] [--db-only] "
     "[--tls-cert FILE --tls-key FILE] [--admin-tls-cert FILE --admin-tls-key FILE]",
     "start a local cluster (private PostgreSQL + every program) and print its URLs", false},
    {"down", s_cmd_down, "[--dir DIR]", "stop the local cluster and its PostgreSQL", false},
    {"status", s_cmd_status, "[--dir DIR] [--json]",
     "show each program and PostgreSQL; exit 0 when all are up", false},
    {"ping", s_cmd_ping,
     "[--dir DIR] [--timeout SECONDS] [PROGRAM ...] | --endpoint ENDPOINT [--ready]",
     "ask programs (default: all) whether they answer on their control socket; with "
     "--endpoint, one control socket (health checks; --ready: fail while it drains)",
     false},
    {"restart", s_cmd_restart, "PROGRAM [--dir DIR] [--timeout SECONDS]",
     "roll the instances of one program: drain, restart, wait for PING, one at a time", false},
    {"migrate", s_cmd_migrate, "[--database-url URL] [--dir DIR] [--migrations FOLDER]",
     "apply pending database migrations", false},
    {"provider", ops_admin_main, "add|list|show|key ...", "manage providers and their keys", false},
    {"model", ops_admin_main, "add|list|show ...", "manage logical models and routes", false},
    {"account", ops_admin_main, "add|list|show|topup ...", "manage accounts and balances", false},
    {"key", ops_admin_main, "create|list|revoke ...", "manage client API keys", false},
    {"usage", ops_admin_main, "[--account NAME] [--limit N]", "recent usage records", false},
    {"login", ops_admin_main, "USERNAME [--password -] [--ttl SECONDS]",
     "log in to the admin API; the session is kept in DIR/admin_session", false},
    {"logout", ops_admin_main, "", "end the session `tollgate login` started", false},
    {"whoami", ops_admin_main, "[--json]", "who the admin session or token is", false},
    {"admin", ops_admin_main, "user|session|bootstrap|reset-password ...",
     "manage admin users, their sessions and the bootstrap token", false},
    {"admin reset-password", ops_reset_main,
     "USERNAME [--password PASSWORD|-] [--database-url URL] [--dir DIR] [--json]",
     "set an admin user's password with database access alone (no admin server), end their "
     "sessions",
     false},
    {"token", ops_admin_main, "create|list|revoke ...", "manage scoped admin API tokens", false},
    {"audit", ops_admin_main, "[--actor NAME] [--action A] [--limit N] [--before ID]",
     "the admin audit log", false},
    {"requests", ops_admin_main, "[show ID] [--account NAME] [--errors] ...",
     "request logs (usage with names, details)", false},
    {"request-log", ops_admin_main, "[set --level base|headers|full ...]",
     "request-log detail level and retention", false},
    {"routing", ops_admin_main, "decide MODEL [--key K] [--session S] [--capabilities T,T]",
     "explain the route decision a request would get", false},
    {"breakers", ops_admin_main,
     "[list [--router N] | reset --key ID | reset --provider P --model M]",
     "circuit breakers that are not closed; close one in every router", false},
    {"sticky", ops_admin_main, "[--session S] | rm SESSION", "sticky session bindings", false},
    {"health", ops_admin_main, "[--provider P]", "provider health and model-list fetches", false},
    {"cert", ops_cert_main, "make|list [--curve-dir FOLDER] [--dir DIR] [--replace] [PROGRAM ...]",
     "make or list the cluster's CURVE certificates (internal traffic)", false},
    {"ledger", ops_ledger_main, "check|balances|spend|usage|partitions|prune ...",
     "ledger reports, checks and upkeep (straight to PostgreSQL)", false},
    {"key-prefix", ops_admin_main, "[set PREFIX] [--json]",
     "the prefix new client keys get (settings 'client_keys', default tg-)", false},
    {"log-level", ops_admin_main, "[set debug|info|warn|error|default [--program NAME]]",
     "every program's log level, changed at run time", false},
    {"top", ops_top_main, "[--dir DIR] [--metrics HOST:PORT,...] [--interval MS] [--once] [--json]",
     "live requests/s, errors, latency and breakers per provider", false},
    {"version", s_cmd_version, "", "print the version", false},
    {"help", s_cmd_help, "", "show this help", false},
    {"supervise", s_cmd_supervise, "--dir DIR", "run the supervisor (started by `up`)", true},
};
#define S_COMMAND_COUNT (sizeof s_commands / sizeof s_commands[0])

//  How many of argv's words make up `words`, or 0 when they do not match.
static int s_match(const char *words, int argc, char **argv)
{
    int used = 0;
    const char *cursor = words;
    while (*cursor) {
        size_t length = strcspn(cursor, " ");
        if (used >= argc || strlen(argv[used]) != length ||
            strncmp(argv[used], cursor, length) != 0)
            return 0;
        used++;
        cursor += length;
        while (*cursor == ' ')
            cursor++;
    }
    return used;
}

static void s_usage(FILE *out)
{
    fprintf(out, "usage: tollgate COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < S_COMMAND_COUNT; i++)
        if (!s_commands[i].hidden)
            fprintf(out, "  %-12s %s\n", s_commands[i].words, s_commands[i].summary);
    fprintf(out, "\n`tollgate COMMAND --help` shows a command's options.\n"
                 "DIR defaults to $TOLLGATE_DIR, else " S_DEFAULT_DIR ".\n");
}

static void s_command_usage(FILE *out, const char *words)
{
    for (size_t i = 0; i < S_COMMAND_COUNT; i++)
        if (strcmp(s_commands[i].words, words) == 0)
            fprintf(out, "usage: tollgate %s %s\n  %s\n", words, s_commands[i].usage,
                    s_commands[i].summary);
}

static const char *s_default_dir(void)
{
    const char *dir = getenv("TOLLGATE_DIR");
    return dir && *dir ? dir : S_DEFAULT_DIR;
}

//  Parses a port number. Returns it, or -1.
static int s_port(const char *text)
{
    char *end;
    long value = strtol(text, &end, 10);
    return *text && !*end && value > 0 && value <= 65535 ? (int)value : -1;
}

static ops_cluster_t *s_open_cluster(const char *dir)
{
    char error[1024];
    ops_cluster_t *cluster = ops_cluster_new(dir, NULL, error, sizeof error);
    if (!cluster)
        fprintf(stderr, "tollgate: %s\n", error);
    return cluster;
}

static int s_cmd_up(int argc, char **argv)
{
    static const struct option options[] = {{"dir", required_argument, NULL, 'd'},
                                            {"port", required_argument, NULL, 'p'},
                                            {"admin-port", required_argument, NULL, 'a'},
                                            {"host", required_argument, NULL, 'H'},
                                            {"timeout", required_argument, NULL, 't'},
                                            {"demo", no_argument, NULL, 'D'},
                                            {"db-only", no_argument, NULL, 'B'},
                                            {"tls-cert", required_argument, NULL, '0'},
                                            {"tls-key", required_argument, NULL, '1'},
                                            {"admin-tls-cert", required_argument, NULL, '2'},
                                            {"admin-tls-key", required_argument, NULL, '3'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    ops_up_options_t up = {.host = S_DEFAULT_HOST,
                           .port = S_DEFAULT_PORT,
                           .admin_port = S_DEFAULT_ADMIN_PORT,
                           .timeout_ms = S_DEFAULT_UP_TIMEOUT_MS};
    const char *dir = s_default_dir();
    char tls_paths[4][PATH_MAX + 1];
    int option;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (option) {
        case 'd':
            dir = optarg;
            break;
        case 'p':
        case 'a': {
            int port = s_port(optarg);
            if (port < 0) {
                fprintf(stderr, "tollgate: --%s takes a port from 1 to 65535, not '%s'\n",
                        option == 'p' ? "port" : "admin-port", optarg);
                return 2;
            }
            *(option == 'p' ? &up.port : &up.admin_port) = port;
            up.listen_given = true;
            break;
        }
        case 'H':
            up.host = optarg;
            up.listen_given = true;
            break;
        case 't': {
            char *end;
            long seconds = strtol(optarg, &end, 10);
            if (!*optarg || *end || seconds < 1 || seconds > 3600) {
                fprintf(stderr, "tollgate: --timeout takes seconds from 1 to 3600\n");
                return 2;
            }
            up.timeout_ms = (int)seconds * 1000;
            break;
        }
        case 'D':
            up.demo = true;
            break;
        case 'B':
            up.db_only = true;
            break;
        case '0':
        case '1':
        case '2':
        case '3': {
            //  The programs run elsewhere than here: the path must not
            //  depend on this shell's folder. An empty value turns TLS off.
            int index = option - '0';
            char cwd[PATH_MAX];
            if (*optarg && *optarg != '/' && getcwd(cwd, sizeof cwd)) {
                snprintf(tls_paths[index], sizeof tls_paths[index], "%s/%s", cwd, optarg);
                up.tls[index] = tls_paths[index];
            } else
                up.tls[index] = optarg;
            break;
        }
        case 'h':
            s_command_usage(stdout, "up");
            return 0;
        default:
            s_command_usage(stderr, "up");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tollgate up: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (up.port == up.admin_port) {
        fprintf(stderr, "tollgate up: --port and --admin-port must differ\n");
        return 2;
    }
    if (strchr(up.host, ' ') || !*up.host) {
        fprintf(stderr, "tollgate up: --host takes an address such as 127.0.0.1\n");
        return 2;
    }
    ops_cluster_t *cluster = s_open_cluster(dir);
    if (!cluster)
        return 1;
    int rc = ops_cluster_up(cluster, &up);
    ops_cluster_destroy(&cluster);
    return rc;
}

//  Parses the options of commands that take only --dir (and maybe --json).
//  Returns -1 to go on, or an exit code (help shown, bad usage).
static int s_dir_options(int argc, char **argv, const char *words, const char **dir, bool *json)
{
    static const struct option options[] = {{"dir", required_argument, NULL, 'd'},
                                            {"json", no_argument, NULL, 'j'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    *dir = s_default_dir();
    int option;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (option == 'd')
            *dir = optarg;
        else if (option == 'j' && json)
            *json = true;
        else if (option == 'h') {
            s_command_usage(stdout, words);
            return 0;
        } else {
            s_command_usage(stderr, words);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tollgate %s: unexpected argument '%s'\n", words, argv[optind]);
        return 2;
    }
    return -1;
}

static int s_cmd_down(int argc, char **argv)
{
    const char *dir;
    int rc = s_dir_options(argc, argv, "down", &dir, NULL);
    if (rc >= 0)
        return rc;
    ops_cluster_t *cluster = s_open_cluster(dir);
    if (!cluster)
        return 1;
    rc = ops_cluster_down(cluster);
    ops_cluster_destroy(&cluster);
    return rc;
}

static int s_cmd_status(int argc, char **argv)
{
    const char *dir;
    bool json = false;
    int rc = s_dir_options(argc, argv, "status", &dir, &json);
    if (rc >= 0)
        return rc;
    ops_cluster_t *cluster = s_open_cluster(dir);
    if (!cluster)
        return 1;
    rc = ops_cluster_status(cluster, json, stdout);
    ops_cluster_destroy(&cluster);
    return rc;
}

static int s_cmd_ping(int argc, char **argv)
{
    static const struct option options[] = {
        {"dir", required_argument, NULL, 'd'},      {"timeout", required_argument, NULL, 't'},
        {"endpoint", required_argument, NULL, 'e'}, {"ready", no_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    const char *dir = s_default_dir();
    const char *endpoint = NULL;
    bool ready = false;
    int timeout_ms = 5000;
    int option;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (option == 'd')
            dir = optarg;
        else if (option == 'e')
            endpoint = optarg;
        else if (option == 'r')
            ready = true;
        else if (option == 't') {
            char *end;
            double seconds = strtod(optarg, &end);
            if (!*optarg || *end || seconds <= 0 || seconds > 600) {
                fprintf(stderr, "tollgate ping: --timeout takes seconds, up to 600\n");
                return 2;
            }
            timeout_ms = (int)(seconds * 1000);
        } else if (option == 'h') {
            s_command_usage(stdout, "ping");
            return 0;
        } else {
            s_command_usage(stderr, "ping");
            return 2;
        }
    }
    int count = argc - optind;
    if (endpoint && count > 0) {
        fprintf(stderr, "tollgate ping: --endpoint takes no program names\n");
        return 2;
    }
    if (endpoint)
        return ops_cluster_ping_endpoint(dir, endpoint, timeout_ms, ready, stdout);
    if (count > 32) {
        fprintf(stderr, "tollgate ping: at most 32 programs at once\n");
        return 2;
    }
    ops_cluster_t *cluster = s_open_cluster(dir);
    if (!cluster)
        return 1;
    int rc =
        ops_cluster_ping(cluster, (const char *const *)argv + optind, count, timeout_ms, stdout);
    ops_cluster_destroy(&cluster);
    return rc;
}

static int s_cmd_restart(int argc, char **argv)
{
    static const struct option options[] = {{"dir", required_argument, NULL, 'd'},
                                            {"timeout", required_argument, NULL, 't'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    const char *dir = s_default_dir();
    int timeout_ms = 30000;
    int option;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (option == 'd')
            dir = optarg;
        else if (option == 't') {
            char *end;
            long seconds = strtol(optarg, &end, 10);
            if (!*optarg || *end || seconds < 1 || seconds > 3600) {
                fprintf(stderr, "tollgate restart: --timeout takes seconds from 1 to 3600\n");
                return 2;
            }
            timeout_ms = (int)seconds * 1000;
        } else if (option == 'h') {
            s_command_usage(stdout, "restart");
            return 0;
        } else {
            s_command_usage(stderr, "restart");
            return 2;
        }
    }
    if (argc - optind != 1) {
        s_command_usage(stderr, "restart");
        return 2;
    }
    ops_cluster_t *cluster = s_open_cluster(dir);
    if (!cluster)
        return 1;
    int rc = ops_cluster_restart(cluster, argv[optind], timeout_ms, stdout);
    ops_cluster_destroy(&cluster);
    return rc;
}

static int s_cmd_supervise(int argc, char **argv)
{
    const char *dir;
    int rc = s_dir_options(argc, argv, "supervise", &dir, NULL);
    if (rc >= 0)
        return rc;
    ops_cluster_t *cluster = s_open_cluster(dir);
    if (!cluster)
        return 1;
    rc = ops_cluster_supervise(cluster);
    ops_cluster_destroy(&cluster);
    return rc;
}

static int s_cmd_migrate(int argc, char **argv)
{
    static const struct option options[] = {{"database-url", required_argument, NULL, 'u'},
                                            {"dir", required_argument, NULL, 'd'},
                                            {"migrations", required_argument, NULL, 'm'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    const char *url = NULL, *dir = s_default_dir(), *folder = NULL;
    int option;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (option == 'u')
            url = optarg;
        else if (option == 'd')
            dir = optarg;
        else if (option == 'm')
            folder = optarg;
        else if (option == 'h') {
            s_command_usage(stdout, "migrate");
            return 0;
        } else {
            s_command_usage(stderr, "migrate");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tollgate migrate: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    //  Where the database is, first found wins: --database-url,
    //  TOLLGATE_DATABASE_URL, database_url in TOLLGATE_CONFIG's file, then
    //  in the state folder's tollgate.conf.
    char error[2048];
    proto_config_t *config = proto_config_new();
    const char *config_file = getenv("TOLLGATE_CONFIG");
    char state_file[4096];
    snprintf(state_file, sizeof state_file, "%s/tollgate.conf", dir);
    if (!url && !getenv("TOLLGATE_DATABASE_URL")) {
        const char *file = config_file && *config_file     ? config_file
                           : access(state_file, R_OK) == 0 ? state_file
                                                           : NULL;
        if (!file) {
            fprintf(stderr, "tollgate migrate: no database given: use --database-url URL, "
                            "TOLLGATE_DATABASE_URL, TOLLGATE_CONFIG or --dir with a "
                            "tollgate.conf\n");
            proto_config_destroy(&config);
            return 2;
        }
        if (proto_config_load_file(config, file, error, sizeof error) != 0) {
            fprintf(stderr, "tollgate migrate: %s\n", error);
            proto_config_destroy(&config);
            return 2;
        }
    }
    if (!url)
        url = getenv("TOLLGATE_DATABASE_URL");
    if (!url)
        url = proto_config_str(config, "database_url");

    ops_migrate_t *migrate = ops_migrate_new();
    int rc = 1;
    if (folder && ops_migrate_load_dir(migrate, folder, error, sizeof error) != 0) {
        fprintf(stderr, "tollgate migrate: %s\n", error);
        rc = 2;
        goto done;
    }
    PGconn *db = proto_db_connect_once(url, error, sizeof error);
    if (!db) {
        fprintf(stderr, "tollgate migrate: %s\n", error);
        goto done;
    }
    int applied = ops_migrate_apply(migrate, db, stdout, error, sizeof error);
    PQfinish(db);
    if (applied < 0)
        fprintf(stderr, "tollgate migrate: %s\n", error);
    else {
        printf("schema is at version %04d (%d applied)\n", ops_migrate_latest(migrate), applied);
        rc = 0;
    }
done:
    ops_migrate_destroy(&migrate);
    proto_config_destroy(&config);
    return rc;
}

static int s_cmd_version(int argc, char **argv)
{
    printf("tollgate %s (schema %04d)\n", TOLLGATE_VERSION,
           ops_migrations_builtin_count
               ? ops_migrations_builtin[ops_migrations_builtin_count - 1].version
               : 0);
    return 0;
}

static int s_cmd_help(int argc, char **argv)
{
    if (argc > 1) {
        for (size_t i = 0; i < S_COMMAND_COUNT; i++)
            if (s_match(s_commands[i].words, argc - 1, argv + 1)) {
                s_command_usage(stdout, s_commands[i].words);
                return 0;
            }
    }
    s_usage(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    //  CZMQ would install its own SIGINT handler; Ctrl-C should just work.
    zsys_handler_set(NULL);
    proto_log_init("tollgate", PROTO_LOG_WARN);
    if (argc < 2) {
        s_usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return s_cmd_help(1, argv + 1);
    if (strcmp(argv[1], "--version") == 0)
        return s_cmd_version(1, argv + 1);
    //  The longest match wins, so "key create" beats a future "key".
    const s_command_t *best = NULL;
    int best_words = 0;
    for (size_t i = 0; i < S_COMMAND_COUNT; i++) {
        int words = s_match(s_commands[i].words, argc - 1, argv + 1);
        if (words > best_words) {
            best = &s_commands[i];
            best_words = words;
        }
    }
    if (!best) {
        fprintf(stderr, "tollgate: unknown command '%s'\n\n", argv[1]);
        s_usage(stderr);
        return 2;
    }
    //  getopt sees the last command word as the program name.
    return best->run(argc - best_words, argv + best_words);
}
