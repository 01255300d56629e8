/*  ops_admin_access: the admin CLI's commands for admin access.

    login, logout, whoami, admin users and sessions, the bootstrap token, API tokens, the
    audit log. `first` indexes the first positional after the command words.
*/
#include "ops_admin_cli.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

//  Reads a password: from the option's value, the first line of stdin for
//  "-", or (no option) a prompt on the terminal without echo, else stdin.
//  Returns it (caller frees and clears), or NULL with a message.
static char *s_password(oa_args_t *args, const char *prompt)
{
    const char *value = oa_option(args, "password");
    if (value)
        return oa_secret_value(value);
    if (!isatty(STDIN_FILENO))
        return oa_secret_value("-");
    struct termios saved, quiet;
    bool echo_off = tcgetattr(STDIN_FILENO, &saved) == 0;
    if (echo_off) {
        quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    fprintf(stderr, "%s", prompt);
    char *password = oa_secret_value("-");
    if (echo_off)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    fprintf(stderr, "\n");
    return password;
}

static void s_free_secret(char *secret)
{
    if (secret) {
        memset(secret, 0, strlen(secret));
        free(secret);
    }
}

//  Writes text to DIR/name with mode 0600 (via a temporary file and a
//  rename, so a reader never sees half of it). Returns 0, or -1 with a
//  message.
static int s_write_private(oa_client_t *client, const char *name, const char *text)
{
    char path[4200], temporary[4300];
    if (mkdir(client->dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "tollgate: cannot create %s: %s\n", client->dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s", client->dir, name);
    snprintf(temporary, sizeof temporary, "%s.%d.tmp", path, (int)getpid());
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "tollgate: cannot write %s: %s\n", temporary, strerror(errno));
        return -1;
    }
    size_t length = strlen(text);
    bool ok = fchmod(fd, 0600) == 0 && write(fd, text, length) == (ssize_t)length &&
              write(fd, "\n", 1) == 1;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(temporary, path) != 0) {
        fprintf(stderr, "tollgate: cannot write %s: %s\n", path, strerror(errno));
        unlink(temporary);
        return -1;
    }
    return 0;
}

static int s_login(oa_client_t *client, oa_args_t *args, int first)
{
    const char *username = args->words[first];
    json_t *body = json_pack("{s:s}", "username", username);
    if (oa_put_int(body, args, "ttl", "expires_in_s")) {
        json_decref(body);
        return 2;
    }
    char prompt[256];
    snprintf(prompt, sizeof prompt, "password for %s: ", username);
    char *password = s_password(args, prompt);
    json_object_set_new(body, "password", json_string(password));
    s_free_secret(password);
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", "/admin/login", body, &answer);
    if (rc == 0) {
        const char *token = oa_str(answer, "token");
        rc = s_write_private(client, "admin_session", token) == 0 ? 0 : 1;
        json_t *user = json_object_get(answer, "user");
        if (rc == 0 && !client->json)
            printf("logged in as %s (%s) until %s; the session is in %s/admin_session\n",
                   oa_str(user, "username"), oa_str(user, "role"), oa_str(answer, "expires_at"),
                   client->dir);
    }
    json_decref(answer);
    return rc;
}

//  Ends the session on the server (if it is still alive) and forgets it.
static int s_logout(oa_client_t *client, oa_args_t *args, int first)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/admin_session", client->dir);
    if (client->source != OA_TOKEN_SESSION) {
        fprintf(stderr, "tollgate: not logged in (no %s)\n", path);
        return 1;
    }
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", "/admin/logout", NULL, &answer);
    json_decref(answer);
    //  A session the server no longer knows is over anyway: forget it too.
    if (unlink(path) != 0 && errno != ENOENT) {
        fprintf(stderr, "tollgate: cannot remove %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (!client->json)
        printf("logged out%s\n", rc == 0 ? "" : " (the session had already ended)");
    else if (rc != 0)
        printf("{\"logged_out\":true}\n");
    return 0;
}

static int s_whoami(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", "/admin/me", NULL, &answer);
    if (rc == 0 && !client->json) {
        const char *expires = json_string_value(json_object_get(answer, "expires_at"));
        printf("%s (%s, %s)%s%s\n", oa_str(answer, "name"), oa_str(answer, "kind"),
               oa_str(answer, "role"), expires ? " until " : "", expires ? expires : "");
    }
    json_decref(answer);
    return rc;
}

static int s_user_add(oa_client_t *client, oa_args_t *args, int first)
{
    const char *role = oa_option(args, "role");
    if (!role) {
        fprintf(stderr, "tollgate: admin user add needs --role owner|operator|viewer\n");
        return 2;
    }
    char prompt[256];
    snprintf(prompt, sizeof prompt, "new password for %s: ", args->words[first]);
    char *password = s_password(args, prompt);
    json_t *body = json_pack("{s:s,s:s,s:s}", "username", args->words[first], "password", password,
                             "role", role);
    s_free_secret(password);
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", "/admin/users", body, &answer);
    if (rc == 0 && !client->json)
        printf("admin user %s added (id %" JSON_INTEGER_FORMAT ", %s)\n",
               oa_str(answer, "username"), oa_int(answer, "id"), oa_str(answer, "role"));
    json_decref(answer);
    return rc;
}

static int s_user_list(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", "/admin/users", NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_table(client, "user", json_object_get(answer, "data"), "no admin users");
    json_decref(answer);
    return rc;
}

//  PATCH /admin/users/NAME with body (stolen); prints what it became.
static int s_user_patch(oa_client_t *client, const char *name, json_t *body)
{
    char *escaped = oa_escape(name);
    char path[2048];
    snprintf(path, sizeof path, "/admin/users/%s", escaped);
    free(escaped);
    json_t *answer = NULL;
    int rc = oa_call(client, "PATCH", path, body, &answer);
    if (rc == 0 && !client->json)
        printf("admin user %s: %s, %s\n", oa_str(answer, "username"), oa_str(answer, "role"),
               oa_str(answer, "status"));
    json_decref(answer);
    return rc;
}

static int s_user_disable(oa_client_t *client, oa_args_t *args, int first)
{
    return s_user_patch(client, args->words[first], json_pack("{s:s}", "status", "disabled"));
}

static int s_user_enable(oa_client_t *client, oa_args_t *args, int first)
{
    return s_user_patch(client, args->words[first], json_pack("{s:s}", "status", "active"));
}

static int s_user_role(oa_client_t *client, oa_args_t *args, int first)
{
    return s_user_patch(client, args->words[first],
                        json_pack("{s:s}", "role", args->words[first + 1]));
}

static int s_user_password(oa_client_t *client, oa_args_t *args, int first)
{
    char prompt[256];
    snprintf(prompt, sizeof prompt, "new password for %s: ", args->words[first]);
    char *password = s_password(args, prompt);
    json_t *body = json_pack("{s:s}", "password", password);
    s_free_secret(password);
    return s_user_patch(client, args->words[first], body);
}

static int s_session_list(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048] = "/admin/sessions";
    static const char *const options[] = {"user", "all"};
    oa_add_query(path, sizeof path, args, options, options, 2);
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_table(client, "session", json_object_get(answer, "data"), "no sessions");
    json_decref(answer);
    return rc;
}

static int s_session_revoke(oa_client_t *client, oa_args_t *args, int first)
{
    char *id = oa_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/sessions/%s", id);
    free(id);
    json_t *answer = NULL;
    int rc = oa_call(client, "DELETE", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("session %" JSON_INTEGER_FORMAT " of %s revoked\n", oa_int(answer, "id"),
               oa_str(answer, "username"));
    json_decref(answer);
    return rc;
}

//  A new bootstrap token. When the old one came from DIR/admin_token, the
//  new one replaces it there, so the folder keeps working.
static int s_bootstrap_rotate(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", "/admin/bootstrap/rotate", NULL, &answer);
    if (rc == 0) {
        const char *token = oa_str(answer, "token");
        bool saved = false;
        char path[4200];
        snprintf(path, sizeof path, "%s/admin_token", client->dir);
        if (access(path, F_OK) == 0) {
            if (s_write_private(client, "admin_token", token) != 0)
                rc = 1;
            saved = rc == 0;
        }
        if (!client->json) {
            if (saved)
                printf("bootstrap token rotated; the new one is in %s\n", path);
            else
                printf("bootstrap token rotated; it is shown only now:\n%s\n", token);
        }
    }
    json_decref(answer);
    return rc;
}

static int s_token_create(oa_client_t *client, oa_args_t *args, int first)
{
    const char *role = oa_option(args, "role");
    if (!role) {
        fprintf(stderr, "tollgate: token create needs --role owner|operator|viewer\n");
        return 2;
    }
    json_t *body = json_pack("{s:s,s:s}", "name", args->words[first], "role", role);
    oa_put_str(body, args, "expires-at", "expires_at");
    json_t *answer = NULL;
    int rc = oa_call(client, "POST", "/admin/tokens", body, &answer);
    if (rc == 0 && !client->json)
        //  The token is the last line, alone, so scripts can take it with tail -1.
        printf("token %" JSON_INTEGER_FORMAT " (%s, %s) created; it is shown only now:\n%s\n",
               oa_int(answer, "id"), oa_str(answer, "name"), oa_str(answer, "role"),
               oa_str(answer, "token"));
    json_decref(answer);
    return rc;
}

static int s_token_list(oa_client_t *client, oa_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", "/admin/tokens", NULL, &answer);
    if (rc == 0 && !client->json)
        oa_resource_table(client, "token", json_object_get(answer, "data"), "no tokens");
    json_decref(answer);
    return rc;
}

static int s_token_revoke(oa_client_t *client, oa_args_t *args, int first)
{
    char *id = oa_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/tokens/%s", id);
    free(id);
    json_t *answer = NULL;
    int rc = oa_call(client, "DELETE", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("token %" JSON_INTEGER_FORMAT " (%s) revoked\n", oa_int(answer, "id"),
               oa_str(answer, "name"));
    json_decref(answer);
    return rc;
}

static const oa_column_t s_audit_columns[] = {
    {"ID", "id", OA_COL_TEXT},         {"AT", "at", OA_COL_TIME},
    {"ACTOR", "actor", OA_COL_TEXT},   {"FROM", "client_ip", OA_COL_TEXT},
    {"ACTION", "action", OA_COL_TEXT}, {"TARGET", "target", OA_COL_TEXT}};

static int s_audit(oa_client_t *client, oa_args_t *args, int first)
{
    char path[2048] = "/admin/audit";
    static const char *const options[] = {"actor", "action", "limit", "before"};
    oa_add_query(path, sizeof path, args, options, options, 4);
    json_t *answer = NULL;
    int rc = oa_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        oa_table(json_object_get(answer, "data"), s_audit_columns, OA_COUNT(s_audit_columns),
                 "no audit entries");
        json_t *next = json_object_get(answer, "next_before");
        if (json_is_integer(next))
            printf("older: --before %" JSON_INTEGER_FORMAT "\n", json_integer_value(next));
    }
    json_decref(answer);
    return rc;
}

const oa_command_t oa_access_commands[] = {
    {"login", 1, "password ttl", s_login,
     "login USERNAME [--password PASSWORD|-] [--ttl SECONDS]   (session kept in "
     "DIR/admin_session)"},
    {"logout", 0, "", s_logout, "logout"},
    {"whoami", 0, "", s_whoami, "whoami [--json]"},
    {"admin user add", 1, "role password", s_user_add,
     "admin user add USERNAME --role owner|operator|viewer [--password PASSWORD|-]"},
    {"admin user list", 0, "", s_user_list, "admin user list [--json]"},
    {"admin user disable", 1, "", s_user_disable, "admin user disable USERNAME"},
    {"admin user enable", 1, "", s_user_enable, "admin user enable USERNAME"},
    {"admin user role", 2, "", s_user_role, "admin user role USERNAME owner|operator|viewer"},
    {"admin user password", 1, "password", s_user_password,
     "admin user password USERNAME [--password PASSWORD|-]"},
    {"admin session list", 0, "user", s_session_list,
     "admin session list [--user USERNAME] [--all] [--json]"},
    {"admin session revoke", 1, "", s_session_revoke, "admin session revoke ID"},
    {"admin bootstrap rotate", 0, "", s_bootstrap_rotate, "admin bootstrap rotate"},
    {"token create", 1, "role expires-at", s_token_create,
     "token create NAME --role owner|operator|viewer [--expires-at TIME]   (last line: the token)"},
    {"token list", 0, "", s_token_list, "token list [--json]"},
    {"token revoke", 1, "", s_token_revoke, "token revoke ID"},
    {"audit", 0, "actor action limit before", s_audit,
     "audit [--actor NAME] [--action ACTION] [--limit N] [--before ID] [--json]"},
    OA_COMMANDS_END};
