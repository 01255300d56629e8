/*  ingress_parse: the pure decisions the ingress makes about a request.

    Kept apart from the HTTP and ZeroMQ plumbing so each rule can be tested
    on its own: where the client's key is, whether a client's request id may
    be reused, what a chat body must contain, the trace context we pass on,
    and the overhead figure we report back.
*/
#ifndef INGRESS_PARSE_H_INCLUDED
#define INGRESS_PARSE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INGRESS_KEY_MAX 256            //  longest client key we hash; longer ones are invalid
#define INGRESS_MODEL_MAX 200          //  longest model name (the schema's limit)
#define INGRESS_SESSION_MAX 128        //  longest session id passed to the router
#define INGRESS_CAPABILITIES_MAX 255   //  capability list text
#define INGRESS_REQUEST_ID_HEX 32      //  our own request ids: 32 hex digits,
#define INGRESS_REQUEST_ID_TIME_HEX 13 //  of which microseconds since the epoch
#define INGRESS_REQUEST_ID_RANDOM_HEX (INGRESS_REQUEST_ID_HEX - INGRESS_REQUEST_ID_TIME_HEX)
#define INGRESS_IMAGES_MAX 10 //  most images one generation may ask for (OpenAI's n)
#define INGRESS_TRACE_SIZE 56 //  "00-" 32 "-" 16 "-" 2 + NUL

//  Where a client key was found.
typedef enum {
    INGRESS_KEY_NONE = 0,  //  nowhere
    INGRESS_KEY_BEARER,    //  Authorization: Bearer KEY
    INGRESS_KEY_X_API_KEY, //  x-api-key (Anthropic clients)
    INGRESS_KEY_GOOG,      //  x-goog-api-key (Gemini clients)
    INGRESS_KEY_QUERY,     //  ?key= (Gemini REST)
} ingress_key_source_t;

//  What the ingress needs to know from a request body. Its three texts
//  live in one allocation sized to them (`texts`), not in fixed arrays:
//  every request in flight keeps one, and most of ~790 bytes of arrays
//  went unused (10,000 open streams, docs/benchmarks.md). They are never
//  NULL: "" when absent, also before a parse (INGRESS_BODY_EMPTY).
typedef struct {
    const char *model;        //  logical model asked for
    bool stream;              //  "stream": true
    bool stream_given;        //  the body has a "stream" (not null)
    bool include_usage;       //  stream_options.include_usage: true
    uint64_t tokens_estimate; //  rough input tokens, for admission
    uint64_t max_output;      //  the request's output limit, 0 = none
    uint64_t images;          //  images asked for (OpenAI Images' n)
    const char *session;      //  Anthropic metadata.user_id or OpenAI user
    const char *capabilities; //  needed, comma-separated
    char *texts;              //  owns what the three point into, NULL when all are ""
} ingress_body_t;

//  A body with nothing in it: what a request holds until its body is parsed.
#define INGRESS_BODY_EMPTY ((ingress_body_t){.model = "", .session = "", .capabilities = ""})

//  Frees the body's texts; it is empty afterwards.
void ingress_body_release(ingress_body_t *self);

//  True when two bodies say the same (every field, texts by content).
bool ingress_body_same(const ingress_body_t *a, const ingress_body_t *b);

//  Sets the session (at most INGRESS_SESSION_MAX characters).
void ingress_body_set_session(ingress_body_t *self, const char *session);

//  Puts the body's three texts in one allocation sized to them. They may
//  point into the old one, which goes after the copy.
void ingress_body_set_texts(ingress_body_t *self, const char *model, const char *session,
                            const char *capabilities);

//  Appends a capability to a list of INGRESS_CAPABILITIES_MAX + 1 bytes
//  unless it is there already, cut when full.
void ingress_parse_add_capability(char *list, const char *name);

//  The member holding the conversation, per protocol: what a request of
//  that protocol cannot do without ("messages", "input", "contents",
//  "prompt").
const char *ingress_parse_conversation_field(int protocol);

//  Adds a capability to the list unless it is there already; the list
//  keeps at most INGRESS_CAPABILITIES_MAX characters (cut beyond).
void ingress_body_need_capability(ingress_body_t *self, const char *name);

//  Picks the client key from the places clients put it: the first that
//  starts with `prefix` (the client key prefix in force) or with the
//  default "tg-", else the first in this order: Authorization (Bearer
//  scheme only), x-api-key, x-goog-api-key, ?key=. Any argument may be
//  NULL. Sets *length and *source; returns a pointer into the argument it
//  came from (borrowed), or NULL when no source has a key.
const char *ingress_parse_key(const char *authorization, const char *x_api_key,
                              const char *goog_api_key, const char *query_key, const char *prefix,
                              size_t *length, ingress_key_source_t *source);

//  True when a client's x-request-id may start ours: 1..64 characters of
//  [A-Za-z0-9._-].
bool ingress_parse_request_id_valid(const char *text);

//  How much of a client's x-request-id our request id keeps: with "." and
//  16 hex digits it is 50 characters at most, so that dispatch's
//  operator's-loss record ("ID~lost-" + 8 hex, docs/billing.md) holds the
//  whole id and never collides with another request's.
#define INGRESS_CLIENT_ID_KEPT 33

//  Writes our request id for a request that came with a client's id: the
//  client's id (cut to INGRESS_CLIENT_ID_KEPT characters) + "." + 16 random hex digits. The
//  request id keys settlement, and the ledger keeps one row per id, so it
//  must never repeat: a client that reuses its id would otherwise go
//  unbilled. The client still finds its own id at the front. out must hold
//  PROTO_MSG_RID_MAX + 1 bytes.
void ingress_parse_client_request_id(const char *client_id, char *out);

//  Writes a new request id (32 lowercase hex digits: the wall clock in
//  microseconds, then 76 random bits) into out (INGRESS_REQUEST_ID_HEX + 1
//  bytes). Ids made later sort after earlier ones (to the microsecond, on
//  one clock).
void ingress_parse_new_request_id(char *out);

//  Writes the traceparent to send on: the client's trace id with a new span
//  id of ours when `incoming` is a valid W3C traceparent, else a new trace.
//  out must hold INGRESS_TRACE_SIZE bytes.
void ingress_parse_traceparent(const char *incoming, char *out);

//  True when text is a valid W3C traceparent (version 00).
bool ingress_parse_traceparent_valid(const char *text);

//  How many JSON values parsing `data` would build, counted up to just
//  past `max` (a linear scan, no allocation): a cap that jansson lacks.
size_t ingress_parse_json_elements(const char *data, size_t size, size_t max);

//  Checks a request body for a client protocol (proto_protocol_t) and
//  fills *out: the model (path_model when the path names it, as Gemini's
//  does, else the body's "model"), the conversation the protocol requires
//  (OpenAI Chat and Anthropic `messages`, Responses and Embeddings `input`,
//  Images `prompt` with `n` from 1 to INGRESS_IMAGES_MAX, Gemini `contents`,
//  or for its countTokens a `generateContentRequest`),
//  and the body's stream flag (Gemini's comes from the path: the caller
//  sets it). count_tokens: a token count, never streamed. *out is
//  overwritten, so it must hold no texts (INGRESS_BODY_EMPTY, or released);
//  the caller releases it (ingress_body_release). Returns 0, or -1 with a
//  message for the client in error (which names the offending field), *out
//  then empty.
int ingress_parse_body(int protocol, bool count_tokens, const char *path_model, const char *data,
                       size_t size, ingress_body_t *out, char *error, size_t error_size);

//  ingress_parse_body with jansson alone: what decides every body the
//  scanner (ingress_scan_body, tried first) leaves, and the reference the
//  scanner is tested against.
int ingress_parse_body_tree(int protocol, bool count_tokens, const char *path_model,
                            const char *data, size_t size, ingress_body_t *out, char *error,
                            size_t error_size);

//  True when an Accept header asks for server-sent events: one of its
//  media ranges is text/event-stream with no q=0. NULL is false.
bool ingress_parse_accepts_sse(const char *accept);

//  Makes a JSON object body ask for a stream: inserts "stream":true as
//  its first member (the body must not have one; it has at least one
//  member, as every parsed body does). *body is reallocated. Returns 0, or
//  -1 when it does not start with an object.
int ingress_parse_add_stream(char **body, size_t *size);

//  The overhead we added, in microseconds: time from the request being
//  fully received to our response headers, less the time spent upstream.
//  Never negative.
uint64_t ingress_parse_overhead_us(uint64_t received_us, uint64_t headers_us, uint64_t upstream_us);

//  Writes microseconds as milliseconds with three decimals ("1.234").
void ingress_parse_ms_text(uint64_t microseconds, char *out, size_t out_size);

//  Self test.
void ingress_parse_test(bool verbose);

#endif
