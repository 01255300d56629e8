/*  ingress_route: the client API's table of paths.

    Each route names the client protocol it speaks, so every answer on it,
    errors included, is in that protocol's shape (proto_error_body). The
    surfaces: OpenAI Chat Completions, Responses and Embeddings, Anthropic
    Messages (and count_tokens), Gemini generateContent,
    streamGenerateContent and countTokens (the model and the method are in
    the path: /v1beta/models/{model}:{method}), and the model lists. Adding
    one is a row here plus, where its body differs, a branch in
    ingress_parse_body; the request flow behind a GENERATE route is the same
    for every protocol.
*/
#ifndef INGRESS_ROUTE_H_INCLUDED
#define INGRESS_ROUTE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

//  What the ingress does with a request on a route.
typedef enum {
    INGRESS_ROUTE_GENERATE, //  a model call: admit, route, dispatch, stream back
    INGRESS_ROUTE_MODELS,   //  list the models the key may use
    INGRESS_ROUTE_MODEL,    //  one of them, named by the path
    INGRESS_ROUTE_USAGE,    //  the key's own balance, spend and limits (ingress_usage)
    INGRESS_ROUTE_HEALTH,   //  liveness and catalog readiness
    INGRESS_ROUTE_METRICS,  //  Prometheus text
} ingress_route_kind_t;

//  Where a route's stream flag comes from.
typedef enum {
    INGRESS_STREAM_BODY,   //  the body's "stream" (OpenAI, Responses, Anthropic)
    INGRESS_STREAM_NEVER,  //  never streamed (embeddings, token counts, generateContent)
    INGRESS_STREAM_ALWAYS, //  always streamed (Gemini streamGenerateContent)
} ingress_stream_t;

typedef struct {
    const char *path;          //  exact path, or prefix when `prefix` is set
    bool prefix;               //  path is a prefix (for paths carrying a model name)
    const char *suffix;        //  with prefix: what the path ends in (Gemini method), or NULL
    const char *method;        //  the one method served
    ingress_route_kind_t kind; //  handling
    int protocol;              //  client protocol (proto_protocol_t) of answers
    bool needs_key;            //  client key required
    bool count_tokens;         //  a token count, not a generation
    ingress_stream_t stream;   //  where the stream flag comes from
    const char *name;          //  metrics label
} ingress_route_t;

//  Finds the route for a request. Returns it, or NULL with *status 404 (no
//  such path) or 405 (the path exists with another method); *protocol is
//  set either way to the protocol errors should use.
const ingress_route_t *ingress_route_find(const char *path, const char *method, int *status,
                                          int *protocol);

//  The method(s) a path accepts, for the Allow header of a 405, or NULL.
const char *ingress_route_allowed(const char *path);

//  Copies the model a prefix route's path names (Gemini:
//  /v1beta/models/{model}:{method}; a model's own path:
//  /v1/models/{model}) into model. Returns 0, or -1 when the
//  route names none or it does not fit.
int ingress_route_model(const ingress_route_t *route, const char *path, char *model,
                        size_t model_size);

//  Self test.
void ingress_route_test(bool verbose);

#endif
