/*  fuzz_convert_response: upstream answer -> client answer, every pair, and
    upstream error bodies -> client error bodies. Seeds: the fixtures (their
    "input" member is used when present).
*/
#include "fuzz_common.h"
#include "proto_convert.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int upstream = 0; upstream < FUZZ_PROTOCOLS; upstream++)
        for (int client = 0; client < FUZZ_PROTOCOLS; client++)
            free(proto_convert_error_body(fuzz_protocols[upstream], fuzz_protocols[client], 500,
                                          (const char *)data, size));
    json_t *document = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!document)
        return 0;
    json_t *response = json_object_get(document, "input");
    if (!response)
        response = document;
    for (int upstream = 0; upstream < FUZZ_PROTOCOLS; upstream++)
        for (int client = 0; client < FUZZ_PROTOCOLS; client++) {
            char error[256];
            proto_usage_t usage;
            json_t *body = proto_convert_response(fuzz_protocols[upstream], fuzz_protocols[client],
                                                  response, "model-x", &usage, error, sizeof error);
            json_decref(body);
        }
    json_decref(document);
    return 0;
}
