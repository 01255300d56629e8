/*  ingress_admin: the operator admin API. See ingress_admin.h and docs/admin-api.md.

    Shape of the code: a routing table maps (method, path pattern) to a
    handler; each handler reads its body through a table of field specs
    (which also drives PATCH), runs constant SQL through PQexecParams, and
    lets PostgreSQL build the JSON it returns (json_build_object), so the
    objects look the same from every endpoint. No SQL text ever contains a
    value from the request: values are parameters, and the only SQL built at
    run time (PATCH's SET list) is assembled from column names in our own
    tables.
*/
#include "ingress_admin.h"
#include "ledger_check.h"
#include "ledger_report.h"
#include "proto_crypto.h"
#include "proto_db.h"
#include "proto_log.h"
#include "proto_msg.h"
#include "proto_trace.h"

#include <assert.h>
#include <ctype.h>
#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_CONTENT_TYPE "application/json"
#define S_MAX_BODY (1024 * 1024)              //  admin bodies are small; refuse bigger ones
#define S_MAX_PATH 2048                       //  longest path we route
#define S_MAX_SEGMENTS 64                     //  path segments we route
#define S_MAX_PARAMS 2                        //  {params} in one pattern
#define S_MAX_FIELDS 20                       //  fields in one spec table
#define S_MICROS 1000000                      //  micro-units per currency unit
#define S_MONEY_MAX INT64_C(1000000000000000) //  1e9 currency units: sums never overflow
#define S_PRICE_MAX INT64_C(1000000000000)    //  1e6 per million tokens
#define S_INT_MAX 1000000000                  //  bound for priorities, weights and limits
#define S_LIST_MAX 1000                       //  names in an allowed-models list
#define S_USAGE_LIMIT 100                     //  usage rows when no limit is given
#define S_USAGE_LIMIT_MAX 1000                //  most usage rows in one page
#define S_HINT_MIN_SECRET 12                  //  shorter secrets get no hint characters
#define S_PASSWORD_MIN 12                     //  characters in a password, at least
#define S_PASSWORD_MAX 1024                   //  bytes in a password, at most
#define S_TOKEN_MAX 512                       //  longest bearer token we look at
#define S_TOKEN_RANDOM 32                     //  random bytes in a session or API token
#define S_TOKEN_PREFIX_LEN 12                 //  "tgt_" and 8 hex digits shown in lists
#define S_AUDIT_LIMIT 100                     //  audit rows when no limit is given
//  argon2id cost: OWASP's floor (19 MiB, 2 passes). The admin API runs on
//  the ingress loop, so a login must not stall client traffic for long;
//  crypto_pwhash_str_needs_rehash lets a later release raise these.
#define S_PW_OPSLIMIT 2
#define S_PW_MEMLIMIT (19u * 1024u * 1024u)
//  Questions to the routers: the admin API answers on the ingress loop, so
//  a router that does not answer may hold it up this long, no longer.
#define S_ROUTERS_MAX 16      //  router endpoints asked
#define S_ROUTER_WAIT_MS 2000 //  longest wait for their answers
#define S_ROUTER_QUEUE 64     //  questions queued for one router at most
#define S_TAG_MAX 64          //  bytes in one capability tag
#define S_SESSION_MAX 256     //  bytes in a sticky session id (as ingress cuts them)

struct _ingress_admin_t {
    proto_config_t *config;          //  borrowed: admin_token, secret_key, database_url, lockout
    PGconn *db;                      //  our own connection, reset when it breaks
    char *dummy_hash;                //  argon2id of a random password: verified for unknown
                                     //  users so that timing does not tell who exists
    zsock_t *routers[S_ROUTERS_MAX]; //  DEALER per router endpoint, NULL until used
    char *router_endpoints[S_ROUTERS_MAX]; //  their endpoints (copies)
    int router_count;                      //  endpoints configured
    uint64_t questions;                    //  questions asked, for unique request ids
};

typedef struct s_route s_route_t;

//  Roles, in order of power; a route's access is the least role it needs.
typedef enum {
    S_PUBLIC = -1,  //  no token at all (login)
    S_ANY = 0,      //  any valid token (me, logout)
    S_VIEWER = 1,   //  reads
    S_OPERATOR = 2, //  changes configuration and money
    S_OWNER = 3,    //  manages admin users, tokens, sessions, bootstrap
} s_access_t;

typedef enum {
    S_WHO_NONE,      //  not authenticated (yet)
    S_WHO_BOOTSTRAP, //  ingress.admin_token (or its rotated successor)
    S_WHO_USER,      //  a login session
    S_WHO_TOKEN,     //  a scoped API token
} s_who_kind_t;

//  Who is calling, once authenticated.
typedef struct {
    s_who_kind_t kind;   //  how they proved it
    s_access_t role;     //  S_VIEWER, S_OPERATOR or S_OWNER
    char id[24];         //  user id (sessions) or token id
    char session[24];    //  session id, for logout
    char name[104];      //  username or token name
    char actor[128];     //  for the audit log: "user:alice", "token:ci", "bootstrap"
    char expires_at[48]; //  of the session or token; empty when none
} s_who_t;

//  One request being handled.
typedef struct {
    ingress_admin_t *self;                     //  the API
    const ingress_admin_request_t *request;    //  borrowed from the caller
    const s_route_t *route;                    //  matched route
    const char *params[S_MAX_PARAMS];          //  path parameters, into param_buf
    char param_buf[S_MAX_PATH + S_MAX_PARAMS]; //  their text
    json_t *body;                              //  parsed body (an object), or NULL
    int status;                                //  HTTP status of the answer
    char *response;                            //  its body, owned until handed out
    int statements;                            //  statements sent for this request
    bool connection_lost;                      //  a statement failed on a broken connection
    bool in_transaction;                       //  BEGIN sent, no COMMIT yet
    s_who_t who;                               //  the caller, once authenticated
    const char *audit_action;                  //  overrides the route's action; NULL: route's
    char audit_target[128];                    //  what changed ("7", "alice"); empty: params[0]
    json_t *audit_before;                      //  the object before the change, or NULL
    json_t *audit_after;                       //  and after it, or NULL
    bool audited;                              //  the audit row of this transaction is written
    const char *content_type;                  //  of the answer when not JSON, else NULL
} s_call_t;

typedef void(s_handler_fn)(s_call_t *call);

struct s_route {
    const char *method;    //  HTTP method
    const char *pattern;   //  "/admin/providers/{provider}/keys"; {x*} takes one or more segments
    s_handler_fn *handler; //  answers the request
    s_access_t access;     //  least role that may call it
    const char *action;    //  audit action of a change ("provider.create"); NULL for reads
};

// ---------------------------------------------------------------------------
//  Pure helpers: money, names, paths, query strings

//  Parses an exact decimal amount ("10.50", "-3", "0.000001") into micro-units.
//  At most 6 decimal places, no exponent, no spaces, no leading '+' or '.'.
//  Returns 0, or -1 when malformed, negative and not allowed, or out of range.
static int s_parse_micros(const char *text, bool allow_negative, int64_t *out)
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
        if (units > (S_MONEY_MAX / S_MICROS))
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
    if (units > S_MONEY_MAX / S_MICROS)
        return -1;
    int64_t micros = units * S_MICROS + fraction;
    if (micros > S_MONEY_MAX)
        return -1;
    *out = negative ? -micros : micros;
    return 0;
}

//  True when text has no control characters (names end up in logs and headers).
static bool s_printable(const char *text)
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
static bool s_is_id(const char *text)
{
    size_t length = strlen(text);
    if (length < 1 || length > 18)
        return false;
    for (const char *c = text; *c; c++)
        if (!isdigit((unsigned char)*c))
            return false;
    return true;
}

//  Matches a path against a pattern. Literal segments must be equal; {x}
//  takes one non-empty segment; {x*} (at most one per pattern) takes one or
//  more segments, so model and account names may contain '/'. Parameters
//  are copied NUL-separated into buf and pointed to by params. Returns the
//  number of parameters, or -1 when the path does not match.
static int s_match(const char *pattern, const char *path, const char **params, char *buf,
                   size_t buf_size)
{
    const char *path_seg[S_MAX_SEGMENTS], *pat_seg[S_MAX_SEGMENTS];
    size_t path_len[S_MAX_SEGMENTS], pat_len[S_MAX_SEGMENTS];
    int path_count = 0, pat_count = 0;
    size_t length = strlen(path);
    if (path[0] != '/' || length >= buf_size || length > S_MAX_PATH)
        return -1;
    if (length > 1 && path[length - 1] == '/')
        length--; //  "/admin/providers/" is "/admin/providers"
    for (const char *c = path + 1; c <= path + length;) {
        if (path_count == S_MAX_SEGMENTS)
            return -1;
        size_t n = strcspn(c, "/");
        if (c + n > path + length)
            n = (size_t)(path + length - c);
        path_seg[path_count] = c;
        path_len[path_count++] = n;
        c += n + 1;
    }
    for (const char *c = pattern + 1; *c;) {
        assert(pat_count < S_MAX_SEGMENTS);
        size_t n = strcspn(c, "/");
        pat_seg[pat_count] = c;
        pat_len[pat_count++] = n;
        c += n;
        if (*c == '/')
            c++;
    }
    int star = -1;
    for (int i = 0; i < pat_count; i++)
        if (pat_len[i] > 3 && pat_seg[i][0] == '{' && pat_seg[i][pat_len[i] - 2] == '*') {
            assert(star == -1);
            star = i;
        }
    if (star < 0 ? path_count != pat_count : path_count < pat_count)
        return -1;
    int tail = star < 0 ? 0 : pat_count - star - 1; //  segments after the star
    int count = 0;
    size_t used = 0;
    for (int i = 0; i < pat_count; i++) {
        //  Which path segments this pattern segment covers.
        int first = (star >= 0 && i > star) ? path_count - tail + (i - star - 1) : i;
        int last = (i == star) ? path_count - tail - 1 : first;
        bool param = pat_seg[i][0] == '{';
        if (!param) {
            if (path_len[first] != pat_len[i] ||
                memcmp(path_seg[first], pat_seg[i], pat_len[i]) != 0)
                return -1;
            continue;
        }
        //  A star's text runs from its first segment to the end of its last.
        const char *start = path_seg[first];
        size_t n = (size_t)(path_seg[last] + path_len[last] - start);
        if (path_len[first] == 0 || path_len[last] == 0 || used + n + 1 > buf_size)
            return -1;
        assert(count < S_MAX_PARAMS);
        memcpy(buf + used, start, n);
        buf[used + n] = '\0';
        params[count++] = buf + used;
        used += n + 1;
    }
    return count;
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
static int s_query_get(const char *query, const char *name, char *out, size_t out_size)
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
static const char *s_role_name(s_access_t access)
{
    switch (access) {
    case S_PUBLIC:
        return "public";
    case S_ANY:
        return "any";
    case S_VIEWER:
        return "viewer";
    case S_OPERATOR:
        return "operator";
    case S_OWNER:
        return "owner";
    }
    return "?";
}

//  Parses "owner", "operator" or "viewer". Returns S_ANY for anything else.
static s_access_t s_role_parse(const char *name)
{
    if (!name)
        return S_ANY;
    if (strcmp(name, "owner") == 0)
        return S_OWNER;
    if (strcmp(name, "operator") == 0)
        return S_OPERATOR;
    if (strcmp(name, "viewer") == 0)
        return S_VIEWER;
    return S_ANY;
}

//  True for text shaped like one of our secrets: a client key (tg-), a
//  bootstrap, session or API token (tga_, tgs_, tgt_), followed by at
//  least 32 hex digits. Such text is masked wherever the audit log would
//  hold it, whatever field it sits in.
static bool s_looks_secret(const char *text)
{
    static const char *const prefixes[] = {"tg-", "tga_", "tgs_", "tgt_"};
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
    static const char *const names[] = {
        "secret",        "password",      "current_password", "new_password", "token",
        "key",           "authorization", "password_hash",    "token_hash",   "key_hash",
        "secret_sealed", "secret_nonce",  "admin_token",      "api_key",      NULL};
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
                (json_is_string(item) && s_looks_secret(json_string_value(item))))
                json_object_set_new(value, name, json_string("***"));
            else
                s_mask(item);
        }
    } else if (json_is_array(value)) {
        size_t index;
        json_t *item;
        json_array_foreach(value, index, item)
        {
            if (json_is_string(item) && s_looks_secret(json_string_value(item)))
                json_array_set_new(value, index, json_string("***"));
            else
                s_mask(item);
        }
    }
}

//  A masked deep copy of a JSON value as compact text, or NULL for NULL or
//  an empty object. Caller frees.
static char *s_masked_text(json_t *value)
{
    if (!value || (json_is_object(value) && json_object_size(value) == 0))
        return NULL;
    json_t *copy = json_deep_copy(value);
    if (json_is_string(copy) && s_looks_secret(json_string_value(copy))) {
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
static const char *s_password_problem(json_t *json)
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
static void s_new_token(const char *prefix, char *out, size_t out_size)
{
    uint8_t random[S_TOKEN_RANDOM];
    randombytes_buf(random, sizeof random);
    assert(out_size >= strlen(prefix) + 2 * S_TOKEN_RANDOM + 1);
    size_t used = (size_t)snprintf(out, out_size, "%s", prefix);
    for (size_t i = 0; i < sizeof random; i++)
        used += (size_t)snprintf(out + used, out_size - used, "%02x", random[i]);
    sodium_memzero(random, sizeof random);
}

//  Finds the token in `Bearer <token>` (scheme case-insensitive). Returns
//  a pointer into authorization, or NULL when there is none or it is
//  absurdly long.
static const char *s_bearer(const char *authorization)
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

static void s_respond(s_call_t *call, int status, char *body)
{
    free(call->response);
    call->status = status;
    call->response = body;
}

//  Answers with a JSON value (stolen) followed by a newline for curl users.
static void s_respond_json(s_call_t *call, int status, json_t *value)
{
    char *text = json_dumps(value, JSON_COMPACT);
    json_decref(value);
    assert(text);
    size_t length = strlen(text);
    char *line = realloc(text, length + 2);
    assert(line);
    memcpy(line + length, "\n", 2);
    s_respond(call, status, line);
}

//  Answers with JSON text PostgreSQL made, re-encoded compactly so every
//  answer has the same layout whoever built it.
static void s_respond_text(s_call_t *call, int status, const char *text)
{
    json_t *value = json_loads(text, JSON_DECODE_ANY, NULL);
    assert(value);
    s_respond_json(call, status, value);
}

//  Replaces every byte that is not part of valid UTF-8 with '?', in place:
//  error messages quote names from the request, which may be any bytes or
//  cut in the middle of a character, and JSON strings must be UTF-8.
static void s_utf8_clean(char *text)
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

static void s_error(s_call_t *call, int status, const char *type, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

//  Answers {"error":{"message":…,"type":…}}.
static void s_error(s_call_t *call, int status, const char *type, const char *format, ...)
{
    char message[512];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    s_utf8_clean(message);
    s_respond_json(call, status,
                   json_pack("{s:{s:s,s:s}}", "error", "message", message, "type", type));
}

#define s_invalid(call, ...) s_error(call, 400, "invalid_request_error", __VA_ARGS__)
#define s_not_found(call, ...) s_error(call, 404, "not_found", __VA_ARGS__)
#define s_conflict(call, ...) s_error(call, 409, "conflict", __VA_ARGS__)

//  Shortens a user-given name for an error message.
static const char *s_short(const char *text, char *buf, size_t size)
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
static void s_session_setup(PGconn *db)
{
    PGresult *result = PQexec(db, "SET statement_timeout = 10000; SET TIME ZONE 'UTC'; "
                                  "SET application_name = 'tollgate-admin'");
    PQclear(result);
}

//  Turns a failed statement into an answer. Constraint violations are the
//  client's doing (400/409) and are named by column; anything else is a 500
//  whose details go to the log only.
static void s_db_failed(s_call_t *call, PGresult *result)
{
    PGconn *db = call->self->db;
    if (PQstatus(db) == CONNECTION_BAD) {
        call->connection_lost = true;
        char reason[256];
        proto_db_error(db, reason, sizeof reason);
        log_error(NULL, "admin: database connection lost: %s", reason);
        s_error(call, 500, "api_error", "database unavailable");
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
            s_conflict(call, "this route already exists");
        else if (name)
            s_conflict(call, "the name '%s' is already taken", s_short(name, shown, sizeof shown));
        else
            s_conflict(call, "the name is already taken");
    } else if (strcmp(state, "23514") == 0 || strcmp(state, "23502") == 0) {
        //  CHECK constraints are named table_column_check.
        char name[128] = "";
        if (column)
            snprintf(name, sizeof name, "%s", column);
        else if (constraint) {
            const char *start = strchr(constraint, '_');
            snprintf(name, sizeof name, "%s", start ? start + 1 : constraint);
            char *suffix = strstr(name, "_check");
            if (suffix)
                *suffix = '\0';
        }
        s_invalid(call, "invalid value for '%s'", name);
    } else if (strcmp(state, "23503") == 0)
        s_conflict(call, "the object is referenced by another one or refers to one that is gone");
    else if (strncmp(state, "22", 2) == 0)
        //  Data exceptions (bad timestamp, integer out of range) quote the
        //  value, never the statement.
        s_invalid(call, "%s", primary ? primary : "invalid value");
    else {
        char reason[256];
        proto_db_error(db, reason, sizeof reason);
        log_error(NULL, "admin: %s %s: database error %s: %s", call->request->method,
                  call->route ? call->route->pattern : "?", state, reason);
        s_error(call, 500, "api_error", "database error");
    }
}

//  Runs one statement with text parameters (NULL is SQL NULL). Returns the
//  result (caller clears it), or NULL after setting the error answer.
static PGresult *s_sql(s_call_t *call, const char *sql, int count, const char *const *values)
{
    call->statements++;
    PGresult *result = PQexecParams(call->self->db, sql, count, NULL, values, NULL, NULL, 0);
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
static int s_sql_one(s_call_t *call, const char *sql, int count, const char *const *values,
                     char **out)
{
    PGresult *result = s_sql(call, sql, count, values);
    if (!result)
        return -1;
    int found = PQntuples(result) > 0;
    if (out)
        *out = found && !PQgetisnull(result, 0, 0) ? strdup(PQgetvalue(result, 0, 0)) : NULL;
    PQclear(result);
    return found;
}

static int s_begin(s_call_t *call)
{
    PGresult *result = s_sql(call, "BEGIN", 0, NULL);
    if (!result)
        return -1;
    PQclear(result);
    call->in_transaction = true;
    return 0;
}

static int s_audit_write(s_call_t *call);

//  Commits the handler's transaction, writing its audit row first, so a
//  change and its record are one.
static int s_commit(s_call_t *call)
{
    if (!call->audited && s_audit_write(call) != 0)
        return -1;
    call->in_transaction = false;
    PGresult *result = s_sql(call, "COMMIT", 0, NULL);
    if (!result)
        return -1;
    PQclear(result);
    return 0;
}

//  Answers with the JSON a query made, or 404 with `what` when it found no row.
static void s_respond_query(s_call_t *call, int status, const char *sql, int count,
                            const char *const *values, const char *what)
{
    char *text = NULL;
    int found = s_sql_one(call, sql, count, values, &text);
    if (found == 1 && text)
        s_respond_text(call, status, text);
    else if (found == 0)
        s_not_found(call, "%s not found", what);
    free(text);
}

//  Runs a query returning one JSON object for id and keeps it as the
//  audit's before (or after) image. A missing row leaves NULL. Returns 0,
//  or -1 after setting the error answer.
static int s_audit_image(s_call_t *call, bool after, const char *sql, const char *id)
{
    char *text = NULL;
    if (s_sql_one(call, sql, 1, (const char *[]){id}, &text) < 0)
        return -1;
    json_t **slot = after ? &call->audit_after : &call->audit_before;
    json_decref(*slot);
    *slot = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
    free(text);
    if (!call->audit_target[0])
        snprintf(call->audit_target, sizeof call->audit_target, "%s", id);
    return 0;
}
#define s_before(call, sql, id) s_audit_image(call, false, sql, id)
#define s_after(call, sql, id) s_audit_image(call, true, sql, id)

//  Writes the audit row of the change in progress (inside its transaction).
//  Everything that could hold a secret goes through s_masked_text.
static int s_audit_write(s_call_t *call)
{
    static const char *const kinds[] = {[S_WHO_NONE] = "anonymous",
                                        [S_WHO_BOOTSTRAP] = "bootstrap",
                                        [S_WHO_USER] = "user",
                                        [S_WHO_TOKEN] = "token"};
    call->audited = true;
    const s_who_t *who = &call->who;
    const char *action =
        call->audit_action ? call->audit_action
                           : (call->route && call->route->action ? call->route->action : "change");
    char target[128] = "";
    if (call->audit_target[0])
        snprintf(target, sizeof target, "%s", call->audit_target);
    else if (call->route && call->params[0])
        snprintf(target, sizeof target, "%s",
                 s_looks_secret(call->params[0]) ? "***" : call->params[0]);
    if (s_looks_secret(target))
        snprintf(target, sizeof target, "***");
    s_utf8_clean(target);
    char *request = s_masked_text(call->body);
    char *before = s_masked_text(call->audit_before);
    char *after = s_masked_text(call->audit_after);
    const char *params[] = {who->kind == S_WHO_NONE ? "anonymous" : who->actor,
                            kinds[who->kind],
                            who->kind == S_WHO_NONE ? NULL : s_role_name(who->role),
                            call->request->client_ip,
                            call->request->request_id,
                            action,
                            call->request->method ? call->request->method : "",
                            call->route ? call->route->pattern : "",
                            target[0] ? target : NULL,
                            request,
                            before,
                            after};
    PGresult *result = s_sql(call,
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

// ---------------------------------------------------------------------------
//  The JSON each kind of object has, built by PostgreSQL. Aliases: p
//  providers, k provider_keys or api_keys, m models, r routes (with rp its
//  provider), a accounts, u usage.

#define S_PROVIDER_JSON                                                                            \
    "json_build_object('id', p.id, 'name', p.name, 'protocol', p.protocol, "                       \
    "'base_url', p.base_url, 'priority', p.priority, 'weight', p.weight, 'status', p.status, "     \
    "'active_keys', (SELECT count(*) FROM provider_keys pk WHERE pk.provider_id = p.id "           \
    "AND pk.status = 'active'), 'created_at', p.created_at, 'updated_at', p.updated_at)"

#define S_PROVIDER_KEY_JSON                                                                        \
    "json_build_object('id', k.id, 'provider_id', k.provider_id, 'provider', p.name, "             \
    "'name', k.name, 'secret_hint', k.secret_hint, 'priority', k.priority, "                       \
    "'weight', k.weight, 'status', k.status, 'disabled_reason', k.disabled_reason, "               \
    "'multiplier_ppm', k.multiplier_ppm, 'capabilities', to_json(k.capabilities), "                \
    "'max_rps', k.max_rps, 'max_concurrent', k.max_concurrent, 'created_at', k.created_at, "       \
    "'updated_at', k.updated_at)"
#define S_PROVIDER_KEY_FROM " FROM provider_keys k JOIN providers p ON p.id = k.provider_id "

#define S_ROUTE_JSON                                                                               \
    "json_build_object('id', r.id, 'model_id', r.model_id, 'provider_id', r.provider_id, "         \
    "'provider', rp.name, 'upstream_model', r.upstream_model, 'priority', r.priority, "            \
    "'weight', r.weight, 'status', r.status, 'created_at', r.created_at)"
#define S_ROUTE_FROM " FROM routes r JOIN providers rp ON rp.id = r.provider_id "

#define S_MODEL_JSON                                                                               \
    "json_build_object('id', m.id, 'name', m.name, 'status', m.status, "                           \
    "'price_in_micros', m.price_in_micros, 'price_out_micros', m.price_out_micros, "               \
    "'price_cache_read_micros', m.price_cache_read_micros, "                                       \
    "'price_cache_write_micros', m.price_cache_write_micros, "                                     \
    "'scheduling', m.scheduling, 'capabilities', to_json(m.capabilities), "                        \
    "'routes', coalesce((SELECT json_agg(" S_ROUTE_JSON                                            \
    " ORDER BY r.priority DESC, r.id)" S_ROUTE_FROM "WHERE r.model_id = m.id), '[]'::json), "      \
    "'created_at', m.created_at, 'updated_at', m.updated_at)"

#define S_ACCOUNT_JSON                                                                             \
    "json_build_object('id', a.id, 'name', a.name, 'status', a.status, "                           \
    "'balance_micros', a.balance_micros, 'currency', a.currency, "                                 \
    "'allowed_models', to_json(a.allowed_models), 'rpm_limit', a.rpm_limit, "                      \
    "'tpm_limit', a.tpm_limit, 'concurrency_limit', a.concurrency_limit, "                         \
    "'daily_spend_micros', a.daily_spend_micros, "                                                 \
    "'monthly_spend_micros', a.monthly_spend_micros, "                                             \
    "'force_capabilities', to_json(a.force_capabilities), "                                        \
    "'created_at', a.created_at, 'updated_at', a.updated_at)"

//  Never the key, never its hash.
#define S_API_KEY_JSON                                                                             \
    "json_build_object('id', k.id, 'account_id', k.account_id, 'account', a.name, "                \
    "'name', k.name, 'prefix', k.key_prefix, 'status', k.status, "                                 \
    "'models', to_json(k.allowed_models), 'expires_at', k.expires_at, "                            \
    "'force_capabilities', to_json(k.force_capabilities), "                                        \
    "'created_at', k.created_at, 'updated_at', k.updated_at)"
#define S_API_KEY_FROM " FROM api_keys k JOIN accounts a ON a.id = k.account_id "

#define S_USAGE_JSON                                                                               \
    "json_build_object('request_id', u.request_id, 'started_at', u.started_at, "                   \
    "'recorded_at', u.recorded_at, 'account_id', u.account_id, 'api_key_id', u.api_key_id, "       \
    "'model', u.model, 'provider_id', u.provider_id, 'provider_key_id', u.provider_key_id, "       \
    "'upstream_model', u.upstream_model, 'status', u.status, 'tokens_in', u.tokens_in, "           \
    "'tokens_out', u.tokens_out, 'tokens_cache_read', u.tokens_cache_read, "                       \
    "'tokens_cache_write', u.tokens_cache_write, 'cost_micros', u.cost_micros, "                   \
    "'latency_ms', u.latency_ms, 'ttfb_ms', u.ttfb_ms, 'attempts', u.attempts, "                   \
    "'estimated', u.estimated)"

// ---------------------------------------------------------------------------
//  Request fields: one table per body shape, shared by create and PATCH

typedef enum {
    S_F_TEXT,   //  string of min..max bytes, no control characters
    S_F_PNAME,  //  provider name ([A-Za-z0-9_.-]{1,100})
    S_F_ENUM,   //  one of `choices`
    S_F_INT,    //  integer within min..max
    S_F_MICROS, //  money: `field` as a decimal string (or whole units), or the
                //  integer micro-units under the name `micros`
    S_F_NAMES,  //  array of names, or null for "any"
    S_F_TIME,   //  a timestamp PostgreSQL reads (ISO 8601)
    S_F_URL,    //  http(s) URL; trailing slashes dropped
    S_F_REF,    //  a name or an integer id of another object
    S_F_ANY,    //  any JSON; the handler checks it
} s_kind_t;

typedef struct {
    const char *field;          //  name in the JSON body
    const char *column;         //  column it sets, for PATCH; NULL when not patchable
    s_kind_t kind;              //  what values are accepted
    int64_t min, max;           //  bounds (lengths for TEXT)
    const char *const *choices; //  NULL-terminated, for ENUM
    bool nullable;              //  JSON null is accepted (and clears the column)
    const char *micros;         //  for MICROS: the name of the integer micro-units form
    bool required;              //  must be present
} s_field_t;

typedef struct {
    bool present;     //  the body had this field
    const char *text; //  value as a parameter; NULL for SQL NULL
    char buf[32];     //  storage for numbers
    char *owned;      //  storage that must be freed
    json_t *json;     //  the raw value (borrowed from the body)
} s_value_t;

static const char *const s_statuses[] = {"active", "disabled", NULL};
static const char *const s_key_statuses[] = {"active", "disabled", "revoked", NULL};
static const char *const s_protocols[] = {"openai", "openai-responses", "anthropic", "gemini",
                                          NULL};

static void s_values_free(s_value_t *values, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(values[i].owned);
}

//  Reads a money field from either of its two names into value->buf.
static int s_read_micros(s_call_t *call, const s_field_t *spec, s_value_t *value)
{
    json_t *decimal = json_object_get(call->body, spec->field);
    json_t *micros = json_object_get(call->body, spec->micros);
    if (decimal && micros) {
        s_invalid(call, "give either '%s' or '%s', not both", spec->field, spec->micros);
        return -1;
    }
    const char *name = decimal ? spec->field : spec->micros;
    json_t *json = decimal ? decimal : micros;
    value->present = true;
    value->json = json;
    if (json_is_null(json)) {
        if (!spec->nullable) {
            s_invalid(call, "'%s' cannot be null", name);
            return -1;
        }
        return 0;
    }
    int64_t amount = 0;
    bool ok = false;
    if (decimal && json_is_string(json))
        ok = s_parse_micros(json_string_value(json), spec->min < 0, &amount) == 0;
    else if (decimal && json_is_integer(json)) {
        json_int_t units = json_integer_value(json);
        ok = units <= S_MONEY_MAX / S_MICROS && units >= -(S_MONEY_MAX / S_MICROS);
        amount = (int64_t)units * S_MICROS;
    } else if (micros && json_is_integer(json)) {
        amount = json_integer_value(json);
        ok = true;
    }
    if (!ok) {
        s_invalid(call,
                  decimal ? "'%s' must be a decimal string with at most 6 decimal places, "
                            "such as \"2.50\""
                          : "'%s' must be an integer",
                  name);
        return -1;
    }
    if (amount < spec->min || amount > spec->max) {
        s_invalid(call, "'%s' is out of range", name);
        return -1;
    }
    snprintf(value->buf, sizeof value->buf, "%" PRId64, amount);
    value->text = value->buf;
    return 0;
}

//  Checks a JSON array of names and keeps it as JSON text for SQL.
static int s_read_names(s_call_t *call, const s_field_t *spec, json_t *json, s_value_t *value)
{
    if (!json_is_array(json) || json_array_size(json) > S_LIST_MAX) {
        s_invalid(call, "'%s' must be an array of names (or null for any)", spec->field);
        return -1;
    }
    size_t index;
    json_t *item;
    json_array_foreach(json, index, item)
    {
        const char *name = json_string_value(item);
        if (!name || !*name || strlen(name) > 200 || !s_printable(name)) {
            s_invalid(call, "'%s' must hold names of 1 to 200 printable characters", spec->field);
            return -1;
        }
    }
    value->owned = json_dumps(json, JSON_COMPACT);
    value->text = value->owned;
    return 0;
}

//  Reads one field. Returns 0 (present or not), or -1 after setting the error answer.
static int s_read_field(s_call_t *call, const s_field_t *spec, s_value_t *value)
{
    if (spec->kind == S_F_MICROS)
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
        s_invalid(call, "'%s' cannot be null", spec->field);
        return -1;
    }
    const char *text = json_string_value(json);
    switch (spec->kind) {
    case S_F_TEXT:
        if (!text || (int64_t)strlen(text) < spec->min || (int64_t)strlen(text) > spec->max ||
            !s_printable(text)) {
            s_invalid(call,
                      "'%s' must be a string of %" PRId64 " to %" PRId64 " printable characters",
                      spec->field, spec->min, spec->max);
            return -1;
        }
        break;
    case S_F_PNAME:
        if (!text || !s_provider_name_valid(text)) {
            s_invalid(call, "'%s' must be 1 to 100 of A-Z a-z 0-9 _ . -", spec->field);
            return -1;
        }
        break;
    case S_F_ENUM: {
        bool ok = false;
        for (int i = 0; text && spec->choices[i]; i++)
            ok = ok || strcmp(text, spec->choices[i]) == 0;
        if (!ok) {
            char list[128] = "";
            for (int i = 0; spec->choices[i]; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                         spec->choices[i]);
            s_invalid(call, "'%s' must be one of %s", spec->field, list);
            return -1;
        }
        break;
    }
    case S_F_INT:
        if (!json_is_integer(json) || json_integer_value(json) < spec->min ||
            json_integer_value(json) > spec->max) {
            s_invalid(call, "'%s' must be an integer from %" PRId64 " to %" PRId64, spec->field,
                      spec->min, spec->max);
            return -1;
        }
        snprintf(value->buf, sizeof value->buf, "%" PRId64, (int64_t)json_integer_value(json));
        text = value->buf;
        break;
    case S_F_NAMES:
        return s_read_names(call, spec, json, value);
    case S_F_TIME:
        if (!text || !*text || strlen(text) > 64 || !s_printable(text)) {
            s_invalid(call, "'%s' must be a timestamp such as \"2030-01-31T00:00:00Z\"",
                      spec->field);
            return -1;
        }
        break;
    case S_F_URL: {
        if (!text || !s_url_valid(text)) {
            s_invalid(call, "'%s' must be an http:// or https:// URL", spec->field);
            return -1;
        }
        value->owned = strdup(text);
        size_t length = strlen(value->owned);
        while (length > 8 && value->owned[length - 1] == '/')
            value->owned[--length] = '\0';
        text = value->owned;
        break;
    }
    case S_F_REF:
        if (json_is_integer(json) && json_integer_value(json) > 0) {
            snprintf(value->buf, sizeof value->buf, "%" PRId64, (int64_t)json_integer_value(json));
            text = value->buf;
        } else if (!text || !*text || strlen(text) > 200) {
            s_invalid(call, "'%s' must be a name or an id", spec->field);
            return -1;
        }
        break;
    case S_F_ANY:
        break;
    case S_F_MICROS:
        assert(false);
    }
    value->text = text;
    return 0;
}

//  True when `key` names a field of the table (either name of a money field).
static bool s_field_known(const s_field_t *fields, const char *key)
{
    for (const s_field_t *spec = fields; spec->field; spec++)
        if (strcmp(spec->field, key) == 0 ||
            (spec->kind == S_F_MICROS && strcmp(spec->micros, key) == 0))
            return true;
    return false;
}

//  Reads every field of a body: rejects unknown fields (typos should not be
//  silently ignored), missing required ones and malformed values. values
//  has one slot per spec. Returns 0, or -1 after setting the error answer.
static int s_read(s_call_t *call, const s_field_t *fields, s_value_t *values)
{
    const char *key;
    json_t *json;
    json_object_foreach(call->body, key, json)
    {
        (void)json;
        if (!s_field_known(fields, key)) {
            char name[64];
            s_invalid(call, "unknown field '%s'", s_short(key, name, sizeof name));
            return -1;
        }
    }
    for (size_t i = 0; fields[i].field; i++) {
        assert(i < S_MAX_FIELDS);
        if (s_read_field(call, &fields[i], &values[i]) != 0)
            return -1;
        if (fields[i].required && !values[i].present) {
            s_invalid(call, "'%s' is required", fields[i].field);
            return -1;
        }
    }
    return 0;
}

//  Index of a field in its table.
static size_t s_field_index(const s_field_t *fields, const char *field)
{
    for (size_t i = 0; fields[i].field; i++)
        if (strcmp(fields[i].field, field) == 0)
            return i;
    assert(false);
    return 0;
}
#define S_VALUE(fields, values, name) (&(values)[s_field_index(fields, name)])

//  Updates row `id` of `table` with every present field that has a column.
//  The SET list is built here, but only from column names in our field
//  tables; every value is a parameter. Returns rows changed (0 when none
//  matched or nothing was given), or -1 after setting the error answer.
static int s_patch(s_call_t *call, const char *table, bool has_updated_at, const s_field_t *fields,
                   s_value_t *values, const char *id)
{
    char sql[2048];
    const char *params[S_MAX_FIELDS + 1] = {id};
    int count = 1;
    int used = snprintf(sql, sizeof sql, "UPDATE %s SET %s", table,
                        has_updated_at ? "updated_at = now()" : "id = id");
    for (size_t i = 0; fields[i].field; i++) {
        if (!values[i].present || !fields[i].column)
            continue;
        params[count++] = values[i].text;
        const char *column = fields[i].column;
        switch (fields[i].kind) {
        case S_F_INT:
        case S_F_MICROS:
            used += snprintf(sql + used, sizeof sql - (size_t)used, ", %s = $%d::bigint", column,
                             count);
            break;
        case S_F_TIME:
            used += snprintf(sql + used, sizeof sql - (size_t)used, ", %s = $%d::timestamptz",
                             column, count);
            break;
        case S_F_NAMES:
            used += snprintf(sql + used, sizeof sql - (size_t)used,
                             ", %s = CASE WHEN $%d::json IS NULL THEN NULL "
                             "ELSE ARRAY(SELECT json_array_elements_text($%d::json)) END",
                             column, count, count);
            break;
        default:
            used += snprintf(sql + used, sizeof sql - (size_t)used, ", %s = $%d", column, count);
        }
        assert((size_t)used < sizeof sql);
    }
    if (count == 1)
        return 0;
    snprintf(sql + used, sizeof sql - (size_t)used, " WHERE id = $1::bigint");
    PGresult *result = s_sql(call, sql, count, params);
    if (!result)
        return -1;
    int rows = atoi(PQcmdTuples(result));
    PQclear(result);
    return rows;
}

//  True for a capability tag: 1 to 64 of a-z 0-9 . _ - . Tags travel
//  comma-separated in ROUTE and are compared byte for byte, so commas,
//  spaces and upper case (a "Vision" that silently misses "vision") are out.
static bool s_tag_valid(const char *tag)
{
    size_t length = strlen(tag);
    if (length < 1 || length > S_TAG_MAX)
        return false;
    for (const char *c = tag; *c; c++)
        if (!islower((unsigned char)*c) && !isdigit((unsigned char)*c) && *c != '.' && *c != '_' &&
            *c != '-')
            return false;
    return true;
}

//  Checks a JSON array of capability tags (NULL: not given). Returns 0, or
//  -1 after setting the answer.
static int s_tags_check(s_call_t *call, const char *field, json_t *tags)
{
    size_t index;
    json_t *item;
    json_array_foreach(tags, index, item)
    {
        if (!s_tag_valid(json_string_value(item))) {
            s_invalid(call, "'%s' must hold tags of 1 to %d characters of a-z 0-9 . _ -", field,
                      S_TAG_MAX);
            return -1;
        }
    }
    return 0;
}

//  Number of present fields.
static int s_present(const s_field_t *fields, const s_value_t *values)
{
    int count = 0;
    for (size_t i = 0; fields[i].field; i++)
        count += values[i].present;
    return count;
}

// ---------------------------------------------------------------------------
//  Finding objects by name or id

typedef enum { S_PROVIDER, S_ACCOUNT, S_MODEL, S_USER } s_table_t;

//  Finds a provider, account or model by name, else (when the text is
//  all digits) by id; a name wins over an id. Writes the id as text into
//  id (at least 24 bytes). Returns 0, or -1 after setting the answer (404).
static int s_resolve(s_call_t *call, s_table_t table, const char *ident, char *id)
{
    static const char *const sql[] = {
        [S_PROVIDER] = "SELECT id FROM providers WHERE name = $1 OR id = $2::bigint "
                       "ORDER BY name = $1 DESC LIMIT 1",
        [S_ACCOUNT] = "SELECT id FROM accounts WHERE name = $1 OR id = $2::bigint "
                      "ORDER BY name = $1 DESC LIMIT 1",
        [S_MODEL] = "SELECT id FROM models WHERE name = $1 OR id = $2::bigint "
                    "ORDER BY name = $1 DESC LIMIT 1",
        [S_USER] = "SELECT id FROM admin_users WHERE username = $1 OR id = $2::bigint "
                   "ORDER BY username = $1 DESC LIMIT 1",
    };
    static const char *const what[] = {"provider", "account", "model", "admin user"};
    const char *params[] = {ident, s_is_id(ident) ? ident : NULL};
    char *found = NULL;
    int rc = s_sql_one(call, sql[table], 2, params, &found);
    if (rc == 1 && found) {
        snprintf(id, 24, "%s", found);
        free(found);
        return 0;
    }
    free(found);
    if (rc == 0) {
        char name[104];
        s_not_found(call, "%s '%s' not found", what[table], s_short(ident, name, sizeof name));
    }
    return -1;
}

//  Checks that a path parameter is a numeric id; answers 404 when not.
static int s_path_id(s_call_t *call, const char *what)
{
    if (s_is_id(call->params[0]))
        return 0;
    s_not_found(call, "%s not found", what);
    return -1;
}

// ---------------------------------------------------------------------------
//  Providers

static const s_field_t s_provider_fields[] = {
    {.field = "name", .column = NULL, .kind = S_F_PNAME, .required = true},
    {.field = "protocol",
     .column = NULL,
     .kind = S_F_ENUM,
     .choices = s_protocols,
     .required = true},
    {.field = "base_url", .column = "base_url", .kind = S_F_URL, .required = true},
    {.field = "priority",
     .column = "priority",
     .kind = S_F_INT,
     .min = -S_INT_MAX,
     .max = S_INT_MAX},
    {.field = "weight", .column = "weight", .kind = S_F_INT, .min = 0, .max = S_INT_MAX},
    {.field = NULL}};

static const s_field_t s_provider_patch_fields[] = {
    {.field = "status", .column = "status", .kind = S_F_ENUM, .choices = s_statuses},
    {.field = "priority",
     .column = "priority",
     .kind = S_F_INT,
     .min = -S_INT_MAX,
     .max = S_INT_MAX},
    {.field = "weight", .column = "weight", .kind = S_F_INT, .min = 0, .max = S_INT_MAX},
    {.field = "base_url", .column = "base_url", .kind = S_F_URL},
    {.field = NULL}};

#define S_PROVIDER_BY_ID "SELECT " S_PROVIDER_JSON " FROM providers p WHERE p.id = $1::bigint"

static void s_provider_create(s_call_t *call)
{
    const s_field_t *f = s_provider_fields;
    s_value_t v[S_MAX_FIELDS] = {{0}};
    char *id = NULL;
    if (s_read(call, f, v) == 0 && s_begin(call) == 0) {
        const char *params[] = {S_VALUE(f, v, "name")->text, S_VALUE(f, v, "protocol")->text,
                                S_VALUE(f, v, "base_url")->text, S_VALUE(f, v, "priority")->text,
                                S_VALUE(f, v, "weight")->text};
        if (s_sql_one(call,
                      "INSERT INTO providers (name, protocol, base_url, priority, weight) "
                      "VALUES ($1, $2, $3, coalesce($4::int, 0), coalesce($5::int, 1)) "
                      "RETURNING id",
                      5, params, &id) == 1 &&
            s_after(call, S_PROVIDER_BY_ID, id) == 0 && s_commit(call) == 0)
            s_respond_query(call, 201, S_PROVIDER_BY_ID, 1, (const char *[]){id}, "provider");
    }
    free(id);
    s_values_free(v, S_MAX_FIELDS);
}

static void s_provider_list(s_call_t *call)
{
    s_respond_query(call, 200,
                    "SELECT json_build_object('data', coalesce(json_agg(" S_PROVIDER_JSON
                    " ORDER BY p.priority DESC, p.id), '[]'::json)) FROM providers p",
                    0, NULL, "providers");
}

static void s_provider_get(s_call_t *call)
{
    char id[24];
    if (s_resolve(call, S_PROVIDER, call->params[0], id) == 0)
        s_respond_query(call, 200, S_PROVIDER_BY_ID, 1, (const char *[]){id}, "provider");
}

//  PATCH, or DELETE with a fixed change (status = disabled).
static void s_provider_change(s_call_t *call, json_t *forced)
{
    char id[24];
    s_value_t v[S_MAX_FIELDS] = {{0}};
    if (forced) {
        json_decref(call->body);
        call->body = forced;
    }
    if (s_resolve(call, S_PROVIDER, call->params[0], id) == 0 &&
        s_read(call, s_provider_patch_fields, v) == 0) {
        if (s_present(s_provider_patch_fields, v) == 0)
            s_invalid(call, "nothing to change");
        else if (s_begin(call) == 0 && s_before(call, S_PROVIDER_BY_ID, id) == 0 &&
                 s_patch(call, "providers", true, s_provider_patch_fields, v, id) >= 0 &&
                 s_after(call, S_PROVIDER_BY_ID, id) == 0 && s_commit(call) == 0)
            s_respond_query(call, 200, S_PROVIDER_BY_ID, 1, (const char *[]){id}, "provider");
    }
    s_values_free(v, S_MAX_FIELDS);
}

static void s_provider_patch(s_call_t *call)
{
    s_provider_change(call, NULL);
}

static void s_provider_delete(s_call_t *call)
{
    s_provider_change(call, json_pack("{s:s}", "status", "disabled"));
}

// ---------------------------------------------------------------------------
//  Provider keys

static const s_field_t s_provider_key_fields[] = {
    {.field = "secret", .column = NULL, .kind = S_F_TEXT, .min = 1, .max = 8192, .required = true},
    {.field = "name", .column = NULL, .kind = S_F_TEXT, .min = 0, .max = 200},
    {.field = "priority", .column = NULL, .kind = S_F_INT, .min = -S_INT_MAX, .max = S_INT_MAX},
    {.field = "weight", .column = NULL, .kind = S_F_INT, .min = 0, .max = S_INT_MAX},
    {.field = "multiplier_ppm",
     .column = NULL,
     .kind = S_F_INT,
     .min = 0,
     .max = S_INT_MAX * INT64_C(1000)},
    {.field = NULL}};

static const s_field_t s_provider_key_patch_fields[] = {
    {.field = "status", .column = "status", .kind = S_F_ENUM, .choices = s_statuses},
    {.field = "disabled_reason",
     .column = "disabled_reason",
     .kind = S_F_TEXT,
     .min = 0,
     .max = 1000,
     .nullable = true},
    {.field = "name", .column = "name", .kind = S_F_TEXT, .min = 0, .max = 200},
    {.field = "priority",
     .column = "priority",
     .kind = S_F_INT,
     .min = -S_INT_MAX,
     .max = S_INT_MAX},
    {.field = "weight", .column = "weight", .kind = S_F_INT, .min = 0, .max = S_INT_MAX},
    {.field = "multiplier_ppm",
     .column = "multiplier_ppm",
     .kind = S_F_INT,
     .min = 0,
     .max = S_INT_MAX * INT64_C(1000)},
    {.field = "capabilities", .column = "capabilities", .kind = S_F_NAMES},
    {.field = "max_rps",
     .column = "max_rps",
     .kind = S_F_INT,
     .min = 1,
     .max = S_INT_MAX,
     .nullable = true},
    {.field = "max_concurrent",
     .column = "max_concurrent",
     .kind = S_F_INT,
     .min = 1,
     .max = S_INT_MAX,
     .nullable = true},
    {.field = NULL}};

#define S_PROVIDER_KEY_BY_ID                                                                       \
    "SELECT " S_PROVIDER_KEY_JSON S_PROVIDER_KEY_FROM "WHERE k.id = $1::bigint"

//  "…" and the secret's last 4 characters, or just "…" for a secret so
//  short that 4 characters would give too much of it away.
static void s_secret_hint(const char *secret, char *hint, size_t size)
{
    size_t length = strlen(secret);
    snprintf(hint, size, "\u2026%s", length >= S_HINT_MIN_SECRET ? secret + length - 4 : "");
}

//  Seals a secret under secret_key into bytea hex literals ("\x…") for
//  PostgreSQL. Returns 0, or -1 after setting the answer.
static int s_seal(s_call_t *call, const char *secret, char **nonce_hex, char **sealed_hex)
{
    const char *key = proto_config_str(call->self->config, "secret_key");
    if (!key || !*key) {
        s_error(call, 500, "api_error", "secret_key is not configured");
        return -1;
    }
    size_t length = strlen(secret);
    size_t nonce_size = proto_crypto_nonce_size();
    size_t sealed_size = length + proto_crypto_overhead();
    uint8_t *nonce = malloc(nonce_size), *sealed = malloc(sealed_size);
    assert(nonce && sealed);
    int rc = proto_crypto_seal(key, secret, length, nonce, sealed);
    if (rc == 0) {
        *nonce_hex = malloc(nonce_size * 2 + 3);
        *sealed_hex = malloc(sealed_size * 2 + 3);
        assert(*nonce_hex && *sealed_hex);
        strcpy(*nonce_hex, "\\x");
        strcpy(*sealed_hex, "\\x");
        for (size_t i = 0; i < nonce_size; i++)
            sprintf(*nonce_hex + 2 + i * 2, "%02x", nonce[i]);
        for (size_t i = 0; i < sealed_size; i++)
            sprintf(*sealed_hex + 2 + i * 2, "%02x", sealed[i]);
    } else {
        log_error(NULL, "admin: secret_key is not 64 hex digits; cannot seal provider secrets");
        s_error(call, 500, "api_error", "secret_key is not valid");
    }
    free(nonce);
    free(sealed);
    return rc;
}

static void s_provider_key_create(s_call_t *call)
{
    const s_field_t *f = s_provider_key_fields;
    s_value_t v[S_MAX_FIELDS] = {{0}};
    char provider[24], hint[16];
    char *nonce = NULL, *sealed = NULL, *id = NULL;
    if (s_resolve(call, S_PROVIDER, call->params[0], provider) == 0 && s_read(call, f, v) == 0) {
        const char *secret = S_VALUE(f, v, "secret")->text;
        s_secret_hint(secret, hint, sizeof hint);
        if (s_seal(call, secret, &nonce, &sealed) == 0 && s_begin(call) == 0) {
            const char *params[] = {provider,
                                    S_VALUE(f, v, "name")->text,
                                    sealed,
                                    nonce,
                                    hint,
                                    S_VALUE(f, v, "priority")->text,
                                    S_VALUE(f, v, "weight")->text,
                                    S_VALUE(f, v, "multiplier_ppm")->text};
            if (s_sql_one(call,
                          "INSERT INTO provider_keys (provider_id, name, secret_sealed, "
                          "secret_nonce, secret_hint, priority, weight, multiplier_ppm) "
                          "VALUES ($1, coalesce($2, ''), $3::bytea, $4::bytea, $5, "
                          "coalesce($6::int, 0), coalesce($7::int, 1), "
                          "coalesce($8::bigint, 1000000)) RETURNING id",
                          8, params, &id) == 1 &&
                s_after(call, S_PROVIDER_KEY_BY_ID, id) == 0 && s_commit(call) == 0)
                s_respond_query(call, 201, S_PROVIDER_KEY_BY_ID, 1, (const char *[]){id},
                                "provider key");
        }
    }
    free(id);
    free(nonce);
    free(sealed);
    s_values_free(v, S_MAX_FIELDS);
}

static void s_provider_key_list(s_call_t *call)
{
    char provider[24];
    if (s_resolve(call, S_PROVIDER, call->params[0], provider) == 0)
        s_respond_query(call, 200,
                        "SELECT json_build_object('data', coalesce(json_agg(" S_PROVIDER_KEY_JSON
                        " ORDER BY k.priority DESC, k.id), '[]'::json))" S_PROVIDER_KEY_FROM
                        "WHERE k.provider_id = $1::bigint",
                        1, (const char *[]){provider}, "provider keys");
}

static void s_provider_key_get(s_call_t *call)
{
    if (s_path_id(call, "provider key") == 0)
        s_respond_query(call, 200, S_PROVIDER_KEY_BY_ID, 1, call->params, "provider key");
}

static void s_provider_key_change(s_call_t *call, json_t *forced)
{
    s_value_t v[S_MAX_FIELDS] = {{0}};
    const s_field_t *f = s_provider_key_patch_fields;
    if (forced) {
        json_decref(call->body);
        call->body = forced;
    }
    if (s_path_id(call, "provider key") != 0 || s_read(call, f, v) != 0 ||
        s_tags_check(call, "capabilities", S_VALUE(f, v, "capabilities")->json) != 0)
        ;
    else if (s_present(f, v) == 0)
        s_invalid(call, "nothing to change");
    else if (s_begin(call) == 0 && s_before(call, S_PROVIDER_KEY_BY_ID, call->params[0]) == 0) {
        int rows = s_patch(call, "provider_keys", true, f, v, call->params[0]);
        if (rows == 0)
            s_not_found(call, "provider key not found");
        else if (rows > 0 && s_after(call, S_PROVIDER_KEY_BY_ID, call->params[0]) == 0 &&
                 s_commit(call) == 0)
            s_respond_query(call, 200, S_PROVIDER_KEY_BY_ID, 1, call->params, "provider key");
    }
    s_values_free(v, S_MAX_FIELDS);
}

static void s_provider_key_patch(s_call_t *call)
{
    s_provider_key_change(call, NULL);
}

static void s_provider_key_delete(s_call_t *call)
{
    s_provider_key_change(call, json_pack("{s:s}", "status", "disabled"));
}

// ---------------------------------------------------------------------------
//  Models and routes

#define S_PRICE_FIELDS                                                                             \
    {.field = "price_in",                                                                          \
     .column = "price_in_micros",                                                                  \
     .kind = S_F_MICROS,                                                                           \
     .min = 0,                                                                                     \
     .max = S_PRICE_MAX,                                                                           \
     .micros = "price_in_micros"},                                                                 \
        {.field = "price_out",                                                                     \
         .column = "price_out_micros",                                                             \
         .kind = S_F_MICROS,                                                                       \
         .min = 0,                                                                                 \
         .max = S_PRICE_MAX,                                                                       \
         .micros = "price_out_micros"},                                                            \
        {.field = "price_cache_read",                                                              \
         .column = "price_cache_read_micros",                                                      \
         .kind = S_F_MICROS,                                                                       \
         .min = 0,                                                                                 \
         .max = S_PRICE_MAX,                                                                       \
         .micros = "price_cache_read_micros"},                                                     \
    {                                                                                              \
        .field = "price_cache_write", .column = "price_cache_write_micros", .kind = S_F_MICROS,    \
        .min = 0, .max = S_PRICE_MAX, .micros = "price_cache_write_micros"                         \
    }

static const s_field_t s_model_fields[] = {
    {.field = "name", .column = NULL, .kind = S_F_TEXT, .min = 1, .max = 200, .required = true},
    S_PRICE_FIELDS,
    {.field = "routes", .column = NULL, .kind = S_F_ANY},
    {.field = NULL}};

static const char *const s_schedulings[] = {"priority", "key_priority", "weighted", "latency",
                                            "cost",     "reliability",  NULL};

static const s_field_t s_model_patch_fields[] = {
    {.field = "status", .column = "status", .kind = S_F_ENUM, .choices = s_statuses},
    S_PRICE_FIELDS,
    {.field = "scheduling", .column = "scheduling", .kind = S_F_ENUM, .choices = s_schedulings},
    {.field = "capabilities", .column = "capabilities", .kind = S_F_NAMES},
    {.field = NULL}};

static const s_field_t s_route_fields[] = {
    {.field = "provider", .column = NULL, .kind = S_F_REF, .required = true},
    {.field = "upstream_model", .column = NULL, .kind = S_F_TEXT, .min = 1, .max = 127},
    {.field = "priority", .column = NULL, .kind = S_F_INT, .min = -S_INT_MAX, .max = S_INT_MAX},
    {.field = "weight", .column = NULL, .kind = S_F_INT, .min = 0, .max = S_INT_MAX},
    {.field = NULL}};

static const s_field_t s_route_patch_fields[] = {
    {.field = "status", .column = "status", .kind = S_F_ENUM, .choices = s_statuses},
    {.field = "upstream_model", .column = "upstream_model", .kind = S_F_TEXT, .min = 1, .max = 127},
    {.field = "priority",
     .column = "priority",
     .kind = S_F_INT,
     .min = -S_INT_MAX,
     .max = S_INT_MAX},
    {.field = "weight", .column = "weight", .kind = S_F_INT, .min = 0, .max = S_INT_MAX},
    {.field = NULL}};

#define S_MODEL_BY_ID "SELECT " S_MODEL_JSON " FROM models m WHERE m.id = $1::bigint"
#define S_ROUTE_BY_ID "SELECT " S_ROUTE_JSON S_ROUTE_FROM "WHERE r.id = $1::bigint"

//  Adds one route (a JSON object) to a model inside the caller's
//  transaction. `where` prefixes error messages ("routes[2]: "). Returns the
//  new id (caller frees), or NULL after setting the answer.
static char *s_route_add(s_call_t *call, const char *model_id, const char *model_name,
                         json_t *route, const char *where)
{
    const s_field_t *f = s_route_fields;
    s_value_t v[S_MAX_FIELDS] = {{0}};
    json_t *saved = call->body;
    call->body = route;
    char *id = NULL;
    char provider[24];
    int rc = json_is_object(route) ? s_read(call, f, v) : -1;
    call->body = saved;
    if (!json_is_object(route))
        s_invalid(call, "%sa route must be an object", where);
    else if (rc != 0) {
        //  Prefix the message s_read wrote with the route's position.
        json_t *answer = json_loads(call->response, 0, NULL);
        json_t *error = json_object_get(answer, "error");
        char message[600];
        snprintf(message, sizeof message, "%s%s", where,
                 json_string_value(json_object_get(error, "message")));
        json_object_set_new(error, "message", json_string(message));
        s_respond_json(call, 400, answer);
    } else if (s_resolve(call, S_PROVIDER, S_VALUE(f, v, "provider")->text, provider) == 0) {
        const char *upstream = S_VALUE(f, v, "upstream_model")->text;
        if (!upstream && strlen(model_name) > 127)
            s_invalid(call,
                      "%sthe model name is too long to be an upstream model; give "
                      "'upstream_model'",
                      where);
        else {
            const char *params[] = {model_id, provider, upstream ? upstream : model_name,
                                    S_VALUE(f, v, "priority")->text, S_VALUE(f, v, "weight")->text};
            s_sql_one(call,
                      "INSERT INTO routes (model_id, provider_id, upstream_model, priority, "
                      "weight) VALUES ($1, $2, $3, coalesce($4::int, 0), "
                      "coalesce($5::int, 1)) RETURNING id",
                      5, params, &id);
        }
    }
    s_values_free(v, S_MAX_FIELDS);
    return id;
}

static void s_model_create(s_call_t *call)
{
    const s_field_t *f = s_model_fields;
    s_value_t v[S_MAX_FIELDS] = {{0}};
    char *id = NULL;
    if (s_read(call, f, v) != 0)
        goto done;
    json_t *routes = S_VALUE(f, v, "routes")->json;
    if (routes && !json_is_array(routes) && !json_is_null(routes)) {
        s_invalid(call, "'routes' must be an array");
        goto done;
    }
    const char *name = S_VALUE(f, v, "name")->text;
    const char *params[] = {name, S_VALUE(f, v, "price_in")->text, S_VALUE(f, v, "price_out")->text,
                            S_VALUE(f, v, "price_cache_read")->text,
                            S_VALUE(f, v, "price_cache_write")->text};
    if (s_begin(call) != 0 ||
        s_sql_one(call,
                  "INSERT INTO models (name, price_in_micros, price_out_micros, "
                  "price_cache_read_micros, price_cache_write_micros) VALUES ($1, "
                  "coalesce($2::bigint, 0), coalesce($3::bigint, 0), "
                  "coalesce($4::bigint, 0), coalesce($5::bigint, 0)) RETURNING id",
                  5, params, &id) != 1)
        goto done;
    size_t index;
    json_t *route;
    json_array_foreach(routes, index, route)
    {
        char where[32];
        snprintf(where, sizeof where, "routes[%zu]: ", index);
        char *route_id = s_route_add(call, id, name, route, where);
        if (!route_id)
            goto done;
        free(route_id);
    }
    if (s_after(call, S_MODEL_BY_ID, id) == 0 && s_commit(call) == 0)
        s_respond_query(call, 201, S_MODEL_BY_ID, 1, (const char *[]){id}, "model");
done:
    free(id);
    s_values_free(v, S_MAX_FIELDS);
}

static void s_model_list(s_call_t *call)
{
    s_respond_query(call, 200,
                    "SELECT json_build_object('data', coalesce(json_agg(" S_MODEL_JSON
                    " ORDER BY m.name), '[]'::json)) FROM models m",
                    0, NULL, "models");
}

static void s_model_get(s_call_t *call)
{
    char id[24];
    if (s_resolve(call, S_MODEL, call->params[0], id) == 0)
        s_respond_query(call, 200, S_MODEL_BY_ID, 1, (const char *[]){id}, "model");
}

static void s_model_change(s_call_t *call, json_t *forced)
{
    char id[24];
    s_value_t v[S_MAX_FIELDS] = {{0}};
    if (forced) {
        json_decref(call->body);
        call->body = forced;
    }
    if (s_resolve(call, S_MODEL, call->params[0], id) == 0 &&
        s_read(call, s_model_patch_fields, v) == 0 &&
        s_tags_check(call, "capabilities",
                     S_VALUE(s_model_patch_fields, v, "capabilities")->json) == 0) {
        if (s_present(s_model_patch_fields, v) == 0)
            s_invalid(call, "nothing to change");
        else if (s_begin(call) == 0 && s_before(call, S_MODEL_BY_ID, id) == 0 &&
                 s_patch(call, "models", true, s_model_patch_fields, v, id) >= 0 &&
                 s_after(call, S_MODEL_BY_ID, id) == 0 && s_commit(call) == 0)
            s_respond_query(call, 200, S_MODEL_BY_ID, 1, (const char *[]){id}, "model");
    }
    s_values_free(v, S_MAX_FIELDS);
}

static void s_model_patch(s_call_t *call)
{
    s_model_change(call, NULL);
}

static void s_model_delete(s_call_t *call)
{
    s_model_change(call, json_pack("{s:s}", "status", "disabled"));
}

static void s_route_create(s_call_t *call)
{
    char id[24];
    char *route_id = NULL, *name = NULL;
    if (s_resolve(call, S_MODEL, call->params[0], id) == 0 &&
        s_sql_one(call, "SELECT name FROM models WHERE id = $1::bigint", 1, (const char *[]){id},
                  &name) == 1 &&
        s_begin(call) == 0 && (route_id = s_route_add(call, id, name, call->body, "")) &&
        s_after(call, S_ROUTE_BY_ID, route_id) == 0 && s_commit(call) == 0)
        s_respond_query(call, 201, S_ROUTE_BY_ID, 1, (const char *[]){route_id}, "route");
    free(route_id);
    free(name);
}

static void s_route_list(s_call_t *call)
{
    char id[24];
    if (s_resolve(call, S_MODEL, call->params[0], id) == 0)
        s_respond_query(call, 200,
                        "SELECT json_build_object('data', coalesce(json_agg(" S_ROUTE_JSON
                        " ORDER BY r.priority DESC, r.id), '[]'::json))" S_ROUTE_FROM
                        "WHERE r.model_id = $1::bigint",
                        1, (const char *[]){id}, "routes");
}

static void s_route_patch(s_call_t *call)
{
    s_value_t v[S_MAX_FIELDS] = {{0}};
    const s_field_t *f = s_route_patch_fields;
    if (s_path_id(call, "route") != 0 || s_read(call, f, v) != 0)
        ;
    else if (s_present(f, v) == 0)
        s_invalid(call, "nothing to change");
    else if (s_begin(call) == 0 && s_before(call, S_ROUTE_BY_ID, call->params[0]) == 0) {
        int rows = s_patch(call, "routes", false, f, v, call->params[0]);
        if (rows == 0)
            s_not_found(call, "route not found");
        else if (rows > 0 && s_after(call, S_ROUTE_BY_ID, call->params[0]) == 0 &&
                 s_commit(call) == 0)
            s_respond_query(call, 200, S_ROUTE_BY_ID, 1, call->params, "route");
    }
    s_values_free(v, S_MAX_FIELDS);
}

//  Routes are the one thing really deleted: nothing refers to them.
static void s_route_delete(s_call_t *call)
{
    char *text = NULL;
    if (s_path_id(call, "route") != 0 || s_begin(call) != 0 ||
        s_before(call, S_ROUTE_BY_ID, call->params[0]) != 0)
        return;
    int found = s_sql_one(call,
                          "WITH r AS (DELETE FROM routes WHERE id = $1::bigint RETURNING *) "
                          "SELECT " S_ROUTE_JSON " FROM r JOIN providers rp "
                          "ON rp.id = r.provider_id",
                          1, call->params, &text);
    if (found == 0)
        s_not_found(call, "route not found");
    else if (found == 1 && s_commit(call) == 0)
        s_respond_text(call, 200, text);
    free(text);
}

// ---------------------------------------------------------------------------
//  Accounts and money

#define S_ACCOUNT_SETTINGS                                                                         \
    {.field = "status", .column = "status", .kind = S_F_ENUM, .choices = s_statuses},              \
        {.field = "rpm_limit",                                                                     \
         .column = "rpm_limit",                                                                    \
         .kind = S_F_INT,                                                                          \
         .min = 1,                                                                                 \
         .max = S_INT_MAX,                                                                         \
         .nullable = true},                                                                        \
        {.field = "tpm_limit",                                                                     \
         .column = "tpm_limit",                                                                    \
         .kind = S_F_INT,                                                                          \
         .min = 1,                                                                                 \
         .max = S_INT_MAX * INT64_C(1000),                                                         \
         .nullable = true},                                                                        \
        {.field = "concurrency_limit",                                                             \
         .column = "concurrency_limit",                                                            \
         .kind = S_F_INT,                                                                          \
         .min = 1,                                                                                 \
         .max = S_INT_MAX,                                                                         \
         .nullable = true},                                                                        \
        {.field = "daily_spend",                                                                   \
         .column = "daily_spend_micros",                                                           \
         .kind = S_F_MICROS,                                                                       \
         .min = 0,                                                                                 \
         .max = S_MONEY_MAX,                                                                       \
         .nullable = true,                                                                         \
         .micros = "daily_spend_micros"},                                                          \
        {.field = "monthly_spend",                                                                 \
         .column = "monthly_spend_micros",                                                         \
         .kind = S_F_MICROS,                                                                       \
         .min = 0,                                                                                 \
         .max = S_MONEY_MAX,                                                                       \
         .nullable = true,                                                                         \
         .micros = "monthly_spend_micros"},                                                        \
        {.field = "allowed_models",                                                                \
         .column = "allowed_models",                                                               \
         .kind = S_F_NAMES,                                                                        \
         .nullable = true},                                                                        \
    {                                                                                              \
        .field = "force_capabilities", .column = "force_capabilities", .kind = S_F_NAMES           \
    }

//  The first three are read by create only; s_patch skips them (no column).
static const s_field_t s_account_fields[] = {
    {.field = "name", .column = NULL, .kind = S_F_TEXT, .min = 1, .max = 200, .required = true},
    {.field = "balance",
     .column = NULL,
     .kind = S_F_MICROS,
     .min = 0,
     .max = S_MONEY_MAX,
     .micros = "balance_micros"},
    {.field = "currency", .column = NULL, .kind = S_F_TEXT, .min = 1, .max = 12},
    S_ACCOUNT_SETTINGS,
    {.field = NULL}};

static const s_field_t s_account_patch_fields[] = {
    {.field = "name", .column = "name", .kind = S_F_TEXT, .min = 1, .max = 200},
    S_ACCOUNT_SETTINGS,
    {.field = NULL}};

static const s_field_t s_topup_fields[] = {
    {.field = "amount",
     .column = NULL,
     .kind = S_F_MICROS,
     .min = -S_MONEY_MAX,
     .max = S_MONEY_MAX,
     .micros = "amount_micros",
     .required = true},
    {.field = "reason", .column = NULL, .kind = S_F_TEXT, .min = 0, .max = 1000},
    {.field = NULL}};

#define S_ACCOUNT_BY_ID "SELECT " S_ACCOUNT_JSON " FROM accounts a WHERE a.id = $1::bigint"

//  Writes a journal entry moving `amount` into the customer's ledger account
//  from a system account (funding for top-ups, adjustments otherwise) and
//  moves accounts.balance_micros the same way, inside the caller's
//  transaction, so `balance = sum of lines` holds at every commit. The
//  balance column does not wake the programs (it is the ledger's), so this
//  notifies explicitly: billing rebases its balances on a catalog reload.
//  Writes the entry id into entry (24 bytes). Returns 0 or -1 (answer set).
static int s_journal(s_call_t *call, const char *account, const char *amount, const char *kind,
                     const char *reason, char *entry)
{
    char *ledger = NULL, *entry_id = NULL;
    int rc = -1;
    if (s_sql_one(call,
                  "WITH fresh AS (INSERT INTO ledger_accounts (account_id) VALUES ($1::bigint) "
                  "ON CONFLICT (account_id) DO NOTHING RETURNING id) "
                  "SELECT id FROM fresh UNION ALL "
                  "SELECT id FROM ledger_accounts WHERE account_id = $1::bigint",
                  1, (const char *[]){account}, &ledger) != 1 ||
        !ledger)
        goto done;
    const char *system = strcmp(kind, "topup") == 0 ? "funding" : "adjustments";
    const char *params[] = {kind, reason, ledger, amount, system};
    if (s_sql_one(call,
                  "WITH e AS (INSERT INTO journal_entries (kind, reason, created_by) "
                  "VALUES ($1, $2, 'admin-api') RETURNING id), "
                  "l AS (INSERT INTO journal_lines (entry_id, ledger_account_id, amount_micros) "
                  "SELECT e.id, v.ledger, v.amount FROM e, (VALUES ($3::bigint, $4::bigint), "
                  "((SELECT id FROM ledger_accounts WHERE system_name = $5), -($4::bigint))) "
                  "AS v(ledger, amount)) SELECT id FROM e",
                  5, params, &entry_id) != 1 ||
        !entry_id)
        goto done;
    PGresult *result = s_sql(call,
                             "UPDATE accounts SET balance_micros = balance_micros + $2::bigint, "
                             "updated_at = now() WHERE id = $1::bigint",
                             2, (const char *[]){account, amount});
    if (!result)
        goto done;
    PQclear(result);
    result = s_sql(call, "SELECT pg_notify('tollgate_config', 'accounts')", 0, NULL);
    if (!result)
        goto done;
    PQclear(result);
    snprintf(entry, 24, "%s", entry_id);
    rc = 0;
done:
    free(ledger);
    free(entry_id);
    return rc;
}

//  Answers with the account's JSON plus one more field.
static void s_respond_account_with(s_call_t *call, int status, const char *id, const char *key,
                                   json_t *extra)
{
    char *text = NULL;
    if (s_sql_one(call, S_ACCOUNT_BY_ID, 1, (const char *[]){id}, &text) == 1 && text) {
        json_t *account = json_loads(text, 0, NULL);
        assert(account);
        json_object_set_new(account, key, extra);
        s_respond_json(call, status, account);
    } else
        json_decref(extra);
    free(text);
}

static void s_account_create(s_call_t *call)
{
    const s_field_t *f = s_account_fields;
    s_value_t v[S_MAX_FIELDS] = {{0}};
    char *id = NULL;
    char entry[24] = "";
    if (s_read(call, f, v) != 0 || s_begin(call) != 0)
        goto done;
    const char *balance = S_VALUE(f, v, "balance")->text;
    const char *params[] = {S_VALUE(f, v, "name")->text, S_VALUE(f, v, "currency")->text};
    if (s_sql_one(call,
                  "INSERT INTO accounts (name, currency) VALUES ($1, coalesce($2, 'USD')) "
                  "RETURNING id",
                  2, params, &id) != 1 ||
        s_patch(call, "accounts", true, f, v, id) < 0)
        goto done;
    //  An opening balance is money like any other: it arrives by journal entry.
    if (balance && strcmp(balance, "0") != 0 &&
        s_journal(call, id, balance, "topup", "initial balance", entry) != 0)
        goto done;
    if (s_after(call, S_ACCOUNT_BY_ID, id) == 0 && s_commit(call) == 0) {
        log_info(NULL, "admin: account %s created with balance %s micros", id,
                 balance ? balance : "0");
        s_respond_query(call, 201, S_ACCOUNT_BY_ID, 1, (const char *[]){id}, "account");
    }
done:
    free(id);
    s_values_free(v, S_MAX_FIELDS);
}

static void s_account_list(s_call_t *call)
{
    s_respond_query(call, 200,
                    "SELECT json_build_object('data', coalesce(json_agg(" S_ACCOUNT_JSON
                    " ORDER BY a.name), '[]'::json)) FROM accounts a",
                    0, NULL, "accounts");
}

static void s_account_get(s_call_t *call)
{
    char id[24];
    if (s_resolve(call, S_ACCOUNT, call->params[0], id) == 0)
        s_respond_query(call, 200, S_ACCOUNT_BY_ID, 1, (const char *[]){id}, "account");
}

static void s_account_change(s_call_t *call, json_t *forced)
{
    char id[24];
    s_value_t v[S_MAX_FIELDS] = {{0}};
    const s_field_t *f = s_account_patch_fields;
    if (forced) {
        json_decref(call->body);
        call->body = forced;
    }
    if (s_resolve(call, S_ACCOUNT, call->params[0], id) == 0 && s_read(call, f, v) == 0) {
        if (s_present(f, v) == 0)
            s_invalid(call, "nothing to change");
        else if (s_begin(call) == 0 && s_before(call, S_ACCOUNT_BY_ID, id) == 0 &&
                 s_patch(call, "accounts", true, f, v, id) >= 0 &&
                 s_after(call, S_ACCOUNT_BY_ID, id) == 0 && s_commit(call) == 0)
            s_respond_query(call, 200, S_ACCOUNT_BY_ID, 1, (const char *[]){id}, "account");
    }
    s_values_free(v, S_MAX_FIELDS);
}

static void s_account_patch(s_call_t *call)
{
    s_account_change(call, NULL);
}

static void s_account_delete(s_call_t *call)
{
    s_account_change(call, json_pack("{s:s}", "status", "disabled"));
}

static void s_account_topup(s_call_t *call)
{
    const s_field_t *f = s_topup_fields;
    s_value_t v[S_MAX_FIELDS] = {{0}};
    char id[24], entry[24];
    if (s_resolve(call, S_ACCOUNT, call->params[0], id) != 0 || s_read(call, f, v) != 0)
        goto done;
    const char *amount = S_VALUE(f, v, "amount")->text;
    if (strcmp(amount, "0") == 0) {
        s_invalid(call, "'amount' must not be zero");
        goto done;
    }
    const char *kind = amount[0] == '-' ? "adjustment" : "topup";
    const char *reason = S_VALUE(f, v, "reason")->text;
    if (s_begin(call) == 0 && s_before(call, S_ACCOUNT_BY_ID, id) == 0 &&
        s_journal(call, id, amount, kind, reason ? reason : "", entry) == 0 &&
        s_after(call, S_ACCOUNT_BY_ID, id) == 0) {
        json_object_set_new(call->audit_after, "journal_entry",
                            json_pack("{s:I,s:s,s:I}", "id", (json_int_t)strtoll(entry, NULL, 10),
                                      "kind", kind, "amount_micros",
                                      (json_int_t)strtoll(amount, NULL, 10)));
    }
    if (call->audit_after && s_commit(call) == 0) {
        log_info(NULL, "admin: account %s %s of %s micros, journal entry %s", id, kind, amount,
                 entry);
        json_t *extra =
            json_pack("{s:I,s:s,s:I}", "id", (json_int_t)strtoll(entry, NULL, 10), "kind", kind,
                      "amount_micros", (json_int_t)strtoll(amount, NULL, 10));
        s_respond_account_with(call, 200, id, "journal_entry", extra);
    }
done:
    s_values_free(v, S_MAX_FIELDS);
}

// ---------------------------------------------------------------------------
//  Client API keys

static const s_field_t s_key_fields[] = {
    {.field = "account", .column = NULL, .kind = S_F_REF, .required = true},
    {.field = "name", .column = NULL, .kind = S_F_TEXT, .min = 0, .max = 200},
    {.field = "models", .column = NULL, .kind = S_F_NAMES, .nullable = true},
    {.field = "expires_at", .column = NULL, .kind = S_F_TIME, .nullable = true},
    {.field = NULL}};

static const s_field_t s_key_patch_fields[] = {
    {.field = "status", .column = "status", .kind = S_F_ENUM, .choices = s_key_statuses},
    {.field = "name", .column = "name", .kind = S_F_TEXT, .min = 0, .max = 200},
    {.field = "models", .column = "allowed_models", .kind = S_F_NAMES, .nullable = true},
    {.field = "expires_at", .column = "expires_at", .kind = S_F_TIME, .nullable = true},
    {.field = "force_capabilities", .column = "force_capabilities", .kind = S_F_NAMES},
    {.field = NULL}};

static const s_field_t s_revoke_fields[] = {
    {.field = "key", .column = NULL, .kind = S_F_TEXT, .min = 1, .max = 200}, {.field = NULL}};

#define S_API_KEY_BY_ID "SELECT " S_API_KEY_JSON S_API_KEY_FROM "WHERE k.id = $1::bigint"

static void s_key_create(s_call_t *call)
{
    const s_field_t *f = s_key_fields;
    s_value_t v[S_MAX_FIELDS] = {{0}};
    char account[24];
    char key[PROTO_CRYPTO_API_KEY_LEN + 1], hash[PROTO_CRYPTO_HASH_HEX + 1];
    char prefix[PROTO_CRYPTO_PREFIX_LEN + 1];
    char *id = NULL, *text = NULL;
    if (s_read(call, f, v) != 0 ||
        s_resolve(call, S_ACCOUNT, S_VALUE(f, v, "account")->text, account) != 0)
        goto done;
    proto_crypto_new_api_key(key, sizeof key);
    proto_crypto_hash_hex(key, strlen(key), hash);
    snprintf(prefix, sizeof prefix, "%.*s", PROTO_CRYPTO_PREFIX_LEN, key);
    const char *models = S_VALUE(f, v, "models")->text;
    const char *params[] = {account, S_VALUE(f, v, "name")->text,      hash, prefix,
                            models,  S_VALUE(f, v, "expires_at")->text};
    if (s_begin(call) != 0 ||
        s_sql_one(call,
                  "INSERT INTO api_keys (account_id, name, key_hash, key_prefix, "
                  "allowed_models, expires_at) VALUES ($1, coalesce($2, ''), $3, $4, "
                  "CASE WHEN $5::json IS NULL THEN NULL "
                  "ELSE ARRAY(SELECT json_array_elements_text($5::json)) END, "
                  "$6::timestamptz) RETURNING id",
                  6, params, &id) != 1 ||
        s_after(call, S_API_KEY_BY_ID, id) != 0 || s_commit(call) != 0)
        goto done;
    //  The key goes into the answer here, in C: it is never sent to
    //  PostgreSQL, where a failed statement could log it.
    if (s_sql_one(call, S_API_KEY_BY_ID, 1, (const char *[]){id}, &text) == 1 && text) {
        json_t *answer = json_loads(text, 0, NULL);
        assert(answer);
        json_t *ordered = json_pack("{s:O,s:s}", "id", json_object_get(answer, "id"), "key", key);
        json_object_update_missing(ordered, answer);
        json_decref(answer);
        s_respond_json(call, 201, ordered);
        log_info(NULL, "admin: api key %s (%s...) created for account %s", id, prefix, account);
    }
done:
    sodium_memzero(key, sizeof key);
    free(id);
    free(text);
    s_values_free(v, S_MAX_FIELDS);
}

static void s_key_list(s_call_t *call)
{
    char ident[256], account[24];
    int found = s_query_get(call->request->query, "account", ident, sizeof ident);
    if (found < 0) {
        s_invalid(call, "'account' is malformed");
        return;
    }
    if (found == 1 && s_resolve(call, S_ACCOUNT, ident, account) != 0)
        return;
    s_respond_query(call, 200,
                    "SELECT json_build_object('data', coalesce(json_agg(" S_API_KEY_JSON
                    " ORDER BY k.id), '[]'::json))" S_API_KEY_FROM
                    "WHERE $1::bigint IS NULL OR k.account_id = $1::bigint",
                    1, (const char *[]){found == 1 ? account : NULL}, "keys");
}

static void s_key_get(s_call_t *call)
{
    if (s_path_id(call, "key") == 0)
        s_respond_query(call, 200, S_API_KEY_BY_ID, 1, call->params, "key");
}

//  Sets a key's status to revoked, by id or by the key itself (looked up by
//  its hash). Revoking twice is not an error.
static void s_key_revoke_ident(s_call_t *call, const char *ident)
{
    char hash[PROTO_CRYPTO_HASH_HEX + 1];
    const char *params[2] = {NULL, NULL};
    if (strncmp(ident, "tg-", 3) == 0) {
        proto_crypto_hash_hex(ident, strlen(ident), hash);
        params[1] = hash;
    } else if (s_is_id(ident))
        params[0] = ident;
    else {
        s_not_found(call, "key not found");
        return;
    }
    char *id = NULL;
    if (s_begin(call) != 0)
        return;
    int found = s_sql_one(call,
                          "UPDATE api_keys SET status = 'revoked', updated_at = now() "
                          "WHERE id = $1::bigint OR key_hash = $2 RETURNING id",
                          2, params, &id);
    if (found == 0)
        s_not_found(call, "key not found");
    else if (found == 1 && s_after(call, S_API_KEY_BY_ID, id) == 0 && s_commit(call) == 0) {
        log_info(NULL, "admin: api key %s revoked", id);
        s_respond_query(call, 200, S_API_KEY_BY_ID, 1, (const char *[]){id}, "key");
    }
    free(id);
}

static void s_key_revoke(s_call_t *call)
{
    s_key_revoke_ident(call, call->params[0]);
}

//  POST /admin/keys/revoke {"key": "tg-…"}: keeps the key out of URLs, and
//  so out of access logs.
static void s_key_revoke_body(s_call_t *call)
{
    s_value_t v[S_MAX_FIELDS] = {{0}};
    if (s_read(call, s_revoke_fields, v) == 0) {
        if (!v[0].present)
            s_invalid(call, "'key' is required");
        else
            s_key_revoke_ident(call, v[0].text);
    }
    s_values_free(v, S_MAX_FIELDS);
}

static void s_key_delete(s_call_t *call)
{
    if (s_path_id(call, "key") == 0)
        s_key_revoke_ident(call, call->params[0]);
}

static void s_key_patch(s_call_t *call)
{
    s_value_t v[S_MAX_FIELDS] = {{0}};
    const s_field_t *f = s_key_patch_fields;
    char *status = NULL;
    if (s_path_id(call, "key") != 0 || s_read(call, f, v) != 0)
        goto done;
    if (s_present(f, v) == 0) {
        s_invalid(call, "nothing to change");
        goto done;
    }
    if (s_begin(call) != 0)
        goto done;
    int found = s_sql_one(call, "SELECT status FROM api_keys WHERE id = $1::bigint FOR UPDATE", 1,
                          call->params, &status);
    const s_value_t *wanted = S_VALUE(f, v, "status");
    if (found == 0)
        s_not_found(call, "key not found");
    //  A revoked key may have leaked; it never comes back.
    else if (found == 1 && strcmp(status, "revoked") == 0 && wanted->present &&
             strcmp(wanted->text, "revoked") != 0)
        s_conflict(call, "the key is revoked; create a new one");
    else if (found == 1 && s_before(call, S_API_KEY_BY_ID, call->params[0]) == 0 &&
             s_patch(call, "api_keys", true, f, v, call->params[0]) > 0 &&
             s_after(call, S_API_KEY_BY_ID, call->params[0]) == 0 && s_commit(call) == 0)
        s_respond_query(call, 200, S_API_KEY_BY_ID, 1, call->params, "key");
done:
    free(status);
    s_values_free(v, S_MAX_FIELDS);
}

// ---------------------------------------------------------------------------
//  Usage and status

static void s_usage(s_call_t *call)
{
    char ident[256], before[80], limit_text[24], account[24];
    const char *query = call->request->query;
    int has_account = s_query_get(query, "account", ident, sizeof ident);
    int has_before = s_query_get(query, "before", before, sizeof before);
    int has_limit = s_query_get(query, "limit", limit_text, sizeof limit_text);
    long limit = S_USAGE_LIMIT;
    if (has_account < 0 || has_before < 0 || has_limit < 0) {
        s_invalid(call, "malformed query string");
        return;
    }
    if (has_limit == 1) {
        char *end;
        limit = strtol(limit_text, &end, 10);
        if (!*limit_text || *end || limit < 1 || limit > S_USAGE_LIMIT_MAX) {
            s_invalid(call, "'limit' must be an integer from 1 to %d", S_USAGE_LIMIT_MAX);
            return;
        }
    }
    if (has_account == 1 && s_resolve(call, S_ACCOUNT, ident, account) != 0)
        return;
    snprintf(limit_text, sizeof limit_text, "%ld", limit);
    const char *params[] = {has_account == 1 ? account : NULL, has_before == 1 ? before : NULL,
                            limit_text};
    //  Newest first; next_before is set when the page is full, and is the
    //  value to pass as `before` for the next (older) page.
    s_respond_query(call, 200,
                    "SELECT json_build_object('data', coalesce(json_agg(j ORDER BY started_at "
                    "DESC, request_id DESC), '[]'::json), 'next_before', CASE WHEN count(*) = "
                    "$3::bigint THEN min(started_at) END) FROM (SELECT u.started_at, "
                    "u.request_id, " S_USAGE_JSON " AS j FROM usage u WHERE ($1::bigint IS "
                    "NULL OR u.account_id = $1::bigint) AND ($2::timestamptz IS NULL OR "
                    "u.started_at < $2::timestamptz) ORDER BY u.started_at DESC, u.request_id "
                    "DESC LIMIT $3::bigint) s",
                    3, params, "usage");
}

//  The ledger's reports (ledger/ledger_report.h) over the query string:
//  from, to (ISO times or epoch seconds), account, key, provider (ids or
//  names), model, by, errors, limit, cursor.
static int s_report_query(s_call_t *call, ledger_report_query_t *query, char *texts[4])
{
    const char *raw = call->request->query;
    char value[256];
    memset(query, 0, sizeof *query);
    static const char *const times[] = {"from", "to"};
    for (int i = 0; i < 2; i++) {
        int has = s_query_get(raw, times[i], value, sizeof value);
        if (has < 0)
            return s_invalid(call, "malformed query string"), -1;
        if (has == 0)
            continue;
        char *end;
        long long seconds = strtoll(value, &end, 10);
        int64_t us = 0;
        if (*value && !*end)
            us = (int64_t)seconds * 1000000;
        else {
            //  An ISO time: let PostgreSQL read it, as the rest of the API does.
            const char *params[] = {value};
            PGresult *result = PQexecParams(call->self->db,
                                            "SELECT (extract(epoch FROM $1::timestamptz) * "
                                            "1000000)::bigint",
                                            1, NULL, params, NULL, NULL, 0);
            bool good = PQresultStatus(result) == PGRES_TUPLES_OK;
            if (good)
                us = strtoll(PQgetvalue(result, 0, 0), NULL, 10);
            PQclear(result);
            if (!good)
                return s_invalid(call, "'%s' must be an ISO time or epoch seconds", times[i]), -1;
        }
        if (i == 0)
            query->from_us = us;
        else
            query->to_us = us;
    }
    static const struct {
        const char *name; //  query parameter
        int kind;         //  S_ACCOUNT etc., or -1 for none
    } refs[] = {{"account", S_ACCOUNT}, {"key", -1}, {"provider", S_PROVIDER}};
    uint64_t *ids[] = {&query->account_id, &query->key_id, &query->provider_id};
    for (int i = 0; i < 3; i++) {
        int has = s_query_get(raw, refs[i].name, value, sizeof value);
        if (has < 0)
            return s_invalid(call, "malformed query string"), -1;
        if (has == 0)
            continue;
        char id[24];
        if (refs[i].kind >= 0) {
            if (s_resolve(call, refs[i].kind, value, id) != 0)
                return -1;
        } else {
            char *end;
            unsigned long long number = strtoull(value, &end, 10);
            if (!*value || *end)
                return s_invalid(call, "'key' must be a key id"), -1;
            snprintf(id, sizeof id, "%llu", number);
        }
        *ids[i] = strtoull(id, NULL, 10);
    }
    static const char *const strings[] = {"model", "by", "cursor", "limit"};
    for (int i = 0; i < 4; i++) {
        texts[i] = NULL;
        if (s_query_get(raw, strings[i], value, sizeof value) == 1)
            texts[i] = strdup(value);
    }
    query->model = texts[0];
    query->group_by = texts[1];
    query->cursor = texts[2];
    if (texts[3]) {
        char *end;
        long limit = strtol(texts[3], &end, 10);
        if (!*texts[3] || *end || limit < 1 || limit > 10000)
            return s_invalid(call, "'limit' must be an integer from 1 to 10000"), -1;
        query->limit = (size_t)limit;
    }
    if (s_query_get(raw, "errors", value, sizeof value) == 1 && strcmp(value, "false") != 0)
        query->status_min = 400;
    return 0;
}

typedef int(s_report_fn)(PGconn *db, const ledger_report_query_t *query, json_t **out, char *error,
                         size_t error_size);

static void s_report(s_call_t *call, s_report_fn *report)
{
    ledger_report_query_t query;
    char *texts[4] = {NULL, NULL, NULL, NULL};
    if (s_report_query(call, &query, texts) == 0) {
        json_t *out = NULL;
        char error[512];
        if (report(call->self->db, &query, &out, error, sizeof error) == 0)
            s_respond_json(call, 200, out);
        else
            s_invalid(call, "%s", error);
    }
    for (int i = 0; i < 4; i++)
        free(texts[i]);
}

static void s_report_spend(s_call_t *call)
{
    s_report(call, ledger_report_spend);
}

static void s_report_balances(s_call_t *call)
{
    s_report(call, ledger_report_balances);
}

static void s_report_usage(s_call_t *call)
{
    s_report(call, ledger_report_usage);
}

static void s_usage_csv(s_call_t *call)
{
    ledger_report_query_t query;
    char *texts[4] = {NULL, NULL, NULL, NULL};
    if (s_report_query(call, &query, texts) == 0) {
        char *text = NULL;
        size_t size = 0;
        FILE *out = open_memstream(&text, &size);
        char error[512];
        int64_t rows = ledger_report_usage_csv(call->self->db, &query, out, error, sizeof error);
        fclose(out);
        if (rows >= 0) {
            call->content_type = "text/csv";
            s_respond(call, 200, text);
            text = NULL;
        } else
            s_invalid(call, "%s", error);
        free(text);
    }
    for (int i = 0; i < 4; i++)
        free(texts[i]);
}

//  `tollgate ledger check` over HTTP: 200 when every invariant holds, 409
//  with the report when one does not.
static void s_ledger_check(s_call_t *call)
{
    char *report = NULL;
    int rc = ledger_check_run(call->self->db, &report);
    json_t *answer = json_pack("{s:b, s:s}", "ok", rc == 0, "report", report ? report : "");
    free(report);
    s_respond_json(call, rc == 0 ? 200 : 409, answer);
}

static void s_status(s_call_t *call)
{
    s_respond_query(call, 200,
                    "SELECT json_build_object('time', now(), 'counts', json_build_object("
                    "'accounts', (SELECT count(*) FROM accounts), "
                    "'api_keys', (SELECT count(*) FROM api_keys), "
                    "'providers', (SELECT count(*) FROM providers), "
                    "'provider_keys', (SELECT count(*) FROM provider_keys), "
                    "'models', (SELECT count(*) FROM models), "
                    "'routes', (SELECT count(*) FROM routes), "
                    "'usage', (SELECT count(*) FROM usage), "
                    "'journal_entries', (SELECT count(*) FROM journal_entries)))",
                    0, NULL, "status");
}

// ---------------------------------------------------------------------------
//  Query helpers shared by the lists below

//  Reads `limit` (1..S_USAGE_LIMIT_MAX) into *limit, default `fallback`, as
//  text into text (24 bytes). Returns 0, or -1 after answering 400.
static int s_query_limit(s_call_t *call, long fallback, char *text)
{
    char value[24];
    long limit = fallback;
    int found = s_query_get(call->request->query, "limit", value, sizeof value);
    if (found == 1) {
        char *end;
        limit = strtol(value, &end, 10);
        if (!*value || *end || limit < 1 || limit > S_USAGE_LIMIT_MAX)
            found = -1;
    }
    if (found < 0) {
        s_invalid(call, "'limit' must be an integer from 1 to %d", S_USAGE_LIMIT_MAX);
        return -1;
    }
    snprintf(text, 24, "%ld", limit);
    return 0;
}

//  Reads an optional query value into out; *present tells whether it was
//  given. Returns 0, or -1 after answering 400.
static int s_query_opt(s_call_t *call, const char *name, char *out, size_t size, bool *present)
{
    int found = s_query_get(call->request->query, name, out, size);
    if (found < 0 || (found == 1 && !s_printable(out))) {
        s_invalid(call, "'%s' is malformed", name);
        return -1;
    }
    *present = found == 1;
    return 0;
}

// ---------------------------------------------------------------------------
//  Admin users

#define S_USER_JSON                                                                                \
    "json_build_object('id', u.id, 'username', u.username, 'role', u.role, "                       \
    "'status', u.status, 'created_at', u.created_at, 'updated_at', u.updated_at, "                 \
    "'last_login_at', u.last_login_at, 'active_sessions', (SELECT count(*) FROM "                  \
    "admin_sessions s WHERE s.user_id = u.id AND s.revoked_at IS NULL AND s.expires_at > now()))"
#define S_USER_BY_ID "SELECT " S_USER_JSON " FROM admin_users u WHERE u.id = $1::bigint"
#define S_OWNERS "SELECT count(*) FROM admin_users WHERE role = 'owner' AND status = 'active'"

static const char *const s_roles[] = {"owner", "operator", "viewer", NULL};

static const s_field_t s_user_fields[] = {
    {.field = "username", .kind = S_F_TEXT, .min = 1, .max = 100, .required = true},
    {.field = "password", .kind = S_F_ANY, .required = true},
    {.field = "role", .kind = S_F_ENUM, .choices = s_roles, .required = true},
    {.field = NULL}};

static const s_field_t s_user_patch_fields[] = {
    {.field = "role", .column = "role", .kind = S_F_ENUM, .choices = s_roles},
    {.field = "status", .column = "status", .kind = S_F_ENUM, .choices = s_statuses},
    {.field = "password", .column = NULL, .kind = S_F_ANY},
    {.field = NULL}};

//  Usernames: what the schema's CHECK allows.
static bool s_username_valid(const char *name)
{
    size_t length = strlen(name);
    if (length < 1 || length > 100)
        return false;
    for (const char *c = name; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("_.@-", *c))
            return false;
    return true;
}

//  Checks a new password and hashes it with argon2id into hash
//  (crypto_pwhash_STRBYTES). Returns 0, or -1 after answering.
static int s_password_hash(s_call_t *call, const char *field, json_t *password, char *hash)
{
    const char *problem = s_password_problem(password);
    if (problem) {
        s_invalid(call, "'%s' %s", field, problem);
        return -1;
    }
    const char *text = json_string_value(password);
    if (crypto_pwhash_str_alg(hash, text, strlen(text), S_PW_OPSLIMIT, S_PW_MEMLIMIT,
                              crypto_pwhash_ALG_ARGON2ID13) != 0) {
        log_error(call->request->request_id, "admin: cannot hash a password (out of memory)");
        s_error(call, 500, "api_error", "cannot hash the password");
        return -1;
    }
    return 0;
}

static void s_user_create(s_call_t *call)
{
    const s_field_t *f = s_user_fields;
    s_value_t v[S_MAX_FIELDS] = {{0}};
    char hash[crypto_pwhash_STRBYTES] = "";
    char *id = NULL;
    if (s_read(call, f, v) != 0)
        goto done;
    const char *username = S_VALUE(f, v, "username")->text;
    if (!s_username_valid(username)) {
        s_invalid(call, "'username' must be 1 to 100 of A-Z a-z 0-9 _ . @ -");
        goto done;
    }
    if (s_password_hash(call, "password", S_VALUE(f, v, "password")->json, hash) != 0)
        goto done;
    const char *role = S_VALUE(f, v, "role")->text;
    const char *params[] = {username, hash, role};
    if (s_begin(call) == 0 &&
        s_sql_one(call,
                  "INSERT INTO admin_users (username, password_hash, role) VALUES ($1, $2, $3) "
                  "RETURNING id",
                  3, params, &id) == 1 &&
        s_after(call, S_USER_BY_ID, id) == 0 && s_commit(call) == 0) {
        log_info(call->request->request_id, "admin: admin user %s (%s) created by %s", username,
                 role, call->who.actor);
        s_respond_query(call, 201, S_USER_BY_ID, 1, (const char *[]){id}, "admin user");
    }
done:
    sodium_memzero(hash, sizeof hash);
    free(id);
    s_values_free(v, S_MAX_FIELDS);
}

static void s_user_list(s_call_t *call)
{
    s_respond_query(call, 200,
                    "SELECT json_build_object('data', coalesce(json_agg(" S_USER_JSON
                    " ORDER BY u.username), '[]'::json)) FROM admin_users u",
                    0, NULL, "admin users");
}

static void s_user_get(s_call_t *call)
{
    char id[24];
    if (s_resolve(call, S_USER, call->params[0], id) == 0)
        s_respond_query(call, 200, S_USER_BY_ID, 1, (const char *[]){id}, "admin user");
}

//  PATCH (role, status, password), or DELETE (status = disabled). A change
//  that would leave no active owner is refused: nobody could manage users
//  any more, and the bootstrap token would come back to life. Disabling a
//  user or setting their password ends their sessions.
static void s_user_change(s_call_t *call, json_t *forced)
{
    char id[24];
    s_value_t v[S_MAX_FIELDS] = {{0}};
    const s_field_t *f = s_user_patch_fields;
    char hash[crypto_pwhash_STRBYTES] = "";
    char *owners_before = NULL, *owners_after = NULL;
    if (forced) {
        json_decref(call->body);
        call->body = forced;
    }
    if (s_resolve(call, S_USER, call->params[0], id) != 0 || s_read(call, f, v) != 0)
        goto done;
    if (s_present(f, v) == 0) {
        s_invalid(call, "nothing to change");
        goto done;
    }
    const s_value_t *password = S_VALUE(f, v, "password");
    const s_value_t *status = S_VALUE(f, v, "status");
    if (password->present && s_password_hash(call, "password", password->json, hash) != 0)
        goto done;
    if (s_begin(call) != 0)
        goto done;
    //  Owner changes take turns, so two owners demoting each other at once
    //  cannot both see the other one still there.
    PGresult *lock = s_sql(call, "LOCK TABLE admin_users IN SHARE ROW EXCLUSIVE MODE", 0, NULL);
    if (!lock)
        goto done;
    PQclear(lock);
    snprintf(call->audit_target, sizeof call->audit_target, "%s", id);
    if (s_sql_one(call, S_OWNERS, 0, NULL, &owners_before) != 1 ||
        s_before(call, S_USER_BY_ID, id) != 0 || s_patch(call, "admin_users", true, f, v, id) < 0)
        goto done;
    if (password->present) {
        PGresult *result = s_sql(call,
                                 "UPDATE admin_users SET password_hash = $2, updated_at = now() "
                                 "WHERE id = $1::bigint",
                                 2, (const char *[]){id, hash});
        if (!result)
            goto done;
        PQclear(result);
    }
    if (password->present || (status->present && strcmp(status->text, "active") != 0)) {
        PGresult *result = s_sql(call,
                                 "UPDATE admin_sessions SET revoked_at = now() WHERE user_id = "
                                 "$1::bigint AND revoked_at IS NULL",
                                 1, (const char *[]){id});
        if (!result)
            goto done;
        PQclear(result);
    }
    if (s_sql_one(call, S_OWNERS, 0, NULL, &owners_after) != 1)
        goto done;
    if (atoi(owners_before) > 0 && atoi(owners_after) == 0) {
        s_conflict(call, "this would leave no active owner; make another user owner first");
        goto done;
    }
    if (s_after(call, S_USER_BY_ID, id) == 0 && s_commit(call) == 0) {
        log_info(call->request->request_id, "admin: admin user %s changed by %s", id,
                 call->who.actor);
        s_respond_query(call, 200, S_USER_BY_ID, 1, (const char *[]){id}, "admin user");
    }
done:
    sodium_memzero(hash, sizeof hash);
    free(owners_before);
    free(owners_after);
    s_values_free(v, S_MAX_FIELDS);
}

static void s_user_patch(s_call_t *call)
{
    s_user_change(call, NULL);
}

static void s_user_delete(s_call_t *call)
{
    s_user_change(call, json_pack("{s:s}", "status", "disabled"));
}

// ---------------------------------------------------------------------------
//  Login, sessions, logout

#define S_SESSION_JSON                                                                             \
    "json_build_object('id', s.id, 'user_id', s.user_id, 'username', u.username, "                 \
    "'role', u.role, 'created_at', s.created_at, 'expires_at', s.expires_at, "                     \
    "'last_used_at', s.last_used_at, 'revoked_at', s.revoked_at, 'client_ip', s.client_ip)"
#define S_SESSION_FROM " FROM admin_sessions s JOIN admin_users u ON u.id = s.user_id "
#define S_SESSION_BY_ID "SELECT " S_SESSION_JSON S_SESSION_FROM "WHERE s.id = $1::bigint"

static const s_field_t s_login_fields[] = {
    {.field = "username", .kind = S_F_TEXT, .min = 1, .max = 200, .required = true},
    {.field = "password", .kind = S_F_ANY, .required = true},
    {.field = "expires_in_s", .kind = S_F_INT, .min = 1, .max = 2592000},
    {.field = NULL}};

//  Seconds a lockout of user or IP still lasts, or 0 when neither is
//  locked. Returns -1 after answering (database failure).
static long s_locked_for(s_call_t *call, const char *username, const char *ip)
{
    char *left = NULL;
    int found = s_sql_one(call,
                          "SELECT ceil(extract(epoch FROM max(locked_until) - clock_timestamp()))"
                          "::bigint FROM login_lockouts WHERE subject IN ('user:' || $1, 'ip:' || "
                          "$2) AND locked_until > clock_timestamp()",
                          2, (const char *[]){username, ip}, &left);
    if (found < 0)
        return -1;
    long seconds = left ? strtol(left, NULL, 10) : 0;
    bool locked = left != NULL; //  max() of no rows is NULL
    free(left);
    return !locked ? 0 : seconds > 0 ? seconds : 1;
}

//  After a failed login (already recorded), locks the user and the IP
//  whose recent failures reach the limit. Failures count within the lockout
//  window, after the subject's last lock ended, and for a user after their
//  last successful login (an IP's count is not reset by a success: one
//  valid account must not let an address guess at the others). Returns 0,
//  or -1 after answering.
static int s_lock_if_needed(s_call_t *call, const char *username, const char *ip)
{
    static const char *const counts[] = {
        "SELECT count(*) FROM login_attempts a WHERE a.username = $1 AND NOT a.succeeded "
        "AND a.attempted_at > now() - $2::bigint * interval '1 millisecond' "
        "AND a.attempted_at > coalesce((SELECT locked_until FROM login_lockouts "
        "WHERE subject = 'user:' || $1), '-infinity') "
        "AND a.attempted_at > coalesce((SELECT max(attempted_at) FROM login_attempts "
        "WHERE username = $1 AND succeeded), '-infinity')",
        "SELECT count(*) FROM login_attempts a WHERE a.client_ip = $1 AND NOT a.succeeded "
        "AND a.attempted_at > now() - $2::bigint * interval '1 millisecond' "
        "AND a.attempted_at > coalesce((SELECT locked_until FROM login_lockouts "
        "WHERE subject = 'ip:' || $1), '-infinity')"};
    static const char *const kinds[] = {"user:", "ip:"};
    const char *subjects[] = {username, ip};
    char window[24];
    snprintf(window, sizeof window, "%" PRId64,
             proto_config_int(call->self->config, "ingress.admin_lockout_ms"));
    int64_t limit = proto_config_int(call->self->config, "ingress.admin_lockout_attempts");
    for (int i = 0; i < 2; i++) {
        char *count = NULL;
        if (s_sql_one(call, counts[i], 2, (const char *[]){subjects[i], window}, &count) != 1) {
            free(count);
            return -1;
        }
        bool lock = count && strtoll(count, NULL, 10) >= limit;
        free(count);
        if (!lock)
            continue;
        char subject[300];
        snprintf(subject, sizeof subject, "%s%s", kinds[i], subjects[i]);
        PGresult *result = s_sql(call,
                                 "INSERT INTO login_lockouts (subject, locked_until) VALUES ($1, "
                                 "clock_timestamp() + $2::bigint * interval '1 millisecond') "
                                 "ON CONFLICT (subject) DO UPDATE SET locked_until = "
                                 "EXCLUDED.locked_until",
                                 2, (const char *[]){subject, window});
        if (!result)
            return -1;
        PQclear(result);
        //  The decision is made here, so the warning is written here.
        log_warn(call->request->request_id,
                 "admin: %s %s locked out of admin login for %s ms after %" PRId64
                 " failed attempts",
                 i == 0 ? "user" : "client", subjects[i], window, limit);
    }
    return 0;
}

//  Verifies a password against a stored hash, or against a dummy hash when
//  there is no user, so that both take the same time.
static bool s_password_ok(ingress_admin_t *self, const char *stored, const char *password)
{
    if (!self->dummy_hash) {
        char random[33];
        proto_crypto_random_hex(random, 16);
        char hash[crypto_pwhash_STRBYTES];
        if (crypto_pwhash_str_alg(hash, random, strlen(random), S_PW_OPSLIMIT, S_PW_MEMLIMIT,
                                  crypto_pwhash_ALG_ARGON2ID13) == 0)
            self->dummy_hash = strdup(hash);
    }
    const char *hash = stored ? stored : self->dummy_hash;
    bool ok = hash && crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
    return ok && stored;
}

//  POST /admin/login {username, password, expires_in_s?}: a session token,
//  shown once. Locked-out users and addresses are refused before the
//  password is looked at, and those refusals are not counted again, so a
//  lock ends on time however hard someone keeps trying.
static void s_login(s_call_t *call)
{
    const s_field_t *f = s_login_fields;
    s_value_t v[S_MAX_FIELDS] = {{0}};
    PGresult *user = NULL;
    char token[4 + 2 * S_TOKEN_RANDOM + 1] = "";
    char *session = NULL;
    const char *rid = call->request->request_id;
    const char *ip = call->request->client_ip ? call->request->client_ip : "unknown";
    if (s_read(call, f, v) != 0)
        goto done;
    const char *username = S_VALUE(f, v, "username")->text;
    json_t *password = S_VALUE(f, v, "password")->json;
    if (!json_is_string(password) || json_string_length(password) > S_PASSWORD_MAX ||
        strlen(json_string_value(password)) != json_string_length(password)) {
        s_invalid(call, "'password' must be a string of at most 1024 bytes");
        goto done;
    }
    long locked = s_locked_for(call, username, ip);
    if (locked < 0)
        goto done;
    if (locked > 0) {
        s_respond_json(call, 429,
                       json_pack("{s:{s:s,s:s,s:I}}", "error", "message",
                                 "too many failed logins; try again later", "type", "locked_out",
                                 "retry_after_s", (json_int_t)locked));
        goto done;
    }
    user = s_sql(call,
                 "SELECT id, password_hash, role, status, username FROM admin_users "
                 "WHERE username = $1",
                 1, (const char *[]){username});
    if (!user)
        goto done;
    bool exists = PQntuples(user) == 1;
    bool ok = s_password_ok(call->self, exists ? PQgetvalue(user, 0, 1) : NULL,
                            json_string_value(password)) &&
              strcmp(PQgetvalue(user, 0, 3), "active") == 0;
    if (s_begin(call) != 0)
        goto done;
    PGresult *attempt = s_sql(
        call, "INSERT INTO login_attempts (username, client_ip, succeeded) VALUES ($1, $2, $3)", 3,
        (const char *[]){username, ip, ok ? "true" : "false"});
    if (!attempt)
        goto done;
    PQclear(attempt);
    if (!ok) {
        call->audit_action = "login.failed";
        snprintf(call->audit_target, sizeof call->audit_target, "%s", username);
        if (s_lock_if_needed(call, username, ip) == 0 && s_commit(call) == 0) {
            log_info(rid, "admin: failed login for '%s' from %s", username, ip);
            s_error(call, 401, "authentication_error", "wrong username or password");
        }
        goto done;
    }
    //  From here on the caller is this user, for the audit row too.
    s_who_t *who = &call->who;
    who->kind = S_WHO_USER;
    who->role = s_role_parse(PQgetvalue(user, 0, 2));
    snprintf(who->id, sizeof who->id, "%s", PQgetvalue(user, 0, 0));
    snprintf(who->name, sizeof who->name, "%s", PQgetvalue(user, 0, 4));
    snprintf(who->actor, sizeof who->actor, "user:%s", who->name);
    s_new_token("tgs_", token, sizeof token);
    char hash[PROTO_CRYPTO_HASH_HEX + 1], ttl[24];
    proto_crypto_hash_hex(token, strlen(token), hash);
    int64_t longest = proto_config_int(call->self->config, "ingress.admin_session_ttl_s");
    const s_value_t *wanted = S_VALUE(f, v, "expires_in_s");
    int64_t seconds = wanted->present ? strtoll(wanted->text, NULL, 10) : longest;
    snprintf(ttl, sizeof ttl, "%" PRId64, seconds < longest ? seconds : longest);
    if (s_sql_one(call,
                  "INSERT INTO admin_sessions (token_hash, user_id, expires_at, client_ip) "
                  "VALUES ($1, $2::bigint, now() + $3::bigint * interval '1 second', $4) "
                  "RETURNING id",
                  4, (const char *[]){hash, who->id, ttl, ip}, &session) != 1)
        goto done;
    PGresult *touched =
        s_sql(call, "UPDATE admin_users SET last_login_at = now() WHERE id = $1::bigint", 1,
              (const char *[]){who->id});
    if (!touched)
        goto done;
    PQclear(touched);
    //  A stored hash made with weaker settings is upgraded while we hold the password.
    if (crypto_pwhash_str_needs_rehash(PQgetvalue(user, 0, 1), S_PW_OPSLIMIT, S_PW_MEMLIMIT) != 0) {
        char fresh[crypto_pwhash_STRBYTES];
        if (crypto_pwhash_str_alg(fresh, json_string_value(password),
                                  strlen(json_string_value(password)), S_PW_OPSLIMIT, S_PW_MEMLIMIT,
                                  crypto_pwhash_ALG_ARGON2ID13) == 0) {
            PGresult *result =
                s_sql(call, "UPDATE admin_users SET password_hash = $2 WHERE id = $1::bigint", 2,
                      (const char *[]){who->id, fresh});
            PQclear(result);
        }
    }
    snprintf(who->session, sizeof who->session, "%s", session);
    if (s_after(call, S_SESSION_BY_ID, session) != 0 || s_commit(call) != 0)
        goto done;
    json_t *answer = json_pack("{s:s,s:O,s:{s:I,s:s,s:s}}", "token", token, "expires_at",
                               json_object_get(call->audit_after, "expires_at"), "user", "id",
                               (json_int_t)strtoll(who->id, NULL, 10), "username", who->name,
                               "role", s_role_name(who->role));
    s_respond_json(call, 200, answer);
    log_info(rid, "admin: %s logged in from %s (session %s)", who->name, ip, session);
done:
    sodium_memzero(token, sizeof token);
    PQclear(user);
    free(session);
    s_values_free(v, S_MAX_FIELDS);
}

//  Ends the caller's own session.
static void s_logout(s_call_t *call)
{
    if (call->who.kind != S_WHO_USER) {
        s_invalid(call, "only a login session can log out; API tokens are revoked with "
                        "DELETE /admin/tokens/{id}");
        return;
    }
    const char *session = call->who.session;
    PGresult *result = NULL;
    if (s_begin(call) == 0 && s_before(call, S_SESSION_BY_ID, session) == 0 &&
        (result = s_sql(call, "UPDATE admin_sessions SET revoked_at = now() WHERE id = $1::bigint",
                        1, (const char *[]){session})) &&
        s_after(call, S_SESSION_BY_ID, session) == 0 && s_commit(call) == 0)
        s_respond_json(call, 200, json_pack("{s:b,s:s}", "logged_out", 1, "session", session));
    PQclear(result);
}

//  GET /admin/sessions?user=&all=1: live sessions (all=1: also ended ones).
static void s_session_list(s_call_t *call)
{
    char ident[256], all[8], id[24];
    bool has_user = false, has_all = false;
    if (s_query_opt(call, "user", ident, sizeof ident, &has_user) != 0 ||
        s_query_opt(call, "all", all, sizeof all, &has_all) != 0)
        return;
    if (has_user && s_resolve(call, S_USER, ident, id) != 0)
        return;
    bool everything = has_all && (strcmp(all, "1") == 0 || strcmp(all, "true") == 0);
    s_respond_query(call, 200,
                    "SELECT json_build_object('data', coalesce(json_agg(" S_SESSION_JSON
                    " ORDER BY s.id DESC), '[]'::json))" S_SESSION_FROM
                    "WHERE ($1::bigint IS NULL OR s.user_id = $1::bigint) AND ($2::bool OR "
                    "(s.revoked_at IS NULL AND s.expires_at > now()))",
                    2, (const char *[]){has_user ? id : NULL, everything ? "true" : "false"},
                    "sessions");
}

//  DELETE /admin/sessions/{id}: ends any session. Ending one twice is fine.
static void s_session_delete(s_call_t *call)
{
    char *found = NULL;
    if (s_path_id(call, "session") != 0 || s_begin(call) != 0 ||
        s_before(call, S_SESSION_BY_ID, call->params[0]) != 0)
        return;
    int rc = s_sql_one(call,
                       "UPDATE admin_sessions SET revoked_at = coalesce(revoked_at, now()) "
                       "WHERE id = $1::bigint RETURNING id",
                       1, call->params, &found);
    if (rc == 0)
        s_not_found(call, "session not found");
    else if (rc == 1 && s_after(call, S_SESSION_BY_ID, call->params[0]) == 0 && s_commit(call) == 0)
        s_respond_query(call, 200, S_SESSION_BY_ID, 1, call->params, "session");
    free(found);
}

//  GET /admin/me: who the token says the caller is.
static void s_me(s_call_t *call)
{
    static const char *const kinds[] = {[S_WHO_NONE] = "none",
                                        [S_WHO_BOOTSTRAP] = "bootstrap",
                                        [S_WHO_USER] = "session",
                                        [S_WHO_TOKEN] = "token"};
    const s_who_t *who = &call->who;
    json_t *me = json_pack("{s:s,s:s,s:s,s:s}", "kind", kinds[who->kind], "name", who->name, "role",
                           s_role_name(who->role), "actor", who->actor);
    json_object_set_new(me, "id",
                        who->id[0] ? json_integer(strtoll(who->id, NULL, 10)) : json_null());
    json_object_set_new(me, "expires_at",
                        who->expires_at[0] ? json_string(who->expires_at) : json_null());
    s_respond_json(call, 200, me);
}

// ---------------------------------------------------------------------------
//  Scoped API tokens and the bootstrap token

#define S_TOKEN_JSON                                                                               \
    "json_build_object('id', t.id, 'name', t.name, 'prefix', t.token_prefix, 'role', t.role, "     \
    "'status', CASE WHEN t.revoked_at IS NOT NULL THEN 'revoked' WHEN t.expires_at <= now() "      \
    "THEN 'expired' ELSE 'active' END, 'created_by', t.created_by, "                               \
    "'expires_at', t.expires_at, 'revoked_at', t.revoked_at, 'last_used_at', t.last_used_at, "     \
    "'created_at', t.created_at)"
#define S_TOKEN_BY_ID "SELECT " S_TOKEN_JSON " FROM admin_api_tokens t WHERE t.id = $1::bigint"

static const s_field_t s_token_fields[] = {
    {.field = "name", .kind = S_F_TEXT, .min = 1, .max = 200, .required = true},
    {.field = "role", .kind = S_F_ENUM, .choices = s_roles, .required = true},
    {.field = "expires_at", .kind = S_F_TIME, .nullable = true},
    {.field = NULL}};

//  POST /admin/tokens {name, role, expires_at?}: the token is in this
//  answer only; the database keeps its SHA-256 and a display prefix.
static void s_token_create(s_call_t *call)
{
    const s_field_t *f = s_token_fields;
    s_value_t v[S_MAX_FIELDS] = {{0}};
    char token[4 + 2 * S_TOKEN_RANDOM + 1] = "";
    char hash[PROTO_CRYPTO_HASH_HEX + 1], prefix[S_TOKEN_PREFIX_LEN + 1];
    char *id = NULL, *past = NULL, *text = NULL;
    if (s_read(call, f, v) != 0)
        goto done;
    const char *role = S_VALUE(f, v, "role")->text;
    if (s_role_parse(role) > call->who.role) {
        s_error(call, 403, "permission_error", "a token cannot have more power than its maker");
        goto done;
    }
    const char *expires = S_VALUE(f, v, "expires_at")->text;
    if (expires && s_sql_one(call, "SELECT $1::timestamptz <= now()", 1, (const char *[]){expires},
                             &past) != 1)
        goto done;
    if (past && strcmp(past, "t") == 0) {
        s_invalid(call, "'expires_at' must be in the future");
        goto done;
    }
    s_new_token("tgt_", token, sizeof token);
    proto_crypto_hash_hex(token, strlen(token), hash);
    snprintf(prefix, sizeof prefix, "%.*s", S_TOKEN_PREFIX_LEN, token);
    const char *params[] = {
        S_VALUE(f, v, "name")->text, hash, prefix, role, call->who.actor, expires};
    if (s_begin(call) != 0 ||
        s_sql_one(call,
                  "INSERT INTO admin_api_tokens (name, token_hash, token_prefix, role, created_by, "
                  "expires_at) VALUES ($1, $2, $3, $4, $5, $6::timestamptz) RETURNING id",
                  6, params, &id) != 1 ||
        s_after(call, S_TOKEN_BY_ID, id) != 0 || s_commit(call) != 0)
        goto done;
    if (s_sql_one(call, S_TOKEN_BY_ID, 1, (const char *[]){id}, &text) == 1 && text) {
        json_t *answer = json_loads(text, 0, NULL);
        assert(answer);
        json_t *ordered =
            json_pack("{s:O,s:s}", "id", json_object_get(answer, "id"), "token", token);
        json_object_update_missing(ordered, answer);
        json_decref(answer);
        s_respond_json(call, 201, ordered);
        log_info(call->request->request_id, "admin: api token %s (%s, %s) created by %s", id,
                 prefix, role, call->who.actor);
    }
done:
    sodium_memzero(token, sizeof token);
    free(id);
    free(past);
    free(text);
    s_values_free(v, S_MAX_FIELDS);
}

static void s_token_list(s_call_t *call)
{
    s_respond_query(call, 200,
                    "SELECT json_build_object('data', coalesce(json_agg(" S_TOKEN_JSON
                    " ORDER BY t.id), '[]'::json)) FROM admin_api_tokens t",
                    0, NULL, "tokens");
}

//  DELETE /admin/tokens/{id}: revoked for good. Revoking twice is fine.
static void s_token_delete(s_call_t *call)
{
    char *found = NULL;
    if (s_path_id(call, "token") != 0 || s_begin(call) != 0 ||
        s_before(call, S_TOKEN_BY_ID, call->params[0]) != 0)
        return;
    int rc = s_sql_one(call,
                       "UPDATE admin_api_tokens SET revoked_at = coalesce(revoked_at, now()) "
                       "WHERE id = $1::bigint RETURNING id",
                       1, call->params, &found);
    if (rc == 0)
        s_not_found(call, "token not found");
    else if (rc == 1 && s_after(call, S_TOKEN_BY_ID, call->params[0]) == 0 && s_commit(call) == 0) {
        log_info(call->request->request_id, "admin: api token %s revoked by %s", call->params[0],
                 call->who.actor);
        s_respond_query(call, 200, S_TOKEN_BY_ID, 1, call->params, "token");
    }
    free(found);
}

//  POST /admin/bootstrap/rotate: a new bootstrap token, shown once; the one
//  in ingress.admin_token stops working on every instance. Its hash goes to
//  settings, where every ingress looks first. It is still retired as soon
//  as an owner exists.
static void s_bootstrap_rotate(s_call_t *call)
{
    char token[4 + 2 * S_TOKEN_RANDOM + 1], hash[PROTO_CRYPTO_HASH_HEX + 1];
    char *owners = NULL;
    s_new_token("tga_", token, sizeof token);
    proto_crypto_hash_hex(token, strlen(token), hash);
    PGresult *result = NULL;
    snprintf(call->audit_target, sizeof call->audit_target, "bootstrap");
    if (s_begin(call) == 0 &&
        (result = s_sql(call,
                        "INSERT INTO settings (key, value) VALUES ('admin.bootstrap', "
                        "json_build_object('token_hash', $1::text, 'rotated_at', now(), "
                        "'rotated_by', $2::text)) ON CONFLICT (key) DO UPDATE SET value = "
                        "EXCLUDED.value, updated_at = now()",
                        2, (const char *[]){hash, call->who.actor})) &&
        s_sql_one(call, S_OWNERS, 0, NULL, &owners) == 1) {
        call->audit_after = json_pack("{s:b}", "rotated", 1);
        if (s_commit(call) == 0) {
            s_respond_json(call, 200,
                           json_pack("{s:s,s:b}", "token", token, "usable", atoi(owners) == 0));
            log_info(call->request->request_id, "admin: bootstrap token rotated by %s",
                     call->who.actor);
        }
    }
    PQclear(result);
    free(owners);
    sodium_memzero(token, sizeof token);
}

// ---------------------------------------------------------------------------
//  The audit log

static void s_audit_list(s_call_t *call)
{
    char before[24], actor[256], action[128], limit[24];
    bool has_before = false, has_actor = false, has_action = false;
    if (s_query_opt(call, "before", before, sizeof before, &has_before) != 0 ||
        s_query_opt(call, "actor", actor, sizeof actor, &has_actor) != 0 ||
        s_query_opt(call, "action", action, sizeof action, &has_action) != 0 ||
        s_query_limit(call, S_AUDIT_LIMIT, limit) != 0)
        return;
    if (has_before && !s_is_id(before)) {
        s_invalid(call, "'before' must be an audit entry id (the next_before of a page)");
        return;
    }
    //  Newest first; next_before is the id to pass for the next (older)
    //  page, set when this page is full. An actor is "user:NAME",
    //  "token:NAME", "bootstrap", "anonymous", or a bare NAME for either of
    //  the first two; an action also matches its sub-actions ("provider").
    const char *params[] = {has_before ? before : NULL, has_actor ? actor : NULL,
                            has_action ? action : NULL, limit};
    s_respond_query(
        call, 200,
        "SELECT json_build_object('data', coalesce(json_agg(j ORDER BY id DESC), '[]'::json), "
        "'next_before', CASE WHEN count(*) = $4::bigint THEN min(id) END) FROM (SELECT a.id, "
        "json_build_object('id', a.id, 'at', a.at, 'actor', a.actor, 'actor_kind', a.actor_kind, "
        "'role', a.role, 'client_ip', a.client_ip, 'request_id', a.request_id, 'action', "
        "a.action, 'method', a.method, 'route', a.route, 'target', a.target, 'request', "
        "a.request, 'before', a.before, 'after', a.after) AS j FROM audit_log a WHERE "
        "($1::bigint IS NULL OR a.id < $1::bigint) AND ($2::text IS NULL OR a.actor = $2 OR "
        "a.actor IN ('user:' || $2, 'token:' || $2)) AND ($3::text IS NULL OR a.action = $3 "
        "OR a.action LIKE $3 || '.%') ORDER BY a.id DESC LIMIT $4::bigint) s",
        4, params, "audit");
}

// ---------------------------------------------------------------------------
//  Request logs: usage rows with names, and what the capture stored

#define S_REQUEST_JSON                                                                             \
    "json_build_object('request_id', u.request_id, 'started_at', u.started_at, "                   \
    "'recorded_at', u.recorded_at, 'account_id', u.account_id, 'account', ra.name, "               \
    "'api_key_id', u.api_key_id, 'key_prefix', rk.key_prefix, 'model', u.model, "                  \
    "'provider_id', u.provider_id, 'provider', rp.name, 'provider_key_id', u.provider_key_id, "    \
    "'upstream_model', u.upstream_model, 'status', u.status, 'attempts', u.attempts, "             \
    "'latency_ms', u.latency_ms, 'ttfb_ms', u.ttfb_ms, 'tokens_in', u.tokens_in, "                 \
    "'tokens_out', u.tokens_out, 'tokens_cache_read', u.tokens_cache_read, "                       \
    "'tokens_cache_write', u.tokens_cache_write, 'cost_micros', u.cost_micros, "                   \
    "'estimated', u.estimated, 'has_details', EXISTS (SELECT 1 FROM request_details d "            \
    "WHERE d.request_id = u.request_id))"
#define S_REQUEST_FROM                                                                             \
    " FROM usage u LEFT JOIN accounts ra ON ra.id = u.account_id LEFT JOIN api_keys rk ON "        \
    "rk.id = u.api_key_id LEFT JOIN providers rp ON rp.id = u.provider_id "

//  GET /admin/requests?account=&key=&model=&provider=&status=&errors=1&since=&before=&limit=
static void s_request_list(s_call_t *call)
{
    char account_name[256], key[24], model[256], provider_name[256], status[8], errors[8];
    char since[80], before[80], limit[24], account[24] = "", provider[24] = "";
    bool has_account, has_key, has_model, has_provider, has_status, has_errors, has_since,
        has_before;
    if (s_query_opt(call, "account", account_name, sizeof account_name, &has_account) ||
        s_query_opt(call, "key", key, sizeof key, &has_key) ||
        s_query_opt(call, "model", model, sizeof model, &has_model) ||
        s_query_opt(call, "provider", provider_name, sizeof provider_name, &has_provider) ||
        s_query_opt(call, "status", status, sizeof status, &has_status) ||
        s_query_opt(call, "errors", errors, sizeof errors, &has_errors) ||
        s_query_opt(call, "since", since, sizeof since, &has_since) ||
        s_query_opt(call, "before", before, sizeof before, &has_before) ||
        s_query_limit(call, S_USAGE_LIMIT, limit))
        return;
    if (has_key && !s_is_id(key)) {
        s_invalid(call, "'key' must be a client key id");
        return;
    }
    char *end = NULL;
    long code = has_status ? strtol(status, &end, 10) : 0;
    if (has_status && (!*status || *end || code < 100 || code > 599)) {
        s_invalid(call, "'status' must be an HTTP status from 100 to 599");
        return;
    }
    if ((has_account && s_resolve(call, S_ACCOUNT, account_name, account) != 0) ||
        (has_provider && s_resolve(call, S_PROVIDER, provider_name, provider) != 0))
        return;
    bool only_errors = has_errors && (strcmp(errors, "1") == 0 || strcmp(errors, "true") == 0);
    const char *params[] = {
        has_account ? account : NULL,   has_key ? key : NULL,       has_model ? model : NULL,
        has_provider ? provider : NULL, has_status ? status : NULL, only_errors ? "true" : "false",
        has_since ? since : NULL,       has_before ? before : NULL, limit};
    s_respond_query(call, 200,
                    "SELECT json_build_object('data', coalesce(json_agg(j ORDER BY started_at "
                    "DESC, request_id DESC), '[]'::json), 'next_before', CASE WHEN count(*) = "
                    "$9::bigint THEN min(started_at) END) FROM (SELECT u.started_at, u.request_id, "
                    "" S_REQUEST_JSON " AS j" S_REQUEST_FROM
                    "WHERE ($1::bigint IS NULL OR u.account_id = $1::bigint) AND ($2::bigint IS "
                    "NULL OR u.api_key_id = $2::bigint) AND ($3::text IS NULL OR u.model = $3) "
                    "AND ($4::bigint IS NULL OR u.provider_id = $4::bigint) AND ($5::int IS NULL "
                    "OR u.status = $5::int) AND (NOT $6::bool OR u.status >= 400) AND "
                    "($7::timestamptz IS NULL OR u.started_at >= $7::timestamptz) AND "
                    "($8::timestamptz IS NULL OR u.started_at < $8::timestamptz) ORDER BY "
                    "u.started_at DESC, u.request_id DESC LIMIT $9::bigint) s",
                    9, params, "requests");
}

//  GET /admin/requests/{id}: one request with the detail its capture kept.
static void s_request_get(s_call_t *call)
{
    const char *id = call->params[0];
    if (strlen(id) > 128 || !s_printable(id)) {
        s_not_found(call, "request not found");
        return;
    }
    s_respond_query(
        call, 200,
        "SELECT (" S_REQUEST_JSON "::jsonb || jsonb_build_object('details', (SELECT "
        "json_build_object('level', d.level, 'captured_at', d.captured_at, "
        "'client_protocol', d.client_protocol, 'request_headers', d.request_headers, "
        "'response_headers', d.response_headers, 'request_body', d.request_body, "
        "'response_body', d.response_body, 'request_truncated', d.request_truncated, "
        "'response_truncated', d.response_truncated) FROM request_details d WHERE "
        "d.request_id = u.request_id)) || jsonb_build_object('spans', " PROTO_TRACE_TIMELINE_SQL
        "))::json" S_REQUEST_FROM "WHERE u.request_id = $1",
        1, (const char *[]){id}, "request");
}

// ---------------------------------------------------------------------------
//  Settings: the request-log detail level

static const char *const s_log_levels[] = {"base", "headers", "full", NULL};

static const s_field_t s_request_log_fields[] = {
    {.field = "level", .kind = S_F_ENUM, .choices = s_log_levels},
    {.field = "max_body_bytes", .kind = S_F_INT, .min = 0, .max = 16 * 1024 * 1024},
    {.field = "retention_days", .kind = S_F_INT, .min = 1, .max = 3650},
    {.field = NULL}};

#define S_REQUEST_LOG_DEFAULT                                                                      \
    "'{\"level\": \"base\", \"max_body_bytes\": 65536, \"retention_days\": 30}'::jsonb"
#define S_REQUEST_LOG_GET                                                                          \
    "SELECT (" S_REQUEST_LOG_DEFAULT " || coalesce((SELECT value FROM settings WHERE key = "       \
    "'request_log'), '{}'::jsonb))::json"

static void s_request_log_get(s_call_t *call)
{
    s_respond_query(call, 200, S_REQUEST_LOG_GET, 0, NULL, "settings");
}

//  PATCH /admin/settings/request-log: merges the given fields into the
//  stored value. The settings trigger tells every program.
static void s_request_log_patch(s_call_t *call)
{
    s_value_t v[S_MAX_FIELDS] = {{0}};
    char *before = NULL;
    PGresult *result = NULL;
    if (s_read(call, s_request_log_fields, v) != 0)
        goto done;
    if (s_present(s_request_log_fields, v) == 0) {
        s_invalid(call, "nothing to change");
        goto done;
    }
    char *change = json_dumps(call->body, JSON_COMPACT);
    snprintf(call->audit_target, sizeof call->audit_target, "request_log");
    if (s_begin(call) == 0 && s_sql_one(call, S_REQUEST_LOG_GET, 0, NULL, &before) == 1 &&
        (result = s_sql(call,
                        "INSERT INTO settings (key, value) VALUES ('request_log', "
                        "" S_REQUEST_LOG_DEFAULT " || $1::jsonb) ON CONFLICT (key) DO UPDATE SET "
                        "value = settings.value || $1::jsonb, updated_at = now()",
                        1, (const char *[]){change}))) {
        call->audit_before = json_loads(before, 0, NULL);
        char *after = NULL;
        if (s_sql_one(call, S_REQUEST_LOG_GET, 0, NULL, &after) == 1 && after) {
            call->audit_after = json_loads(after, 0, NULL);
            if (s_commit(call) == 0)
                s_respond_text(call, 200, after);
        }
        free(after);
    }
    free(change);
done:
    PQclear(result);
    free(before);
    s_values_free(v, S_MAX_FIELDS);
}

// ---------------------------------------------------------------------------
//  Settings: the log level every program follows at run time (settings
//  'log_level'; proto_service LISTENs and applies it within milliseconds)

static const char *const s_program_levels[] = {"debug", "info", "warn", "error", "default", NULL};
static const char *const s_program_names[] = {"ingress", "billing", "router", "dispatch",
                                              "health",  "ledger",  NULL};

static const s_field_t s_log_level_fields[] = {
    {.field = "level", .kind = S_F_ENUM, .choices = s_program_levels, .required = true},
    {.field = "program", .kind = S_F_ENUM, .choices = s_program_names},
    {.field = NULL}};

#define S_LOG_LEVEL_GET                                                                            \
    "SELECT ('{\"level\": null, \"programs\": {}}'::jsonb || coalesce((SELECT value FROM "         \
    "settings WHERE key = 'log_level'), '{}'::jsonb))::json"

static void s_log_level_get(s_call_t *call)
{
    s_respond_query(call, 200, S_LOG_LEVEL_GET, 0, NULL, "settings");
}

//  PATCH /admin/settings/log-level {level, program?}: sets the level of
//  every program or of one; "default" goes back to the configured log_level.
static void s_log_level_patch(s_call_t *call)
{
    s_value_t v[S_MAX_FIELDS] = {{0}};
    char *before = NULL, *after = NULL;
    PGresult *made = NULL, *result = NULL;
    if (s_read(call, s_log_level_fields, v) != 0)
        goto done;
    snprintf(call->audit_target, sizeof call->audit_target, "log_level");
    const char *params[] = {v[0].text, v[1].present ? v[1].text : NULL};
    if (s_begin(call) == 0 && s_sql_one(call, S_LOG_LEVEL_GET, 0, NULL, &before) == 1 &&
        (made = s_sql(call,
                      "INSERT INTO settings (key, value) VALUES ('log_level', '{}') "
                      "ON CONFLICT (key) DO NOTHING",
                      0, NULL)) &&
        (result = s_sql(call,
                        "UPDATE settings SET updated_at = now(), value = CASE "
                        "WHEN $2::text IS NULL AND $1 = 'default' THEN value - 'level' "
                        "WHEN $2::text IS NULL THEN value || jsonb_build_object('level', $1::text) "
                        "WHEN $1 = 'default' THEN value #- ARRAY['programs', $2::text] "
                        "ELSE jsonb_set(value, '{programs}', coalesce(value->'programs', "
                        "'{}'::jsonb) || jsonb_build_object($2::text, $1::text)) END "
                        "WHERE key = 'log_level'",
                        2, params))) {
        call->audit_before = json_loads(before, 0, NULL);
        if (s_sql_one(call, S_LOG_LEVEL_GET, 0, NULL, &after) == 1 && after) {
            call->audit_after = json_loads(after, 0, NULL);
            if (s_commit(call) == 0)
                s_respond_text(call, 200, after);
        }
    }
done:
    PQclear(made);
    PQclear(result);
    free(before);
    free(after);
    s_values_free(v, S_MAX_FIELDS);
}

// ---------------------------------------------------------------------------
//  Questions to the routers: EXPLAIN, BREAKERS, BREAKER_RESET, STICKY,
//  STICKY_DELETE (docs/routing.md)
//
//  One DEALER per router endpoint rather than one connected to all, so a
//  question can go to every router and each answer is known by who gave it:
//  routers keep soft state of their own (bindings from their own decisions,
//  half-open trials), and an operator wants to see whether they agree. The
//  admin API answers on the ingress loop, so a question waits at most
//  S_ROUTER_WAIT_MS. A router that did not answer by then gets a fresh
//  socket, which drops what was queued for it instead of having it answered
//  later; answers are matched by request id, and a late answer to an
//  earlier question is read and dropped.

//  One question; unset fields are 0 or NULL.
typedef struct {
    proto_msg_type_t type;      //  EXPLAIN, BREAKERS, BREAKER_RESET, STICKY, STICKY_DELETE
    const char *model;          //  EXPLAIN: the model asked for
    uint64_t key_id;            //  EXPLAIN: the client key, 0 = none
    uint64_t account_id;        //  EXPLAIN: its account, 0 = none
    const char *session;        //  EXPLAIN, STICKY (filter), STICKY_DELETE
    const char *capabilities;   //  EXPLAIN: required tags, comma-separated
    uint64_t provider_key_id;   //  BREAKER_RESET, key layer
    uint64_t provider_id;       //  BREAKER_RESET, model layer
    const char *upstream_model; //  BREAKER_RESET, model layer
} s_question_t;

//  Reads the router endpoints from the configuration, once.
static void s_routers_open(ingress_admin_t *self)
{
    if (self->router_count > 0)
        return;
    const char *endpoints[S_ROUTERS_MAX];
    int count = proto_config_endpoints(self->config, "router", endpoints, S_ROUTERS_MAX);
    for (int i = 0; i < count; i++) {
        self->router_endpoints[i] = strdup(endpoints[i]);
        assert(self->router_endpoints[i]);
    }
    self->router_count = count;
}

//  The DEALER to router i, made (and connected) when missing. NULL when
//  ZeroMQ refuses the endpoint.
static zsock_t *s_router_socket(ingress_admin_t *self, int i)
{
    if (self->routers[i])
        return self->routers[i];
    zsock_t *socket = zsock_new(ZMQ_DEALER);
    if (!socket)
        return NULL;
    zsock_set_linger(socket, 0);
    zsock_set_sndtimeo(socket, 0);
    zsock_set_rcvtimeo(socket, 0);
    zsock_set_sndhwm(socket, S_ROUTER_QUEUE);
    if (zsock_connect(socket, "%s", self->router_endpoints[i]) != 0) {
        log_warn(NULL, "admin: cannot connect to router %s", self->router_endpoints[i]);
        zsock_destroy(&socket);
        return NULL;
    }
    self->routers[i] = socket;
    return socket;
}

static void s_routers_close(ingress_admin_t *self)
{
    for (int i = 0; i < self->router_count; i++) {
        zsock_destroy(&self->routers[i]);
        free(self->router_endpoints[i]);
        self->router_endpoints[i] = NULL;
    }
    self->router_count = 0;
}

//  The message for a question, with its own request id. Caller owns it.
static proto_msg_t *s_question_msg(const s_question_t *question, const char *request_id)
{
    proto_msg_t *msg = proto_msg_new(question->type);
    proto_msg_set_request_id(msg, request_id);
    if (question->model)
        proto_msg_set_model(msg, question->model);
    if (question->key_id)
        proto_msg_set_key_id(msg, question->key_id);
    if (question->account_id)
        proto_msg_set_account_id(msg, question->account_id);
    if (question->session)
        proto_msg_set_session(msg, question->session);
    if (question->capabilities && *question->capabilities)
        proto_msg_set_capabilities(msg, question->capabilities);
    if (question->provider_key_id)
        proto_msg_set_provider_key_id(msg, question->provider_key_id);
    if (question->provider_id)
        proto_msg_set_provider_id(msg, question->provider_id);
    if (question->upstream_model)
        proto_msg_set_upstream_model(msg, question->upstream_model);
    return msg;
}

//  Asks router `only` (or every router when -1) and waits for the answers:
//  all of them, or with first_only the first. replies[i] gets router i's
//  answer (caller destroys) or NULL. Returns how many answered.
static int s_routers_ask(s_call_t *call, const s_question_t *question, int only, bool first_only,
                         proto_msg_t **replies)
{
    ingress_admin_t *self = call->self;
    s_routers_open(self);
    char ids[S_ROUTERS_MAX][PROTO_MSG_RID_MAX + 1];
    bool asked[S_ROUTERS_MAX] = {false};
    int waiting = 0;
    for (int i = 0; i < self->router_count; i++) {
        replies[i] = NULL;
        if (only >= 0 && i != only)
            continue;
        zsock_t *socket = s_router_socket(self, i);
        if (!socket)
            continue;
        //  The caller's request id with a count, so answers are told apart.
        snprintf(ids[i], sizeof ids[i], "%.40s-%" PRIu64,
                 call->request->request_id ? call->request->request_id : "admin",
                 ++self->questions);
        proto_msg_t *msg = s_question_msg(question, ids[i]);
        if (proto_msg_send(&msg, socket) == 0) {
            asked[i] = true;
            waiting++;
        }
    }
    int answered = 0;
    int64_t deadline = zclock_mono() + S_ROUTER_WAIT_MS;
    while (waiting > 0 && !(first_only && answered > 0)) {
        int64_t left = deadline - zclock_mono();
        if (left <= 0)
            break;
        zmq_pollitem_t items[S_ROUTERS_MAX];
        int index[S_ROUTERS_MAX], count = 0;
        for (int i = 0; i < self->router_count; i++)
            if (asked[i] && !replies[i]) {
                items[count] = (zmq_pollitem_t){zsock_resolve(self->routers[i]), 0, ZMQ_POLLIN, 0};
                index[count++] = i;
            }
        if (zmq_poll(items, count, (long)left) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int k = 0; k < count; k++) {
            if (!(items[k].revents & ZMQ_POLLIN))
                continue;
            int i = index[k];
            proto_msg_t *msg = NULL;
            int rc;
            while (!replies[i] && (rc = proto_msg_recv(&msg, self->routers[i])) != -1) {
                if (rc == 0 && strcmp(proto_msg_request_id(msg), ids[i]) == 0) {
                    replies[i] = msg;
                    answered++;
                    waiting--;
                } else
                    proto_msg_destroy(&msg); //  malformed, or late for an earlier question
            }
        }
    }
    //  A router that was waited for in vain: start afresh with it.
    if (!(first_only && answered > 0))
        for (int i = 0; i < self->router_count; i++)
            if (asked[i] && !replies[i]) {
                log_warn(call->request->request_id, "admin: router %s did not answer %s in %d ms",
                         self->router_endpoints[i], proto_msg_type_name(question->type),
                         S_ROUTER_WAIT_MS);
                zsock_destroy(&self->routers[i]);
            }
    return answered;
}

static void s_replies_destroy(proto_msg_t **replies, int count)
{
    for (int i = 0; i < count; i++)
        proto_msg_destroy(&replies[i]);
}

static void s_no_router(s_call_t *call)
{
    s_error(call, 503, "router_unavailable",
            "no router answered within %d ms; is tollgate-router running (router.endpoints)?",
            S_ROUTER_WAIT_MS);
}

//  The JSON a router put in `meta`, or NULL when it sent none or not JSON.
//  Caller owns return value.
static json_t *s_reply_meta(proto_msg_t *reply)
{
    if (!reply || !proto_msg_has(reply, PROTO_FIELD_meta))
        return NULL;
    json_t *meta = json_loads(proto_msg_meta(reply), 0, NULL);
    if (meta && !json_is_object(meta)) {
        json_decref(meta);
        meta = NULL;
    }
    return meta;
}

//  Epoch milliseconds as ISO 8601 UTC ("2026-01-31T10:00:00.250Z"), for
//  people; the _ms fields stay for programs.
static json_t *s_iso_ms(json_t *ms)
{
    if (!json_is_integer(ms) || json_integer_value(ms) <= 0)
        return json_null();
    json_int_t value = json_integer_value(ms);
    time_t seconds = (time_t)(value / 1000);
    struct tm tm;
    gmtime_r(&seconds, &tm);
    char text[40];
    size_t used = strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(text + used, sizeof text - used, ".%03dZ", (int)(value % 1000));
    return json_string(text);
}

//  ?router=N: one router by its index in router.endpoints, else -1 (all).
//  Returns 0, or -1 after setting the answer.
static int s_router_param(s_call_t *call, int *only)
{
    char text[16];
    *only = -1;
    int found = s_query_get(call->request->query, "router", text, sizeof text);
    if (found == 0)
        return 0;
    s_routers_open(call->self);
    if (found < 0 || !s_is_id(text) || atoi(text) >= call->self->router_count) {
        s_invalid(call, "'router' must be an index from 0 to %d (router.endpoints)",
                  call->self->router_count - 1);
        return -1;
    }
    *only = atoi(text);
    return 0;
}

//  The "routers" part of a list answer: who was asked and what each said.
static json_t *s_routers_json(s_call_t *call, proto_msg_t **replies, int only, const char *list)
{
    json_t *routers = json_array();
    for (int i = 0; i < call->self->router_count; i++) {
        if (only >= 0 && i != only)
            continue;
        json_t *item = json_pack("{s:i, s:s, s:b}", "router", i, "endpoint",
                                 call->self->router_endpoints[i], "answered", replies[i] != NULL);
        if (replies[i] && proto_msg_status(replies[i]) != 200)
            json_object_set_new(item, "error",
                                json_string(proto_msg_has(replies[i], PROTO_FIELD_error_code)
                                                ? proto_msg_error_code(replies[i])
                                                : "error"));
        json_t *meta = s_reply_meta(replies[i]);
        if (json_is_array(json_object_get(meta, list)))
            json_object_set_new(
                item, "count",
                json_integer((json_int_t)json_array_size(json_object_get(meta, list))));
        json_decref(meta);
        json_array_append_new(routers, item);
    }
    return routers;
}

//  Merges the lists routers answered (meta[list]) into one: entries equal
//  apart from `volatile_keys` are one, with "routers": the indexes that hold
//  it. The copy of each entry is the first router's.
static json_t *s_merge_lists(proto_msg_t **replies, int count, const char *list,
                             const char *const *identity)
{
    json_t *merged = json_array();
    for (int i = 0; i < count; i++) {
        json_t *meta = s_reply_meta(replies[i]);
        size_t index;
        json_t *entry;
        json_array_foreach(json_object_get(meta, list), index, entry)
        {
            json_t *same = NULL;
            size_t at;
            json_t *seen;
            json_array_foreach(merged, at, seen)
            {
                bool equal = true;
                for (int k = 0; identity[k] && equal; k++) {
                    json_t *a = json_object_get(seen, identity[k]);
                    json_t *b = json_object_get(entry, identity[k]);
                    equal = (!a && !b) || (a && b && json_equal(a, b));
                }
                if (equal) {
                    same = seen;
                    break;
                }
            }
            if (same)
                json_array_append_new(json_object_get(same, "routers"), json_integer(i));
            else {
                json_t *copy = json_deep_copy(entry);
                json_object_set_new(copy, "routers", json_pack("[i]", i));
                json_array_append_new(merged, copy);
            }
        }
        json_decref(meta);
    }
    return merged;
}

//  Names for the ids in breaker and binding entries, from one statement:
//  {"p": {id: name}, "k": {id: {provider_id, provider, name}}}. NULL after
//  setting the error answer. Caller owns return value.
static json_t *s_names(s_call_t *call)
{
    char *text = NULL;
    if (s_sql_one(call,
                  "SELECT json_build_object('p', coalesce((SELECT json_object_agg(id, name) "
                  "FROM providers), '{}'::json), 'k', coalesce((SELECT json_object_agg(k.id, "
                  "json_build_object('provider_id', k.provider_id, 'provider', p.name, 'name', "
                  "k.name)) FROM provider_keys k JOIN providers p ON p.id = k.provider_id), "
                  "'{}'::json))",
                  0, NULL, &text) != 1 ||
        !text) {
        free(text);
        return NULL;
    }
    json_t *names = json_loads(text, 0, NULL);
    free(text);
    return names;
}

//  Adds "provider" (and for a key "provider_id" and "key") names to an entry.
static void s_name_entry(json_t *entry, json_t *names)
{
    char id[32];
    json_t *key = json_object_get(entry, "provider_key_id");
    json_t *provider = json_object_get(entry, "provider_id");
    if (json_is_integer(key)) {
        snprintf(id, sizeof id, "%" JSON_INTEGER_FORMAT, json_integer_value(key));
        json_t *known = json_object_get(json_object_get(names, "k"), id);
        if (known) {
            if (!provider)
                json_object_set(entry, "provider_id", json_object_get(known, "provider_id"));
            json_object_set(entry, "provider", json_object_get(known, "provider"));
            json_object_set(entry, "key", json_object_get(known, "name"));
        }
    }
    if (json_is_integer(provider) && !json_object_get(entry, "provider")) {
        snprintf(id, sizeof id, "%" JSON_INTEGER_FORMAT, json_integer_value(provider));
        json_t *name = json_object_get(json_object_get(names, "p"), id);
        if (name)
            json_object_set(entry, "provider", name);
    }
}

//  Finds a client key by id or by the key itself (tg-…). Returns 0 with its
//  id and account, or -1 after setting the answer (404).
static int s_client_key(s_call_t *call, const char *ident, uint64_t *key_id, uint64_t *account_id)
{
    char hash[65];
    const char *params[] = {NULL, NULL};
    if (strncmp(ident, "tg-", 3) == 0) {
        proto_crypto_hash_hex(ident, strlen(ident), hash);
        params[1] = hash;
    } else if (s_is_id(ident))
        params[0] = ident;
    else {
        s_not_found(call, "key not found (give its id or the whole key)");
        return -1;
    }
    PGresult *result = s_sql(call,
                             "SELECT id, account_id FROM api_keys "
                             "WHERE id = $1::bigint OR key_hash = $2",
                             2, params);
    if (!result)
        return -1;
    int rc = -1;
    if (PQntuples(result) == 1) {
        *key_id = strtoull(PQgetvalue(result, 0, 0), NULL, 10);
        *account_id = strtoull(PQgetvalue(result, 0, 1), NULL, 10);
        rc = 0;
    } else
        s_not_found(call, "key not found");
    PQclear(result);
    return rc;
}

//  Capabilities as an array of tags or one comma-separated string, into
//  "a,b" (at most out_size - 1 bytes). Returns 0, or -1 after the answer.
static int s_capabilities_text(s_call_t *call, json_t *value, char *out, size_t out_size)
{
    *out = '\0';
    if (!value || json_is_null(value))
        return 0;
    json_t *tags = json_is_string(value) ? NULL : json_incref(value);
    if (json_is_string(value)) {
        tags = json_array();
        char *copy = strdup(json_string_value(value));
        char *save = NULL;
        for (char *tag = strtok_r(copy, ", ", &save); tag; tag = strtok_r(NULL, ", ", &save))
            json_array_append_new(tags, json_string(tag));
        free(copy);
    }
    int rc = 0;
    if (!json_is_array(tags)) {
        s_invalid(call, "'capabilities' must be an array of tags or a comma-separated string");
        rc = -1;
    } else if (s_tags_check(call, "capabilities", tags) != 0)
        rc = -1;
    size_t index;
    json_t *tag;
    json_array_foreach(tags, index, tag)
    {
        if (rc != 0)
            break;
        size_t used = strlen(out);
        if (used + strlen(json_string_value(tag)) + 2 > out_size) {
            s_invalid(call, "'capabilities' is too long");
            rc = -1;
            break;
        }
        snprintf(out + used, out_size - used, "%s%s", used ? "," : "", json_string_value(tag));
    }
    json_decref(tags);
    return rc;
}

static const s_field_t s_decide_fields[] = {
    {.field = "model", .column = NULL, .kind = S_F_TEXT, .min = 1, .max = 255, .required = true},
    {.field = "key", .column = NULL, .kind = S_F_REF},
    {.field = "session", .column = NULL, .kind = S_F_TEXT, .min = 1, .max = 256},
    {.field = "capabilities", .column = NULL, .kind = S_F_ANY},
    {.field = NULL}};

//  POST /admin/routing/decide[?router=N]: the decision a request would get,
//  explained, by the first router that answers (or by router N). Changes nothing (no trial, no
//  binding, no limit is taken), so viewers may ask.
static void s_routing_decide(s_call_t *call)
{
    const s_field_t *f = s_decide_fields;
    s_value_t v[S_MAX_FIELDS] = {{0}};
    char capabilities[1024];
    s_question_t question = {.type = PROTO_MSG_EXPLAIN};
    proto_msg_t *replies[S_ROUTERS_MAX] = {NULL};
    int only;
    if (s_router_param(call, &only) != 0 || s_read(call, f, v) != 0 ||
        s_capabilities_text(call, S_VALUE(f, v, "capabilities")->json, capabilities,
                            sizeof capabilities) != 0)
        goto done;
    const char *key = S_VALUE(f, v, "key")->text;
    if (key && s_client_key(call, key, &question.key_id, &question.account_id) != 0)
        goto done;
    question.model = S_VALUE(f, v, "model")->text;
    question.session = S_VALUE(f, v, "session")->text;
    question.capabilities = capabilities;
    if (s_routers_ask(call, &question, only, true, replies) == 0) {
        s_no_router(call);
        goto done;
    }
    for (int i = 0; i < call->self->router_count; i++) {
        if (!replies[i])
            continue;
        json_t *meta = s_reply_meta(replies[i]);
        if (!meta)
            s_error(call, 502, "api_error",
                    proto_msg_status(replies[i]) == 413
                        ? "the explanation is larger than a router message may be (%d bytes)"
                        : "router %d answered without an explanation",
                    proto_msg_status(replies[i]) == 413 ? PROTO_MSG_STR_MAX : i);
        else {
            json_object_set_new(meta, "router", json_integer(i));
            s_respond_json(call, 200, meta);
        }
        break;
    }
done:
    s_replies_destroy(replies, S_ROUTERS_MAX);
    s_values_free(v, S_MAX_FIELDS);
}

//  GET /admin/breakers[?router=N]: every breaker that is not closed, from
//  every router (merged; "routers" says which hold each), or from one.
static void s_breakers_list(s_call_t *call)
{
    static const char *const identity[] = {"layer",          "provider_key_id", "provider_id",
                                           "upstream_model", "state",           NULL};
    int only;
    proto_msg_t *replies[S_ROUTERS_MAX] = {NULL};
    if (s_router_param(call, &only) != 0)
        return;
    s_question_t question = {.type = PROTO_MSG_BREAKERS};
    if (s_routers_ask(call, &question, only, false, replies) == 0) {
        s_no_router(call);
        return;
    }
    json_t *names = s_names(call);
    if (names) {
        json_t *data = s_merge_lists(replies, call->self->router_count, "breakers", identity);
        size_t index;
        json_t *entry;
        json_array_foreach(data, index, entry)
        {
            s_name_entry(entry, names);
            json_object_set_new(entry, "opened_at",
                                s_iso_ms(json_object_get(entry, "opened_at_ms")));
            json_object_set_new(entry, "reopens_at",
                                s_iso_ms(json_object_get(entry, "reopens_at_ms")));
        }
        s_respond_json(call, 200,
                       json_pack("{s:o, s:o}", "data", data, "routers",
                                 s_routers_json(call, replies, only, "breakers")));
        json_decref(names);
    }
    s_replies_destroy(replies, S_ROUTERS_MAX);
}

//  Sends a change every router applies (BREAKER_RESET, STICKY_DELETE) to
//  every router, and writes its audit row once one took it. Each router
//  also tells the others (NOTIFY tollgate_routing), so one is enough; asking
//  all makes it work without that too. `count` names the answer's number
//  ("reset", "deleted"). Returns the answer (caller owns it), or NULL after
//  setting the error answer.
static json_t *s_routers_change(s_call_t *call, const s_question_t *question, const char *count)
{
    proto_msg_t *replies[S_ROUTERS_MAX] = {NULL};
    if (s_routers_ask(call, question, -1, false, replies) == 0) {
        s_no_router(call);
        return NULL;
    }
    json_int_t changed = 0;
    bool broadcast = false;
    int applied = 0;
    const char *refused = NULL;
    for (int i = 0; i < call->self->router_count; i++) {
        json_t *meta = s_reply_meta(replies[i]);
        if (replies[i] && proto_msg_status(replies[i]) == 200 && meta) {
            applied++;
            json_int_t n = json_integer_value(json_object_get(meta, count));
            changed = n > changed ? n : changed;
            broadcast = broadcast || json_is_true(json_object_get(meta, "broadcast"));
        } else if (replies[i] && !refused)
            refused = json_string_value(json_object_get(meta, "error"));
        json_decref(meta);
    }
    json_t *answer = NULL;
    if (applied == 0)
        s_invalid(call, "the router refused: %s", refused ? refused : "malformed question");
    else {
        answer = json_pack("{s:I, s:i, s:b}", count, changed, "routers", applied, "broadcast",
                           broadcast);
        json_object_set_new(answer, "asked", s_routers_json(call, replies, -1, "none"));
    }
    s_replies_destroy(replies, S_ROUTERS_MAX);
    return answer;
}

static const s_field_t s_breaker_reset_fields[] = {
    {.field = "provider_key_id", .column = NULL, .kind = S_F_INT, .min = 1, .max = INT64_MAX},
    {.field = "provider_id", .column = NULL, .kind = S_F_INT, .min = 1, .max = INT64_MAX},
    {.field = "provider", .column = NULL, .kind = S_F_REF},
    {.field = "upstream_model", .column = NULL, .kind = S_F_TEXT, .min = 1, .max = 127},
    {.field = NULL}};

//  POST /admin/breakers/reset: closes a key's breaker, or a (provider,
//  model) breaker, in every router. A key the routers disabled in
//  PostgreSQL after a 401/403 (its disabled_reason is theirs) is made
//  active again in the same step, since the routers follow the database.
static void s_breakers_reset(s_call_t *call)
{
    const s_field_t *f = s_breaker_reset_fields;
    s_value_t v[S_MAX_FIELDS] = {{0}};
    s_question_t question = {.type = PROTO_MSG_BREAKER_RESET};
    json_t *answer = NULL;
    char provider[24] = "";
    if (s_read(call, f, v) != 0)
        goto done;
    const char *key = S_VALUE(f, v, "provider_key_id")->text;
    const char *provider_ref = S_VALUE(f, v, "provider")->text;
    if (!provider_ref)
        provider_ref = S_VALUE(f, v, "provider_id")->text;
    const char *model = S_VALUE(f, v, "upstream_model")->text;
    bool by_key = key && !provider_ref && !model;
    bool by_model = !key && provider_ref && model;
    if ((!by_key && !by_model) ||
        (S_VALUE(f, v, "provider")->present && S_VALUE(f, v, "provider_id")->present)) {
        s_invalid(call, "give 'provider_key_id', or 'provider' (or 'provider_id') and "
                        "'upstream_model'");
        goto done;
    }
    if (by_key) {
        int found = s_sql_one(call, "SELECT id FROM provider_keys WHERE id = $1::bigint", 1,
                              (const char *[]){key}, NULL);
        if (found == 0)
            s_not_found(call, "provider key not found");
        if (found != 1)
            goto done;
        question.provider_key_id = strtoull(key, NULL, 10);
        snprintf(call->audit_target, sizeof call->audit_target, "key:%s", key);
    } else {
        if (s_resolve(call, S_PROVIDER, provider_ref, provider) != 0)
            goto done;
        question.provider_id = strtoull(provider, NULL, 10);
        question.upstream_model = model;
        snprintf(call->audit_target, sizeof call->audit_target, "%s/%.100s", provider, model);
    }
    //  No transaction is open while the routers are asked: the wait may be long.
    if (!(answer = s_routers_change(call, &question, "reset")) || s_begin(call) != 0)
        goto done;
    if (by_key) {
        if (s_before(call, S_PROVIDER_KEY_BY_ID, key) != 0)
            goto done;
        PGresult *result = s_sql(call,
                                 "UPDATE provider_keys SET status = 'active', disabled_reason = "
                                 "NULL, updated_at = now() WHERE id = $1::bigint AND status = "
                                 "'disabled' AND disabled_reason LIKE 'upstream answered %'",
                                 1, (const char *[]){key});
        if (!result)
            goto done;
        bool reenabled = atoi(PQcmdTuples(result)) > 0;
        PQclear(result);
        json_object_set_new(answer, "reenabled", json_boolean(reenabled));
        if (s_after(call, S_PROVIDER_KEY_BY_ID, key) != 0)
            goto done;
    } else
        call->audit_after = json_incref(answer);
    if (s_commit(call) == 0) {
        log_info(call->request->request_id, "admin: breaker reset %s: %" JSON_INTEGER_FORMAT,
                 call->audit_target, json_integer_value(json_object_get(answer, "reset")));
        s_respond_json(call, 200, answer);
        answer = NULL;
    }
done:
    json_decref(answer);
    s_values_free(v, S_MAX_FIELDS);
}

//  GET /admin/sticky[?session=S][&router=N]: session bindings, merged.
static void s_sticky_list(s_call_t *call)
{
    static const char *const identity[] = {"session", "provider_id", "provider_key_id",
                                           "upstream_model", NULL};
    char session[S_SESSION_MAX + 1];
    int found = s_query_get(call->request->query, "session", session, sizeof session);
    int only;
    proto_msg_t *replies[S_ROUTERS_MAX] = {NULL};
    if (found < 0 || (found == 1 && !*session)) {
        s_invalid(call, "'session' must be 1 to %d bytes", S_SESSION_MAX);
        return;
    }
    if (s_router_param(call, &only) != 0)
        return;
    s_question_t question = {.type = PROTO_MSG_STICKY, .session = found == 1 ? session : NULL};
    if (s_routers_ask(call, &question, only, false, replies) == 0) {
        s_no_router(call);
        return;
    }
    json_t *names = s_names(call);
    if (names) {
        json_t *data = s_merge_lists(replies, call->self->router_count, "bindings", identity);
        size_t index;
        json_t *entry;
        json_array_foreach(data, index, entry)
        {
            s_name_entry(entry, names);
            json_object_set_new(entry, "expires_at",
                                s_iso_ms(json_object_get(entry, "expires_at_ms")));
        }
        s_respond_json(call, 200,
                       json_pack("{s:o, s:o}", "data", data, "routers",
                                 s_routers_json(call, replies, only, "bindings")));
        json_decref(names);
    }
    s_replies_destroy(replies, S_ROUTERS_MAX);
}

//  DELETE /admin/sticky/{session}: drops a binding in every router.
static void s_sticky_delete(s_call_t *call)
{
    const char *session = call->params[0];
    if (strlen(session) >= S_SESSION_MAX + 1) {
        s_not_found(call, "no such session (sessions are at most %d bytes)", S_SESSION_MAX);
        return;
    }
    s_question_t question = {.type = PROTO_MSG_STICKY_DELETE, .session = session};
    json_t *answer = s_routers_change(call, &question, "deleted");
    if (!answer)
        return;
    snprintf(call->audit_target, sizeof call->audit_target, "%.120s", session);
    call->audit_after = json_incref(answer);
    if (s_begin(call) == 0 && s_commit(call) == 0) {
        s_respond_json(call, 200, answer);
        answer = NULL;
    }
    json_decref(answer);
}

// ---------------------------------------------------------------------------
//  Health, model lists, mappings and rules (written by tollgate-health and
//  read here; docs/routing.md sections 1 and 6)

#define S_HEALTH_JSON                                                                              \
    "json_build_object('provider_id', h.provider_id, 'provider', p.name, "                         \
    "'provider_key_id', h.provider_key_id, 'key', k.name, 'upstream_model', h.upstream_model, "    \
    "'state', h.state, 'success_ppm', h.success_ppm, 'latency_us', h.latency_us, "                 \
    "'ttfb_us', h.ttfb_us, 'attempts', h.attempts, 'last_status', h.last_status, "                 \
    "'last_error', h.last_error, 'updated_at', h.updated_at)"

#define S_FETCH_JSON                                                                               \
    "json_build_object('provider_id', f.provider_id, 'provider', fp.name, "                        \
    "'fetched_at', f.fetched_at, 'ok', f.ok, 'model_count', f.model_count, "                       \
    "'provider_key_id', f.provider_key_id, 'error', f.error)"

//  GET /admin/health[?provider=P]: health per (provider, key, model) as the
//  health instances last wrote it (every ~10 s), and each provider's last
//  model-list fetch. Probe entries have upstream_model "".
static void s_health(s_call_t *call)
{
    char ref[208], provider[24] = "";
    int found = s_query_get(call->request->query, "provider", ref, sizeof ref);
    if (found < 0) {
        s_invalid(call, "'provider' must be a provider name or id");
        return;
    }
    if (found == 1 && s_resolve(call, S_PROVIDER, ref, provider) != 0)
        return;
    const char *params[] = {found == 1 ? provider : NULL};
    s_respond_query(call, 200,
                    "SELECT json_build_object('data', coalesce((SELECT json_agg(" S_HEALTH_JSON
                    " ORDER BY p.name, h.provider_key_id, h.upstream_model) FROM provider_health "
                    "h LEFT JOIN providers p ON p.id = h.provider_id LEFT JOIN provider_keys k ON "
                    "k.id = h.provider_key_id WHERE $1::bigint IS NULL OR h.provider_id = "
                    "$1::bigint), '[]'::json), 'fetches', coalesce((SELECT json_agg(" S_FETCH_JSON
                    " ORDER BY fp.name) FROM provider_model_fetches f JOIN providers fp ON fp.id "
                    "= f.provider_id WHERE $1::bigint IS NULL OR f.provider_id = $1::bigint), "
                    "'[]'::json))",
                    1, params, "health");
}

//  GET /admin/providers/{provider}/models: the provider's model list as
//  last fetched, and how that fetch went.
static void s_provider_models(s_call_t *call)
{
    char id[24];
    if (s_resolve(call, S_PROVIDER, call->params[0], id) == 0)
        s_respond_query(call, 200,
                        "SELECT json_build_object('data', coalesce((SELECT json_agg("
                        "json_build_object('model', pm.model, 'first_seen_at', pm.first_seen_at) "
                        "ORDER BY pm.model) FROM provider_models pm WHERE pm.provider_id = "
                        "$1::bigint), '[]'::json), 'fetch', (SELECT " S_FETCH_JSON
                        " FROM provider_model_fetches f JOIN providers fp ON fp.id = "
                        "f.provider_id WHERE f.provider_id = $1::bigint))",
                        1, (const char *[]){id}, "provider");
}

//  POST /admin/providers/{provider}/models/refresh: asks the health
//  instances to fetch the provider's model list now (NOTIFY tollgate_health,
//  'fetch:ID', sent at commit). The answer does not wait for the fetch:
//  GET .../models shows it when done.
static void s_provider_models_refresh(s_call_t *call)
{
    char id[24];
    if (s_resolve(call, S_PROVIDER, call->params[0], id) != 0 || s_begin(call) != 0)
        return;
    PGresult *result = s_sql(call, "SELECT pg_notify('tollgate_health', 'fetch:' || $1::bigint)", 1,
                             (const char *[]){id});
    if (!result)
        return;
    PQclear(result);
    snprintf(call->audit_target, sizeof call->audit_target, "%s", id);
    if (s_commit(call) == 0)
        s_respond_json(call, 202,
                       json_pack("{s:I, s:b}", "provider_id", (json_int_t)strtoll(id, NULL, 10),
                                 "requested", 1));
}

//  GET /admin/models/{model}/mappings: the pairs the model's routes and
//  rules resolve to against the fetched lists, as tollgate-health last wrote
//  them (the routers resolve the same in memory).
static void s_model_mappings(s_call_t *call)
{
    char id[24];
    if (s_resolve(call, S_MODEL, call->params[0], id) == 0)
        s_respond_query(
            call, 200,
            "SELECT json_build_object('data', coalesce(json_agg(json_build_object("
            "'provider_id', mm.provider_id, 'provider', p.name, 'upstream_model', "
            "mm.upstream_model, 'source', mm.source, 'rule_id', mm.rule_id, 'priority', "
            "mm.priority, 'weight', mm.weight, 'active', mm.active, 'resolved_at', "
            "mm.resolved_at) ORDER BY mm.priority DESC, p.name, mm.upstream_model), '[]'::json)) "
            "FROM model_mappings mm JOIN providers p ON p.id = mm.provider_id "
            "WHERE mm.model_id = $1::bigint",
            1, (const char *[]){id}, "mappings");
}

static const char *const s_rule_kinds[] = {
    "exact", "prefix", "keyword", "regex", "exclude_keyword", "include", "exclude_provider", NULL};

static const s_field_t s_rule_fields[] = {
    {.field = "kind", .column = NULL, .kind = S_F_ENUM, .choices = s_rule_kinds, .required = true},
    {.field = "pattern", .column = NULL, .kind = S_F_TEXT, .min = 0, .max = 1000},
    {.field = "provider", .column = NULL, .kind = S_F_REF, .nullable = true},
    {.field = "priority", .column = NULL, .kind = S_F_INT, .min = -S_INT_MAX, .max = S_INT_MAX},
    {.field = "weight", .column = NULL, .kind = S_F_INT, .min = 0, .max = S_INT_MAX},
    {.field = NULL}};

#define S_RULE_JSON                                                                                \
    "json_build_object('id', r.id, 'model_id', r.model_id, 'model', m.name, 'kind', r.kind, "      \
    "'pattern', r.pattern, 'provider_id', r.provider_id, 'provider', rp.name, "                    \
    "'priority', r.priority, 'weight', r.weight, 'created_at', r.created_at)"
#define S_RULE_FROM                                                                                \
    " FROM mapping_rules r JOIN models m ON m.id = r.model_id "                                    \
    "LEFT JOIN providers rp ON rp.id = r.provider_id "
#define S_RULE_BY_ID "SELECT " S_RULE_JSON S_RULE_FROM "WHERE r.id = $1::bigint"

//  POST /admin/models/{model}/rules: adds a mapping rule. Rules that match
//  names need a pattern; exclude_provider needs a provider; include takes
//  the model's own name when the pattern is empty. A regular expression is
//  compiled by the routers (PCRE2): one that does not compile matches
//  nothing and explain says why.
static void s_rule_create(s_call_t *call)
{
    const s_field_t *f = s_rule_fields;
    s_value_t v[S_MAX_FIELDS] = {{0}};
    char model[24], provider[24];
    char *id = NULL;
    if (s_resolve(call, S_MODEL, call->params[0], model) != 0 || s_read(call, f, v) != 0)
        goto done;
    const char *kind = S_VALUE(f, v, "kind")->text;
    const char *pattern = S_VALUE(f, v, "pattern")->text;
    const char *provider_ref = S_VALUE(f, v, "provider")->text;
    bool needs_pattern = strcmp(kind, "include") != 0 && strcmp(kind, "exclude_provider") != 0;
    if (needs_pattern && (!pattern || !*pattern)) {
        s_invalid(call, "a rule of kind '%s' needs a 'pattern'", kind);
        goto done;
    }
    if (strcmp(kind, "exclude_provider") == 0 && !provider_ref) {
        s_invalid(call, "a rule of kind 'exclude_provider' needs a 'provider'");
        goto done;
    }
    if (provider_ref && s_resolve(call, S_PROVIDER, provider_ref, provider) != 0)
        goto done;
    const char *params[] = {model,
                            kind,
                            pattern,
                            provider_ref ? provider : NULL,
                            S_VALUE(f, v, "priority")->text,
                            S_VALUE(f, v, "weight")->text};
    if (s_begin(call) == 0 &&
        s_sql_one(call,
                  "INSERT INTO mapping_rules (model_id, kind, pattern, provider_id, priority, "
                  "weight) VALUES ($1::bigint, $2, coalesce($3, ''), $4::bigint, "
                  "coalesce($5::int, 0), coalesce($6::int, 1)) RETURNING id",
                  6, params, &id) == 1 &&
        s_after(call, S_RULE_BY_ID, id) == 0 && s_commit(call) == 0)
        s_respond_query(call, 201, S_RULE_BY_ID, 1, (const char *[]){id}, "rule");
done:
    free(id);
    s_values_free(v, S_MAX_FIELDS);
}

static void s_rule_list(s_call_t *call)
{
    char id[24];
    if (s_resolve(call, S_MODEL, call->params[0], id) == 0)
        s_respond_query(call, 200,
                        "SELECT json_build_object('data', coalesce(json_agg(" S_RULE_JSON
                        " ORDER BY r.id), '[]'::json))" S_RULE_FROM "WHERE r.model_id = $1::bigint",
                        1, (const char *[]){id}, "rules");
}

//  DELETE /admin/rules/{id}: rules, like routes, are really deleted.
static void s_rule_delete(s_call_t *call)
{
    char *text = NULL;
    if (s_path_id(call, "rule") != 0 || s_begin(call) != 0 ||
        s_before(call, S_RULE_BY_ID, call->params[0]) != 0)
        return;
    int found = s_sql_one(call,
                          "WITH r AS (DELETE FROM mapping_rules WHERE id = $1::bigint RETURNING *) "
                          "SELECT " S_RULE_JSON " FROM r JOIN models m ON m.id = r.model_id "
                          "LEFT JOIN providers rp ON rp.id = r.provider_id",
                          1, call->params, &text);
    if (found == 0)
        s_not_found(call, "rule not found");
    else if (found == 1 && s_commit(call) == 0)
        s_respond_text(call, 200, text);
    free(text);
}

// ---------------------------------------------------------------------------
//  Routing

static void s_route_table(s_call_t *call);

//  Literal routes come before the patterns that would also match them
//  (GET /admin/models/{model*}/routes must precede GET /admin/models/{model*}).
//  Each route names the least role it needs: reads are for viewers,
//  changes for operators, access management for owners. The table is
//  served as GET /admin/routes, which tests check against docs/openapi.json.
static const s_route_t s_routes[] = {
    {"POST", "/admin/login", s_login, S_PUBLIC, "login"},
    {"POST", "/admin/logout", s_logout, S_ANY, "logout"},
    {"GET", "/admin/me", s_me, S_ANY, NULL},
    {"GET", "/admin/routes", s_route_table, S_ANY, NULL},
    {"GET", "/admin/status", s_status, S_VIEWER, NULL},
    {"GET", "/admin/usage", s_usage, S_VIEWER, NULL},
    {"GET", "/admin/usage.csv", s_usage_csv, S_VIEWER, NULL},
    {"GET", "/admin/reports/spend", s_report_spend, S_VIEWER, NULL},
    {"GET", "/admin/reports/balances", s_report_balances, S_VIEWER, NULL},
    {"GET", "/admin/reports/usage", s_report_usage, S_VIEWER, NULL},
    {"GET", "/admin/ledger/check", s_ledger_check, S_VIEWER, NULL},
    {"GET", "/admin/requests", s_request_list, S_VIEWER, NULL},
    {"GET", "/admin/requests/{request}", s_request_get, S_VIEWER, NULL},
    {"GET", "/admin/settings/request-log", s_request_log_get, S_VIEWER, NULL},
    {"PATCH", "/admin/settings/request-log", s_request_log_patch, S_OPERATOR,
     "settings.request_log"},
    {"GET", "/admin/settings/log-level", s_log_level_get, S_VIEWER, NULL},
    {"PATCH", "/admin/settings/log-level", s_log_level_patch, S_OPERATOR, "settings.log_level"},
    {"POST", "/admin/providers", s_provider_create, S_OPERATOR, "provider.create"},
    {"GET", "/admin/providers", s_provider_list, S_VIEWER, NULL},
    {"POST", "/admin/providers/{provider}/keys", s_provider_key_create, S_OPERATOR,
     "provider_key.create"},
    {"GET", "/admin/providers/{provider}/keys", s_provider_key_list, S_VIEWER, NULL},
    {"GET", "/admin/providers/{provider}", s_provider_get, S_VIEWER, NULL},
    {"PATCH", "/admin/providers/{provider}", s_provider_patch, S_OPERATOR, "provider.update"},
    {"DELETE", "/admin/providers/{provider}", s_provider_delete, S_OPERATOR, "provider.disable"},
    {"GET", "/admin/providers/{provider}/models", s_provider_models, S_VIEWER, NULL},
    {"POST", "/admin/providers/{provider}/models/refresh", s_provider_models_refresh, S_OPERATOR,
     "provider.models_refresh"},
    {"GET", "/admin/provider-keys/{id}", s_provider_key_get, S_VIEWER, NULL},
    {"PATCH", "/admin/provider-keys/{id}", s_provider_key_patch, S_OPERATOR, "provider_key.update"},
    {"DELETE", "/admin/provider-keys/{id}", s_provider_key_delete, S_OPERATOR,
     "provider_key.disable"},
    {"POST", "/admin/models", s_model_create, S_OPERATOR, "model.create"},
    {"GET", "/admin/models", s_model_list, S_VIEWER, NULL},
    {"POST", "/admin/models/{model*}/routes", s_route_create, S_OPERATOR, "route.create"},
    {"GET", "/admin/models/{model*}/routes", s_route_list, S_VIEWER, NULL},
    {"POST", "/admin/models/{model*}/rules", s_rule_create, S_OPERATOR, "rule.create"},
    {"GET", "/admin/models/{model*}/rules", s_rule_list, S_VIEWER, NULL},
    {"GET", "/admin/models/{model*}/mappings", s_model_mappings, S_VIEWER, NULL},
    {"GET", "/admin/models/{model*}", s_model_get, S_VIEWER, NULL},
    {"PATCH", "/admin/models/{model*}", s_model_patch, S_OPERATOR, "model.update"},
    {"DELETE", "/admin/models/{model*}", s_model_delete, S_OPERATOR, "model.disable"},
    {"PATCH", "/admin/routes/{id}", s_route_patch, S_OPERATOR, "route.update"},
    {"DELETE", "/admin/routes/{id}", s_route_delete, S_OPERATOR, "route.delete"},
    {"DELETE", "/admin/rules/{id}", s_rule_delete, S_OPERATOR, "rule.delete"},
    //  Asks the routers; decide changes nothing, so a viewer may ask (its
    //  action names it in the table; no audit row is written).
    {"POST", "/admin/routing/decide", s_routing_decide, S_VIEWER, "routing.decide"},
    {"GET", "/admin/breakers", s_breakers_list, S_VIEWER, NULL},
    {"POST", "/admin/breakers/reset", s_breakers_reset, S_OPERATOR, "breaker.reset"},
    {"GET", "/admin/sticky", s_sticky_list, S_VIEWER, NULL},
    {"DELETE", "/admin/sticky/{session*}", s_sticky_delete, S_OPERATOR, "sticky.delete"},
    {"GET", "/admin/health", s_health, S_VIEWER, NULL},
    {"POST", "/admin/accounts", s_account_create, S_OPERATOR, "account.create"},
    {"GET", "/admin/accounts", s_account_list, S_VIEWER, NULL},
    {"POST", "/admin/accounts/{account*}/topup", s_account_topup, S_OPERATOR, "account.topup"},
    {"GET", "/admin/accounts/{account*}", s_account_get, S_VIEWER, NULL},
    {"PATCH", "/admin/accounts/{account*}", s_account_patch, S_OPERATOR, "account.update"},
    {"DELETE", "/admin/accounts/{account*}", s_account_delete, S_OPERATOR, "account.disable"},
    {"POST", "/admin/keys", s_key_create, S_OPERATOR, "key.create"},
    {"GET", "/admin/keys", s_key_list, S_VIEWER, NULL},
    {"POST", "/admin/keys/revoke", s_key_revoke_body, S_OPERATOR, "key.revoke"},
    {"POST", "/admin/keys/{key}/revoke", s_key_revoke, S_OPERATOR, "key.revoke"},
    {"GET", "/admin/keys/{id}", s_key_get, S_VIEWER, NULL},
    {"PATCH", "/admin/keys/{id}", s_key_patch, S_OPERATOR, "key.update"},
    {"DELETE", "/admin/keys/{id}", s_key_delete, S_OPERATOR, "key.revoke"},
    {"GET", "/admin/audit", s_audit_list, S_OPERATOR, NULL},
    {"POST", "/admin/users", s_user_create, S_OWNER, "user.create"},
    {"GET", "/admin/users", s_user_list, S_OWNER, NULL},
    {"GET", "/admin/users/{user}", s_user_get, S_OWNER, NULL},
    {"PATCH", "/admin/users/{user}", s_user_patch, S_OWNER, "user.update"},
    {"DELETE", "/admin/users/{user}", s_user_delete, S_OWNER, "user.disable"},
    {"GET", "/admin/sessions", s_session_list, S_OWNER, NULL},
    {"DELETE", "/admin/sessions/{id}", s_session_delete, S_OWNER, "session.revoke"},
    {"POST", "/admin/tokens", s_token_create, S_OWNER, "token.create"},
    {"GET", "/admin/tokens", s_token_list, S_OWNER, NULL},
    {"DELETE", "/admin/tokens/{id}", s_token_delete, S_OWNER, "token.revoke"},
    {"POST", "/admin/bootstrap/rotate", s_bootstrap_rotate, S_OWNER, "bootstrap.rotate"},
};
#define S_ROUTE_COUNT (sizeof s_routes / sizeof s_routes[0])

//  Finds the route for a request. Returns it (with params filled), or NULL
//  with *path_known set when some route has this path but another method.
static const s_route_t *s_route_find(const char *method, const char *path, const char **params,
                                     char *buf, size_t buf_size, bool *path_known)
{
    *path_known = false;
    for (size_t i = 0; i < S_ROUTE_COUNT; i++) {
        if (s_match(s_routes[i].pattern, path, params, buf, buf_size) < 0)
            continue;
        if (strcmp(s_routes[i].method, method) == 0)
            return &s_routes[i];
        *path_known = true;
    }
    return NULL;
}

//  GET /admin/routes: the table above, as OpenAPI spells paths ({model*}
//  becomes {model}), with the role each route needs.
static void s_route_table(s_call_t *call)
{
    json_t *data = json_array();
    for (size_t i = 0; i < S_ROUTE_COUNT; i++) {
        char path[256];
        size_t used = 0;
        for (const char *c = s_routes[i].pattern; *c && used + 1 < sizeof path; c++)
            if (*c != '*')
                path[used++] = *c;
        path[used] = '\0';
        json_t *route = json_pack("{s:s,s:s,s:s}", "method", s_routes[i].method, "path", path,
                                  "access", s_role_name(s_routes[i].access));
        json_object_set_new(route, "action",
                            s_routes[i].action ? json_string(s_routes[i].action) : json_null());
        json_array_append_new(data, route);
    }
    s_respond_json(call, 200, json_pack("{s:o}", "data", data));
}

static void s_unauthorized(s_call_t *call, const char *message)
{
    s_error(call, 401, "authentication_error", "%s", message);
}

#define S_WRONG_TOKEN "missing or wrong admin token (Authorization: Bearer <token>)"

//  Fills who from one row of (id, name, role, expires_at[, session]).
static void s_who_from(s_who_t *who, s_who_kind_t kind, PGresult *result)
{
    who->kind = kind;
    snprintf(who->id, sizeof who->id, "%s", PQgetvalue(result, 0, 0));
    snprintf(who->name, sizeof who->name, "%s", PQgetvalue(result, 0, 1));
    who->role = s_role_parse(PQgetvalue(result, 0, 2));
    snprintf(who->expires_at, sizeof who->expires_at, "%s",
             PQgetisnull(result, 0, 3) ? "" : PQgetvalue(result, 0, 3));
    if (kind == S_WHO_USER)
        snprintf(who->session, sizeof who->session, "%s", PQgetvalue(result, 0, 4));
    snprintf(who->actor, sizeof who->actor, "%s:%s", kind == S_WHO_USER ? "user" : "token",
             who->name);
    if (who->role == S_ANY)
        who->kind = S_WHO_NONE; //  a role the schema does not allow: trust nothing
}

//  The bootstrap token: the rotated one when settings hold one, else
//  ingress.admin_token; an owner while no active owner exists. Hashes are
//  compared in constant time, so not even the length leaks.
static int s_authenticate_bootstrap(s_call_t *call, const char *hash)
{
    PGresult *result =
        s_sql(call,
              "SELECT (SELECT value ->> 'token_hash' FROM settings WHERE key = "
              "'admin.bootstrap'), EXISTS (SELECT 1 FROM admin_users WHERE role = 'owner' AND "
              "status = 'active')",
              0, NULL);
    if (!result)
        return -1;
    char want[PROTO_CRYPTO_HASH_HEX + 1] = "";
    const char *configured = proto_config_str(call->self->config, "ingress.admin_token");
    if (!PQgetisnull(result, 0, 0))
        snprintf(want, sizeof want, "%s", PQgetvalue(result, 0, 0));
    else if (configured && *configured)
        proto_crypto_hash_hex(configured, strlen(configured), want);
    bool owner_exists = PQgetvalue(result, 0, 1)[0] == 't';
    PQclear(result);
    if (!*want || !proto_crypto_equal(want, hash)) {
        s_unauthorized(call, S_WRONG_TOKEN);
        return -1;
    }
    if (owner_exists) {
        s_unauthorized(call, "the bootstrap token is retired now that an owner exists; log in "
                             "(tollgate login) or use an API token");
        return -1;
    }
    s_who_t *who = &call->who;
    who->kind = S_WHO_BOOTSTRAP;
    who->role = S_OWNER;
    snprintf(who->name, sizeof who->name, "bootstrap");
    snprintf(who->actor, sizeof who->actor, "bootstrap");
    return 0;
}

//  Proves who is calling from the bearer token: a session (tgs_), an API
//  token (tgt_), else the bootstrap token. Tokens are found by their
//  SHA-256, which is all the database holds. Returns 0 with call->who set,
//  or -1 after answering (401, or 500 when the database failed).
static int s_authenticate(s_call_t *call)
{
    const char *token = s_bearer(call->request->authorization);
    if (!token) {
        s_unauthorized(call, S_WRONG_TOKEN);
        return -1;
    }
    char hash[PROTO_CRYPTO_HASH_HEX + 1];
    proto_crypto_hash_hex(token, strlen(token), hash);
    bool session = strncmp(token, "tgs_", 4) == 0;
    if (!session && strncmp(token, "tgt_", 4) != 0)
        return s_authenticate_bootstrap(call, hash);
    //  One statement both checks and touches, so a token in use shows when
    //  it was last used.
    PGresult *result =
        s_sql(call,
              session ? "UPDATE admin_sessions s SET last_used_at = now() FROM admin_users u "
                        "WHERE s.token_hash = $1 AND u.id = s.user_id AND s.revoked_at IS NULL "
                        "AND s.expires_at > now() AND u.status = 'active' RETURNING u.id, "
                        "u.username, u.role, to_json(s.expires_at) #>> '{}', s.id"
                      : "UPDATE admin_api_tokens SET last_used_at = now() WHERE token_hash = $1 "
                        "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()) "
                        "RETURNING id, name, role, to_json(expires_at) #>> '{}'",
              1, (const char *[]){hash});
    if (!result)
        return -1;
    if (PQntuples(result) == 1)
        s_who_from(&call->who, session ? S_WHO_USER : S_WHO_TOKEN, result);
    PQclear(result);
    if (call->who.kind == S_WHO_NONE) {
        s_unauthorized(call, session ? "the session has expired, was revoked or is unknown; log "
                                       "in again (tollgate login)"
                                     : "the API token has expired, was revoked or is unknown");
        return -1;
    }
    return 0;
}

//  True when the caller's role is enough for the route.
static bool s_allowed(const s_route_t *route, const s_who_t *who)
{
    if (route->access == S_PUBLIC)
        return true;
    if (who->kind == S_WHO_NONE)
        return false;
    return who->role >= route->access;
}

//  Parses the body of POST and PATCH into call->body (an empty body is {}).
static int s_parse_body(s_call_t *call)
{
    const ingress_admin_request_t *request = call->request;
    if (request->body_size > S_MAX_BODY) {
        s_error(call, 413, "invalid_request_error", "body larger than %d bytes", S_MAX_BODY);
        return -1;
    }
    if (!request->body || request->body_size == 0) {
        call->body = json_object();
        return 0;
    }
    json_error_t error;
    call->body = json_loadb(request->body, request->body_size, JSON_REJECT_DUPLICATES, &error);
    if (!call->body) {
        s_invalid(call, "body is not valid JSON: %s (line %d, column %d)", error.text, error.line,
                  error.column);
        return -1;
    }
    if (!json_is_object(call->body)) {
        s_invalid(call, "body must be a JSON object");
        return -1;
    }
    return 0;
}

//  Forgets what one attempt at a request left behind, for a retry.
static void s_call_reset(s_call_t *call)
{
    call->statements = 0;
    call->connection_lost = false;
    call->in_transaction = false;
    call->audited = false;
    call->audit_action = NULL;
    call->audit_target[0] = '\0';
    json_decref(call->audit_before);
    json_decref(call->audit_after);
    call->audit_before = call->audit_after = NULL;
}

//  Everything after the route lookup, in the order the answers rank: who
//  is calling (401), whether the path exists (404, 405), whether they may
//  (403), the body (400), then the handler. An unknown path is 401 to an
//  outsider, so the table cannot be probed without a token. Makes sure no
//  transaction is left open.
static void s_serve(s_call_t *call, bool path_known)
{
    s_call_reset(call);
    const s_route_t *route = call->route;
    const char *method = call->request->method ? call->request->method : "";
    if ((!route || route->access != S_PUBLIC) && call->who.kind == S_WHO_NONE &&
        s_authenticate(call) != 0)
        return;
    if (!route) {
        s_error(call, path_known ? 405 : 404, path_known ? "method_not_allowed" : "not_found",
                path_known ? "method not allowed here" : "no such admin endpoint");
        return;
    }
    if (!s_allowed(route, &call->who)) {
        s_error(call, 403, "permission_error", "this needs the %s role; %s has the %s role",
                s_role_name(route->access), call->who.actor, s_role_name(call->who.role));
        return;
    }
    if (!call->body && (strcmp(method, "POST") == 0 || strcmp(method, "PATCH") == 0) &&
        s_parse_body(call) != 0)
        return;
    if (!call->body)
        call->body = json_object();
    route->handler(call);
    if (call->in_transaction && PQstatus(call->self->db) == CONNECTION_OK) {
        PGresult *result = PQexec(call->self->db, "ROLLBACK");
        PQclear(result);
    }
    call->in_transaction = false;
    if (!call->response)
        s_error(call, 500, "api_error", "no answer");
}

int ingress_admin_handle(ingress_admin_t *self, const ingress_admin_request_t *request,
                         char **response_body, char **content_type)
{
    assert(self && request && response_body && content_type);
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    s_call_t call = {.self = self, .request = request};
    const char *method = request->method ? request->method : "";
    const char *path = request->path ? request->path : "";
    bool path_known = false;
    call.route =
        s_route_find(method, path, call.params, call.param_buf, sizeof call.param_buf, &path_known);
    if ((!call.route || call.route->access != S_PUBLIC) && !s_bearer(request->authorization))
        s_unauthorized(&call, S_WRONG_TOKEN); //  no database needed to say no
    else {
        if (PQstatus(self->db) != CONNECTION_OK) {
            PQreset(self->db);
            s_session_setup(self->db);
        }
        s_serve(&call, path_known);
        //  A connection that broke while idle shows only when the first
        //  statement fails. Nothing reached the database then, so one
        //  retry on a fresh connection is safe; later failures are not
        //  retried, since a COMMIT may have happened.
        if (call.connection_lost && call.statements == 1) {
            PQreset(self->db);
            if (PQstatus(self->db) == CONNECTION_OK) {
                s_session_setup(self->db);
                s_serve(&call, path_known);
            }
        }
    }
    struct timespec ended;
    clock_gettime(CLOCK_MONOTONIC, &ended);
    double ms = (double)(ended.tv_sec - started.tv_sec) * 1e3 +
                (double)(ended.tv_nsec - started.tv_nsec) / 1e6;
    //  The pattern, never the path: a path may hold a client key (revoke).
    log_info(request->request_id, "admin: %d %s %s by %s from %s (%.1f ms)", call.status, method,
             call.route ? call.route->pattern : "(unrouted)",
             call.who.kind == S_WHO_NONE ? "anonymous" : call.who.actor,
             request->client_ip ? request->client_ip : "?", ms);
    json_decref(call.body);
    s_call_reset(&call);
    *response_body = call.response;
    *content_type = (char *)(call.content_type ? call.content_type : S_CONTENT_TYPE);
    return call.status;
}

ingress_admin_t *ingress_admin_new(proto_config_t *config, char *error, size_t error_size)
{
    assert(config);
    if (proto_crypto_init() != 0) {
        snprintf(error, error_size, "cannot initialise libsodium");
        return NULL;
    }
    PGconn *db = proto_db_connect(config, error, error_size);
    if (!db)
        return NULL;
    s_session_setup(db);
    ingress_admin_t *self = calloc(1, sizeof *self);
    assert(self);
    self->config = config;
    self->db = db;
    //  Connect to the routers now, so the first question finds them ready.
    s_routers_open(self);
    for (int i = 0; i < self->router_count; i++)
        s_router_socket(self, i);
    if (!*proto_config_str(config, "ingress.admin_token"))
        log_warn(NULL, "admin: ingress.admin_token is empty; only logins and API tokens are "
                       "accepted");
    return self;
}

void ingress_admin_destroy(ingress_admin_t **self_p)
{
    assert(self_p);
    ingress_admin_t *self = *self_p;
    if (!self)
        return;
    PQfinish(self->db);
    s_routers_close(self);
    free(self->dummy_hash);
    free(self);
    *self_p = NULL;
}

// ---------------------------------------------------------------------------
//  Self test

static void s_test_micros(void)
{
    int64_t value = 0;
    assert(s_parse_micros("10.50", false, &value) == 0 && value == 10500000);
    assert(s_parse_micros("0.000001", false, &value) == 0 && value == 1);
    assert(s_parse_micros("2.5", false, &value) == 0 && value == 2500000);
    assert(s_parse_micros("7", false, &value) == 0 && value == 7000000);
    assert(s_parse_micros("0", false, &value) == 0 && value == 0);
    assert(s_parse_micros("-3.25", true, &value) == 0 && value == -3250000);
    assert(s_parse_micros("1000000000", false, &value) == 0 && value == S_MONEY_MAX);
    assert(s_parse_micros("-3.25", false, &value) == -1);
    assert(s_parse_micros("1e3", false, &value) == -1);
    assert(s_parse_micros("1.0000001", false, &value) == -1);
    assert(s_parse_micros("", false, &value) == -1);
    assert(s_parse_micros("-", true, &value) == -1);
    assert(s_parse_micros(".5", false, &value) == -1);
    assert(s_parse_micros("5.", false, &value) == -1);
    assert(s_parse_micros("+5", false, &value) == -1);
    assert(s_parse_micros(" 5", false, &value) == -1);
    assert(s_parse_micros("5 ", false, &value) == -1);
    assert(s_parse_micros("1,5", false, &value) == -1);
    assert(s_parse_micros("0x10", false, &value) == -1);
    assert(s_parse_micros("1000000000.000001", false, &value) == -1);
    assert(s_parse_micros("99999999999999999999999", false, &value) == -1);
    assert(s_parse_micros("9223372036854.775807", false, &value) == -1);
}

static void s_test_match(void)
{
    const char *params[S_MAX_PARAMS];
    char buf[256];
    assert(s_match("/admin/providers", "/admin/providers", params, buf, sizeof buf) == 0);
    assert(s_match("/admin/providers", "/admin/providers/", params, buf, sizeof buf) == 0);
    assert(s_match("/admin/providers", "/admin/provider", params, buf, sizeof buf) == -1);
    assert(s_match("/admin/providers", "/admin/providers/x", params, buf, sizeof buf) == -1);
    assert(s_match("/admin/providers/{p}", "/admin/providers/openai", params, buf, sizeof buf) ==
           1);
    assert(strcmp(params[0], "openai") == 0);
    assert(s_match("/admin/providers/{p}", "/admin/providers//", params, buf, sizeof buf) == -1);
    assert(s_match("/admin/providers/{p}/keys", "/admin/providers/7/keys", params, buf,
                   sizeof buf) == 1);
    assert(strcmp(params[0], "7") == 0);
    assert(s_match("/admin/models/{m*}", "/admin/models/openai/gpt-4o", params, buf, sizeof buf) ==
           1);
    assert(strcmp(params[0], "openai/gpt-4o") == 0);
    assert(s_match("/admin/models/{m*}/routes", "/admin/models/a/b/routes", params, buf,
                   sizeof buf) == 1);
    assert(strcmp(params[0], "a/b") == 0);
    assert(s_match("/admin/models/{m*}/routes", "/admin/models/routes", params, buf, sizeof buf) ==
           -1);
    assert(s_match("/admin/models/{m*}", "/admin/models", params, buf, sizeof buf) == -1);
    assert(s_match("/admin/models/{m*}", "admin/models/x", params, buf, sizeof buf) == -1);
    assert(s_match("/admin/models/{m*}", "/", params, buf, sizeof buf) == -1);
    assert(s_match("/admin/models/{m*}", "", params, buf, sizeof buf) == -1);

    //  The table: first match by method, 405 for a known path.
    bool known = false;
    const s_route_t *route =
        s_route_find("GET", "/admin/models/x/routes", params, buf, sizeof buf, &known);
    assert(route && route->handler == s_route_list && strcmp(params[0], "x") == 0);
    route = s_route_find("GET", "/admin/models/x/y", params, buf, sizeof buf, &known);
    assert(route && route->handler == s_model_get && strcmp(params[0], "x/y") == 0);
    route = s_route_find("POST", "/admin/keys/revoke", params, buf, sizeof buf, &known);
    assert(route && route->handler == s_key_revoke_body);
    route = s_route_find("POST", "/admin/keys/tg-abc/revoke", params, buf, sizeof buf, &known);
    assert(route && route->handler == s_key_revoke && strcmp(params[0], "tg-abc") == 0);
    route = s_route_find("PUT", "/admin/providers", params, buf, sizeof buf, &known);
    assert(!route && known);
    route = s_route_find("GET", "/admin/nothing", params, buf, sizeof buf, &known);
    assert(!route && !known);
    route = s_route_find("POST", "/admin/accounts/team a/topup", params, buf, sizeof buf, &known);
    assert(route && route->handler == s_account_topup && strcmp(params[0], "team a") == 0);
    //  Every pattern is well formed: it matches itself with placeholders filled.
    for (size_t i = 0; i < S_ROUTE_COUNT; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s", s_routes[i].pattern);
        for (char *open; (open = strchr(path, '{'));)
            memmove(open + 1, strchr(open, '}') + 1, strlen(strchr(open, '}') + 1) + 1),
                *open = 'x';
        assert(s_match(s_routes[i].pattern, path, params, buf, sizeof buf) >= 0);
    }
}

static void s_test_utf8(void)
{
    char text[32];
    strcpy(text, "caf\xc3\xa9 ok");
    s_utf8_clean(text);
    assert(strcmp(text, "caf\xc3\xa9 ok") == 0);
    strcpy(text, "a\xff"
                 "b\xc3");
    s_utf8_clean(text);
    assert(strcmp(text, "a?b?") == 0);
    strcpy(text, "\xe2\x80"
                 "x");
    s_utf8_clean(text);
    assert(strcmp(text, "??x") == 0);
}

static void s_test_query(void)
{
    char out[64];
    assert(s_query_get("account=team%20a&limit=5", "account", out, sizeof out) == 1);
    assert(strcmp(out, "team a") == 0);
    assert(s_query_get("account=team%20a&limit=5", "limit", out, sizeof out) == 1);
    assert(strcmp(out, "5") == 0);
    assert(s_query_get("accounts=x&limit=5", "account", out, sizeof out) == 0);
    assert(s_query_get("before=2026-01-01T00:00:00+00:00", "before", out, sizeof out) == 1);
    assert(strcmp(out, "2026-01-01T00:00:00+00:00") == 0);
    assert(s_query_get("a=%4", "a", out, sizeof out) == -1);
    assert(s_query_get("a=%zz", "a", out, sizeof out) == -1);
    assert(s_query_get("a=%00", "a", out, sizeof out) == -1);
    assert(s_query_get("a=", "a", out, sizeof out) == 1 && *out == '\0');
    assert(s_query_get(NULL, "a", out, sizeof out) == 0);
    assert(s_query_get("", "a", out, sizeof out) == 0);
    assert(s_query_get("&&a=1", "a", out, sizeof out) == 1 && strcmp(out, "1") == 0);
    char tiny[4];
    assert(s_query_get("a=12345", "a", tiny, sizeof tiny) == -1);
}

//  Field validation against a fake call (no database needed).
static void s_test_fields(void)
{
    ingress_admin_request_t request = {.method = "POST", .path = "/admin/providers"};
    s_call_t call = {.request = &request};
    s_value_t v[S_MAX_FIELDS] = {{0}};
    const s_field_t *f = s_provider_fields;

    call.body = json_pack("{s:s,s:s,s:s,s:i}", "name", "openai", "protocol", "openai", "base_url",
                          "https://api.openai.com/v1/", "priority", 5);
    assert(s_read(&call, f, v) == 0 && !call.response);
    assert(strcmp(S_VALUE(f, v, "base_url")->text, "https://api.openai.com/v1") == 0);
    assert(strcmp(S_VALUE(f, v, "priority")->text, "5") == 0);
    assert(!S_VALUE(f, v, "weight")->present && !S_VALUE(f, v, "weight")->text);
    s_values_free(v, S_MAX_FIELDS);
    json_decref(call.body);

    struct {
        const char *body;    //  request body
        const char *message; //  part of the error message expected
    } bad[] = {
        {"{\"protocol\":\"openai\",\"base_url\":\"http://x\"}", "'name' is required"},
        {"{\"name\":\"a b\",\"protocol\":\"openai\",\"base_url\":\"http://x\"}", "'name'"},
        {"{\"name\":\"a\",\"protocol\":\"cohere\",\"base_url\":\"http://x\"}",
         "'protocol' must be one of openai, openai-responses, anthropic, gemini"},
        {"{\"name\":\"a\",\"protocol\":\"openai\",\"base_url\":\"ftp://x\"}", "'base_url'"},
        {"{\"name\":\"a\",\"protocol\":\"openai\",\"base_url\":\"http://\"}", "'base_url'"},
        {"{\"name\":\"a\",\"protocol\":\"openai\",\"base_url\":\"http://x y\"}", "'base_url'"},
        {"{\"name\":\"a\",\"protocol\":\"openai\",\"base_url\":\"http://x\",\"weight\":-1}",
         "'weight'"},
        {"{\"name\":\"a\",\"protocol\":\"openai\",\"base_url\":\"http://x\",\"priority\":1.5}",
         "'priority'"},
        {"{\"name\":\"a\",\"protocol\":\"openai\",\"base_url\":\"http://x\",\"colour\":1}",
         "unknown field 'colour'"},
        {"{\"name\":null,\"protocol\":\"openai\",\"base_url\":\"http://x\"}",
         "'name' cannot be null"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(v, 0, sizeof v);
        call.body = json_loads(bad[i].body, 0, NULL);
        assert(call.body);
        assert(s_read(&call, f, v) == -1);
        assert(call.status == 400 && call.response && strstr(call.response, bad[i].message));
        s_values_free(v, S_MAX_FIELDS);
        json_decref(call.body);
        free(call.response);
        call.response = NULL;
    }

    //  Money: decimal strings, whole units, micros, and their mistakes.
    const s_field_t *m = s_model_fields;
    struct {
        const char *body;     //  request body
        const char *price_in; //  expected parameter, or NULL for an error
    } money[] = {
        {"{\"name\":\"m\",\"price_in\":\"2.50\"}", "2500000"},
        {"{\"name\":\"m\",\"price_in\":3}", "3000000"},
        {"{\"name\":\"m\",\"price_in_micros\":15}", "15"},
        {"{\"name\":\"m\",\"price_in\":2.5}", NULL},
        {"{\"name\":\"m\",\"price_in\":\"1e3\"}", NULL},
        {"{\"name\":\"m\",\"price_in\":\"-1\"}", NULL},
        {"{\"name\":\"m\",\"price_in_micros\":\"15\"}", NULL},
        {"{\"name\":\"m\",\"price_in\":\"1\",\"price_in_micros\":1}", NULL},
        {"{\"name\":\"m\",\"price_in\":\"1000001\"}", NULL},
    };
    for (size_t i = 0; i < sizeof money / sizeof money[0]; i++) {
        memset(v, 0, sizeof v);
        call.body = json_loads(money[i].body, 0, NULL);
        assert(call.body);
        int rc = s_read(&call, m, v);
        if (money[i].price_in)
            assert(rc == 0 && strcmp(S_VALUE(m, v, "price_in")->text, money[i].price_in) == 0);
        else
            assert(rc == -1 && call.status == 400);
        s_values_free(v, S_MAX_FIELDS);
        json_decref(call.body);
        free(call.response);
        call.response = NULL;
    }

    //  Names lists: JSON text for SQL, null for any.
    memset(v, 0, sizeof v);
    call.body = json_loads("{\"account\":\"a\",\"models\":[\"gpt-4o\",\"x/y\"]}", 0, NULL);
    assert(s_read(&call, s_key_fields, v) == 0);
    assert(strcmp(S_VALUE(s_key_fields, v, "models")->text, "[\"gpt-4o\",\"x/y\"]") == 0);
    s_values_free(v, S_MAX_FIELDS);
    json_decref(call.body);
    memset(v, 0, sizeof v);
    call.body = json_loads("{\"account\":7,\"models\":null}", 0, NULL);
    assert(s_read(&call, s_key_fields, v) == 0);
    assert(S_VALUE(s_key_fields, v, "models")->present);
    assert(!S_VALUE(s_key_fields, v, "models")->text);
    assert(strcmp(S_VALUE(s_key_fields, v, "account")->text, "7") == 0);
    s_values_free(v, S_MAX_FIELDS);
    json_decref(call.body);
    memset(v, 0, sizeof v);
    call.body = json_loads("{\"account\":\"a\",\"models\":[\"\"]}", 0, NULL);
    assert(s_read(&call, s_key_fields, v) == -1 && call.status == 400);
    s_values_free(v, S_MAX_FIELDS);
    json_decref(call.body);
    free(call.response);
    call.response = NULL;

    //  Top-ups may be negative (adjustments); balances may not.
    memset(v, 0, sizeof v);
    call.body = json_loads("{\"amount\":\"-1.5\"}", 0, NULL);
    assert(s_read(&call, s_topup_fields, v) == 0);
    assert(strcmp(v[0].text, "-1500000") == 0);
    s_values_free(v, S_MAX_FIELDS);
    json_decref(call.body);
    memset(v, 0, sizeof v);
    call.body = json_loads("{\"name\":\"a\",\"balance\":\"-1\"}", 0, NULL);
    assert(s_read(&call, s_account_fields, v) == -1);
    s_values_free(v, S_MAX_FIELDS);
    json_decref(call.body);
    free(call.response);
    call.response = NULL;

    //  Hints: last four characters, only for long secrets.
    char hint[16];
    s_secret_hint("sk-test-abcdefgh1234", hint, sizeof hint);
    assert(strcmp(hint, "\u20261234") == 0);
    s_secret_hint("short", hint, sizeof hint);
    assert(strcmp(hint, "\u2026") == 0);
}

//  Checks one answer: status and error type.
static void s_test_answer(int status, char *body, int want_status, const char *want_type)
{
    assert(status == want_status);
    json_t *answer = json_loads(body, 0, NULL);
    assert(answer);
    const char *error_type =
        json_string_value(json_object_get(json_object_get(answer, "error"), "type"));
    assert(error_type && strcmp(error_type, want_type) == 0);
    json_decref(answer);
}

//  Authentication, routing and roles without a database: requests that
//  are refused before any statement runs, through the public entry point
//  (no token) and through s_serve with a caller already proved.
static void s_test_handle(void)
{
    proto_config_t *config = proto_config_new();
    char error[256];
    assert(proto_config_set(config, "ingress.admin_token", "tga_test", "test", error,
                            sizeof error) == 0);
    ingress_admin_t self = {.config = config, .db = NULL};
    struct {
        const char *method, *path, *authorization; //  the request
    } outsiders[] = {
        {"GET", "/admin/providers", NULL},      {"GET", "/admin/providers", "Basic tga_test"},
        {"GET", "/admin/providers", "Bearer "}, {"GET", "/admin/nope", NULL},
        {"POST", "/admin/logout", NULL},
    };
    for (size_t i = 0; i < sizeof outsiders / sizeof outsiders[0]; i++) {
        ingress_admin_request_t request = {.method = outsiders[i].method,
                                           .path = outsiders[i].path,
                                           .authorization = outsiders[i].authorization,
                                           .client_ip = "127.0.0.1"};
        char *body = NULL, *type = NULL;
        int status = ingress_admin_handle(&self, &request, &body, &type);
        assert(strcmp(type, "application/json") == 0);
        s_test_answer(status, body, 401, "authentication_error");
        free(body);
    }

    struct {
        const char *method, *path, *body; //  the request
        s_access_t role;                  //  the caller's
        int status;                       //  expected answer
        const char *type;                 //  expected error type
    } cases[] = {
        {"GET", "/admin/nope", NULL, S_OWNER, 404, "not_found"},
        {"PUT", "/admin/providers", NULL, S_OWNER, 405, "method_not_allowed"},
        {"POST", "/admin/providers", "{", S_OWNER, 400, "invalid_request_error"},
        {"POST", "/admin/providers", "[1]", S_OWNER, 400, "invalid_request_error"},
        {"POST", "/admin/providers", "{\"a\":1,\"a\":2}", S_OWNER, 400, "invalid_request_error"},
        {"POST", "/admin/providers", "{}", S_VIEWER, 403, "permission_error"},
        {"DELETE", "/admin/keys/7", NULL, S_VIEWER, 403, "permission_error"},
        {"GET", "/admin/audit", NULL, S_VIEWER, 403, "permission_error"},
        {"POST", "/admin/users", "{}", S_OPERATOR, 403, "permission_error"},
        {"GET", "/admin/tokens", NULL, S_OPERATOR, 403, "permission_error"},
        {"POST", "/admin/users", "{\"username\":\"a\"}", S_OWNER, 400, "invalid_request_error"},
        {"POST", "/admin/users",
         "{\"username\":\"a b\",\"password\":\"long enough pw\","
         "\"role\":\"owner\"}",
         S_OWNER, 400, "invalid_request_error"},
        {"POST", "/admin/users", "{\"username\":\"ab\",\"password\":\"short\",\"role\":\"owner\"}",
         S_OWNER, 400, "invalid_request_error"},
        {"POST", "/admin/users",
         "{\"username\":\"ab\",\"password\":\"long enough pw\","
         "\"role\":\"god\"}",
         S_OWNER, 400, "invalid_request_error"},
        {"PATCH", "/admin/settings/request-log", "{\"level\":\"all\"}", S_OPERATOR, 400,
         "invalid_request_error"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ingress_admin_request_t request = {.method = cases[i].method,
                                           .path = cases[i].path,
                                           .body = cases[i].body,
                                           .body_size = cases[i].body ? strlen(cases[i].body) : 0};
        s_call_t call = {.self = &self, .request = &request};
        call.who.kind = S_WHO_TOKEN;
        call.who.role = cases[i].role;
        snprintf(call.who.actor, sizeof call.who.actor, "token:test");
        bool known = false;
        call.route = s_route_find(request.method, request.path, call.params, call.param_buf,
                                  sizeof call.param_buf, &known);
        s_serve(&call, known);
        s_test_answer(call.status, call.response, cases[i].status, cases[i].type);
        json_decref(call.body);
        s_call_reset(&call);
        free(call.response);
    }
    proto_config_destroy(&config);
}

//  The table's promises: a viewer changes nothing, access management is
//  for owners, every change has an audit action, only login is public.
static void s_test_roles(void)
{
    s_who_t viewer = {.kind = S_WHO_USER, .role = S_VIEWER};
    s_who_t operator= {.kind = S_WHO_USER, .role = S_OPERATOR};
    s_who_t nobody = {.kind = S_WHO_NONE};
    for (size_t i = 0; i < S_ROUTE_COUNT; i++) {
        const s_route_t *route = &s_routes[i];
        bool reads = strcmp(route->method, "GET") == 0;
        bool own_session = route->handler == s_logout || route->handler == s_login;
        bool asks = route->handler == s_routing_decide; //  a POST that changes nothing
        assert(reads == (route->action == NULL));
        assert((route->access == S_PUBLIC) == (route->handler == s_login));
        if (!reads && !own_session && !asks)
            assert(!s_allowed(route, &viewer));
        if (strstr(route->pattern, "/users") || strstr(route->pattern, "/tokens") ||
            strstr(route->pattern, "/sessions") || strstr(route->pattern, "/bootstrap"))
            assert(route->access == S_OWNER && !s_allowed(route, &operator));
        if (route->access != S_PUBLIC)
            assert(!s_allowed(route, &nobody));
    }
    assert(s_role_parse("owner") == S_OWNER && s_role_parse("viewer") == S_VIEWER);
    assert(s_role_parse("root") == S_ANY && s_role_parse(NULL) == S_ANY);
    assert(strcmp(s_role_name(S_OPERATOR), "operator") == 0);
}

//  Secrets never reach the audit log: by field name anywhere, and by shape.
static void s_test_mask(void)
{
    char key[PROTO_CRYPTO_API_KEY_LEN + 1], token[80];
    proto_crypto_new_api_key(key, sizeof key);
    s_new_token("tgs_", token, sizeof token);
    assert(strncmp(token, "tgs_", 4) == 0 && strlen(token) == 68);
    assert(s_looks_secret(key) && s_looks_secret(token));
    assert(!s_looks_secret("tg-team") && !s_looks_secret("tgs_") && !s_looks_secret("openai"));
    json_t *body = json_pack("{s:s,s:s,s:{s:s,s:[s,s]},s:s,s:n,s:s}", "secret", "sk-live-123",
                             "name", "ok", "nested", "password", "hunter2hunter2", "list", key,
                             "fine", "note", token, "token", "key_hash", "abc");
    char *text = s_masked_text(body);
    assert(text);
    assert(!strstr(text, "sk-live-123") && !strstr(text, "hunter2") && !strstr(text, key) &&
           !strstr(text, token) && !strstr(text, "abc"));
    assert(strstr(text, "\"name\":\"ok\"") && strstr(text, "\"fine\""));
    assert(strstr(text, "\"token\":null")); //  null stays null
    free(text);
    //  The original is untouched.
    assert(strcmp(json_string_value(json_object_get(body, "secret")), "sk-live-123") == 0);
    json_decref(body);
    json_t *empty = json_object();
    assert(s_masked_text(empty) == NULL && s_masked_text(NULL) == NULL);
    json_decref(empty);
    json_t *bare = json_string(key);
    text = s_masked_text(bare);
    assert(strcmp(text, "\"***\"") == 0);
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
        assert(json);
        assert((s_password_problem(json) == NULL) == cases[i].ok);
        json_decref(json);
    }
    char *long_text = malloc(S_PASSWORD_MAX + 2);
    memset(long_text, 'x', S_PASSWORD_MAX + 1);
    long_text[S_PASSWORD_MAX + 1] = '\0';
    json_t *json = json_string(long_text);
    assert(s_password_problem(json) != NULL);
    json_decref(json);
    free(long_text);

    assert(s_username_valid("alice") && s_username_valid("a.b@c-d_e"));
    assert(!s_username_valid("") && !s_username_valid("a b") && !s_username_valid("a/b"));

    assert(s_bearer(NULL) == NULL && s_bearer("Basic x") == NULL && s_bearer("Bearer ") == NULL);
    assert(strcmp(s_bearer("bearer  tgs_x"), "tgs_x") == 0);

    //  The hash we store is argon2id, and verifies.
    char hash[crypto_pwhash_STRBYTES];
    assert(crypto_pwhash_str_alg(hash, "correct horse", 13, S_PW_OPSLIMIT, S_PW_MEMLIMIT,
                                 crypto_pwhash_ALG_ARGON2ID13) == 0);
    assert(strncmp(hash, "$argon2id$", 10) == 0);
    ingress_admin_t self = {0};
    assert(s_password_ok(&self, hash, "correct horse"));
    assert(!s_password_ok(&self, hash, "correct horsf"));
    assert(!s_password_ok(&self, NULL, "correct horse") && self.dummy_hash);
    free(self.dummy_hash);
}

//  The pure parts of the routing endpoints: tags, times, merged router lists.
static void s_test_routing(void)
{
    assert(s_tag_valid("context-1m") && s_tag_valid("prompt-cache-1h") && s_tag_valid("a.b_c"));
    assert(!s_tag_valid("") && !s_tag_valid("Vision") && !s_tag_valid("a,b") &&
           !s_tag_valid("a b"));
    char long_tag[S_TAG_MAX + 2];
    memset(long_tag, 'a', sizeof long_tag - 1);
    long_tag[sizeof long_tag - 1] = '\0';
    assert(!s_tag_valid(long_tag));

    json_t *ms = json_integer(1767225600250); //  2026-01-01T00:00:00.250Z
    json_t *iso = s_iso_ms(ms);
    assert(strcmp(json_string_value(iso), "2026-01-01T00:00:00.250Z") == 0);
    json_decref(iso);
    json_decref(ms);
    iso = s_iso_ms(NULL);
    assert(json_is_null(iso));
    json_decref(iso);

    //  Two routers that agree on one breaker and not on another.
    proto_msg_t *replies[3] = {NULL};
    const char *metas[] = {
        "{\"breakers\":[{\"layer\":\"model\",\"provider_id\":1,\"upstream_model\":\"m\","
        "\"state\":\"open\",\"reopens_at_ms\":5},{\"layer\":\"key\",\"provider_key_id\":2,"
        "\"state\":\"disabled\"}]}",
        NULL,
        "{\"breakers\":[{\"layer\":\"model\",\"provider_id\":1,\"upstream_model\":\"m\","
        "\"state\":\"open\",\"reopens_at_ms\":6}]}"};
    for (int i = 0; i < 3; i++)
        if (metas[i]) {
            replies[i] = proto_msg_new(PROTO_MSG_BREAKERS_REPLY);
            proto_msg_set_status(replies[i], 200);
            proto_msg_set_meta(replies[i], metas[i]);
        }
    static const char *const identity[] = {"layer",          "provider_key_id", "provider_id",
                                           "upstream_model", "state",           NULL};
    json_t *merged = s_merge_lists(replies, 3, "breakers", identity);
    assert(json_array_size(merged) == 2);
    json_t *routers = json_object_get(json_array_get(merged, 0), "routers");
    assert(json_array_size(routers) == 2 && json_integer_value(json_array_get(routers, 1)) == 2);
    assert(json_integer_value(json_object_get(json_array_get(merged, 0), "reopens_at_ms")) == 5);
    assert(json_array_size(json_object_get(json_array_get(merged, 1), "routers")) == 1);
    json_decref(merged);

    json_t *names = json_loads("{\"p\":{\"1\":\"openai\"},\"k\":{\"2\":{\"provider_id\":1,"
                               "\"provider\":\"openai\",\"name\":\"main\"}}}",
                               0, NULL);
    json_t *entry = json_pack("{s:i}", "provider_key_id", 2);
    s_name_entry(entry, names);
    assert(strcmp(json_string_value(json_object_get(entry, "provider")), "openai") == 0);
    assert(strcmp(json_string_value(json_object_get(entry, "key")), "main") == 0);
    assert(json_integer_value(json_object_get(entry, "provider_id")) == 1);
    json_decref(entry);
    json_decref(names);
    for (int i = 0; i < 3; i++)
        proto_msg_destroy(&replies[i]);
}

void ingress_admin_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_admin: ");
    proto_log_init("ingress", PROTO_LOG_WARN);
    assert(proto_crypto_init() == 0);
    s_test_micros();
    s_test_match();
    s_test_query();
    s_test_utf8();
    s_test_fields();
    s_test_handle();
    s_test_roles();
    s_test_mask();
    s_test_passwords();
    s_test_routing();
    if (verbose)
        printf("OK\n");
}
