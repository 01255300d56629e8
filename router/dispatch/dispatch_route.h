/*  dispatch_route: the route decision made here, and the soft state it reads.

    Dispatch decides each request itself with the router's selection code
    (router_select), so the request path has no round trip to a router.
    What the decision reads is kept here: the catalog's pairs, circuit
    breakers (our own outcomes at once, the cluster's from the routers'
    tables), health from the tables, sticky preferences, and our shares of
    provider-key limits. The routers hear back from us by DEMAND (how much
    each limited key was wanted here), sent every second on the outcomes'
    batch.
*/
#ifndef DISPATCH_ROUTE_H_INCLUDED
#define DISPATCH_ROUTE_H_INCLUDED

#include "proto_batch.h"
#include "proto_catalog.h"
#include "proto_config.h"
#include "proto_loop.h"
#include "router_select.h"

#include <stdint.h>

typedef struct _dispatch_route_t dispatch_route_t;

//  Creates the soft state from the configuration (borrowed, must outlive
//  this); `instance` (borrowed too) names our shares in the routers'
//  tables. Caller owns return value.
dispatch_route_t *dispatch_route_new(proto_config_t *config, const char *instance);

//  Stops listening and destroys the state; nulls the pointer. Before the
//  catalog it was given goes (the pairs borrow it).
void dispatch_route_destroy(dispatch_route_t **self_p);

//  Subscribes to every router.table endpoint and starts sending DEMAND on
//  `outcomes` (borrowed, must outlive this). Returns 0, or -1 when the
//  socket could not be made.
int dispatch_route_listen(dispatch_route_t *self, proto_loop_t *loop, proto_batch_t *outcomes);

//  Decides from this catalog from now on (borrowed: the caller destroys
//  the previous one only after this call).
void dispatch_route_set_catalog(dispatch_route_t *self, proto_catalog_t *catalog);

//  Orders the candidates for `request` into `decision`.
void dispatch_route_decide(dispatch_route_t *self, const router_request_t *request,
                           router_decision_t *decision);

//  Learns from the outcome of an attempt on `candidate` for client key
//  `key_id`, and ends the decision's hold on the key's concurrency share.
void dispatch_route_learn(dispatch_route_t *self, const char *request_id,
                          const proto_candidate_t *candidate, uint64_t key_id, int status,
                          const char *error_code, uint64_t retry_after_ms);

//  Ends the request's hold on its provider key's concurrency share.
void dispatch_route_finish(dispatch_route_t *self, const char *request_id);

//  The version of the last routing table merged, 0 = none yet.
uint64_t dispatch_route_table_version(dispatch_route_t *self);

//  The router it came from ("" = none yet).
const char *dispatch_route_table_router(dispatch_route_t *self);

//  Routing tables merged so far.
uint64_t dispatch_route_tables_merged(dispatch_route_t *self);

#endif
