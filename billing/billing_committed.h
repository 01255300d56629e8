/*  billing_committed: the request ids whose usage the ledger has committed
    recently.

    Dispatch keeps a SETTLE until billing answers COMMIT, and re-sends it
    every couple of seconds; a COMMIT can cross a re-send, and a re-send can
    arrive after billing forgot the request. Remembering recent commits lets
    billing answer such a SETTLE with COMMIT at once instead of sending the
    ledger a new ENTRY (which would be harmless, the ledger inserts by request
    id, but costs a database round trip). The set is bounded twice: at most
    `capacity` ids (the oldest goes first) and none older than `max_age_ms`.
    A SETTLE for an id that has dropped out is simply settled again, which
    the ledger turns into a duplicate: correctness never depends on this set.

    Up to 100,000 ids live here (15 minutes of commits), so each costs what
    it holds: ~37 bytes in a proto_idset, which keeps a keyed digest of the
    id, not the id (a strdup, a zhashx entry and a slot were ~133). So a
    SETTLE never seen is not answered from here (it would go uncharged)
    but with a chance of 2^-128 a pair.
*/
#ifndef BILLING_COMMITTED_H_INCLUDED
#define BILLING_COMMITTED_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _billing_committed_t billing_committed_t;

//  Creates an empty set. Caller owns return value.
billing_committed_t *billing_committed_new(size_t capacity, uint64_t max_age_ms);

//  Destroys the set; nulls the pointer.
void billing_committed_destroy(billing_committed_t **self_p);

//  Remembers a committed request id at time now_ms (monotonic). Adding an id
//  already held does nothing. Evicts the oldest when full, and the expired.
void billing_committed_add(billing_committed_t *self, const char *request_id, uint64_t now_ms);

//  Forgets the ids older than max_age_ms and gives back the room they
//  took (the sweep calls it, so an idle billing shrinks too).
void billing_committed_expire(billing_committed_t *self, uint64_t now_ms);

//  True when the id was committed no longer than max_age_ms ago.
bool billing_committed_has(billing_committed_t *self, const char *request_id, uint64_t now_ms);

//  Ids held (some may be expired but not yet evicted).
size_t billing_committed_size(billing_committed_t *self);

//  Self test.
void billing_committed_test(bool verbose);

#endif
