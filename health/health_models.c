#include "health_models.h"
#include "proto_check.h"
#include "proto_upstream.h"
#include "proto_msg.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  The URL and the authentication are dispatch's (proto_upstream): a
//  provider's base_url and its secret mean the same to a probe as to a call.
char *health_models_url(int protocol, const char *base_url)
{
    return proto_upstream_url(protocol, PROTO_ENDPOINT_MODELS, base_url, "", false);
}

struct curl_slist *health_models_headers(int protocol, const char *secret)
{
    struct curl_slist *list = curl_slist_append(NULL, "Accept: application/json");
    return proto_upstream_auth(list, protocol, secret);
}

char *health_models_generate_url(int protocol, const char *base_url, const char *model)
{
    return proto_upstream_url(protocol, PROTO_ENDPOINT_GENERATE, base_url, model, false);
}

struct curl_slist *health_models_generate_headers(int protocol, const char *secret)
{
    return proto_upstream_headers(protocol, secret, false);
}

int health_models_parse(int protocol, const char *body, size_t size, zlistx_t *names)
{
    json_t *root = json_loadb(body, size, 0, NULL);
    bool gemini = protocol == PROTO_PROTOCOL_GEMINI;
    json_t *list = json_object_get(root, gemini ? "models" : "data");
    if (!json_is_array(list)) {
        json_decref(root);
        return -1;
    }
    int count = 0;
    size_t index;
    json_t *item;
    json_array_foreach(list, index, item)
    {
        const char *name = json_string_value(json_object_get(item, gemini ? "name" : "id"));
        if (!name)
            continue;
        if (gemini && strncmp(name, "models/", 7) == 0)
            name += 7;
        size_t length = strlen(name);
        //  Names become SQL rows and model strings: keep printable, bounded ones.
        bool printable = length > 0 && length <= HEALTH_MODEL_NAME_MAX;
        for (size_t i = 0; printable && i < length; i++)
            printable = (unsigned char)name[i] > 0x20 && name[i] != 0x7f;
        if (!printable || count >= HEALTH_MODELS_MAX)
            continue;
        zlistx_add_end(names, strdup(name));
        count++;
    }
    json_decref(root);
    return count;
}

void health_models_test(bool verbose)
{
    if (verbose)
        printf(" * health_models: ");
    char *url = health_models_url(PROTO_PROTOCOL_OPENAI, "https://api.example.com/v1/");
    PROTO_CHECK(strcmp(url, "https://api.example.com/v1/models") == 0);
    free(url);
    url = health_models_url(PROTO_PROTOCOL_ANTHROPIC, "http://127.0.0.1:9");
    PROTO_CHECK(strcmp(url, "http://127.0.0.1:9/v1/models?limit=1000") == 0);
    free(url);
    url = health_models_url(PROTO_PROTOCOL_GEMINI, "https://g.example/v1beta");
    PROTO_CHECK(strcmp(url, "https://g.example/v1beta/models?pageSize=1000") == 0);
    free(url);
    PROTO_CHECK(health_models_url(PROTO_PROTOCOL_NONE, "http://x") == NULL);

    struct curl_slist *headers = health_models_headers(PROTO_PROTOCOL_ANTHROPIC, "sk-1");
    bool key = false, version = false;
    for (struct curl_slist *h = headers; h; h = h->next) {
        key = key || strcmp(h->data, "x-api-key: sk-1") == 0;
        version = version || strncmp(h->data, "anthropic-version:", 18) == 0;
    }
    PROTO_CHECK(key && version);
    curl_slist_free_all(headers);

    zlistx_t *names = zlistx_new();
    zlistx_set_destructor(names, (zlistx_destructor_fn *)zstr_free);
    const char *openai = "{\"object\":\"list\",\"data\":[{\"id\":\"gpt-4o\"},{\"id\":\"o3\"},"
                         "{\"id\":\"\"},{\"id\":\"bad name\"},{\"nope\":1}]}";
    PROTO_CHECK(health_models_parse(PROTO_PROTOCOL_OPENAI, openai, strlen(openai), names) == 2);
    PROTO_CHECK(strcmp(zlistx_first(names), "gpt-4o") == 0);
    zlistx_purge(names);
    const char *gemini = "{\"models\":[{\"name\":\"models/gemini-2.0-flash\"},"
                         "{\"name\":\"tunedModels/x\"}]}";
    PROTO_CHECK(health_models_parse(PROTO_PROTOCOL_GEMINI, gemini, strlen(gemini), names) == 2);
    PROTO_CHECK(strcmp(zlistx_first(names), "gemini-2.0-flash") == 0);
    zlistx_purge(names);
    const char *anthropic = "{\"data\":[{\"type\":\"model\",\"id\":\"claude-3-5-haiku\"}],"
                            "\"has_more\":false}";
    PROTO_CHECK(
        health_models_parse(PROTO_PROTOCOL_ANTHROPIC, anthropic, strlen(anthropic), names) == 1);
    zlistx_purge(names);
    //  Not a list, not JSON, the wrong protocol's shape.
    PROTO_CHECK(health_models_parse(PROTO_PROTOCOL_OPENAI, "{\"error\":{}}", 12, names) == -1);
    PROTO_CHECK(health_models_parse(PROTO_PROTOCOL_OPENAI, "<html>", 6, names) == -1);
    PROTO_CHECK(health_models_parse(PROTO_PROTOCOL_GEMINI, openai, strlen(openai), names) == -1);
    zlistx_destroy(&names);
    if (verbose)
        printf("OK\n");
}
