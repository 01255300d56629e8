/*  health_probe: active probes of provider keys, run by libcurl's multi
    interface on the program's own loop (no threads).

    A probe asks the key's provider for its model list (health_models): the
    cheapest call every protocol has, which proves the base URL answers and
    the key is accepted, and brings back the list the mapping rules resolve
    against. A completion probe (upstream_model set) sends a 1-token
    generation to one model instead, as the caller made it (URL, headers,
    body): it proves that (key, model) pair serves. At most `concurrency` probes run at once; the
   rest queue. A key already queued or running is not queued twice. A
   provider's proxies are taken from the caller's turn, each once while the
   connection through the last one failed.
*/
#ifndef HEALTH_PROBE_H_INCLUDED
#define HEALTH_PROBE_H_INCLUDED

#include "proto_loop.h"

#include <czmq.h>
#include <curl/curl.h>
#include <stdbool.h>
#include <stdint.h>

//  What to probe. Strings are copied.
typedef struct {
    uint64_t provider_id;     //  providers.id
    uint64_t provider_key_id; //  provider_keys.id
    int protocol;             //  proto_protocol_t
    const char *base_url;     //  provider base URL
    const char *secret;       //  opened key secret
    //  The provider's proxies (none: a direct call), tried from proxy_first
    //  on: a connection that fails through one (not a timeout) is made
    //  again at once through the next, each once, as dispatch does.
    const char *const *proxies; //  proxy URLs
    size_t proxy_count;         //  how many
    size_t proxy_first;         //  the one to try first (the provider's turn)
    //  A completion probe: all four set (headers taken, even when refused).
    const char *upstream_model; //  the model; NULL: a model-list probe
    const char *url;            //  where the completion goes
    struct curl_slist *headers; //  its headers, authentication included
    const char *body;           //  its JSON body
} health_probe_target_t;

//  How a probe went. Everything is borrowed for the callback's duration.
typedef struct {
    uint64_t provider_id;       //  providers.id
    uint64_t provider_key_id;   //  provider_keys.id
    int protocol;               //  proto_protocol_t
    int status;                 //  HTTP status, 0 when no answer came
    const char *error;          //  why it failed ("timeout", curl's text), NULL when it answered
    uint64_t latency_us;        //  whole call
    uint64_t ttfb_us;           //  to the first byte of the answer
    int proxy;                  //  index of the proxy that carried the last try, -1 = none
    int proxy_retries;          //  tries made again through another proxy
    zlistx_t *models;           //  model names on a 2xx list answer, else NULL
    const char *upstream_model; //  a completion probe's model, NULL for a list
} health_probe_result_t;

typedef void(health_probe_fn)(const health_probe_result_t *result, void *arg);

typedef struct _health_probe_t health_probe_t;

//  Creates a prober. Caller owns return value; NULL when libcurl fails.
health_probe_t *health_probe_new(proto_loop_t *loop, uint64_t timeout_ms, size_t concurrency,
                                 health_probe_fn *fn, void *arg);

//  Aborts running probes (no callbacks) and destroys; nulls the pointer.
void health_probe_destroy(health_probe_t **self_p);

//  Queues a probe. Returns false when that key (for a completion: that key
//  and model) is already queued or running, or the protocol has no model list.
bool health_probe_queue(health_probe_t *self, const health_probe_target_t *target);

//  Probes queued or running.
size_t health_probe_pending(health_probe_t *self);

#endif
