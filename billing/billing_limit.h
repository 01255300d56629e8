/*  billing_limit: the limits of one key or one account, counted in memory.

    Each API key and each account has a billing_limit_t in the billing
    instance that owns its account (instances are picked by account id, so
    one instance sees every request of an account and of all its keys). The
    configured limits (proto_limits_t) come from the catalog at each call,
    so a change applies to the next request.

    Requests and tokens per minute are token buckets: a bucket holds at most
    one minute's worth (the limit) and refills continuously at limit per
    minute, so a client may burst up to the limit and then goes at the
    limit's rate. Levels are integers in 1/60000 of a unit, which makes the
    per-millisecond refill exact (limit units per ms).
      - rpm: a request needs one whole request in the bucket;
      - tpm: a request needs min(its input estimate, the limit) tokens in
        the bucket; admission takes the estimate, settlement corrects it to
        the tokens really used (input + cache + output), so the bucket can
        go below zero and then refills before the next request passes.
    Concurrency counts requests admitted and not yet settled.
    Daily and monthly spend caps (UTC days and months) compare spent +
    reserved + this request's reservation with the cap; spent counts what
    settled here since the period began, plus what PostgreSQL's daily
    rollup held for the period when the instance started.

    A denial names its reason; nothing is taken when a request is denied.
*/
#ifndef BILLING_LIMIT_H_INCLUDED
#define BILLING_LIMIT_H_INCLUDED

#include "proto_catalog.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Bucket levels are kept in 1/S units of a request or token.
#define BILLING_LIMIT_SCALE 60000

//  One key's or account's counters.
typedef struct {
    int64_t rpm_level;       //  request bucket, in 1/SCALE requests
    uint64_t rpm_at_ms;      //  last refill (monotonic), 0 = never used: full
    int64_t tpm_level;       //  token bucket, in 1/SCALE tokens
    uint64_t tpm_at_ms;      //  last refill (monotonic), 0 = never used: full
    int64_t in_flight;       //  admitted, not yet settled
    int64_t reserved_micros; //  reservations of those requests
    int64_t day;             //  UTC day number the day figure is for
    int64_t day_micros;      //  spent that day
    int64_t month;           //  year * 12 + month - 1 the month figure is for
    int64_t month_micros;    //  spent that month
} billing_limit_t;

//  Why a request was denied.
typedef struct {
    int status;              //  HTTP status: 429 for every limit
    const char *code;        //  error code, static string
    char message[256];       //  for the client
    uint64_t retry_after_ms; //  when trying again may work
} billing_denial_t;

//  Checks whether one more request fits `limits`: concurrency, rpm, tpm,
//  daily and monthly caps, in that order. `who` ("key" or "account") goes
//  into the message. Returns true when it fits; false with *denial filled.
//  Refills the buckets (changes no count).
bool billing_limit_check(billing_limit_t *self, const proto_limits_t *limits, const char *who,
                         uint64_t tokens_estimate, int64_t reserve_micros, uint64_t now_ms,
                         uint64_t wall_us, billing_denial_t *denial);

//  Counts an admitted request: one request and its token estimate out of
//  the buckets, one more in flight, its reservation held.
void billing_limit_take(billing_limit_t *self, const proto_limits_t *limits,
                        uint64_t tokens_estimate, int64_t reserve_micros, uint64_t now_ms);

//  Ends a request admitted here: one less in flight, reservation released,
//  and the token bucket corrected from the estimate to what was used.
void billing_limit_release(billing_limit_t *self, const proto_limits_t *limits,
                           uint64_t tokens_estimate, uint64_t tokens_used, int64_t reserve_micros,
                           uint64_t now_ms);

//  Takes tokens used by a request that was not admitted here (admitted by
//  another instance, or before this one restarted).
void billing_limit_charge_tokens(billing_limit_t *self, const proto_limits_t *limits,
                                 uint64_t tokens_used, uint64_t now_ms);

//  Adds settled spend to the day and month figures of wall_us's UTC day.
void billing_limit_spend(billing_limit_t *self, int64_t cost_micros, uint64_t wall_us);

//  Sets the figures PostgreSQL knew at start for the day and month of wall_us.
void billing_limit_load(billing_limit_t *self, int64_t day_micros, int64_t month_micros,
                        uint64_t wall_us);

//  UTC day number (days since 1970-01-01) and month number (year*12+month-1)
//  of wall_us, and the milliseconds until the next day and month begin.
int64_t billing_limit_day(uint64_t wall_us);
int64_t billing_limit_month(uint64_t wall_us);
uint64_t billing_limit_ms_to_next_day(uint64_t wall_us);
uint64_t billing_limit_ms_to_next_month(uint64_t wall_us);

//  What is free for a lease under one key's or account's limits (each -1
//  when no such limit applies): money under the daily and monthly caps
//  (minus what is spent and reserved), whole requests and tokens in the
//  buckets, concurrency slots.
typedef struct {
    int64_t micros;   //  under the spend caps
    int64_t requests; //  in the rpm bucket
    int64_t tokens;   //  in the tpm bucket
    int64_t slots;    //  concurrency
} billing_room_t;

//  Fills *room for now (refills the buckets, changes no count).
void billing_limit_room(billing_limit_t *self, const proto_limits_t *limits, uint64_t now_ms,
                        uint64_t wall_us, billing_room_t *room);

//  Takes a lease's block at once (negative figures give back): requests
//  and tokens out of the buckets, slots in flight, micros reserved. A
//  bucket given back never rises above its capacity.
void billing_limit_block(billing_limit_t *self, const proto_limits_t *limits, int64_t requests,
                         int64_t tokens, int64_t slots, int64_t micros, uint64_t now_ms);

//  Self test.
void billing_limit_test(bool verbose);

#endif
