//  router_select's selftest, apart from router_select.c to keep that file
//  under the size limit (tests/tree/size_check.sh). It uses only the public
//  interface: every check is a decision on an injected catalog.
#include "router_select.h"
#include "proto_check.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  --------------------------------------------------------------------------
//  Self test: distributions over many decisions on a catalog fixture.

//  Three providers: p1 (priority 10) with keys 11 (prio 1, weight 1) and 12
//  (prio 1, weight 3); p2 with key 21 (prio 5, multiplier 0.5); p3 with key
//  31 (multiplier 0.5, capability context-1m). Model "m" goes everywhere.
//  The decisions' working space, lent as the servers lend theirs (a decision
//  without one allocates ~200 KiB; thousands of them took minutes under
//  ASan). Test-only state: set and cleared by router_select_test.
static router_scratch_t *s_scratch;

static const char *s_fixture =
    "{\"providers\":["
    "{\"id\":1,\"name\":\"p1\",\"priority\":10},"
    "{\"id\":2,\"name\":\"p2\"},"
    "{\"id\":3,\"name\":\"p3\",\"protocol\":\"anthropic\"},"
    "{\"id\":4,\"name\":\"off\",\"status\":\"disabled\"}],"
    "\"provider_keys\":["
    "{\"id\":11,\"provider_id\":1,\"priority\":1,\"weight\":1,\"name\":\"k11\"},"
    "{\"id\":12,\"provider_id\":1,\"priority\":1,\"weight\":3,\"name\":\"k12\"},"
    "{\"id\":21,\"provider_id\":2,\"priority\":5,\"multiplier_ppm\":500000},"
    "{\"id\":31,\"provider_id\":3,\"multiplier_ppm\":500000,\"capabilities\":[\"context-1m\"]},"
    "{\"id\":41,\"provider_id\":4},"
    "{\"id\":13,\"provider_id\":1,\"status\":\"disabled\",\"disabled_reason\":\"upstream 401\"}],"
    "\"models\":[{\"id\":1,\"name\":\"m\"},{\"id\":2,\"name\":\"gone\",\"status\":\"disabled\"}],"
    "\"routes\":["
    "{\"id\":1,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"m-up\"},"
    "{\"id\":2,\"model_id\":1,\"provider_id\":2,\"upstream_model\":\"m-up\"},"
    "{\"id\":3,\"model_id\":1,\"provider_id\":3,\"upstream_model\":\"m-anth\"},"
    "{\"id\":4,\"model_id\":1,\"provider_id\":4,\"upstream_model\":\"m-up\"}],"
    "\"provider_models\":[{\"provider_id\":2,\"name\":\"raw-model\"},"
    "{\"provider_id\":3,\"name\":\"raw-model\"}]}";

typedef struct {
    proto_catalog_t *catalog;
    proto_map_t *map;
    router_breaker_t *breaker;
    router_sticky_t *sticky;
    router_stats_t *stats;
    router_limit_t *limit;
    router_rng_t rng;
    router_context_t context;
} s_bench_t;

//  Builds a catalog with every model's scheduling set to `mode`.
static void s_bench_init(s_bench_t *bench, const char *mode)
{
    memset(bench, 0, sizeof *bench);
    char *text = NULL;
    const char *at = strstr(s_fixture, "{\"id\":1,\"name\":\"m\"}");
    assert(at);
    assert(asprintf(&text, "%.*s{\"id\":1,\"name\":\"m\",\"scheduling\":\"%s\"}%s",
                    (int)(at - s_fixture), s_fixture, mode,
                    at + strlen("{\"id\":1,\"name\":\"m\"}")) > 0);
    char error[256];
    bench->catalog = proto_catalog_from_json(text, error, sizeof error);
    free(text);
    assert(bench->catalog);
    bench->map = proto_map_build(bench->catalog, true);
    router_breaker_config_t config = router_breaker_defaults();
    config.threshold = 1;
    bench->breaker = router_breaker_new(&config);
    bench->sticky = router_sticky_new(60000, 60000, 1000);
    bench->stats = router_stats_new();
    bench->limit = router_limit_new(1);
    router_rng_seed(&bench->rng, 12345);
    bench->context = (router_context_t){.catalog = bench->catalog,
                                        .map = bench->map,
                                        .breaker = bench->breaker,
                                        .sticky = bench->sticky,
                                        .stats = bench->stats,
                                        .limit = bench->limit,
                                        .rng = &bench->rng,
                                        //  Lent, as the servers lend theirs: 20,000
                                        //  decisions each allocating ~200 KiB took
                                        //  seconds of brk and page faults (60 s
                                        //  under ASan).
                                        .scratch = router_scratch_new()};
}

static void s_bench_destroy(s_bench_t *bench)
{
    proto_map_destroy(&bench->map);
    proto_catalog_destroy(&bench->catalog);
    router_breaker_destroy(&bench->breaker);
    router_sticky_destroy(&bench->sticky);
    router_stats_destroy(&bench->stats);
    router_limit_destroy(&bench->limit);
    router_scratch_destroy(&bench->context.scratch);
}

//  Runs `rounds` decisions; counts[key id % 64] += 1 for each first candidate.
static void s_run(s_bench_t *bench, const char *model, int rounds, int counts[64])
{
    memset(counts, 0, 64 * sizeof *counts);
    for (int i = 0; i < rounds; i++) {
        router_request_t request = {.model = model, .now_ms = 1000};
        router_decision_t decision;
        router_select_decide(&bench->context, &request, &decision, NULL);
        assert(decision.status == 200 && decision.count > 0);
        counts[decision.candidates[0].provider_key_id % 64]++;
    }
}

//  True when observed/rounds is within tolerance of expected share.
static bool s_near(int observed, int rounds, double expected, double tolerance)
{
    double share = (double)observed / rounds;
    return share > expected - tolerance && share < expected + tolerance;
}

//  Each scheduling mode's order and shares.
static void s_test_modes(router_request_t *request)
{
    const int rounds = 20000;
    const double tolerance = 0.02; //  20000 draws: 2 points is > 4 standard deviations
    int counts[64];
    s_bench_t bench;
    router_decision_t decision;
    //  priority: p1 first; within it k12 (weight 3) leads 3:1 over k11.
    s_bench_init(&bench, "priority");
    s_run(&bench, "m", rounds, counts);
    PROTO_CHECK(counts[11] + counts[12] == rounds);
    PROTO_CHECK(s_near(counts[12], rounds, 0.75, tolerance));
    router_select_decide(&bench.context, request, &decision, NULL);
    PROTO_CHECK(decision.count == 4 && decision.mode == ROUTER_MODE_PRIORITY);
    PROTO_CHECK(decision.candidates[2].provider_key_id == 21 &&
                decision.candidates[3].provider_key_id == 31);
    PROTO_CHECK(decision.candidates[3].upstream_protocol == PROTO_PROTOCOL_ANTHROPIC &&
                strcmp(decision.candidates[3].upstream_model, "m-anth") == 0);
    s_bench_destroy(&bench);

    //  key_priority: k21 (priority 5) beats p1's provider priority.
    s_bench_init(&bench, "key_priority");
    s_run(&bench, "m", 1000, counts);
    PROTO_CHECK(counts[21] == 1000);
    s_bench_destroy(&bench);

    //  weighted, in two stages: p1, p2, p3 (weight 1 each) a third each,
    //  however many keys p1 has; within p1, k11:k12 by 1:3.
    s_bench_init(&bench, "weighted");
    s_run(&bench, "m", rounds, counts);
    PROTO_CHECK(s_near(counts[11], rounds, 1.0 / 12, tolerance));
    PROTO_CHECK(s_near(counts[12], rounds, 3.0 / 12, tolerance));
    PROTO_CHECK(s_near(counts[21], rounds, 1.0 / 3, tolerance));
    PROTO_CHECK(s_near(counts[31], rounds, 1.0 / 3, tolerance));
    //  The providers take turns: p1's second key comes after the others.
    router_select_decide(&bench.context, request, &decision, NULL);
    PROTO_CHECK(decision.count == 4);
    for (size_t i = 0; i + 1 < 3; i++)
        PROTO_CHECK(decision.candidates[i].provider_id != decision.candidates[i + 1].provider_id);
    PROTO_CHECK(decision.candidates[3].provider_id == 1);
    s_bench_destroy(&bench);

    //  cost: k21 and k31 (half price) tie and split evenly.
    s_bench_init(&bench, "cost");
    s_run(&bench, "m", rounds, counts);
    PROTO_CHECK(counts[21] + counts[31] == rounds);
    PROTO_CHECK(s_near(counts[21], rounds, 0.5, tolerance));
    s_bench_destroy(&bench);

    //  latency: fastest wins; two within 10% share evenly; unknowns count
    //  as the mean (here slower than the two fast ones).
    s_bench_init(&bench, "latency");
    router_stat_t stat = {.state = 1, .success_ppm = 1000000, .updated_ms = 1000};
    stat.ttfb_us = 100000;
    router_stats_update(bench.stats, 2, 21, "m-up", &stat);
    stat.ttfb_us = 102000;
    router_stats_update(bench.stats, 3, 31, "", &stat);
    stat.ttfb_us = 900000;
    router_stats_update(bench.stats, 1, 12, "m-up", &stat);
    s_run(&bench, "m", rounds, counts);
    PROTO_CHECK(counts[21] + counts[31] == rounds);
    PROTO_CHECK(s_near(counts[21], rounds, 0.5, tolerance));
    s_bench_destroy(&bench);

    //  reliability: 99% beats 80%; unknowns count as the mean.
    s_bench_init(&bench, "reliability");
    stat.success_ppm = 990000;
    router_stats_update(bench.stats, 1, 11, "m-up", &stat);
    stat.success_ppm = 800000;
    router_stats_update(bench.stats, 1, 12, "m-up", &stat);
    router_stats_update(bench.stats, 2, 21, "m-up", &stat);
    router_stats_update(bench.stats, 3, 31, "m-anth", &stat);
    s_run(&bench, "m", 1000, counts);
    PROTO_CHECK(counts[11] == 1000);
    s_bench_destroy(&bench);
}

//  Exclusions with their explanation, capabilities, the last resort and half-open trials.
static void s_test_exclusions(router_request_t *request)
{
    s_bench_t bench;
    router_decision_t decision;
    //  Exclusions, with explain.
    s_bench_init(&bench, "priority");
    router_breaker_record(bench.breaker, 1, 12, "m-up", 401, NULL, 0, 1000);
    router_breaker_record(bench.breaker, 2, 21, "m-up", 500, NULL, 0, 1000);
    request->capabilities = "";
    json_t *explain = json_object();
    request->dry_run = true;
    router_select_decide(&bench.context, request, &decision, explain);
    PROTO_CHECK(decision.status == 200 && decision.count == 2);
    PROTO_CHECK(decision.candidates[0].provider_key_id == 11 &&
                decision.candidates[1].provider_key_id == 31);
    json_t *excluded = json_object_get(explain, "excluded");
    int whys[4] = {0}; //  disabled, breaker, capability, other
    for (size_t i = 0; i < json_array_size(excluded); i++) {
        const char *why = json_string_value(json_object_get(json_array_get(excluded, i), "why"));
        whys[strcmp(why, "disabled") == 0 ? 0 : strcmp(why, "breaker") == 0 ? 1 : 3]++;
    }
    PROTO_CHECK(whys[0] == 2 && whys[1] == 2 && whys[3] == 0); //  k13, k41; k12, k21
    json_t *first = json_array_get(json_object_get(explain, "candidates"), 0);
    PROTO_CHECK(json_integer_value(json_object_get(first, "rank")) == 1);
    PROTO_CHECK(json_object_get(json_object_get(first, "score"), "route_priority"));
    json_decref(explain);
    //  Capability: only k31 has context-1m.
    request->capabilities = "context-1m";
    router_select_decide(&bench.context, request, &decision, NULL);
    PROTO_CHECK(decision.count == 1 && decision.candidates[0].provider_key_id == 31);
    //  Nobody declares "vision": nothing is known about it, so it does not
    //  exclude anyone; context-1m still does.
    request->capabilities = "context-1m, vision";
    router_select_decide(&bench.context, request, &decision, NULL);
    PROTO_CHECK(decision.count == 1 && decision.candidates[0].provider_key_id == 31);
    request->capabilities = "vision";
    router_select_decide(&bench.context, request, &decision, NULL);
    PROTO_CHECK(decision.status == 200 && decision.count > 1);
    request->capabilities = NULL;

    //  Last resort: every enabled candidate open -> the best of them alone.
    router_breaker_record(bench.breaker, 1, 11, "m-up", 502, "timeout", 0, 1000);
    router_breaker_record(bench.breaker, 3, 31, "m-anth", 503, NULL, 0, 1000);
    explain = json_object();
    router_select_decide(&bench.context, request, &decision, explain);
    PROTO_CHECK(decision.status == 200 && decision.last_resort && decision.count == 1);
    PROTO_CHECK(decision.candidates[0].provider_key_id == 11); //  p1's priority makes it best
    PROTO_CHECK(json_is_true(json_object_get(explain, "last_resort")));
    json_decref(explain);
    //  Its success closes its breaker: back to normal.
    router_breaker_record(bench.breaker, 1, 11, "m-up", 200, NULL, 0, 1001);
    router_select_decide(&bench.context, request, &decision, NULL);
    PROTO_CHECK(!decision.last_resort && decision.candidates[0].provider_key_id == 11);
    //  A disabled key is never the last resort.
    router_breaker_record(bench.breaker, 1, 11, "m-up", 403, NULL, 0, 1002);
    router_breaker_record(bench.breaker, 3, 31, "m-anth", 503, NULL, 0, 1002);
    router_select_decide(&bench.context, request, &decision, NULL);
    PROTO_CHECK(decision.last_resort && decision.candidates[0].provider_key_id != 11);
    s_bench_destroy(&bench);

    //  Half-open: the first decision after the cooldown carries the trial,
    //  the next ones do not, until the trial reports.
    s_bench_init(&bench, "priority");
    router_breaker_record(bench.breaker, 1, 11, "m-up", 500, NULL, 0, 1000);
    router_breaker_record(bench.breaker, 1, 12, "m-up", 500, NULL, 0, 1000);
    request->now_ms = 1000 + 5000;
    request->dry_run = false;
    router_select_decide(&bench.context, request, &decision, NULL);
    PROTO_CHECK(decision.candidates[0].provider_id == 1); //  the trial
    router_select_decide(&bench.context, request, &decision, NULL);
    PROTO_CHECK(decision.candidates[0].provider_id == 2);
    router_breaker_record(bench.breaker, 1, 11, "m-up", 200, NULL, 0, request->now_ms);
    router_select_decide(&bench.context, request, &decision, NULL);
    PROTO_CHECK(decision.candidates[0].provider_id == 1);
    s_bench_destroy(&bench);
}

//  Sticky sessions: the same choice everywhere, moved by a break, spread and scoped by account.
static void s_test_sessions(router_request_t *request)
{
    s_bench_t bench;
    router_decision_t decision;
    //  Stickiness: a session's first choice is the same on every decision
    //  and on every instance (another generator, as another dispatch has),
    //  moves when its candidate breaks, and comes back when it heals.
    s_bench_init(&bench, "weighted");
    *request =
        (router_request_t){.model = "m", .account_id = 9, .session = "conv-1", .now_ms = 1000};
    router_select_decide(&bench.context, request, &decision, NULL);
    proto_candidate_t bound = decision.candidates[0];
    for (int i = 0; i < 200; i++) {
        router_rng_seed(bench.context.rng, (uint64_t)i + 1);
        router_select_decide(&bench.context, request, &decision, NULL);
        PROTO_CHECK(decision.sticky &&
                    decision.candidates[0].provider_key_id == bound.provider_key_id);
    }
    router_breaker_record(bench.breaker, bound.provider_id, bound.provider_key_id,
                          bound.upstream_model, 401, NULL, 0, 1000);
    router_select_decide(&bench.context, request, &decision, NULL);
    PROTO_CHECK(decision.candidates[0].provider_key_id != bound.provider_key_id);
    proto_candidate_t second = decision.candidates[0];
    router_select_decide(&bench.context, request, &decision, NULL);
    PROTO_CHECK(decision.candidates[0].provider_key_id == second.provider_key_id);
    router_breaker_enable_key(bench.breaker, bound.provider_key_id);
    router_select_decide(&bench.context, request, &decision, NULL);
    PROTO_CHECK(decision.candidates[0].provider_key_id == bound.provider_key_id);
    //  Sessions spread over the candidates, and the account scopes them: the
    //  same session strings under another account are placed independently.
    size_t firsts[2][8] = {{0}}, same = 0;
    for (int i = 0; i < 400; i++) {
        char session[32];
        snprintf(session, sizeof session, "s-%d", i);
        uint64_t placed[2];
        for (int account = 0; account < 2; account++) {
            *request = (router_request_t){
                .model = "m", .account_id = (uint64_t)account + 1, .session = session, .now_ms = 1};
            router_select_decide(&bench.context, request, &decision, NULL);
            placed[account] = decision.candidates[0].provider_key_id;
            firsts[account][placed[account] % 8]++;
        }
        same += placed[0] == placed[1];
    }
    size_t used = 0;
    for (int k = 0; k < 8; k++)
        used += firsts[0][k] > 0;
    PROTO_CHECK(used >= 2 && same < 400);
    s_bench_destroy(&bench);
}

//  An account's own provider (bring your own key): its requests only; for the
//  other accounts it declares no capability and serves no model.
static void s_test_owner(router_request_t *request, router_rng_t *rng)
{
    router_decision_t decision;
    char error[256];
    const char *owned =
        "{\"providers\":[{\"id\":1,\"name\":\"mine\",\"account_id\":9},{\"id\":2,\"name\":"
        "\"shared\"}],\"provider_keys\":[{\"id\":1,\"provider_id\":1,\"capabilities\":[\"vision\"]}"
        ","
        "{\"id\":2,\"provider_id\":2}],\"models\":[{\"id\":1,\"name\":\"m\"},{\"id\":2,\"name\":"
        "\"solo\"}],\"routes\":[{\"id\":1,\"model_id\":1,\"provider_id\":1,\"upstream_model\":"
        "\"u\","
        "\"priority\":5},{\"id\":2,\"model_id\":1,\"provider_id\":2,\"upstream_model\":\"u\"},"
        "{\"id\":3,\"model_id\":2,\"provider_id\":1,\"upstream_model\":\"u\"}]}";
    proto_catalog_t *catalog = proto_catalog_from_json(owned, error, sizeof error);
    PROTO_CHECK(catalog);
    proto_map_t *map = proto_map_build(catalog, false);
    router_context_t context = {.catalog = catalog, .map = map, .rng = rng, .scratch = s_scratch};
    *request = (router_request_t){.model = "m", .account_id = 9, .now_ms = 5000, .dry_run = true};
    router_select_decide(&context, request, &decision, NULL);
    PROTO_CHECK(decision.count == 2 && decision.candidates[0].provider_id == 1);
    //  Its own key declares vision: for its account only that key has it.
    request->capabilities = "vision";
    router_select_decide(&context, request, &decision, NULL);
    PROTO_CHECK(decision.count == 1 && decision.candidates[0].provider_id == 1);
    //  Account 8 cannot use that key, so for it nobody declares vision and
    //  the shared provider serves it (it was answered 503).
    request->account_id = 8;
    router_select_decide(&context, request, &decision, NULL);
    PROTO_CHECK(decision.status == 200 && decision.count == 1 &&
                decision.candidates[0].provider_id == 2);
    request->capabilities = NULL;
    router_select_decide(&context, request, &decision, NULL);
    PROTO_CHECK(decision.count == 1 && decision.candidates[0].provider_id == 2);
    //  A model (or a pin) only another account's provider serves does not
    //  exist for account 8: 404, not 503.
    const char *names[] = {"mine/u", "solo"};
    for (size_t i = 0; i < 2; i++) {
        request->model = names[i];
        json_t *explain = json_object();
        router_select_decide(&context, request, &decision, explain);
        PROTO_CHECK(decision.status == 404 && strcmp(decision.error_code, "model_not_found") == 0);
        PROTO_CHECK(json_integer_value(json_object_get(explain, "status")) == 404);
        json_decref(explain);
    }
    request->account_id = 9;
    router_select_decide(&context, request, &decision, NULL);
    PROTO_CHECK(decision.status == 200 && decision.candidates[0].provider_id == 1);
    proto_map_destroy(&map);
    proto_catalog_destroy(&catalog);
}

//  How often `provider_id` leads in `rounds` decisions for model "m".
static int s_leads(router_context_t *context, uint64_t provider_id, int rounds)
{
    int leads = 0;
    for (int i = 0; i < rounds; i++) {
        router_request_t request = {.model = "m", .now_ms = 5000, .dry_run = true};
        router_decision_t decision;
        router_select_decide(context, &request, &decision, NULL);
        PROTO_CHECK(decision.status == 200 && decision.count > 0);
        leads += decision.candidates[0].provider_id == provider_id;
    }
    return leads;
}

//  A provider's stage-1 share counts only its routes eligible in the tier
//  being drawn, and holds with any number of providers.
static void s_test_provider_shares(router_rng_t *rng)
{
    const int rounds = 20000;
    char error[256];
    //  "a" has a route of weight 9 in a lower tier (priority) or blocked
    //  (weighted): against "b" it still leads 1:1, not 5:1.
    const char *shapes[] = {
        "{\"providers\":[{\"id\":1,\"name\":\"a\"},{\"id\":2,\"name\":\"b\"}],"
        "\"provider_keys\":[{\"id\":1,\"provider_id\":1},{\"id\":2,\"provider_id\":2}],"
        "\"models\":[{\"id\":1,\"name\":\"m\"}],\"routes\":["
        "{\"id\":1,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"a1\",\"priority\":1},"
        "{\"id\":2,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"a0\",\"weight\":9},"
        "{\"id\":3,\"model_id\":1,\"provider_id\":2,\"upstream_model\":\"b1\",\"priority\":1}]}",
        "{\"providers\":[{\"id\":1,\"name\":\"a\",\"blocked_models\":[\"*-preview\"]},"
        "{\"id\":2,\"name\":\"b\"}],\"provider_keys\":[{\"id\":1,\"provider_id\":1},"
        "{\"id\":2,\"provider_id\":2}],\"models\":[{\"id\":1,\"name\":\"m\",\"scheduling\":"
        "\"weighted\"}],\"routes\":["
        "{\"id\":1,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"a\"},"
        "{\"id\":2,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"a-preview\",\"weight\":9},"
        "{\"id\":3,\"model_id\":1,\"provider_id\":2,\"upstream_model\":\"b\"}]}"};
    for (size_t i = 0; i < 2; i++) {
        proto_catalog_t *catalog = proto_catalog_from_json(shapes[i], error, sizeof error);
        PROTO_CHECK(catalog);
        proto_map_t *map = proto_map_build(catalog, false);
        router_context_t context = {
            .catalog = catalog, .map = map, .rng = rng, .scratch = s_scratch};
        PROTO_CHECK(s_near(s_leads(&context, 1, rounds), rounds, 0.5, 0.02));
        proto_map_destroy(&map);
        proto_catalog_destroy(&catalog);
    }
    //  66 providers of weight 1; the last has ten keys and still leads 1/66
    //  (the providers past the 64th drew once per key: about 10/75).
    size_t size = 64 * 1024, used = 0;
    char *text = malloc(size);
    PROTO_CHECK(text);
    used += (size_t)snprintf(text + used, size - used, "{\"providers\":[");
    for (int p = 1; p <= 66; p++)
        used += (size_t)snprintf(text + used, size - used, "%s{\"id\":%d,\"name\":\"p%d\"}",
                                 p > 1 ? "," : "", p, p);
    used += (size_t)snprintf(text + used, size - used, "],\"provider_keys\":[");
    for (int k = 1; k <= 75; k++)
        used += (size_t)snprintf(text + used, size - used, "%s{\"id\":%d,\"provider_id\":%d}",
                                 k > 1 ? "," : "", k, k < 66 ? k : 66);
    used += (size_t)snprintf(text + used, size - used,
                             "],\"models\":[{\"id\":1,\"name\":\"m\",\"scheduling\":"
                             "\"weighted\"}],\"routes\":[");
    for (int p = 1; p <= 66; p++)
        used += (size_t)snprintf(text + used, size - used,
                                 "%s{\"id\":%d,\"model_id\":1,\"provider_id\":%d,"
                                 "\"upstream_model\":\"u\"}",
                                 p > 1 ? "," : "", p, p);
    snprintf(text + used, size - used, "]}");
    PROTO_CHECK(used < size - 8);
    proto_catalog_t *catalog = proto_catalog_from_json(text, error, sizeof error);
    free(text);
    PROTO_CHECK(catalog);
    proto_map_t *map = proto_map_build(catalog, false);
    router_context_t context = {.catalog = catalog, .map = map, .rng = rng, .scratch = s_scratch};
    PROTO_CHECK(s_near(s_leads(&context, 66, rounds), rounds, 1.0 / 66, 0.01));
    proto_map_destroy(&map);
    proto_catalog_destroy(&catalog);
}

//  A provider's block list and own protocols, and the two stages of ties (provider, then
//  its routes). rng continues the test's sequence.
static void s_test_reach_stages(router_request_t *request, router_rng_t *rng)
{
    const int rounds = 20000;
    const double tolerance = 0.02;
    router_decision_t decision;
    char error[256];
    proto_catalog_t *catalog;
    proto_map_t *map;
    router_context_t context;
    //  A provider's block list excludes its models wherever they came from
    //  (route, rule or list), and a (provider, model) may speak its own protocol.
    const char *reach =
        "{\"providers\":[{\"id\":1,\"name\":\"relay\",\"blocked_models\":[\"*-preview\"]},"
        "{\"id\":2,\"name\":\"other\"}],\"provider_keys\":[{\"id\":1,\"provider_id\":1},"
        "{\"id\":2,\"provider_id\":2}],\"models\":[{\"id\":1,\"name\":\"m\"}],"
        "\"routes\":[{\"id\":1,\"model_id\":1,\"provider_id\":1,\"upstream_model\":"
        "\"m-Preview\"},{\"id\":2,\"model_id\":1,\"provider_id\":2,\"upstream_model\":"
        "\"m-preview\"},{\"id\":3,\"model_id\":1,\"provider_id\":1,\"upstream_model\":"
        "\"claude\"}],\"model_settings\":[{\"provider_id\":1,\"model\":\"claude\","
        "\"protocol\":\"anthropic\"}]}";
    catalog = proto_catalog_from_json(reach, error, sizeof error);
    PROTO_CHECK(catalog);
    map = proto_map_build(catalog, false);
    context = (router_context_t){.catalog = catalog, .map = map, .rng = rng};
    *request = (router_request_t){.model = "m", .now_ms = 5000, .dry_run = true};
    json_t *explained = json_object();
    router_select_decide(&context, request, &decision, explained);
    PROTO_CHECK(decision.status == 200 && decision.count == 2);
    for (size_t i = 0; i < decision.count; i++) {
        const proto_candidate_t *candidate = &decision.candidates[i];
        PROTO_CHECK(
            !(candidate->provider_id == 1 && strcmp(candidate->upstream_model, "m-Preview") == 0));
        if (candidate->provider_id == 1)
            PROTO_CHECK(candidate->upstream_protocol == PROTO_PROTOCOL_ANTHROPIC);
        else
            PROTO_CHECK(candidate->upstream_protocol == PROTO_PROTOCOL_OPENAI);
    }
    json_t *out = json_array_get(json_object_get(explained, "excluded"), 0);
    PROTO_CHECK(out && strcmp(json_string_value(json_object_get(out, "why")), "blocked") == 0);
    json_decref(explained);
    proto_map_destroy(&map);
    proto_catalog_destroy(&catalog);
    //  Two stages: "many" serves the model under five upstream names, "one"
    //  under one; provider weight 3 x mean route weight 1.6 against 1 x 1
    //  leads 4.8 : 1, not 24 : 1 as one stage over every candidate would.
    const char *stages =
        "{\"providers\":[{\"id\":1,\"name\":\"many\",\"weight\":3},{\"id\":2,\"name\":\"one\"}],"
        "\"provider_keys\":[{\"id\":1,\"provider_id\":1},{\"id\":2,\"provider_id\":2}],"
        "\"models\":[{\"id\":1,\"name\":\"m\",\"scheduling\":\"weighted\"}],\"routes\":["
        "{\"id\":1,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"a\"},"
        "{\"id\":2,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"b\"},"
        "{\"id\":3,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"c\"},"
        "{\"id\":4,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"d\"},"
        "{\"id\":5,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"e\",\"weight\":4},"
        "{\"id\":6,\"model_id\":1,\"provider_id\":2,\"upstream_model\":\"a\"}]}";
    catalog = proto_catalog_from_json(stages, error, sizeof error);
    PROTO_CHECK(catalog);
    map = proto_map_build(catalog, false);
    context = (router_context_t){.catalog = catalog, .map = map, .rng = rng};
    int leads[3] = {0}, e_leads = 0;
    for (int i = 0; i < rounds; i++) {
        *request = (router_request_t){.model = "m", .now_ms = 5000};
        router_select_decide(&context, request, &decision, NULL);
        PROTO_CHECK(decision.status == 200 && decision.count == 6);
        leads[decision.candidates[0].provider_id]++;
        e_leads += decision.candidates[0].provider_id == 1 &&
                   strcmp(decision.candidates[0].upstream_model, "e") == 0;
        //  Turns: the other provider second.
        PROTO_CHECK(decision.candidates[1].provider_id != decision.candidates[0].provider_id);
    }
    PROTO_CHECK(s_near(leads[1], rounds, 4.8 / 5.8, tolerance));
    //  Within "many", e (route weight 4) leads 4 of 8.
    PROTO_CHECK(s_near(e_leads, rounds, 4.8 / 5.8 * 0.5, tolerance));
    proto_map_destroy(&map);
    proto_catalog_destroy(&catalog);
}

//  Weights and multipliers at the edge of what the database holds: no mode
//  overflows (run under -DTOLLGATE_SANITIZE=ON, UBSan aborts on signed
//  overflow), and weights beyond S_WEIGHT_MAX count as S_WEIGHT_MAX.
static void s_test_extremes(router_request_t *request, router_rng_t *rng)
{
    char error[256];
    for (int mode = ROUTER_MODE_PRIORITY; mode <= ROUTER_MODE_BALANCED; mode++) {
        char *text = NULL;
        PROTO_CHECK(
            asprintf(
                &text,
                "{\"providers\":[{\"id\":1,\"name\":\"big\",\"weight\":2147483647"
                ",\"priority\":-2147483647},{\"id\":2,\"name\":\"huge\",\"weight\":2147483647"
                "}],\"provider_keys\":[{\"id\":1,\"provider_id\":1,\"weight\":2147483647"
                ",\"priority\":2147483647,\"multiplier_ppm\":9223372036854775807},{\"id\":2,"
                "\"provider_id\":2,\"weight\":2147483647,\"multiplier_ppm\":-2147483647000000000"
                "}],\"models\":[{\"id\":1,\"name\":\"m\",\"scheduling\":\"%s\"}],\"routes\":["
                "{\"id\":1,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"u\","
                "\"weight\":2147483647,\"priority\":2147483647"
                "},{\"id\":2,\"model_id\":1,\"provider_id\":2,"
                "\"upstream_model\":\"u\",\"weight\":2147483647,\"priority\":2147483647}]}",
                router_mode_name((router_mode_t)mode)) > 0);
        proto_catalog_t *catalog = proto_catalog_from_json(text, error, sizeof error);
        free(text);
        PROTO_CHECK(catalog);
        proto_map_t *map = proto_map_build(catalog, false);
        router_context_t context = {
            .catalog = catalog, .map = map, .rng = rng, .scratch = s_scratch};
        int leads[3] = {0};
        for (int i = 0; i < 2000; i++) {
            *request = (router_request_t){.model = "m", .now_ms = 5000, .dry_run = true};
            json_t *explain = json_object(), *score;
            router_decision_t decision;
            router_select_decide(&context, request, &decision, i == 0 ? explain : NULL);
            PROTO_CHECK(decision.status == 200 && decision.count == 2);
            leads[decision.candidates[0].provider_id]++;
            score =
                json_object_get(json_array_get(json_object_get(explain, "candidates"), 0), "score");
            if (i == 0 && mode != ROUTER_MODE_KEY_PRIORITY && json_object_get(score, "weight"))
                PROTO_CHECK(json_integer_value(json_object_get(score, "weight")) ==
                            INT64_C(1000000000000000000));
            json_decref(explain);
        }
        //  Equal (clamped) weights: both providers lead in the weighted modes.
        if (mode == ROUTER_MODE_WEIGHTED)
            PROTO_CHECK(leads[1] > 800 && leads[2] > 800);
        proto_map_destroy(&map);
        proto_catalog_destroy(&catalog);
    }
}

void router_select_test(bool verbose)
{
    if (verbose)
        printf(" * router_select: ");
    s_scratch = router_scratch_new();
    const int rounds = 20000;
    const double tolerance = 0.02; //  20000 draws: 2 points is > 4 standard deviations
    s_bench_t bench;
    router_decision_t decision;
    router_request_t request = {.model = "m", .now_ms = 1000};

    s_test_modes(&request);

    s_test_exclusions(&request);

    s_test_sessions(&request);

    //  Per-key preference among one provider's models.
    const char *two_models =
        "{\"providers\":[{\"id\":1,\"name\":\"p\"}],\"provider_keys\":[{\"id\":1,"
        "\"provider_id\":1}],\"models\":[{\"id\":1,\"name\":\"m\"}],\"routes\":["
        "{\"id\":1,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"a\",\"priority\":1},"
        "{\"id\":2,\"model_id\":1,\"provider_id\":1,\"upstream_model\":\"b\"}]}";
    char error[256];
    proto_catalog_t *catalog = proto_catalog_from_json(two_models, error, sizeof error);
    proto_map_t *map = proto_map_build(catalog, false);
    router_sticky_t *sticky = router_sticky_new(60000, 60000, 100);
    router_rng_t rng;
    router_rng_seed(&rng, 7);
    router_context_t context = {
        .catalog = catalog, .map = map, .sticky = sticky, .rng = &rng, .scratch = s_scratch};
    request = (router_request_t){.model = "m", .key_id = 5, .now_ms = 1};
    router_select_decide(&context, &request, &decision, NULL);
    PROTO_CHECK(strcmp(decision.candidates[0].upstream_model, "a") == 0);
    router_sticky_prefer(sticky, 5, 1, "b", 1);
    router_select_decide(&context, &request, &decision, NULL);
    PROTO_CHECK(strcmp(decision.candidates[0].upstream_model, "b") == 0 && decision.count == 2);
    request.key_id = 6;
    router_select_decide(&context, &request, &decision, NULL);
    PROTO_CHECK(strcmp(decision.candidates[0].upstream_model, "a") == 0);
    router_sticky_destroy(&sticky);
    proto_map_destroy(&map);
    proto_catalog_destroy(&catalog);

    //  Names: unknown, disabled, pinned, zero-config listing, limits.
    s_bench_init(&bench, "priority");
    request = (router_request_t){.model = "nope", .now_ms = 1000};
    router_select_decide(&bench.context, &request, &decision, NULL);
    PROTO_CHECK(decision.status == 404 && strcmp(decision.error_code, "model_not_found") == 0);
    request.model = "gone";
    router_select_decide(&bench.context, &request, &decision, NULL);
    PROTO_CHECK(decision.status == 404);
    request.model = "p3/m";
    router_select_decide(&bench.context, &request, &decision, NULL);
    PROTO_CHECK(decision.status == 200 && decision.count == 1 &&
                decision.candidates[0].provider_id == 3);
    request.model = "p2/raw-model";
    router_select_decide(&bench.context, &request, &decision, NULL);
    PROTO_CHECK(decision.count == 1 && decision.candidates[0].provider_id == 2 &&
                strcmp(decision.candidates[0].upstream_model, "raw-model") == 0);
    request.model = "p1/raw-model"; //  p1 does not list it
    router_select_decide(&bench.context, &request, &decision, NULL);
    PROTO_CHECK(decision.status == 404);
    request.model = "raw-model";
    router_select_decide(&bench.context, &request, &decision, NULL);
    PROTO_CHECK(decision.status == 200 && decision.count == 2);
    s_bench_destroy(&bench);

    const char *limited =
        "{\"providers\":[{\"id\":1,\"name\":\"p\"}],\"provider_keys\":[{\"id\":1,"
        "\"provider_id\":1,\"max_rps\":2,\"max_concurrent\":10}],\"models\":[{\"id\":1,"
        "\"name\":\"m\"}],\"routes\":[{\"id\":1,\"model_id\":1,\"provider_id\":1,"
        "\"upstream_model\":\"a\"}]}";
    catalog = proto_catalog_from_json(limited, error, sizeof error);
    map = proto_map_build(catalog, false);
    router_limit_t *limit = router_limit_new(1);
    context = (router_context_t){.catalog = catalog, .map = map, .limit = limit, .rng = &rng};
    request = (router_request_t){.model = "m", .request_id = "r1", .now_ms = 5000};
    router_select_decide(&context, &request, &decision, NULL);
    request.request_id = "r2";
    router_select_decide(&context, &request, &decision, NULL);
    PROTO_CHECK(decision.status == 200);
    request.request_id = "r3";
    router_select_decide(&context, &request, &decision, NULL);
    PROTO_CHECK(decision.status == 429 && decision.retry_after_ms > 0);
    PROTO_CHECK(strcmp(decision.error_code, "provider_limit") == 0);
    router_limit_destroy(&limit);
    proto_map_destroy(&map);
    proto_catalog_destroy(&catalog);

    s_test_reach_stages(&request, &rng);

    s_test_owner(&request, &rng);

    s_test_provider_shares(&rng);

    s_test_extremes(&request, &rng);

    //  balanced: one score of weight, latency, reliability and price; the
    //  fast, reliable, cheap key wins over the slow one, explain shows the parts.
    const char *balanced =
        "{\"providers\":[{\"id\":1,\"name\":\"fast\"},{\"id\":2,\"name\":\"slow\"}],"
        "\"provider_keys\":[{\"id\":1,\"provider_id\":1,\"multiplier_ppm\":500000},"
        "{\"id\":2,\"provider_id\":2}],\"models\":[{\"id\":1,\"name\":\"m\","
        "\"scheduling\":\"balanced\"}],\"routes\":[{\"id\":1,\"model_id\":1,\"provider_id\":1,"
        "\"upstream_model\":\"u\"},{\"id\":2,\"model_id\":1,\"provider_id\":2,"
        "\"upstream_model\":\"u\"}]}";
    catalog = proto_catalog_from_json(balanced, error, sizeof error);
    PROTO_CHECK(catalog);
    map = proto_map_build(catalog, false);
    router_stats_t *stats = router_stats_new();
    router_stat_t fast = {
        .state = 1, .success_ppm = 1000000, .ttfb_us = 200000, .updated_ms = 5000};
    router_stat_t slow = {.state = 1, .success_ppm = 900000, .ttfb_us = 800000, .updated_ms = 5000};
    router_stats_update(stats, 1, 1, "u", &fast);
    router_stats_update(stats, 2, 2, "u", &slow);
    context = (router_context_t){.catalog = catalog, .map = map, .stats = stats, .rng = &rng};
    request = (router_request_t){.model = "m", .now_ms = 5000, .dry_run = true};
    json_t *explained = json_object();
    router_select_decide(&context, &request, &decision, explained);
    PROTO_CHECK(decision.status == 200 && decision.mode == ROUTER_MODE_BALANCED);
    PROTO_CHECK(decision.candidates[0].provider_key_id == 1);
    json_t *leader = json_array_get(json_object_get(explained, "candidates"), 0);
    json_t *trailer = json_array_get(json_object_get(explained, "candidates"), 1);
    json_t *score = json_object_get(leader, "score");
    PROTO_CHECK(json_real_value(json_object_get(score, "score")) > 0.99);
    json_t *parts = json_object_get(json_object_get(trailer, "score"), "parts");
    //  slow: weight 1, latency 200/800, reliability 0.9, price (0.51)/(1.01).
    PROTO_CHECK(fabs(json_real_value(json_object_get(json_object_get(parts, "latency"), "value")) -
                     0.25) < 1e-3);
    PROTO_CHECK(
        fabs(json_real_value(json_object_get(json_object_get(parts, "reliability"), "value")) -
             0.9) < 1e-3);
    double expected = 0.25 * 1 + 0.30 * 0.25 + 0.30 * 0.9 + 0.15 * (510000.0 / 1010000.0);
    PROTO_CHECK(fabs(json_real_value(json_object_get(json_object_get(trailer, "score"), "score")) -
                     expected) < 1e-3);
    json_decref(explained);
    router_stats_destroy(&stats);
    proto_map_destroy(&map);
    proto_catalog_destroy(&catalog);
    router_scratch_destroy(&s_scratch);
    if (verbose)
        printf("OK (%d decisions per distribution, tolerance %.0f%%)\n", rounds, tolerance * 100);
}
