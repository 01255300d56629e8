/*  proto_trace: spans of a request's life, sent to the ledger.

    Every process records what it did for a request as spans (name, wall
    clock start, duration, outcome) under the request id and the W3C trace
    id of the envelope's `trace`. A span travels as a SPAN message on a
    DEALER connected to every ledger endpoint, sent without waiting
    (ZMQ_SNDTIMEO 0): when the queue is full or no ledger is there, the span
    is dropped and counted. Spans are not money; the request path never
    waits for them. The ledger batches them into the `spans` table.

    The sender belongs to the program's proto_service_t, which makes it from
    `trace.spans` (default on) and `ledger.endpoints`; a program's modules
    are handed it (proto_service_trace) and a NULL sender records nothing, so
    a module tested alone needs none. The ledger installs a local sink
    instead, so its own spans skip the socket. Spans travel in
    BATCH messages (proto_batch): at most 256, or 20 ms after the first.

    Which requests keep their spans (tail sampling): every request that
    failed, failed over or was slow, plus `trace.sample_ppm` per million of
    the rest, chosen by a hash of the trace id so that every process picks
    the same ones. A span of a sampled request, or one that is itself a
    failure (status >= 400), a retry (attempt > 1) or slow (`trace.slow_ms`),
    goes at once. The others are dropped, unless the caller marks them
    `hold`: then they wait in memory until the program that knows how the
    request ended calls proto_trace_finish (keep them, or drop them), so
    the timeline of an interesting request is whole.
*/
#ifndef PROTO_TRACE_H_INCLUDED
#define PROTO_TRACE_H_INCLUDED

#include "proto_config.h"
#include "proto_loop.h"
#include "proto_msg.h"

#include <stdbool.h>
#include <stdint.h>

//  One span. Zero/NULL fields are left out.
typedef struct {
    const char *name;           //  "ingress.receive", "dispatch.attempt", ...
    uint64_t started_us;        //  wall clock, µs since the epoch (proto_loop_wall_us)
    uint64_t duration_us;       //  how long it took
    int status;                 //  HTTP-like outcome, 0 when none
    uint64_t attempt;           //  upstream attempt number, 0 when none
    uint64_t provider_id;       //  providers.id, 0 when none
    uint64_t provider_key_id;   //  provider_keys.id, 0 when none
    const char *upstream_model; //  or NULL
    const char *error_code;     //  our error code, or NULL
    const char *attributes;     //  a JSON object's text with anything else, or NULL
    uint64_t first_byte_us;     //  a stream's wait for its first byte: judged slow by it
                                //  (0: by duration_us), not by how long it streamed
    bool hold;                  //  not interesting yet: wait for proto_trace_finish
    bool keep;                  //  the request is known to be interesting: send it
} proto_span_t;

//  Receives SPAN messages instead of the socket (the ledger); takes
//  ownership of *msg_p.
typedef void(proto_trace_sink_fn)(proto_msg_t **msg_p, void *arg);

typedef struct _proto_trace_t proto_trace_t;

//  Creates a program's sender for `program` and its instance id. Without config it has no
//  socket and samples every request (tests, with a sink). Without `trace.spans` nothing is
//  sent. Returns NULL when the socket failed (logged; spans are then dropped). Caller owns
//  return value.
proto_trace_t *proto_trace_new(proto_config_t *config, proto_loop_t *loop, const char *program,
                               const char *instance);

//  Closes the sender and drops what it holds; nulls the pointer.
void proto_trace_destroy(proto_trace_t **self_p);

//  Sends spans to fn instead of the ledger socket (NULL: back to the socket).
void proto_trace_set_sink(proto_trace_t *self, proto_trace_sink_fn *fn, void *arg);

//  Records one span of request_id under traceparent (may be "" or NULL:
//  the span is kept under the request id alone). self NULL: nothing.
void proto_trace_span(proto_trace_t *self, const char *request_id, const char *traceparent,
                      const proto_span_t *span);

//  The end of a request in this program: its held spans go (keep) or are
//  dropped. Unknown ids are ignored.
void proto_trace_finish(proto_trace_t *self, const char *request_id, bool keep);

//  True when a request is in the sampled share (trace.sample_ppm).
bool proto_trace_sampled(proto_trace_t *self, const char *request_id, const char *traceparent);

//  True when a request that made its client wait waited_us is slow
//  (trace.slow_ms; 0 there means never). A stream's wait is until its first
//  byte: a generation streamed for a minute is not slow, a first token after
//  six seconds is. A whole answer's wait is its duration.
bool proto_trace_is_slow(proto_trace_t *self, uint64_t waited_us);

//  How long a request made its client wait: a stream until its first byte
//  (when one came), anything else its whole latency. Dispatch, billing and
//  the ledger judge a request's slowness by it, from SETTLE's fields.
uint64_t proto_trace_waited_us(bool stream, uint64_t latency_us, uint64_t ttfb_us);

//  Requests with spans held for their end decision.
size_t proto_trace_held(proto_trace_t *self);

//  Sends any message the same way (fire-and-forget to the ledger, or to
//  the local sink); takes ownership of *msg_p. Counted with the spans.
void proto_trace_send(proto_trace_t *self, proto_msg_t **msg_p);

//  Spans (and DETAILS) sent and dropped so far by this sender.
uint64_t proto_trace_sent(proto_trace_t *self);
uint64_t proto_trace_dropped(proto_trace_t *self);

//  Builds the SPAN message (used by proto_trace_span; exposed for tests).
//  Caller owns return value.
proto_msg_t *proto_trace_message(proto_trace_t *self, const char *request_id,
                                 const char *traceparent, const proto_span_t *span);

//  Copies the 32-hex trace id of a traceparent into out (33 bytes); "" when
//  it is not one. Returns out.
char *proto_trace_id(const char *traceparent, char *out);

//  SQL expression: the spans of the request whose id is the SQL expression
//  `u.request_id`, as a JSON array in time order with provider names
//  joined in ([] when none). For GET /admin/requests/{id}.
#define PROTO_TRACE_TIMELINE_SQL                                                                   \
    "coalesce((SELECT json_agg(json_build_object('name', s.name, 'program', s.program, "           \
    "'instance', s.instance, 'started_at', s.started_at, 'duration_ms', "                          \
    "round(s.duration_us / 1000.0, 3), 'status', s.status, 'attempt', s.attempt, "                 \
    "'provider_id', s.provider_id, 'provider', p.name, 'provider_key_id', s.provider_key_id, "     \
    "'upstream_model', s.upstream_model, 'error_code', s.error_code, 'trace_id', s.trace_id, "     \
    "'span_id', s.span_id, 'parent_id', s.parent_id, 'attributes', s.attributes) "                 \
    "ORDER BY s.started_at, s.id) FROM spans s LEFT JOIN providers p ON p.id = s.provider_id "     \
    "WHERE s.request_id = u.request_id), '[]'::json)"

//  Self test.
void proto_trace_test(bool verbose);

#endif
