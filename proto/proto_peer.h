/*  proto_peer: the other end of a server, for in-process selftests.

    As Malamute tests its server: the server class runs in the test's own
    proto_loop, on inproc:// (or tcp://127.0.0.1:*) endpoints, and the test
    talks to it through a plain DEALER (or plays a peer the server connects
    to with a ROUTER). proto_peer_wait runs the loop until the message the
    test waits for has arrived, so tests synchronise on messages, never on
    sleep. BATCH messages are opened; every message received is kept until
    a wait takes it.
*/
#ifndef PROTO_PEER_H_INCLUDED
#define PROTO_PEER_H_INCLUDED

#include "proto_loop.h"
#include "proto_msg.h"
#include "proto_service.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct _proto_peer_t proto_peer_t;

//  A socket of `type` (ZMQ_DEALER, ZMQ_ROUTER, ZMQ_SUB) that binds (bind)
//  or connects to endpoint, watched by loop (borrowed). A SUB subscribes to
//  everything. Returns NULL when the socket cannot be made. Caller owns
//  return value.
proto_peer_t *proto_peer_new(proto_loop_t *loop, int type, const char *endpoint, bool bind);

//  Stops watching, closes the socket and drops what was not taken; nulls
//  the pointer.
void proto_peer_destroy(proto_peer_t **self_p);

//  Sends a message (taking it; on a ROUTER its routing id picks the peer).
//  Returns 0 or -1.
int proto_peer_send(proto_peer_t *self, proto_msg_t **msg_p);

//  Runs the loop until a message of `type` (with request id `rid` unless
//  NULL) has been received, or timeout_ms has passed. Returns it (caller
//  owns), or NULL at the timeout. Other messages stay for later waits.
proto_msg_t *proto_peer_wait(proto_peer_t *self, int type, const char *rid, uint64_t timeout_ms);

//  Runs the loop for `ms` and returns how many messages of `type` arrived
//  meanwhile (they stay for later waits): to show that nothing came.
size_t proto_peer_idle(proto_peer_t *self, int type, uint64_t ms);

//  Messages received and not taken yet.
size_t proto_peer_pending(proto_peer_t *self);

//  Messages received since the start (taken or not), and malformed ones.
size_t proto_peer_received(proto_peer_t *self);
size_t proto_peer_malformed(proto_peer_t *self);

//  The socket, for raw frames. Borrowed.
zsock_t *proto_peer_socket(proto_peer_t *self);

//  A service for a server class' selftest (proto_service_new_test): no
//  security (security=none), no database (an unreachable database_url,
//  tried once), the catalog from `catalog_json` (written to a temporary
//  catalog_file, removed by proto_peer_service_destroy), then `settings`,
//  a NULL-terminated list of key, value, key, value. Returns NULL with a
//  reason in error. Caller owns return value.
proto_service_t *proto_peer_service_new(const char *name, const char *catalog_json,
                                        const char *const *settings, char *error,
                                        size_t error_size);

//  Removes the catalog file and destroys the service; nulls the pointer.
void proto_peer_service_destroy(proto_service_t **service_p);

//  Self test: a DEALER and a ROUTER peer talk through one loop.
void proto_peer_test(bool verbose);

#endif
