/*  ingress_usage: what a client key may read about itself with its own
    key: GET /v1/usage (Tollgate's shape), and the two OpenAI dashboard
    routes that chat front ends and CLIs read a balance from
    (/dashboard/billing/subscription and /dashboard/billing/usage, also
    under /v1).

    Limits, names and expiry come from the catalog; money (balance,
    reservations, the day's and month's spend) from the billing instance
    that owns the account (BALANCE -> BALANCE_REPLY, billing_balance.h),
    since the catalog's balance is only what it was at the last load.
    docs/ingress.md shows the answers.
*/
#ifndef INGRESS_USAGE_H_INCLUDED
#define INGRESS_USAGE_H_INCLUDED

#include "proto_catalog.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Which answer a route gives (the route's metrics name).
#define INGRESS_USAGE_SELF "usage"                        //  GET /v1/usage
#define INGRESS_USAGE_SUBSCRIPTION "billing_subscription" //  .../dashboard/billing/subscription
#define INGRESS_USAGE_DASHBOARD "billing_usage"           //  .../dashboard/billing/usage

//  Checks the query of a view before anything is asked: the dashboard's
//  start_date and end_date, when given, are YYYY-MM-DD. Returns 0, or -1
//  with a message naming the parameter in error.
int ingress_usage_check(const char *view, const char *start_date, const char *end_date, char *error,
                        size_t error_size);

//  The answer body of a view for the key, from billing's figures (the
//  BALANCE_REPLY meta). Returns NULL when meta is not what billing sends.
//  Caller owns return value.
char *ingress_usage_answer(const char *view, proto_catalog_t *catalog, const proto_api_key_t *key,
                           const char *meta);

//  Self test.
void ingress_usage_test(bool verbose);

#endif
