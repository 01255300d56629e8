/*  router_stats: what tollgate-health last said about each (provider, key,
    upstream model): state, success rate, EWMA latency and time to first
    token. Feeds the latency and reliability scheduling modes. HEALTH for a
    key with an empty model (an active probe of the key) stands in for any of
    its models that has no entry of its own. Pure data, no sockets.
*/
#ifndef ROUTER_STATS_H_INCLUDED
#define ROUTER_STATS_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    int state;            //  health_level_t: 0 unknown, 1 up, 2 degraded, 3 down
    uint32_t success_ppm; //  successes per million
    uint64_t latency_us;  //  EWMA latency
    uint64_t ttfb_us;     //  EWMA time to first token, 0 = unknown
    uint64_t updated_ms;  //  when heard
} router_stat_t;

typedef struct _router_stats_t router_stats_t;

//  Creates an empty table. Caller owns return value.
router_stats_t *router_stats_new(void);

//  Destroys the table; nulls the pointer.
void router_stats_destroy(router_stats_t **self_p);

//  Stores one HEALTH report.
void router_stats_update(router_stats_t *self, uint64_t provider_id, uint64_t provider_key_id,
                         const char *upstream_model, const router_stat_t *stat);

//  What is known about a candidate (its own entry, else its key's). False
//  when nothing is, or it is older than max_age_ms at now_ms.
bool router_stats_get(router_stats_t *self, uint64_t provider_id, uint64_t provider_key_id,
                      const char *upstream_model, uint64_t now_ms, uint64_t max_age_ms,
                      router_stat_t *out);

//  Every entry (none older than max_age_ms, 0 = all) as a JSON array for
//  the routing table: {id, state, success_ppm, latency_us, ttfb_us,
//  age_ms}. Caller owns return value.
json_t *router_stats_list(router_stats_t *self, uint64_t now_ms, uint64_t max_age_ms);

//  Stores the entries of such a list (another process' table), their age
//  kept. Malformed entries are skipped. Returns how many were stored.
size_t router_stats_merge(router_stats_t *self, json_t *list, uint64_t now_ms);

//  Self test.
void router_stats_test(bool verbose);

#endif
