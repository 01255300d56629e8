#include "ingress_route.h"
#include "proto_msg.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

static const ingress_route_t s_routes[] = {
    {"/v1/chat/completions", false, "POST", INGRESS_ROUTE_GENERATE, PROTO_PROTOCOL_OPENAI, true,
     "chat_completions"},
    {"/v1/models", false, "GET", INGRESS_ROUTE_MODELS, PROTO_PROTOCOL_OPENAI, true, "models"},
    {"/healthz", false, "GET", INGRESS_ROUTE_HEALTH, PROTO_PROTOCOL_OPENAI, false, "healthz"},
    {"/metrics", false, "GET", INGRESS_ROUTE_METRICS, PROTO_PROTOCOL_OPENAI, false, "metrics"},
};
#define S_ROUTE_COUNT (sizeof s_routes / sizeof s_routes[0])

static bool s_matches(const ingress_route_t *route, const char *path)
{
    if (route->prefix)
        return strncmp(path, route->path, strlen(route->path)) == 0;
    return strcmp(path, route->path) == 0;
}

//  Errors on paths we do not serve still follow the shape their family of
//  clients expects.
static int s_guess_protocol(const char *path)
{
    if (strncmp(path, "/v1/messages", 12) == 0)
        return PROTO_PROTOCOL_ANTHROPIC;
    if (strncmp(path, "/v1beta/", 8) == 0)
        return PROTO_PROTOCOL_GEMINI;
    return PROTO_PROTOCOL_OPENAI;
}

const ingress_route_t *ingress_route_find(const char *path, const char *method, int *status,
                                          int *protocol)
{
    *status = 404;
    *protocol = s_guess_protocol(path);
    for (size_t i = 0; i < S_ROUTE_COUNT; i++) {
        const ingress_route_t *route = &s_routes[i];
        if (!s_matches(route, path))
            continue;
        *protocol = route->protocol;
        //  HEAD is GET without a body; libmicrohttpd drops the body itself.
        if (strcmp(method, route->method) == 0 ||
            (strcmp(method, "HEAD") == 0 && strcmp(route->method, "GET") == 0)) {
            *status = 200;
            return route;
        }
        *status = 405;
    }
    return NULL;
}

const char *ingress_route_allowed(const char *path)
{
    for (size_t i = 0; i < S_ROUTE_COUNT; i++)
        if (s_matches(&s_routes[i], path))
            return s_routes[i].method;
    return NULL;
}

void ingress_route_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_route: ");
    int status, protocol;
    const ingress_route_t *route =
        ingress_route_find("/v1/chat/completions", "POST", &status, &protocol);
    assert(route && route->kind == INGRESS_ROUTE_GENERATE && status == 200);
    assert(protocol == PROTO_PROTOCOL_OPENAI && route->needs_key);
    assert(!ingress_route_find("/v1/chat/completions", "GET", &status, &protocol));
    assert(status == 405);
    assert(strcmp(ingress_route_allowed("/v1/chat/completions"), "POST") == 0);
    route = ingress_route_find("/v1/models", "GET", &status, &protocol);
    assert(route && route->kind == INGRESS_ROUTE_MODELS);
    route = ingress_route_find("/healthz", "HEAD", &status, &protocol);
    assert(route && route->kind == INGRESS_ROUTE_HEALTH && !route->needs_key);
    assert(!ingress_route_find("/v1/chat/completionsX", "POST", &status, &protocol));
    assert(status == 404 && protocol == PROTO_PROTOCOL_OPENAI);
    assert(!ingress_route_find("/v1/messages", "POST", &status, &protocol));
    assert(status == 404 && protocol == PROTO_PROTOCOL_ANTHROPIC);
    assert(!ingress_route_find("/v1beta/models/x:generateContent", "POST", &status, &protocol));
    assert(protocol == PROTO_PROTOCOL_GEMINI);
    assert(!ingress_route_allowed("/nope"));
    if (verbose)
        printf("OK\n");
}
