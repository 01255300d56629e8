/*  router_server: the tollgate-router program.

    The router is the control plane of routing: it decides no request.
    Every dispatch instance decides locally with the same code
    (router_select) from the table the routers publish.

    Sockets:
      XPUB   router.table.bind    ROUTING_TABLE to every dispatch: the whole
                                  table on (re)subscription, then whenever it
                                  changes (within 20 ms) and at least every
                                  router.table_interval_ms. Body: JSON
                                  {router, version, wall_ms, resets (operator
                                  breaker resets so far: a dispatch seeing it
                                  grow drops its own copies too), breakers (the
                                  cluster's, router_breaker_list), stats
                                  (health, router_stats_list), shares
                                  {dispatch instance: {provider key id:
                                  [rps, concurrent]}}}
      ROUTER router.bind          EXPLAIN, BREAKERS, BREAKER_RESET, STICKY,
                                  STICKY_DELETE from the admin API (proto_msg.h)
      SUB    dispatch.events      OUTCOME of every attempt (batched) and DEMAND
                                  from every dispatch: feeds the breakers and
                                  the shares of provider-key limits
      SUB    health.events        HEALTH per (provider, key, model): feeds the
                                  latency and reliability modes
    and two PostgreSQL connections: proto_watch (catalog, LISTEN
    tollgate_config) and router_store (key disables, LISTEN/NOTIFY
    tollgate_routing for admin commands every router must apply).

    Every router instance hears the same OUTCOME and HEALTH streams and loads
    the same catalog, so all of them reach the same breaker states and the
    same resolved mappings. See docs/routing.md.
*/
#ifndef ROUTER_SERVER_H_INCLUDED
#define ROUTER_SERVER_H_INCLUDED

#include "proto_service.h"
#include "router_breaker.h"

//  The program definition handed to proto_service_main.
extern const proto_service_def_t router_server_def;

//  The breakers' settings from the router.* keys (dispatch keeps breakers
//  of its own with the same settings).
router_breaker_config_t router_server_breaker_config(proto_config_t *config);

//  Self test: the server in-process with an injected catalog, driven through
//  a DEALER, a PUB and a SUB (EXPLAIN, breakers opened by outcomes and
//  published, BREAKER_RESET, malformed input).
void router_server_test(bool verbose);

#endif
