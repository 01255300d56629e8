#include "proto_upstream.h"
#include "proto_text.h"
#include "proto_check.h"
#include "proto_msg.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  base_url without trailing slashes, and without `version` at its end when
//  the operator included it, then path (which starts with that version).
static char *s_join(const char *base_url, const char *version, const char *path)
{
    size_t base = strlen(base_url);
    while (base && base_url[base - 1] == '/')
        base--;
    size_t version_size = strlen(version);
    if (base >= version_size && strncmp(base_url + base - version_size, version, version_size) == 0)
        base -= version_size;
    //  One allocation of the exact size (asprintf makes two and leaves a
    //  split chunk behind: this runs for every upstream call).
    size_t path_size = strlen(path) + 1;
    char *url = malloc(base + path_size);
    if (!url)
        return NULL;
    memcpy(url, base_url, base);
    memcpy(url + base, path, path_size);
    return url;
}

char *proto_upstream_url(int protocol, proto_endpoint_t endpoint, const char *base_url,
                         const char *upstream_model, bool stream)
{
    if (endpoint == PROTO_ENDPOINT_MODELS)
        return protocol == PROTO_PROTOCOL_ANTHROPIC
                   ? s_join(base_url, "/v1", "/v1/models?limit=1000")
               : protocol == PROTO_PROTOCOL_GEMINI
                   ? s_join(base_url, "/v1beta", "/v1beta/models?pageSize=1000")
               : protocol == PROTO_PROTOCOL_NONE ? NULL
                                                 : s_join(base_url, "/v1", "/v1/models");
    if (endpoint == PROTO_ENDPOINT_COUNT_TOKENS && protocol == PROTO_PROTOCOL_ANTHROPIC)
        return s_join(base_url, "/v1", "/v1/messages/count_tokens");
    if (endpoint == PROTO_ENDPOINT_COUNT_TOKENS && protocol != PROTO_PROTOCOL_GEMINI)
        return NULL;
    switch (protocol) {
    case PROTO_PROTOCOL_OPENAI:
        return s_join(base_url, "/v1", "/v1/chat/completions");
    case PROTO_PROTOCOL_OPENAI_RESPONSES:
        return s_join(base_url, "/v1", "/v1/responses");
    case PROTO_PROTOCOL_OPENAI_EMBEDDINGS:
        return s_join(base_url, "/v1", "/v1/embeddings");
    case PROTO_PROTOCOL_OPENAI_IMAGES:
        return s_join(base_url, "/v1", "/v1/images/generations");
    case PROTO_PROTOCOL_ANTHROPIC:
        return s_join(base_url, "/v1", "/v1/messages");
    case PROTO_PROTOCOL_GEMINI: {
        //  The model goes into the path; keep it to a safe character set.
        for (const char *c = upstream_model; *c; c++)
            if (!(isalnum((unsigned char)*c) || strchr("-._/", *c)))
                return NULL;
        char path[512];
        if (!*upstream_model)
            return NULL;
        snprintf(path, sizeof path, "/v1beta/models/%.400s:%s", upstream_model,
                 endpoint == PROTO_ENDPOINT_COUNT_TOKENS ? "countTokens"
                 : stream                                ? "streamGenerateContent?alt=sse"
                                                         : "generateContent");
        return s_join(base_url, "/v1beta", path);
    }
    default:
        return NULL;
    }
}

//  Appends "name: prefix value". The line is made on the stack when it fits
//  (every upstream call makes one): curl_slist_append copies it anyway.
static struct curl_slist *s_header(struct curl_slist *list, const char *name, const char *prefix,
                                   const char *value)
{
    char small[512];
    size_t size = strlen(name) + 2 + strlen(prefix) + strlen(value) + 1;
    char *line = size <= sizeof small ? small : malloc(size);
    if (!line)
        return list;
    size_t used = 0;
    proto_text_add(line, size, &used, name);
    proto_text_add(line, size, &used, ": ");
    proto_text_add(line, size, &used, prefix);
    proto_text_add(line, size, &used, value);
    struct curl_slist *grown = curl_slist_append(list, line);
    //  The line may hold a secret: wipe our copy (curl keeps its own).
    explicit_bzero(line, size);
    if (line != small)
        free(line);
    return grown ? grown : list;
}

struct curl_slist *proto_upstream_headers(int protocol, const char *secret, bool stream)
{
    struct curl_slist *list = NULL;
    list = curl_slist_append(list, "Content-Type: application/json");
    list =
        curl_slist_append(list, stream ? "Accept: text/event-stream" : "Accept: application/json");
    list = curl_slist_append(list, "Expect:");
    return proto_upstream_auth(list, protocol, secret);
}

struct curl_slist *proto_upstream_auth(struct curl_slist *list, int protocol, const char *secret)
{
    secret = secret ? secret : "";
    switch (protocol) {
    case PROTO_PROTOCOL_ANTHROPIC:
        list = s_header(list, "x-api-key", "", secret);
        return curl_slist_append(list, "anthropic-version: 2023-06-01");
    case PROTO_PROTOCOL_GEMINI:
        return s_header(list, "x-goog-api-key", "", secret);
    default:
        return s_header(list, "Authorization", "Bearer ", secret);
    }
}

static bool s_has(struct curl_slist *list, const char *line)
{
    for (; list; list = list->next)
        if (strcmp(list->data, line) == 0)
            return true;
    return false;
}

void proto_upstream_test(bool verbose)
{
    if (verbose)
        printf(" * proto_upstream: ");
    char *url = proto_upstream_url(PROTO_PROTOCOL_OPENAI, PROTO_ENDPOINT_GENERATE,
                                   "http://127.0.0.1:9/", "m", true);
    PROTO_CHECK(strcmp(url, "http://127.0.0.1:9/v1/chat/completions") == 0);
    free(url);
    url = proto_upstream_url(PROTO_PROTOCOL_OPENAI, PROTO_ENDPOINT_GENERATE,
                             "https://api.openai.com/v1", "m", false);
    PROTO_CHECK(strcmp(url, "https://api.openai.com/v1/chat/completions") == 0);
    free(url);
    url = proto_upstream_url(PROTO_PROTOCOL_OPENAI, PROTO_ENDPOINT_GENERATE,
                             "https://relay.example/openai/v1/", "m", false);
    PROTO_CHECK(strcmp(url, "https://relay.example/openai/v1/chat/completions") == 0);
    free(url);
    url = proto_upstream_url(PROTO_PROTOCOL_ANTHROPIC, PROTO_ENDPOINT_GENERATE,
                             "https://api.anthropic.com", "m", true);
    PROTO_CHECK(strcmp(url, "https://api.anthropic.com/v1/messages") == 0);
    free(url);
    url = proto_upstream_url(PROTO_PROTOCOL_GEMINI, PROTO_ENDPOINT_GENERATE,
                             "https://generativelanguage.googleapis.com/v1beta", "gemini-2.0-flash",
                             true);
    PROTO_CHECK(strcmp(url, "https://generativelanguage.googleapis.com/v1beta/models/"
                            "gemini-2.0-flash:streamGenerateContent?alt=sse") == 0);
    free(url);
    PROTO_CHECK(!proto_upstream_url(PROTO_PROTOCOL_GEMINI, PROTO_ENDPOINT_GENERATE, "http://x",
                                    "a?b", false));
    url = proto_upstream_url(PROTO_PROTOCOL_ANTHROPIC, PROTO_ENDPOINT_COUNT_TOKENS,
                             "https://api.anthropic.com/v1", "m", false);
    PROTO_CHECK(strcmp(url, "https://api.anthropic.com/v1/messages/count_tokens") == 0);
    free(url);
    url = proto_upstream_url(PROTO_PROTOCOL_GEMINI, PROTO_ENDPOINT_COUNT_TOKENS,
                             "http://127.0.0.1:9", "gemini-x", true);
    PROTO_CHECK(strcmp(url, "http://127.0.0.1:9/v1beta/models/gemini-x:countTokens") == 0);
    free(url);
    url = proto_upstream_url(PROTO_PROTOCOL_OPENAI_EMBEDDINGS, PROTO_ENDPOINT_GENERATE,
                             "http://127.0.0.1:9/v1", "e", false);
    PROTO_CHECK(strcmp(url, "http://127.0.0.1:9/v1/embeddings") == 0);
    free(url);
    url = proto_upstream_url(PROTO_PROTOCOL_OPENAI_IMAGES, PROTO_ENDPOINT_GENERATE,
                             "http://127.0.0.1:9/v1", "m", false);
    PROTO_CHECK(strcmp(url, "http://127.0.0.1:9/v1/images/generations") == 0);
    free(url);
    PROTO_CHECK(!proto_upstream_url(PROTO_PROTOCOL_OPENAI, PROTO_ENDPOINT_COUNT_TOKENS, "http://x",
                                    "m", false));
    PROTO_CHECK(
        !proto_upstream_url(PROTO_PROTOCOL_GEMINI, PROTO_ENDPOINT_GENERATE, "http://x", "", false));
    PROTO_CHECK(
        !proto_upstream_url(PROTO_PROTOCOL_NONE, PROTO_ENDPOINT_GENERATE, "http://x", "m", false));

    struct curl_slist *headers = proto_upstream_headers(PROTO_PROTOCOL_OPENAI, "sk-1", true);
    PROTO_CHECK(s_has(headers, "Authorization: Bearer sk-1"));
    PROTO_CHECK(s_has(headers, "Accept: text/event-stream") && s_has(headers, "Expect:"));
    curl_slist_free_all(headers);
    headers = proto_upstream_headers(PROTO_PROTOCOL_ANTHROPIC, "sk-ant", false);
    PROTO_CHECK(s_has(headers, "x-api-key: sk-ant"));
    PROTO_CHECK(s_has(headers, "anthropic-version: 2023-06-01"));
    PROTO_CHECK(!s_has(headers, "Authorization: Bearer sk-ant"));
    curl_slist_free_all(headers);
    headers = proto_upstream_headers(PROTO_PROTOCOL_GEMINI, "g-key", false);
    PROTO_CHECK(s_has(headers, "x-goog-api-key: g-key"));
    curl_slist_free_all(headers);
    //  A header line longer than the stack buffer (a long secret).
    char secret[700], line[800];
    memset(secret, 'k', sizeof secret - 1);
    secret[sizeof secret - 1] = '\0';
    snprintf(line, sizeof line, "Authorization: Bearer %s", secret);
    headers = proto_upstream_headers(PROTO_PROTOCOL_OPENAI, secret, false);
    PROTO_CHECK(s_has(headers, line));
    curl_slist_free_all(headers);
    //  One of exactly the buffer's size (511 characters and the NUL).
    secret[511 - strlen("Authorization: Bearer ")] = '\0';
    snprintf(line, sizeof line, "Authorization: Bearer %s", secret);
    PROTO_CHECK(strlen(line) == 511);
    headers = proto_upstream_headers(PROTO_PROTOCOL_OPENAI, secret, false);
    PROTO_CHECK(s_has(headers, line));
    curl_slist_free_all(headers);
    if (verbose)
        printf("OK\n");
}
