#include "dispatch_conversion.h"
#include "proto_convert.h"
#include "proto_error.h"
#include "proto_msg.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  --------------------------------------------------------------------------
//  Conversion between two of the four generative protocols, through
//  proto_convert. conv->extra holds the stream converter of a streamed
//  attempt.

//  Names joined with "," as the x-tollgate-dropped-fields header carries
//  them; a list too long for the buffer ends with "..." . NULL for none.
static char *s_join_names(const json_t *names)
{
    if (!json_array_size(names))
        return NULL;
    char text[512];
    size_t size = sizeof text;
    size_t used = 0;
    size_t index;
    json_t *item;
    *text = 0;
    json_array_foreach(names, index, item)
    {
        const char *name = json_string_value(item);
        size_t need = strlen(name) + (index ? 1 : 0);
        if (used + need + 4 >= size) {
            snprintf(text + used, size - used, "%s...", index ? "," : "");
            break;
        }
        used += (size_t)snprintf(text + used, size - used, "%s%s", index ? "," : "", name);
    }
    char *copy = strdup(text);
    assert(copy);
    return copy;
}

int dispatch_conversion_request(dispatch_convert_t *conv, const char *body, size_t size,
                                const char *upstream_model, char **out, size_t *out_size)
{
    int client = conv->adapter->client_protocol;
    int upstream = conv->adapter->upstream_protocol;
    json_error_t error;
    json_t *root = json_loadb(body, size, 0, &error);
    if (!root)
        return dispatch_convert_fail(conv, "request body is not valid JSON: %s", error.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return dispatch_convert_fail(conv, "request body must be a JSON object%s", NULL);
    }
    bool stream = client == PROTO_PROTOCOL_GEMINI ? conv->client_stream
                                                  : json_is_true(json_object_get(root, "stream"));
    json_t *dropped = json_array();
    json_t *converted =
        proto_convert_request_policy(client, upstream, root, upstream_model, stream, conv->strict,
                                     dropped, conv->error, sizeof conv->error);
    free(conv->dropped);
    conv->dropped = s_join_names(dropped);
    json_decref(dropped);
    if (!converted) {
        json_decref(root);
        return -1;
    }
    conv->stream = stream;
    conv->client_usage = proto_convert_client_wants_usage(client, root);
    conv->content_type = conv->json_array ? "application/json" : "text/event-stream";
    json_decref(root);
    *out = json_dumps(converted, JSON_COMPACT);
    json_decref(converted);
    if (!*out)
        return dispatch_convert_fail(conv, "the converted request could not be written%s", NULL);
    *out_size = strlen(*out);
    if (stream) {
        proto_convert_stream_t *converter = proto_convert_stream_new(
            upstream, client, conv->client_model ? conv->client_model : upstream_model,
            conv->client_usage);
        assert(converter); //  every row of the table is a supported pair
        proto_convert_stream_set_json_array(converter, conv->json_array);
        conv->extra = converter;
    }
    return 0;
}

int dispatch_conversion_event(dispatch_convert_t *conv, const proto_sse_event_t *event,
                              zchunk_t *out)
{
    //  Keep-alive comments have no place in a converted stream (nor in a
    //  JSON array); the client's stream has its own shape.
    if (!event->has_data)
        return 0;
    proto_convert_stream_t *converter = conv->extra;
    if (!converter)
        return dispatch_convert_fail(conv, "upstream streamed an answer that was not asked for%s",
                                     NULL);
    int rc = proto_convert_stream_event(converter, event->name, event->data, event->data_size, out);
    proto_convert_stream_usage(converter, &conv->usage);
    conv->content_bytes = proto_convert_stream_content_bytes(converter);
    conv->complete = proto_convert_stream_complete(converter);
    if (rc != 0)
        return dispatch_convert_fail(conv, "%s", proto_convert_stream_error(converter));
    return 0;
}

int dispatch_conversion_body(dispatch_convert_t *conv, const char *body, size_t size, zchunk_t *out)
{
    int client = conv->adapter->client_protocol;
    int upstream = conv->adapter->upstream_protocol;
    json_t *answer = json_loadb(body, size, 0, NULL);
    if (!json_is_object(answer)) {
        json_decref(answer);
        return dispatch_convert_fail(conv, "upstream answer is not a JSON object%s", NULL);
    }
    proto_usage_t usage = {0};
    json_t *converted = proto_convert_response(upstream, client, answer,
                                               conv->client_model ? conv->client_model : "", &usage,
                                               conv->error, sizeof conv->error);
    conv->content_bytes += proto_usage_content_bytes(upstream, answer, false);
    json_decref(answer);
    if (!converted)
        return -1;
    conv->usage = usage;
    char *text = json_dumps(converted, JSON_COMPACT);
    json_decref(converted);
    if (!text)
        return dispatch_convert_fail(conv, "the converted answer could not be written%s", NULL);
    dispatch_convert_append(out, text, strlen(text));
    free(text);
    return 0;
}

void dispatch_conversion_error(dispatch_convert_t *conv, int status, const char *body, size_t size,
                               zchunk_t *out)
{
    char *text = proto_convert_error_body(conv->adapter->upstream_protocol,
                                          conv->adapter->client_protocol, status, body, size);
    if (text)
        dispatch_convert_append(out, text, strlen(text));
    free(text);
}

void dispatch_conversion_finish(dispatch_convert_t *conv, bool completed, int status,
                                const char *code, const char *message, zchunk_t *out)
{
    if (conv->extra) {
        //  Closes the client's stream, or ends it with the converter's
        //  error event (the converter knows which blocks are open).
        proto_convert_stream_finish(conv->extra, completed, out);
        return;
    }
    if (!completed) {
        char *event = proto_error_event(conv->adapter->client_protocol, status, code, message);
        dispatch_convert_append(out, event, strlen(event));
        free(event);
    }
}

void dispatch_conversion_free(void *extra)
{
    proto_convert_stream_t *converter = extra;
    proto_convert_stream_destroy(&converter);
}
