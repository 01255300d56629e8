/*  fuzz_dispatch: whole DISPATCH messages, envelope and body, through what
    dispatch does with one before any upstream is called: the envelope
    decoded and checked (proto_msg), then the body validated and rewritten
    for every upstream protocol the client's can go to (dispatch_adapter:
    passthrough edits and conversions). A forged DISPATCH from a process
    with a cluster certificate reaches exactly this code.

    Input: u16 envelope size (big endian), the envelope frame, then the
    body frame (the rest). Seeds in corpus/fuzz_dispatch.
*/
#include "dispatch_adapter.h"
#include "fuzz_common.h"
#include "proto_msg.h"

#include <stdint.h>
#include <stdlib.h>

static const int s_upstreams[] = {PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI_RESPONSES,
                                  PROTO_PROTOCOL_ANTHROPIC, PROTO_PROTOCOL_GEMINI,
                                  PROTO_PROTOCOL_OPENAI_EMBEDDINGS};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t envelope_size = (size_t)data[0] << 8 | data[1];
    if (envelope_size > size - 2)
        return 0;
    proto_msg_t *msg = NULL;
    if (proto_msg_decode(data + 2, envelope_size, &msg) != 0)
        return 0;
    const char *body = (const char *)data + 2 + envelope_size;
    size_t body_size = size - 2 - envelope_size;
    //  What dispatch refuses before conversion, refused here too.
    int client = (int)proto_msg_client_protocol(msg);
    if (proto_msg_type(msg) == PROTO_MSG_DISPATCH && body_size && client >= PROTO_PROTOCOL_OPENAI &&
        client <= PROTO_PROTOCOL_OPENAI_EMBEDDINGS) {
        for (size_t i = 0; i < sizeof s_upstreams / sizeof s_upstreams[0]; i++) {
            const dispatch_adapter_t *adapter = dispatch_adapter_find(client, s_upstreams[i]);
            if (!adapter)
                continue;
            for (int count_tokens = 0; count_tokens < 2; count_tokens++) {
                dispatch_convert_t conv;
                dispatch_convert_init(&conv, adapter);
                conv.client_model = proto_msg_model(msg);
                conv.client_stream = proto_msg_stream(msg);
                conv.count_tokens = count_tokens;
                char *out = NULL;
                size_t out_size = 0;
                if (adapter->request(&conv, body, body_size, "upstream-model", &out, &out_size) ==
                    0)
                    free(out);
                dispatch_convert_clear(&conv);
            }
        }
    }
    //  And the envelope survives a round trip.
    uint8_t *again = NULL;
    size_t again_size = 0;
    proto_msg_encode(msg, &again, &again_size);
    free(again);
    proto_msg_destroy(&msg);
    return 0;
}
