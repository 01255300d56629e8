#include "router_limit.h"
#include "proto_text.h"
#include "proto_check.h"

#include <assert.h>
#include <jansson.h>
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Per provider key.
typedef struct {
    double tokens;           //  requests this second's bucket still allows
    uint64_t refilled_ms;    //  last refill
    uint32_t in_flight;      //  decisions not yet answered by an OUTCOME
    double share_rps;        //  granted share of max_rps, < 0 = none granted
    double share_concurrent; //  granted share of max_concurrent, < 0 = none
    uint64_t demand;         //  decisions that wanted the key since the last report
} s_key_t;

//  Per decision in flight.
typedef struct {
    uint64_t key_id;     //  its first candidate's key
    uint64_t started_ms; //  when decided
} s_flight_t;

struct _router_limit_t {
    uint32_t instances; //  routers sharing each limit
    zhashx_t *keys;     //  "ID" -> s_key_t (owned)
    zhashx_t *flights;  //  request id -> s_flight_t (owned)
};

static void s_free(void **item)
{
    free(*item);
    *item = NULL;
}

router_limit_t *router_limit_new(uint32_t instances)
{
    router_limit_t *self = calloc(1, sizeof *self);
    assert(self);
    self->instances = instances ? instances : 1;
    self->keys = zhashx_new();
    zhashx_set_destructor(self->keys, s_free);
    self->flights = zhashx_new();
    zhashx_set_destructor(self->flights, s_free);
    return self;
}

void router_limit_destroy(router_limit_t **self_p)
{
    assert(self_p);
    router_limit_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy(&self->keys);
    zhashx_destroy(&self->flights);
    free(self);
    *self_p = NULL;
}

//  This instance's share of a cluster-wide limit: what the router granted,
//  else an equal part.
static double s_share(router_limit_t *self, int64_t limit, double granted)
{
    if (granted >= 0)
        return granted < (double)limit ? granted : (double)limit;
    return (double)((limit + self->instances - 1) / self->instances);
}

static s_key_t *s_key(router_limit_t *self, uint64_t key_id, bool create)
{
    char name[24];
    proto_text_u64(name, key_id);
    s_key_t *key = zhashx_lookup(self->keys, name);
    if (!key && create) {
        key = calloc(1, sizeof *key);
        assert(key);
        key->tokens = -1; //  fill on first use
        key->share_rps = -1;
        key->share_concurrent = -1;
        zhashx_insert(self->keys, name, key);
    }
    return key;
}

//  The bucket holds a second's worth, and at least one request: a small
//  share still lets a request through now and then.
static void s_refill(router_limit_t *self, s_key_t *key, int64_t max_rps, uint64_t now_ms)
{
    double rate = s_share(self, max_rps, key->share_rps);
    double capacity = rate > 1.0 ? rate : 1.0;
    if (key->tokens < 0 || now_ms < key->refilled_ms)
        key->tokens = capacity;
    else
        key->tokens += rate * (double)(now_ms - key->refilled_ms) / 1000.0;
    if (key->tokens > capacity)
        key->tokens = capacity;
    key->refilled_ms = now_ms;
}

bool router_limit_allows(router_limit_t *self, uint64_t key_id, int64_t max_rps,
                         int64_t max_concurrent, uint64_t now_ms, const char **why,
                         uint64_t *retry_ms)
{
    if (max_rps <= 0 && max_concurrent <= 0)
        return true;
    s_key_t *key = s_key(self, key_id, true);
    key->demand++;
    double concurrent = s_share(self, max_concurrent, key->share_concurrent);
    if (max_concurrent > 0 && key->in_flight >= (concurrent >= 1.0 ? concurrent : 1.0)) {
        *why = "max_concurrent";
        *retry_ms = 1000;
        return false;
    }
    if (max_rps > 0) {
        s_refill(self, key, max_rps, now_ms);
        if (key->tokens < 1.0) {
            *why = "max_rps";
            double rate = s_share(self, max_rps, key->share_rps);
            *retry_ms = rate > 0 ? (uint64_t)((1.0 - key->tokens) * 1000.0 / rate) + 1 : 1000;
            return false;
        }
    }
    return true;
}

void router_limit_start(router_limit_t *self, const char *rid, uint64_t key_id, int64_t max_rps,
                        uint64_t now_ms)
{
    s_key_t *key = s_key(self, key_id, true);
    if (max_rps > 0) {
        s_refill(self, key, max_rps, now_ms);
        key->tokens -= 1.0;
    }
    if (!rid || !*rid || zhashx_lookup(self->flights, rid))
        return;
    s_flight_t *flight = calloc(1, sizeof *flight);
    assert(flight);
    flight->key_id = key_id;
    flight->started_ms = now_ms;
    zhashx_insert(self->flights, rid, flight);
    key->in_flight++;
}

void router_limit_finish(router_limit_t *self, const char *rid)
{
    s_flight_t *flight = rid ? zhashx_lookup(self->flights, rid) : NULL;
    if (!flight)
        return;
    s_key_t *key = s_key(self, flight->key_id, false);
    if (key && key->in_flight)
        key->in_flight--;
    zhashx_delete(self->flights, rid);
}

size_t router_limit_sweep(router_limit_t *self, uint64_t now_ms, uint64_t max_age_ms)
{
    zlistx_t *old = zlistx_new();
    zlistx_set_duplicator(old, (zlistx_duplicator_fn *)strdup);
    zlistx_set_destructor(old, (zlistx_destructor_fn *)zstr_free);
    for (s_flight_t *flight = zhashx_first(self->flights); flight;
         flight = zhashx_next(self->flights))
        if (flight->started_ms + max_age_ms <= now_ms)
            zlistx_add_end(old, (void *)zhashx_cursor(self->flights));
    size_t count = zlistx_size(old);
    for (const char *rid = zlistx_first(old); rid; rid = zlistx_next(old))
        router_limit_finish(self, rid);
    zlistx_destroy(&old);
    return count;
}

uint32_t router_limit_in_flight(router_limit_t *self, uint64_t key_id)
{
    s_key_t *key = s_key(self, key_id, false);
    return key ? key->in_flight : 0;
}

void router_limit_set_share(router_limit_t *self, uint64_t key_id, double rps, double concurrent)
{
    s_key_t *key = s_key(self, key_id, true);
    key->share_rps = rps;
    key->share_concurrent = concurrent;
}

json_t *router_limit_take_demand(router_limit_t *self)
{
    json_t *demand = json_object();
    for (s_key_t *key = zhashx_first(self->keys); key; key = zhashx_next(self->keys)) {
        if (!key->demand && !key->in_flight)
            continue;
        json_object_set_new(demand, zhashx_cursor(self->keys),
                            json_integer((json_int_t)(key->demand + key->in_flight)));
        key->demand = 0;
    }
    return demand;
}

void router_limit_test(bool verbose)
{
    if (verbose)
        printf(" * router_limit: ");
    const char *why = NULL;
    uint64_t retry = 0;
    //  One router: 5 rps means 5 decisions now, the 6th waits ~200 ms.
    router_limit_t *limit = router_limit_new(1);
    PROTO_CHECK(router_limit_allows(limit, 1, 0, 0, 0, &why, &retry));
    for (int i = 0; i < 5; i++) {
        PROTO_CHECK(router_limit_allows(limit, 1, 5, 0, 1000, &why, &retry));
        router_limit_start(limit, NULL, 1, 5, 1000);
    }
    PROTO_CHECK(!router_limit_allows(limit, 1, 5, 0, 1000, &why, &retry));
    PROTO_CHECK(strcmp(why, "max_rps") == 0 && retry > 150 && retry <= 201);
    PROTO_CHECK(router_limit_allows(limit, 1, 5, 0, 1200, &why, &retry));
    //  Over a simulated minute, decisions made at full speed stay at the rate.
    int granted = 0;
    for (uint64_t now = 10000; now < 70000; now += 10)
        if (router_limit_allows(limit, 2, 5, 0, now, &why, &retry)) {
            router_limit_start(limit, NULL, 2, 5, now);
            granted++;
        }
    PROTO_CHECK(granted >= 300 && granted <= 306);
    //  Concurrency: two in flight, the third waits for an OUTCOME.
    router_limit_start(limit, "r1", 3, 0, 0);
    router_limit_start(limit, "r2", 3, 0, 0);
    PROTO_CHECK(!router_limit_allows(limit, 3, 0, 2, 0, &why, &retry));
    PROTO_CHECK(strcmp(why, "max_concurrent") == 0);
    router_limit_finish(limit, "r1");
    router_limit_finish(limit, "r1"); //  a second outcome of the same request
    PROTO_CHECK(router_limit_in_flight(limit, 3) == 1);
    PROTO_CHECK(router_limit_allows(limit, 3, 0, 2, 0, &why, &retry));
    //  Lost outcomes are swept.
    PROTO_CHECK(router_limit_sweep(limit, 100000, 1000) == 1 &&
                router_limit_in_flight(limit, 3) == 0);
    router_limit_destroy(&limit);
    //  Three routers share a limit of 4: each takes ceil(4/3) = 2.
    limit = router_limit_new(3);
    router_limit_start(limit, "a", 4, 0, 0);
    PROTO_CHECK(router_limit_allows(limit, 4, 0, 4, 0, &why, &retry));
    router_limit_start(limit, "b", 4, 0, 0);
    PROTO_CHECK(!router_limit_allows(limit, 4, 0, 4, 0, &why, &retry));
    router_limit_destroy(&limit);
    {
        //  A granted share replaces the equal part; demand is reported and reset.
        router_limit_t *shared = router_limit_new(4);
        router_limit_set_share(shared, 9, 1.0, 1.0);
        PROTO_CHECK(router_limit_allows(shared, 9, 10, 10, 1000, &why, &retry));
        router_limit_start(shared, "s1", 9, 10, 1000);
        PROTO_CHECK(!router_limit_allows(shared, 9, 10, 10, 1000, &why, &retry));
        PROTO_CHECK(strcmp(why, "max_concurrent") == 0);
        router_limit_finish(shared, "s1");
        PROTO_CHECK(!router_limit_allows(shared, 9, 10, 10, 1000, &why, &retry));
        PROTO_CHECK(strcmp(why, "max_rps") == 0 && retry > 900);
        json_t *demand = router_limit_take_demand(shared);
        PROTO_CHECK(json_integer_value(json_object_get(demand, "9")) == 3);
        json_decref(demand);
        demand = router_limit_take_demand(shared);
        PROTO_CHECK(json_object_size(demand) == 0);
        json_decref(demand);
        router_limit_destroy(&shared);
    }
    if (verbose)
        printf("OK\n");
}
