/*  proto_observe: the spans and metrics several programs record the same
    way, so that each program's code makes one call where the event
    happens and the names stay consistent (docs/observability.md lists
    them). Spans go to the program's sender, `tracer` (proto_service_trace;
    NULL records none).
*/
#ifndef PROTO_OBSERVE_H_INCLUDED
#define PROTO_OBSERVE_H_INCLUDED

#include "proto_catalog.h"
#include "proto_metrics.h"
#include "proto_msg.h"
#include "proto_trace.h"

#include <jansson.h>

//  One upstream attempt, as dispatch sees it when the outcome is known.
typedef struct {
    const char *request_id;     //  envelope request id
    const char *trace;          //  envelope traceparent
    uint64_t attempt;           //  1 for the first
    uint64_t provider_id;       //  providers.id
    uint64_t provider_key_id;   //  provider_keys.id
    const char *provider_name;  //  for labels, or NULL (the id is used)
    const char *model;          //  the client's model name, or NULL
    const char *upstream_model; //  the name sent upstream
    int status;                 //  upstream (or our) status
    const char *error_code;     //  or NULL
    uint64_t latency_us;        //  the attempt's duration so far
    uint64_t ttfb_us;           //  upstream time to first byte, 0 when none
    bool streamed;              //  a stream: slow or not by ttfb_us (proto_trace_is_slow)
} proto_observe_attempt_t;

//  Records the attempt's span (dispatch.attempt, and upstream.first_byte
//  when a byte came) and metrics: tollgate_upstream_attempts_total
//  {provider,model,status}, tollgate_upstream_seconds{provider} and
//  tollgate_upstream_ttfb_seconds{provider}.
void proto_observe_attempt(proto_metrics_t *metrics, proto_trace_t *tracer,
                           const proto_observe_attempt_t *attempt);

//  Sets tollgate_router_breaker_open{provider,layer,target,state} (1 for
//  each breaker not closed, 0 once closed) and tollgate_router_breakers
//  {state} from router_breaker_list's JSON; the catalog names providers.
void proto_observe_breakers(proto_metrics_t *metrics, json_t *list, proto_catalog_t *catalog);

//  Records a span of `name` that started at started_mono_us (monotonic)
//  and ends now, with an outcome status (0: none). The request is still
//  running: unless it is sampled (or this span is a failure), the span
//  waits for proto_trace_finish (proto_trace.h).
void proto_observe_span_since(proto_trace_t *tracer, const char *request_id, const char *trace,
                              const char *name, uint64_t started_mono_us, int status);

//  The same for a span recorded when the request's end is known: it is
//  sent when `keep` (the request failed, failed over or was slow) or when
//  the request is sampled, else dropped. first_byte_mono_us: when a
//  stream's first byte went out (0: not a stream), so that a long stream
//  is not taken for a slow one (proto_trace_is_slow).
void proto_observe_span_final(proto_trace_t *tracer, const char *request_id, const char *trace,
                              const char *name, uint64_t started_mono_us,
                              uint64_t first_byte_mono_us, int status, bool keep);

//  The first byte of an answer goes to the client (ingress): span
//  ingress.first_byte and histogram tollgate_ingress_ttft_seconds, both
//  from started_mono_us, when the request's first byte arrived.
void proto_observe_first_byte(proto_metrics_t *metrics, proto_trace_t *tracer,
                              const char *request_id, const char *trace, uint64_t started_mono_us);

//  A route decision (dispatch): span dispatch.route with the status and, in
//  its attributes, the candidates in order.
void proto_observe_decision(proto_trace_t *tracer, const char *request_id, const char *trace,
                            int status, const proto_candidate_t *candidates, size_t count,
                            uint64_t started_mono_us);

//  Self test.
void proto_observe_test(bool verbose);

#endif
