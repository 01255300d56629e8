#include "dispatch_reach.h"
#include "proto_text.h"
#include "proto_check.h"
#include "proto_upstream.h"
#include "proto_msg.h"
#include "proto_reach.h"

#include <assert.h>
#include <ctype.h>
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct _dispatch_reach_t {
    router_breaker_t *breaker; //  one key-layer entry per (provider, proxy)
    zhashx_t *turns;           //  provider id (text) -> next turn (uint64_t *)
};

//  The breaker's key id of a provider's proxy: the provider id with the
//  proxy's index in the low byte, so proxies of different providers never meet.
static uint64_t s_proxy_id(uint64_t provider_id, int index)
{
    return (provider_id << 8) | (uint64_t)(index & 0xff);
}

static void s_free_turn(void **item)
{
    free(*item);
    *item = NULL;
}

dispatch_reach_t *dispatch_reach_new(const router_breaker_config_t *config)
{
    dispatch_reach_t *self = calloc(1, sizeof *self);
    assert(self);
    self->breaker = router_breaker_new(config);
    self->turns = zhashx_new();
    zhashx_set_destructor(self->turns, s_free_turn);
    return self;
}

void dispatch_reach_destroy(dispatch_reach_t **self_p)
{
    assert(self_p);
    dispatch_reach_t *self = *self_p;
    if (!self)
        return;
    router_breaker_destroy(&self->breaker);
    zhashx_destroy(&self->turns);
    free(self);
    *self_p = NULL;
}

char *dispatch_reach_url(proto_catalog_t *catalog, const proto_provider_t *provider,
                         const char *upstream_model, int endpoint_protocol, int upstream_protocol,
                         bool count_tokens, bool stream)
{
    char *url = NULL;
    int rc = proto_reach_url(catalog, provider, upstream_model, endpoint_protocol,
                             upstream_protocol, count_tokens, stream, &url);
    if (rc != 0)
        return url;
    return proto_upstream_url(endpoint_protocol,
                              count_tokens ? PROTO_ENDPOINT_COUNT_TOKENS : PROTO_ENDPOINT_GENERATE,
                              provider->base_url, upstream_model, stream);
}

struct curl_slist *dispatch_reach_headers(const proto_provider_t *provider, struct curl_slist *list)
{
    for (size_t i = 0; i < provider->headers.count; i++) {
        struct curl_slist *grown = curl_slist_append(list, provider->headers.names[i]);
        if (grown)
            list = grown;
    }
    return list;
}

int dispatch_reach_proxy(dispatch_reach_t *self, const proto_provider_t *provider, uint64_t now_ms)
{
    size_t count = provider->proxies.count;
    if (count > DISPATCH_REACH_PROXIES_MAX)
        count = DISPATCH_REACH_PROXIES_MAX;
    if (!count)
        return -1;
    char name[24];
    proto_text_u64(name, provider->id);
    uint64_t *turn = zhashx_lookup(self->turns, name);
    if (!turn) {
        turn = calloc(1, sizeof *turn);
        assert(turn);
        zhashx_insert(self->turns, name, turn);
    }
    size_t start = (size_t)((*turn)++ % count);
    int fallback = -1;
    uint64_t fallback_until = UINT64_MAX;
    for (size_t i = 0; i < count; i++) {
        int index = (int)((start + i) % count);
        router_breaker_verdict_t verdict = router_breaker_check(
            self->breaker, provider->id, s_proxy_id(provider->id, index), "", now_ms, true);
        if (verdict.state == ROUTER_BREAKER_CLOSED || verdict.trial)
            return index;
        if (verdict.state == ROUTER_BREAKER_OPEN && verdict.until_ms < fallback_until) {
            fallback = index;
            fallback_until = verdict.until_ms;
        }
    }
    //  Every proxy is cooling down: the one that reopens first goes.
    return fallback >= 0 ? fallback : (int)start;
}

bool dispatch_reach_report(dispatch_reach_t *self, uint64_t provider_id, int index,
                           dispatch_fail_t fail, int status, uint64_t now_ms)
{
    if (index < 0)
        return false;
    const char *code = NULL;
    int reported = 200;
    switch (fail) {
    case DISPATCH_FAIL_CONNECT:
        code = "connect_error", reported = 502;
        break;
    case DISPATCH_FAIL_TIMEOUT:
        code = "timeout", reported = 504;
        break;
    case DISPATCH_FAIL_TRANSPORT:
        code = "transport_error", reported = 502;
        break;
    default:
        //  An HTTP answer came through the proxy, whatever it says: the
        //  proxy works.
        if (status <= 0)
            return false;
        break;
    }
    router_breaker_event_t event = router_breaker_record(
        self->breaker, provider_id, s_proxy_id(provider_id, index), "", reported, code, 0, now_ms);
    return event == ROUTER_BREAKER_OPENED;
}

bool dispatch_reach_retry(const proto_provider_t *provider, int index, dispatch_fail_t fail,
                          int *retries)
{
    if (!provider || index < 0 || provider->proxies.count < 2 ||
        (fail != DISPATCH_FAIL_CONNECT && fail != DISPATCH_FAIL_TRANSPORT) ||
        *retries >= (int)provider->proxies.count - 1)
        return false;
    (*retries)++;
    return true;
}

//  --------------------------------------------------------------------------
//  Self test

void dispatch_reach_test(bool verbose)
{
    if (verbose)
        printf(" * dispatch_reach: ");
    char error[256];
    proto_catalog_t *catalog = proto_catalog_from_json(
        "{\"providers\":[{\"id\":1,\"name\":\"relay\",\"protocol\":\"openai\","
        "\"base_url\":\"http://relay.test/\",\"path\":\"/api/chat/completions\","
        "\"headers\":{\"User-Agent\":\"relay-client/1\",\"Referer\":\"https://app.test/\"},"
        "\"proxies\":[\"http://127.0.0.1:1\",\"socks5h://127.0.0.1:2\",\"http://127.0.0.1:3\"]},"
        "{\"id\":2,\"name\":\"gem\",\"protocol\":\"gemini\",\"base_url\":\"http://g.test\","
        "\"path\":\"/x/{model}:{action}\"},"
        "{\"id\":3,\"name\":\"plain\",\"protocol\":\"openai\",\"base_url\":\"http://p.test/v1\"}],"
        "\"model_settings\":[{\"provider_id\":1,\"model\":\"claude-x\",\"protocol\":\"anthropic\","
        "\"path\":\"/anthropic/v1/messages\"}]}",
        error, sizeof error);
    PROTO_CHECK(catalog);
    const proto_provider_t *relay = proto_catalog_provider(catalog, 1);
    const proto_provider_t *gem = proto_catalog_provider(catalog, 2);
    const proto_provider_t *plain = proto_catalog_provider(catalog, 3);

    //  URLs: the provider's path, a model's own, the protocol's elsewhere.
    char *url = dispatch_reach_url(catalog, relay, "gpt-x", PROTO_PROTOCOL_OPENAI,
                                   PROTO_PROTOCOL_OPENAI, false, true);
    PROTO_CHECK(url && strcmp(url, "http://relay.test/api/chat/completions") == 0);
    free(url);
    url = dispatch_reach_url(catalog, relay, "claude-x", PROTO_PROTOCOL_ANTHROPIC,
                             PROTO_PROTOCOL_ANTHROPIC, false, false);
    PROTO_CHECK(url && strcmp(url, "http://relay.test/anthropic/v1/messages") == 0);
    free(url);
    url = dispatch_reach_url(catalog, relay, "emb", PROTO_PROTOCOL_OPENAI_EMBEDDINGS,
                             PROTO_PROTOCOL_OPENAI, false, false);
    PROTO_CHECK(url && strcmp(url, "http://relay.test/v1/embeddings") == 0);
    free(url);
    url = dispatch_reach_url(catalog, gem, "gemini-2", PROTO_PROTOCOL_GEMINI, PROTO_PROTOCOL_GEMINI,
                             false, true);
    PROTO_CHECK(url && strcmp(url, "http://g.test/x/gemini-2:streamGenerateContent?alt=sse") == 0);
    free(url);
    url = dispatch_reach_url(catalog, gem, "a b", PROTO_PROTOCOL_GEMINI, PROTO_PROTOCOL_GEMINI,
                             false, false);
    PROTO_CHECK(!url);
    url = dispatch_reach_url(catalog, plain, "m", PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI,
                             false, false);
    PROTO_CHECK(url && strcmp(url, "http://p.test/v1/chat/completions") == 0);
    free(url);

    //  Headers after the protocol's.
    struct curl_slist *list = dispatch_reach_headers(relay, NULL);
    PROTO_CHECK(list && strcmp(list->data, "User-Agent: relay-client/1") == 0 && list->next &&
                strcmp(list->next->data, "Referer: https://app.test/") == 0);
    curl_slist_free_all(list);
    PROTO_CHECK(!dispatch_reach_headers(plain, NULL));

    //  Proxies in turn; one failing three times in a row is skipped until
    //  its cooldown ends, then gets one trial; an answer closes it.
    router_breaker_config_t config = router_breaker_defaults();
    config.threshold = 3;
    config.cooldown_network_ms = 1000;
    dispatch_reach_t *reach = dispatch_reach_new(&config);
    PROTO_CHECK(dispatch_reach_proxy(reach, plain, 0) == -1);
    int seen[3] = {0};
    for (int i = 0; i < 30; i++)
        seen[dispatch_reach_proxy(reach, relay, 0)]++;
    PROTO_CHECK(seen[0] == 10 && seen[1] == 10 && seen[2] == 10);
    PROTO_CHECK(!dispatch_reach_report(reach, 1, 1, DISPATCH_FAIL_CONNECT, 0, 10));
    PROTO_CHECK(!dispatch_reach_report(reach, 1, 1, DISPATCH_FAIL_TIMEOUT, 0, 11));
    PROTO_CHECK(dispatch_reach_report(reach, 1, 1, DISPATCH_FAIL_CONNECT, 0, 12));
    for (int i = 0; i < 20; i++)
        PROTO_CHECK(dispatch_reach_proxy(reach, relay, 100) != 1);
    //  After the cooldown: one trial, then nobody until it reports.
    int trials = 0;
    for (int i = 0; i < 9; i++)
        trials += dispatch_reach_proxy(reach, relay, 1100) == 1;
    PROTO_CHECK(trials == 1);
    dispatch_reach_report(reach, 1, 1, DISPATCH_FAIL_NONE, 503, 1200);
    trials = 0;
    for (int i = 0; i < 9; i++)
        trials += dispatch_reach_proxy(reach, relay, 1300) == 1;
    PROTO_CHECK(trials == 3);
    //  Every proxy open: the one reopening first still goes.
    for (int index = 0; index < 3; index++)
        for (int i = 0; i < 3; i++)
            dispatch_reach_report(reach, 1, index, DISPATCH_FAIL_CONNECT, 0,
                                  2000 + (uint64_t)index * 100);
    for (int i = 0; i < 5; i++)
        PROTO_CHECK(dispatch_reach_proxy(reach, relay, 2500) == 0);
    dispatch_reach_destroy(&reach);
    //  A dead proxy: the candidate again through each other proxy, once.
    int retries = 0;
    PROTO_CHECK(dispatch_reach_retry(relay, 0, DISPATCH_FAIL_CONNECT, &retries));
    PROTO_CHECK(!dispatch_reach_retry(relay, 0, DISPATCH_FAIL_TIMEOUT, &retries));
    PROTO_CHECK(dispatch_reach_retry(relay, 1, DISPATCH_FAIL_TRANSPORT, &retries));
    PROTO_CHECK(!dispatch_reach_retry(relay, 2, DISPATCH_FAIL_CONNECT, &retries) && retries == 2);
    PROTO_CHECK(!dispatch_reach_retry(plain, -1, DISPATCH_FAIL_CONNECT, &retries));
    proto_catalog_destroy(&catalog);
    if (verbose)
        printf("OK\n");
}
