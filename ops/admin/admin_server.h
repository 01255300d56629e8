/*  admin_server: tollgate-admin's HTTP listener, its worker pool and the
    console's static files.

    The listener (admin.listen) runs libmicrohttpd on a thread of its own
    that only reads requests and writes answers: it never hashes a
    password, waits on PostgreSQL or asks a router. A complete /admin/
    request is suspended and queued; one of admin.workers worker threads,
    each with its own admin_api_t (its own PostgreSQL connection and router
    sockets), answers it and resumes the connection. So a slow report or an
    argon2id login holds one worker, and the listener keeps serving
    /healthz, the console's files and the other workers' answers. The
    process' own loop (proto_service) keeps the control socket, signals and
    log levels.

    The console (GET / and its files) is static: loaded at start from
    admin.console_dir (default: `console` beside the executable, as the
    build lays it out) and served from memory with a strict
    Content-Security-Policy. Nothing is fetched from anywhere else.

    Any number of tollgate-admin instances can run: they share nothing but
    PostgreSQL (sessions, lockouts and the audit log live there).
*/
#ifndef ADMIN_SERVER_H_INCLUDED
#define ADMIN_SERVER_H_INCLUDED

#include "proto_service.h"

#include <stdbool.h>

typedef struct _admin_server_t admin_server_t;

//  Starts the listener and the workers. Returns NULL (logged) when the
//  address cannot be bound or the database cannot be reached. Caller owns
//  return value.
admin_server_t *admin_server_new(proto_service_t *service);

//  SIGTERM: stops accepting; tells the service it is drained once every
//  request taken has been answered.
void admin_server_drain(admin_server_t *self);

//  Stops the workers and the listener; nulls the pointer.
void admin_server_destroy(admin_server_t **self_p);

//  PONG's meta: {"port", "workers", "in_flight", "served", "console_files"}.
//  Caller owns return value.
char *admin_server_status(admin_server_t *self);

//  The port the listener bound.
int admin_server_port(admin_server_t *self);

//  Self test: static file table and request ids (no database).
void admin_server_test(bool verbose);

#endif
