/*  ingress_admit: a request's conversation with billing.

    ADMIT asks the account's billing instance (or the key's lease answers
    at once, ingress_lease); its reply decides whether the request goes to
    dispatch (ingress_relay) or is answered with billing's refusal. An ADMIT
    with no reply is re-sent with growing gaps; a second ADMIT of an id
    takes nothing more. BALANCE asks for a key's own figures (ingress_usage).
    Leases are asked for, renewed, given back and revoked here.

    Settlement of what was admitted
    -------------------------------
    Billing reserves on ADMIT. Dispatch settles everything it was given;
    whatever was admitted but never reached dispatch (route refused, our
    internal timeout, client gone before dispatch) is settled here with
    zero tokens, through a proto_outbox until billing's COMMIT. A request
    whose admission is still unknown when the client or the timeout ends
    it stays registered ("abandoned") until billing answers or a grace
    period passes, so a late admission is still settled.
*/
#ifndef INGRESS_ADMIT_H_INCLUDED
#define INGRESS_ADMIT_H_INCLUDED

#include "ingress_queue.h"
#include "ingress_request.h"
#include "ingress_server.h"
#include "proto_loop.h"

#include <czmq.h>

//  Asks for an authenticated, parsed and registered request's admission:
//  from the key's lease when it covers it (DISPATCH goes out at once),
//  else with an ADMIT, the connection suspended until the reply.
void ingress_admit_submit(ingress_server_t *self, ingress_request_t *r);

//  Registers a GET /v1/usage (or dashboard) request and asks the account's
//  billing for its figures (BALANCE), suspended like an ADMIT.
void ingress_admit_usage(ingress_server_t *self, ingress_request_t *r);

//  Settles what billing admitted but dispatch never got, with zero tokens.
void ingress_admit_settle(ingress_request_t *r, int status);

//  Billing's voucher for the request's SETTLE (docs/billing.md, "Who may
//  settle"): its lease's, or its ADMIT_REPLY's; NULL when billing gave none.
//  Borrowed from the request.
const char *ingress_admit_grant(const ingress_request_t *r);

//  A client gone before its answer: settles when admitted, else keeps the
//  id until billing has spoken (or the internal timeout passes).
void ingress_admit_abandon(ingress_server_t *self, ingress_request_t *r, int status);

//  Ends the request's part of its lease (with the pipeline's hold).
void ingress_admit_lease_release(ingress_request_t *r);

//  Sends LEASE_RETURNs (taking them), each to its account's billing.
void ingress_admit_send_returns(ingress_server_t *self, zlistx_t *returns);

//  Timer: gives expired leases back (arg: the server).
void ingress_admit_lease_sweep(proto_loop_t *loop, int id, void *arg);

//  Loop handler of a billing DEALER (arg: its ingress_peer_t).
void ingress_admit_ready(proto_loop_t *loop, zsock_t *socket, void *arg);

//  Timeout queue callback of `waiting` (arg: the server).
void ingress_admit_waiting_expired(ingress_queue_item_t *item, void *arg);

//  Self test.
void ingress_admit_test(bool verbose);

#endif
