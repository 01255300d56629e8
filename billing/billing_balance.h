/*  billing_balance: what an API key may read about its own money, from the
    memory of the billing instance that owns its account (BALANCE ->
    BALANCE_REPLY; ingress's GET /v1/usage).

    The figures are this instance's, which for an account is the whole
    truth (every ADMIT and SETTLE of an account comes here):
        balance_micros    the catalog's balance, less every cost committed
                          or settled since (pending included): what the
                          account has now
        available_micros  what admission may still reserve: balance less
                          open reservations and what leases hold
        reserved_micros   estimates of requests in flight
        spend             {day_micros, month_micros} of the account and of
                          the key in the current UTC day and month
*/
#ifndef BILLING_BALANCE_H_INCLUDED
#define BILLING_BALANCE_H_INCLUDED

#include "billing_book.h"
#include "proto_catalog.h"

#include <stdbool.h>
#include <stdint.h>

//  The figures of the key's account as JSON text: {"balance_micros",
//  "available_micros", "reserved_micros", "account_spend": {"day_micros",
//  "month_micros"}, "key_spend": {...}}. `wall_us` is epoch microseconds.
//  Caller owns return value.
char *billing_balance_meta(billing_book_t *book, proto_catalog_t *catalog,
                           const proto_api_key_t *key, const proto_account_t *account,
                           uint64_t wall_us);

//  Self test.
void billing_balance_test(bool verbose);

#endif
