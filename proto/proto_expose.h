/*  proto_expose: serves a process' metrics registry as Prometheus text.

    A libmicrohttpd daemon without a thread (MHD_USE_EPOLL: its epoll fd is
    watched by the process' loop) answering `GET /metrics` and nothing else
    (404). A scrape first calls the collect hooks, so programs can refresh
    gauges that are cheaper to compute on demand than to keep current
    (process RSS, breaker states, queue ages), then renders the registry.
    A timer runs MHD once a second for its connection timeouts.
*/
#ifndef PROTO_EXPOSE_H_INCLUDED
#define PROTO_EXPOSE_H_INCLUDED

#include "proto_loop.h"
#include "proto_metrics.h"

typedef struct _proto_expose_t proto_expose_t;

//  Called before each scrape to refresh gauges in the registry.
typedef void(proto_expose_collect_fn)(proto_metrics_t *metrics, void *arg);

//  Listens on `address` (host:port; port 0 picks one) and serves `metrics`
//  (borrowed; must outlive the server). Returns NULL with a reason in error.
//  Caller owns return value.
proto_expose_t *proto_expose_new(proto_loop_t *loop, proto_metrics_t *metrics, const char *address,
                                 char *error, size_t error_size);

//  Stops serving and closes the listener; nulls the pointer.
void proto_expose_destroy(proto_expose_t **self_p);

//  Adds a collect hook (up to 16). Returns 0, or -1 when full.
int proto_expose_on_collect(proto_expose_t *self, proto_expose_collect_fn *fn, void *arg);

//  The port actually bound.
int proto_expose_port(proto_expose_t *self);

//  Refreshes every collected gauge and renders the registry, as a scrape
//  would. Caller owns return value (free()).
char *proto_expose_render(proto_expose_t *self);

//  Self test: serves a registry and scrapes it over TCP.
void proto_expose_test(bool verbose);

#endif
