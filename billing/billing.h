/*  billing: the tollgate-billing program's state and message handling.

    Sockets: a ROUTER on billing.bind takes ADMIT (from ingress) and SETTLE
    (from dispatch, and from ingress for a request admitted but failed
    before dispatch); a DEALER connected to every ledger endpoint carries
    ENTRY out and COMMIT back. The catalog (keys, accounts, models, provider
    keys) is kept fresh by proto_watch; no request waits on PostgreSQL.

    ADMIT -> ADMIT_REPLY
        401 invalid_api_key    key unknown, revoked, disabled, expired, or its
                               account disabled (the message says which)
        404 model_not_found    model unknown or inactive
        403 model_not_allowed  the model exists, but the key's or its
                               account's allowed_models leaves it out
        402 insufficient_balance  balance - reserved - pending is below the
                               request's reservation (billing_book)
        429 concurrency_limit_exceeded, rate_limit_exceeded,
            token_limit_exceeded, spend_limit_exceeded
                               a key or account limit (billing_limit), with
                               retry_after_ms
        503 draining           not sent since a draining instance keeps
                               admitting its shard (older instances did;
                               ingress re-sends the ADMIT on it)
        200                    admitted; reserve_micros is the estimate held
                               for the request (proto_price_reserve)

    Sharding: ingress and dispatch pick the billing instance by
    account_id % (number of billing endpoints), so one instance sees every
    ADMIT and SETTLE of an account and of its keys, and its memory is the
    whole truth about them (docs/billing.md).

    SETTLE -> (ENTRY to the ledger) -> COMMIT back to the settler
        Idempotent settlement, in three cases by request id:
        - committed recently (billing_committed): answer COMMIT at once;
        - pending (ENTRY sent, ledger not yet committed): remember the new
          sender's routing id (the latest one wins) and wait;
        - otherwise: price it (proto_price), keep the ENTRY in an outbox
          that re-sends every 2 s until the ledger's COMMIT, then answer.
        The ledger inserts by request id, so an ENTRY sent twice (re-send,
        restart of this process, two billing instances) is counted once.

    Drain (SIGTERM): ADMIT gets 503, SETTLE is still taken, and the program
    ends when the outbox is empty (or the service's drain timeout passes;
    what is left is still held by the senders, who re-send).
*/
#ifndef BILLING_H_INCLUDED
#define BILLING_H_INCLUDED

#include "proto_service.h"

typedef struct _billing_t billing_t;

//  Re-send period of ENTRY messages not yet committed by the ledger.
#define BILLING_RESEND_MS 2000
//  Recently committed request ids kept, and for how long.
#define BILLING_COMMITTED_MAX 100000
#define BILLING_COMMITTED_AGE_MS (15 * 60 * 1000)

//  Binds, connects, loads the catalog. Returns NULL after logging why.
//  Caller owns return value.
billing_t *billing_new(proto_service_t *service);

//  Destroys the state and its sockets; nulls the pointer.
void billing_destroy(billing_t **self_p);

//  Stops admitting; calls proto_service_drained once the outbox is empty.
void billing_drain(billing_t *self);

//  JSON object text for PONG's meta: outbox, reservations and per-account
//  figures. Caller owns return value (free()).
char *billing_status(billing_t *self);

//  Self test: the server in-process with an injected catalog, driven through
//  a DEALER (admission and its refusals, settlement through a stand-in
//  ledger, a re-sent SETTLE, malformed input).
void billing_test(bool verbose);

#endif
