/*  health_complete: 1-token completion probes of (provider key, model) pairs
    (docs/routing.md section 6, "Completion probes").

    Which pairs: every (provider, upstream model) a logical model resolves
    to (proto_map), times the provider's active keys. What a probe is: the
    cheapest generation the protocol has, 1 output token (Responses: 16, its
    least), to the URL and with the headers a client request would use
    (dispatch_reach: the provider's path, its model settings, its extra
    headers). What it may cost: the scheduled probes of one UTC day stop at
    `health.probe_budget_micros`, each counted at the dearest logical model
    served by the pair (12 input and 1 output tokens, plus any per-request
    price); on-demand probes are counted but not stopped.
*/
#ifndef HEALTH_COMPLETE_H_INCLUDED
#define HEALTH_COMPLETE_H_INCLUDED

#include "health_probe.h"
#include "proto_catalog.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct _health_complete_t health_complete_t;

//  Creates the day's budget. Caller owns return value.
health_complete_t *health_complete_new(int64_t budget_micros);

//  Destroys it; nulls the pointer.
void health_complete_destroy(health_complete_t **self_p);

//  The JSON body of a 1-token generation in protocol for model. Caller frees.
char *health_complete_body(int protocol, const char *model);

//  Fills a completion probe's target for (key, model) at provider: URL,
//  headers (the target owns them) and body (*body, caller frees after
//  queueing). Returns 0, or -1 when no URL can be made.
int health_complete_target(proto_catalog_t *catalog, const proto_provider_t *provider,
                           const proto_provider_key_t *key, const char *model,
                           health_probe_target_t *target, char **body);

//  What one probe is counted at, in micro-units, for a logical model's
//  prices (12 input and 1 output tokens, plus the per-request price), at
//  least 1. The caller takes the dearest logical model served by the pair.
int64_t health_complete_cost(const proto_model_t *model);

//  Counts `cost` on UTC day `day` (days since the epoch). Returns false, and
//  counts nothing, when it would go over the budget and !forced.
bool health_complete_spend(health_complete_t *self, int64_t cost, int64_t day, bool forced);

//  Spent on `day` so far.
int64_t health_complete_spent(health_complete_t *self, int64_t day);

//  Self test.
void health_complete_test(bool verbose);

#endif
