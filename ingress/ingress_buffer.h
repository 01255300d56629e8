/*  ingress_buffer: the bytes of one streamed response on their way from
    dispatch to a client.

    CHUNK bodies arrive as ZeroMQ frames; the buffer keeps the frames
    themselves (no copy) and hands bytes out as libmicrohttpd's content
    reader asks for them. It holds at most `limit` bytes: a client that
    reads slower than the upstream writes must not make us hold an
    unbounded answer in memory, so an append beyond the limit is refused and
    the caller ends the stream (see ingress_server.c).
*/
#ifndef INGRESS_BUFFER_H_INCLUDED
#define INGRESS_BUFFER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct _ingress_buffer_t ingress_buffer_t;

//  Creates an empty buffer holding at most `limit` bytes. Caller owns
//  return value.
ingress_buffer_t *ingress_buffer_new(size_t limit);

//  Destroys the buffer and the frames it holds; nulls the pointer.
void ingress_buffer_destroy(ingress_buffer_t **self_p);

//  Appends a frame, taking ownership (the caller's pointer is nulled either
//  way). Returns 0, or -1 when it would take the buffer over its limit (the
//  frame is destroyed).
int ingress_buffer_append(ingress_buffer_t *self, zframe_t **frame_p);

//  Appends a copy of bytes whatever the limit: for the few bytes of a
//  closing error event. Returns 0.
int ingress_buffer_append_bytes(ingress_buffer_t *self, const void *data, size_t size);

//  Moves up to max bytes into out; returns how many.
size_t ingress_buffer_read(ingress_buffer_t *self, void *out, size_t max);

//  Bytes waiting to be read.
size_t ingress_buffer_size(ingress_buffer_t *self);

//  Self test.
void ingress_buffer_test(bool verbose);

#endif
