/*  proto_watch: keeps a program's catalog fresh.

    Holds one PostgreSQL connection that LISTENs on `tollgate_config` (the
    schema's triggers notify it on every configuration change). A burst of
    notifications is folded into one reload 20 ms after the first; the new
    catalog is handed to the owner's callback, which owns it from then on.
    When the connection is lost the watch reconnects every second and
    reloads after reconnecting, since changes may have been missed.
    Loading runs on the loop's thread; it is a few milliseconds for
    thousands of rows, and never happens per request.

    With `catalog_file` set there is no database: the catalog is that JSON
    file (proto_catalog_from_json), read at start and again on each
    proto_watch_reload. Server selftests inject their catalog this way.
*/
#ifndef PROTO_WATCH_H_INCLUDED
#define PROTO_WATCH_H_INCLUDED

#include "proto_catalog.h"
#include "proto_config.h"
#include "proto_loop.h"

typedef struct _proto_watch_t proto_watch_t;

//  Receives a freshly loaded catalog; takes ownership of *catalog_p.
typedef void(proto_watch_fn)(proto_catalog_t **catalog_p, void *arg);

//  Connects (retrying as configured), listens, loads the first catalog and
//  hands it to fn before returning. With open_secrets the provider secrets
//  are decrypted with secret_key. Returns NULL with a reason in error.
//  Caller owns return value.
proto_watch_t *proto_watch_new(proto_loop_t *loop, proto_config_t *config, bool open_secrets,
                               proto_watch_fn *fn, void *arg, char *error, size_t error_size);

//  Stops watching and closes the connection; nulls the pointer.
void proto_watch_destroy(proto_watch_t **self_p);

//  Asks for a reload soon, as if a notification had arrived.
void proto_watch_reload(proto_watch_t *self);

//  Number of catalogs loaded so far.
uint64_t proto_watch_loads(proto_watch_t *self);

#endif
