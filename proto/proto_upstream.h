/*  proto_upstream: what an upstream HTTP request looks like per protocol.

    The URL is the provider's base_url plus the protocol's path, without
    doubling a version segment the operator already put in base_url
    ("https://api.openai.com/v1" + "/chat/completions"). Authentication is
    the protocol's own header. Secrets only ever go into header values
    handed to libcurl; nothing here logs.
*/
#ifndef PROTO_UPSTREAM_H_INCLUDED
#define PROTO_UPSTREAM_H_INCLUDED

#include <curl/curl.h>
#include <stdbool.h>

//  Which of a protocol's endpoints a call goes to.
typedef enum {
    PROTO_ENDPOINT_GENERATE,     //  the model call (chat, responses, messages, embeddings,
                                 //  generateContent / streamGenerateContent)
    PROTO_ENDPOINT_COUNT_TOKENS, //  Anthropic /v1/messages/count_tokens, Gemini :countTokens
    PROTO_ENDPOINT_MODELS,       //  the provider's model list (health's probe)
} proto_endpoint_t;

//  The URL for a call to an upstream of `protocol` (proto_protocol_t) at
//  base_url, for upstream_model (Gemini puts the model in the path), stream
//  and endpoint. Returns NULL for a protocol without that HTTP endpoint.
//  Caller owns return value (free()).
char *proto_upstream_url(int protocol, proto_endpoint_t endpoint, const char *base_url,
                         const char *upstream_model, bool stream);

//  The request headers for a protocol: content type, accept, the
//  authentication header carrying secret, and `Expect:` cleared (no 100
//  continue round trip before large bodies). Caller owns return value
//  (curl_slist_free_all).
struct curl_slist *proto_upstream_headers(int protocol, const char *secret, bool stream);

//  Appends the protocol's authentication header (and Anthropic's version
//  header) carrying secret to list. Returns the list.
struct curl_slist *proto_upstream_auth(struct curl_slist *list, int protocol, const char *secret);

//  Self test.
void proto_upstream_test(bool verbose);

#endif
