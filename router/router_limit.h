/*  router_limit: per provider key max requests per second and max requests
    in flight (provider_keys.max_rps, max_concurrent), approximately, across
    every router instance.

    Each of R router instances (router.instances, default the number of
    router.endpoints) enforces its share ceil(max / R): a token bucket of
    ceil(max_rps / R) per second (burst one second's worth), and at most
    ceil(max_concurrent / R) of its own decisions in flight whose first
    candidate is the key. A decision counts against its first candidate from
    the moment it is made until the first OUTCOME for its request id (or
    `max_age_ms`, in case that never arrives). Ingress spreads ROUTEs evenly
    over routers, so the cluster-wide bound is about R x ceil(max / R): at
    most max + R - 1. Failover attempts to later candidates are not counted.
    Pure data, no sockets.
*/
#ifndef ROUTER_LIMIT_H_INCLUDED
#define ROUTER_LIMIT_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _router_limit_t router_limit_t;

//  Creates the counters for one of `instances` routers. Caller owns return value.
router_limit_t *router_limit_new(uint32_t instances);

//  Destroys the counters; nulls the pointer.
void router_limit_destroy(router_limit_t **self_p);

//  Could a decision go to this key now? 0 = no limit. When not, *why is
//  "max_rps" or "max_concurrent" and *retry_ms a hint of when it could.
bool router_limit_allows(router_limit_t *self, uint64_t key_id, int64_t max_rps,
                         int64_t max_concurrent, uint64_t now_ms, const char **why,
                         uint64_t *retry_ms);

//  Counts a decision whose first candidate is key_id (request id rid).
void router_limit_start(router_limit_t *self, const char *rid, uint64_t key_id, int64_t max_rps,
                        uint64_t now_ms);

//  The first OUTCOME for rid arrived: no longer in flight. Unknown ids are ignored.
void router_limit_finish(router_limit_t *self, const char *rid);

//  Forgets decisions older than max_age_ms. Returns how many.
size_t router_limit_sweep(router_limit_t *self, uint64_t now_ms, uint64_t max_age_ms);

//  Requests this router counts in flight for key_id.
uint32_t router_limit_in_flight(router_limit_t *self, uint64_t key_id);

//  Sets this instance's share of a key's limits as the router granted it
//  (requests per second, requests in flight); negative: none granted, an
//  equal part (ceil(max / instances)) is used.
void router_limit_set_share(router_limit_t *self, uint64_t key_id, double rps, double concurrent);

//  Demand since the last call: for every key with a limit, the decisions
//  that wanted it plus those in flight, as a JSON object {"KEY_ID": n}.
//  Resets the counts. Caller owns return value.
json_t *router_limit_take_demand(router_limit_t *self);

//  Self test.
void router_limit_test(bool verbose);

#endif
