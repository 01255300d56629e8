/*  billing_lease: allowances billing grants an ingress instance so that it
    admits a key's requests from memory, without a round trip.

    A lease belongs to one (ingress instance, API key). It carries, as
    running totals since it was first granted:
        credit_micros   money the holder may commit (the estimates of its
                        requests in flight plus the cost of those done)
        requests        rpm requests it may start          (when limited)
        tokens          tpm tokens its estimates may take  (when limited)
        slots           requests it may have in flight     (when limited)
    and an expiry (`ttl_ms` from the last grant). The holder renews ahead of
    need and gives back what it did not use (LEASE_RETURN).

    Where the allowance comes from. A grant takes, at once, from the same
    counters admission uses (billing_book, billing_limit): the money is held
    in the account's `leased` figure and in the key's and account's spend
    caps; requests and tokens leave the buckets; slots count as in flight.
    So ADMIT, on this instance, sees only what no lease holds. A settled
    request of a lease (SETTLE names the lease) moves its cost from the
    lease's hold to `pending`, as a reservation would.

    Only from headroom, and never near a limit: a grant is at most a quarter
    of what is free (money under the balance and the caps; requests and
    tokens in the buckets; slots), shared by the account's leases, and
    `billing.lease_max_micros` at most; when that quarter is smaller than 16
    requests' estimates (or 4 requests, 8 requests' tokens, 2 slots) no lease
    is granted and the holder asks with ADMIT, one request at a time.

    The invariant (docs/billing.md): at any moment, what the account's
    admitted requests can still cost is within what billing holds for them
    (reservations + leases), and that is within the balance and each cap;
    an ingress admits from a lease only within its credit. So the account
    overspends by at most what one request costs beyond its estimate,
    whatever the number of ingress instances.

    Revocation: a lower balance, a disabled key or account, or a lowered
    limit revokes the account's leases (LEASE_REVOKE to each holder), and so
    does an ADMIT that only the leases' holds refuse; the holder answers
    with LEASE_RETURN (what it still has in flight). A lease whose holder
    went silent expires: after `ttl_ms` it admits nothing, and what it holds
    is released when its last request could have settled.

    Pure data: billing.c owns the sockets; this module says what to send.
*/
#ifndef BILLING_LEASE_H_INCLUDED
#define BILLING_LEASE_H_INCLUDED

#include "billing_book.h"
#include "proto_catalog.h"

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

//  A holder's question (LEASE_ASK), as billing.c read it.
typedef struct {
    const char *holder;     //  ingress instance id
    zframe_t *routing_id;   //  its DEALER, for revocations (copied)
    uint64_t key_id;        //  api_keys.id
    uint64_t account_id;    //  as the holder believes; the catalog decides
    uint64_t lease_id;      //  0 for a new lease
    int64_t credit_micros;  //  what the holder believes it was granted
    int64_t used_micros;    //  costs of its requests that ended
    int64_t inflight;       //  estimates of its requests in flight
    uint64_t requests_used; //  requests it started
    uint64_t tokens_used;   //  tokens its requests took
    uint64_t slots_used;    //  requests in flight
    int64_t hint_micros;    //  one request's estimate
    uint64_t hint_tokens;   //  one request's token estimate
} billing_lease_ask_t;

//  The answer (LEASE). Figures are running totals; a limited flag false
//  means no such limit applies to the key or its account.
typedef struct {
    int status;             //  200 granted (or renewed); 204 none: use ADMIT;
                            //  404 key or account not in this catalog (yet)
    uint64_t lease_id;      //  the lease
    int64_t credit_micros;  //  granted so far
    int64_t settled_micros; //  costs settled here under it
    bool requests_limited;  //  requests below applies
    uint64_t requests;      //  granted so far
    bool tokens_limited;    //  tokens below applies
    uint64_t tokens;        //  granted so far
    bool slots_limited;     //  slots below applies
    uint64_t slots;         //  held now
    uint64_t ttl_ms;        //  valid for this long from now
} billing_lease_grant_t;

typedef struct _billing_lease_t billing_lease_t;

//  Settings of the lease table.
typedef struct {
    uint64_t ttl_ms;          //  a grant is valid this long (billing.lease_ttl_ms)
    int64_t max_micros;       //  most credit one grant adds (billing.lease_max_micros)
    uint64_t settle_grace_ms; //  how long after expiry a request may still settle
} billing_lease_config_t;

//  Creates an empty table working on `book` (borrowed). Caller owns return value.
billing_lease_t *billing_lease_new(billing_book_t *book, const billing_lease_config_t *config);

//  Destroys the table; nulls the pointer.
void billing_lease_destroy(billing_lease_t **self_p);

//  Answers a LEASE_ASK: grants, renews (tops up to the allowed share),
//  adopts a lease this instance does not know (it restarted: the holder's
//  figures are taken as they are), or refuses (status 204; 404 when the key
//  or its account is not in `catalog`: created after its last load).
void billing_lease_ask(billing_lease_t *self, proto_catalog_t *catalog,
                       const billing_lease_ask_t *ask, uint64_t now_ms, uint64_t wall_us,
                       billing_lease_grant_t *grant);

//  A SETTLE named this lease: its cost leaves the lease's hold (billing_book
//  counts it as pending). Unknown ids are ignored. Returns true if known.
bool billing_lease_settle(billing_lease_t *self, proto_catalog_t *catalog, uint64_t lease_id,
                          int64_t cost_micros);

//  The holder gave the lease back: unused requests, tokens and slots go
//  back; the hold shrinks to what the holder committed and was not settled
//  here yet (`used`: costs of its requests that ended; `inflight`: the
//  estimates of those still running).
void billing_lease_return(billing_lease_t *self, proto_catalog_t *catalog, uint64_t lease_id,
                          int64_t used, int64_t inflight, uint64_t requests_used,
                          uint64_t tokens_used, uint64_t slots_used, uint64_t now_ms);

//  Marks the leases of an account (of one key, when key_id is not 0) revoked
//  and appends the routing ids of their holders (zframe_t*, caller owns) to
//  `holders`, once each. Returns how many leases.
size_t billing_lease_revoke(billing_lease_t *self, uint64_t account_id, uint64_t key_id,
                            zlistx_t *holders);

//  After a catalog change: finds the accounts whose leases no longer fit
//  (a key or account not active, holds beyond the balance or a cap, a limit
//  set, lifted or lowered below what is in flight) and appends their ids
//  (as uintptr_t) to `accounts`, once each, for billing_lease_revoke.
//  Returns how many it appended.
size_t billing_lease_review(billing_lease_t *self, proto_catalog_t *catalog, uint64_t now_ms,
                            uint64_t wall_us, zlistx_t *accounts);

//  Releases what expired leases still hold once their requests could no
//  longer settle, and forgets them. Returns how many were forgotten.
size_t billing_lease_sweep(billing_lease_t *self, proto_catalog_t *catalog, uint64_t now_ms);

//  Money the account's leases hold now.
int64_t billing_lease_held(billing_lease_t *self, uint64_t account_id);

//  Live leases.
size_t billing_lease_count(billing_lease_t *self);

//  Self test: grants from headroom, none near the limit, settle, return,
//  revoke, expiry, adoption.
void billing_lease_test(bool verbose);

#endif
