/*  ingress_server_private: what the parts of one ingress server share.

    The request path is split by job into ingress_http (the client API's
    handlers), ingress_admit (billing), ingress_relay (dispatch),
    ingress_request (the record and its answers) and the server itself
    (listener, peers, life, drain); they all work on one ingress_server_t,
    defined here, and reach its fields directly, as they did in one file:
    no accessor call, allocation or indirection was added on the request
    path. Only ingress_server.c and those parts include this header; to
    everything else the server is opaque (ingress_server.h).
*/
#ifndef INGRESS_SERVER_PRIVATE_H_INCLUDED
#define INGRESS_SERVER_PRIVATE_H_INCLUDED

#include "ingress_admit.h"
#include "ingress_daemon.h"
#include "ingress_lease.h"
#include "ingress_models.h"
#include "ingress_queue.h"
#include "ingress_relay.h"
#include "ingress_request.h"
#include "ingress_server.h"
#include "proto_crypto.h"
#include "proto_outbox.h"
#include "proto_sched.h"
#include "proto_tls.h"
#include "proto_watch.h"

#include <czmq.h>

#define INGRESS_MAX_BILLING 8   //  billing instances we connect to
#define INGRESS_MAX_DISPATCH 16 //  dispatch instances we connect to
//  A request's tried instances are bits of an unsigned (dispatch_tried).
_Static_assert(INGRESS_MAX_DISPATCH <= 32, "dispatch_tried holds one bit per instance");

//  One DEALER and what to tell its handler.
struct _ingress_peer_t {
    ingress_server_t *server; //  owner
    zsock_t *socket;          //  the DEALER
    proto_outbox_t *outbox;   //  SETTLEs kept until COMMIT (billing only)
    int index;                //  position in its array
    uint64_t draining_until;  //  answered 503 `draining`: others first until then (dispatch)
    uint64_t draining_since;  //  when it last answered so
    zactor_t *monitor;        //  reports the connection made or dropped (dispatch only)
    bool connected;           //  a live connection, as last heard (dispatch only)
    uint64_t done_link;       //  the last DONE from it with a link: the link (dispatch only)
    uint64_t done_sequence;   //  and its number there; each DISPATCH says so (ingress_relay)
};

struct _ingress_server_t {
    proto_loop_t *loop;                            //  process loop (borrowed)
    proto_config_t *config;                        //  configuration (borrowed)
    proto_metrics_t *metrics;                      //  metrics registry (borrowed)
    proto_trace_t *tracer;                         //  span sender (borrowed; NULL: none)
    ingress_daemon_t *client;                      //  client API listener
    proto_tls_t *tls;                              //  its certificate (HTTPS), NULL = plain HTTP
    proto_watch_t *watch;                          //  keeps catalog fresh, NULL without a database
    proto_catalog_t *catalog;                      //  current configuration snapshot
    ingress_peer_t billing[INGRESS_MAX_BILLING];   //  one DEALER per billing instance
    int billing_count;                             //  entries in billing
    ingress_peer_t dispatch[INGRESS_MAX_DISPATCH]; //  one DEALER per dispatch instance
    int dispatch_count;                            //  entries in dispatch
    unsigned next_dispatch;                        //  round-robin position
    int resend_timer;                              //  looks for ADMITs to re-send, 0 = idle
    zhashx_t *requests;                            //  request id -> ingress_request_t (not owned)
    ingress_queue_t *waiting;                      //  ADMIT out: internal timeout
    ingress_queue_t *running;                      //  dispatched: request timeout
    ingress_queue_t *held;                         //  handed back by a draining dispatch: retried
    ingress_request_t *live;                       //  requests with a live connection
    size_t live_count;                             //  how many
    size_t max_body;                               //  ingress.max_body_bytes
    bool client_metrics;                           //  ingress.client_metrics
    size_t max_json_elements;                      //  ingress.max_json_elements
    char metrics_token_hash[PROTO_CRYPTO_HASH_HEX + 1]; //  of client_metrics_token, "" = open
    uint64_t internal_timeout_ms;                       //  ingress.internal_timeout_ms
    uint64_t dispatch_grace_ms;                         //  ingress.dispatch_grace_ms
    uint64_t request_timeout_ms;                        //  ingress.request_timeout_ms
    bool draining;                                      //  SIGTERM came
    ingress_lease_t *leases;               //  what billing lets us admit without asking
    ingress_models_t *models;              //  model lists, kept ingress.models_cache_ms
    uint64_t models_cache_ms;              //  ingress.models_cache_ms
    bool leases_on;                        //  billing.leases
    int lease_timer;                       //  gives expired leases back
    ingress_server_drained_fn *drained_fn; //  told when the drain is over
    void *drained_arg;                     //  its argument
    proto_service_t *service;              //  the service running us, or NULL
    zhashx_t *counters;                    //  label text -> requests counter
    zhashx_t *histograms;                  //  route name -> duration histogram
    proto_metric_t *in_flight;             //  gauge: live client requests
    proto_sched_t *sched;         //  SCHED_BATCH under load; NULL when ingress.sched_batch is off
    proto_metric_t *key_cache;    //  gauge: keys in the catalog
    proto_metric_t *overhead;     //  histogram: our added latency
    proto_metric_t *cancels;      //  counter: CANCELs sent
    proto_metric_t *settles;      //  counter: SETTLEs sent by ingress
    proto_metric_t *lease_admits; //  counter: requests admitted from a lease
    proto_metric_t *dropped;      //  counter: replies for unknown requests
    const proto_api_key_t *test_key; //  "tg-test" authenticates as this; selftest only
};

//  The pipeline lets go: no reply for this id is wanted any more (the
//  request leaves its queue, the server's requests and its lease).
void ingress_server_forget(ingress_request_t *r);

//  SETTLEs sent and not yet committed by billing.
size_t ingress_server_settles_pending(ingress_server_t *self);

//  Calls the drained callback once a drain has nothing left in flight.
void ingress_server_check_drained(ingress_server_t *self);

//  A suspended client hung up (ingress_daemon_hangup_fn; arg is the request).
void ingress_server_hangup(void *arg);

#endif
