#include "proto_error.h"
#include "proto_check.h"
#include "proto_msg.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_openai_type(int status)
{
    switch (status) {
    case 400:
    case 404:
    case 409:
    case 413:
    case 422:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 402:
        return "insufficient_quota";
    case 403:
        return "permission_error";
    case 429:
        return "rate_limit_error";
    default:
        return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

static const char *s_anthropic_type(int status)
{
    switch (status) {
    case 400:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 402:
        return "billing_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 503:
    case 529:
        return "overloaded_error";
    case 504:
        return "timeout_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static const char *s_gemini_status(int status)
{
    switch (status) {
    case 400:
    case 413:
    case 431:
        return "INVALID_ARGUMENT";
    case 401:
        return "UNAUTHENTICATED";
    case 402:
    case 429:
        return "RESOURCE_EXHAUSTED";
    case 403:
        return "PERMISSION_DENIED";
    case 404:
        return "NOT_FOUND";
    case 503:
        return "UNAVAILABLE";
    case 504:
        return "DEADLINE_EXCEEDED";
    default:
        return status >= 500 ? "INTERNAL" : "FAILED_PRECONDITION";
    }
}

static json_t *s_error_json(int protocol, int status, const char *code, const char *message)
{
    message = message ? message : "error";
    switch (protocol) {
    case PROTO_PROTOCOL_ANTHROPIC:
        return json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type",
                         s_anthropic_type(status), "message", message);
    case PROTO_PROTOCOL_GEMINI:
        return json_pack("{s:{s:i, s:s, s:s}}", "error", "code", status, "message", message,
                         "status", s_gemini_status(status));
    default:
        return json_pack("{s:{s:s, s:s, s:n, s:s?}}", "error", "message", message, "type",
                         s_openai_type(status), "param", "code", code);
    }
}

char *proto_error_body(int protocol, int status, const char *code, const char *message)
{
    json_t *error = s_error_json(protocol, status, code, message);
    char *text = json_dumps(error, JSON_COMPACT);
    json_decref(error);
    return text;
}

char *proto_error_event(int protocol, int status, const char *code, const char *message)
{
    char *body = proto_error_body(protocol, status, code, message);
    size_t size = strlen(body) + 64;
    char *event = malloc(size);
    assert(event);
    if (protocol == PROTO_PROTOCOL_ANTHROPIC)
        snprintf(event, size, "event: error\ndata: %s\n\n", body);
    else
        snprintf(event, size, "data: %s\n\n", body);
    free(body);
    return event;
}

void proto_error_test(bool verbose)
{
    if (verbose)
        printf(" * proto_error: ");
    char *body = proto_error_body(PROTO_PROTOCOL_OPENAI, 404, "model_not_found",
                                  "The model \"x\" does not exist");
    PROTO_CHECK(strcmp(body,
                       "{\"error\":{\"message\":\"The model \\\"x\\\" does not exist\",\"type\":"
                       "\"invalid_request_error\",\"param\":null,\"code\":\"model_not_found\"}}") ==
                0);
    free(body);
    body = proto_error_body(PROTO_PROTOCOL_OPENAI, 500, NULL, "boom");
    PROTO_CHECK(strstr(body, "\"code\":null") || !strstr(body, "\"code\""));
    free(body);
    body = proto_error_body(PROTO_PROTOCOL_ANTHROPIC, 401, "invalid_api_key", "bad key");
    PROTO_CHECK(strcmp(body, "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\","
                             "\"message\":\"bad key\"}}") == 0);
    free(body);
    body = proto_error_body(PROTO_PROTOCOL_GEMINI, 429, NULL, "slow down");
    PROTO_CHECK(strcmp(body, "{\"error\":{\"code\":429,\"message\":\"slow down\",\"status\":"
                             "\"RESOURCE_EXHAUSTED\"}}") == 0);
    free(body);
    char *event = proto_error_event(PROTO_PROTOCOL_ANTHROPIC, 529, NULL, "overloaded");
    PROTO_CHECK(strncmp(event, "event: error\ndata: {", 20) == 0);
    PROTO_CHECK(strstr(event, "overloaded_error"));
    free(event);
    if (verbose)
        printf("OK\n");
}
