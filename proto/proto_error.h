/*  proto_error: error bodies in each client protocol's own shape.

    OpenAI:    {"error":{"message":M,"type":T,"param":null,"code":C}}
    Anthropic: {"type":"error","error":{"type":T,"message":M}}
    Gemini:    {"error":{"code":STATUS,"message":M,"status":S}}
    The type/status words follow each API's documented error table for the
    HTTP status; `code` is ours (e.g. "model_not_found", "invalid_api_key").
*/
#ifndef PROTO_ERROR_H_INCLUDED
#define PROTO_ERROR_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

//  Builds an error body for a client protocol (proto_protocol_t). `code` may
//  be NULL. Caller owns return value (free()).
char *proto_error_body(int protocol, int status, const char *code, const char *message);

//  The same error as one SSE event for a stream already under way
//  (OpenAI: `data: {"error":…}`; Anthropic: `event: error`; Gemini: `data: {"error":…}`).
//  Caller owns return value.
char *proto_error_event(int protocol, int status, const char *code, const char *message);

//  Self test.
void proto_error_test(bool verbose);

#endif
