/*  fuzz_convert_stream: an upstream SSE byte stream, read with proto_sse and
    converted event by event for every pair, then finished both ways (cut
    and completed). Seeds in corpus/fuzz_convert_stream are real upstream
    streams taken from the fixtures.
*/
#include "fuzz_common.h"
#include "proto_convert.h"
#include "proto_sse.h"

#include <stdint.h>
#include <stdlib.h>

typedef struct {
    proto_convert_stream_t *stream; //  the converter under test
    zchunk_t *out;                  //  client bytes
} s_state_t;

static int s_event(const proto_sse_event_t *event, void *arg)
{
    s_state_t *state = arg;
    if (event->has_data)
        proto_convert_stream_event(state->stream, event->name, event->data, event->data_size,
                                   state->out);
    //  Keep the output small: the converter appends, the test only needs
    //  to know it did not crash.
    if (zchunk_size(state->out) > 65536) {
        zchunk_destroy(&state->out);
        state->out = zchunk_new(NULL, 0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int upstream = 0; upstream < FUZZ_PROTOCOLS; upstream++)
        for (int client = 0; client < FUZZ_PROTOCOLS; client++) {
            s_state_t state;
            state.stream =
                proto_convert_stream_new(fuzz_protocols[upstream], fuzz_protocols[client],
                                         "model-x", (upstream + client) % 2 == 0);
            proto_convert_stream_set_json_array(state.stream, client == 3 && upstream % 2);
            state.out = zchunk_new(NULL, 0);
            proto_sse_t *reader = proto_sse_new(1 << 20);
            proto_sse_feed(reader, data, size, s_event, &state);
            proto_sse_finish(reader, s_event, &state);
            proto_convert_stream_finish(state.stream, size % 2 == 0, state.out);
            proto_usage_t usage;
            proto_convert_stream_usage(state.stream, &usage);
            proto_sse_destroy(&reader);
            zchunk_destroy(&state.out);
            proto_convert_stream_destroy(&state.stream);
        }
    return 0;
}
