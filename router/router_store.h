/*  router_store: the router's own PostgreSQL connection, kept off the
    request path.

    The router answers every ROUTE from memory and never waits on the
    database. Two things still need it, and both may lag by a moment:
      - a key the breakers disabled (401/403) is written to provider_keys
        (status 'disabled', disabled_reason) so the disable survives
        restarts and shows in the admin API; the UPDATE only touches an
        active key, so every router writing it is harmless;
      - admin commands that must reach every router instance (drop a sticky
        binding, reset a breaker) fan out as NOTIFY tollgate_routing with a
        JSON payload; every router LISTENs and applies them (its own too).
    The connection is non-blocking from start to end (PQconnectStart and
    PQsendQuery driven by the loop); commands queue while it is down and go
    when it is back (a command cut off by a lost connection is sent again:
    both kinds are idempotent). A queue over its limit drops its oldest.
*/
#ifndef ROUTER_STORE_H_INCLUDED
#define ROUTER_STORE_H_INCLUDED

#include "proto_loop.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct _router_store_t router_store_t;

//  Receives one tollgate_routing notification payload (borrowed).
typedef void(router_store_notify_fn)(const char *payload, void *arg);

//  Told that a key's disable is committed (or the key was no longer active).
typedef void(router_store_disabled_fn)(uint64_t provider_key_id, void *arg);

//  Starts connecting to database_url in the background. `disabled` may be
//  NULL. Caller owns return value.
router_store_t *router_store_new(proto_loop_t *loop, const char *database_url,
                                 router_store_notify_fn *fn, router_store_disabled_fn *disabled,
                                 void *arg);

//  Closes the connection (queued commands are lost); nulls the pointer.
void router_store_destroy(router_store_t **self_p);

//  Queues the durable disable of a provider key with a reason; seen_wall_ms
//  (epoch ms) is when the failure was seen: a key changed since is left alone.
void router_store_disable_key(router_store_t *self, uint64_t provider_key_id, const char *reason,
                              uint64_t seen_wall_ms);

//  Queues NOTIFY tollgate_routing with a payload (at most 7999 bytes).
void router_store_broadcast(router_store_t *self, const char *payload);

//  True while connected and listening.
bool router_store_ready(router_store_t *self);

//  Commands waiting to be sent.
size_t router_store_pending(router_store_t *self);

#endif
