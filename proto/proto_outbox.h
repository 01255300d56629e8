/*  proto_outbox: messages kept until their receiver confirms them.

    DESIGN: "The usage record of a finished request is kept by its sender
    until the ledger acknowledges a PostgreSQL commit." The outbox is that
    keeping. A message is encoded once and stored by request id; it is sent
    at once and re-sent every `resend_ms` until proto_outbox_ack(request id)
    is called (on COMMIT). The receiver side is idempotent by request id, so a
    re-send that crosses an ack is harmless. Over a DEALER connected to
    several instances a re-send may reach another instance: that is wanted,
    the first one may be gone.
*/
#ifndef PROTO_OUTBOX_H_INCLUDED
#define PROTO_OUTBOX_H_INCLUDED

#include "proto_loop.h"
#include "proto_msg.h"

typedef struct _proto_outbox_t proto_outbox_t;

//  Creates an outbox sending on `socket` (borrowed, usually a DEALER).
//  Caller owns return value.
proto_outbox_t *proto_outbox_new(proto_loop_t *loop, zsock_t *socket, uint64_t resend_ms);

//  Destroys the outbox and what it still holds; nulls the pointer.
void proto_outbox_destroy(proto_outbox_t **self_p);

//  Keeps and sends a message (taking ownership). A second message with the
//  same request id replaces the first. Returns 0, or -1 when the outbox is
//  full (message destroyed; the caller decides what that means).
int proto_outbox_send(proto_outbox_t *self, proto_msg_t **msg_p);

//  Forgets the message with this request id. Returns true if it was held.
bool proto_outbox_ack(proto_outbox_t *self, const char *request_id);

//  Messages not yet acknowledged.
size_t proto_outbox_pending(proto_outbox_t *self);

//  Upper bound on held messages.
#define PROTO_OUTBOX_MAX 1000000

//  Self test.
void proto_outbox_test(bool verbose);

#endif
