/*  dispatch_conversion: the adapter rows between two different generative
    protocols, through proto_convert.

    proto_convert holds the conversions themselves (pure functions,
    fixture-tested there); these wrap them as dispatch_adapter_t callbacks:
    the request converted (naming what it left out in conv->dropped, or
    refused when strict), one upstream SSE event in and the client's bytes
    for it out at once, a whole answer and an error body converted, and the
    client's stream closed or ended with an error event. conv->extra holds
    the stream converter of a streamed attempt.

    Only dispatch_adapter's table calls them (dispatch_adapter.h says what
    each does). Pure apart from the memory they return.
*/
#ifndef DISPATCH_CONVERSION_H_INCLUDED
#define DISPATCH_CONVERSION_H_INCLUDED

#include "dispatch_adapter.h"

//  dispatch_adapter_t.request: the client's body in the upstream's protocol.
int dispatch_conversion_request(dispatch_convert_t *conv, const char *body, size_t size,
                                const char *upstream_model, char **out, size_t *out_size);

//  dispatch_adapter_t.event: one upstream event, converted.
int dispatch_conversion_event(dispatch_convert_t *conv, const proto_sse_event_t *event,
                              zchunk_t *out);

//  dispatch_adapter_t.body: a whole answer, converted.
int dispatch_conversion_body(dispatch_convert_t *conv, const char *body, size_t size,
                             zchunk_t *out);

//  dispatch_adapter_t.error_body: an upstream error body, converted.
void dispatch_conversion_error(dispatch_convert_t *conv, int status, const char *body, size_t size,
                               zchunk_t *out);

//  dispatch_adapter_t.finish: closes the converted stream, or ends it with
//  the converter's error event.
void dispatch_conversion_finish(dispatch_convert_t *conv, bool completed, int status,
                                const char *code, const char *message, zchunk_t *out);

//  dispatch_adapter_t.free_extra: the stream converter.
void dispatch_conversion_free(void *extra);

#endif
