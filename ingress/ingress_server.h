/*  ingress_server: Tollgate's HTTP front door.

    One libmicrohttpd daemon in the process' one loop (ingress_daemon):
    the client API on ingress.listen (the admin API is tollgate-admin's,
    ops/admin). A model call is authenticated from the in-memory
    catalog, then admitted by billing (ADMIT, or the key's lease); once
    admitted, DISPATCH goes to one dispatch instance, which routes it, and
    CHUNK and DONE messages come back as the client's response. See
    docs/ingress.md for the request's life and the choices made here.
*/
#ifndef INGRESS_SERVER_H_INCLUDED
#define INGRESS_SERVER_H_INCLUDED

#include "proto_catalog.h"
#include "proto_trace.h"
#include "proto_config.h"
#include "proto_loop.h"
#include "proto_metrics.h"
#include "proto_service.h"

#include <stdbool.h>

typedef struct _ingress_server_t ingress_server_t;

//  Called once when a drain has finished.
typedef void(ingress_server_drained_fn)(void *arg);

//  Starts the listener and connects to billing and dispatch.
//  With `database` the catalog comes from PostgreSQL (proto_watch);
//  without, the catalog is empty until ingress_server_set_catalog (tests).
//  Spans go to tracer (the service's sender; NULL: none).
//  Everything passed is borrowed and must outlive the server. Returns NULL
//  with a reason in error. Caller owns return value.
ingress_server_t *ingress_server_new(proto_loop_t *loop, proto_config_t *config,
                                     proto_metrics_t *metrics, proto_trace_t *tracer, bool database,
                                     char *error, size_t error_size);

//  Resumes what is suspended, stops the listeners, closes sockets; nulls
//  the pointer.
void ingress_server_destroy(ingress_server_t **self_p);

//  Replaces the catalog, taking ownership of *catalog_p.
void ingress_server_set_catalog(ingress_server_t *self, proto_catalog_t **catalog_p);

//  Stops accepting connections; `fn` is called once every request in
//  flight has ended and every SETTLE has been acknowledged.
void ingress_server_drain(ingress_server_t *self, ingress_server_drained_fn *fn, void *arg);

//  The port actually bound.
int ingress_server_port(ingress_server_t *self);

//  One JSON object describing what is in flight. Caller owns return value.
char *ingress_server_status(ingress_server_t *self);

//  proto_service glue for main.c.
void *ingress_server_service_start(proto_service_t *service);
void ingress_server_service_drain(void *state);
void ingress_server_service_stop(void **state_p);
char *ingress_server_service_status(void *state);

//  Self test: the client API's answers that need no peers and no database.
void ingress_server_test(bool verbose);

#endif
