/*  proto_convert: requests, answers and streams converted between the four
    client/upstream API protocols (proto_protocol_t): OpenAI Chat
    Completions, OpenAI Responses, Anthropic Messages and Gemini
    generateContent.

    Every pair goes through one protocol-neutral form (proto_convert_ir.h):
    each protocol has a reader and a writer for requests, whole answers and
    stream events, so N protocols need N codecs, not N*N converters, and a
    feature is mapped once per protocol.

    Rules (docs/conversion.md has the full table):
      - what the target protocol cannot express is dropped and named when
        it only tunes or annotates (sampling knobs, client metadata, cache
        and context-management hints, service tiers, user ids, unknown
        fields), and refused with a message for the client (HTTP 400) when
        its loss would change the answer (a required schema, a forced
        tool, audio, stateful references); a strict provider or model
        refuses both;
      - no empty text blocks or parts reach the client;
      - a stream is converted one upstream event at a time: whatever the
        client can be told after an event is appended to the output before
        the call returns (a Gemini client's function call is the one
        exception: Gemini carries arguments whole, so they are sent when
        the upstream's tool block ends);
      - usage, cached tokens included, is read from the upstream in
        proto_usage's meaning and written in the client's own fields.

    Everything here is pure: JSON (jansson) and bytes in, JSON and bytes
    out, no I/O, so it is unit-tested and fuzzed (tests/fuzz/).
*/
#ifndef PROTO_CONVERT_H_INCLUDED
#define PROTO_CONVERT_H_INCLUDED

#include "proto_usage.h"

#include <czmq.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

//  True when the pair is converted here (both protocols are one of the four
//  generative ones). Same-protocol pairs are supported too (they normalise
//  through the neutral form), though dispatch passes those through.
bool proto_convert_supported(int client_protocol, int upstream_protocol);

//  Converts a client request body to the upstream protocol for
//  upstream_model. `stream` is what the client asked: the body's "stream"
//  for OpenAI, Responses and Anthropic, the streamGenerateContent method for
//  Gemini. A streamed OpenAI upstream is always asked for usage. Returns the
//  upstream body (caller owns), or NULL with a message for the client
//  (answer it with HTTP 400) in error.
json_t *proto_convert_request(int client_protocol, int upstream_protocol, const json_t *request,
                              const char *upstream_model, bool stream, char *error,
                              size_t error_size);

//  The same with the drop policy (docs/conversion.md): a field that only
//  tunes or annotates and that the upstream cannot take (or that the
//  converter does not know) is left out and its name, in the client's
//  words ("top_k", "generationConfig.topK", "context_management"), is
//  appended to `dropped` (a JSON array, may be NULL); a field whose loss
//  would change the answer is refused. With strict, anything that would be
//  dropped is refused too (the error names it).
json_t *proto_convert_request_policy(int client_protocol, int upstream_protocol,
                                     const json_t *request, const char *upstream_model, bool stream,
                                     bool strict, json_t *dropped, char *error, size_t error_size);

//  True when the client wants usage in its stream: always, except an OpenAI
//  Chat client that did not set stream_options.include_usage.
bool proto_convert_client_wants_usage(int client_protocol, const json_t *request);

//  Writes the upstream URL path (with query, no host) for a protocol, model
//  and stream flag into path, e.g. "/v1/messages" or
//  "/v1beta/models/M:streamGenerateContent?alt=sse". Returns 0, or -1 when
//  the protocol is unknown or path is too small.
int proto_convert_upstream_path(int upstream_protocol, const char *model, bool stream, char *path,
                                size_t path_size);

//  Converts a whole (non-streamed) upstream answer to the client's
//  protocol, naming client_model. Fills usage_out (when not NULL) with the
//  upstream's usage. Returns the client body (caller owns), or NULL with a
//  reason in error when the answer is not a valid answer of its protocol
//  (answer the client 502).
json_t *proto_convert_response(int upstream_protocol, int client_protocol, const json_t *response,
                               const char *client_model, proto_usage_t *usage_out, char *error,
                               size_t error_size);

//  Converts an upstream error body of any status to the client's protocol:
//  the upstream's message is kept, the shape and type words are the
//  client's (proto_error_body). Caller owns return value (free()).
char *proto_convert_error_body(int upstream_protocol, int client_protocol, int status,
                               const char *body, size_t size);

//  -------------------------------------------------------------------------
//  Streams: one converter per upstream attempt.

typedef struct _proto_convert_stream_t proto_convert_stream_t;

//  Creates a stream converter from an upstream protocol to a client
//  protocol. client_wants_usage: see proto_convert_client_wants_usage.
//  Returns NULL when the pair is not supported. Caller owns return value.
proto_convert_stream_t *proto_convert_stream_new(int upstream_protocol, int client_protocol,
                                                 const char *client_model, bool client_wants_usage);

//  Destroys a stream converter; nulls the pointer.
void proto_convert_stream_destroy(proto_convert_stream_t **self_p);

//  A Gemini client that called streamGenerateContent without alt=sse reads
//  one JSON array instead of SSE events; call before the first event.
void proto_convert_stream_set_json_array(proto_convert_stream_t *self, bool json_array);

//  Takes one upstream SSE event (name "" when none, data as received) and
//  appends the client's bytes for it to out at once. Returns 0, or -1 when
//  the event broke its protocol or carried an upstream error: then
//  proto_convert_stream_error says why and the caller ends the client
//  stream with proto_convert_stream_finish(self, false, out).
int proto_convert_stream_event(proto_convert_stream_t *self, const char *event_name,
                               const char *data, size_t size, zchunk_t *out);

//  Ends the client stream. When the upstream sent its end marker (OpenAI
//  [DONE], Anthropic message_stop, Responses response.completed, a Gemini
//  finishReason) and upstream_completed is true, appends the client's
//  closing events if they are not out yet and returns 0. Otherwise the
//  upstream was cut: appends the client protocol's error event
//  (proto_error_event, 502) and returns -1.
int proto_convert_stream_finish(proto_convert_stream_t *self, bool upstream_completed,
                                zchunk_t *out);

//  Usage the upstream reported so far, cached tokens included.
void proto_convert_stream_usage(proto_convert_stream_t *self, proto_usage_t *usage);

//  True once the upstream's end marker was seen.
bool proto_convert_stream_complete(proto_convert_stream_t *self);

//  Bytes of content text (text, reasoning, tool arguments) sent to the
//  client so far, for output estimates when the upstream gave no usage.
size_t proto_convert_stream_content_bytes(proto_convert_stream_t *self);

//  Why the last call failed ("" when none). Borrowed string.
const char *proto_convert_stream_error(proto_convert_stream_t *self);

//  Self test: fixtures under tests/fixtures/convert plus the bug classes of
//  issue 6 asserted one by one.
void proto_convert_test(bool verbose);

#endif
