#include "ingress_route.h"
#include "proto_check.h"
#include "ingress_usage.h"
#include "proto_msg.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#define S_GEMINI_MODELS "/v1beta/models/"
#define S_GEMINI_MODELS_V1 "/v1/models/"

static const ingress_route_t s_routes[] = {
    {"/v1/chat/completions", false, NULL, "POST", INGRESS_ROUTE_GENERATE, PROTO_PROTOCOL_OPENAI,
     true, false, INGRESS_STREAM_BODY, "chat_completions"},
    {"/v1/responses", false, NULL, "POST", INGRESS_ROUTE_GENERATE, PROTO_PROTOCOL_OPENAI_RESPONSES,
     true, false, INGRESS_STREAM_BODY, "responses"},
    {"/v1/embeddings", false, NULL, "POST", INGRESS_ROUTE_GENERATE,
     PROTO_PROTOCOL_OPENAI_EMBEDDINGS, true, false, INGRESS_STREAM_NEVER, "embeddings"},
    {"/v1/images/generations", false, NULL, "POST", INGRESS_ROUTE_GENERATE,
     PROTO_PROTOCOL_OPENAI_IMAGES, true, false, INGRESS_STREAM_NEVER, "images_generations"},
    {"/v1/messages", false, NULL, "POST", INGRESS_ROUTE_GENERATE, PROTO_PROTOCOL_ANTHROPIC, true,
     false, INGRESS_STREAM_BODY, "messages"},
    {"/v1/messages/count_tokens", false, NULL, "POST", INGRESS_ROUTE_GENERATE,
     PROTO_PROTOCOL_ANTHROPIC, true, true, INGRESS_STREAM_NEVER, "count_tokens"},
    {S_GEMINI_MODELS, true, ":generateContent", "POST", INGRESS_ROUTE_GENERATE,
     PROTO_PROTOCOL_GEMINI, true, false, INGRESS_STREAM_NEVER, "generate_content"},
    {S_GEMINI_MODELS, true, ":streamGenerateContent", "POST", INGRESS_ROUTE_GENERATE,
     PROTO_PROTOCOL_GEMINI, true, false, INGRESS_STREAM_ALWAYS, "stream_generate_content"},
    {S_GEMINI_MODELS, true, ":countTokens", "POST", INGRESS_ROUTE_GENERATE, PROTO_PROTOCOL_GEMINI,
     true, true, INGRESS_STREAM_NEVER, "count_tokens"},
    //  The same under /v1, which Gemini serves too (and @google/genai calls
    //  by default).
    {S_GEMINI_MODELS_V1, true, ":generateContent", "POST", INGRESS_ROUTE_GENERATE,
     PROTO_PROTOCOL_GEMINI, true, false, INGRESS_STREAM_NEVER, "generate_content"},
    {S_GEMINI_MODELS_V1, true, ":streamGenerateContent", "POST", INGRESS_ROUTE_GENERATE,
     PROTO_PROTOCOL_GEMINI, true, false, INGRESS_STREAM_ALWAYS, "stream_generate_content"},
    {S_GEMINI_MODELS_V1, true, ":countTokens", "POST", INGRESS_ROUTE_GENERATE,
     PROTO_PROTOCOL_GEMINI, true, true, INGRESS_STREAM_NEVER, "count_tokens"},
    //  OpenAI and Anthropic clients share this path; the ingress tells them
    //  apart by their headers (ingress_server).
    {"/v1/models", false, NULL, "GET", INGRESS_ROUTE_MODELS, PROTO_PROTOCOL_OPENAI, true, false,
     INGRESS_STREAM_NEVER, "models"},
    {"/v1beta/models", false, NULL, "GET", INGRESS_ROUTE_MODELS, PROTO_PROTOCOL_GEMINI, true, false,
     INGRESS_STREAM_NEVER, "models"},
    //  Clients given the gateway's root as their base URL.
    {"/models", false, NULL, "GET", INGRESS_ROUTE_MODELS, PROTO_PROTOCOL_OPENAI, true, false,
     INGRESS_STREAM_NEVER, "models"},
    //  One model (OpenAI models.retrieve, Anthropic models.retrieve, Gemini
    //  models.get). After the Gemini methods above, and never a 405 for
    //  them: a POST to an unknown Gemini method stays a 404.
    {S_GEMINI_MODELS_V1, true, NULL, "GET", INGRESS_ROUTE_MODEL, PROTO_PROTOCOL_OPENAI, true, false,
     INGRESS_STREAM_NEVER, "model"},
    {S_GEMINI_MODELS, true, NULL, "GET", INGRESS_ROUTE_MODEL, PROTO_PROTOCOL_GEMINI, true, false,
     INGRESS_STREAM_NEVER, "model"},
    //  The key's own balance, spend and limits (ingress_usage), and the
    //  OpenAI dashboard routes that chat front ends read a balance from.
    {"/v1/usage", false, NULL, "GET", INGRESS_ROUTE_USAGE, PROTO_PROTOCOL_OPENAI, true, false,
     INGRESS_STREAM_NEVER, INGRESS_USAGE_SELF},
    {"/v1/dashboard/billing/subscription", false, NULL, "GET", INGRESS_ROUTE_USAGE,
     PROTO_PROTOCOL_OPENAI, true, false, INGRESS_STREAM_NEVER, INGRESS_USAGE_SUBSCRIPTION},
    {"/dashboard/billing/subscription", false, NULL, "GET", INGRESS_ROUTE_USAGE,
     PROTO_PROTOCOL_OPENAI, true, false, INGRESS_STREAM_NEVER, INGRESS_USAGE_SUBSCRIPTION},
    {"/v1/dashboard/billing/usage", false, NULL, "GET", INGRESS_ROUTE_USAGE, PROTO_PROTOCOL_OPENAI,
     true, false, INGRESS_STREAM_NEVER, INGRESS_USAGE_DASHBOARD},
    {"/dashboard/billing/usage", false, NULL, "GET", INGRESS_ROUTE_USAGE, PROTO_PROTOCOL_OPENAI,
     true, false, INGRESS_STREAM_NEVER, INGRESS_USAGE_DASHBOARD},
    {"/healthz", false, NULL, "GET", INGRESS_ROUTE_HEALTH, PROTO_PROTOCOL_OPENAI, false, false,
     INGRESS_STREAM_NEVER, "healthz"},
    {"/metrics", false, NULL, "GET", INGRESS_ROUTE_METRICS, PROTO_PROTOCOL_OPENAI, false, false,
     INGRESS_STREAM_NEVER, "metrics"},
};
#define S_ROUTE_COUNT (sizeof s_routes / sizeof s_routes[0])

static bool s_matches(const ingress_route_t *route, const char *path)
{
    if (!route->prefix)
        return strcmp(path, route->path) == 0;
    size_t prefix = strlen(route->path);
    if (strncmp(path, route->path, prefix) != 0)
        return false;
    if (!route->suffix)
        return path[prefix] != '\0';
    //  A model name, then the method: at least one character between.
    size_t length = strlen(path), suffix = strlen(route->suffix);
    return length > prefix + suffix && strcmp(path + length - suffix, route->suffix) == 0;
}

//  Errors on paths we do not serve still follow the shape their family of
//  clients expects.
static int s_guess_protocol(const char *path)
{
    if (strncmp(path, "/v1/messages", 12) == 0)
        return PROTO_PROTOCOL_ANTHROPIC;
    if (strncmp(path, "/v1beta/", 8) == 0 ||
        (strncmp(path, S_GEMINI_MODELS_V1, strlen(S_GEMINI_MODELS_V1)) == 0 && strchr(path, ':')))
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
        //  HEAD is GET without a body; libmicrohttpd drops the body itself.
        bool method_ok = strcmp(method, route->method) == 0 ||
                         (strcmp(method, "HEAD") == 0 && strcmp(route->method, "GET") == 0);
        //  A model's own path: other methods are not "this path", and a
        //  path that names a Gemini method is that method's.
        if (route->prefix && !route->suffix && (!method_ok || *status == 405))
            continue;
        *protocol = route->protocol;
        if (method_ok) {
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
        if (s_matches(&s_routes[i], path) && !(s_routes[i].prefix && !s_routes[i].suffix))
            return s_routes[i].method;
    return NULL;
}

int ingress_route_model(const ingress_route_t *route, const char *path, char *model,
                        size_t model_size)
{
    if (!route->prefix || !s_matches(route, path))
        return -1;
    size_t start = strlen(route->path);
    size_t length = strlen(path) - start - (route->suffix ? strlen(route->suffix) : 0);
    if (length >= model_size)
        return -1;
    memcpy(model, path + start, length);
    model[length] = '\0';
    return 0;
}

void ingress_route_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_route: ");
    int status, protocol;
    const ingress_route_t *route =
        ingress_route_find("/v1/chat/completions", "POST", &status, &protocol);
    PROTO_CHECK(route && route->kind == INGRESS_ROUTE_GENERATE && status == 200);
    PROTO_CHECK(protocol == PROTO_PROTOCOL_OPENAI && route->needs_key);
    PROTO_CHECK(!ingress_route_find("/v1/chat/completions", "GET", &status, &protocol));
    PROTO_CHECK(status == 405);
    PROTO_CHECK(strcmp(ingress_route_allowed("/v1/chat/completions"), "POST") == 0);
    route = ingress_route_find("/v1/models", "GET", &status, &protocol);
    PROTO_CHECK(route && route->kind == INGRESS_ROUTE_MODELS);
    route = ingress_route_find("/healthz", "HEAD", &status, &protocol);
    PROTO_CHECK(route && route->kind == INGRESS_ROUTE_HEALTH && !route->needs_key);
    PROTO_CHECK(!ingress_route_find("/v1/chat/completionsX", "POST", &status, &protocol));
    PROTO_CHECK(status == 404 && protocol == PROTO_PROTOCOL_OPENAI);
    PROTO_CHECK(!ingress_route_allowed("/nope"));

    //  Every surface, with its protocol and stream source.
    route = ingress_route_find("/v1/responses", "POST", &status, &protocol);
    PROTO_CHECK(route && protocol == PROTO_PROTOCOL_OPENAI_RESPONSES);
    route = ingress_route_find("/v1/embeddings", "POST", &status, &protocol);
    PROTO_CHECK(route && protocol == PROTO_PROTOCOL_OPENAI_EMBEDDINGS);
    route = ingress_route_find("/v1/images/generations", "POST", &status, &protocol);
    PROTO_CHECK(route && protocol == PROTO_PROTOCOL_OPENAI_IMAGES);
    route = ingress_route_find("/v1/messages", "POST", &status, &protocol);
    PROTO_CHECK(route && protocol == PROTO_PROTOCOL_ANTHROPIC && !route->count_tokens);
    route = ingress_route_find("/v1/messages/count_tokens", "POST", &status, &protocol);
    PROTO_CHECK(route && protocol == PROTO_PROTOCOL_ANTHROPIC && route->count_tokens);
    PROTO_CHECK(!ingress_route_find("/v1/messages", "GET", &status, &protocol));
    PROTO_CHECK(status == 405 && protocol == PROTO_PROTOCOL_ANTHROPIC);
    PROTO_CHECK(!ingress_route_find("/v1/messages/batches", "POST", &status, &protocol));
    PROTO_CHECK(status == 404 && protocol == PROTO_PROTOCOL_ANTHROPIC);

    char model[64];
    route = ingress_route_find("/v1beta/models/gemini-2.0-flash:generateContent", "POST", &status,
                               &protocol);
    PROTO_CHECK(route && protocol == PROTO_PROTOCOL_GEMINI &&
                route->stream == INGRESS_STREAM_NEVER);
    PROTO_CHECK(ingress_route_model(route, "/v1beta/models/gemini-2.0-flash:generateContent", model,
                                    sizeof model) == 0);
    PROTO_CHECK(strcmp(model, "gemini-2.0-flash") == 0);
    route =
        ingress_route_find("/v1beta/models/m:streamGenerateContent", "POST", &status, &protocol);
    PROTO_CHECK(route && route->stream == INGRESS_STREAM_ALWAYS && !route->count_tokens);
    route = ingress_route_find("/v1beta/models/m:countTokens", "POST", &status, &protocol);
    PROTO_CHECK(route && route->count_tokens);
    PROTO_CHECK(ingress_route_model(route, "/v1beta/models/m:countTokens", model, 2) == 0);
    PROTO_CHECK(ingress_route_model(route, "/v1beta/models/mm:countTokens", model, 2) == -1);
    PROTO_CHECK(!ingress_route_find("/v1beta/models/:generateContent", "POST", &status, &protocol));
    PROTO_CHECK(status == 404 && protocol == PROTO_PROTOCOL_GEMINI);
    PROTO_CHECK(!ingress_route_find("/v1beta/models/x:embedContent", "POST", &status, &protocol));
    PROTO_CHECK(status == 404 && protocol == PROTO_PROTOCOL_GEMINI);
    PROTO_CHECK(!ingress_route_find("/v1beta/models/x:generateContent", "GET", &status, &protocol));
    PROTO_CHECK(status == 405);
    route = ingress_route_find("/v1/models/g-1:streamGenerateContent", "POST", &status, &protocol);
    PROTO_CHECK(route && route->stream == INGRESS_STREAM_ALWAYS &&
                protocol == PROTO_PROTOCOL_GEMINI);
    PROTO_CHECK(ingress_route_model(route, "/v1/models/g-1:streamGenerateContent", model,
                                    sizeof model) == 0 &&
                strcmp(model, "g-1") == 0);
    PROTO_CHECK(!ingress_route_find("/v1/models/x:nope", "POST", &status, &protocol));
    PROTO_CHECK(status == 404 && protocol == PROTO_PROTOCOL_GEMINI);
    route = ingress_route_find("/v1beta/models", "GET", &status, &protocol);
    PROTO_CHECK(route && route->kind == INGRESS_ROUTE_MODELS && protocol == PROTO_PROTOCOL_GEMINI);
    route = ingress_route_find("/models", "GET", &status, &protocol);
    PROTO_CHECK(route && route->kind == INGRESS_ROUTE_MODELS && protocol == PROTO_PROTOCOL_OPENAI);
    //  One model by its path, names with '/' and ':' included.
    route = ingress_route_find("/v1/models/org/m:8b", "GET", &status, &protocol);
    PROTO_CHECK(route && route->kind == INGRESS_ROUTE_MODEL && protocol == PROTO_PROTOCOL_OPENAI);
    PROTO_CHECK(ingress_route_model(route, "/v1/models/org/m:8b", model, sizeof model) == 0 &&
                strcmp(model, "org/m:8b") == 0);
    route = ingress_route_find("/v1beta/models/g-1", "GET", &status, &protocol);
    PROTO_CHECK(route && route->kind == INGRESS_ROUTE_MODEL && protocol == PROTO_PROTOCOL_GEMINI);
    PROTO_CHECK(!ingress_route_find("/v1/models/x", "POST", &status, &protocol));
    PROTO_CHECK(status == 404);
    PROTO_CHECK(!ingress_route_find("/v1/models/", "GET", &status, &protocol));
    route = ingress_route_find("/v1/usage", "GET", &status, &protocol);
    PROTO_CHECK(route && route->kind == INGRESS_ROUTE_USAGE);
    route = ingress_route_find("/dashboard/billing/subscription", "GET", &status, &protocol);
    PROTO_CHECK(route && route->kind == INGRESS_ROUTE_USAGE);
    PROTO_CHECK(!ingress_route_find("/v1/usage", "POST", &status, &protocol) && status == 405);
    if (verbose)
        printf("OK\n");
}
