/*  admin_call: what every admin handler shares. See admin_call.h. */
#include "admin_call.h"
#include "proto_check.h"
#include "admin_resource.h"
#include "proto_crypto.h"
#include "proto_db.h"
#include "proto_log.h"

#include <assert.h>
#include <ctype.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_PASSWORD_MIN 12   //  characters in a password, at least
#define S_PASSWORD_MAX 1024 //  bytes in a password, at most
#define S_TOKEN_MAX 512     //  longest bearer token we look at

// ---------------------------------------------------------------------------
// ---------------------------------------------------------------------------
//  Pure helpers: money, names, paths, query strings

//  Parses an exact decimal amount ("10.50", "-3", "0.000001") into micro-units.
//  At most 6 decimal places, no exponent, no spaces, no leading '+' or '.'.
//  Returns 0, or -1 when malformed, negative and not allowed, or out of range.
int admin_parse_micros(const char *text, bool allow_negative, int64_t *out)
{
    const char *cursor = text;
    bool negative = false;
    if (*cursor == '-') {
        if (!allow_negative)
            return -1;
        negative = true;
        cursor++;
    }
    if (!isdigit((unsigned char)*cursor))
        return -1;
    int64_t units = 0;
    for (; isdigit((unsigned char)*cursor); cursor++) {
        if (units > (ADMIN_MONEY_MAX / ADMIN_MICROS))
            return -1;
        units = units * 10 + (*cursor - '0');
    }
    int64_t fraction = 0;
    if (*cursor == '.') {
        cursor++;
        int places = 0;
        for (; isdigit((unsigned char)*cursor); cursor++) {
            if (++places > 6)
                return -1;
            fraction = fraction * 10 + (*cursor - '0');
        }
        if (places == 0)
            return -1;
        for (; places < 6; places++)
            fraction *= 10;
    }
    if (*cursor)
        return -1;
    if (units > ADMIN_MONEY_MAX / ADMIN_MICROS)
        return -1;
    int64_t micros = units * ADMIN_MICROS + fraction;
    if (micros > ADMIN_MONEY_MAX)
        return -1;
    *out = negative ? -micros : micros;
    return 0;
}

//  True when text has no control characters (names end up in logs and headers).
bool admin_printable(const char *text)
{
    for (const unsigned char *c = (const unsigned char *)text; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return false;
    return true;
}

//  Provider names: what the schema's CHECK allows, checked first for a clear message.
static bool s_provider_name_valid(const char *name)
{
    size_t length = strlen(name);
    if (length < 1 || length > 100)
        return false;
    for (const char *c = name; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '.' && *c != '-')
            return false;
    return true;
}

//  An upstream base URL: http(s), no spaces or control characters.
static bool s_url_valid(const char *url)
{
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return false;
    size_t length = strlen(url);
    size_t scheme = url[4] == ':' ? strlen("http://") : strlen("https://");
    if (length > 2048 || length <= scheme)
        return false;
    for (const unsigned char *c = (const unsigned char *)url; *c; c++)
        if (*c <= 0x20 || *c == 0x7f)
            return false;
    return true;
}

//  True for a decimal id of 1..18 digits (always fits a bigint).
bool admin_is_id(const char *text)
{
    size_t length = strlen(text);
    if (length < 1 || length > 18)
        return false;
    for (const char *c = text; *c; c++)
        if (!isdigit((unsigned char)*c))
            return false;
    return true;
}

static int s_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

//  Finds `name` in a raw query string ("a=1&b=x%20y") and percent-decodes
//  its value into out. '+' is kept as '+' (RFC 3986), so timestamps such as
//  "...+00:00" survive. Returns 1 when found, 0 when absent, -1 when the
//  value is malformed or too long.
int admin_query_get(const char *query, const char *name, char *out, size_t out_size)
{
    size_t name_length = strlen(name);
    for (const char *c = query; c && *c;) {
        size_t n = strcspn(c, "&");
        if (n > name_length && strncmp(c, name, name_length) == 0 && c[name_length] == '=') {
            size_t used = 0;
            for (const char *v = c + name_length + 1; v < c + n; v++) {
                int byte = (unsigned char)*v;
                if (byte == '%') {
                    if (v + 2 >= c + n)
                        return -1;
                    int high = s_hex(v[1]), low = high < 0 ? -1 : s_hex(v[2]);
                    if (high < 0 || low < 0)
                        return -1;
                    byte = high * 16 + low;
                    v += 2;
                }
                if (byte == 0 || used + 1 >= out_size)
                    return -1;
                out[used++] = (char)byte;
            }
            out[used] = '\0';
            return 1;
        }
        c += n;
        if (*c == '&')
            c++;
    }
    return 0;
}

//  Role names as the API and the schema spell them.
const char *admin_role_name(admin_access_t access)
{
    switch (access) {
    case ADMIN_PUBLIC:
        return "public";
    case ADMIN_ANY:
        return "any";
    case ADMIN_ACCOUNT:
        return "account";
    case ADMIN_VIEWER:
        return "viewer";
    case ADMIN_OPERATOR:
        return "operator";
    case ADMIN_OWNER:
        return "owner";
    }
    return "?";
}

admin_access_t admin_role_parse(const char *name)
{
    if (!name)
        return ADMIN_ANY;
    if (strcmp(name, "account") == 0)
        return ADMIN_ACCOUNT;
    if (strcmp(name, "owner") == 0)
        return ADMIN_OWNER;
    if (strcmp(name, "operator") == 0)
        return ADMIN_OPERATOR;
    if (strcmp(name, "viewer") == 0)
        return ADMIN_VIEWER;
    return ADMIN_ANY;
}

//  True for text shaped like one of our secrets: a client key (tg-, or the
//  prefix settings 'client_keys' set), a
//  bootstrap, session or API token (tga_, tgs_, tgt_), followed by at
//  least 32 hex digits. Such text is masked wherever the audit log would
//  hold it, whatever field it sits in.
bool admin_looks_secret(const char *text)
{
    //  The client key prefix in force (settings 'client_keys') too.
    const char *const prefixes[] = {"tg-", "tga_", "tgs_", "tgt_", proto_crypto_key_prefix()};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t length = strlen(prefixes[i]);
        if (strncmp(text, prefixes[i], length) != 0)
            continue;
        size_t hex = strspn(text + length, "0123456789abcdefABCDEF");
        return hex >= 32;
    }
    return false;
}

//  Field names whose values are secrets wherever they appear.
static bool s_secret_field(const char *name)
{
    static const char *const names[] = {"secret",         "password",      "current_password",
                                        "new_password",   "token",         "key",
                                        "authorization",  "password_hash", "token_hash",
                                        "key_hash",       "secret_sealed", "secret_nonce",
                                        "admin_token",    "api_key",       "proxies",
                                        "proxies_sealed", "proxies_nonce", NULL};
    for (int i = 0; names[i]; i++)
        if (strcasecmp(name, names[i]) == 0)
            return true;
    return false;
}

//  Masks secrets in place: values of secret fields become "***", and so do
//  strings that look like our keys or tokens.
static void s_mask(json_t *value)
{
    if (json_is_object(value)) {
        const char *name;
        json_t *item;
        json_object_foreach(value, name, item)
        {
            if ((s_secret_field(name) && !json_is_null(item)) ||
                (json_is_string(item) && admin_looks_secret(json_string_value(item))))
                json_object_set_new(value, name, json_string("***"));
            else
                s_mask(item);
        }
    } else if (json_is_array(value)) {
        size_t index;
        json_t *item;
        json_array_foreach(value, index, item)
        {
            if (json_is_string(item) && admin_looks_secret(json_string_value(item)))
                json_array_set_new(value, index, json_string("***"));
            else
                s_mask(item);
        }
    }
}

//  A masked deep copy of a JSON value as compact text, or NULL for NULL or
//  an empty object. Caller frees.
char *admin_masked_text(json_t *value)
{
    if (!value || (json_is_object(value) && json_object_size(value) == 0))
        return NULL;
    json_t *copy = json_deep_copy(value);
    if (json_is_string(copy) && admin_looks_secret(json_string_value(copy))) {
        json_decref(copy);
        copy = json_string("***");
    }
    s_mask(copy);
    char *text = json_dumps(copy, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(copy);
    return text;
}

//  Counts the characters (not bytes) of UTF-8 text.
static size_t s_characters(const char *text)
{
    size_t count = 0;
    for (const unsigned char *c = (const unsigned char *)text; *c; c++)
        count += (*c & 0xc0) != 0x80;
    return count;
}

//  Checks a new password: 12 to 1024 bytes' worth, at least 12 characters,
//  no NUL. Returns NULL when fine, else what is wrong (a static string).
const char *admin_password_problem(json_t *json)
{
    const char *text = json_string_value(json);
    if (!text)
        return "must be a string";
    if (strlen(text) != json_string_length(json))
        return "must not contain NUL";
    if (strlen(text) > S_PASSWORD_MAX)
        return "must be at most 1024 bytes";
    if (s_characters(text) < S_PASSWORD_MIN)
        return "must be at least 12 characters";
    return NULL;
}

//  A new random token: prefix followed by 64 hex digits. out holds at
//  least 4 + 64 + 1 bytes.
void admin_new_token(const char *prefix, char *out, size_t out_size)
{
    uint8_t random[ADMIN_TOKEN_RANDOM];
    randombytes_buf(random, sizeof random);
    assert(out_size >= strlen(prefix) + 2 * ADMIN_TOKEN_RANDOM + 1);
    size_t used = (size_t)snprintf(out, out_size, "%s", prefix);
    for (size_t i = 0; i < sizeof random; i++)
        used += (size_t)snprintf(out + used, out_size - used, "%02x", random[i]);
    sodium_memzero(random, sizeof random);
}

//  Finds the token in `Bearer <token>` (scheme case-insensitive). Returns
//  a pointer into authorization, or NULL when there is none or it is
//  absurdly long.
const char *admin_bearer(const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    const char *token = authorization + 7;
    while (*token == ' ')
        token++;
    size_t length = strlen(token);
    return length > 0 && length <= S_TOKEN_MAX ? token : NULL;
}

// ---------------------------------------------------------------------------
//  Answers

void admin_respond(admin_call_t *call, int status, char *body)
{
    free(call->response);
    call->status = status;
    call->response = body;
}

//  Answers with a JSON value (stolen) followed by a newline for curl users.
void admin_respond_json(admin_call_t *call, int status, json_t *value)
{
    char *text = json_dumps(value, JSON_COMPACT);
    json_decref(value);
    assert(text);
    size_t length = strlen(text);
    char *line = realloc(text, length + 2);
    assert(line);
    memcpy(line + length, "\n", 2);
    admin_respond(call, status, line);
}

//  Answers with JSON text PostgreSQL made, re-encoded compactly so every
//  answer has the same layout whoever built it.
void admin_respond_text(admin_call_t *call, int status, const char *text)
{
    json_t *value = json_loads(text, JSON_DECODE_ANY, NULL);
    assert(value);
    admin_respond_json(call, status, value);
}

//  Replaces every byte that is not part of valid UTF-8 with '?', in place:
//  error messages quote names from the request, which may be any bytes or
//  cut in the middle of a character, and JSON strings must be UTF-8.
void admin_utf8_clean(char *text)
{
    unsigned char *c = (unsigned char *)text;
    while (*c) {
        int length = *c < 0x80             ? 1
                     : (*c & 0xe0) == 0xc0 ? 2
                     : (*c & 0xf0) == 0xe0 ? 3
                     : (*c & 0xf8) == 0xf0 ? 4
                                           : 0;
        bool valid = length > 0 && !(length == 2 && *c < 0xc2) && !(length == 4 && *c > 0xf4);
        for (int i = 1; valid && i < length; i++)
            valid = (c[i] & 0xc0) == 0x80;
        if (!valid) {
            *c++ = '?';
            continue;
        }
        c += length;
    }
}

void admin_error(admin_call_t *call, int status, const char *type, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

//  Answers {"error":{"message":…,"type":…}}.
void admin_error(admin_call_t *call, int status, const char *type, const char *format, ...)
{
    char message[512];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    admin_utf8_clean(message);
    admin_respond_json(call, status,
                       json_pack("{s:{s:s,s:s}}", "error", "message", message, "type", type));
}

#define admin_invalid(call, ...) admin_error(call, 400, "invalid_request_error", __VA_ARGS__)
#define admin_not_found(call, ...) admin_error(call, 404, "not_found", __VA_ARGS__)
#define admin_conflict(call, ...) admin_error(call, 409, "conflict", __VA_ARGS__)

//  Shortens a user-given name for an error message.
const char *admin_short(const char *text, char *buf, size_t size)
{
    snprintf(buf, size, "%s", text);
    if (strlen(text) >= size && size > 4)
        memcpy(buf + size - 4, "...", 4);
    return buf;
}

// ---------------------------------------------------------------------------
//  Database

//  Per-session settings, applied after every connect and reset: a bound on
//  how long a statement may block the ingress, and UTC timestamps in JSON.
void admin_session_setup(PGconn *db)
{
    PGresult *result = PQexec(db, "SET statement_timeout = 10000; SET TIME ZONE 'UTC'; "
                                  "SET application_name = 'tollgate-admin'");
    PQclear(result);
}

//  Turns a failed statement into an answer. Constraint violations are the
//  client's doing (400/409) and are named by column; anything else is a 500
//  whose details go to the log only.
static void s_db_failed(admin_call_t *call, PGresult *result)
{
    PGconn *db = call->db;
    if (PQstatus(db) == CONNECTION_BAD) {
        call->connection_lost = true;
        char reason[256];
        proto_db_error(db, reason, sizeof reason);
        log_error(NULL, "admin: database connection lost: %s", reason);
        admin_error(call, 500, "api_error", "database unavailable");
        return;
    }
    const char *state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
    const char *constraint = PQresultErrorField(result, PG_DIAG_CONSTRAINT_NAME);
    const char *column = PQresultErrorField(result, PG_DIAG_COLUMN_NAME);
    const char *primary = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
    if (!state)
        state = "";
    if (strcmp(state, "23505") == 0) {
        //  Unique names are the only unique keys a request can collide with,
        //  apart from a route's (model, provider, upstream model).
        const char *name = json_string_value(json_object_get(call->body, "name"));
        if (!name)
            name = json_string_value(json_object_get(call->body, "username"));
        char shown[104];
        if (constraint && strncmp(constraint, "routes_", 7) == 0)
            admin_conflict(call, "this route already exists");
        else if (name)
            admin_conflict(call, "the name '%s' is already taken",
                           admin_short(name, shown, sizeof shown));
        else
            admin_conflict(call, "the name is already taken");
    } else if (strcmp(state, "23514") == 0 || strcmp(state, "23502") == 0) {
        //  CHECK constraints are named table_column_check.
        char name[128] = "";
        const char *table = PQresultErrorField(result, PG_DIAG_TABLE_NAME);
        if (column)
            snprintf(name, sizeof name, "%s", column);
        else if (constraint) {
            size_t skip = table ? strlen(table) : 0;
            const char *start =
                table && strncmp(constraint, table, skip) == 0 && constraint[skip] == '_'
                    ? constraint + skip
                    : strchr(constraint, '_');
            snprintf(name, sizeof name, "%s", start ? start + 1 : constraint);
            char *suffix = strstr(name, "_check");
            if (suffix)
                *suffix = '\0';
        }
        admin_invalid(call, "invalid value for '%s'", name);
    } else if (strcmp(state, "23503") == 0)
        admin_conflict(call,
                       "the object is referenced by another one or refers to one that is gone");
    else if (strncmp(state, "22", 2) == 0)
        //  Data exceptions (bad timestamp, integer out of range) quote the
        //  value, never the statement.
        admin_invalid(call, "%s", primary ? primary : "invalid value");
    else {
        char reason[256];
        proto_db_error(db, reason, sizeof reason);
        log_error(NULL, "admin: %s %s: database error %s: %s", call->request->method,
                  call->route ? call->route->pattern : "?", state, reason);
        admin_error(call, 500, "api_error", "database error");
    }
}

//  Runs one statement with text parameters (NULL is SQL NULL). Returns the
//  result (caller clears it), or NULL after setting the error answer.
PGresult *admin_sql(admin_call_t *call, const char *sql, int count, const char *const *values)
{
    call->statements++;
    PGresult *result = PQexecParams(call->db, sql, count, NULL, values, NULL, NULL, 0);
    ExecStatusType status = PQresultStatus(result);
    if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK)
        return result;
    s_db_failed(call, result);
    PQclear(result);
    return NULL;
}

//  Runs a statement returning at most one row of one column. Returns 1 with
//  a copy of the value in *out (caller frees; may be NULL), 0 when there is
//  no row, -1 after setting the error answer.
int admin_sql_one(admin_call_t *call, const char *sql, int count, const char *const *values,
                  char **out)
{
    PGresult *result = admin_sql(call, sql, count, values);
    if (!result)
        return -1;
    int found = PQntuples(result) > 0;
    if (out)
        *out = found && !PQgetisnull(result, 0, 0) ? strdup(PQgetvalue(result, 0, 0)) : NULL;
    PQclear(result);
    return found;
}

int admin_begin(admin_call_t *call)
{
    PGresult *result = admin_sql(call, "BEGIN", 0, NULL);
    if (!result)
        return -1;
    PQclear(result);
    call->in_transaction = true;
    return 0;
}

static int s_audit_write(admin_call_t *call);

//  Commits the handler's transaction, writing its audit row first, so a
//  change and its record are one.
int admin_commit(admin_call_t *call)
{
    if (!call->audited && s_audit_write(call) != 0)
        return -1;
    call->in_transaction = false;
    PGresult *result = admin_sql(call, "COMMIT", 0, NULL);
    if (!result)
        return -1;
    PQclear(result);
    return 0;
}

//  Answers with the JSON a query made, or 404 with `what` when it found no row.
void admin_respond_query(admin_call_t *call, int status, const char *sql, int count,
                         const char *const *values, const char *what)
{
    char *text = NULL;
    int found = admin_sql_one(call, sql, count, values, &text);
    if (found == 1 && text)
        admin_respond_text(call, status, text);
    else if (found == 0)
        admin_not_found(call, "%s not found", what);
    free(text);
}

//  Runs a query returning one JSON object for id and keeps it as the
//  audit's before (or after) image. A missing row leaves NULL. Returns 0,
//  or -1 after setting the error answer.
int admin_audit_image(admin_call_t *call, bool after, const char *sql, const char *id)
{
    char *text = NULL;
    if (admin_sql_one(call, sql, 1, (const char *[]){id}, &text) < 0)
        return -1;
    json_t **slot = after ? &call->audit_after : &call->audit_before;
    json_decref(*slot);
    *slot = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    free(text);
    if (!call->audit_target[0])
        snprintf(call->audit_target, sizeof call->audit_target, "%s", id);
    return 0;
}
#define admin_before(call, sql, id) admin_audit_image(call, false, sql, id)
#define admin_after(call, sql, id) admin_audit_image(call, true, sql, id)

//  Inserts one audit row of this call (inside its transaction): who, from
//  where, the route, and the given action, target and images. Everything
//  that could hold a secret goes through admin_masked_text.
static int s_audit_insert(admin_call_t *call, const char *action, const char *target_in,
                          json_t *before_image, json_t *after_image)
{
    static const char *const kinds[] = {[ADMIN_WHO_NONE] = "anonymous",
                                        [ADMIN_WHO_BOOTSTRAP] = "bootstrap",
                                        [ADMIN_WHO_USER] = "user",
                                        [ADMIN_WHO_TOKEN] = "token"};
    const admin_who_t *who = &call->who;
    char target[128] = "";
    if (target_in && *target_in)
        snprintf(target, sizeof target, "%s", target_in);
    if (admin_looks_secret(target))
        snprintf(target, sizeof target, "***");
    admin_utf8_clean(target);
    char *request = admin_masked_text(call->body);
    char *before = admin_masked_text(before_image);
    char *after = admin_masked_text(after_image);
    const char *params[] = {who->kind == ADMIN_WHO_NONE ? "anonymous" : who->actor,
                            kinds[who->kind],
                            who->kind == ADMIN_WHO_NONE ? NULL : admin_role_name(who->role),
                            call->request->client_ip,
                            call->request->request_id,
                            action,
                            call->request->method ? call->request->method : "",
                            call->route ? call->route->pattern : "",
                            target[0] ? target : NULL,
                            request,
                            before,
                            after};
    PGresult *result =
        admin_sql(call,
                  "INSERT INTO audit_log (actor, actor_kind, role, client_ip, "
                  "request_id, action, method, route, target, request, before, after) "
                  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, "
                  "$12::jsonb)",
                  12, params);
    free(request);
    free(before);
    free(after);
    if (!result)
        return -1;
    PQclear(result);
    return 0;
}

//  Writes the audit row of the change in progress (inside its transaction).
static int s_audit_write(admin_call_t *call)
{
    call->audited = true;
    const char *action =
        call->audit_action ? call->audit_action
                           : (call->route && call->route->action ? call->route->action : "change");
    char target[128] = "";
    if (call->audit_target[0])
        snprintf(target, sizeof target, "%s", call->audit_target);
    else if (call->route && call->params[0])
        snprintf(target, sizeof target, "%s",
                 admin_looks_secret(call->params[0]) ? "***" : call->params[0]);
    return s_audit_insert(call, action, target, call->audit_before, call->audit_after);
}

int admin_audit_also(admin_call_t *call, const char *action, const char *target, const char *before,
                     const char *after)
{
    json_t *before_image = before ? json_loads(before, JSON_DECODE_ANY, NULL) : NULL;
    json_t *after_image = after ? json_loads(after, JSON_DECODE_ANY, NULL) : NULL;
    int rc = s_audit_insert(call, action, target, before_image, after_image);
    json_decref(before_image);
    json_decref(after_image);
    return rc;
}

// ---------------------------------------------------------------------------
//  Request fields

void admin_values_free(admin_value_t *values, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(values[i].owned);
}

//  Reads a money field from either of its two names into value->buf.
static int s_read_micros(admin_call_t *call, const admin_field_t *spec, admin_value_t *value)
{
    json_t *decimal = json_object_get(call->body, spec->field);
    json_t *micros = json_object_get(call->body, spec->micros);
    if (decimal && micros) {
        admin_invalid(call, "give either '%s' or '%s', not both", spec->field, spec->micros);
        return -1;
    }
    const char *name = decimal ? spec->field : spec->micros;
    json_t *json = decimal ? decimal : micros;
    value->present = true;
    value->json = json;
    if (json_is_null(json)) {
        if (!spec->nullable) {
            admin_invalid(call, "'%s' cannot be null", name);
            return -1;
        }
        return 0;
    }
    int64_t amount = 0;
    bool ok = false;
    if (decimal && json_is_string(json))
        ok = admin_parse_micros(json_string_value(json), spec->min < 0, &amount) == 0;
    else if (decimal && json_is_integer(json)) {
        json_int_t units = json_integer_value(json);
        ok = units <= ADMIN_MONEY_MAX / ADMIN_MICROS && units >= -(ADMIN_MONEY_MAX / ADMIN_MICROS);
        amount = (int64_t)units * ADMIN_MICROS;
    } else if (micros && json_is_integer(json)) {
        amount = json_integer_value(json);
        ok = true;
    }
    if (!ok) {
        admin_invalid(call,
                      decimal ? "'%s' must be a decimal string with at most 6 decimal places, "
                                "such as \"2.50\""
                              : "'%s' must be an integer",
                      name);
        return -1;
    }
    if (amount < spec->min || amount > spec->max) {
        admin_invalid(call, "'%s' is out of range", name);
        return -1;
    }
    snprintf(value->buf, sizeof value->buf, "%" PRId64, amount);
    value->text = value->buf;
    return 0;
}

//  Checks a JSON array of names and keeps it as JSON text for SQL.
static int s_read_names(admin_call_t *call, const admin_field_t *spec, json_t *json,
                        admin_value_t *value)
{
    if (!json_is_array(json) || json_array_size(json) > ADMIN_LIST_MAX) {
        admin_invalid(call, "'%s' must be an array of names (or null for any)", spec->field);
        return -1;
    }
    size_t index;
    json_t *item;
    json_array_foreach(json, index, item)
    {
        const char *name = json_string_value(item);
        if (!name || !*name || strlen(name) > 200 || !admin_printable(name)) {
            admin_invalid(call, "'%s' must hold names of 1 to 200 printable characters",
                          spec->field);
            return -1;
        }
    }
    value->owned = json_dumps(json, JSON_COMPACT);
    value->text = value->owned;
    return 0;
}

//  Reads one field. Returns 0 (present or not), or -1 after setting the error answer.
static int s_read_field(admin_call_t *call, const admin_field_t *spec, admin_value_t *value)
{
    if (spec->kind == ADMIN_F_MICROS)
        return json_object_get(call->body, spec->field) || json_object_get(call->body, spec->micros)
                   ? s_read_micros(call, spec, value)
                   : 0;
    json_t *json = json_object_get(call->body, spec->field);
    if (!json)
        return 0;
    value->present = true;
    value->json = json;
    if (json_is_null(json)) {
        if (spec->nullable)
            return 0;
        admin_invalid(call, "'%s' cannot be null", spec->field);
        return -1;
    }
    const char *text = json_string_value(json);
    switch (spec->kind) {
    case ADMIN_F_TEXT:
        if (!text || (int64_t)strlen(text) < spec->min || (int64_t)strlen(text) > spec->max ||
            !admin_printable(text)) {
            admin_invalid(
                call, "'%s' must be a string of %" PRId64 " to %" PRId64 " printable characters",
                spec->field, spec->min, spec->max);
            return -1;
        }
        break;
    case ADMIN_F_PNAME:
        if (!text || !s_provider_name_valid(text)) {
            admin_invalid(call, "'%s' must be 1 to 100 of A-Z a-z 0-9 _ . -", spec->field);
            return -1;
        }
        break;
    case ADMIN_F_ENUM: {
        bool ok = false;
        for (int i = 0; text && spec->choices[i]; i++)
            ok = ok || strcmp(text, spec->choices[i]) == 0;
        if (!ok) {
            char list[128] = "";
            for (int i = 0; spec->choices[i]; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                         spec->choices[i]);
            admin_invalid(call, "'%s' must be one of %s", spec->field, list);
            return -1;
        }
        break;
    }
    case ADMIN_F_INT:
        if (!json_is_integer(json) || json_integer_value(json) < spec->min ||
            json_integer_value(json) > spec->max) {
            admin_invalid(call, "'%s' must be an integer from %" PRId64 " to %" PRId64, spec->field,
                          spec->min, spec->max);
            return -1;
        }
        snprintf(value->buf, sizeof value->buf, "%" PRId64, (int64_t)json_integer_value(json));
        text = value->buf;
        break;
    case ADMIN_F_UNAME:
        if (!text || !admin_username_valid(text)) {
            admin_invalid(call, "'%s' must be 1 to 100 of A-Z a-z 0-9 _ . @ -", spec->field);
            return -1;
        }
        break;
    case ADMIN_F_NAMES:
        return s_read_names(call, spec, json, value);
    case ADMIN_F_TAGS:
        if (s_read_names(call, spec, json, value) != 0)
            return -1;
        return admin_tags_check(call, spec->field, json);
    case ADMIN_F_TIME:
        if (!text || !*text || strlen(text) > 64 || !admin_printable(text)) {
            admin_invalid(call, "'%s' must be a timestamp such as \"2030-01-31T00:00:00Z\"",
                          spec->field);
            return -1;
        }
        break;
    case ADMIN_F_URL: {
        if (!text || !s_url_valid(text)) {
            admin_invalid(call, "'%s' must be an http:// or https:// URL", spec->field);
            return -1;
        }
        value->owned = strdup(text);
        size_t length = strlen(value->owned);
        while (length > 8 && value->owned[length - 1] == '/')
            value->owned[--length] = '\0';
        text = value->owned;
        break;
    }
    case ADMIN_F_REF:
        if (json_is_integer(json) && json_integer_value(json) > 0) {
            snprintf(value->buf, sizeof value->buf, "%" PRId64, (int64_t)json_integer_value(json));
            text = value->buf;
        } else if (!text || !*text || strlen(text) > 200) {
            admin_invalid(call, "'%s' must be a name or an id", spec->field);
            return -1;
        }
        break;
    case ADMIN_F_ANY:
        break;
    case ADMIN_F_BOOL:
        if (!json_is_boolean(json)) {
            admin_invalid(call, "'%s' must be true or false", spec->field);
            return -1;
        }
        text = json_is_true(json) ? "true" : "false";
        break;
    case ADMIN_F_SET:
    case ADMIN_F_MICROS:
        assert(false);
    }
    value->text = text;
    return 0;
}

//  True when a field is read from bodies of this use.
static bool s_field_used(const admin_field_t *spec, int use)
{
    return spec->kind != ADMIN_F_SET && (spec->use == 0 || (spec->use & use) != 0);
}

//  True when `key` names a field of the table for this use (either name of
//  a money field).
static bool s_field_known(const admin_field_t *fields, const char *key, int use)
{
    for (const admin_field_t *spec = fields; spec->field; spec++)
        if (s_field_used(spec, use) &&
            (strcmp(spec->field, key) == 0 ||
             (spec->kind == ADMIN_F_MICROS && strcmp(spec->micros, key) == 0)))
            return true;
    return false;
}

//  Typos should not be silently ignored: an unknown field is an error.
int admin_read(admin_call_t *call, const admin_field_t *fields, admin_value_t *values, int use)
{
    const char *key;
    json_t *json;
    json_object_foreach(call->body, key, json)
    {
        (void)json;
        if (!s_field_known(fields, key, use)) {
            char name[64];
            admin_invalid(call, "unknown field '%s'", admin_short(key, name, sizeof name));
            return -1;
        }
    }
    for (size_t i = 0; fields[i].field; i++) {
        assert(i < ADMIN_MAX_FIELDS);
        if (!s_field_used(&fields[i], use))
            continue;
        if (s_read_field(call, &fields[i], &values[i]) != 0)
            return -1;
        if (fields[i].required && use == ADMIN_CREATE && !values[i].present) {
            admin_invalid(call, "'%s' is required", fields[i].field);
            return -1;
        }
    }
    return 0;
}

size_t admin_field_index(const admin_field_t *fields, const char *field)
{
    for (size_t i = 0; fields[i].field; i++)
        if (strcmp(fields[i].field, field) == 0)
            return i;
    assert(false);
    return 0;
}

void admin_field_param(const admin_field_t *field, int number, char *out, size_t size)
{
    if (field->cast)
        snprintf(out, size, "$%d::%s", number, field->cast);
    else if (field->kind == ADMIN_F_INT || field->kind == ADMIN_F_MICROS ||
             (field->kind == ADMIN_F_REF && field->ref))
        snprintf(out, size, "$%d::bigint", number);
    else if (field->kind == ADMIN_F_TIME)
        snprintf(out, size, "$%d::timestamptz", number);
    else if (field->kind == ADMIN_F_NAMES || field->kind == ADMIN_F_TAGS)
        snprintf(out, size,
                 "CASE WHEN $%d::json IS NULL THEN NULL "
                 "ELSE ARRAY(SELECT json_array_elements_text($%d::json)) END",
                 number, number);
    else
        snprintf(out, size, "$%d", number);
}

//  The SET list is built here, but only from column names in our field
//  tables; every value is a parameter.
int admin_patch(admin_call_t *call, const char *table, bool has_updated_at,
                const admin_field_t *fields, admin_value_t *values, const char *id)
{
    char sql[2048];
    const char *params[ADMIN_MAX_FIELDS + 1] = {id};
    int count = 1;
    int used = snprintf(sql, sizeof sql, "UPDATE %s SET %s", table,
                        has_updated_at ? "updated_at = now()" : "id = id");
    for (size_t i = 0; fields[i].field; i++) {
        if (!values[i].present || !fields[i].column)
            continue;
        params[count++] = values[i].text;
        char param[160];
        admin_field_param(&fields[i], count, param, sizeof param);
        used +=
            snprintf(sql + used, sizeof sql - (size_t)used, ", %s = %s", fields[i].column, param);
        assert((size_t)used < sizeof sql);
    }
    if (count == 1)
        return 0;
    snprintf(sql + used, sizeof sql - (size_t)used, " WHERE id = $1::bigint");
    PGresult *result = admin_sql(call, sql, count, params);
    if (!result)
        return -1;
    int rows = atoi(PQcmdTuples(result));
    PQclear(result);
    return rows;
}

//  True for a capability tag: 1 to 64 of a-z 0-9 . _ - . Tags travel
//  comma-separated in ROUTE and are compared byte for byte, so commas,
//  spaces and upper case (a "Vision" that silently misses "vision") are out.
bool admin_tag_valid(const char *tag)
{
    size_t length = strlen(tag);
    if (length < 1 || length > ADMIN_TAG_MAX)
        return false;
    for (const char *c = tag; *c; c++)
        if (!islower((unsigned char)*c) && !isdigit((unsigned char)*c) && *c != '.' && *c != '_' &&
            *c != '-')
            return false;
    return true;
}

//  Checks a JSON array of capability tags (NULL: not given). Returns 0, or
//  -1 after setting the answer.
int admin_tags_check(admin_call_t *call, const char *field, json_t *tags)
{
    size_t index;
    json_t *item;
    json_array_foreach(tags, index, item)
    {
        if (!admin_tag_valid(json_string_value(item))) {
            admin_invalid(call, "'%s' must hold tags of 1 to %d characters of a-z 0-9 . _ -", field,
                          ADMIN_TAG_MAX);
            return -1;
        }
    }
    return 0;
}

//  Number of present fields.
int admin_present(const admin_field_t *fields, const admin_value_t *values)
{
    int count = 0;
    for (size_t i = 0; fields[i].field; i++)
        count += values[i].present;
    return count;
}

// ---------------------------------------------------------------------------
//  Finding objects by name or id

int admin_resolve(admin_call_t *call, const admin_resource_t *resource, const char *ident, char *id)
{
    char sql[256];
    if (resource->name_column)
        snprintf(sql, sizeof sql,
                 "SELECT id FROM %s WHERE %s = $1 OR id = $2::bigint ORDER BY %s = $1 DESC "
                 "LIMIT 1",
                 resource->table, resource->name_column, resource->name_column);
    else
        snprintf(sql, sizeof sql,
                 "SELECT id FROM %s WHERE id = $2::bigint AND $1::text IS NOT NULL",
                 resource->table);
    const char *params[] = {ident, admin_is_id(ident) ? ident : NULL};
    char *found = NULL;
    int rc = admin_sql_one(call, sql, 2, params, &found);
    if (rc == 1 && found) {
        snprintf(id, 24, "%s", found);
        free(found);
        return 0;
    }
    free(found);
    if (rc == 0) {
        char name[104];
        admin_not_found(call, "%s '%s' not found", resource->title,
                        admin_short(ident, name, sizeof name));
    }
    return -1;
}

//  Checks that a path parameter is a numeric id; answers 404 when not.
int admin_path_id(admin_call_t *call, const char *what)
{
    if (admin_is_id(call->params[0]))
        return 0;
    admin_not_found(call, "%s not found", what);
    return -1;
}

//  Query helpers

//  Reads `limit` (1..ADMIN_LIMIT_MAX) into *limit, default `fallback`, as
//  text into text (24 bytes). Returns 0, or -1 after answering 400.
int admin_query_limit(admin_call_t *call, long fallback, char *text)
{
    char value[24];
    long limit = fallback;
    int found = admin_query_get(call->request->query, "limit", value, sizeof value);
    if (found == 1) {
        char *end;
        limit = strtol(value, &end, 10);
        if (!*value || *end || limit < 1 || limit > ADMIN_LIMIT_MAX)
            found = -1;
    }
    if (found < 0) {
        admin_invalid(call, "'limit' must be an integer from 1 to %d", ADMIN_LIMIT_MAX);
        return -1;
    }
    snprintf(text, 24, "%ld", limit);
    return 0;
}

//  Reads an optional query value into out; *present tells whether it was
//  given. Returns 0, or -1 after answering 400.
int admin_query_opt(admin_call_t *call, const char *name, char *out, size_t size, bool *present)
{
    int found = admin_query_get(call->request->query, name, out, size);
    if (found < 0 || (found == 1 && !admin_printable(out))) {
        admin_invalid(call, "'%s' is malformed", name);
        return -1;
    }
    *present = found == 1;
    return 0;
}

// ---------------------------------------------------------------------------
//  Admin users

//  Usernames: what the schema's CHECK allows.
bool admin_username_valid(const char *name)
{
    size_t length = strlen(name);
    if (length < 1 || length > 100)
        return false;
    for (const char *c = name; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("_.@-", *c))
            return false;
    return true;
}

static atomic_int s_hashing; //  argon2id computations running now

int admin_argon2_hash(char *hash, const char *password)
{
    atomic_fetch_add(&s_hashing, 1);
    int rc = crypto_pwhash_str_alg(hash, password, strlen(password), ADMIN_PW_OPSLIMIT,
                                   ADMIN_PW_MEMLIMIT, crypto_pwhash_ALG_ARGON2ID13);
    atomic_fetch_sub(&s_hashing, 1);
    return rc == 0 ? 0 : -1;
}

bool admin_argon2_verify(const char *hash, const char *password)
{
    atomic_fetch_add(&s_hashing, 1);
    bool ok = crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
    atomic_fetch_sub(&s_hashing, 1);
    return ok;
}

int admin_hashing(void)
{
    return atomic_load(&s_hashing);
}

//  Checks a new password and hashes it with argon2id into hash
//  (crypto_pwhash_STRBYTES). Returns 0, or -1 after answering.
int admin_password_hash(admin_call_t *call, const char *field, json_t *password, char *hash)
{
    const char *problem = admin_password_problem(password);
    if (problem) {
        admin_invalid(call, "'%s' %s", field, problem);
        return -1;
    }
    const char *text = json_string_value(password);
    if (admin_argon2_hash(hash, text) != 0) {
        log_error(call->request->request_id, "admin: cannot hash a password (out of memory)");
        admin_error(call, 500, "api_error", "cannot hash the password");
        return -1;
    }
    return 0;
}

//  True when the caller's role is enough for the route.
bool admin_allowed(const admin_route_t *route, const admin_who_t *who)
{
    if (route->access == ADMIN_PUBLIC)
        return true;
    if (who->kind == ADMIN_WHO_NONE)
        return false;
    //  An account holder's routes are theirs alone: staff have no account.
    if (route->access == ADMIN_ACCOUNT)
        return who->role == ADMIN_ACCOUNT;
    return who->role >= route->access;
}

//  Parses the body of POST and PATCH into call->body (an empty body is {}).

// ---------------------------------------------------------------------------
//  Self test

static void s_test_micros(void)
{
    int64_t value = 0;
    PROTO_CHECK(admin_parse_micros("10.50", false, &value) == 0 && value == 10500000);
    PROTO_CHECK(admin_parse_micros("0.000001", false, &value) == 0 && value == 1);
    PROTO_CHECK(admin_parse_micros("2.5", false, &value) == 0 && value == 2500000);
    PROTO_CHECK(admin_parse_micros("7", false, &value) == 0 && value == 7000000);
    PROTO_CHECK(admin_parse_micros("0", false, &value) == 0 && value == 0);
    PROTO_CHECK(admin_parse_micros("-3.25", true, &value) == 0 && value == -3250000);
    PROTO_CHECK(admin_parse_micros("1000000000", false, &value) == 0 && value == ADMIN_MONEY_MAX);
    PROTO_CHECK(admin_parse_micros("-3.25", false, &value) == -1);
    PROTO_CHECK(admin_parse_micros("1e3", false, &value) == -1);
    PROTO_CHECK(admin_parse_micros("1.0000001", false, &value) == -1);
    PROTO_CHECK(admin_parse_micros("", false, &value) == -1);
    PROTO_CHECK(admin_parse_micros("-", true, &value) == -1);
    PROTO_CHECK(admin_parse_micros(".5", false, &value) == -1);
    PROTO_CHECK(admin_parse_micros("5.", false, &value) == -1);
    PROTO_CHECK(admin_parse_micros("+5", false, &value) == -1);
    PROTO_CHECK(admin_parse_micros(" 5", false, &value) == -1);
    PROTO_CHECK(admin_parse_micros("5 ", false, &value) == -1);
    PROTO_CHECK(admin_parse_micros("1,5", false, &value) == -1);
    PROTO_CHECK(admin_parse_micros("0x10", false, &value) == -1);
    PROTO_CHECK(admin_parse_micros("1000000000.000001", false, &value) == -1);
    PROTO_CHECK(admin_parse_micros("99999999999999999999999", false, &value) == -1);
    PROTO_CHECK(admin_parse_micros("9223372036854.775807", false, &value) == -1);
}

static void s_test_utf8(void)
{
    char text[32];
    strcpy(text, "caf\xc3\xa9 ok");
    admin_utf8_clean(text);
    PROTO_CHECK(strcmp(text, "caf\xc3\xa9 ok") == 0);
    strcpy(text, "a\xff"
                 "b\xc3");
    admin_utf8_clean(text);
    PROTO_CHECK(strcmp(text, "a?b?") == 0);
    strcpy(text, "\xe2\x80"
                 "x");
    admin_utf8_clean(text);
    PROTO_CHECK(strcmp(text, "??x") == 0);
}

static void s_test_query(void)
{
    char out[64];
    PROTO_CHECK(admin_query_get("account=team%20a&limit=5", "account", out, sizeof out) == 1);
    PROTO_CHECK(strcmp(out, "team a") == 0);
    PROTO_CHECK(admin_query_get("account=team%20a&limit=5", "limit", out, sizeof out) == 1);
    PROTO_CHECK(strcmp(out, "5") == 0);
    PROTO_CHECK(admin_query_get("accounts=x&limit=5", "account", out, sizeof out) == 0);
    PROTO_CHECK(admin_query_get("before=2026-01-01T00:00:00+00:00", "before", out, sizeof out) ==
                1);
    PROTO_CHECK(strcmp(out, "2026-01-01T00:00:00+00:00") == 0);
    PROTO_CHECK(admin_query_get("a=%4", "a", out, sizeof out) == -1);
    PROTO_CHECK(admin_query_get("a=%zz", "a", out, sizeof out) == -1);
    PROTO_CHECK(admin_query_get("a=%00", "a", out, sizeof out) == -1);
    PROTO_CHECK(admin_query_get("a=", "a", out, sizeof out) == 1 && *out == '\0');
    PROTO_CHECK(admin_query_get(NULL, "a", out, sizeof out) == 0);
    PROTO_CHECK(admin_query_get("", "a", out, sizeof out) == 0);
    PROTO_CHECK(admin_query_get("&&a=1", "a", out, sizeof out) == 1 && strcmp(out, "1") == 0);
    char tiny[4];
    PROTO_CHECK(admin_query_get("a=12345", "a", tiny, sizeof tiny) == -1);
}

//  Field validation against a fake call (no database needed).
//  Secrets never reach the audit log: by field name anywhere, and by shape.
static void s_test_mask(void)
{
    char key[PROTO_CRYPTO_API_KEY_LEN + 1], token[80];
    proto_crypto_new_api_key(key, sizeof key);
    admin_new_token("tgs_", token, sizeof token);
    PROTO_CHECK(strncmp(token, "tgs_", 4) == 0 && strlen(token) == 68);
    PROTO_CHECK(admin_looks_secret(key) && admin_looks_secret(token));
    PROTO_CHECK(!admin_looks_secret("tg-team") && !admin_looks_secret("tgs_") &&
                !admin_looks_secret("openai"));
    json_t *body = json_pack("{s:s,s:s,s:{s:s,s:[s,s]},s:s,s:n,s:s}", "secret", "sk-live-123",
                             "name", "ok", "nested", "password", "hunter2hunter2", "list", key,
                             "fine", "note", token, "token", "key_hash", "abc");
    char *text = admin_masked_text(body);
    PROTO_CHECK(text);
    PROTO_CHECK(!strstr(text, "sk-live-123") && !strstr(text, "hunter2") && !strstr(text, key) &&
                !strstr(text, token) && !strstr(text, "abc"));
    PROTO_CHECK(strstr(text, "\"name\":\"ok\"") && strstr(text, "\"fine\""));
    PROTO_CHECK(strstr(text, "\"token\":null")); //  null stays null
    free(text);
    //  The original is untouched.
    PROTO_CHECK(strcmp(json_string_value(json_object_get(body, "secret")), "sk-live-123") == 0);
    json_decref(body);
    json_t *empty = json_object();
    PROTO_CHECK(admin_masked_text(empty) == NULL && admin_masked_text(NULL) == NULL);
    json_decref(empty);
    json_t *bare = json_string(key);
    text = admin_masked_text(bare);
    PROTO_CHECK(strcmp(text, "\"***\"") == 0);
    free(text);
    json_decref(bare);
}

static void s_test_passwords(void)
{
    struct {
        const char *json; //  a password as JSON
        bool ok;          //  accepted
    } cases[] = {{"\"correct horse\"", true},
                 {"\"123456789012\"", true},
                 {"\"12345678901\"", false},
                 {"\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"", false}, //  6 characters
                 {"\"a\\u0000bcdefghijklmn\"", false},
                 {"12345678901234", false},
                 {"null", false}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *json = json_loads(cases[i].json, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        PROTO_CHECK(json);
        PROTO_CHECK((admin_password_problem(json) == NULL) == cases[i].ok);
        json_decref(json);
    }
    char *long_text = malloc(S_PASSWORD_MAX + 2);
    memset(long_text, 'x', S_PASSWORD_MAX + 1);
    long_text[S_PASSWORD_MAX + 1] = '\0';
    json_t *json = json_string(long_text);
    PROTO_CHECK(admin_password_problem(json) != NULL);
    json_decref(json);
    free(long_text);

    PROTO_CHECK(admin_username_valid("alice") && admin_username_valid("a.b@c-d_e"));
    PROTO_CHECK(!admin_username_valid("") && !admin_username_valid("a b") &&
                !admin_username_valid("a/b"));

    PROTO_CHECK(admin_bearer(NULL) == NULL && admin_bearer("Basic x") == NULL &&
                admin_bearer("Bearer ") == NULL);
    PROTO_CHECK(strcmp(admin_bearer("bearer  tgs_x"), "tgs_x") == 0);

    //  The hash we store is argon2id, and verifies.
    char hash[crypto_pwhash_STRBYTES];
    PROTO_CHECK(crypto_pwhash_str_alg(hash, "correct horse", 13, ADMIN_PW_OPSLIMIT,
                                      ADMIN_PW_MEMLIMIT, crypto_pwhash_ALG_ARGON2ID13) == 0);
    PROTO_CHECK(strncmp(hash, "$argon2id$", 10) == 0);
    PROTO_CHECK(crypto_pwhash_str_verify(hash, "correct horse", 13) == 0);
    PROTO_CHECK(crypto_pwhash_str_verify(hash, "correct horsf", 13) != 0);
}

void admin_call_test(bool verbose)
{
    if (verbose)
        printf(" * admin_call: ");
    PROTO_CHECK(proto_crypto_init() == 0);
    s_test_micros();
    s_test_query();
    s_test_utf8();
    s_test_mask();
    s_test_passwords();
    if (verbose)
        printf("OK\n");
}
