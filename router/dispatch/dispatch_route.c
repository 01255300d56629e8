#include "dispatch_route.h"
#include "proto_log.h"
#include "proto_msg.h"
#include "proto_socket.h"
#include "router_server.h"

#include <assert.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_ENDPOINTS 64
#define S_STATS_MAX_AGE_MS 600000 //  health older than this is not used
#define S_DEMAND_MS 1000          //  DEMAND for key shares this often
//  Our own breaker that the router's table does not show yet is kept this
//  long: the router has heard our failure within that time, unless it is
//  down, and then our own view is the best there is.
#define S_BREAKER_GRACE_MS 1000

struct _dispatch_route_t {
    proto_config_t *config;    //  the program's configuration (borrowed)
    const char *instance;      //  our name in the tables' shares (borrowed)
    proto_loop_t *loop;        //  the program's loop, once listening
    proto_batch_t *outcomes;   //  where DEMAND goes (borrowed)
    zsock_t *tables;           //  SUB to every router.table endpoint
    proto_catalog_t *catalog;  //  current snapshot (borrowed)
    proto_map_t *map;          //  the catalog's pairs, resolved
    router_breaker_t *breaker; //  our outcomes at once, the cluster's by table
    router_stats_t *stats;     //  health, from the tables
    router_limit_t *limit;     //  our shares of provider-key limits
    router_sticky_t *sticky;   //  per client key, the model that served it well
    router_rng_t rng;          //  spreads ties
    router_scratch_t *scratch; //  the decisions' working space
    bool zero_config;          //  router.zero_config
    uint64_t table_version;    //  of the last table merged
    char table_router[128];    //  and the router it came from
    uint64_t tables_merged;    //  tables merged so far
    zhashx_t *resets;          //  router instance -> its operator resets seen
    int demand_timer;          //  sends DEMAND
};

dispatch_route_t *dispatch_route_new(proto_config_t *config, const char *instance)
{
    dispatch_route_t *self = calloc(1, sizeof *self);
    assert(self);
    self->config = config;
    self->instance = instance;
    router_breaker_config_t breaker = router_server_breaker_config(config);
    self->breaker = router_breaker_new(&breaker);
    self->stats = router_stats_new();
    self->scratch = router_scratch_new();
    self->resets = zhashx_new();
    //  Our share of a limited key is 1/instances until the routers say
    //  otherwise.
    const char *dispatch_endpoints[S_MAX_ENDPOINTS];
    int instances = (int)proto_config_int(config, "dispatch.instances");
    if (instances <= 0)
        instances = proto_config_endpoints(config, "dispatch", dispatch_endpoints, S_MAX_ENDPOINTS);
    self->limit = router_limit_new(instances > 0 ? (uint32_t)instances : 1);
    self->sticky = router_sticky_new(
        1000, (uint64_t)proto_config_int(config, "router.preference_ttl_ms"), 100000);
    self->zero_config = proto_config_bool(config, "router.zero_config");
    uint64_t seed;
    randombytes_buf(&seed, sizeof seed);
    router_rng_seed(&self->rng, seed);
    return self;
}

void dispatch_route_destroy(dispatch_route_t **self_p)
{
    assert(self_p);
    dispatch_route_t *self = *self_p;
    if (!self)
        return;
    if (self->demand_timer)
        proto_loop_cancel_timer(self->loop, self->demand_timer);
    if (self->tables && self->loop)
        proto_loop_remove_socket(self->loop, self->tables);
    proto_map_destroy(&self->map);
    router_breaker_destroy(&self->breaker);
    router_stats_destroy(&self->stats);
    router_limit_destroy(&self->limit);
    router_sticky_destroy(&self->sticky);
    router_scratch_destroy(&self->scratch);
    zhashx_destroy(&self->resets);
    zsock_destroy(&self->tables);
    free(self);
    *self_p = NULL;
}

//  A routing table from a router: its breakers (the cluster's view), the
//  health it heard and our shares of limited provider keys.
static void s_table(dispatch_route_t *self, proto_msg_t *msg)
{
    zframe_t *body = proto_msg_body(msg);
    json_t *table =
        body ? json_loadb((const char *)zframe_data(body), zframe_size(body), 0, NULL) : NULL;
    if (!json_is_object(table)) {
        json_decref(table);
        log_warn(NULL, "routing table %llu from %s is not a JSON object; dropped",
                 (unsigned long long)proto_msg_version(msg), proto_msg_instance(msg));
        return;
    }
    uint64_t now = proto_loop_now_ms();
    uint64_t wall = (uint64_t)json_integer_value(json_object_get(table, "wall_ms"));
    //  An operator's reset since the last table closes our own breakers too,
    //  even fresh ones.
    const char *router = proto_msg_instance(msg);
    uint64_t resets = (uint64_t)json_integer_value(json_object_get(table, "resets"));
    uint64_t seen = (uint64_t)(uintptr_t)zhashx_lookup(self->resets, router);
    if (resets != seen)
        zhashx_update(self->resets, router, (void *)(uintptr_t)resets);
    uint64_t grace = seen && resets != seen ? 0 : S_BREAKER_GRACE_MS;
    //  Times in the table are the router's wall clock: read them against
    //  its own "now", so clocks that differ between hosts cancel out.
    router_breaker_merge(self->breaker, json_object_get(table, "breakers"), now,
                         wall ? wall : proto_loop_wall_us() / 1000, grace);
    router_stats_merge(self->stats, json_object_get(table, "stats"), now);
    json_t *mine = json_object_get(json_object_get(table, "shares"), self->instance);
    const char *key;
    json_t *share;
    json_object_foreach(mine, key, share)
    {
        double rps = json_number_value(json_array_get(share, 0));
        double concurrent = json_number_value(json_array_get(share, 1));
        router_limit_set_share(self->limit, strtoull(key, NULL, 10), rps, concurrent);
    }
    self->table_version = proto_msg_version(msg);
    snprintf(self->table_router, sizeof self->table_router, "%s", proto_msg_instance(msg));
    self->tables_merged++;
    json_decref(table);
}

static void s_tables_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    proto_msg_t *msg = NULL;
    int rc = proto_msg_recv(&msg, socket);
    if (rc == -2)
        log_warn(NULL, "dropped a malformed routing table");
    if (rc == 0 && proto_msg_type(msg) == PROTO_MSG_ROUTING_TABLE)
        s_table(arg, msg);
    proto_msg_destroy(&msg);
}

//  Tells the routers how much each limited provider key was wanted here,
//  so that they share its limit out by demand (and know we are alive).
static void s_demand_tick(proto_loop_t *loop, int id, void *arg)
{
    dispatch_route_t *self = arg;
    json_t *demand = router_limit_take_demand(self->limit);
    char *text = json_dumps(demand, JSON_COMPACT);
    json_decref(demand);
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_DEMAND);
    proto_msg_set_instance(msg, self->instance);
    if (text)
        proto_msg_set_body_bytes(msg, text, strlen(text));
    free(text);
    proto_batch_add(self->outcomes, &msg);
}

int dispatch_route_listen(dispatch_route_t *self, proto_loop_t *loop, proto_batch_t *outcomes)
{
    assert(!self->tables);
    self->loop = loop;
    self->outcomes = outcomes;
    self->tables = proto_socket_new(ZMQ_SUB);
    if (!self->tables)
        return -1;
    zsock_set_subscribe(self->tables, "");
    proto_socket_connect_all(self->tables, self->config, "router.table");
    proto_loop_add_socket_edge(self->loop, self->tables, s_tables_ready, self);
    self->demand_timer = proto_loop_add_timer(self->loop, S_DEMAND_MS, true, s_demand_tick, self);
    return 0;
}

void dispatch_route_set_catalog(dispatch_route_t *self, proto_catalog_t *catalog)
{
    //  The pairs borrow the old snapshot, which the caller destroys next.
    proto_map_destroy(&self->map);
    self->catalog = catalog;
    self->map = proto_map_build(catalog, self->zero_config);
    //  A key our breakers disabled that an operator re-enabled comes back.
    for (size_t i = 0; i < proto_catalog_provider_key_count(catalog); i++) {
        const proto_provider_key_t *key = proto_catalog_provider_key_at(catalog, i);
        router_breaker_sync_key(self->breaker, key->id, key->active);
    }
}

void dispatch_route_decide(dispatch_route_t *self, const router_request_t *request,
                           router_decision_t *decision)
{
    router_context_t context = {.catalog = self->catalog,
                                .map = self->map,
                                .breaker = self->breaker,
                                .sticky = self->sticky,
                                .stats = self->stats,
                                .limit = self->limit,
                                .rng = &self->rng,
                                .stats_max_age_ms = S_STATS_MAX_AGE_MS,
                                .scratch = self->scratch};
    router_select_decide(&context, request, decision, NULL);
}

//  Our own outcome changes our breakers at once, before the router's table
//  says so; a success teaches the key's preferred model, and ends the
//  decision's hold on the key's concurrency share.
void dispatch_route_learn(dispatch_route_t *self, const char *request_id,
                          const proto_candidate_t *candidate, uint64_t key_id, int status,
                          const char *error_code, uint64_t retry_after_ms)
{
    uint64_t now = proto_loop_now_ms();
    router_breaker_event_t event =
        router_breaker_record(self->breaker, candidate->provider_id, candidate->provider_key_id,
                              candidate->upstream_model, status, error_code, retry_after_ms, now);
    if (event == ROUTER_BREAKER_OPENED || event == ROUTER_BREAKER_KEY_DISABLED)
        log_info(request_id, "breaker: open here for provider=%llu key=%llu model=%s (status %d)",
                 (unsigned long long)candidate->provider_id,
                 (unsigned long long)candidate->provider_key_id, candidate->upstream_model, status);
    if (status >= 200 && status < 300 && key_id)
        router_sticky_prefer(self->sticky, key_id, candidate->provider_id,
                             candidate->upstream_model, now);
    router_limit_finish(self->limit, request_id);
}

void dispatch_route_finish(dispatch_route_t *self, const char *request_id)
{
    router_limit_finish(self->limit, request_id);
}

uint64_t dispatch_route_table_version(dispatch_route_t *self)
{
    return self->table_version;
}

const char *dispatch_route_table_router(dispatch_route_t *self)
{
    return self->table_router;
}

uint64_t dispatch_route_tables_merged(dispatch_route_t *self)
{
    return self->tables_merged;
}
