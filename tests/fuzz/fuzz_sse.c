/*  fuzz_sse: proto_sse fed the same bytes whole and in slices chosen by the
    input's first byte; both must give the same blocks (the reader promises
    any split of the same bytes gives the same blocks).
*/
#include "proto_sse.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t hash; //  FNV-1a over every block's name, data and raw bytes
    size_t blocks; //  blocks seen
} s_digest_t;

static void s_mix(s_digest_t *digest, const char *bytes, size_t size)
{
    for (size_t at = 0; at < size; at++)
        digest->hash = (digest->hash ^ (uint8_t)bytes[at]) * 1099511628211ull;
    digest->hash = (digest->hash ^ 0xff) * 1099511628211ull;
}

static int s_block(const proto_sse_event_t *event, void *arg)
{
    s_digest_t *digest = arg;
    digest->blocks++;
    s_mix(digest, event->name, strlen(event->name));
    s_mix(digest, event->data, event->data_size);
    s_mix(digest, event->raw, event->raw_size);
    s_mix(digest, event->has_data ? "1" : "0", 1);
    return 0;
}

static s_digest_t s_run(const uint8_t *data, size_t size, size_t slice)
{
    s_digest_t digest = {1469598103934665603ull, 0};
    proto_sse_t *reader = proto_sse_new(4096);
    for (size_t at = 0; at < size; at += slice)
        if (proto_sse_feed(reader, data + at, size - at < slice ? size - at : slice, s_block,
                           &digest))
            break;
    proto_sse_finish(reader, s_block, &digest);
    digest.hash ^= proto_sse_failed(reader);
    proto_sse_destroy(&reader);
    return digest;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t slice = (size_t)data[0] % 7 + 1;
    s_digest_t whole = s_run(data + 1, size - 1, size);
    s_digest_t split = s_run(data + 1, size - 1, slice);
    //  A block over the limit fails the reader at a point that depends on
    //  the slicing, so only streams that stayed under it are compared.
    if (size - 1 < 4096) {
        assert(whole.blocks == split.blocks);
        assert(whole.hash == split.hash);
    }
    char *text = proto_sse_format("e", (const char *)data, size, NULL);
    free(text);
    return 0;
}
