/*  ingress_lease: the leases this ingress admits from without asking.

    Billing grants each ingress instance, per API key in use, a lease
    (billing/billing_lease.h): running totals of credit, and where the key
    or its account is limited, of requests, tokens and in-flight slots, with
    an expiry. A request the lease covers is admitted here, with no round
    trip: its estimate (from its own max_tokens) comes off the credit, one
    request, its token estimate and one slot off the others. When it ends,
    its real cost (priced here from DONE's usage, as billing prices it)
    replaces the estimate; without a DONE the estimate stays counted.

    Asking never waits: a key with no usable lease is admitted with ADMIT
    as before, and a LEASE_ASK goes out beside it. A lease running low
    (half its last grant used) or half-way to its expiry is renewed ahead
    of need, again beside the traffic. A refusal (204: the account is near a
    limit) sends the key's requests to ADMIT for a second before asking
    again; "unknown yet" (404: billing's catalog has not loaded the key,
    made a moment ago) only for 50 ms, doubling up to that second. A revoked lease, and an expired
   one nobody renewed, is given back with LEASE_RETURN, which reports what is still in flight.

    Pure data: ingress_server sends what this module builds.
*/
#ifndef INGRESS_LEASE_H_INCLUDED
#define INGRESS_LEASE_H_INCLUDED

#include "proto_msg.h"

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct _ingress_lease_t ingress_lease_t;

//  Longest grant billing gives with a lease (billing_grant.h), NUL excluded.
#define INGRESS_LEASE_GRANT_MAX 64

//  What a request took from a lease, for its release.
typedef struct {
    uint64_t lease_id;                       //  0: not admitted from a lease
    int64_t micros;                          //  its estimate
    uint64_t tokens;                         //  its token estimate
    char grant[INGRESS_LEASE_GRANT_MAX + 1]; //  the lease's grant, for SETTLE ("": none)
} ingress_lease_take_t;

//  Creates an empty table for this ingress instance (its holder id, copied).
//  Caller owns return value.
ingress_lease_t *ingress_lease_new(const char *holder);

//  Destroys the table; nulls the pointer.
void ingress_lease_destroy(ingress_lease_t **self_p);

//  Admits a request of key_id from its lease when the lease covers it
//  (credit for `estimate`, a request, `tokens`, a slot). Returns true with
//  *take filled; false (take zeroed) when the request must ask with ADMIT.
bool ingress_lease_admit(ingress_lease_t *self, uint64_t key_id, int64_t estimate, uint64_t tokens,
                         uint64_t now_ms, ingress_lease_take_t *take);

//  A request admitted from a lease ended: its estimate goes back, its cost
//  and tokens count. A take of a lease that is gone is ignored.
void ingress_lease_release(ingress_lease_t *self, uint64_t key_id, const ingress_lease_take_t *take,
                           int64_t cost_micros, uint64_t tokens_used);

//  A LEASE_ASK for key_id when one is due (no usable lease, or it runs low
//  or expires soon; no ask out, no recent refusal), else NULL. hint_* are a
//  request's estimates, so billing can tell whether a lease is worth it.
//  Caller owns return value.
proto_msg_t *ingress_lease_ask(ingress_lease_t *self, uint64_t key_id, uint64_t account_id,
                               int64_t hint_micros, uint64_t hint_tokens, uint64_t now_ms);

//  A LEASE from billing.
void ingress_lease_granted(ingress_lease_t *self, const proto_msg_t *lease, uint64_t now_ms);

//  A LEASE_REVOKE: the leases it names (all of an account, or one key's)
//  are dropped; their LEASE_RETURNs are appended to `returns` (proto_msg_t*,
//  caller sends and owns) with the account_id of each (to pick billing).
void ingress_lease_revoked(ingress_lease_t *self, const proto_msg_t *revoke, zlistx_t *returns);

//  Leases that expired unrenewed are given back (LEASE_RETURNs appended).
void ingress_lease_sweep(ingress_lease_t *self, uint64_t now_ms, zlistx_t *returns);

//  Leases held.
size_t ingress_lease_count(ingress_lease_t *self);

//  Self test.
void ingress_lease_test(bool verbose);

#endif
