/*  ingress_relay: a request's conversation with dispatch.

    DISPATCH goes to one dispatch instance (round-robin among those with a
    live connection), and its CHUNKs and DONE come back as the client's
    response: a whole answer, or a stream MHD reads from the request's
    buffer. A draining instance hands a request back before it starts and
    the request goes to another; one whose connection drops keeps it
    until it is back or ingress.dispatch_grace_ms has passed, so a request
    never runs twice. A stream that cannot go on ends with an error event
    in the client's protocol.
*/
#ifndef INGRESS_RELAY_H_INCLUDED
#define INGRESS_RELAY_H_INCLUDED

#include "ingress_queue.h"
#include "ingress_request.h"
#include "ingress_server.h"
#include "proto_loop.h"
#include "proto_msg.h"

#include <czmq.h>
#include <stdbool.h>

typedef struct _ingress_peer_t ingress_peer_t;

//  Sends an admitted request to a dispatch instance. When none takes it,
//  the request waits for one for at most ingress.internal_timeout_ms, then
//  is answered 503 dispatch_unavailable (and settled).
void ingress_relay_dispatch(ingress_server_t *self, ingress_request_t *r);

//  True for a DONE 503 `draining` (or such a reply from billing): the
//  sender took nothing on, and the request may go elsewhere.
bool ingress_relay_draining_answer(proto_msg_t *msg);

//  Ends the request's upstream side, however it ends (client gone, timeout,
//  stream cut, lost head): tells its dispatch to stop (CANCEL, when one holds
//  it and the upstream is not done), marks the upstream done and unregisters
//  the request (ingress_server_forget), so nothing from dispatch reaches it.
void ingress_relay_end(ingress_request_t *r, const char *reason);

//  A client gone while its request waits for a dispatch: settles it here
//  when no dispatch has it, or points the CANCEL at the one that may.
void ingress_relay_settle_held(ingress_request_t *r);

//  Loop handler of a dispatch DEALER (arg: its ingress_peer_t).
void ingress_relay_ready(proto_loop_t *loop, zsock_t *socket, void *arg);

//  Watches a dispatch DEALER's connection being made or dropping.
void ingress_relay_watch(ingress_server_t *self, ingress_peer_t *peer);

//  True while some dispatch instance has a live connection: /healthz says
//  ready only then.
bool ingress_relay_dispatch_connected(ingress_server_t *self);

//  Timeout queue callbacks (arg: the server): `held` looks for a dispatch
//  again, `running` ends a request that took too long.
void ingress_relay_held_expired(ingress_queue_item_t *item, void *arg);
void ingress_relay_running_expired(ingress_queue_item_t *item, void *arg);

//  Self test.
void ingress_relay_test(bool verbose);

#endif
