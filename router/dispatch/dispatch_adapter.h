/*  dispatch_adapter: how a request in one API protocol is carried to an
    upstream speaking another, and its answer carried back.

    One adapter per (client protocol, upstream protocol) pair, found in a
    table. An adapter rewrites the client's body for the upstream, turns
    each upstream stream event into bytes for the client, converts a whole
    answer and an upstream error body, ends the client's stream (properly,
    or with an error event when it was cut), and on the way reads usage and
    counts content bytes (for estimates) into its dispatch_convert_t.

    Two kinds of rows:
      - passthrough, when both sides speak the same protocol (OpenAI Chat,
        Responses, Anthropic, Gemini, and Embeddings to an OpenAI upstream):
        the client's bytes go up untouched but for the model name (and
        stream_options.include_usage on OpenAI Chat streams), the
        upstream's bytes come back untouched, so every feature of the
        protocol keeps working, new ones too. A Responses client on an
        OpenAI provider is passthrough to its /v1/responses: OpenAI
        providers serve both endpoints (dispatch_passthrough).
      - conversion, for every other pair of the four generative protocols,
        through proto_convert (pure functions, fixture-tested there): one
        upstream SSE event in, the client's bytes for it out at once
        (dispatch_conversion).
    A pair without a row (Embeddings to Anthropic or Gemini) is answered
    400 by dispatch.

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
#include <stdio.h>

typedef struct _dispatch_adapter_t dispatch_adapter_t;

//  The state of one upstream attempt's conversion. Plain struct: the caller
//  reads usage, content_bytes, complete and error.
typedef struct {
    const dispatch_adapter_t *adapter; //  the converter in use
    //  Set by the caller after dispatch_convert_init, before request:
    const char *client_model; //  model name the client asked for (borrowed)
    bool client_stream;       //  the client's path asked for a stream (Gemini)
    bool json_array;          //  a Gemini client streaming without alt=sse
    bool count_tokens;        //  a token count, not a generation
    bool strict;              //  refuse what conversion would drop (provider or model strict)
    //  Set by request and the calls after it:
    bool stream;              //  the upstream was asked to stream
    bool client_usage;        //  the client itself asked for stream usage
    const char *content_type; //  of the client's stream (static string)
    proto_usage_t usage;      //  usage the upstream reported so far
    size_t content_bytes;     //  content text bytes passed to the client
    bool complete;            //  the stream's own end marker was seen
    size_t items;             //  JSON-array passthrough: elements written so far
    char *dropped;            //  request fields conversion left out, comma-separated, or NULL:
                              //  allocated only when there are some (a request in flight
                              //  holds it; dispatch_convert_clear frees it)
    char error[256];          //  why the last call returned -1
    void *extra;              //  the converter's own state, or NULL
} dispatch_convert_t;

//  For the converters (dispatch_passthrough, dispatch_conversion): records
//  why the call fails (format with one %s, detail or "") and returns -1.
static inline int dispatch_convert_fail(dispatch_convert_t *conv, const char *format,
                                        const char *detail)
{
    snprintf(conv->error, sizeof conv->error, format, detail ? detail : "");
    return -1;
}

//  Appends bytes to a converter's output (nothing for none).
static inline void dispatch_convert_append(zchunk_t *out, const void *data, size_t size)
{
    if (size)
        zchunk_extend(out, data, size);
}

struct _dispatch_adapter_t {
    int client_protocol;   //  proto_protocol_t of the client's request
    int upstream_protocol; //  proto_protocol_t of the candidate (its provider)
    int endpoint_protocol; //  proto_protocol_t whose endpoint and headers are called
    bool convert;          //  through proto_convert; false: passthrough
    const char *name;      //  for logs: "openai>anthropic"

    //  Builds the upstream body from the client's body (which it validates)
    //  for upstream_model; sets conv->stream, conv->client_usage and
    //  conv->dropped (the fields a conversion left out, docs/conversion.md).
    //  Returns 0 with *out (caller frees) or -1 with conv->error: a client
    //  error.
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

    //  Ends the client's stream. completed (the upstream's end marker was
    //  seen and the transfer ended well): appends the closing bytes not out
    //  yet. Otherwise the stream was cut: appends the client protocol's
    //  error event (status, code and message are ours; a converter may put
    //  its own reason instead).
    void (*finish)(dispatch_convert_t *conv, bool completed, int status, const char *code,
                   const char *message, zchunk_t *out);

    //  Releases conv->extra (NULL when the adapter keeps none).
    void (*free_extra)(void *extra);
};

//  The adapter for a pair, or NULL when the pair is not supported yet.
//  Returns a static entry.
const dispatch_adapter_t *dispatch_adapter_find(int client_protocol, int upstream_protocol);

//  The body of a token count answered here, for an upstream that has no
//  count endpoint of the client's protocol: proto_usage's documented
//  estimate (a quarter token per byte of the request body, rounded up) in
//  the client's shape: Anthropic {"input_tokens":N}, Gemini
//  {"totalTokens":N}. Caller owns return value (free()).
char *dispatch_adapter_count_answer(int client_protocol, size_t request_bytes);

//  Prepares conv for one attempt with an adapter.
void dispatch_convert_init(dispatch_convert_t *conv, const dispatch_adapter_t *adapter);

//  Releases what conv holds (its extra state); conv may be reused after
//  dispatch_convert_init.
void dispatch_convert_clear(dispatch_convert_t *conv);

//  Whether two conversions hold the same state (usage, counts, flags,
//  error): what the scanning and the jansson passthrough must agree on
//  (dispatch_passthrough_test, fuzz_passthrough).
bool dispatch_convert_same(const dispatch_convert_t *a, const dispatch_convert_t *b);

//  Self test.
void dispatch_adapter_test(bool verbose);

#endif
