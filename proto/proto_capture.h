/*  proto_capture: the request log's detail capture (docs/admin-api.md,
    "Request logs"), at the level settings 'request_log' sets at run time.

    Two programs each capture the half they can redact, and the ledger
    joins the halves into one request_details row:

    - ingress, at `headers` and `full`: the client's request headers (lower
      case, without authorization, x-api-key, x-goog-api-key, api-key,
      cookie and set-cookie) and the response headers it sent;
    - dispatch, at `full`: the request body it received and the response
      body it relayed (what the client got, in the client's protocol), cut
      to max_body_bytes at a UTF-8 boundary, with every provider secret of
      the catalog and anything shaped like a client key (`tg-` and 48
      characters) replaced by `***`. Only dispatch holds provider secrets,
      so only it can redact them; client keys never leave ingress, so their
      shape is what is redacted.

    Each half goes to the ledger as a DETAILS message (fire-and-forget on
    proto_trace's socket, like spans); nothing waits for it. Values are also
    passed through the same redaction before they leave the process.

    The settings are process-wide, set by proto_service from settings
    'request_log' whenever it changes (the same LISTEN as the log level).
*/
#ifndef PROTO_CAPTURE_H_INCLUDED
#define PROTO_CAPTURE_H_INCLUDED

#include "proto_catalog.h"
#include "proto_trace.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum {
    PROTO_CAPTURE_BASE = 0,    //  nothing beyond the usage row
    PROTO_CAPTURE_HEADERS = 1, //  headers
    PROTO_CAPTURE_FULL = 2,    //  headers and bodies
} proto_capture_level_t;

typedef struct _proto_capture_t proto_capture_t;

//  Sets the level and body cap in force (from settings 'request_log').
void proto_capture_configure(proto_capture_level_t level, size_t max_body_bytes);

//  Parses the settings JSON text ({"level": "full", "max_body_bytes": N})
//  and configures; unknown or missing values leave base / 65536.
void proto_capture_configure_json(const char *text);

//  The level in force.
proto_capture_level_t proto_capture_level(void);

//  Ingress: starts a capture of a request's headers, or NULL below
//  `headers`. Caller owns return value.
proto_capture_t *proto_capture_headers_new(struct MHD_Connection *connection);

//  Ingress: records the response headers (self may be NULL).
void proto_capture_response_headers(proto_capture_t *self, struct MHD_Response *response);

//  Dispatch: starts a capture of bodies with the request body, or NULL
//  below `full`. Caller owns return value.
proto_capture_t *proto_capture_bodies_new(const void *request_body, size_t size);

//  Dispatch: appends response bytes (self may be NULL); bytes past the cap
//  are counted as truncated, not kept.
void proto_capture_response_body(proto_capture_t *self, const void *data, size_t size);

//  Sends the capture to the ledger through the program's span sender (tracer), under
//  request_id and trace, redacting catalog's provider secrets (catalog may be NULL), and
//  destroys it. Nothing is sent for a NULL capture or tracer, or an empty request id.
void proto_capture_send(proto_capture_t **self_p, proto_trace_t *tracer, const char *request_id,
                        const char *trace, int client_protocol, proto_catalog_t *catalog);

//  Destroys a capture without sending it; nulls the pointer.
void proto_capture_destroy(proto_capture_t **self_p);

//  Replaces every occurrence of each secret (and client-key-shaped token)
//  in text with "***", in place; text stays NUL-terminated. Secrets
//  shorter than 8 bytes are left alone (they would match too much).
void proto_capture_redact(char *text, const char *const *secrets, size_t count);

//  Self test.
void proto_capture_test(bool verbose);

#endif
