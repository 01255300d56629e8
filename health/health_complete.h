/*  health_complete: 1-token completion probes of (provider key, model) pairs
    (docs/routing.md section 6, "Completion probes").

    Which pairs: every (provider, upstream model) a logical model resolves
    to (proto_map), times the provider's active keys. What a probe is: the
    cheapest generation the protocol has, 1 output token (Responses: 16, its
    least, and counted at 16), to the URL and with the headers a client request would use
    (dispatch_reach: the provider's path, its model settings, its extra
    headers). What it may cost: the scheduled probes of one UTC day stop at
    `health.probe_budget_micros`, each counted at the dearest logical model
    served by the pair (12 input and 1 output tokens, plus any per-request
    price), charged only once the probe is queued; on-demand probes are
    counted but not stopped. The probe goes through the provider's proxies
    in turn, as dispatch's calls do (health_probe).
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
//  The provider's proxies are tried from proxy_first on (its turn).
int health_complete_target(proto_catalog_t *catalog, const proto_provider_t *provider,
                           const proto_provider_key_t *key, const char *model, size_t proxy_first,
                           health_probe_target_t *target, char **body);

//  The output tokens a probe in protocol allows: 1, or 16 for Responses
//  (its least max_output_tokens).
int health_complete_output_tokens(int protocol);

//  What one probe in protocol is counted at, in micro-units, for a logical
//  model's prices (12 input tokens and the output tokens it allows, plus
//  the per-request price), at least 1. The caller takes the dearest logical
//  model served by the pair.
int64_t health_complete_cost(const proto_model_t *model, int protocol);

//  True when `cost` fits in what is left of UTC day `day` (days since the
//  epoch), or forced. Counts nothing: health_complete_charge does, once
//  the probe is queued.
bool health_complete_fits(health_complete_t *self, int64_t cost, int64_t day, bool forced);

//  Counts `cost` on day `day`.
void health_complete_charge(health_complete_t *self, int64_t cost, int64_t day);

//  Spent on `day` so far.
int64_t health_complete_spent(health_complete_t *self, int64_t day);

//  Self test.
void health_complete_test(bool verbose);

#endif
