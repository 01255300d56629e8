/*  billing_book: per-account money and per-key and per-account limits in a
    billing instance's memory.

    For every account this instance has seen it keeps
        balance_micros   the balance PostgreSQL had when the catalog was
                         loaded, minus costs the ledger committed since
        reserved_micros  estimates of requests admitted and not yet settled
        pending_micros   costs settled and sent to the ledger, not yet committed
        leased_micros    credit held by leases that ingress instances admit
                         from without asking (billing_lease)
    so what the account may still spend is balance - reserved - pending -
    leased, and
    admission refuses a request whose reservation is larger (402). Each
    account and each key also has its billing_limit_t (rate, tokens,
    concurrency, spend caps), checked at admission and counted here.

    Reservations are held by request id, so a SETTLE releases exactly what
    its ADMIT reserved (money, one in-flight slot, the token estimate),
    whatever the wire says, and a request whose SETTLE never comes (its
    ingress died) is released by billing_book_expire.

    When a new catalog arrives every known account's balance is reset to the
    catalog's: PostgreSQL is the truth (top-ups, adjustments). The catalog
    is loaded on billing's own thread, so every COMMIT that came before it
    is in it; a COMMIT that comes after it names the ledger's transaction,
    and its cost leaves the balance only when the catalog's snapshot did not
    see that transaction (billing_book_commit's in_balance). Without that a
    charge committed just before a reload and acknowledged just after was
    subtracted twice until the next reload.
*/
#ifndef BILLING_BOOK_H_INCLUDED
#define BILLING_BOOK_H_INCLUDED

#include "billing_limit.h"
#include "proto_catalog.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _billing_book_t billing_book_t;

//  One account's figures.
typedef struct {
    uint64_t account_id;     //  accounts.id
    int64_t balance_micros;  //  catalog balance minus committed costs since
    int64_t reserved_micros; //  open reservations
    int64_t pending_micros;  //  settled, not yet committed
    int64_t leased_micros;   //  held by leases of ingress instances (billing_lease)
    uint64_t reservations;   //  open reservations, counted
    billing_limit_t limit;   //  account-wide limit counters
} billing_account_t;

//  Creates an empty book. Caller owns return value.
billing_book_t *billing_book_new(void);

//  Destroys the book; nulls the pointer.
void billing_book_destroy(billing_book_t **self_p);

//  The account's figures, creating them from `catalog_balance` on first use.
//  Borrowed; valid until the book is destroyed.
billing_account_t *billing_book_account(billing_book_t *self, uint64_t account_id,
                                        int64_t catalog_balance);

//  Looks an account up without creating it. Borrowed, or NULL.
billing_account_t *billing_book_find(billing_book_t *self, uint64_t account_id);

//  Admission: checks the account's balance (balance - reserved - pending
//  must cover reserve_micros, else 402 insufficient_balance), then the
//  key's and the account's limits. When all pass, holds the reservation
//  under the request id and returns true; otherwise fills *denial and
//  takes nothing. A second admission of an id that is held (a re-sent
//  ADMIT) returns true and takes nothing more.
bool billing_book_admit(billing_book_t *self, const char *request_id,
                        const proto_account_t *account, const proto_api_key_t *key,
                        uint64_t tokens_estimate, int64_t reserve_micros, uint64_t now_ms,
                        uint64_t wall_us, billing_denial_t *denial);

//  At SETTLE: releases the request's reservation (if this instance holds
//  one: its money, in-flight slot and token estimate, corrected to
//  tokens_used), adds cost to the account's pending figure and to the key's
//  and account's spend. `catalog` gives the current limits.
//  `leased`: admitted from a lease (billing_lease), whose grant took its
//  tokens already.
void billing_book_settle(billing_book_t *self, proto_catalog_t *catalog, const char *request_id,
                         uint64_t account_id, uint64_t key_id, int64_t cost_micros,
                         uint64_t tokens_used, bool leased, uint64_t now_ms, uint64_t wall_us);

//  At start: what PostgreSQL's daily rollup holds for a key (and so for its
//  account) for the current UTC day and month. Adds to the account's
//  figures, sets the key's.
void billing_book_load_spend(billing_book_t *self, proto_catalog_t *catalog, uint64_t account_id,
                             uint64_t key_id, int64_t day_micros, int64_t month_micros,
                             uint64_t wall_us);

//  The limit counters of a key, created on first use. Borrowed.
billing_limit_t *billing_book_key(billing_book_t *self, uint64_t key_id);

//  True when this book holds a reservation under request_id (its ADMIT was
//  admitted here and not yet settled or expired) for this account and key.
bool billing_book_holds(billing_book_t *self, const char *request_id, uint64_t account_id,
                        uint64_t key_id);

//  At the ledger's COMMIT: moves cost from pending to the balance, or only
//  drops it from pending when `in_balance` (the current catalog read the
//  balance after the ledger's transaction: proto_catalog_saw_transaction).
void billing_book_commit(billing_book_t *self, uint64_t account_id, int64_t cost_micros,
                         bool in_balance);

//  Releases reservations older than max_age_ms. Returns how many.
size_t billing_book_expire(billing_book_t *self, proto_catalog_t *catalog, uint64_t now_ms,
                           uint64_t max_age_ms);

//  A new catalog: resets each known account's balance to the catalog's.
void billing_book_rebase(billing_book_t *self, proto_catalog_t *catalog);

//  Open reservations.
size_t billing_book_reservations(billing_book_t *self);

//  Writes `"accounts":[{...},...]` JSON (no braces around it) into out,
//  stopping before `size` would be exceeded and then adding
//  `,"accounts_truncated":true`. Returns bytes written.
size_t billing_book_status(billing_book_t *self, char *out, size_t size);

//  Money an account may still commit: balance - reserved - pending - leased.
int64_t billing_book_available(billing_book_t *self, const proto_account_t *account);

//  Holds (delta > 0) or releases (delta < 0) money for a lease of key_id:
//  counted in the account's leased figure, which admission subtracts, and
//  in the key's and the account's spend caps like a reservation.
void billing_book_lease_hold(billing_book_t *self, proto_catalog_t *catalog, uint64_t account_id,
                             uint64_t key_id, int64_t delta_micros);

//  Self test.
void billing_book_test(bool verbose);

#endif
