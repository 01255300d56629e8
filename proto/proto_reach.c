#include "proto_reach.h"
#include "proto_check.h"
#include "proto_msg.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  A model name goes into a path only from a safe character set.
static bool s_path_safe(const char *model)
{
    if (!*model)
        return false;
    for (const char *c = model; *c; c++)
        if (!(isalnum((unsigned char)*c) || strchr("-._/:@", *c)))
            return false;
    return true;
}

//  base_url + template, {model} and {action} filled in. NULL when the
//  template needs a model the path cannot carry.
static char *s_expand(const char *base_url, const char *template, const char *model,
                      const char *action, bool gemini_stream)
{
    size_t base = strlen(base_url);
    while (base && base_url[base - 1] == '/')
        base--;
    char path[1200];
    size_t used = 0;
    for (const char *c = template; *c && used < sizeof path - 1;) {
        const char *value = NULL;
        size_t skip = 0;
        if (strncmp(c, "{model}", 7) == 0) {
            if (!s_path_safe(model))
                return NULL;
            value = model, skip = 7;
        } else if (strncmp(c, "{action}", 8) == 0)
            value = action, skip = 8;
        if (value) {
            used += (size_t)snprintf(path + used, sizeof path - used, "%.400s", value);
            if (used >= sizeof path)
                return NULL;
            c += skip;
        } else
            path[used++] = *c++;
    }
    path[used] = '\0';
    char *url = NULL;
    if (asprintf(&url, "%.*s%s%s", (int)base, base_url, path,
                 gemini_stream ? (strchr(path, '?') ? "&alt=sse" : "?alt=sse") : "") < 0)
        return NULL;
    return url;
}

int proto_reach_protocol(proto_catalog_t *catalog, const proto_provider_t *provider,
                         const char *upstream_model)
{
    const proto_model_setting_t *setting =
        catalog ? proto_catalog_model_setting(catalog, provider->id, upstream_model) : NULL;
    return setting && setting->protocol ? setting->protocol : provider->protocol;
}

int proto_reach_url(proto_catalog_t *catalog, const proto_provider_t *provider,
                    const char *upstream_model, int endpoint_protocol, int upstream_protocol,
                    bool count_tokens, bool stream, char **url)
{
    *url = NULL;
    const proto_model_setting_t *setting =
        catalog ? proto_catalog_model_setting(catalog, provider->id, upstream_model) : NULL;
    const char *template = setting && setting->path ? setting->path : provider->path;
    if (!template || count_tokens || endpoint_protocol != upstream_protocol)
        return 0;
    bool gemini = upstream_protocol == PROTO_PROTOCOL_GEMINI;
    *url = s_expand(provider->base_url, template, upstream_model,
                    gemini ? (stream ? "streamGenerateContent" : "generateContent") : "",
                    gemini && stream);
    return *url ? 1 : -1;
}

void proto_reach_test(bool verbose)
{
    (void)verbose;
    char error[256];
    proto_catalog_t *catalog = proto_catalog_from_json(
        "{\"providers\":[{\"id\":1,\"name\":\"relay\",\"protocol\":\"openai\","
        "\"base_url\":\"http://relay.test/\",\"path\":\"/api/chat/completions\"},"
        "{\"id\":2,\"name\":\"gem\",\"protocol\":\"gemini\",\"base_url\":\"http://g.test\","
        "\"path\":\"/x/{model}:{action}\"},{\"id\":3,\"name\":\"plain\"}],"
        "\"model_settings\":[{\"provider_id\":1,\"model\":\"claude-x\",\"protocol\":"
        "\"anthropic\",\"path\":\"/anthropic/v1/messages\"}]}",
        error, sizeof error);
    PROTO_CHECK(catalog);
    const proto_provider_t *relay = proto_catalog_provider(catalog, 1);
    const proto_provider_t *gem = proto_catalog_provider(catalog, 2);
    const proto_provider_t *plain = proto_catalog_provider(catalog, 3);
    char *url = NULL;
    PROTO_CHECK(proto_reach_url(catalog, relay, "m", PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI,
                                false, true, &url) == 1);
    PROTO_CHECK(strcmp(url, "http://relay.test/api/chat/completions") == 0);
    free(url);
    PROTO_CHECK(proto_reach_protocol(catalog, relay, "claude-x") == PROTO_PROTOCOL_ANTHROPIC);
    PROTO_CHECK(proto_reach_protocol(catalog, relay, "m") == PROTO_PROTOCOL_OPENAI);
    PROTO_CHECK(proto_reach_url(catalog, relay, "claude-x", PROTO_PROTOCOL_ANTHROPIC,
                                PROTO_PROTOCOL_ANTHROPIC, false, false, &url) == 1);
    PROTO_CHECK(strcmp(url, "http://relay.test/anthropic/v1/messages") == 0);
    free(url);
    PROTO_CHECK(proto_reach_url(catalog, relay, "e", PROTO_PROTOCOL_OPENAI_EMBEDDINGS,
                                PROTO_PROTOCOL_OPENAI, false, false, &url) == 0 &&
                !url);
    PROTO_CHECK(proto_reach_url(catalog, relay, "m", PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI,
                                true, false, &url) == 0);
    PROTO_CHECK(proto_reach_url(catalog, gem, "gemini-2", PROTO_PROTOCOL_GEMINI,
                                PROTO_PROTOCOL_GEMINI, false, true, &url) == 1);
    PROTO_CHECK(strcmp(url, "http://g.test/x/gemini-2:streamGenerateContent?alt=sse") == 0);
    free(url);
    PROTO_CHECK(proto_reach_url(catalog, gem, "a b", PROTO_PROTOCOL_GEMINI, PROTO_PROTOCOL_GEMINI,
                                false, false, &url) == -1);
    PROTO_CHECK(proto_reach_url(catalog, plain, "m", PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI,
                                false, false, &url) == 0);
    proto_catalog_destroy(&catalog);
}
