/*  billing_book: per-account money in a billing instance's memory.

    For every account this instance has seen it keeps
        balance_micros   the balance PostgreSQL had when the catalog was
                         loaded, minus costs the ledger committed since
        reserved_micros  estimates of requests admitted and not yet settled
        pending_micros   costs settled and sent to the ledger, not yet committed
    so what the account may still spend is balance - reserved - pending.
    This first cut only shows the figures (PONG status); the next step
    enforces them at admission.

    Reservations are held by request id, so a SETTLE releases exactly what
    its ADMIT reserved, whatever the wire says, and a request whose SETTLE
    never comes (its ingress died) is released by billing_book_expire.

    When a new catalog arrives every known account's balance is reset to the
    catalog's: PostgreSQL is the truth and includes what other instances
    spent. A commit whose COMMIT message reaches us after a reload that
    already saw it is subtracted twice until the next reload; the window is
    one ledger round trip, and the next step (credit leases) removes it.
*/
#ifndef BILLING_BOOK_H_INCLUDED
#define BILLING_BOOK_H_INCLUDED

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
    uint64_t reservations;   //  open reservations, counted
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

//  Holds `micros` for a request. A second reservation for the same request
//  id replaces the first.
void billing_book_reserve(billing_book_t *self, const char *request_id, uint64_t account_id,
                          int64_t catalog_balance, int64_t micros, uint64_t now_ms);

//  At SETTLE: releases the request's reservation (if this instance holds
//  one) and adds cost to the account's pending figure.
void billing_book_settle(billing_book_t *self, const char *request_id, uint64_t account_id,
                         int64_t catalog_balance, int64_t cost_micros);

//  At the ledger's COMMIT: moves cost from pending to the balance.
void billing_book_commit(billing_book_t *self, uint64_t account_id, int64_t cost_micros);

//  Releases reservations older than max_age_ms. Returns how many.
size_t billing_book_expire(billing_book_t *self, uint64_t now_ms, uint64_t max_age_ms);

//  A new catalog: resets each known account's balance to the catalog's.
void billing_book_rebase(billing_book_t *self, proto_catalog_t *catalog);

//  Open reservations.
size_t billing_book_reservations(billing_book_t *self);

//  Writes `"accounts":[{...},...]` JSON (no braces around it) into out,
//  stopping before `size` would be exceeded and then adding
//  `,"accounts_truncated":true`. Returns bytes written.
size_t billing_book_status(billing_book_t *self, char *out, size_t size);

//  Self test.
void billing_book_test(bool verbose);

#endif
