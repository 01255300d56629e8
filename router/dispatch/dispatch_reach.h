/*  dispatch_reach: how one attempt reaches its provider, as the operator
    set it (migration 0012, docs/routing.md "Reaching providers as they are").

    - URL: the provider's (or the (provider, model)'s) path template replaces
      the protocol's path for the model call: base_url + path, with {model}
      (the upstream model) and, for Gemini, {action} (generateContent or
      streamGenerateContent) filled in, and alt=sse added to a Gemini
      stream. Other endpoints (embeddings through an OpenAI provider, token
      counts) keep the protocol's paths.
    - Headers: the protocol's, then the provider's extra ones ("User-Agent:
      X" replaces libcurl's; the admin API refuses the names we set).
    - Proxy: the provider's proxies in turn (round robin), each behind a
      breaker with the key layer's treatment (router_breaker: network
      failures `router.breaker_threshold` times in a row open it for
      `router.cooldown_network_ms`, then one half-open trial; any HTTP
      answer through it closes it). When every proxy is open, the one that
      reopens first goes (the last resort, as for candidates). Proxy
      breakers are this dispatch's own: the routers do not merge them.
*/
#ifndef DISPATCH_REACH_H_INCLUDED
#define DISPATCH_REACH_H_INCLUDED

#include "dispatch_policy.h"
#include "proto_catalog.h"
#include "router_breaker.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define DISPATCH_REACH_PROXIES_MAX 16 //  proxies per provider (the admin API's bound)

typedef struct _dispatch_reach_t dispatch_reach_t;

//  Creates the proxy rotation and breakers. Caller owns return value.
dispatch_reach_t *dispatch_reach_new(const router_breaker_config_t *config);

//  Destroys it; nulls the pointer.
void dispatch_reach_destroy(dispatch_reach_t **self_p);

//  The URL of the model call to provider for upstream_model, spoken in
//  endpoint_protocol (the adapter's) where the candidate's protocol is
//  upstream_protocol: the operator's path template when one is set for
//  (provider, model) or the provider and the endpoint is the protocol's
//  own model call, else the protocol's path. NULL when no URL can be made
//  (a model name unsafe in a path). Caller owns return value (free()).
char *dispatch_reach_url(proto_catalog_t *catalog, const proto_provider_t *provider,
                         const char *upstream_model, int endpoint_protocol, int upstream_protocol,
                         bool count_tokens, bool stream);

//  Appends the provider's extra headers to list. Returns the list.
struct curl_slist *dispatch_reach_headers(const proto_provider_t *provider,
                                          struct curl_slist *list);

//  The proxy for the next call to provider: its index into provider->proxies
//  (the URL is provider->proxies.names[index]), or -1 when it has none.
//  Claims a half-open proxy's trial.
int dispatch_reach_proxy(dispatch_reach_t *self, const proto_provider_t *provider, uint64_t now_ms);

//  How a call through proxy `index` of provider ended: a network failure
//  (connect, timeout, transport) counts against the proxy, any HTTP answer
//  closes its breaker. Index -1 (no proxy) is ignored. Returns true when
//  the proxy's breaker opened.
bool dispatch_reach_report(dispatch_reach_t *self, uint64_t provider_id, int index,
                           dispatch_fail_t fail, int status, uint64_t now_ms);

//  True when a failed attempt through proxy `index` of provider should be
//  tried again through another of its proxies: the connection (to or
//  through the proxy) failed, and fewer than count - 1 retries were made
//  for the request (counted in *retries).
bool dispatch_reach_retry(const proto_provider_t *provider, int index, dispatch_fail_t fail,
                          int *retries);

//  Self test.
void dispatch_reach_test(bool verbose);

#endif
