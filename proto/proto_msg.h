/*  proto_msg: every message Tollgate's programs exchange over ZeroMQ.

    Wire form, one ZeroMQ multipart message:
        [routing id]   only on ROUTER sockets; handled here, not by callers
        envelope       msgpack array:
                         0 signature  str  "TG"
                         1 version    uint PROTO_MSG_VERSION
                         2 type       uint proto_msg_type_t
                         3 request_id str  up to 64 printable bytes ("" for control)
                         4 trace      str  W3C traceparent, or ""
                         5 deadline   uint ms since the epoch, 0 = none
                         6 fields     map  field id (uint) -> value
        [body]         raw bytes, optional, its own frame: forwarded untouched

    A receiver rejects (returns -2) a frame with a wrong signature or version,
    an unknown type or field id, a value of the wrong kind, a string over its
    limit, a missing required field, trailing bytes, or extra frames.

    Messages, their fields (* = required) and their meaning:

    PING            -> control socket   (none)
    PONG            <- control socket   instance*, meta (JSON: uptime, counters)
    ADMIT           ingress -> billing  key_id*, account_id*, model*, stream, tokens_in (estimate),
                                        tokens_out (the request's own output limit),
                                        client_protocol (names its fields in a refusal),
                                        images (an image generation's n)
    ADMIT_REPLY     billing -> ingress  status* (200 = admitted), error_code, error_message,
                                        retry_after_ms, reserve_micros, grant (billing's
                                        voucher for the request's SETTLE, docs/billing.md
                                        "Who may settle")
    ROUTE           ingress -> router   model*, key_id*, account_id*, client_protocol*, session,
                                        capabilities (required tags, comma-separated)
    ROUTE_REPLY     router -> ingress   status* (200 = candidates follow), candidates,
                                        error_code, error_message
    DISPATCH        ingress -> dispatch client_protocol*, model*, stream, candidates*,
                                        key_id*, account_id*, reserve_micros, lease_id,
                                        grant (from ADMIT_REPLY or LEASE), include_usage,
                                        attempt (which send of the request this is: 1 =
                                        the first, which dispatch need not look up among
                                        the requests it finished; absent = unknown),
                                        link and link_sequence (the last DONE that came
                                        from this instance with them: it and all before it
                                        on that connection arrived, so their answers need
                                        not be kept to be sent again);
                                        body = the client's request body
    CHUNK           dispatch -> ingress sequence*, status, content_type and dropped on the
                                        first; body = bytes for the client, already in its
                                        protocol
    DONE            dispatch -> ingress status*, content_type, error_code, tokens_*,
                                        provider_id, upstream_model, dropped (when no CHUNK
                                        went before), link and link_sequence (when dispatch
                                        keeps the answer to send again: the connection it
                                        went down and its number there); body = last bytes
                                        (or the whole answer when not streamed)
    CANCEL          ingress -> dispatch reason (the client went away)
    OUTCOME         dispatch -> pub     provider_id*, provider_key_id*, upstream_model*,
                                        status*, attempt, latency_us, ttfb_us, retry_after_ms,
                                        error_code
    HEALTH          health -> pub       provider_id*, provider_key_id*, upstream_model, state*,
                                        success_ppm, latency_us, ttfb_us
    SETTLE          dispatch -> billing the usage record: account_id*, key_id*, model*,
                                        provider_id, provider_key_id, upstream_model, status*,
                                        tokens_in, tokens_out, tokens_cache_read,
                                        tokens_cache_write, tokens_cache_write_1h (the part
                                        of tokens_cache_write kept 1 hour), images (how
                                        many an image generation made), latency_us,
                                        ttfb_us, stream (the client asked for one: its
                                        slowness is its first byte's), started_us*,
                                        attempts, estimated,
                                        reserve_micros, lease_id, grant (DISPATCH's),
                                        loss (an upstream call whose
                                        dispatch died before anything reached the client:
                                        recorded as the operator's loss under its own id,
                                        never charged)
    ENTRY           billing -> ledger   SETTLE's fields plus cost_micros*
    COMMIT          ledger -> billing,  the record is durable in PostgreSQL; the sender may
                    billing -> dispatch forget it. txid (ledger -> billing): the PostgreSQL
                                        transaction that wrote it (pg_current_xact_id), so
                                        billing knows whether a catalog's balance already
                                        holds its charge
    CONFIG_CHANGED  admin -> all        topic* ("keys", "accounts", "providers", "models", ...)
    BALANCE         ingress -> billing  key_id*, account_id*: what the key's account has and
                                        spent (GET /v1/usage); the billing instance of the
                                        account answers
    BALANCE_REPLY   billing -> ingress  status* (200; 401 with error_code for an unusable
                                        key), meta (JSON: billing_balance.h's figures)

    Routing administration: admin -> any router (ROUTER router.bind); the
    answer is JSON text in `meta` (docs/routing.md shows the shapes).
    EXPLAIN         admin -> router     model*, key_id, account_id, session, capabilities:
                                        a route decision that changes nothing
    EXPLAIN_REPLY   router -> admin     status* (200; 404/503 when nothing routes, meta
                                        still explains), meta {model, mode, candidates
                                        [{rank, provider_id, provider_key_id,
                                        upstream_model, score, ...}], excluded [{..., why,
                                        detail}], last_resort}
    BREAKERS        admin -> router     (none): list breakers that are not closed
    BREAKERS_REPLY  router -> admin     status*, meta {breakers: [{layer, state, reason,
                                        provider_key_id | provider_id + upstream_model,
                                        opened_at_ms, reopens_at_ms}]}
    BREAKER_RESET   admin -> router     provider_key_id (key layer) or provider_id +
                                        upstream_model (model layer): close it in every
                                        router; answered with BREAKERS_REPLY
    STICKY          admin -> router     session (optional filter): list bindings
    STICKY_REPLY    router -> admin     status*, meta {bindings: [{session, provider_id,
                                        provider_key_id, upstream_model, bound_at_ms,
                                        expires_at_ms}]} or {deleted: n}
    STICKY_DELETE   admin -> router     session*: drop the binding in every router;
                                        answered with STICKY_REPLY

    Tracing (proto_trace): fire-and-forget, dropped when the queue is full.
    SPAN            any -> ledger       instance*, started_us* (wall clock), meta* (JSON
                                        {name, span_id, parent_id, ...}), latency_us
                                        (duration), status, attempt, provider_id,
                                        provider_key_id, upstream_model, error_code;
                                        the envelope's request id and trace say whose
    DETAILS         ingress, dispatch   body = JSON object: the request_details columns
                    -> ledger           one program captured (proto_capture), already
                                        redacted; the ledger joins the halves by request id
*/
#ifndef PROTO_MSG_H_INCLUDED
#define PROTO_MSG_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#define PROTO_MSG_SIGNATURE "TG"
#define PROTO_MSG_VERSION 1
#define PROTO_MSG_RID_MAX 64         //  request id bytes
#define PROTO_MSG_TRACE_MAX 128      //  traceparent bytes
#define PROTO_MSG_PEER_MAX 31        //  program name bytes of a sender
#define PROTO_MSG_STR_MAX 4096       //  any other string field
#define PROTO_MSG_ENVELOPE_MAX 65536 //  envelope frame bytes
#define PROTO_MSG_CANDIDATES_MAX 64  //  candidates in one decision

//  Message types, each described once: X(NAME, id, required fields), the
//  required fields written R(field) | R(field) ... (0 for none). proto_msg.c
//  makes its table of names and required fields from this list; the enum
//  below takes the ids. R is the caller's: it is only expanded by an X that
//  uses its third argument.
#define PROTO_MSG_TYPES(X, R)                                                                      \
    X(PING, 1, 0)                                                                                  \
    X(PONG, 2, R(instance))                                                                        \
    X(ADMIT, 10, R(key_id) | R(account_id) | R(model))                                             \
    X(ADMIT_REPLY, 11, R(status))                                                                  \
    X(ROUTE, 12, R(model) | R(key_id) | R(account_id) | R(client_protocol))                        \
    X(ROUTE_REPLY, 13, R(status))                                                                  \
    X(DISPATCH, 14, R(client_protocol) | R(model) | R(key_id) | R(account_id))                     \
    X(CHUNK, 15, R(sequence))                                                                      \
    X(DONE, 16, R(status))                                                                         \
    X(CANCEL, 17, 0)                                                                               \
    X(OUTCOME, 18, R(provider_id) | R(provider_key_id) | R(upstream_model) | R(status))            \
    X(HEALTH, 19, R(provider_id) | R(provider_key_id) | R(state))                                  \
    X(SETTLE, 20, R(account_id) | R(key_id) | R(model) | R(status) | R(started_us))                \
    X(ENTRY, 21,                                                                                   \
      R(account_id) | R(key_id) | R(model) | R(status) | R(started_us) | R(cost_micros))           \
    X(COMMIT, 22, 0)                                                                               \
    X(CONFIG_CHANGED, 23, R(topic))                                                                \
    X(EXPLAIN, 40, R(model))                                                                       \
    X(EXPLAIN_REPLY, 41, R(status))                                                                \
    X(BREAKERS, 42, 0)                                                                             \
    X(BREAKERS_REPLY, 43, R(status))                                                               \
    X(BREAKER_RESET, 44, 0)                                                                        \
    X(STICKY, 45, 0)                                                                               \
    X(STICKY_REPLY, 46, R(status))                                                                 \
    X(STICKY_DELETE, 47, R(session))                                                               \
    X(LEASE_ASK, 24, R(instance) | R(key_id) | R(account_id))                                      \
    X(LEASE, 25, R(key_id) | R(account_id) | R(lease_id) | R(status))                              \
    X(LEASE_RETURN, 26, R(key_id) | R(account_id) | R(lease_id))                                   \
    X(LEASE_REVOKE, 27, R(account_id))                                                             \
    X(ROUTING_TABLE, 28, R(version) | R(instance))                                                 \
    X(DEMAND, 29, R(instance))                                                                     \
    X(BALANCE, 30, R(key_id) | R(account_id))                                                      \
    X(BALANCE_REPLY, 31, R(status))                                                                \
    X(SPAN, 60, R(instance) | R(started_us) | R(meta))                                             \
    X(DETAILS, 61, 0)                                                                              \
    X(BATCH, 62, 0)

typedef enum {
#define X(name, id, required) PROTO_MSG_##name = id,
    PROTO_MSG_TYPES(X, )
#undef X
} proto_msg_type_t;

//  Fields: X(name, id, kind). Kinds: U64 unsigned, I64 signed, BOOL, STR,
//  CANDIDATES (a list of proto_candidate_t).
#define PROTO_MSG_FIELDS(X)                                                                        \
    X(instance, 1, STR)                                                                            \
    X(meta, 2, STR)                                                                                \
    X(key_id, 3, U64)                                                                              \
    X(account_id, 4, U64)                                                                          \
    X(model, 5, STR)                                                                               \
    X(stream, 6, BOOL)                                                                             \
    X(status, 7, U64)                                                                              \
    X(error_code, 8, STR)                                                                          \
    X(error_message, 9, STR)                                                                       \
    X(retry_after_ms, 10, U64)                                                                     \
    X(reserve_micros, 11, I64)                                                                     \
    X(client_protocol, 12, U64)                                                                    \
    X(session, 13, STR)                                                                            \
    X(candidates, 14, CANDIDATES)                                                                  \
    X(include_usage, 15, BOOL)                                                                     \
    X(sequence, 16, U64)                                                                           \
    X(content_type, 17, STR)                                                                       \
    X(reason, 18, STR)                                                                             \
    X(provider_id, 19, U64)                                                                        \
    X(provider_key_id, 20, U64)                                                                    \
    X(upstream_model, 21, STR)                                                                     \
    X(attempt, 22, U64)                                                                            \
    X(latency_us, 23, U64)                                                                         \
    X(ttfb_us, 24, U64)                                                                            \
    X(state, 25, U64)                                                                              \
    X(success_ppm, 26, U64)                                                                        \
    X(tokens_in, 27, U64)                                                                          \
    X(tokens_out, 28, U64)                                                                         \
    X(tokens_cache_read, 29, U64)                                                                  \
    X(tokens_cache_write, 30, U64)                                                                 \
    X(started_us, 31, U64)                                                                         \
    X(attempts, 32, U64)                                                                           \
    X(estimated, 33, BOOL)                                                                         \
    X(cost_micros, 34, I64)                                                                        \
    X(topic, 35, STR)                                                                              \
    X(link, 36, U64)                                                                               \
    X(link_sequence, 37, U64)                                                                      \
    X(dropped, 47, STR)                                                                            \
    X(capabilities, 48, STR)                                                                       \
    X(lease_id, 49, U64)                                                                           \
    X(credit_micros, 50, I64)                                                                      \
    X(used_micros, 51, I64)                                                                        \
    X(requests, 52, U64)                                                                           \
    X(tokens, 53, U64)                                                                             \
    X(slots, 54, U64)                                                                              \
    X(ttl_ms, 55, U64)                                                                             \
    X(version, 56, U64)                                                                            \
    X(tokens_cache_write_1h, 57, U64)                                                              \
    X(images, 58, U64)                                                                             \
    X(loss, 60, BOOL)                                                                              \
    X(grant, 61, STR)                                                                              \
    X(txid, 62, U64)

typedef enum {
#define X(name, id, kind) PROTO_FIELD_##name = id,
    PROTO_MSG_FIELDS(X)
#undef X
        PROTO_FIELD_MAX_ID = 63
} proto_field_t;

//  Client and upstream API protocols.
typedef enum {
    PROTO_PROTOCOL_NONE = 0,
    PROTO_PROTOCOL_OPENAI = 1,            //  OpenAI Chat Completions
    PROTO_PROTOCOL_OPENAI_RESPONSES = 2,  //  OpenAI Responses
    PROTO_PROTOCOL_ANTHROPIC = 3,         //  Anthropic Messages
    PROTO_PROTOCOL_GEMINI = 4,            //  Gemini generateContent
    PROTO_PROTOCOL_OPENAI_EMBEDDINGS = 5, //  OpenAI Embeddings
    PROTO_PROTOCOL_OPENAI_IMAGES = 6,     //  OpenAI Images (generations)
} proto_protocol_t;

//  One upstream a request may go to, in the router's order.
typedef struct {
    uint64_t provider_id;       //  providers.id
    uint64_t provider_key_id;   //  provider_keys.id
    uint32_t upstream_protocol; //  proto_protocol_t the upstream speaks
    char upstream_model[128];   //  model name sent upstream
} proto_candidate_t;

typedef struct _proto_msg_t proto_msg_t;

//  Creates an empty message of a type. Caller owns return value.
proto_msg_t *proto_msg_new(proto_msg_type_t type);

//  Destroys a message, its body and routing id; nulls the pointer.
void proto_msg_destroy(proto_msg_t **self_p);

//  Sends and destroys the message. On a ROUTER socket the routing id must be
//  set. Returns 0, or -1 when the socket would not take it (message destroyed).
int proto_msg_send(proto_msg_t **self_p, zsock_t *socket);

//  Receives one message without blocking beyond what the socket does.
//  Returns 0 with *msg_p set, -1 when nothing was read (interrupted or
//  EAGAIN), -2 when frames arrived but were malformed (they are consumed).
int proto_msg_recv(proto_msg_t **msg_p, zsock_t *socket);

//  Encodes the envelope frame. Caller owns *data (free()).
int proto_msg_encode(const proto_msg_t *self, uint8_t **data, size_t *size);

//  Decodes an envelope frame. Returns 0, or -2 when malformed.
int proto_msg_decode(const uint8_t *data, size_t size, proto_msg_t **msg_p);

//  Name of a message type ("ADMIT"), or "?" when unknown. Static string.
const char *proto_msg_type_name(int type);

//  Envelope accessors. Strings are borrowed; setters copy.
proto_msg_type_t proto_msg_type(const proto_msg_t *self);
const char *proto_msg_request_id(const proto_msg_t *self);
void proto_msg_set_request_id(proto_msg_t *self, const char *request_id);
const char *proto_msg_trace(const proto_msg_t *self);
void proto_msg_set_trace(proto_msg_t *self, const char *traceparent);
uint64_t proto_msg_deadline(const proto_msg_t *self);
void proto_msg_set_deadline(proto_msg_t *self, uint64_t deadline_ms);

//  True when a field was set or received.
bool proto_msg_has(const proto_msg_t *self, proto_field_t field);

//  Field accessors: proto_msg_NAME(msg) and proto_msg_set_NAME(msg, value).
#define PROTO_MSG_DECLARE_U64(name)                                                                \
    uint64_t proto_msg_##name(const proto_msg_t *self);                                            \
    void proto_msg_set_##name(proto_msg_t *self, uint64_t value);
#define PROTO_MSG_DECLARE_I64(name)                                                                \
    int64_t proto_msg_##name(const proto_msg_t *self);                                             \
    void proto_msg_set_##name(proto_msg_t *self, int64_t value);
#define PROTO_MSG_DECLARE_BOOL(name)                                                               \
    bool proto_msg_##name(const proto_msg_t *self);                                                \
    void proto_msg_set_##name(proto_msg_t *self, bool value);
#define PROTO_MSG_DECLARE_STR(name)                                                                \
    const char *proto_msg_##name(const proto_msg_t *self);                                         \
    void proto_msg_set_##name(proto_msg_t *self, const char *value);
#define PROTO_MSG_DECLARE_CANDIDATES(name)                                                         \
    const proto_candidate_t *proto_msg_##name(const proto_msg_t *self, size_t *count);             \
    void proto_msg_set_##name(proto_msg_t *self, const proto_candidate_t *items, size_t count);
#define X(name, id, kind) PROTO_MSG_DECLARE_##kind(name)
PROTO_MSG_FIELDS(X)
#undef X

//  The body frame, or NULL. Borrowed.
zframe_t *proto_msg_body(const proto_msg_t *self);

//  Takes ownership of a body frame (and nulls the caller's pointer).
void proto_msg_set_body(proto_msg_t *self, zframe_t **body_p);

//  Copies bytes into a new body frame.
void proto_msg_set_body_bytes(proto_msg_t *self, const void *data, size_t size);

//  Hands the body frame to the caller, who then owns it. May return NULL.
zframe_t *proto_msg_take_body(proto_msg_t *self);

//  The sending program as CURVE's handshake named it (proto_socket's ZAP
//  handler: "billing", "dispatch", ...), "" on a socket without security.
//  Set on receipt; messages out of a BATCH take the batch's. Borrowed.
const char *proto_msg_peer(const proto_msg_t *self);
void proto_msg_set_peer(proto_msg_t *self, const char *peer);

//  True when the message came from `program`, or from a socket without
//  security (no names to check). For servers that take a kind of message
//  only from one program, whatever certificate of the cluster the sender has.
bool proto_msg_peer_is(const proto_msg_t *self, const char *program);

//  Routing id on ROUTER sockets. Borrowed / copied.
zframe_t *proto_msg_routing_id(const proto_msg_t *self);
void proto_msg_set_routing_id(proto_msg_t *self, zframe_t *routing_id);
//  The same from bytes (NULL: none), for a holder that keeps a routing id
//  without a zframe_t (~350 bytes of CZMQ's per frame).
void proto_msg_set_routing_id_bytes(proto_msg_t *self, const void *data, size_t size);

//  What happened to the messages of one type so far.
typedef struct {
    uint64_t sent;        //  handed to a socket
    uint64_t send_failed; //  the socket would not take them (queue full, no peer)
    uint64_t received;    //  read and decoded
    uint64_t malformed;   //  frames dropped as malformed (counted under type 0)
} proto_msg_counts_t;

/*  Message counters: proto_msg_send, proto_msg_recv and proto_batch count
    every message by type into the counters of the calling thread, for the
    `messages by type` metrics. The counters belong to the program's
    proto_service_t (made in proto_service_main or proto_service_new_test,
    destroyed with it); a thread only borrows them, through a per-thread
    pointer that proto_service_enter sets. Passing them to every send would
    touch some seventy call sites for a number only metrics read; a
    program's actor runs on one thread, so the thread names the service.

    The rules: proto_service_main enters the program's thread before
    def->start; any other thread that speaks for a service (a selftest's
    thread running a test service, admin's workers) enters it itself and
    leaves it (or ends) before the service is destroyed. A thread that
    entered no service counts nothing (tools, the test's own peers), so
    several services in one process, each on its own thread, never count
    each other's messages. Counting is one relaxed atomic add, no lock and
    no allocation: atomic because a program's extra threads share its
    counters, and a scrape reads them from the loop's thread. */
typedef struct _proto_msg_counters_t proto_msg_counters_t;

//  Makes zeroed counters. Caller owns return value.
proto_msg_counters_t *proto_msg_counters_new(void);

//  Destroys counters (and makes the calling thread count nothing if they
//  were its own); nulls the pointer. No other thread may still use them.
void proto_msg_counters_destroy(proto_msg_counters_t **self_p);

//  Makes the calling thread count into `counters` (borrowed; NULL: count
//  nothing) and returns the counters it used before, or NULL.
proto_msg_counters_t *proto_msg_counters_use(proto_msg_counters_t *counters);

//  Fills counts for a message type id (0 for malformed frames).
void proto_msg_counters_get(const proto_msg_counters_t *self, int type, proto_msg_counts_t *counts);

//  Counts a message of `type` handed to a socket or batch (ok) or refused,
//  and one received (type 0: a malformed frame), into the calling thread's
//  counters. For proto_batch.
void proto_msg_count_sent(int type, bool ok);
void proto_msg_count_received(int type);

//  Makes a new message of `type` that answers `request`: same request id,
//  trace, deadline and routing id. Caller owns return value.
proto_msg_t *proto_msg_reply(const proto_msg_t *request, proto_msg_type_t type);

//  Self test: round trips of every type, malformed and random frames.
void proto_msg_test(bool verbose);

#endif
