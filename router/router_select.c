#include "router_select.h"
#include "proto_check.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_OPTIONS_MAX 512 //  (pair, key) combinations considered per decision
#define S_CAPS_MAX 16     //  required capabilities per request

//  Weights count as 0..S_WEIGHT_MAX (the admin API refuses more), so route x provider x key
//  is below 10^18 whatever the database holds; multipliers are clamped so prices cannot overflow.
#define S_WEIGHT_MAX 1000000
#define S_MULTIPLIER_MAX (INT64_C(1) << 50)

static int64_t s_weight(int weight)
{
    return weight < 0 ? 0 : weight > S_WEIGHT_MAX ? S_WEIGHT_MAX : weight;
}

static int64_t s_multiplier(int64_t ppm)
{
    return ppm < 0 ? 0 : ppm > S_MULTIPLIER_MAX ? S_MULTIPLIER_MAX : ppm;
}

void router_rng_seed(router_rng_t *rng, uint64_t seed)
{
    rng->state = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

uint64_t router_rng_next(router_rng_t *rng)
{
    uint64_t x = rng->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng->state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static const char *s_mode_names[] = {"priority", "key_priority", "weighted", "latency",
                                     "cost",     "reliability",  "balanced"};

router_mode_t router_mode_parse(const char *name)
{
    for (size_t i = 0; name && i < sizeof s_mode_names / sizeof s_mode_names[0]; i++)
        if (strcmp(name, s_mode_names[i]) == 0)
            return (router_mode_t)i;
    return ROUTER_MODE_PRIORITY;
}

const char *router_mode_name(router_mode_t mode)
{
    return (size_t)mode < sizeof s_mode_names / sizeof s_mode_names[0] ? s_mode_names[mode] : "?";
}

//  One (pair, key) candidate while deciding.
typedef struct {
    proto_candidate_t candidate;      //  what goes on the wire
    const proto_map_pair_t *pair;     //  where the pair came from
    const proto_provider_t *provider; //  its provider
    const proto_provider_key_t *key;  //  its key
    int64_t tier[3];                  //  ordering keys, higher first
    double provider_weight;           //  its provider's share within equal tiers (stage 1)
    int64_t weight;                   //  its share within its provider (stage 2)
    uint64_t provider_draw;           //  stage 1: its provider's place within equal tiers
    uint64_t draw;                    //  stage 2: its place among its provider's
    double parts[5];                  //  balanced: weight, latency, reliability, price, score
    router_breaker_verdict_t breaker; //  breaker verdict
    bool have_stat;                   //  stat is known
    router_stat_t stat;               //  health, when known
    const char *why;                  //  exclusion class, NULL when eligible
    char detail[160];                 //  exclusion detail for explain
} s_option_t;

static int s_compare(const void *a, const void *b)
{
    const s_option_t *left = a, *right = b;
    for (int i = 0; i < 3; i++)
        if (left->tier[i] != right->tier[i])
            return left->tier[i] > right->tier[i] ? -1 : 1;
    if (left->provider_draw != right->provider_draw)
        return left->provider_draw > right->provider_draw ? -1 : 1;
    if (left->candidate.provider_id != right->candidate.provider_id)
        return left->candidate.provider_id < right->candidate.provider_id ? -1 : 1;
    if (left->draw != right->draw)
        return left->draw > right->draw ? -1 : 1;
    return 0;
}

//  Weighted random order by exponential keys (Efraimidis-Spirakis): each
//  option draws u^(1/weight) and the largest comes first, so an option's
//  chance of leading equals its share of the total weight.
static uint64_t s_draw(router_rng_t *rng, double weight)
{
    if (weight <= 0)
        return 0; //  weight 0: only when nothing else is left
    double u = ((double)(router_rng_next(rng) >> 11) + 1.0) / 9007199254740993.0;
    double key = pow(u, 1.0 / weight);
    return (uint64_t)(key * 18446744073709549568.0);
}

//  The same order, drawn from a hash instead of the generator: for a
//  session, every dispatch instance draws the same number for the same
//  (account, session, candidate), so a conversation stays on one candidate
//  with no shared state, candidates within a tier are still chosen in
//  proportion to their weights across sessions (rendezvous hashing with
//  Efraimidis-Spirakis keys), and when the leader drops out the session
//  moves to its own next choice, not everyone's.
static uint64_t s_hash(uint64_t hash, const void *data, size_t size)
{
    const unsigned char *bytes = data;
    for (size_t i = 0; i < size; i++)
        hash = (hash ^ bytes[i]) * 1099511628211ULL; //  FNV-1a
    return hash;
}

static uint64_t s_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t s_session_seed(uint64_t account_id, const char *session)
{
    if (!session || !*session)
        return 0;
    uint64_t hash = s_hash(1469598103934665603ULL, &account_id, sizeof account_id);
    hash = s_hash(hash, session, strlen(session));
    return hash ? hash : 1;
}

static uint64_t s_rendezvous(uint64_t seed, const proto_candidate_t *candidate, double weight)
{
    if (weight <= 0)
        return 0;
    uint64_t hash = s_hash(seed, &candidate->provider_key_id, sizeof candidate->provider_key_id);
    hash = s_mix(s_hash(hash, candidate->upstream_model, strlen(candidate->upstream_model)));
    double u = ((double)(hash >> 11) + 1.0) / 9007199254740993.0;
    return (uint64_t)(pow(u, 1.0 / weight) * 18446744073709549568.0);
}

//  Log buckets of about 10%: latencies within a bucket count as equal.
static int64_t s_latency_bucket(uint64_t us)
{
    return (int64_t)floor(log((double)us / 1000.0 + 1.0) / log(1.1));
}

//  Splits "a, b,c" into trimmed tags.
static size_t s_split_caps(const char *text, char caps[][64], size_t max)
{
    size_t count = 0;
    while (text && *text && count < max) {
        while (*text == ' ' || *text == ',')
            text++;
        size_t length = strcspn(text, ",");
        size_t trimmed = length;
        while (trimmed && text[trimmed - 1] == ' ')
            trimmed--;
        if (trimmed) {
            snprintf(caps[count], 64, "%.*s", (int)(trimmed < 63 ? trimmed : 63), text);
            count++;
        }
        text += length;
    }
    return count;
}

//  Resolution of the requested name.
typedef struct {
    const proto_model_t *model;                     //  logical model, or NULL
    const proto_provider_t *pinned;                 //  "provider/..." pin, or NULL
    const proto_map_pair_t *pairs;                  //  pairs to expand
    size_t count;                                   //  how many
    proto_map_pair_t own[PROTO_MSG_CANDIDATES_MAX]; //  storage for pinned / listed pairs
    const char *how;                                //  "model", "pinned", "zero_config"
} s_resolved_t;

//  True when the account's requests may go to the provider: it is the
//  operator's, or the account's own (bring your own key).
static bool s_visible(const proto_provider_t *provider, uint64_t account_id)
{
    return provider && (!provider->account_id || provider->account_id == account_id);
}

//  A capability counts only where someone declared it: when neither the
//  model nor any key that could serve it carries the tag, nothing is known
//  about it, and refusing every candidate would break plain set-ups (a tool
//  call to providers nobody tagged). Once any candidate or the model
//  declares it, only those that have it are eligible. "Could serve it" means
//  for this request: another account's provider, or one that blocks the
//  model, never serves it and declares nothing here (a key that is down for
//  now still does: its capability is known, it is only unavailable). Keeps
//  the tracked ones at the front and returns how many.
static size_t s_tracked_caps(proto_catalog_t *catalog, const s_resolved_t *resolved,
                             uint64_t account_id, char caps[][64], size_t count)
{
    size_t kept = 0;
    size_t key_count = proto_catalog_provider_key_count(catalog);
    for (size_t c = 0; c < count; c++) {
        bool declared = resolved->model && proto_tags_has(&resolved->model->capabilities, caps[c]);
        for (size_t p = 0; p < resolved->count && !declared; p++) {
            const proto_map_pair_t *pair = &resolved->pairs[p];
            const proto_provider_t *provider = proto_catalog_provider(catalog, pair->provider_id);
            if (!s_visible(provider, account_id) ||
                proto_provider_blocks(provider, pair->upstream_model))
                continue;
            for (size_t k = 0; k < key_count && !declared; k++) {
                const proto_provider_key_t *key = proto_catalog_provider_key_at(catalog, k);
                declared = key->provider_id == pair->provider_id &&
                           proto_tags_has(&key->capabilities, caps[c]);
            }
        }
        if (declared) {
            if (kept != c)
                memcpy(caps[kept], caps[c], sizeof caps[c]);
            kept++;
        }
    }
    return kept;
}

//  Returns 0, or 404 when the name resolves to nothing at all.
static int s_resolve(const router_context_t *context, const char *name, s_resolved_t *out)
{
    proto_catalog_t *catalog = context->catalog;
    //  Not memset: own[] is 11 KiB and only its first `count` entries are
    //  read, each written whole before.
    out->model = NULL;
    out->pinned = NULL;
    out->pairs = NULL;
    out->count = 0;
    out->how = NULL;
    out->model = proto_catalog_model_by_name(catalog, name);
    if (out->model) {
        out->how = "model";
        out->pairs = proto_map_pairs(context->map, out->model->id, &out->count);
        return out->model->active ? 0 : 404;
    }
    const char *slash = strchr(name, '/');
    if (slash && slash > name && (size_t)(slash - name) < 128) {
        char provider_name[128];
        snprintf(provider_name, sizeof provider_name, "%.*s", (int)(slash - name), name);
        out->pinned = proto_catalog_provider_by_name(catalog, provider_name);
    }
    if (out->pinned) {
        const char *rest = slash + 1;
        out->how = "pinned";
        const proto_model_t *model = proto_catalog_model_by_name(catalog, rest);
        if (model) {
            out->model = model;
            if (!model->active)
                return 404;
            size_t count;
            const proto_map_pair_t *pairs = proto_map_pairs(context->map, model->id, &count);
            for (size_t i = 0; i < count && out->count < PROTO_MSG_CANDIDATES_MAX; i++)
                if (pairs[i].provider_id == out->pinned->id)
                    out->own[out->count++] = pairs[i];
        } else if (proto_map_zero_config(context->map) && *rest && strlen(rest) < 128 &&
                   proto_map_lists(context->map, out->pinned->id, rest)) {
            proto_map_pair_t *pair = &out->own[out->count++];
            memset(pair, 0, sizeof *pair);
            pair->provider_id = out->pinned->id;
            pair->weight = 1;
            pair->source = ROUTER_SOURCE_ZERO;
            pair->active = true;
            snprintf(pair->upstream_model, sizeof pair->upstream_model, "%s", rest);
        } else
            return 404;
        out->pairs = out->own;
        return 0;
    }
    out->how = "zero_config";
    out->count = strlen(name) < 128
                     ? proto_map_listing(context->map, name, out->own, PROTO_MSG_CANDIDATES_MAX)
                     : 0;
    out->pairs = out->own;
    return out->count ? 0 : 404;
}

//  "balanced": the documented weights of its four parts (docs/routing.md
//  section 3). They add up to 1, so a score is between 0 and 1.
#define S_BALANCE_WEIGHT 0.25
#define S_BALANCE_LATENCY 0.30
#define S_BALANCE_RELIABILITY 0.30
#define S_BALANCE_PRICE 0.15
#define S_BALANCE_BUCKETS 20 //  scores within 1/20 of each other tie

//  What the eligible options of a decision measure, for the modes that
//  compare an option with the others.
typedef struct {
    uint64_t mean_ttfb_us;     //  mean of the measured, 0 = nothing measured
    uint32_t mean_success_ppm; //  mean of the measured (1000000 when none)
    uint64_t best_ttfb_us;     //  fastest measured, 0 = nothing measured
    int64_t best_price_ppm;    //  lowest key multiplier
    int64_t most_weight;       //  largest route x provider x key weight
    uint64_t session_seed;     //  rendezvous seed, 0 = no session
} s_field_t;

//  Route x provider x key weight, at most S_WEIGHT_MAX^3 (< 2^60).
static int64_t s_combined(const s_option_t *option)
{
    return s_weight(option->pair->weight) * s_weight(option->provider->weight) *
           s_weight(option->key->weight);
}

static uint64_t s_ttfb(const s_option_t *option, const s_field_t *field)
{
    return option->have_stat
               ? (option->stat.ttfb_us ? option->stat.ttfb_us : option->stat.latency_us)
               : field->mean_ttfb_us;
}

//  The four parts of a balanced score, each 0..1 (1 = best), and the score.
static void s_balance(s_option_t *option, const s_field_t *field)
{
    int64_t combined = s_combined(option);
    double weight = field->most_weight > 0 ? (double)combined / (double)field->most_weight : 1.0;
    uint64_t ttfb = s_ttfb(option, field);
    double latency = field->best_ttfb_us && ttfb ? (double)field->best_ttfb_us / (double)ttfb : 1.0;
    double reliability =
        (option->have_stat ? option->stat.success_ppm : field->mean_success_ppm) / 1000000.0;
    //  +1% of list price keeps a free key finite and lets 0 beat 0.01.
    double price = (double)(field->best_price_ppm + 10000) /
                   (double)(s_multiplier(option->key->multiplier_ppm) + 10000);
    option->parts[0] = weight;
    option->parts[1] = latency > 1.0 ? 1.0 : latency;
    option->parts[2] = reliability;
    option->parts[3] = price > 1.0 ? 1.0 : price;
    option->parts[4] = S_BALANCE_WEIGHT * option->parts[0] + S_BALANCE_LATENCY * option->parts[1] +
                       S_BALANCE_RELIABILITY * option->parts[2] +
                       S_BALANCE_PRICE * option->parts[3];
}

//  Fills an option's ordering keys for the mode. Within equal tiers the
//  order is drawn in two stages: its provider by the provider's weight
//  (s_stage_providers), then the option among its provider's by its own,
//  so a provider with many matching models or keys gets no bigger share.
static void s_score(const router_context_t *context, router_mode_t mode, s_option_t *option,
                    const s_field_t *field)
{
    const proto_map_pair_t *pair = option->pair;
    int64_t within = s_weight(pair->weight) * s_weight(option->key->weight);
    option->provider_weight = 1;
    switch (mode) {
    case ROUTER_MODE_PRIORITY:
        option->tier[0] = pair->priority;
        option->tier[1] = option->provider->priority;
        option->tier[2] = option->key->priority;
        option->provider_weight = (double)s_weight(option->provider->weight);
        option->weight = within;
        break;
    case ROUTER_MODE_KEY_PRIORITY:
        option->tier[0] = option->key->priority;
        option->weight = s_weight(option->key->weight);
        break;
    case ROUTER_MODE_WEIGHTED:
        option->provider_weight = (double)s_weight(option->provider->weight);
        option->weight = within;
        break;
    case ROUTER_MODE_LATENCY:
        option->tier[0] = -s_latency_bucket(s_ttfb(option, field));
        option->weight = 1;
        break;
    case ROUTER_MODE_COST:
        option->tier[0] = -s_multiplier(option->key->multiplier_ppm);
        option->weight = 1;
        break;
    case ROUTER_MODE_RELIABILITY: {
        uint32_t ppm = option->have_stat ? option->stat.success_ppm : field->mean_success_ppm;
        option->tier[0] = ppm / 10000;
        option->weight = 1;
        break;
    }
    case ROUTER_MODE_BALANCED:
        s_balance(option, field);
        option->tier[0] = (int64_t)floor(option->parts[4] * S_BALANCE_BUCKETS + 1e-9);
        option->provider_weight = (double)s_weight(option->provider->weight);
        option->weight = within;
        break;
    }
    option->draw = field->session_seed
                       ? s_rendezvous(field->session_seed, &option->candidate, option->weight)
                       : s_draw(context->rng, option->weight);
    //  key_priority orders keys across providers: one stage.
    option->provider_draw = mode == ROUTER_MODE_KEY_PRIORITY ? option->draw : 0;
}

//  Which options share a provider's stage-1 draw: the eligible ones, the
//  breaker-open ones (the last resort is drawn among those), the rest.
static int s_stage_class(const s_option_t *option)
{
    if (!option->why)
        return 0;
    return strcmp(option->why, "breaker") == 0 && option->breaker.state == ROUTER_BREAKER_OPEN ? 1
                                                                                               : 2;
}

//  Groups options by stage class, tier and provider (any order of groups).
static int s_compare_group(const void *a, const void *b)
{
    const s_option_t *left = a, *right = b;
    int classes = s_stage_class(left) - s_stage_class(right);
    if (classes)
        return classes;
    for (int i = 0; i < 3; i++)
        if (left->tier[i] != right->tier[i])
            return left->tier[i] > right->tier[i] ? -1 : 1;
    if (left->candidate.provider_id != right->candidate.provider_id)
        return left->candidate.provider_id < right->candidate.provider_id ? -1 : 1;
    return 0;
}

//  Stage 1 of the order: one draw per provider and tier, by its weight (by
//  the session's hash when there is one), shared by its options there. A
//  provider's weight is its own times the mean weight of its routes and
//  rules in that tier and class: one route of weight 3 against another's of
//  weight 1 still leads 3:1, but many routes or keys add nothing, and a
//  route of another tier, or an excluded one, changes nothing. Any number
//  of providers: the options are grouped by sorting, not in a table.
static void s_stage_providers(const router_context_t *context, router_mode_t mode,
                              s_option_t *options, size_t count, uint64_t session_seed)
{
    if (mode == ROUTER_MODE_KEY_PRIORITY)
        return;
    bool by_routes = mode == ROUTER_MODE_PRIORITY || mode == ROUTER_MODE_WEIGHTED ||
                     mode == ROUTER_MODE_BALANCED;
    qsort(options, count, sizeof *options, s_compare_group);
    for (size_t start = 0, end; start < count; start = end) {
        end = start + 1;
        while (end < count && s_compare_group(&options[start], &options[end]) == 0)
            end++;
        double sum = 0, pairs = 0;
        for (size_t j = start; by_routes && j < end; j++) {
            bool seen = false; //  a route with many keys counts once
            for (size_t k = start; k < j && !seen; k++)
                seen = options[k].pair == options[j].pair;
            if (!seen) {
                sum += (double)s_weight(options[j].pair->weight);
                pairs++;
            }
        }
        double weight = options[start].provider_weight * (pairs > 0 ? sum / pairs : 1.0);
        uint64_t draw;
        if (session_seed) {
            proto_candidate_t provider = {.provider_key_id = options[start].candidate.provider_id};
            snprintf(provider.upstream_model, sizeof provider.upstream_model, "provider");
            draw = s_rendezvous(session_seed, &provider, weight);
        } else
            draw = s_draw(context->rng, weight);
        for (size_t j = start; j < end; j++) {
            options[j].provider_weight = weight;
            options[j].provider_draw = draw;
        }
    }
}

//  Within each run of equal tiers (sorted by provider, then by option),
//  takes the providers' options in turn: the first of each provider in the
//  providers' order, then the second of each, ... so a failover moves to
//  another provider before a provider's second key or model. tmp holds
//  `count` options.
static void s_interleave(s_option_t *options, size_t count, s_option_t *tmp)
{
    size_t start = 0;
    while (start < count) {
        size_t end = start + 1;
        while (end < count &&
               memcmp(options[end].tier, options[start].tier, sizeof options[start].tier) == 0)
            end++;
        size_t taken = 0;
        for (size_t round = 0; taken < end - start; round++) {
            size_t i = start;
            while (i < end) {
                size_t group_end = i + 1;
                while (group_end < end &&
                       options[group_end].candidate.provider_id == options[i].candidate.provider_id)
                    group_end++;
                if (i + round < group_end)
                    tmp[taken++] = options[i + round];
                i = group_end;
            }
        }
        memcpy(options + start, tmp, (end - start) * sizeof *options);
        start = end;
    }
}

static json_t *s_option_json(proto_catalog_t *catalog, const s_option_t *option, router_mode_t mode)
{
    json_t *item = json_pack(
        "{s:I, s:s, s:I, s:s, s:s, s:s}", "provider_id", (json_int_t)option->candidate.provider_id,
        "provider", option->provider->name, "provider_key_id",
        (json_int_t)option->candidate.provider_key_id, "key",
        option->key->name ? option->key->name : "", "upstream_model",
        option->candidate.upstream_model, "source", proto_map_source_name(option->pair->source));
    if (option->pair->rule_id)
        json_object_set_new(item, "rule_id", json_integer((json_int_t)option->pair->rule_id));
    if (option->pair->route_id)
        json_object_set_new(item, "route_id", json_integer((json_int_t)option->pair->route_id));
    return item;
}

//  The weights of the two stages, as explain shows them.
static void s_explain_weights(json_t *score, const s_option_t *option)
{
    json_object_set_new(score, "weight", json_integer((json_int_t)s_combined(option)));
    json_object_set_new(score, "provider_weight",
                        json_real(round(option->provider_weight * 1e4) / 1e4));
    json_object_set_new(score, "weight_in_provider", json_integer(option->weight));
}

static void s_explain_score(json_t *item, const s_option_t *option, router_mode_t mode,
                            const s_field_t *field)
{
    json_t *score = json_object();
    switch (mode) {
    case ROUTER_MODE_PRIORITY:
        json_object_set_new(score, "route_priority", json_integer(option->tier[0]));
        json_object_set_new(score, "provider_priority", json_integer(option->tier[1]));
        json_object_set_new(score, "key_priority", json_integer(option->tier[2]));
        s_explain_weights(score, option);
        break;
    case ROUTER_MODE_KEY_PRIORITY:
        json_object_set_new(score, "key_priority", json_integer(option->tier[0]));
        json_object_set_new(score, "weight", json_integer(option->weight));
        break;
    case ROUTER_MODE_WEIGHTED:
        s_explain_weights(score, option);
        break;
    case ROUTER_MODE_LATENCY:
        json_object_set_new(score, "ttfb_us", json_integer((json_int_t)s_ttfb(option, field)));
        json_object_set_new(score, "measured", json_boolean(option->have_stat));
        json_object_set_new(score, "bucket", json_integer(-option->tier[0]));
        break;
    case ROUTER_MODE_COST:
        json_object_set_new(score, "multiplier_ppm", json_integer(option->key->multiplier_ppm));
        break;
    case ROUTER_MODE_RELIABILITY:
        json_object_set_new(
            score, "success_ppm",
            json_integer(option->have_stat ? option->stat.success_ppm : field->mean_success_ppm));
        json_object_set_new(score, "measured", json_boolean(option->have_stat));
        break;
    case ROUTER_MODE_BALANCED: {
        //  Each part (0..1, 1 best), its weight, and what it was made from.
        static const char *const names[] = {"weight", "latency", "reliability", "price"};
        static const double weights[] = {S_BALANCE_WEIGHT, S_BALANCE_LATENCY, S_BALANCE_RELIABILITY,
                                         S_BALANCE_PRICE};
        json_t *parts = json_object();
        for (int i = 0; i < 4; i++)
            json_object_set_new(parts, names[i],
                                json_pack("{s:f, s:f}", "value",
                                          round(option->parts[i] * 1e4) / 1e4, "weight",
                                          weights[i]));
        json_object_set_new(score, "parts", parts);
        json_object_set_new(score, "score", json_real(round(option->parts[4] * 1e4) / 1e4));
        json_object_set_new(score, "bucket", json_integer(option->tier[0]));
        json_object_set_new(score, "ttfb_us", json_integer((json_int_t)s_ttfb(option, field)));
        json_object_set_new(
            score, "success_ppm",
            json_integer(option->have_stat ? option->stat.success_ppm : field->mean_success_ppm));
        json_object_set_new(score, "measured", json_boolean(option->have_stat));
        json_object_set_new(score, "multiplier_ppm", json_integer(option->key->multiplier_ppm));
        s_explain_weights(score, option);
        break;
    }
    }
    json_object_set_new(item, "score", score);
    json_object_set_new(item, "breaker",
                        json_string(router_breaker_state_name(option->breaker.state)));
}

//  Moves the options at `indexes` (ascending positions) so that those with
//  `preferred` model come first among them, keeping their slots.
static void s_prefer_within(s_option_t *options, const size_t *indexes, size_t count,
                            const char *preferred)
{
    s_option_t reordered[PROTO_MSG_CANDIDATES_MAX];
    size_t filled = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < count; i++) {
            bool match = strcmp(options[indexes[i]].candidate.upstream_model, preferred) == 0;
            if ((pass == 0) == match)
                reordered[filled++] = options[indexes[i]];
        }
    for (size_t i = 0; i < count; i++)
        options[indexes[i]] = reordered[i];
}

static void s_fail(router_decision_t *decision, int status, const char *code, const char *format,
                   const char *model)
{
    decision->status = status;
    decision->error_code = code;
    snprintf(decision->error_message, sizeof decision->error_message, format, model);
}

struct _router_scratch_t {
    s_resolved_t *resolved; //  resolution of the name
    s_option_t *options;    //  every (pair, key) considered
    s_option_t *eligible;   //  those that qualify, in order
    s_option_t *spare;      //  room to reorder them
};

//  One decision on its way through the stages: what they read, and what
//  each adds for the next (and to the explanation).
typedef struct {
    const router_context_t *context; //  what the decision consults
    const router_request_t *request; //  what is asked
    router_decision_t *decision;     //  the answer being built
    json_t *explain;                 //  the explanation being built, or NULL
    const char *name;                //  the model as asked, never NULL
    router_scratch_t *scratch;       //  working space (the context's, or this decision's)
    s_resolved_t *resolved;          //  resolution of the name
    char caps[S_CAPS_MAX][64];       //  required capabilities that are tracked
    size_t cap_count;                //  how many
    s_option_t *options;             //  every (pair, key) considered
    size_t count;                    //  how many
    s_option_t *eligible;            //  those that qualify, in order
    size_t eligible_count;           //  how many
    s_field_t field;                 //  what the eligible options measure
    bool any_visible;                //  some pair's provider is open to this account
    bool any_hidden;                 //  some pair's provider is another account's
} s_decide_t;

//  The name: resolves it to pairs and explains how. Returns 0, or 404.
static int s_stage_resolve(s_decide_t *self)
{
    s_resolved_t *resolved = self->resolved;
    int rc = s_resolve(self->context, self->name, resolved);
    self->decision->mode = router_mode_parse(resolved->model ? resolved->model->scheduling : NULL);
    if (self->explain) {
        json_object_set_new(self->explain, "model", json_string(self->name));
        json_object_set_new(self->explain, "mode",
                            json_string(router_mode_name(self->decision->mode)));
        json_object_set_new(self->explain, "resolved",
                            json_string(resolved->how ? resolved->how : ""));
        if (resolved->pinned)
            json_object_set_new(self->explain, "pinned_provider",
                                json_string(resolved->pinned->name));
    }
    if (rc != 0)
        s_fail(self->decision, 404, "model_not_found",
               "The model '%.200s' does not exist or you do not have access to it.", self->name);
    return rc;
}

//  What the catalog says of one option: disabled, another account's, on
//  the block list, lacking a required capability. Sets why and detail.
static void s_filter_option(s_decide_t *self, s_option_t *option, bool blocked)
{
    const proto_provider_t *provider = option->provider;
    const proto_map_pair_t *pair = option->pair;
    const proto_provider_key_t *key = option->key;
    const proto_model_t *model = self->resolved->model;
    if (!provider->active || !pair->active || !key->active) {
        option->why = "disabled";
        snprintf(option->detail, sizeof option->detail, "%s",
                 !provider->active ? "provider disabled"
                 : !pair->active   ? "route disabled"
                                   : "key disabled");
        if (provider->active && pair->active && key->disabled_reason && *key->disabled_reason)
            snprintf(option->detail, sizeof option->detail, "key disabled: %.140s",
                     key->disabled_reason);
    } else if (!s_visible(provider, self->request->account_id)) {
        //  Bring your own key: only its account's requests go there.
        option->why = "owner";
        snprintf(option->detail, sizeof option->detail, "another account's provider");
    } else if (blocked) {
        option->why = "blocked";
        snprintf(option->detail, sizeof option->detail, "on provider %.100s's block list",
                 provider->name);
    } else
        for (size_t c = 0; c < self->cap_count && !option->why; c++)
            if (!proto_tags_has(&key->capabilities, self->caps[c]) &&
                !(model && proto_tags_has(&model->capabilities, self->caps[c]))) {
                option->why = "capability";
                snprintf(option->detail, sizeof option->detail, "lacks %.63s", self->caps[c]);
            }
}

//  Filter: expands each pair to its provider's keys, and excludes what the
//  catalog rules out (s_filter_option).
static void s_stage_filter(s_decide_t *self)
{
    proto_catalog_t *catalog = self->context->catalog;
    const s_resolved_t *resolved = self->resolved;
    self->cap_count = s_split_caps(self->request->capabilities, self->caps, S_CAPS_MAX);
    self->cap_count =
        s_tracked_caps(catalog, resolved, self->request->account_id, self->caps, self->cap_count);
    size_t key_count = proto_catalog_provider_key_count(catalog);
    for (size_t p = 0; p < resolved->count; p++) {
        const proto_map_pair_t *pair = &resolved->pairs[p];
        const proto_provider_t *provider = proto_catalog_provider(catalog, pair->provider_id);
        if (!provider)
            continue;
        bool visible = s_visible(provider, self->request->account_id);
        self->any_visible = self->any_visible || visible;
        self->any_hidden = self->any_hidden || !visible;
        //  The protocol of this (provider, model), when the operator set one.
        const proto_model_setting_t *setting =
            proto_catalog_model_setting(catalog, provider->id, pair->upstream_model);
        int protocol = setting && setting->protocol ? setting->protocol : provider->protocol;
        bool blocked = proto_provider_blocks(provider, pair->upstream_model);
        for (size_t k = 0; k < key_count && self->count < S_OPTIONS_MAX; k++) {
            const proto_provider_key_t *key = proto_catalog_provider_key_at(catalog, k);
            if (key->provider_id != provider->id)
                continue;
            s_option_t *option = &self->options[self->count++];
            memset(option, 0, sizeof *option);
            option->pair = pair;
            option->provider = provider;
            option->key = key;
            option->candidate.provider_id = provider->id;
            option->candidate.provider_key_id = key->id;
            option->candidate.upstream_protocol = (uint32_t)protocol;
            snprintf(option->candidate.upstream_model, sizeof option->candidate.upstream_model,
                     "%s", pair->upstream_model);
            s_filter_option(self, option, blocked);
        }
    }
}

//  Exclude: what the router's state says of the options the catalog allows,
//  each in turn (a half-open breaker's trial is claimed here): an open or
//  disabled breaker, then a key at its limit share.
static void s_stage_exclude(s_decide_t *self)
{
    const router_context_t *context = self->context;
    const router_request_t *request = self->request;
    for (size_t i = 0; i < self->count; i++) {
        s_option_t *option = &self->options[i];
        if (option->why)
            continue;
        if (context->breaker) {
            option->breaker = router_breaker_check(
                context->breaker, option->candidate.provider_id, option->candidate.provider_key_id,
                option->pair->upstream_model, request->now_ms, !request->dry_run);
            if (option->breaker.state == ROUTER_BREAKER_OPEN ||
                option->breaker.state == ROUTER_BREAKER_DISABLED) {
                option->why = "breaker";
                snprintf(option->detail, sizeof option->detail, "%s %s (%s)%s",
                         option->breaker.key_layer ? "key" : "model",
                         router_breaker_state_name(option->breaker.state), option->breaker.reason,
                         option->breaker.state == ROUTER_BREAKER_OPEN ? ", cooling down" : "");
                continue;
            }
        }
        uint64_t retry_ms = 0;
        const char *limit_why = NULL;
        const proto_provider_key_t *key = option->key;
        if (context->limit &&
            !router_limit_allows(context->limit, key->id, key->max_rps, key->max_concurrent,
                                 request->now_ms, &limit_why, &retry_ms)) {
            option->why = "limit";
            snprintf(option->detail, sizeof option->detail, "%s", limit_why);
            router_decision_t *decision = self->decision;
            if (!decision->retry_after_ms || retry_ms < decision->retry_after_ms)
                decision->retry_after_ms = retry_ms;
        }
    }
}

//  What the eligible options measure, for the modes that compare them:
//  health (unknowns count as the mean), the largest weight, the lowest price.
static void s_stage_measure(s_decide_t *self)
{
    const router_context_t *context = self->context;
    s_field_t *field = &self->field;
    uint64_t ttfb_sum = 0, ppm_sum = 0, known = 0;
    *field = (s_field_t){.best_price_ppm = INT64_MAX};
    for (size_t i = 0; i < self->count && context->stats; i++) {
        s_option_t *option = &self->options[i];
        option->have_stat =
            router_stats_get(context->stats, option->candidate.provider_id,
                             option->candidate.provider_key_id, option->candidate.upstream_model,
                             self->request->now_ms, context->stats_max_age_ms, &option->stat);
        if (option->have_stat && !option->why) {
            uint64_t ttfb = option->stat.ttfb_us ? option->stat.ttfb_us : option->stat.latency_us;
            ttfb_sum += ttfb;
            ppm_sum += option->stat.success_ppm;
            known++;
            if (ttfb && (!field->best_ttfb_us || ttfb < field->best_ttfb_us))
                field->best_ttfb_us = ttfb;
        }
    }
    for (size_t i = 0; i < self->count; i++) {
        const s_option_t *option = &self->options[i];
        if (option->why)
            continue;
        int64_t combined = s_combined(option);
        if (combined > field->most_weight)
            field->most_weight = combined;
        if (s_multiplier(option->key->multiplier_ppm) < field->best_price_ppm)
            field->best_price_ppm = s_multiplier(option->key->multiplier_ppm);
    }
    if (field->best_price_ppm == INT64_MAX)
        field->best_price_ppm = 0;
    field->mean_ttfb_us = known ? ttfb_sum / known : 0;
    field->mean_success_ppm = known ? (uint32_t)(ppm_sum / known) : 1000000;
    field->session_seed = s_session_seed(self->request->account_id, self->request->session);
}

//  Score: orders every option by the mode (s_score, then the providers'
//  draws), and takes the eligible ones, in that order, with the providers
//  of each tier taking turns.
static void s_stage_score(s_decide_t *self)
{
    router_mode_t mode = self->decision->mode;
    s_option_t *options = self->options;
    for (size_t i = 0; i < self->count; i++)
        s_score(self->context, mode, &options[i], &self->field);
    s_stage_providers(self->context, mode, options, self->count, self->field.session_seed);
    qsort(options, self->count, sizeof *options, s_compare);
    //  Eligible options to the front, in order; the excluded keep theirs.
    for (size_t i = 0; i < self->count; i++)
        if (!options[i].why)
            self->eligible[self->eligible_count++] = options[i];
    if (mode != ROUTER_MODE_KEY_PRIORITY && self->eligible_count > 1)
        s_interleave(self->eligible, self->eligible_count, self->scratch->spare);
    if (self->eligible_count > PROTO_MSG_CANDIDATES_MAX)
        self->eligible_count = PROTO_MSG_CANDIDATES_MAX;
}

//  Sticky: a session's order within each tier came from its hash
//  (s_rendezvous), so its first choice leads on every instance. Per client
//  key, the model that last served it well at each provider goes ahead of
//  that provider's other models (not ahead of a session's first choice).
static void s_stage_sticky(s_decide_t *self)
{
    const router_context_t *context = self->context;
    const router_request_t *request = self->request;
    s_option_t *eligible = self->eligible;
    size_t eligible_count = self->eligible_count;
    self->decision->sticky = self->field.session_seed != 0 && eligible_count > 0;
    if (self->explain && self->field.session_seed)
        json_object_set_new(self->explain, "session",
                            json_pack("{s:s}", "placement", "rendezvous"));
    if (!context->sticky || !request->key_id)
        return;
    size_t start = self->decision->sticky ? 1 : 0;
    for (size_t i = start; i < eligible_count; i++) {
        uint64_t provider_id = eligible[i].candidate.provider_id;
        bool first_of_provider = true;
        for (size_t j = start; j < i; j++)
            first_of_provider =
                first_of_provider && eligible[j].candidate.provider_id != provider_id;
        if (!first_of_provider)
            continue;
        const char *preferred =
            router_sticky_preferred(context->sticky, request->key_id, provider_id, request->now_ms);
        if (!preferred)
            continue;
        size_t indexes[PROTO_MSG_CANDIDATES_MAX], n = 0;
        for (size_t j = i; j < eligible_count; j++)
            if (eligible[j].candidate.provider_id == provider_id)
                indexes[n++] = j;
        s_prefer_within(eligible, indexes, n, preferred);
    }
}

//  Last resort, and the answer: when nothing is eligible but some options
//  are only cooling down, the best of them goes alone (its success closes
//  its breaker; its failure changes nothing). Then the candidates, or why
//  there are none: 404 when only other accounts' providers serve the name,
//  429 when limits are the obstacle, else 503.
static void s_stage_last_resort(s_decide_t *self)
{
    router_decision_t *decision = self->decision;
    bool any_open = false, any_limited = false;
    for (size_t i = 0; i < self->count; i++) {
        const s_option_t *option = &self->options[i];
        any_open = any_open || (option->why && strcmp(option->why, "breaker") == 0 &&
                                option->breaker.state == ROUTER_BREAKER_OPEN);
        any_limited = any_limited || (option->why && strcmp(option->why, "limit") == 0);
    }
    if (self->eligible_count == 0 && any_open) {
        for (size_t i = 0; i < self->count; i++)
            if (self->options[i].why && strcmp(self->options[i].why, "breaker") == 0 &&
                self->options[i].breaker.state == ROUTER_BREAKER_OPEN) {
                self->eligible[self->eligible_count++] = self->options[i];
                self->options[i].why = NULL; //  listed as a candidate, not as excluded
                break;
            }
        decision->last_resort = true;
    }
    for (size_t i = 0; i < self->eligible_count; i++)
        decision->candidates[i] = self->eligible[i].candidate;
    decision->count = self->eligible_count;
    const char *name = self->name;
    if (self->eligible_count) {
        decision->status = 200;
        decision->retry_after_ms = 0;
    } else if (self->any_hidden && !self->any_visible)
        //  Only other accounts' providers serve it: for this account the
        //  model does not exist (and a 503 would tell it that it does).
        s_fail(decision, 404, "model_not_found",
               "The model '%.200s' does not exist or you do not have access to it.", name);
    else if (any_limited)
        s_fail(decision, 429, "provider_limit",
               "Every provider for model '%.200s' is at its request limit; retry later.", name);
    else
        s_fail(decision, 503, "no_provider", "No provider is available for model '%.200s'.", name);
    const router_context_t *context = self->context;
    if (decision->status == 200 && !self->request->dry_run && context->limit)
        router_limit_start(context->limit, self->request->request_id,
                           decision->candidates[0].provider_key_id, self->eligible[0].key->max_rps,
                           self->request->now_ms);
}

//  The explanation's excluded list: every excluded option, the pairs the
//  mapping rules removed, and under a pin the other providers' pairs.
static json_t *s_explain_excluded(const s_decide_t *self)
{
    proto_catalog_t *catalog = self->context->catalog;
    proto_map_t *map = self->context->map;
    const s_resolved_t *resolved = self->resolved;
    json_t *excluded = json_array();
    for (size_t i = 0; i < self->count; i++) {
        const s_option_t *option = &self->options[i];
        if (!option->why)
            continue;
        json_t *item = s_option_json(catalog, option, self->decision->mode);
        json_object_set_new(item, "why", json_string(option->why));
        json_object_set_new(item, "detail", json_string(option->detail));
        json_array_append_new(excluded, item);
    }
    size_t removed_count = 0;
    const proto_map_excluded_t *removed =
        resolved->model ? proto_map_excluded(map, resolved->model->id, &removed_count) : NULL;
    for (size_t i = 0; i < removed_count; i++)
        json_array_append_new(
            excluded, json_pack("{s:I, s:s, s:s, s:I, s:s}", "provider_id",
                                (json_int_t)removed[i].provider_id, "upstream_model",
                                removed[i].upstream_model, "why", "rule", "rule_id",
                                (json_int_t)removed[i].rule_id, "detail", removed[i].reason));
    if (resolved->pinned && resolved->model) {
        size_t all_count;
        const proto_map_pair_t *all = proto_map_pairs(map, resolved->model->id, &all_count);
        for (size_t i = 0; i < all_count; i++)
            if (all[i].provider_id != resolved->pinned->id)
                json_array_append_new(excluded,
                                      json_pack("{s:I, s:s, s:s, s:s}", "provider_id",
                                                (json_int_t)all[i].provider_id, "upstream_model",
                                                all[i].upstream_model, "why", "pinned", "detail",
                                                "another provider is pinned"));
    }
    return excluded;
}

//  The explanation's lists: the candidates in order with their scores, the
//  excluded with why, and the capabilities that were required.
static void s_stage_explain(s_decide_t *self)
{
    json_t *explain = self->explain;
    router_decision_t *decision = self->decision;
    json_t *listed = json_array();
    for (size_t i = 0; i < self->eligible_count; i++) {
        json_t *item = s_option_json(self->context->catalog, &self->eligible[i], decision->mode);
        json_object_set_new(item, "rank", json_integer((json_int_t)i + 1));
        s_explain_score(item, &self->eligible[i], decision->mode, &self->field);
        if (i == 0 && decision->sticky)
            json_object_set_new(item, "sticky", json_true());
        if (decision->last_resort)
            json_object_set_new(item, "last_resort", json_true());
        json_array_append_new(listed, item);
    }
    json_object_set_new(explain, "candidates", listed);
    json_object_set_new(explain, "excluded", s_explain_excluded(self));
    json_object_set_new(explain, "last_resort", json_boolean(decision->last_resort));
    if (self->cap_count) {
        json_t *required = json_array();
        for (size_t c = 0; c < self->cap_count; c++)
            json_array_append_new(required, json_string(self->caps[c]));
        json_object_set_new(explain, "capabilities", required);
    }
}

void router_select_decide(const router_context_t *context, const router_request_t *request,
                          router_decision_t *decision, json_t *explain)
{
    //  Everything but the candidates (10 KiB, of which `count` are written).
    memset(decision, 0, offsetof(router_decision_t, candidates));
    decision->count = 0;
    decision->mode = ROUTER_MODE_PRIORITY;
    decision->last_resort = decision->sticky = false;
    //  The working space is large (hundreds of KiB): a caller that decides
    //  all day lends its own, so no decision allocates it (a malloc this
    //  size also makes glibc consolidate its free lists every time).
    router_scratch_t *own = context->scratch ? NULL : router_scratch_new();
    router_scratch_t *scratch = context->scratch ? context->scratch : own;
    s_decide_t *self = &(s_decide_t){.context = context,
                                     .request = request,
                                     .decision = decision,
                                     .explain = explain,
                                     .name = request->model ? request->model : "",
                                     .scratch = scratch,
                                     .resolved = scratch->resolved,
                                     .options = scratch->options,
                                     .eligible = scratch->eligible};
    if (s_stage_resolve(self) == 0) {
        s_stage_filter(self);
        s_stage_exclude(self);
        s_stage_measure(self);
        s_stage_score(self);
        s_stage_sticky(self);
        s_stage_last_resort(self);
        if (explain)
            s_stage_explain(self);
    }
    if (explain) {
        json_object_set_new(explain, "status", json_integer(decision->status));
        if (decision->error_code)
            json_object_set_new(explain, "error_code", json_string(decision->error_code));
    }
    router_scratch_destroy(&own);
}

router_scratch_t *router_scratch_new(void)
{
    router_scratch_t *self = calloc(1, sizeof *self);
    assert(self);
    self->resolved = malloc(sizeof *self->resolved);
    self->options = malloc(S_OPTIONS_MAX * sizeof *self->options);
    self->eligible = malloc((S_OPTIONS_MAX + 1) * sizeof *self->eligible);
    self->spare = malloc((S_OPTIONS_MAX + 1) * sizeof *self->spare);
    assert(self->resolved && self->options && self->eligible && self->spare);
    return self;
}

void router_scratch_destroy(router_scratch_t **self_p)
{
    assert(self_p);
    router_scratch_t *self = *self_p;
    if (!self)
        return;
    free(self->resolved);
    free(self->options);
    free(self->eligible);
    free(self->spare);
    free(self);
    *self_p = NULL;
}
