/*  fuzz_passthrough: proto_jscan and dispatch's scanning passthrough held
    to jansson. For any bytes: proto_jscan_valid agrees with json_loadb
    under every flag set (but for the one documented NUL quirk, where the
    scanner is stricter), and the scanning request, event and answer paths
    of every passthrough row give exactly what their jansson paths give:
    return, usage, content bytes, complete flag, error text, output bytes.

    Input: one byte choosing the row (low 3 bits), the event name (next 3)
    and the conversation's options (top 2), then the text. Seeds in
    corpus/fuzz_passthrough.
*/
#include "dispatch_passthrough.h"
#include "proto_jscan.h"
#include "proto_msg.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *s_names[] = {"",      "message_start",      "message_delta",   "message_stop",
                                "error", "response.completed", "response.failed", "ping"};

static void s_valid(const char *text, size_t size)
{
    for (int flags = 0; flags < 4; flags++) {
        size_t jansson = (flags & PROTO_JSCAN_ALLOW_NUL ? JSON_ALLOW_NUL : 0) |
                         (flags & PROTO_JSCAN_INT_AS_REAL ? JSON_DECODE_INT_AS_REAL : 0);
        json_t *json = json_loadb(text, size, jansson, NULL);
        bool ours = proto_jscan_valid(text, size, flags);
        if (ours && !json)
            abort();
        if (!ours && json && !memchr(text, '\0', size))
            abort();
        json_decref(json);
    }
}

static bool s_same_chunk(zchunk_t *a, zchunk_t *b)
{
    return zchunk_size(a) == zchunk_size(b) &&
           (!zchunk_size(a) || memcmp(zchunk_data(a), zchunk_data(b), zchunk_size(a)) == 0);
}

static void s_conv(dispatch_convert_t *conv, const dispatch_adapter_t *row, int options)
{
    dispatch_convert_init(conv, row);
    conv->json_array = options & 1;
    conv->client_usage = options & 2;
    conv->client_stream = true;
    conv->usage.tokens_in = 5;
    conv->usage.seen_in = true;
    conv->content_bytes = 11;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int protocol = PROTO_PROTOCOL_OPENAI + data[0] % 6;
    const char *name = s_names[data[0] >> 3 & 7];
    int options = data[0] >> 6;
    //  Events' data are C strings: a copy with its NUL.
    size--;
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data + 1, size);
    text[size] = '\0';
    s_valid(text, size);

    int upstream = protocol <= PROTO_PROTOCOL_GEMINI ? protocol : PROTO_PROTOCOL_OPENAI;
    const dispatch_adapter_t *row = dispatch_adapter_find(protocol, upstream);
    dispatch_convert_t a, b;
    zchunk_t *out_a = zchunk_new(NULL, 0), *out_b = zchunk_new(NULL, 0);

    proto_sse_event_t event = {name, text, size, "", true, text, size};
    s_conv(&a, row, options);
    s_conv(&b, row, options);
    if (dispatch_passthrough_event(&a, &event, out_a) !=
            dispatch_passthrough_event_jansson(&b, &event, out_b) ||
        !dispatch_convert_same(&a, &b) || !s_same_chunk(out_a, out_b))
        abort();
    dispatch_convert_clear(&a);
    dispatch_convert_clear(&b);

    s_conv(&a, row, options);
    s_conv(&b, row, options);
    if (dispatch_passthrough_body(&a, text, size, out_a) !=
            dispatch_passthrough_body_jansson(&b, text, size, out_b) ||
        !dispatch_convert_same(&a, &b) || !s_same_chunk(out_a, out_b))
        abort();
    dispatch_convert_clear(&a);
    dispatch_convert_clear(&b);

    s_conv(&a, row, options);
    s_conv(&b, row, options);
    char *request_a = NULL, *request_b = NULL;
    size_t size_a = 0, size_b = 0;
    int rc_a = dispatch_passthrough_request(&a, text, size, "up-model", &request_a, &size_a);
    int rc_b =
        dispatch_passthrough_request_jansson(&b, text, size, "up-model", &request_b, &size_b);
    if (rc_a != rc_b || !dispatch_convert_same(&a, &b) || size_a != size_b ||
        (request_a && memcmp(request_a, request_b, size_a) != 0))
        abort();
    free(request_a);
    free(request_b);
    dispatch_convert_clear(&a);
    dispatch_convert_clear(&b);

    zchunk_destroy(&out_a);
    zchunk_destroy(&out_b);
    free(text);
    return 0;
}
