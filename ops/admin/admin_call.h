/*  admin_call: what every admin handler shares (internal to ops/admin).

    One request being answered is an admin_call_t. Handlers read its body
    through tables of field specs (admin_field_t), run constant SQL through
    PQexecParams, and let PostgreSQL build the JSON they return
    (json_build_object), so objects look the same from every endpoint. No
    SQL text ever contains a value from the request: values are parameters,
    and the only SQL built at run time (column lists of INSERT and UPDATE,
    the objects of admin_resource) is assembled from names in our own
    tables.

    Every helper that can fail sets the call's answer and returns -1 (or
    NULL), so a handler chains them and stops at the first failure.
*/
#ifndef ADMIN_CALL_H_INCLUDED
#define ADMIN_CALL_H_INCLUDED

#include "admin_api.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#define ADMIN_MAX_PATH 2048                       //  longest path we route
#define ADMIN_MAX_PARAMS 2                        //  {params} in one pattern
#define ADMIN_MAX_FIELDS 24                       //  fields in one spec table
#define ADMIN_MICROS 1000000                      //  micro-units per currency unit
#define ADMIN_MONEY_MAX INT64_C(1000000000000000) //  1e9 currency units: sums never overflow
#define ADMIN_PRICE_MAX INT64_C(1000000000000)    //  1e6 per million tokens
#define ADMIN_INT_MAX 1000000000                  //  bound for priorities and limits
#define ADMIN_WEIGHT_MAX 1000000                  //  weights: router_select multiplies three
#define ADMIN_LIST_MAX 1000                       //  names in an allowed-models list
#define ADMIN_LIMIT_MAX 1000                      //  most rows in one page
#define ADMIN_TAG_MAX 64                          //  bytes in one capability tag
#define ADMIN_TOKEN_RANDOM 32                     //  random bytes in a session or API token
#define ADMIN_TOKEN_SIZE (5 + 2 * ADMIN_TOKEN_RANDOM + 1) //  "tgs_" + hex + NUL

//  Roles, in order of power; a route's access is the least role it needs.
typedef enum {
    ADMIN_PUBLIC = -1,  //  no token at all (login)
    ADMIN_ANY = 0,      //  any valid token (me, logout)
    ADMIN_ACCOUNT = 1,  //  an account holder: their own account only (/admin/self)
    ADMIN_VIEWER = 2,   //  reads
    ADMIN_OPERATOR = 3, //  changes configuration and money
    ADMIN_OWNER = 4,    //  manages admin users, tokens, sessions, bootstrap
} admin_access_t;

typedef enum {
    ADMIN_WHO_NONE,      //  not authenticated (yet)
    ADMIN_WHO_BOOTSTRAP, //  admin.token (or its rotated successor)
    ADMIN_WHO_USER,      //  a login session
    ADMIN_WHO_TOKEN,     //  a scoped API token
} admin_who_kind_t;

//  Who is calling, once authenticated.
typedef struct {
    admin_who_kind_t kind; //  how they proved it
    admin_access_t role;   //  ADMIN_ACCOUNT .. ADMIN_OWNER
    char id[24];           //  user id (sessions) or token id
    char session[24];      //  session id, for logout
    char account_id[24];   //  the account of an account holder; empty for staff
    char name[104];        //  username or token name
    char actor[128];       //  for the audit log: "user:alice", "token:ci", "bootstrap"
    char expires_at[48];   //  of the session or token; empty when none
    bool cookie;           //  proved by the console's session cookie
} admin_who_t;

typedef struct admin_route admin_route_t;
typedef struct admin_resource admin_resource_t;
typedef struct _admin_routers_t admin_routers_t;

typedef struct admin_call admin_call_t;
typedef void(admin_handler_fn)(admin_call_t *call);

//  What a route does: a handler of its own, or one operation of the
//  generic path on a resource.
typedef enum {
    ADMIN_OP_NONE,   //  a handler of its own
    ADMIN_OP_LIST,   //  GET collection
    ADMIN_OP_CREATE, //  POST collection
    ADMIN_OP_GET,    //  GET item
    ADMIN_OP_PATCH,  //  PATCH item
    ADMIN_OP_DELETE, //  DELETE item
} admin_op_t;

struct admin_route {
    const char *method;               //  HTTP method
    const char *pattern;              //  "/admin/providers/{provider}/keys"; {x*}: 1+ segments
    admin_handler_fn *handler;        //  answers the request
    admin_access_t access;            //  least role that may call it
    const char *action;               //  audit action of a change; NULL for reads
    const admin_resource_t *resource; //  the resource of a generic operation, else NULL
    admin_op_t op;                    //  which operation
};

//  One request being handled.
struct admin_call {
    admin_api_t *self;                                 //  the API
    PGconn *db;                                        //  its connection
    proto_config_t *config;                            //  its configuration
    admin_routers_t *routers;                          //  its sockets to the routers
    char **dummy_hash;                                 //  its argon2id of a random password,
                                                       //  made on first use (admin_login)
    const admin_api_request_t *request;                //  borrowed from the caller
    const admin_route_t *route;                        //  matched route (points at matched)
    const char *params[ADMIN_MAX_PARAMS];              //  path parameters, into param_buf
    char param_buf[ADMIN_MAX_PATH + ADMIN_MAX_PARAMS]; //  their text
    json_t *body;                                      //  parsed body (an object), or NULL
    int status;                                        //  HTTP status of the answer
    char *response;                                    //  its body, owned until handed out
    char *set_cookie;                                  //  Set-Cookie of the answer, or NULL
    int statements;                                    //  statements sent for this request
    bool connection_lost;                              //  a statement failed on a broken connection
    bool in_transaction;                               //  BEGIN sent, no COMMIT yet
    admin_who_t who;                                   //  the caller, once authenticated
    const char *audit_action;                          //  overrides the route's action
    char audit_target[128];                            //  what changed ("7"); empty: params[0]
    json_t *audit_before;                              //  the object before the change, or NULL
    json_t *audit_after;                               //  and after it, or NULL
    bool audited;                                      //  the audit row is written
    const char *content_type;                          //  of the answer when not JSON, else NULL
    char secret[160];                                  //  shown once in this answer (a new key
                                                       //  or token); wiped when the call ends
    admin_route_t matched;                             //  the route found for the request
};

// ---------------------------------------------------------------------------
//  Request fields: one table per body shape

typedef enum {
    ADMIN_F_TEXT,   //  string of min..max bytes, no control characters
    ADMIN_F_PNAME,  //  provider name ([A-Za-z0-9_.-]{1,100})
    ADMIN_F_UNAME,  //  username ([A-Za-z0-9_.@-]{1,100})
    ADMIN_F_ENUM,   //  one of `choices`
    ADMIN_F_INT,    //  integer within min..max
    ADMIN_F_MICROS, //  money: `field` as a decimal string (or whole units), or the
                    //  integer micro-units under the name `micros`
    ADMIN_F_NAMES,  //  array of names, or null for "any"
    ADMIN_F_TAGS,   //  array of capability tags (a-z 0-9 . _ -)
    ADMIN_F_TIME,   //  a timestamp PostgreSQL reads (ISO 8601)
    ADMIN_F_URL,    //  http(s) URL; trailing slashes dropped
    ADMIN_F_REF,    //  a name or an integer id of another object
    ADMIN_F_ANY,    //  any JSON; the handler checks it
    ADMIN_F_BOOL,   //  true or false
    ADMIN_F_SET,    //  not read from the body: a hook sets it (hashes, sealed secrets)
} admin_kind_t;

//  Where a field is accepted (bits).
#define ADMIN_CREATE 1 //  in the body of a create
#define ADMIN_PATCH 2  //  in the body of a PATCH
#define ADMIN_BOTH (ADMIN_CREATE | ADMIN_PATCH)

typedef struct {
    const char *field;           //  name in the JSON body
    const char *column;          //  column it sets; NULL when a hook uses it
    admin_kind_t kind;           //  what values are accepted
    int use;                     //  ADMIN_CREATE, ADMIN_PATCH or both; 0 = always
    int64_t min, max;            //  bounds (lengths for TEXT)
    const char *const *choices;  //  NULL-terminated, for ENUM
    bool nullable;               //  JSON null is accepted (and clears the column)
    const char *micros;          //  for MICROS: the name of the integer micro-units form
    bool required;               //  must be present (on create)
    const admin_resource_t *ref; //  for REF with a column: what the name or id resolves to
    const char *cast;            //  SQL cast of the parameter ("bytea"), when not the kind's
} admin_field_t;

typedef struct {
    bool present;     //  the body had this field (or a hook set it)
    const char *text; //  value as a parameter; NULL for SQL NULL
    char buf[32];     //  storage for numbers
    char *owned;      //  storage that must be freed
    json_t *json;     //  the raw value (borrowed from the body)
} admin_value_t;

// ---------------------------------------------------------------------------
//  Answers

void admin_respond(admin_call_t *call, int status, char *body);
//  Answers with a JSON value (stolen) followed by a newline.
void admin_respond_json(admin_call_t *call, int status, json_t *value);
//  Answers with JSON text PostgreSQL made, re-encoded compactly.
void admin_respond_text(admin_call_t *call, int status, const char *text);
//  Answers {"error":{"message":…,"type":…}}.
void admin_error(admin_call_t *call, int status, const char *type, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
#define admin_invalid(call, ...) admin_error(call, 400, "invalid_request_error", __VA_ARGS__)
#define admin_not_found(call, ...) admin_error(call, 404, "not_found", __VA_ARGS__)
#define admin_conflict(call, ...) admin_error(call, 409, "conflict", __VA_ARGS__)
//  Shortens a user-given name for an error message.
const char *admin_short(const char *text, char *buf, size_t size);
//  Replaces bytes that are not valid UTF-8 with '?', in place.
void admin_utf8_clean(char *text);

// ---------------------------------------------------------------------------
//  Database

//  Per-session settings, applied after every connect and reset.
void admin_session_setup(PGconn *db);
//  Runs one statement with text parameters (NULL is SQL NULL). Returns the
//  result (caller clears it), or NULL after setting the error answer.
PGresult *admin_sql(admin_call_t *call, const char *sql, int count, const char *const *values);
//  Runs a statement returning at most one row of one column. Returns 1 with
//  a copy of the value in *out (caller frees; may be NULL), 0 when there is
//  no row, -1 after setting the error answer.
int admin_sql_one(admin_call_t *call, const char *sql, int count, const char *const *values,
                  char **out);
int admin_begin(admin_call_t *call);
//  Commits, writing the audit row first, so a change and its record are one.
int admin_commit(admin_call_t *call);
//  Answers with the JSON a query made, or 404 with `what` when it found no row.
void admin_respond_query(admin_call_t *call, int status, const char *sql, int count,
                         const char *const *values, const char *what);
//  Keeps the JSON object a query made for id as the audit's before (or
//  after) image. Returns 0, or -1 after setting the error answer.
int admin_audit_image(admin_call_t *call, bool after, const char *sql, const char *id);
#define admin_before(call, sql, id) admin_audit_image(call, false, sql, id)
#define admin_after(call, sql, id) admin_audit_image(call, true, sql, id)
//  Writes one more audit row in the call's transaction, for a change the
//  call made besides its own (another object it moved along): the call's
//  who, route and request, with this action, target and before and after
//  images (JSON text, or NULL). Returns 0, or -1 after setting the error
//  answer.
int admin_audit_also(admin_call_t *call, const char *action, const char *target, const char *before,
                     const char *after);

// ---------------------------------------------------------------------------
//  Bodies, queries, values

//  Reads every field of the body accepted for `use` (ADMIN_CREATE or
//  ADMIN_PATCH): rejects unknown fields, missing required ones (on create)
//  and malformed values. values has one slot per spec. Returns 0, or -1
//  after setting the error answer.
int admin_read(admin_call_t *call, const admin_field_t *fields, admin_value_t *values, int use);
void admin_values_free(admin_value_t *values, size_t count);
//  Index of a field in its table (asserts it is there).
size_t admin_field_index(const admin_field_t *fields, const char *field);
#define ADMIN_VALUE(fields, values, name) (&(values)[admin_field_index(fields, name)])
//  Number of present fields.
int admin_present(const admin_field_t *fields, const admin_value_t *values);
//  The SQL a parameter of this field is written as: "$3::bigint", or for
//  names "ARRAY(SELECT json_array_elements_text($3::json))". Into out.
void admin_field_param(const admin_field_t *field, int number, char *out, size_t size);
//  Updates row `id` of `table` with every present field that has a column.
//  Returns rows changed (0 when none matched or nothing was given), or -1.
int admin_patch(admin_call_t *call, const char *table, bool has_updated_at,
                const admin_field_t *fields, admin_value_t *values, const char *id);

//  Finds a row of a resource by name (when it has one), else by id; a name
//  wins over an id. Writes the id into id (24 bytes). Returns 0, or -1
//  after answering 404.
int admin_resolve(admin_call_t *call, const admin_resource_t *resource, const char *ident,
                  char *id);
//  Checks that path parameter 0 is a numeric id; answers 404 when not.
int admin_path_id(admin_call_t *call, const char *what);

//  Finds `name` in a raw query string and percent-decodes its value. '+'
//  stays '+'. Returns 1 found, 0 absent, -1 malformed or too long.
int admin_query_get(const char *query, const char *name, char *out, size_t out_size);
//  An optional query value; *present tells whether it was given. Returns 0,
//  or -1 after answering 400.
int admin_query_opt(admin_call_t *call, const char *name, char *out, size_t size, bool *present);
//  `limit` (1..ADMIN_LIMIT_MAX, default fallback) as text (24 bytes).
int admin_query_limit(admin_call_t *call, long fallback, char *text);

//  Parses an exact decimal amount ("10.50", "-3") into micro-units.
int admin_parse_micros(const char *text, bool allow_negative, int64_t *out);
bool admin_printable(const char *text);
bool admin_is_id(const char *text);
bool admin_tag_valid(const char *tag);
//  Checks a JSON array of tags (NULL: not given). Returns 0, or -1 answered.
int admin_tags_check(admin_call_t *call, const char *field, json_t *tags);

// ---------------------------------------------------------------------------
//  Roles, secrets, tokens

const char *admin_role_name(admin_access_t access);
//  Parses "owner", "operator", "viewer" or "account"; ADMIN_ANY for anything else.
admin_access_t admin_role_parse(const char *name);
//  True for text shaped like one of our secrets (tg-…, tga_…, tgs_…, tgt_…).
bool admin_looks_secret(const char *text);
//  A masked deep copy as compact text, or NULL for NULL or {}. Caller frees.
char *admin_masked_text(json_t *value);
//  A new random token: prefix and 64 hex digits (ADMIN_TOKEN_SIZE bytes).
void admin_new_token(const char *prefix, char *out, size_t out_size);
//  The token in `Bearer <token>`, or NULL.
const char *admin_bearer(const char *authorization);
//  NULL when a new password is fine, else what is wrong.
const char *admin_password_problem(json_t *json);
//  Checks and hashes a password with argon2id into hash
//  (crypto_pwhash_STRBYTES). Returns 0, or -1 after answering.
int admin_password_hash(admin_call_t *call, const char *field, json_t *password, char *hash);
bool admin_username_valid(const char *name);
//  True when the caller's role is enough for the route.
bool admin_allowed(const admin_route_t *route, const admin_who_t *who);

//  argon2id of password into hash (crypto_pwhash_STRBYTES) at the cost
//  below, counted in admin_hashing(). Returns 0, or -1 (out of memory).
int admin_argon2_hash(char *hash, const char *password);
//  True when password matches an argon2id hash; counted in admin_hashing().
bool admin_argon2_verify(const char *hash, const char *password);
//  argon2id computations running now, on any thread of the process. The
//  listener's /healthz shows it: a listener that answers while it is above
//  0 does not hash passwords itself (tests/admin/auth.test.mjs).
int admin_hashing(void);

//  argon2id cost: OWASP's floor (19 MiB, 2 passes); crypto_pwhash_str_needs_rehash
//  lets a later release raise these.
#define ADMIN_PW_OPSLIMIT 2
#define ADMIN_PW_MEMLIMIT (19u * 1024u * 1024u)

//  Self test of the pure helpers.
void admin_call_test(bool verbose);

#endif
