/*  health_server: the tollgate-health program's state.

    Follows every dispatch instance's OUTCOME stream (SUB), folds outcomes
    into health_state, and publishes a HEALTH message per changed entry, plus
    all entries every few seconds for late subscribers, on health.events.bind.
    Active probing comes with the routing issue.
*/
#ifndef HEALTH_SERVER_H_INCLUDED
#define HEALTH_SERVER_H_INCLUDED

#include "proto_service.h"

//  The program definition handed to proto_service_main.
extern const proto_service_def_t health_server_def;

#endif
