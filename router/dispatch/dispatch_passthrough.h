/*  dispatch_passthrough: the adapter rows where client and upstream speak
    the same protocol.

    The client's bytes go up untouched but for `model` (Gemini names it in
    the path, so its body is not touched at all) and, on OpenAI Chat
    streams, stream_options.include_usage, which we force on because
    billing needs the usage. The edits are made on the client's own bytes
    (jansson only validates and reads: a re-encoded body would come out
    changed). The upstream's bytes come back untouched, read on the way for
    usage, content bytes, the end marker and errors reported inside the
    stream, so every feature of the protocol keeps working, new ones too.

    Reading: proto_jscan validates and reads the common events, answers and
    requests in place (parsing them whole with jansson was a third of
    dispatch's CPU on streams, issue 11); anything else (errors, tool
    arguments given as JSON, what the scanner refuses) takes the jansson
    path, which is also kept callable as the reference the scanning path
    must match byte for byte.

    The functions are the dispatch_adapter_t callbacks of the passthrough
    rows (dispatch_adapter.h says what each does); only dispatch_adapter's
    table calls them. Pure apart from the memory they return.
*/
#ifndef DISPATCH_PASSTHROUGH_H_INCLUDED
#define DISPATCH_PASSTHROUGH_H_INCLUDED

#include "dispatch_adapter.h"

//  dispatch_adapter_t.request: the client's body with the upstream's model.
int dispatch_passthrough_request(dispatch_convert_t *conv, const char *body, size_t size,
                                 const char *upstream_model, char **out, size_t *out_size);

//  dispatch_adapter_t.event: the upstream's event as it came.
int dispatch_passthrough_event(dispatch_convert_t *conv, const proto_sse_event_t *event,
                               zchunk_t *out);

//  dispatch_adapter_t.body: the upstream's answer as it came, its usage read.
int dispatch_passthrough_body(dispatch_convert_t *conv, const char *body, size_t size,
                              zchunk_t *out);

//  The three above through jansson alone, as they were before proto_jscan
//  read the common cases: the reference that dispatch_passthrough_test and
//  fuzz_passthrough hold them to (same results, same bytes, same errors).
int dispatch_passthrough_request_jansson(dispatch_convert_t *conv, const char *body, size_t size,
                                         const char *upstream_model, char **out, size_t *out_size);
int dispatch_passthrough_event_jansson(dispatch_convert_t *conv, const proto_sse_event_t *event,
                                       zchunk_t *out);
int dispatch_passthrough_body_jansson(dispatch_convert_t *conv, const char *body, size_t size,
                                      zchunk_t *out);

//  Self test: the scanning paths against the jansson ones on a corpus of
//  every protocol's events, answers and requests and mutations of them
//  (dispatch_passthrough_test.c).
void dispatch_passthrough_test(bool verbose);

//  dispatch_adapter_t.error_body: the upstream's own error body, or ours
//  when it is not a JSON object.
void dispatch_passthrough_error(dispatch_convert_t *conv, int status, const char *body, size_t size,
                                zchunk_t *out);

//  dispatch_adapter_t.finish: the closing bytes, or the protocol's error event.
void dispatch_passthrough_finish(dispatch_convert_t *conv, bool completed, int status,
                                 const char *code, const char *message, zchunk_t *out);

#endif
