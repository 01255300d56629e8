#include "health_complete.h"
#include "health_models.h"
#include "proto_check.h"
#include "proto_msg.h"
#include "proto_reach.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_PROBE_INPUT_TOKENS 12            //  what a probe's prompt is counted at
#define S_PROBE_OUTPUT_TOKENS 1            //  and its answer
#define S_PROBE_OUTPUT_TOKENS_RESPONSES 16 //  the Responses API's least max_output_tokens

struct _health_complete_t {
    int64_t budget_micros; //  per UTC day, for scheduled probes
    int64_t day;           //  the day counted
    int64_t spent;         //  counted on it
};

health_complete_t *health_complete_new(int64_t budget_micros)
{
    health_complete_t *self = calloc(1, sizeof *self);
    assert(self);
    self->budget_micros = budget_micros;
    return self;
}

void health_complete_destroy(health_complete_t **self_p)
{
    assert(self_p);
    free(*self_p);
    *self_p = NULL;
}

int health_complete_output_tokens(int protocol)
{
    return protocol == PROTO_PROTOCOL_OPENAI_RESPONSES ? S_PROBE_OUTPUT_TOKENS_RESPONSES
                                                       : S_PROBE_OUTPUT_TOKENS;
}

char *health_complete_body(int protocol, const char *model)
{
    json_t *body;
    switch (protocol) {
    case PROTO_PROTOCOL_GEMINI:
        body = json_pack("{s:[{s:s, s:[{s:s}]}], s:{s:i}}", "contents", "role", "user", "parts",
                         "text", "ping", "generationConfig", "maxOutputTokens", 1);
        break;
    case PROTO_PROTOCOL_OPENAI_RESPONSES:
        body = json_pack("{s:s, s:s, s:i, s:b}", "model", model, "input", "ping",
                         "max_output_tokens", health_complete_output_tokens(protocol), "store", 0);
        break;
    default: //  OpenAI Chat and Anthropic Messages read the same shape
        body = json_pack("{s:s, s:i, s:[{s:s, s:s}]}", "model", model, "max_tokens", 1, "messages",
                         "role", "user", "content", "ping");
        break;
    }
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return text;
}

int health_complete_target(proto_catalog_t *catalog, const proto_provider_t *provider,
                           const proto_provider_key_t *key, const char *model, size_t proxy_first,
                           health_probe_target_t *target, char **body)
{
    int protocol = proto_reach_protocol(catalog, provider, model);
    char *url = NULL;
    int rc = proto_reach_url(catalog, provider, model, protocol, protocol, false, false, &url);
    if (rc == 0)
        url = health_models_generate_url(protocol, provider->base_url, model);
    if (!url)
        return -1;
    struct curl_slist *headers =
        health_models_generate_headers(protocol, key->secret ? key->secret : "");
    //  The provider's extra headers after the protocol's, as dispatch sends them.
    for (size_t i = 0; i < provider->headers.count; i++) {
        struct curl_slist *grown = curl_slist_append(headers, provider->headers.names[i]);
        if (grown)
            headers = grown;
    }
    *body = health_complete_body(protocol, model);
    *target = (health_probe_target_t){
        .provider_id = provider->id,
        .provider_key_id = key->id,
        .protocol = protocol,
        .base_url = provider->base_url,
        .secret = key->secret,
        .proxies = (const char *const *)provider->proxies.names,
        .proxy_count = provider->proxies.count,
        .proxy_first = proxy_first,
        .upstream_model = model,
        .url = url,
        .headers = headers,
        .body = *body,
    };
    return 0;
}

int64_t health_complete_cost(const proto_model_t *model, int protocol)
{
    int64_t cost = (model->price_in_micros * S_PROBE_INPUT_TOKENS +
                    model->price_out_micros * health_complete_output_tokens(protocol) + 999999) /
                       1000000 +
                   model->price_request_micros;
    return cost > 1 ? cost : 1;
}

static void s_today(health_complete_t *self, int64_t day)
{
    if (day != self->day) {
        self->day = day;
        self->spent = 0;
    }
}

bool health_complete_fits(health_complete_t *self, int64_t cost, int64_t day, bool forced)
{
    s_today(self, day);
    return forced || self->spent + cost <= self->budget_micros;
}

void health_complete_charge(health_complete_t *self, int64_t cost, int64_t day)
{
    s_today(self, day);
    self->spent += cost;
}

int64_t health_complete_spent(health_complete_t *self, int64_t day)
{
    return day == self->day ? self->spent : 0;
}

void health_complete_test(bool verbose)
{
    (void)verbose;
    char *body = health_complete_body(PROTO_PROTOCOL_ANTHROPIC, "claude-x");
    PROTO_CHECK(strstr(body, "\"max_tokens\":1") && strstr(body, "\"model\":\"claude-x\""));
    free(body);
    body = health_complete_body(PROTO_PROTOCOL_GEMINI, "g");
    PROTO_CHECK(strstr(body, "\"maxOutputTokens\":1") && !strstr(body, "\"model\""));
    free(body);

    char error[256];
    proto_catalog_t *catalog = proto_catalog_from_json(
        "{\"providers\":[{\"id\":1,\"name\":\"relay\",\"protocol\":\"openai\","
        "\"base_url\":\"http://relay.test\",\"path\":\"/api/chat/completions\","
        "\"headers\":{\"User-Agent\":\"probe-test\"}}],"
        "\"provider_keys\":[{\"id\":7,\"provider_id\":1}],"
        "\"models\":[{\"id\":1,\"name\":\"cheap\",\"price_in_micros\":1000000},"
        "{\"id\":2,\"name\":\"dear\",\"price_in_micros\":10000000,\"price_out_micros\":"
        "30000000}],\"routes\":[{\"id\":1,\"model_id\":1,\"provider_id\":1,\"upstream_model\":"
        "\"up\"},{\"id\":2,\"model_id\":2,\"provider_id\":1,\"upstream_model\":\"up\"}],"
        "\"model_settings\":[{\"provider_id\":1,\"model\":\"claude-x\",\"protocol\":"
        "\"anthropic\",\"path\":\"/anthropic/v1/messages\"}]}",
        error, sizeof error);
    PROTO_CHECK(catalog);
    //  12 x 10 + 1 x 30 = 150 for the dear model; 12 x 1 = 12 for the cheap one.
    PROTO_CHECK(health_complete_cost(proto_catalog_model(catalog, 2), PROTO_PROTOCOL_OPENAI) ==
                150);
    PROTO_CHECK(health_complete_cost(proto_catalog_model(catalog, 1), PROTO_PROTOCOL_OPENAI) == 12);
    //  A Responses probe may answer 16 tokens: 12 x 10 + 16 x 30 = 600.
    PROTO_CHECK(health_complete_cost(proto_catalog_model(catalog, 2),
                                     PROTO_PROTOCOL_OPENAI_RESPONSES) == 600);
    body = health_complete_body(PROTO_PROTOCOL_OPENAI_RESPONSES, "r");
    PROTO_CHECK(strstr(body, "\"max_output_tokens\":16"));
    free(body);
    //  The probe goes where a request would: the provider's path, a model's own protocol.
    const proto_provider_t *provider = proto_catalog_provider(catalog, 1);
    const proto_provider_key_t *key = proto_catalog_provider_key(catalog, 7);
    health_probe_target_t target;
    PROTO_CHECK(health_complete_target(catalog, provider, key, "claude-x", 0, &target, &body) == 0);
    PROTO_CHECK(strcmp(target.url, "http://relay.test/anthropic/v1/messages") == 0);
    PROTO_CHECK(target.protocol == PROTO_PROTOCOL_ANTHROPIC);
    bool user_agent = false;
    for (struct curl_slist *line = target.headers; line; line = line->next)
        user_agent = user_agent || strcmp(line->data, "User-Agent: probe-test") == 0;
    PROTO_CHECK(user_agent);
    curl_slist_free_all(target.headers);
    free((char *)target.url);
    free(body);
    proto_catalog_destroy(&catalog);

    //  The budget: scheduled probes stop at it, forced ones are counted; a new day starts over.
    health_complete_t *budget = health_complete_new(300);
    PROTO_CHECK(health_complete_fits(budget, 150, 100, false));
    health_complete_charge(budget, 150, 100);
    //  What fits is counted only when charged (a probe the queue refused is not).
    PROTO_CHECK(health_complete_fits(budget, 150, 100, false));
    PROTO_CHECK(health_complete_spent(budget, 100) == 150);
    health_complete_charge(budget, 150, 100);
    PROTO_CHECK(!health_complete_fits(budget, 1, 100, false));
    PROTO_CHECK(health_complete_fits(budget, 50, 100, true));
    health_complete_charge(budget, 50, 100);
    PROTO_CHECK(health_complete_spent(budget, 100) == 350);
    PROTO_CHECK(health_complete_fits(budget, 150, 101, false));
    PROTO_CHECK(health_complete_spent(budget, 101) == 0);
    health_complete_destroy(&budget);
}
