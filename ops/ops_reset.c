#include "ops_reset.h"
#include "proto_check.h"
#include "admin_call.h"
#include "proto_config.h"
#include "proto_db.h"

#include <assert.h>
#include <getopt.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define S_ACTOR "cli:reset-password"

static void s_usage(FILE *out)
{
    fprintf(out, "usage: tollgate admin reset-password USERNAME [--password PASSWORD|-] "
                 "[--database-url URL] [--dir DIR] [--json]\n"
                 "  sets an admin user's password straight in PostgreSQL (no running admin "
                 "server needed),\n"
                 "  ends the user's sessions and lifts their login lockouts\n"
                 "database: --database-url URL, TOLLGATE_DATABASE_URL, TOLLGATE_CONFIG or --dir "
                 "DIR with a tollgate.conf (default $TOLLGATE_DIR, ./var)\n");
}

//  The database URL, first found wins (see the header). Returns NULL after
//  printing why. The returned string lives as long as *config.
static const char *s_database_url(const char *url, const char *dir, proto_config_t **config)
{
    if (url)
        return url;
    const char *env = getenv("TOLLGATE_DATABASE_URL");
    if (env && *env)
        return env;
    if (!dir)
        dir = getenv("TOLLGATE_DIR") && *getenv("TOLLGATE_DIR") ? getenv("TOLLGATE_DIR") : "./var";
    char state_file[4096];
    snprintf(state_file, sizeof state_file, "%s/tollgate.conf", dir);
    const char *config_file = getenv("TOLLGATE_CONFIG");
    const char *file = config_file && *config_file     ? config_file
                       : access(state_file, R_OK) == 0 ? state_file
                                                       : NULL;
    if (!file) {
        fprintf(stderr, "tollgate admin reset-password: no database given: use --database-url "
                        "URL, TOLLGATE_DATABASE_URL, TOLLGATE_CONFIG or --dir with a "
                        "tollgate.conf\n");
        return NULL;
    }
    char error[1024];
    *config = proto_config_new();
    if (proto_config_load_file(*config, file, error, sizeof error) != 0) {
        fprintf(stderr, "tollgate admin reset-password: %s\n", error);
        return NULL;
    }
    return proto_config_str(*config, "database_url");
}

//  One line of standard input, without its end. Caller owns return value.
static char *s_read_line(void)
{
    char *line = NULL;
    size_t size = 0;
    if (getline(&line, &size, stdin) < 0) {
        free(line);
        return strdup("");
    }
    line[strcspn(line, "\r\n")] = '\0';
    return line;
}

//  The new password: the option, a prompt without echo, or a line of
//  standard input. Caller owns return value.
static char *s_password(const char *option)
{
    if (option && strcmp(option, "-") != 0)
        return strdup(option);
    if (option || !isatty(STDIN_FILENO))
        return s_read_line();
    struct termios saved, quiet;
    bool echo_off = tcgetattr(STDIN_FILENO, &saved) == 0;
    if (echo_off) {
        quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    fprintf(stderr, "new password: ");
    char *password = s_read_line();
    if (echo_off)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    fprintf(stderr, "\n");
    return password;
}

static void s_free_secret(char *secret)
{
    if (secret) {
        sodium_memzero(secret, strlen(secret));
        free(secret);
    }
}

//  Runs one statement of the transaction. Returns its result, or NULL
//  after printing the database's reason.
static PGresult *s_exec(PGconn *db, const char *sql, int count, const char *const *params)
{
    PGresult *result = PQexecParams(db, sql, count, NULL, params, NULL, NULL, 0);
    ExecStatusType status = PQresultStatus(result);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
        return result;
    fprintf(stderr, "tollgate admin reset-password: the database refused: %s", PQerrorMessage(db));
    PQclear(result);
    return NULL;
}

//  The change itself, in one transaction. Returns the exit code.
static int s_reset(PGconn *db, const char *username, const char *hash, bool json)
{
    int rc = 1;
    PGresult *user = NULL, *sessions = NULL, *step = NULL;
    if (!(step = s_exec(db, "BEGIN", 0, NULL)))
        return 1;
    PQclear(step);
    //  The row is locked, so a concurrent PATCH of the same user waits.
    user = s_exec(db,
                  "SELECT id, role, status, json_build_object('id', id, 'username', username, "
                  "'role', role, 'status', status)::text FROM admin_users WHERE username = $1 "
                  "FOR UPDATE",
                  1, (const char *[]){username});
    if (!user)
        goto done;
    if (PQntuples(user) != 1) {
        fprintf(stderr, "tollgate admin reset-password: no admin user '%s'\n", username);
        goto done;
    }
    const char *id = PQgetvalue(user, 0, 0);
    if (!(step = s_exec(db,
                        "UPDATE admin_users SET password_hash = $2, updated_at = now() WHERE id = "
                        "$1::bigint",
                        2, (const char *[]){id, hash})))
        goto done;
    PQclear(step);
    if (!(sessions = s_exec(db,
                            "UPDATE admin_sessions SET revoked_at = now() WHERE user_id = "
                            "$1::bigint AND revoked_at IS NULL",
                            1, (const char *[]){id})))
        goto done;
    //  Lockouts of this user from any address ("user:NAME ip:ADDR"): the
    //  operator who just reset the password must be able to log in.
    if (!(step = s_exec(db,
                        "DELETE FROM login_lockouts WHERE starts_with(subject, 'user:' || $1 || "
                        "' ip:')",
                        1, (const char *[]){username})))
        goto done;
    PQclear(step);
    const char *row = PQgetvalue(user, 0, 3);
    if (!(step = s_exec(
              db,
              "INSERT INTO audit_log (actor, actor_kind, role, action, method, route, target, "
              "request, before, after) VALUES ($1, 'bootstrap', 'owner', "
              "'admin_user.reset_password', 'CLI', 'tollgate admin reset-password', $2, "
              "json_build_object('username', $3::text, 'password', '***')::jsonb, $4::jsonb, "
              "$4::jsonb)",
              4, (const char *[]){S_ACTOR, id, username, row})))
        goto done;
    PQclear(step);
    if (!(step = s_exec(db, "COMMIT", 0, NULL)))
        goto done;
    PQclear(step);
    rc = 0;
    const char *revoked = PQcmdTuples(sessions);
    if (json) {
        json_t *answer = json_loads(row, 0, NULL);
        json_object_set_new(answer, "sessions_revoked", json_integer(atoll(revoked)));
        char *text = json_dumps(answer, JSON_COMPACT);
        printf("%s\n", text);
        free(text);
        json_decref(answer);
    } else {
        printf("password of %s (%s) reset; %s session(s) ended\n", username, PQgetvalue(user, 0, 1),
               revoked);
        if (strcmp(PQgetvalue(user, 0, 2), "active") != 0)
            printf("note: %s is %s; enable the user to log in\n", username, PQgetvalue(user, 0, 2));
    }
done:
    if (rc != 0)
        PQclear(PQexec(db, "ROLLBACK"));
    PQclear(user);
    PQclear(sessions);
    return rc;
}

int ops_reset_main(int argc, char **argv)
{
    static const struct option options[] = {{"database-url", required_argument, NULL, 'u'},
                                            {"dir", required_argument, NULL, 'd'},
                                            {"password", required_argument, NULL, 'p'},
                                            {"json", no_argument, NULL, 'j'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    const char *url = NULL, *dir = NULL, *password_option = NULL;
    bool json = false;
    optind = 0; //  reinitialise getopt
    int option;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (option == 'u')
            url = optarg;
        else if (option == 'd')
            dir = optarg;
        else if (option == 'p')
            password_option = optarg;
        else if (option == 'j')
            json = true;
        else if (option == 'h') {
            s_usage(stdout);
            return 0;
        } else {
            s_usage(stderr);
            return 2;
        }
    }
    if (argc - optind != 1) {
        fprintf(stderr, "tollgate admin reset-password: %s\n",
                argc - optind < 1 ? "missing USERNAME" : "too many arguments");
        s_usage(stderr);
        return 2;
    }
    const char *username = argv[optind];
    if (sodium_init() < 0) {
        fprintf(stderr, "tollgate admin reset-password: libsodium did not start\n");
        return 1;
    }
    char *password = s_password(password_option);
    json_t *text = json_string(password);
    //  The admin API's own rule, so the CLI cannot store what it refuses.
    const char *problem = text ? admin_password_problem(text) : "must be valid UTF-8";
    json_decref(text);
    if (problem) {
        fprintf(stderr, "tollgate admin reset-password: 'password' %s\n", problem);
        s_free_secret(password);
        return 2;
    }
    char hash[crypto_pwhash_STRBYTES];
    int hashed = crypto_pwhash_str_alg(hash, password, strlen(password), ADMIN_PW_OPSLIMIT,
                                       ADMIN_PW_MEMLIMIT, crypto_pwhash_ALG_ARGON2ID13);
    s_free_secret(password);
    if (hashed != 0) {
        fprintf(stderr, "tollgate admin reset-password: cannot hash the password (out of "
                        "memory)\n");
        return 1;
    }
    proto_config_t *config = NULL;
    int rc = 1;
    const char *database = s_database_url(url, dir, &config);
    if (!database) {
        rc = 2;
        goto done;
    }
    char error[1024];
    PGconn *db = proto_db_connect_once(database, error, sizeof error);
    if (!db) {
        fprintf(stderr, "tollgate admin reset-password: %s\n", error);
        goto done;
    }
    rc = s_reset(db, username, hash, json);
    PQfinish(db);
done:
    sodium_memzero(hash, sizeof hash);
    proto_config_destroy(&config);
    return rc;
}

void ops_reset_test(bool verbose)
{
    if (verbose)
        printf(" * ops_reset: ");
    //  Usage errors end before any database is looked for.
    char *missing[] = {"reset-password", NULL};
    PROTO_CHECK(ops_reset_main(1, missing) == 2);
    char *extra[] = {"reset-password", "a", "b", NULL};
    PROTO_CHECK(ops_reset_main(3, extra) == 2);
    char *unknown[] = {"reset-password", "a", "--nope", NULL};
    PROTO_CHECK(ops_reset_main(3, unknown) == 2);
    //  A password the admin API would refuse changes nothing.
    char *weak[] = {"reset-password", "a", "--password", "short", "--database-url", "x", NULL};
    PROTO_CHECK(ops_reset_main(6, weak) == 2);
    if (verbose)
        printf("OK\n");
}
