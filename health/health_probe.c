#include "health_probe.h"
#include "proto_curl.h"
#include "health_models.h"
#include "proto_log.h"

#include <assert.h>
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#define S_BODY_MAX (4 * 1024 * 1024) //  a model list larger than this is refused

//  One probe, queued or running.
typedef struct {
    health_probe_t *owner;      //  the prober
    uint64_t provider_id;       //  providers.id
    uint64_t provider_key_id;   //  provider_keys.id
    int protocol;               //  proto_protocol_t
    char *url;                  //  models-list or completion URL
    char *model;                //  a completion probe's model, NULL for a list
    char *post;                 //  a completion probe's body
    char **proxies;             //  the provider's proxies, NULL = none
    size_t proxy_count;         //  how many
    size_t proxy_at;            //  the one in use
    int proxy_retries;          //  tries made again through the next one
    char name[200];             //  its entry in `keys`
    char *secret;               //  key secret, scrubbed on free
    CURL *easy;                 //  transfer, NULL while queued
    struct curl_slist *headers; //  request headers (hold the secret)
    char *body;                 //  answer so far
    size_t body_size;           //  bytes in body
    bool too_large;             //  answer over S_BODY_MAX
} s_probe_t;

struct _health_probe_t {
    proto_curl_t *multi; //  libcurl multi on the program's loop
    uint64_t timeout_ms; //  one probe's limit
    size_t concurrency;  //  running at most
    size_t running;      //  running now
    zlistx_t *queue;     //  s_probe_t waiting (not owned: freed by hand)
    zhashx_t *keys;      //  "KEY_ID" -> s_probe_t queued or running
    health_probe_fn *fn; //  result handler
    void *arg;           //  its argument
};

static void s_key_name(char *out, size_t size, uint64_t key_id)
{
    snprintf(out, size, "%llu", (unsigned long long)key_id);
}

static void s_probe_free(s_probe_t **probe_p)
{
    s_probe_t *probe = *probe_p;
    if (!probe)
        return;
    if (probe->easy)
        curl_easy_cleanup(probe->easy);
    curl_slist_free_all(probe->headers);
    if (probe->secret) {
        explicit_bzero(probe->secret, strlen(probe->secret));
        free(probe->secret);
    }
    free(probe->url);
    free(probe->model);
    free(probe->post);
    for (size_t i = 0; i < probe->proxy_count; i++) {
        explicit_bzero(probe->proxies[i], strlen(probe->proxies[i])); //  may hold credentials
        free(probe->proxies[i]);
    }
    free(probe->proxies);
    free(probe->body);
    free(probe);
    *probe_p = NULL;
}

static size_t s_write(char *data, size_t size, size_t count, void *arg)
{
    s_probe_t *probe = arg;
    size_t bytes = size * count;
    if (probe->body_size + bytes > S_BODY_MAX) {
        probe->too_large = true;
        return 0; //  aborts the transfer
    }
    char *grown = realloc(probe->body, probe->body_size + bytes + 1);
    if (!grown)
        return 0;
    probe->body = grown;
    memcpy(probe->body + probe->body_size, data, bytes);
    probe->body_size += bytes;
    probe->body[probe->body_size] = '\0';
    return bytes;
}

static void s_start_next(health_probe_t *self);
static int s_launch(health_probe_t *self, s_probe_t *probe);

//  A connection that failed through a proxy (not a timeout, not an answer
//  we refused) is made again through the next one while some is left.
static bool s_retry(health_probe_t *self, s_probe_t *probe, CURLcode code)
{
    if (code == CURLE_OK || code == CURLE_OPERATION_TIMEDOUT || code == CURLE_FAILED_INIT ||
        probe->too_large || (size_t)probe->proxy_retries + 1 >= probe->proxy_count)
        return false;
    probe->proxy_retries++;
    probe->proxy_at = (probe->proxy_at + 1) % probe->proxy_count;
    curl_easy_cleanup(probe->easy);
    probe->easy = NULL;
    free(probe->body);
    probe->body = NULL;
    probe->body_size = 0;
    if (s_launch(self, probe) != 0)
        return false; //  reported as it failed
    return true;
}

//  A finished transfer: tell the owner, free, start the next.
static void s_finish(health_probe_t *self, s_probe_t *probe, CURLcode code)
{
    if (probe->easy && s_retry(self, probe, code))
        return;
    long status = 0;
    curl_off_t total = 0, first = 0;
    curl_easy_getinfo(probe->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(probe->easy, CURLINFO_TOTAL_TIME_T, &total);
    curl_easy_getinfo(probe->easy, CURLINFO_STARTTRANSFER_TIME_T, &first);
    health_probe_result_t result = {.provider_id = probe->provider_id,
                                    .provider_key_id = probe->provider_key_id,
                                    .protocol = probe->protocol,
                                    .status = code == CURLE_OK ? (int)status : 0,
                                    .latency_us = (uint64_t)total,
                                    .ttfb_us = (uint64_t)first,
                                    .proxy = probe->proxy_count ? (int)probe->proxy_at : -1,
                                    .proxy_retries = probe->proxy_retries};
    result.upstream_model = probe->model;
    zlistx_t *models = NULL;
    if (code != CURLE_OK)
        result.error = probe->too_large                   ? "answer too large"
                       : code == CURLE_OPERATION_TIMEDOUT ? "timeout"
                                                          : curl_easy_strerror(code);
    else if (status >= 200 && status < 300 && !probe->model) {
        models = zlistx_new();
        zlistx_set_destructor(models, (zlistx_destructor_fn *)zstr_free);
        if (health_models_parse(probe->protocol, probe->body ? probe->body : "", probe->body_size,
                                models) < 0) {
            zlistx_destroy(&models);
            result.error = "not a model list";
        }
    }
    result.models = models;
    zhashx_delete(self->keys, probe->name);
    self->running--;
    self->fn(&result, self->arg);
    zlistx_destroy(&models);
    s_probe_free(&probe);
    s_start_next(self);
}

//  proto_curl has taken the transfer out of the multi handle already.
static void s_transfer_done(CURL *easy, CURLcode code, void *arg)
{
    s_probe_t *probe = arg;
    s_finish(probe->owner, probe, code);
}

//  Starts the probe's transfer through its current proxy. Returns 0, or -1
//  when libcurl would not take it (the probe still holds its easy handle).
static int s_launch(health_probe_t *self, s_probe_t *probe)
{
    probe->easy = curl_easy_init();
    if (!probe->model && !probe->headers)
        probe->headers = health_models_headers(probe->protocol, probe->secret);
    CURL *easy = probe->easy;
    const char *proxy = probe->proxy_count ? probe->proxies[probe->proxy_at] : "";
    curl_easy_setopt(easy, CURLOPT_URL, probe->url);
    if (probe->post) {
        curl_easy_setopt(easy, CURLOPT_POST, 1L);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, probe->post);
    }
    curl_easy_setopt(easy, CURLOPT_PROXY, proxy);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, probe->headers);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, s_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, probe);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)self->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "tollgate-health");
    return proto_curl_add(self->multi, easy, s_transfer_done, probe);
}

static void s_start_next(health_probe_t *self)
{
    while (self->running < self->concurrency && zlistx_size(self->queue)) {
        s_probe_t *probe = zlistx_detach(self->queue, NULL);
        self->running++;
        if (s_launch(self, probe) != 0) {
            s_finish(self, probe, CURLE_FAILED_INIT);
            return; //  s_finish started the next one
        }
    }
}

health_probe_t *health_probe_new(proto_loop_t *loop, uint64_t timeout_ms, size_t concurrency,
                                 health_probe_fn *fn, void *arg)
{
    health_probe_t *self = calloc(1, sizeof *self);
    assert(self);
    self->multi = proto_curl_new(loop);
    if (!self->multi) {
        free(self);
        return NULL;
    }
    self->timeout_ms = timeout_ms;
    self->concurrency = concurrency ? concurrency : 1;
    self->fn = fn;
    self->arg = arg;
    self->queue = zlistx_new();
    self->keys = zhashx_new();
    return self;
}

void health_probe_destroy(health_probe_t **self_p)
{
    assert(self_p);
    health_probe_t *self = *self_p;
    if (!self)
        return;
    //  Running probes are in `keys` too; queued ones only in the queue.
    s_probe_t *probe;
    while ((probe = zlistx_detach(self->queue, NULL))) {
        zhashx_delete(self->keys, probe->name);
        s_probe_free(&probe);
    }
    for (probe = zhashx_first(self->keys); probe; probe = zhashx_next(self->keys)) {
        proto_curl_remove(self->multi, probe->easy);
        s_probe_free(&probe);
    }
    zhashx_destroy(&self->keys);
    zlistx_destroy(&self->queue);
    proto_curl_destroy(&self->multi);
    free(self);
    *self_p = NULL;
}

bool health_probe_queue(health_probe_t *self, const health_probe_target_t *target)
{
    char name[200];
    if (target->upstream_model)
        snprintf(name, sizeof name, "%llu:%.150s", (unsigned long long)target->provider_key_id,
                 target->upstream_model);
    else
        s_key_name(name, sizeof name, target->provider_key_id);
    char *url = target->upstream_model ? (target->url ? strdup(target->url) : NULL)
                                       : health_models_url(target->protocol, target->base_url);
    if (zhashx_lookup(self->keys, name) || !url) {
        free(url);
        curl_slist_free_all(target->headers);
        return false;
    }
    s_probe_t *probe = calloc(1, sizeof *probe);
    assert(probe);
    probe->owner = self;
    probe->provider_id = target->provider_id;
    probe->provider_key_id = target->provider_key_id;
    probe->protocol = target->protocol;
    probe->url = url;
    probe->secret = strdup(target->secret ? target->secret : "");
    if (target->proxy_count) {
        probe->proxies = calloc(target->proxy_count, sizeof *probe->proxies);
        assert(probe->proxies);
        for (size_t i = 0; i < target->proxy_count; i++) {
            probe->proxies[i] = strdup(target->proxies[i] ? target->proxies[i] : "");
            assert(probe->proxies[i]);
        }
        probe->proxy_count = target->proxy_count;
        probe->proxy_at = target->proxy_first % target->proxy_count;
    }
    if (target->upstream_model) {
        probe->model = strdup(target->upstream_model);
        probe->post = strdup(target->body ? target->body : "{}");
        probe->headers = target->headers;
    }
    snprintf(probe->name, sizeof probe->name, "%s", name);
    zhashx_insert(self->keys, name, probe);
    zlistx_add_end(self->queue, probe);
    s_start_next(self);
    return true;
}

size_t health_probe_pending(health_probe_t *self)
{
    return zhashx_size(self->keys);
}
