/*  dispatch_server: the state of tollgate-dispatch.

    Sockets (docs/architecture.md):
        ROUTER dispatch.bind         DISPATCH and CANCEL from ingress; CHUNK
                                     and DONE go back to the same routing id
        PUB    dispatch.events.bind  one OUTCOME per upstream attempt
        DEALER billing endpoints     SETTLE, kept in an outbox until COMMIT
    plus the configuration catalog (provider URLs and opened secrets) kept
    fresh by proto_watch, and the libcurl multi handle on the same loop.

    The server owns those and what the requests share, and handles the
    conversation with ingress: DISPATCH (taken once, never run twice; held
    while our catalog lacks its key), CANCEL, and draining. A request's own
    life, from DISPATCH to DONE and its one SETTLE, is dispatch_request's;
    the decision and what it learns, dispatch_route's; the settlement
    outbox and the DONEs that wait for its journal, dispatch_settle's.
*/
#ifndef DISPATCH_SERVER_H_INCLUDED
#define DISPATCH_SERVER_H_INCLUDED

#include "proto_service.h"

typedef struct _dispatch_server_t dispatch_server_t;

//  Binds the sockets, connects to billing, loads the catalog. Returns NULL
//  (after logging why) when any of it fails. Caller owns return value.
dispatch_server_t *dispatch_server_new(proto_service_t *service);

//  Aborts what is in flight and destroys the state; nulls the pointer.
void dispatch_server_destroy(dispatch_server_t **self_p);

//  SIGTERM: refuse new requests (DONE 503 draining), let the running ones
//  finish and the outbox empty, then tell the service it is drained.
void dispatch_server_drain(dispatch_server_t *self);

//  A JSON object for PONG's meta. Caller owns return value (free()).
char *dispatch_server_status(dispatch_server_t *self);

//  Self test: the server in-process with an injected catalog and a stand-in
//  upstream, driven through a DEALER (plain and streamed calls, failover
//  before the first byte, an exhausted candidate list, an unknown account,
//  malformed input), with SETTLE committed by a stand-in billing.
void dispatch_server_test(bool verbose);

#endif
