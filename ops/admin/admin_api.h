/*  admin_api: the operator admin API (JSON over HTTP) of tollgate-admin.

    admin_server hands each complete request to admin_api_handle on one of
    its worker threads; every worker owns one admin_api_t (its own
    PostgreSQL connection and router sockets), so a request waits only for
    its own statements and never for another's. Every change is one
    transaction; the schema's triggers NOTIFY `tollgate_config`, so every
    program reloads its catalog within ~20 ms of the commit.

    Who may call: every request but POST /admin/login carries
    `Authorization: Bearer <token>` (or, from the console, the session
    cookie and a CSRF token, see below), one of
      - a session token (tgs_…) from POST /admin/login {username, password};
        its user's role (owner, operator, viewer, account) applies;
      - a scoped API token (tgt_…) from POST /admin/tokens, with its own role;
      - the bootstrap token (admin.token, written by `tollgate up`), acting
        as an owner, accepted only while no active owner exists (or, after
        POST /admin/bootstrap/rotate, only the rotated one); wrong guesses
        are rate limited per client address.
    Tokens are stored as SHA-256 hashes and compared by hash; passwords as
    argon2id. Each route names the least role it needs: a viewer reads, an
    operator changes configuration and money, an owner manages admin users,
    tokens and sessions; an account holder (role `account`, scoped to one
    account) reaches only the /admin/self routes. Every change writes an
    audit_log row inside the transaction that makes it (who, what, when,
    from where, before/after with secrets masked). Logins lock out per
    (user, client address) and per address, with a back-off.

    The console: POST /admin/login with {"cookie": true} answers with the
    session in an HttpOnly, SameSite=Strict cookie instead of the body, and
    a CSRF token; a request authenticated by that cookie must carry the
    token in X-CSRF-Token unless it is a GET.

    Resources (providers, keys, models, accounts, ...) are declared as
    tables (admin_resource.h) served by one generic path; GET
    /admin/resources describes them for the CLI and the console.

    Endpoints and their bodies are described in docs/admin-api.md and
    docs/openapi.json (checked against GET /admin/routes by a test).
*/
#ifndef ADMIN_API_H_INCLUDED
#define ADMIN_API_H_INCLUDED

#include "proto_config.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *method;        //  "GET", "POST", "PATCH", "DELETE"
    const char *path;          //  percent-decoded path without the query ("/admin/providers")
    const char *query;         //  raw query string without '?', percent-encoded; may be NULL
    const char *authorization; //  the Authorization header, or NULL
    const char *cookie;        //  the Cookie header, or NULL
    const char *csrf;          //  the X-CSRF-Token header, or NULL
    const char *body;          //  request body (need not be NUL-terminated), or NULL
    size_t body_size;          //  bytes in body
    const char *client_ip;     //  peer address, for lockout and the audit log; may be NULL
    const char *request_id;    //  x-request-id of the answer, for the log and audit; may be NULL
} admin_api_request_t;

//  One answer. Strings are owned by the answer (admin_api_answer_free).
typedef struct {
    int status;               //  HTTP status
    char *body;               //  JSON (or CSV) text
    const char *content_type; //  static string
    char *set_cookie;         //  a Set-Cookie header value, or NULL
} admin_api_answer_t;

typedef struct _admin_api_t admin_api_t;

//  Opens the API's own PostgreSQL connection (proto_db_connect). The
//  configuration is borrowed and must outlive the object. Returns NULL with
//  a reason in error on failure. Caller owns return value.
admin_api_t *admin_api_new(proto_config_t *config, char *error, size_t error_size);

//  Closes the connection, destroys the object and nulls the pointer.
void admin_api_destroy(admin_api_t **self_p);

//  Handles one request synchronously, on the caller's thread. Fills the
//  answer. Reconnects to PostgreSQL once per request when the connection
//  is broken.
void admin_api_handle(admin_api_t *self, const admin_api_request_t *request,
                      admin_api_answer_t *answer);

//  Frees what an answer holds.
void admin_api_answer_free(admin_api_answer_t *answer);

//  Self test of the pure parts: routing table, roles, validation, amount
//  parsing, secret masking, password policy.
void admin_api_test(bool verbose);

#endif
