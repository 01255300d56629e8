/*  proto_batch: many messages in one ZeroMQ message, for what travels off
    the request path (OUTCOME, SETTLE, ENTRY, COMMIT, SPAN, DETAILS).

    Every ZeroMQ delivery wakes a thread on both sides and passes through
    libzmq's I/O threads; per-request facts sent one by one cost more CPU
    than the request itself. A batcher collects messages for one socket and
    sends them as one BATCH when it holds `max_items` messages or
    `max_bytes`, or `delay_ms` after the first one came, whichever is
    first. Only facts go through a batcher, never a reply a client waits
    for, so the delay never reaches a client.

    Wire form: an envelope of type BATCH (request id "", no fields) and one
    body frame holding the messages one after another, each as
        u32 envelope size, envelope bytes,
        u32 body size + 1 (0 = no body), body bytes
    (big endian). Messages keep their own request id and trace. A BATCH
    inside a BATCH is malformed.

    On a ROUTER socket the messages of one batch all go to one peer: the
    batcher keeps a batch per routing id.

    Receiving: proto_batch_recv reads one ZeroMQ message and hands each
    message in it (or the message itself, when it is not a BATCH) to a
    callback, with the batch's routing id, so a handler written for single
    messages takes batches unchanged.
*/
#ifndef PROTO_BATCH_H_INCLUDED
#define PROTO_BATCH_H_INCLUDED

#include "proto_loop.h"
#include "proto_msg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Most messages a receiver accepts in one BATCH.
#define PROTO_BATCH_ITEMS_MAX 4096
//  Most bytes a sender puts in one BATCH body (one message may exceed it,
//  then it travels alone).
#define PROTO_BATCH_BYTES_MAX (1024 * 1024)

typedef struct _proto_batch_t proto_batch_t;

//  Creates a batcher for `socket` (borrowed). delay_ms >= 1. Caller owns
//  return value.
proto_batch_t *proto_batch_new(proto_loop_t *loop, zsock_t *socket, size_t max_items,
                               size_t max_bytes, uint64_t delay_ms);

//  Sends what it holds, then destroys the batcher; nulls the pointer.
void proto_batch_destroy(proto_batch_t **self_p);

//  Adds a message (taking ownership; on a ROUTER socket its routing id
//  picks the peer). Returns 0, or -1 when a batch it completed could not
//  be sent (the socket's queue is full or it has no peer).
int proto_batch_add(proto_batch_t *self, proto_msg_t **msg_p);

//  Adds an encoded message: envelope bytes and an optional body (size 0
//  with NULL = none), copied. routing_id may be NULL (not a ROUTER).
int proto_batch_add_encoded(proto_batch_t *self, zframe_t *routing_id, const void *envelope,
                            size_t envelope_size, const void *body, size_t body_size,
                            bool has_body);

//  Sends every batch now. Returns 0, or -1 when one could not be sent.
int proto_batch_flush(proto_batch_t *self);

//  Messages held and not yet sent.
size_t proto_batch_pending(proto_batch_t *self);

//  Receives one message for proto_batch_recv's callback, which owns *msg_p
//  (it may leave it: what it leaves is destroyed after the call).
typedef void(proto_batch_fn)(proto_msg_t **msg_p, void *arg);

//  Reads one ZeroMQ message from socket without waiting and hands its
//  messages to fn in order. Returns 0 when something was handed on, -1
//  when nothing was waiting, -2 when the frames were malformed (messages
//  before a malformed one in a batch were handed on already).
int proto_batch_recv(zsock_t *socket, proto_batch_fn *fn, void *arg);

//  Opens a BATCH message that was received some other way; the same
//  contract as proto_batch_recv. Does not take ownership of batch.
int proto_batch_open(const proto_msg_t *batch, proto_batch_fn *fn, void *arg);

//  For tests and tools that read one message at a time: the next message,
//  from `queue` (what an earlier BATCH left: proto_msg_t* the caller owns,
//  e.g. zlistx_new() with no destructor) or else from the socket. Returns 0
//  with *msg_p set (caller owns it), -1 when nothing waits, -2 malformed.
int proto_batch_recv_one(zsock_t *socket, zlistx_t *queue, proto_msg_t **msg_p);

//  Self test: batches by count, size and time, per-peer batches on a
//  ROUTER, malformed bodies.
void proto_batch_test(bool verbose);

#endif
