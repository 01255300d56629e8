#include "proto_observe.h"
#include "proto_text.h"
#include "proto_check.h"
#include "proto_log.h"
#include "proto_loop.h"
#include "proto_trace.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

//  The provider label: its name, else its id.
static void s_provider_label(char *out, size_t size, uint64_t id, const char *name)
{
    if (name && *name)
        proto_metrics_label(out, size, name);
    else {
        size_t used = 0;
        proto_text_add_u64(out, size, &used, id);
    }
}

void proto_observe_attempt(proto_metrics_t *metrics, proto_trace_t *tracer,
                           const proto_observe_attempt_t *attempt)
{
    uint64_t now = proto_loop_wall_us();
    uint64_t started = now - attempt->latency_us;
    proto_span_t span = {.name = "dispatch.attempt",
                         .started_us = started,
                         .duration_us = attempt->latency_us,
                         .status = attempt->status,
                         .attempt = attempt->attempt,
                         .provider_id = attempt->provider_id,
                         .provider_key_id = attempt->provider_key_id,
                         .upstream_model = attempt->upstream_model,
                         .error_code = attempt->error_code,
                         .first_byte_us = attempt->streamed ? attempt->ttfb_us : 0,
                         .hold = true};
    proto_trace_span(tracer, attempt->request_id, attempt->trace, &span);
    if (attempt->ttfb_us) {
        proto_span_t first = {.name = "upstream.first_byte",
                              .started_us = started,
                              .duration_us = attempt->ttfb_us,
                              .attempt = attempt->attempt,
                              .provider_id = attempt->provider_id,
                              .provider_key_id = attempt->provider_key_id,
                              .upstream_model = attempt->upstream_model,
                              .hold = true};
        proto_trace_span(tracer, attempt->request_id, attempt->trace, &first);
    }
    char provider[160], model[160], labels[512];
    s_provider_label(provider, sizeof provider, attempt->provider_id, attempt->provider_name);
    proto_metrics_label(model, sizeof model, attempt->model ? attempt->model : "");
    size_t used = 0;
    proto_text_add(labels, sizeof labels, &used, "provider=\"");
    proto_text_add(labels, sizeof labels, &used, provider);
    proto_text_add(labels, sizeof labels, &used, "\",model=\"");
    proto_text_add(labels, sizeof labels, &used, model);
    proto_text_add(labels, sizeof labels, &used, "\",status=\"");
    proto_text_add_i64(labels, sizeof labels, &used, attempt->status);
    proto_text_add(labels, sizeof labels, &used, "\"");
    proto_metric_add(proto_metrics_counter(metrics, "tollgate_upstream_attempts_total",
                                           "Upstream attempts by provider, model and status.",
                                           labels),
                     1);
    used = 0;
    proto_text_add(labels, sizeof labels, &used, "provider=\"");
    proto_text_add(labels, sizeof labels, &used, provider);
    proto_text_add(labels, sizeof labels, &used, "\"");
    proto_metric_observe(proto_metrics_histogram(metrics, "tollgate_upstream_seconds",
                                                 "Upstream attempt duration by provider.", labels),
                         (double)attempt->latency_us / 1e6);
    if (attempt->ttfb_us)
        proto_metric_observe(
            proto_metrics_histogram(metrics, "tollgate_upstream_ttfb_seconds",
                                    "Upstream time to first byte (first token when streamed).",
                                    labels),
            (double)attempt->ttfb_us / 1e6);
}

void proto_observe_breakers(proto_metrics_t *metrics, json_t *list, proto_catalog_t *catalog)
{
    proto_metrics_zero(metrics, "tollgate_router_breaker_open");
    static const char *states[] = {"open", "half_open", "disabled", "closed"};
    double counts[4] = {0};
    size_t index;
    json_t *item;
    json_array_foreach(list, index, item)
    {
        const char *state = json_string_value(json_object_get(item, "state"));
        const char *layer = json_string_value(json_object_get(item, "layer"));
        if (!state || !layer)
            continue;
        for (int i = 0; i < 4; i++)
            if (strcmp(state, states[i]) == 0)
                counts[i]++;
        if (strcmp(state, "closed") == 0)
            continue; //  closed with failures counted: not worth a series
        uint64_t key_id = (uint64_t)json_integer_value(json_object_get(item, "provider_key_id"));
        uint64_t provider_id = (uint64_t)json_integer_value(json_object_get(item, "provider_id"));
        if (!provider_id && catalog) {
            const proto_provider_key_t *key = proto_catalog_provider_key(catalog, key_id);
            provider_id = key ? key->provider_id : 0;
        }
        const proto_provider_t *provider =
            catalog && provider_id ? proto_catalog_provider(catalog, provider_id) : NULL;
        char name[160], target[160], state_label[32], labels[512];
        s_provider_label(name, sizeof name, provider_id, provider ? provider->name : NULL);
        if (strcmp(layer, "key") == 0)
            snprintf(target, sizeof target, "key %llu", (unsigned long long)key_id);
        else
            proto_metrics_label(target, sizeof target,
                                json_string_value(json_object_get(item, "upstream_model")));
        proto_metrics_label(state_label, sizeof state_label, state);
        snprintf(labels, sizeof labels, "provider=\"%s\",layer=\"%s\",target=\"%s\",state=\"%s\"",
                 name, strcmp(layer, "key") == 0 ? "key" : "model", target, state_label);
        proto_metric_set(proto_metrics_gauge(metrics, "tollgate_router_breaker_open",
                                             "1 for each breaker that is not closed.", labels),
                         1);
    }
    for (int i = 0; i < 3; i++) {
        char labels[32];
        snprintf(labels, sizeof labels, "state=\"%s\"", states[i]);
        proto_metric_set(proto_metrics_gauge(metrics, "tollgate_router_breakers",
                                             "Breakers by state (not closed).", labels),
                         counts[i]);
    }
}

void proto_observe_span_since(proto_trace_t *tracer, const char *request_id, const char *trace,
                              const char *name, uint64_t started_mono_us, int status)
{
    uint64_t took = proto_loop_now_us() - started_mono_us;
    proto_span_t span = {.name = name,
                         .started_us = proto_loop_wall_us() - took,
                         .duration_us = took,
                         .status = status,
                         .hold = true};
    proto_trace_span(tracer, request_id, trace, &span);
}

void proto_observe_span_final(proto_trace_t *tracer, const char *request_id, const char *trace,
                              const char *name, uint64_t started_mono_us,
                              uint64_t first_byte_mono_us, int status, bool keep)
{
    uint64_t took = proto_loop_now_us() - started_mono_us;
    proto_span_t span = {.name = name,
                         .started_us = proto_loop_wall_us() - took,
                         .duration_us = took,
                         .first_byte_us = first_byte_mono_us > started_mono_us
                                              ? first_byte_mono_us - started_mono_us
                                              : 0,
                         .status = status,
                         .keep = keep};
    proto_trace_span(tracer, request_id, trace, &span);
}

void proto_observe_first_byte(proto_metrics_t *metrics, proto_trace_t *tracer,
                              const char *request_id, const char *trace, uint64_t started_mono_us)
{
    //  The registry's index finds it without a search (proto_metrics.c).
    proto_metric_t *ttft = proto_metrics_histogram(metrics, "tollgate_ingress_ttft_seconds",
                                                   "Client-observed time to first byte (first "
                                                   "token when streamed), from the request's "
                                                   "arrival.",
                                                   NULL);
    proto_metric_observe(ttft, (double)(proto_loop_now_us() - started_mono_us) / 1e6);
    proto_observe_span_since(tracer, request_id, trace, "ingress.first_byte", started_mono_us, 0);
}

//  The route span's attributes: up to 8 candidates, then how many there
//  were. Written by hand, not through jansson (json_pack and json_dumps were
//  ~5 % of dispatch's CPU), because the span is held and dropped for nearly
//  every request. Same text as jansson's compact dump (proto_observe test).
#define S_DECISION_SHOWN 8
//  Per candidate: 6 bytes per escaped byte of a 127-byte name, and room.
#define S_DECISION_TEXT (64 + S_DECISION_SHOWN * (96 + 6 * 127))

//  proto_log_json_escape returns what it would have written: a text cut
//  short leaves `used` at its end, never past it.
static size_t s_within(size_t used)
{
    return used < S_DECISION_TEXT ? used : S_DECISION_TEXT - 1;
}

static void s_decision_attributes(const proto_candidate_t *candidates, size_t count,
                                  char text[S_DECISION_TEXT])
{
    size_t used = 0;
    proto_text_add(text, S_DECISION_TEXT, &used, "{\"candidates\":[");
    for (size_t i = 0; i < count && i < S_DECISION_SHOWN; i++) {
        proto_text_add(text, S_DECISION_TEXT, &used,
                       i ? ",{\"provider_id\":" : "{\"provider_id\":");
        proto_text_add_u64(text, S_DECISION_TEXT, &used, candidates[i].provider_id);
        proto_text_add(text, S_DECISION_TEXT, &used, ",\"provider_key_id\":");
        proto_text_add_u64(text, S_DECISION_TEXT, &used, candidates[i].provider_key_id);
        proto_text_add(text, S_DECISION_TEXT, &used, ",\"upstream_model\":\"");
        used = s_within(used + proto_log_json_escape(text + used, S_DECISION_TEXT - used,
                                                     candidates[i].upstream_model));
        proto_text_add(text, S_DECISION_TEXT, &used, "\"}");
    }
    proto_text_add(text, S_DECISION_TEXT, &used, "],\"count\":");
    proto_text_add_u64(text, S_DECISION_TEXT, &used, count);
    proto_text_add(text, S_DECISION_TEXT, &used, "}");
}

void proto_observe_decision(proto_trace_t *tracer, const char *request_id, const char *trace,
                            int status, const proto_candidate_t *candidates, size_t count,
                            uint64_t started_mono_us)
{
    if (!request_id || !*request_id)
        return;
    char text[S_DECISION_TEXT];
    s_decision_attributes(candidates, count, text);
    uint64_t took = proto_loop_now_us() - started_mono_us;
    proto_span_t span = {.name = "dispatch.route",
                         .started_us = proto_loop_wall_us() - took,
                         .duration_us = took,
                         .status = status,
                         .provider_id = count ? candidates[0].provider_id : 0,
                         .provider_key_id = count ? candidates[0].provider_key_id : 0,
                         .upstream_model = count ? candidates[0].upstream_model : NULL,
                         .attributes = text,
                         .hold = true};
    proto_trace_span(tracer, request_id, trace, &span);
}

//  The hand-written attributes mean what jansson would have written: ten
//  candidates (eight shown), names that need escaping, the longest name.
static void s_test_decision_attributes(void)
{
    proto_candidate_t candidates[10];
    memset(candidates, 0, sizeof candidates);
    const char *names[] = {"gpt-4o", "quo\"te\\slash", "tab\tnew\nline\x01\x1f\x7f",
                           "caf\xc3\xa9 \xe2\x82\xac"};
    for (int i = 0; i < 10; i++) {
        candidates[i].provider_id = (uint64_t)i * 1000000007u;
        candidates[i].provider_key_id = (uint64_t)INT64_MAX - (uint64_t)i;
        snprintf(candidates[i].upstream_model, sizeof candidates[i].upstream_model, "%s",
                 names[i % 4]);
    }
    memset(candidates[9].upstream_model, '"', sizeof candidates[9].upstream_model - 1);
    memset(candidates[7].upstream_model, '\x02', sizeof candidates[7].upstream_model - 1);
    for (size_t count = 0; count <= 10; count++) {
        char text[S_DECISION_TEXT];
        s_decision_attributes(candidates, count, text);
        json_t *ours = json_loads(text, 0, NULL);
        json_t *list = json_array();
        for (size_t i = 0; i < count && i < 8; i++)
            json_array_append_new(list, json_pack("{s:I, s:I, s:s}", "provider_id",
                                                  (json_int_t)candidates[i].provider_id,
                                                  "provider_key_id",
                                                  (json_int_t)candidates[i].provider_key_id,
                                                  "upstream_model", candidates[i].upstream_model));
        json_t *theirs = json_pack("{s:o, s:I}", "candidates", list, "count", (json_int_t)count);
        PROTO_CHECK(ours && theirs && json_equal(ours, theirs));
        json_decref(ours);
        json_decref(theirs);
    }
}

void proto_observe_test(bool verbose)
{
    if (verbose)
        printf(" * proto_observe: ");
    s_test_decision_attributes();
    proto_metrics_t *metrics = proto_metrics_new();
    proto_observe_attempt_t attempt = {.request_id = "r1",
                                       .attempt = 1,
                                       .provider_id = 3,
                                       .provider_name = "open\"ai",
                                       .model = "gpt",
                                       .upstream_model = "gpt-x",
                                       .status = 500,
                                       .latency_us = 20000,
                                       .ttfb_us = 5000};
    proto_observe_attempt(metrics, NULL, &attempt);
    json_t *list = json_loads("[{\"layer\":\"model\",\"state\":\"open\",\"provider_id\":3,"
                              "\"upstream_model\":\"gpt-x\"},{\"layer\":\"key\",\"state\":"
                              "\"disabled\",\"provider_key_id\":9}]",
                              0, NULL);
    proto_observe_breakers(metrics, list, NULL);
    char *text = proto_metrics_render(metrics);
    PROTO_CHECK(strstr(text,
                       "tollgate_upstream_attempts_total{provider=\"open\\\"ai\",model=\"gpt\","
                       "status=\"500\"} 1\n"));
    PROTO_CHECK(strstr(text, "tollgate_upstream_ttfb_seconds_count{provider=\"open\\\"ai\"} 1\n"));
    PROTO_CHECK(strstr(text,
                       "tollgate_router_breaker_open{provider=\"3\",layer=\"model\",target=\"gpt-"
                       "x\",state=\"open\"} 1\n"));
    PROTO_CHECK(strstr(text, "tollgate_router_breakers{state=\"disabled\"} 1\n"));
    free(text);
    //  Closed again: the series reads 0.
    json_array_clear(list);
    proto_observe_breakers(metrics, list, NULL);
    text = proto_metrics_render(metrics);
    PROTO_CHECK(strstr(text, "state=\"open\"} 0\n"));
    free(text);
    json_decref(list);
    proto_metrics_destroy(&metrics);

    //  The time to first byte lands in the registry given, also in a new one
    //  that may sit where a freed one was.
    for (int round = 0; round < 2; round++) {
        metrics = proto_metrics_new();
        proto_observe_first_byte(metrics, NULL, "", "", proto_loop_now_us());
        text = proto_metrics_render(metrics);
        PROTO_CHECK(strstr(text, "tollgate_ingress_ttft_seconds_count 1\n"));
        free(text);
        proto_metrics_destroy(&metrics);
    }
    if (verbose)
        printf("OK\n");
}
