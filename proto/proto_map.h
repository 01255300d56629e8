/*  proto_map: which (provider, upstream model) pairs may serve each logical
    model, resolved from the catalog once per catalog load.

    Sources, strongest first:
        routes            explicit rows of the routes table (manual mapping)
        include rules     (provider, pattern) taken as given, listed or not
        matching rules    exact, prefix, keyword (case-insensitive), regex
                          (PCRE2), each tried against every provider's
                          fetched model list (or one provider's when the
                          rule names one)
        zero-config       a model with no route and no positive rule is
                          served by every provider whose list holds its name
                          (when router.zero_config is on)
    Exclusions (exclude_keyword, exclude_provider) remove pairs that came from
    model lists (matching rules and zero-config); routes and includes are the
    operator's explicit word and stay. A pair named by several sources is
    kept once, from the strongest.

    The same catalog gives the same map in every router instance and in
    tollgate-health, which stores it in model_mappings for people to read.
*/
#ifndef PROTO_MAP_H_INCLUDED
#define PROTO_MAP_H_INCLUDED

#include "proto_catalog.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    ROUTER_SOURCE_ROUTE = 0,   //  routes table
    ROUTER_SOURCE_INCLUDE = 1, //  include rule
    ROUTER_SOURCE_RULE = 2,    //  exact/prefix/keyword/regex rule against a model list
    ROUTER_SOURCE_ZERO = 3,    //  zero-config: the provider lists the name
} proto_map_source_t;

//  One pair a logical model may go to.
typedef struct {
    uint64_t provider_id;      //  providers.id
    char upstream_model[128];  //  name at the provider
    int priority;              //  route or rule priority, higher first
    int weight;                //  route or rule weight
    proto_map_source_t source; //  where it came from
    uint64_t rule_id;          //  mapping_rules.id for include/rule, else 0
    uint64_t route_id;         //  routes.id for a route, else 0
    bool active;               //  false for a disabled route (kept for explain)
} proto_map_pair_t;

//  A pair a rule removed, for explain.
typedef struct {
    uint64_t provider_id;     //  providers.id
    char upstream_model[128]; //  name at the provider
    uint64_t rule_id;         //  the excluding (or broken) rule
    char reason[96];          //  "exclude_keyword 'mini'", "invalid regex: ..."
} proto_map_excluded_t;

typedef struct _proto_map_t proto_map_t;

//  Resolves every logical model of the catalog. Caller owns return value.
proto_map_t *proto_map_build(proto_catalog_t *catalog, bool zero_config);

//  Destroys a map; nulls the pointer.
void proto_map_destroy(proto_map_t **self_p);

//  The pairs of a logical model (borrowed, valid until destroy), count in
//  *count; NULL with 0 when it has none.
const proto_map_pair_t *proto_map_pairs(proto_map_t *self, uint64_t model_id, size_t *count);

//  Pairs rules removed for a model (borrowed), count in *count.
const proto_map_excluded_t *proto_map_excluded(proto_map_t *self, uint64_t model_id, size_t *count);

//  True when the provider's fetched model list holds `model`.
bool proto_map_lists(proto_map_t *self, uint64_t provider_id, const char *model);

//  True when the provider has a fetched model list at all.
bool proto_map_has_list(proto_map_t *self, uint64_t provider_id);

//  Zero-config pairs for a name that is no logical model: every provider
//  listing it. Fills up to max, returns how many.
size_t proto_map_listing(proto_map_t *self, const char *model, proto_map_pair_t *out, size_t max);

//  True when zero-config routing was on for this map.
bool proto_map_zero_config(proto_map_t *self);

//  The whole map as JSON: [{model_id, provider_id, upstream_model, source,
//  rule_id, priority, weight}], for model_mappings. Caller owns return value.
json_t *proto_map_json(proto_map_t *self);

//  Name of a source ("route"). Static string.
const char *proto_map_source_name(proto_map_source_t source);

//  Self test.
void proto_map_test(bool verbose);

#endif
