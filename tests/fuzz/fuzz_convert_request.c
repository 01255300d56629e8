/*  fuzz_convert_request: client request -> upstream request, every pair.
    An input is a JSON document; a fixture file's "input" member is used
    when present, so tests/fixtures/convert seeds the corpus with real
    requests. A refusal is fine; a crash, leak or sanitizer report is not.
*/
#include "fuzz_common.h"
#include "proto_convert.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *document = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!document)
        return 0;
    json_t *request = json_object_get(document, "input");
    if (!request)
        request = document;
    for (int client = 0; client < FUZZ_PROTOCOLS; client++)
        for (int upstream = 0; upstream < FUZZ_PROTOCOLS; upstream++)
            for (int stream = 0; stream < 2; stream++) {
                char error[256];
                json_t *body =
                    proto_convert_request(fuzz_protocols[client], fuzz_protocols[upstream], request,
                                          "model-x", stream, error, sizeof error);
                if (body) {
                    char *text = json_dumps(body, JSON_COMPACT);
                    free(text);
                }
                json_decref(body);
            }
    json_decref(document);
    return 0;
}
