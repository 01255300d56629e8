/*  dispatch_request: one request from its DISPATCH to its DONE (or CANCEL).

    A request walks its candidates in the route's order; each attempt is a
    dispatch_call converted by a dispatch_adapter, and what an attempt's
    failure leads to is dispatch_policy's decision. The one invariant kept
    here is that once a byte of an answer went to ingress, no other
    candidate is tried and the request ends with an error event instead of
    a clean end.

    Every request that reached us is settled exactly once (SETTLE through
    dispatch_settle) when it ends, whatever the outcome, with the usage of
    the final attempt only: an attempt replaced by a failover produced
    nothing the client received. While it runs, provisional records in the
    settlement journal say what happened if this process dies.

    Requests share what the server owns through a dispatch_request_env_t:
    borrowed pointers, no copies, so a request costs no more than before.
*/
#ifndef DISPATCH_REQUEST_H_INCLUDED
#define DISPATCH_REQUEST_H_INCLUDED

#include "dispatch_reach.h"
#include "dispatch_route.h"
#include "dispatch_settle.h"
#include "dispatch_taken.h"
#include "proto_batch.h"
#include "proto_catalog.h"
#include "proto_curl.h"
#include "proto_loop.h"
#include "proto_metrics.h"
#include "proto_msg.h"
#include "proto_trace.h"

#include <stdint.h>

typedef struct _dispatch_request_t dispatch_request_t;

//  Called once a request has ended (DONE and SETTLE sent): the owner
//  forgets it, which must destroy it.
typedef void(dispatch_request_end_fn)(const char *request_id, void *arg);

//  What every request borrows from the server. The server fills it once
//  (catalog: at each swap) and keeps it alive while any request lives.
typedef struct {
    proto_loop_t *loop;              //  the program's loop
    proto_curl_t *multi;             //  libcurl on that loop
    proto_catalog_t *catalog;        //  the current catalog snapshot
    dispatch_route_t *route;         //  the decision and what it learns
    dispatch_reach_t *reach;         //  providers' paths, headers and proxies
    dispatch_settle_t *settle;       //  SETTLEs, provisional records, DONEs
    dispatch_taken_t *taken;         //  finished requests, for DISPATCHes sent again
    proto_batch_t *outcomes;         //  OUTCOMEs on their way
    proto_metrics_t *metrics;        //  the metrics registry
    proto_trace_t *tracer;           //  the span sender, or NULL
    zsock_t *router;                 //  towards ingress, for CHUNKs
    dispatch_request_t **unsent;     //  head of the requests with stream bytes to send
                                     //  (dispatch_request_send_unsent)
    proto_metric_t *failovers;       //  counter of attempts replaced by another
    proto_metric_t *no_route;        //  counter of requests no candidate could take
    router_decision_t *decision;     //  scratch of each decision (~10 KiB), one per server:
                                     //  the loop is one thread and no decision outlives it
    uint64_t connect_timeout_ms;     //  dispatch.connect_timeout_ms
    uint64_t first_byte_timeout_ms;  //  dispatch.first_byte_timeout_ms
    uint64_t idle_timeout_ms;        //  dispatch.idle_timeout_ms
    uint64_t total_timeout_ms;       //  dispatch.total_timeout_ms
    uint32_t nonce;                  //  this run's, in the ids of lost upstream calls
    dispatch_request_end_fn *on_end; //  forgets an ended request
    void *arg;                       //  its argument
} dispatch_request_env_t;

//  Sends a CHUNK for each request in *unsent (the stream bytes that one
//  round of libcurl's reads made): called after each round
//  (proto_curl_after_action), so what arrives together leaves together.
void dispatch_request_send_unsent(dispatch_request_t **unsent);

//  Takes a DISPATCH (nulls the caller's pointer) whose key the catalog
//  knows. Does not start it. Caller owns return value.
dispatch_request_t *dispatch_request_new(const dispatch_request_env_t *env,
                                         proto_msg_t **dispatch_p);

//  Aborts its upstream call if one runs and destroys the request; nulls the
//  pointer. Settles nothing: a request destroyed before its end is one the
//  program abandons (shutdown).
void dispatch_request_destroy(dispatch_request_t **self_p);

//  Its request id. Borrowed.
const char *dispatch_request_id(dispatch_request_t *self);

//  Checks the request, decides its candidates and starts the first
//  attempt. The request may end (and be destroyed) within this call.
void dispatch_request_start(dispatch_request_t *self);

//  The same DISPATCH came again (ingress lost its connection to us):
//  replies follow `msg`'s routing id; a request whose CHUNKs went to the
//  lost connection ends with an error (destroyed within this call).
void dispatch_request_again(dispatch_request_t *self, proto_msg_t *msg);

//  Ingress' CANCEL: aborts the upstream call and ends the request, settled
//  for the input and what reached the client. The request is destroyed.
void dispatch_request_cancel(dispatch_request_t *self, proto_msg_t *cancel);

//  Self test: what a request keeps of its DISPATCH, and how much.
void dispatch_request_test(bool verbose);

#endif
