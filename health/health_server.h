/*  health_server: the tollgate-health program.

    Passive: follows every dispatch instance's OUTCOME stream (SUB), folds
    outcomes into health_state per (provider, key, upstream model), and
    publishes a HEALTH message per changed entry, plus all entries every few
    seconds for late subscribers, on health.events.bind.

    Active: every health.probe_interval_ms (and at once for a key it has not
    seen, or on NOTIFY tollgate_health 'fetch' / 'fetch:PROVIDER_ID') it asks
    each provider key for its model list (health_probe). The result is the
    key's health under the empty model name (HEALTH with upstream_model "")
    and, when the list changed, the provider's rows in provider_models, which
    wakes every program's catalog so the routers re-resolve their mappings.
    Instance 0 also keeps model_mappings equal to what the routers resolve,
    and every instance writes provider_health every 10 s for the admin API.

    Several instances split the probing by key id: instance i of n probes
    the keys with id % n == i (health.instance_index, health.instance_count),
    so none is probed twice while the instances agree on n. Passive folding
    is not split: every instance hears every outcome.
*/
#ifndef HEALTH_SERVER_H_INCLUDED
#define HEALTH_SERVER_H_INCLUDED

#include "proto_service.h"

//  The program definition handed to proto_service_main.
extern const proto_service_def_t health_server_def;

//  Self test: the server in-process with an injected catalog: probes of a
//  stand-in provider (a good key up, a refused one down), outcomes from a
//  PUB folded into HEALTH (up, then down after 5xx; client errors and
//  cancels ignored), malformed input.
void health_server_test(bool verbose);

#endif
