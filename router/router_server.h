/*  router_server: the tollgate-router program's state.

    A ROUTER socket on router.bind answers ROUTE with ROUTE_REPLY from the
    in-memory catalog (router_select). A SUB socket follows the dispatch
    outcome stream; this first cut counts outcomes, and circuit breakers
    built on them come with the routing issue.
*/
#ifndef ROUTER_SERVER_H_INCLUDED
#define ROUTER_SERVER_H_INCLUDED

#include "proto_service.h"

//  The program definition handed to proto_service_main.
extern const proto_service_def_t router_server_def;

#endif
