/*  ingress_admin: the operator admin API (JSON over HTTP), first cut.

    The ingress' admin listener hands each complete request to
    ingress_admin_handle, which answers it synchronously from its own
    PostgreSQL connection. Every change is one transaction; the schema's
    triggers NOTIFY `tollgate_config`, so every program reloads its catalog
    within ~20 ms of the commit. The admin API is off the hot path: a slow
    statement blocks only the admin listener's caller, and statement_timeout
    (10 s) bounds that.

    Who may call: every request but POST /admin/login carries
    `Authorization: Bearer <token>`, one of
      - a session token (tgs_…) from POST /admin/login {username, password};
        its user's role (owner, operator, viewer) applies;
      - a scoped API token (tgt_…) from POST /admin/tokens, with its own role;
      - the bootstrap token (ingress.admin_token, written by `tollgate up`),
        acting as an owner, accepted only while no active owner exists (or,
        after POST /admin/bootstrap/rotate, only the rotated one).
    Tokens are stored as SHA-256 hashes and compared by hash; passwords as
    argon2id. Each route names the least role it needs: a viewer reads, an
    operator changes configuration and money, an owner manages admin users,
    tokens and sessions. Every change writes an audit_log row inside the
    transaction that makes it (who, what, when, from where, before/after
    with secrets masked). Logins lock out per user and per client IP after
    ingress.admin_lockout_attempts failures for ingress.admin_lockout_ms.

    Secrets: provider secrets are sealed with secret_key before they reach
    the database and are never returned or logged; client API keys are
    returned once, by POST /admin/keys, and only their SHA-256 is stored.

    Endpoints and their bodies are described in docs/admin-api.md and
    docs/openapi.json (checked against GET /admin/routes by a test).
*/
#ifndef INGRESS_ADMIN_H_INCLUDED
#define INGRESS_ADMIN_H_INCLUDED

#include "proto_config.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *method;        //  "GET", "POST", "PATCH", "DELETE"
    const char *path;          //  percent-decoded path without the query ("/admin/providers")
    const char *query;         //  raw query string without '?', percent-encoded; may be NULL
    const char *authorization; //  the Authorization header, or NULL
    const char *body;          //  request body (need not be NUL-terminated), or NULL
    size_t body_size;          //  bytes in body
    const char *client_ip;     //  peer address, for lockout and the audit log; may be NULL
    const char *request_id;    //  x-request-id of the answer, for the log and audit; may be NULL
} ingress_admin_request_t;

typedef struct _ingress_admin_t ingress_admin_t;

//  Opens the admin API's own PostgreSQL connection (proto_db_connect). The
//  configuration is borrowed and must outlive the object. Returns NULL with
//  a reason in error on failure. Caller owns return value.
ingress_admin_t *ingress_admin_new(proto_config_t *config, char *error, size_t error_size);

//  Closes the connection, destroys the object and nulls the pointer.
void ingress_admin_destroy(ingress_admin_t **self_p);

//  Handles one request synchronously. Returns the HTTP status; sets
//  *response_body (JSON, caller frees with free()) and *content_type (a
//  static string, not to be freed). Reconnects to PostgreSQL once per
//  request when the connection is broken.
int ingress_admin_handle(ingress_admin_t *self, const ingress_admin_request_t *request,
                         char **response_body, char **content_type);

//  Self test of the pure parts: routing table, roles, validation, amount
//  parsing, secret masking, password policy.
void ingress_admin_test(bool verbose);

#endif
