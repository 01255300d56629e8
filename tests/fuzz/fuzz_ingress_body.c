/*  fuzz_ingress_body: ingress's request-body scanner held to its jansson
    path. For any bytes and any protocol, ingress_scan_body either leaves the
    body to jansson or gives exactly what ingress_parse_body_tree gives:
    success, model, session, capabilities, stream flags, the usage option,
    the token estimate and the output limit.

    Input: one byte choosing the protocol (low 3 bits), countTokens (bit 3)
    and a model from the path as Gemini's (bit 4), then the body. Seeds in
    corpus/fuzz_ingress_body.
*/
#include "ingress_parse.h"
#include "ingress_scan.h"
#include "proto_msg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int protocol = PROTO_PROTOCOL_OPENAI + data[0] % 6;
    bool count_tokens = data[0] >> 3 & 1;
    const char *path_model = data[0] >> 4 & 1 ? "gemini-x" : NULL;
    const char *body = (const char *)data + 1;
    size--;
    ingress_body_t fast = INGRESS_BODY_EMPTY, tree = INGRESS_BODY_EMPTY;
    char error[256];
    bool scanned = ingress_scan_body(protocol, count_tokens, path_model, body, size, &fast);
    int rc = ingress_parse_body_tree(protocol, count_tokens, path_model, body, size, &tree, error,
                                     sizeof error);
    if (scanned && (rc != 0 || !ingress_body_same(&fast, &tree)))
        abort();
    ingress_body_release(&fast);
    ingress_body_release(&tree);
    return 0;
}
