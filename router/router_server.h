/*  router_server: the tollgate-router program.

    Sockets:
      ROUTER router.bind          ROUTE -> ROUTE_REPLY; EXPLAIN, BREAKERS,
                                  BREAKER_RESET, STICKY, STICKY_DELETE from the
                                  admin API (proto_msg.h)
      SUB    dispatch.events      OUTCOME of every attempt, from every dispatch:
                                  feeds the breakers, limits and bindings
      SUB    health.events        HEALTH per (provider, key, model): feeds the
                                  latency and reliability modes
    and two PostgreSQL connections: proto_watch (catalog, LISTEN
    tollgate_config) and router_store (key disables, LISTEN/NOTIFY
    tollgate_routing for admin commands every router must apply).

    Every router instance hears the same OUTCOME and HEALTH streams and loads
    the same catalog, so all of them reach the same breaker states, the same
    resolved mappings and (after each success) the same session bindings.
    See docs/routing.md.
*/
#ifndef ROUTER_SERVER_H_INCLUDED
#define ROUTER_SERVER_H_INCLUDED

#include "proto_service.h"

//  The program definition handed to proto_service_main.
extern const proto_service_def_t router_server_def;

#endif
