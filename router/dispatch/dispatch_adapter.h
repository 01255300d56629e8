/*  dispatch_adapter: how a request in one API protocol is carried to an
    upstream speaking another, and its answer carried back.

    One adapter per (client protocol, upstream protocol) pair, found in a
    table. An adapter rewrites the client's body for the upstream, turns
    each upstream stream event into bytes for the client, converts a whole
    answer and an upstream error body, and on the way reads usage and counts
    content bytes (for estimates) into its dispatch_convert_t.

    Today the table has the same-protocol passthrough for OpenAI Chat
    Completions; converters between protocols plug in as further rows
    without touching the caller. A pair without a row is answered 400 by
    dispatch.

    Every function here is pure apart from the memory it returns: no I/O,
    so all of it is tested in the selftest.
*/
#ifndef DISPATCH_ADAPTER_H_INCLUDED
#define DISPATCH_ADAPTER_H_INCLUDED

#include "proto_sse.h"
#include "proto_usage.h"

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct _dispatch_adapter_t dispatch_adapter_t;

//  The state of one upstream attempt's conversion. Plain struct: the caller
//  reads usage, content_bytes, complete and error.
typedef struct {
    const dispatch_adapter_t *adapter; //  the converter in use
    bool stream;                       //  the upstream was asked to stream
    bool client_usage;                 //  the client itself asked for stream usage
    proto_usage_t usage;               //  usage the upstream reported so far
    size_t content_bytes;              //  content text bytes passed to the client
    bool complete;                     //  the stream's own end marker was seen
    char error[256];                   //  why the last call returned -1
    void *extra;                       //  the converter's own state, or NULL
} dispatch_convert_t;

struct _dispatch_adapter_t {
    int client_protocol;   //  proto_protocol_t of the client's request
    int upstream_protocol; //  proto_protocol_t the upstream speaks
    const char *name;      //  for logs: "openai>openai"

    //  Builds the upstream body from the client's body (which it validates)
    //  for upstream_model; sets conv->stream and conv->client_usage. Returns
    //  0 with *out (caller frees) or -1 with conv->error: a client error.
    int (*request)(dispatch_convert_t *conv, const char *body, size_t size,
                   const char *upstream_model, char **out, size_t *out_size);

    //  Takes one upstream SSE block; appends what the client gets to out.
    //  Returns 0, or -1 with conv->error when the upstream broke protocol or
    //  reported an error inside the stream.
    int (*event)(dispatch_convert_t *conv, const proto_sse_event_t *event, zchunk_t *out);

    //  Takes a whole successful answer; appends the client's body to out.
    //  Returns 0, or -1 with conv->error when the answer is unreadable.
    int (*body)(dispatch_convert_t *conv, const char *body, size_t size, zchunk_t *out);

    //  Converts an upstream error body (any status) to the client's
    //  protocol; appends it to out.
    void (*error_body)(dispatch_convert_t *conv, int status, const char *body, size_t size,
                       zchunk_t *out);

    //  Releases conv->extra (NULL when the adapter keeps none).
    void (*free_extra)(void *extra);
};

//  The adapter for a pair, or NULL when the pair is not supported yet.
//  Returns a static entry.
const dispatch_adapter_t *dispatch_adapter_find(int client_protocol, int upstream_protocol);

//  Prepares conv for one attempt with an adapter.
void dispatch_convert_init(dispatch_convert_t *conv, const dispatch_adapter_t *adapter);

//  Releases what conv holds (its extra state); conv may be reused after
//  dispatch_convert_init.
void dispatch_convert_clear(dispatch_convert_t *conv);

//  Self test.
void dispatch_adapter_test(bool verbose);

#endif
