/*  dispatch_server: the state of tollgate-dispatch.

    Sockets (docs/architecture.md):
        ROUTER dispatch.bind         DISPATCH and CANCEL from ingress; CHUNK
                                     and DONE go back to the same routing id
        PUB    dispatch.events.bind  one OUTCOME per upstream attempt
        DEALER billing endpoints     SETTLE, kept in an outbox until COMMIT
    plus the configuration catalog (provider URLs and opened secrets) kept
    fresh by proto_watch, and the libcurl multi handle on the same loop.

    A request lives from DISPATCH to its DONE (or CANCEL). It walks its
    candidates in order; each attempt is a dispatch_call converted by a
    dispatch_adapter. What an attempt's failure leads to is dispatch_policy's
    decision; the one invariant this file keeps is that once a byte of an
    answer went to ingress, no other candidate is tried and the request ends
    with an error event instead of a clean end.

    Every request that reached us is settled exactly once (SETTLE into the
    outbox) when it ends, whatever the outcome, with the usage of the final
    attempt only: an attempt replaced by a failover produced nothing the
    client received.
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
