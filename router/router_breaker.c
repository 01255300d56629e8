#include "router_breaker.h"
#include "proto_text.h"
#include "proto_check.h"

#include <assert.h>
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  One breaker: a provider key (key layer) or a (provider, model) pair.
typedef struct {
    bool key_layer;               //  key layer, else model layer
    uint64_t provider_id;         //  providers.id (model layer)
    uint64_t provider_key_id;     //  provider_keys.id (key layer)
    char upstream_model[128];     //  model at the provider (model layer)
    router_breaker_state_t state; //  CLOSED, OPEN or DISABLED; HALF_OPEN is derived
    uint32_t failures;            //  counted failures in a row
    uint32_t opens;               //  openings since the last success (backoff exponent)
    uint64_t opened_ms;           //  when it last opened
    uint64_t until_ms;            //  OPEN: when the cooldown ends
    uint64_t trial_until_ms;      //  a trial is out until then; 0 = none
    bool seen_inactive;           //  DISABLED: the database has the disable (persisted or seen)
    int last_status;              //  status of the outcome that opened it
    char reason[16];              //  "401", "timeout", "429", "5xx", "404"
    bool merged;                  //  its state came from the router's cluster view
} s_entry_t;

struct _router_breaker_t {
    router_breaker_config_t config; //  cooldowns and threshold
    zhashx_t *entries;              //  "k:ID" or "m:PID:MODEL" -> s_entry_t (owned)
};

router_breaker_config_t router_breaker_defaults(void)
{
    return (router_breaker_config_t){
        .threshold = 3,
        .cooldown_network_ms = 10000,
        .cooldown_429_ms = 10000,
        .cooldown_5xx_ms = 5000,
        .cooldown_5xx_max_ms = 300000,
        .cooldown_404_ms = 3600000,
        .trial_timeout_ms = 60000,
    };
}

static void s_entry_free(void **item)
{
    free(*item);
    *item = NULL;
}

router_breaker_t *router_breaker_new(const router_breaker_config_t *config)
{
    router_breaker_t *self = calloc(1, sizeof *self);
    assert(self);
    self->config = *config;
    if (self->config.threshold < 1)
        self->config.threshold = 1;
    self->entries = zhashx_new();
    zhashx_set_destructor(self->entries, s_entry_free);
    return self;
}

void router_breaker_destroy(router_breaker_t **self_p)
{
    assert(self_p);
    router_breaker_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy(&self->entries);
    free(self);
    *self_p = NULL;
}

const char *router_breaker_state_name(router_breaker_state_t state)
{
    switch (state) {
    case ROUTER_BREAKER_CLOSED:
        return "closed";
    case ROUTER_BREAKER_OPEN:
        return "open";
    case ROUTER_BREAKER_HALF_OPEN:
        return "half_open";
    case ROUTER_BREAKER_DISABLED:
        return "disabled";
    }
    return "?";
}

static void s_key_name(char *out, size_t size, uint64_t key_id)
{
    size_t used = 0;
    proto_text_add(out, size, &used, "k:");
    proto_text_add_u64(out, size, &used, key_id);
}

static void s_model_name(char *out, size_t size, uint64_t provider_id, const char *model)
{
    size_t used = 0;
    proto_text_add(out, size, &used, "m:");
    proto_text_add_u64(out, size, &used, provider_id);
    proto_text_add(out, size, &used, ":");
    proto_text_add(out, size, &used, model);
}

static s_entry_t *s_key_entry(router_breaker_t *self, uint64_t key_id, bool create)
{
    char name[32];
    s_key_name(name, sizeof name, key_id);
    s_entry_t *entry = zhashx_lookup(self->entries, name);
    if (!entry && create) {
        entry = calloc(1, sizeof *entry);
        assert(entry);
        entry->key_layer = true;
        entry->provider_key_id = key_id;
        zhashx_insert(self->entries, name, entry);
    }
    return entry;
}

static s_entry_t *s_model_entry(router_breaker_t *self, uint64_t provider_id, const char *model,
                                bool create)
{
    char name[180];
    s_model_name(name, sizeof name, provider_id, model);
    s_entry_t *entry = zhashx_lookup(self->entries, name);
    if (!entry && create) {
        entry = calloc(1, sizeof *entry);
        assert(entry);
        entry->provider_id = provider_id;
        snprintf(entry->upstream_model, sizeof entry->upstream_model, "%s", model);
        zhashx_insert(self->entries, name, entry);
    }
    return entry;
}

static void s_remove(router_breaker_t *self, s_entry_t *entry)
{
    char name[180];
    if (entry->key_layer)
        s_key_name(name, sizeof name, entry->provider_key_id);
    else
        s_model_name(name, sizeof name, entry->provider_id, entry->upstream_model);
    zhashx_delete(self->entries, name);
}

static void s_open(s_entry_t *entry, uint64_t now_ms, uint64_t cooldown_ms, int status,
                   const char *reason)
{
    entry->state = ROUTER_BREAKER_OPEN;
    entry->opened_ms = now_ms;
    entry->until_ms = now_ms + cooldown_ms;
    entry->trial_until_ms = 0;
    entry->last_status = status;
    entry->merged = false;
    snprintf(entry->reason, sizeof entry->reason, "%s", reason);
}

//  True when this open breaker's cooldown is over: a failure now is the
//  trial's (or a straggler's after the cooldown) and re-opens at once.
static bool s_cooled(const s_entry_t *entry, uint64_t now_ms)
{
    return entry->state == ROUTER_BREAKER_OPEN && now_ms >= entry->until_ms;
}

//  A failure of a class that opens after `threshold` in a row.
static router_breaker_event_t s_count_failure(router_breaker_t *self, s_entry_t *entry,
                                              uint64_t now_ms, uint64_t cooldown_ms, int status,
                                              const char *reason)
{
    if (entry->state == ROUTER_BREAKER_DISABLED)
        return ROUTER_BREAKER_NONE;
    if (entry->state == ROUTER_BREAKER_OPEN && !s_cooled(entry, now_ms))
        return ROUTER_BREAKER_NONE; //  a straggler from before it opened
    entry->failures++;
    if (entry->state == ROUTER_BREAKER_CLOSED && entry->failures < self->config.threshold)
        return ROUTER_BREAKER_NONE;
    s_open(entry, now_ms, cooldown_ms, status, reason);
    entry->opens++;
    return ROUTER_BREAKER_OPENED;
}

static uint64_t s_backoff(router_breaker_t *self, uint32_t opens)
{
    uint64_t cooldown = self->config.cooldown_5xx_ms;
    for (uint32_t i = 1; i < opens && cooldown < self->config.cooldown_5xx_max_ms; i++)
        cooldown *= 2;
    return cooldown < self->config.cooldown_5xx_max_ms ? cooldown
                                                       : self->config.cooldown_5xx_max_ms;
}

static bool s_is(const char *code, const char *wanted)
{
    return code && strcmp(code, wanted) == 0;
}

router_breaker_event_t router_breaker_record(router_breaker_t *self, uint64_t provider_id,
                                             uint64_t provider_key_id, const char *upstream_model,
                                             int status, const char *error_code,
                                             uint64_t retry_after_ms, uint64_t now_ms)
{
    if (!upstream_model)
        upstream_model = "";
    if (status >= 200 && status < 300) {
        router_breaker_event_t event = ROUTER_BREAKER_NONE;
        s_entry_t *key = s_key_entry(self, provider_key_id, false);
        //  A disabled key stays disabled: the operator decides (a 2xx from a
        //  request sent just before the 401 proves little).
        if (key && key->state != ROUTER_BREAKER_DISABLED) {
            if (key->state != ROUTER_BREAKER_CLOSED)
                event = ROUTER_BREAKER_CLOSED_NOW;
            s_remove(self, key);
        }
        s_entry_t *model = s_model_entry(self, provider_id, upstream_model, false);
        if (model) {
            if (model->state != ROUTER_BREAKER_CLOSED)
                event = ROUTER_BREAKER_CLOSED_NOW;
            s_remove(self, model);
        }
        return event;
    }
    if (status == 401 || status == 403) {
        s_entry_t *key = s_key_entry(self, provider_key_id, true);
        if (key->state == ROUTER_BREAKER_DISABLED)
            return ROUTER_BREAKER_NONE;
        key->state = ROUTER_BREAKER_DISABLED;
        key->opened_ms = now_ms;
        key->until_ms = 0;
        key->trial_until_ms = 0;
        key->seen_inactive = false;
        key->last_status = status;
        snprintf(key->reason, sizeof key->reason, "%d", status);
        return ROUTER_BREAKER_KEY_DISABLED;
    }
    //  Transport failures come as 502/504 with an error code: they are the
    //  key's (or its network's), not the model's, so check them first.
    if (s_is(error_code, "connect_error") || s_is(error_code, "timeout") ||
        s_is(error_code, "transport_error") || status == 408) {
        s_entry_t *key = s_key_entry(self, provider_key_id, true);
        const char *reason = s_is(error_code, "connect_error")     ? "connect_error"
                             : s_is(error_code, "transport_error") ? "transport_error"
                                                                   : "timeout";
        return s_count_failure(self, key, now_ms, self->config.cooldown_network_ms, status, reason);
    }
    if (status == 429) {
        s_entry_t *model = s_model_entry(self, provider_id, upstream_model, true);
        uint64_t cooldown = retry_after_ms ? retry_after_ms : self->config.cooldown_429_ms;
        //  Later 429s may only push the end further out.
        if (model->state == ROUTER_BREAKER_OPEN && model->until_ms >= now_ms + cooldown)
            return ROUTER_BREAKER_NONE;
        s_open(model, now_ms, cooldown, status, "429");
        model->opens++;
        return ROUTER_BREAKER_OPENED;
    }
    if (status == 404) {
        s_entry_t *model = s_model_entry(self, provider_id, upstream_model, true);
        if (model->state == ROUTER_BREAKER_OPEN && !s_cooled(model, now_ms))
            return ROUTER_BREAKER_NONE;
        s_open(model, now_ms, self->config.cooldown_404_ms, status, "404");
        model->opens++;
        return ROUTER_BREAKER_OPENED;
    }
    if (status >= 500 || s_is(error_code, "protocol_error") || s_is(error_code, "too_large")) {
        s_entry_t *model = s_model_entry(self, provider_id, upstream_model, true);
        return s_count_failure(self, model, now_ms, s_backoff(self, model->opens + 1), status,
                               "5xx");
    }
    //  400, 413, 422, 499 (cancelled), ...: the request's fault, not the upstream's.
    return ROUTER_BREAKER_NONE;
}

//  One layer's verdict, without claiming.
static router_breaker_state_t s_layer_state(const s_entry_t *entry, uint64_t now_ms,
                                            uint64_t *until_ms)
{
    *until_ms = 0;
    if (!entry)
        return ROUTER_BREAKER_CLOSED;
    switch (entry->state) {
    case ROUTER_BREAKER_DISABLED:
        return ROUTER_BREAKER_DISABLED;
    case ROUTER_BREAKER_OPEN:
        if (now_ms < entry->until_ms) {
            *until_ms = entry->until_ms;
            return ROUTER_BREAKER_OPEN;
        }
        if (entry->trial_until_ms > now_ms) {
            *until_ms = entry->trial_until_ms;
            return ROUTER_BREAKER_OPEN; //  its one trial is out
        }
        return ROUTER_BREAKER_HALF_OPEN;
    default:
        return ROUTER_BREAKER_CLOSED;
    }
}

router_breaker_verdict_t router_breaker_check(router_breaker_t *self, uint64_t provider_id,
                                              uint64_t provider_key_id, const char *upstream_model,
                                              uint64_t now_ms, bool claim)
{
    router_breaker_verdict_t verdict = {.state = ROUTER_BREAKER_CLOSED, .reason = ""};
    if (zhashx_size(self->entries) == 0)
        return verdict; //  the common case: nothing is broken
    s_entry_t *key = s_key_entry(self, provider_key_id, false);
    s_entry_t *model =
        s_model_entry(self, provider_id, upstream_model ? upstream_model : "", false);
    uint64_t key_until, model_until;
    router_breaker_state_t key_state = s_layer_state(key, now_ms, &key_until);
    router_breaker_state_t model_state = s_layer_state(model, now_ms, &model_until);
    //  Severity: DISABLED > OPEN > HALF_OPEN > CLOSED.
    static const int rank[] = {0, 2, 1, 3};
    bool key_worse = rank[key_state] >= rank[model_state] && key_state != ROUTER_BREAKER_CLOSED;
    verdict.state = key_worse ? key_state : model_state;
    verdict.key_layer = key_worse;
    verdict.until_ms = key_worse ? key_until : model_until;
    const s_entry_t *source = key_worse ? key : model;
    verdict.reason = source ? source->reason : "";
    if (verdict.state == ROUTER_BREAKER_HALF_OPEN && claim) {
        //  Neither layer is worse than half-open: take the trial of each
        //  half-open layer, so no other decision sends one meanwhile.
        if (key_state == ROUTER_BREAKER_HALF_OPEN)
            key->trial_until_ms = now_ms + self->config.trial_timeout_ms;
        if (model_state == ROUTER_BREAKER_HALF_OPEN)
            model->trial_until_ms = now_ms + self->config.trial_timeout_ms;
        verdict.trial = true;
    }
    return verdict;
}

bool router_breaker_enable_key(router_breaker_t *self, uint64_t provider_key_id)
{
    s_entry_t *key = s_key_entry(self, provider_key_id, false);
    if (!key)
        return false;
    s_remove(self, key);
    return true;
}

void router_breaker_key_persisted(router_breaker_t *self, uint64_t provider_key_id)
{
    s_entry_t *key = s_key_entry(self, provider_key_id, false);
    if (key && key->state == ROUTER_BREAKER_DISABLED)
        key->seen_inactive = true;
}

bool router_breaker_sync_key(router_breaker_t *self, uint64_t provider_key_id, bool active)
{
    s_entry_t *key = s_key_entry(self, provider_key_id, false);
    if (!key || key->state != ROUTER_BREAKER_DISABLED)
        return false;
    if (!active) {
        key->seen_inactive = true;
        return false;
    }
    if (!key->seen_inactive)
        return false; //  the disable is not in the database yet
    s_remove(self, key);
    return true;
}

bool router_breaker_reset_model(router_breaker_t *self, uint64_t provider_id,
                                const char *upstream_model)
{
    s_entry_t *model = s_model_entry(self, provider_id, upstream_model, false);
    if (!model)
        return false;
    bool was_open = model->state != ROUTER_BREAKER_CLOSED;
    s_remove(self, model);
    return was_open;
}

const char *router_breaker_disabled_reason(router_breaker_t *self, uint64_t provider_key_id)
{
    s_entry_t *key = s_key_entry(self, provider_key_id, false);
    return key && key->state == ROUTER_BREAKER_DISABLED ? key->reason : NULL;
}

json_t *router_breaker_list(router_breaker_t *self, uint64_t now_ms, uint64_t wall_now_ms)
{
    json_t *list = json_array();
    for (s_entry_t *entry = zhashx_first(self->entries); entry;
         entry = zhashx_next(self->entries)) {
        uint64_t until;
        router_breaker_state_t state = s_layer_state(entry, now_ms, &until);
        if (state == ROUTER_BREAKER_CLOSED && entry->failures == 0)
            continue;
        json_t *item = json_pack(
            "{s:s, s:s, s:s, s:i, s:i, s:i}", "layer", entry->key_layer ? "key" : "model", "state",
            router_breaker_state_name(state), "reason", entry->reason, "status", entry->last_status,
            "failures", (json_int_t)entry->failures, "opens", (json_int_t)entry->opens);
        if (entry->key_layer)
            json_object_set_new(item, "provider_key_id",
                                json_integer((json_int_t)entry->provider_key_id));
        else {
            json_object_set_new(item, "provider_id", json_integer((json_int_t)entry->provider_id));
            json_object_set_new(item, "upstream_model", json_string(entry->upstream_model));
        }
        if (entry->opened_ms)
            json_object_set_new(
                item, "opened_at_ms",
                json_integer((json_int_t)(wall_now_ms - (now_ms - entry->opened_ms))));
        //  When it lets traffic (a trial) through again; absent for disabled.
        if (entry->state == ROUTER_BREAKER_OPEN)
            json_object_set_new(
                item, "reopens_at_ms",
                json_integer((json_int_t)(wall_now_ms + (until > now_ms ? until - now_ms : 0))));
        json_array_append_new(list, item);
    }
    return list;
}

//  One breaker of the router's list, applied to ours.
static void s_merge_one(router_breaker_t *self, json_t *item, uint64_t now_ms, uint64_t wall_now_ms)
{
    const char *layer = json_string_value(json_object_get(item, "layer"));
    const char *state = json_string_value(json_object_get(item, "state"));
    if (!layer || !state || strcmp(state, "closed") == 0)
        return;
    s_entry_t *entry;
    if (strcmp(layer, "key") == 0) {
        json_t *id = json_object_get(item, "provider_key_id");
        if (!json_is_integer(id))
            return;
        entry = s_key_entry(self, (uint64_t)json_integer_value(id), true);
    } else {
        json_t *id = json_object_get(item, "provider_id");
        const char *model = json_string_value(json_object_get(item, "upstream_model"));
        if (!json_is_integer(id) || !model)
            return;
        entry = s_model_entry(self, (uint64_t)json_integer_value(id), model, true);
    }
    json_int_t opens = json_integer_value(json_object_get(item, "opens"));
    if (opens > 0 && (uint32_t)opens > entry->opens)
        entry->opens = (uint32_t)opens;
    const char *reason = json_string_value(json_object_get(item, "reason"));
    int status = (int)json_integer_value(json_object_get(item, "status"));
    if (strcmp(state, "disabled") == 0) {
        if (entry->state != ROUTER_BREAKER_DISABLED) {
            entry->state = ROUTER_BREAKER_DISABLED;
            entry->opened_ms = now_ms;
            entry->until_ms = 0;
            entry->trial_until_ms = 0;
            entry->last_status = status;
            snprintf(entry->reason, sizeof entry->reason, "%s", reason ? reason : "");
            entry->merged = true;
        }
        return;
    }
    if (entry->state == ROUTER_BREAKER_DISABLED)
        return;
    //  open (until reopens_at) or half_open (cooled: now); a trial the
    //  router's list shows out is another dispatch's, so "open" it is.
    json_int_t reopens = json_integer_value(json_object_get(item, "reopens_at_ms"));
    uint64_t until = now_ms;
    if (strcmp(state, "open") == 0 && reopens > 0 && (uint64_t)reopens > wall_now_ms)
        until = now_ms + ((uint64_t)reopens - wall_now_ms);
    if (entry->state == ROUTER_BREAKER_OPEN && entry->until_ms >= until)
        return; //  ours ends later already
    bool was_closed = entry->state != ROUTER_BREAKER_OPEN;
    entry->state = ROUTER_BREAKER_OPEN;
    entry->until_ms = until;
    if (was_closed) {
        entry->opened_ms = now_ms;
        entry->trial_until_ms = 0;
        entry->merged = true;
    }
    entry->last_status = status;
    snprintf(entry->reason, sizeof entry->reason, "%s", reason ? reason : "");
}

size_t router_breaker_merge(router_breaker_t *self, json_t *list, uint64_t now_ms,
                            uint64_t wall_now_ms, uint64_t grace_ms)
{
    size_t index;
    json_t *item;
    json_array_foreach(list, index, item) s_merge_one(self, item, now_ms, wall_now_ms);
    //  What the router no longer lists was closed in the cluster (a
    //  success elsewhere, an operator's reset). Our own recent failures the
    //  router may not have heard yet: those stay until grace_ms old.
    zlistx_t *closed = zlistx_new();
    for (s_entry_t *entry = zhashx_first(self->entries); entry;
         entry = zhashx_next(self->entries)) {
        if (entry->state == ROUTER_BREAKER_CLOSED)
            continue;
        if (!entry->merged && entry->opened_ms + grace_ms > now_ms)
            continue;
        bool listed = false;
        json_array_foreach(list, index, item)
        {
            const char *layer = json_string_value(json_object_get(item, "layer"));
            const char *state = json_string_value(json_object_get(item, "state"));
            if (!layer || !state || strcmp(state, "closed") == 0)
                continue;
            if (entry->key_layer
                    ? strcmp(layer, "key") == 0 &&
                          (uint64_t)json_integer_value(json_object_get(item, "provider_key_id")) ==
                              entry->provider_key_id
                    : strcmp(layer, "model") == 0 &&
                          (uint64_t)json_integer_value(json_object_get(item, "provider_id")) ==
                              entry->provider_id &&
                          json_is_string(json_object_get(item, "upstream_model")) &&
                          strcmp(json_string_value(json_object_get(item, "upstream_model")),
                                 entry->upstream_model) == 0) {
                listed = true;
                break;
            }
        }
        if (!listed)
            zlistx_add_end(closed, entry);
    }
    size_t count = zlistx_size(closed);
    for (s_entry_t *entry = zlistx_first(closed); entry; entry = zlistx_next(closed))
        s_remove(self, entry);
    zlistx_destroy(&closed);
    return count;
}

//  --------------------------------------------------------------------------
//  Self test: every transition of both layers.

//  The model layer: opening on 5xx, half-open trials, backoff. Returns the clock after.
static uint64_t s_test_model_layer(router_breaker_t *breaker, uint64_t now)
{
    router_breaker_verdict_t verdict;
    //  Nothing heard: closed.
    verdict = router_breaker_check(breaker, 1, 10, "m", now, true);
    PROTO_CHECK(verdict.state == ROUTER_BREAKER_CLOSED && !verdict.trial);

    //  5xx: one is not enough with threshold 2; the second opens for 5 s.
    PROTO_CHECK(router_breaker_record(breaker, 1, 10, "m", 500, "upstream_status", 0, now) ==
                ROUTER_BREAKER_NONE);
    PROTO_CHECK(router_breaker_check(breaker, 1, 10, "m", now, false).state ==
                ROUTER_BREAKER_CLOSED);
    PROTO_CHECK(router_breaker_record(breaker, 1, 10, "m", 503, "upstream_status", 0, now) ==
                ROUTER_BREAKER_OPENED);
    verdict = router_breaker_check(breaker, 1, 10, "m", now + 1, true);
    PROTO_CHECK(verdict.state == ROUTER_BREAKER_OPEN && !verdict.key_layer);
    PROTO_CHECK(verdict.until_ms == now + 5000 && strcmp(verdict.reason, "5xx") == 0);
    //  The model layer covers every key of the provider, not other models.
    PROTO_CHECK(router_breaker_check(breaker, 1, 11, "m", now, false).state == ROUTER_BREAKER_OPEN);
    PROTO_CHECK(router_breaker_check(breaker, 1, 10, "other", now, false).state ==
                ROUTER_BREAKER_CLOSED);
    PROTO_CHECK(router_breaker_check(breaker, 2, 10, "m", now, false).state ==
                ROUTER_BREAKER_CLOSED);
    //  A straggler failing during the cooldown does not extend it.
    PROTO_CHECK(router_breaker_record(breaker, 1, 10, "m", 500, NULL, 0, now + 100) ==
                ROUTER_BREAKER_NONE);
    //  After the cooldown: half-open; one claim takes the trial, others wait.
    now += 5000;
    verdict = router_breaker_check(breaker, 1, 10, "m", now, false);
    PROTO_CHECK(verdict.state == ROUTER_BREAKER_HALF_OPEN && !verdict.trial);
    verdict = router_breaker_check(breaker, 1, 10, "m", now, true);
    PROTO_CHECK(verdict.state == ROUTER_BREAKER_HALF_OPEN && verdict.trial);
    verdict = router_breaker_check(breaker, 1, 11, "m", now, true);
    PROTO_CHECK(verdict.state == ROUTER_BREAKER_OPEN && !verdict.trial);
    //  The trial fails: re-opened at once with the doubled cooldown (10 s).
    PROTO_CHECK(router_breaker_record(breaker, 1, 10, "m", 502, NULL, 0, now + 10) ==
                ROUTER_BREAKER_OPENED);
    verdict = router_breaker_check(breaker, 1, 10, "m", now + 10, false);
    PROTO_CHECK(verdict.state == ROUTER_BREAKER_OPEN && verdict.until_ms == now + 10 + 10000);
    //  Next trial succeeds: closed, and the backoff starts over.
    now += 10 + 10000;
    PROTO_CHECK(router_breaker_check(breaker, 1, 10, "m", now, true).trial);
    PROTO_CHECK(router_breaker_record(breaker, 1, 10, "m", 200, NULL, 0, now) ==
                ROUTER_BREAKER_CLOSED_NOW);
    PROTO_CHECK(router_breaker_check(breaker, 1, 10, "m", now, false).state ==
                ROUTER_BREAKER_CLOSED);
    router_breaker_record(breaker, 1, 10, "m", 500, NULL, 0, now);
    router_breaker_record(breaker, 1, 10, "m", 500, NULL, 0, now);
    PROTO_CHECK(router_breaker_check(breaker, 1, 10, "m", now, false).until_ms == now + 5000);
    router_breaker_record(breaker, 1, 10, "m", 200, NULL, 0, now);
    return now;
}

//  Trials given up, 429's Retry-After and 404's long cooldown. Returns the clock after.
static uint64_t s_test_cooldowns(router_breaker_t *breaker, const router_breaker_config_t *config,
                                 uint64_t now)
{
    router_breaker_verdict_t verdict;
    //  A trial that never reports is given up after trial_timeout_ms.
    router_breaker_record(breaker, 3, 30, "t", 404, NULL, 0, now);
    now += config->cooldown_404_ms;
    PROTO_CHECK(router_breaker_check(breaker, 3, 30, "t", now, true).trial);
    PROTO_CHECK(!router_breaker_check(breaker, 3, 30, "t", now + 1, true).trial);
    PROTO_CHECK(
        router_breaker_check(breaker, 3, 30, "t", now + config->trial_timeout_ms, true).trial);
    router_breaker_reset_model(breaker, 3, "t");

    //  429 honours Retry-After, else the configured cooldown.
    PROTO_CHECK(router_breaker_record(breaker, 1, 10, "m", 429, "upstream_status", 1234, now) ==
                ROUTER_BREAKER_OPENED);
    verdict = router_breaker_check(breaker, 1, 10, "m", now, false);
    PROTO_CHECK(verdict.state == ROUTER_BREAKER_OPEN && verdict.until_ms == now + 1234);
    PROTO_CHECK(strcmp(verdict.reason, "429") == 0);
    //  A later 429 with a shorter wait does not shorten it.
    PROTO_CHECK(router_breaker_record(breaker, 1, 10, "m", 429, NULL, 10, now) ==
                ROUTER_BREAKER_NONE);
    router_breaker_record(breaker, 1, 11, "m2", 429, NULL, 0, now);
    PROTO_CHECK(router_breaker_check(breaker, 1, 11, "m2", now, false).until_ms ==
                now + config->cooldown_429_ms);

    //  404: a long cooldown, at once.
    router_breaker_record(breaker, 2, 20, "gone", 404, "upstream_status", 0, now);
    verdict = router_breaker_check(breaker, 2, 20, "gone", now + 60000, false);
    PROTO_CHECK(verdict.state == ROUTER_BREAKER_OPEN &&
                verdict.until_ms == now + config->cooldown_404_ms);
    return now;
}

//  The key layer: network failures, keys disabled by 401/403 and enabled again, and
//  outcomes that change nothing.
static void s_test_key_layer(router_breaker_t *breaker, const router_breaker_config_t *config,
                             uint64_t now)
{
    router_breaker_verdict_t verdict;
    //  Key layer: network failures open the key for every model.
    router_breaker_record(breaker, 2, 21, "a", 502, "connect_error", 0, now);
    PROTO_CHECK(router_breaker_check(breaker, 2, 21, "b", now, false).state ==
                ROUTER_BREAKER_CLOSED);
    router_breaker_record(breaker, 2, 21, "a", 504, "timeout", 0, now);
    verdict = router_breaker_check(breaker, 2, 21, "b", now, false);
    PROTO_CHECK(verdict.state == ROUTER_BREAKER_OPEN && verdict.key_layer);
    PROTO_CHECK(verdict.until_ms == now + config->cooldown_network_ms);
    PROTO_CHECK(strcmp(verdict.reason, "timeout") == 0);
    //  ... and a model-layer 502 without a transport error code is the model's.
    router_breaker_record(breaker, 2, 22, "c", 502, "upstream_status", 0, now);
    router_breaker_record(breaker, 2, 22, "c", 502, "upstream_status", 0, now);
    PROTO_CHECK(!router_breaker_check(breaker, 2, 22, "c", now, false).key_layer);

    //  401/403: disabled until re-enabled, never half-open, not by a 2xx.
    PROTO_CHECK(router_breaker_record(breaker, 4, 40, "m", 401, "upstream_status", 0, now) ==
                ROUTER_BREAKER_KEY_DISABLED);
    PROTO_CHECK(router_breaker_record(breaker, 4, 40, "m", 403, NULL, 0, now) ==
                ROUTER_BREAKER_NONE);
    verdict = router_breaker_check(breaker, 4, 40, "x", now + 999999999, true);
    PROTO_CHECK(verdict.state == ROUTER_BREAKER_DISABLED && !verdict.trial);
    PROTO_CHECK(strcmp(router_breaker_disabled_reason(breaker, 40), "401") == 0);
    router_breaker_record(breaker, 4, 40, "m", 200, NULL, 0, now);
    PROTO_CHECK(router_breaker_check(breaker, 4, 40, "m", now, false).state ==
                ROUTER_BREAKER_DISABLED);
    //  Re-enabled by the catalog only after it has shown the key inactive.
    PROTO_CHECK(!router_breaker_sync_key(breaker, 40, true));
    PROTO_CHECK(!router_breaker_sync_key(breaker, 40, false));
    PROTO_CHECK(router_breaker_sync_key(breaker, 40, true));
    PROTO_CHECK(router_breaker_check(breaker, 4, 40, "m", now, false).state ==
                ROUTER_BREAKER_CLOSED);
    //  ... or once its write is known committed, even if no catalog showed it
    //  (the operator re-enabled it before a reload came).
    router_breaker_record(breaker, 4, 40, "m", 401, NULL, 0, now);
    router_breaker_key_persisted(breaker, 40);
    PROTO_CHECK(router_breaker_sync_key(breaker, 40, true));
    router_breaker_record(breaker, 4, 40, "m", 403, NULL, 0, now);
    PROTO_CHECK(router_breaker_enable_key(breaker, 40));
    PROTO_CHECK(router_breaker_disabled_reason(breaker, 40) == NULL);

    //  Client errors and cancellations change nothing.
    PROTO_CHECK(router_breaker_record(breaker, 5, 50, "m", 400, NULL, 0, now) ==
                ROUTER_BREAKER_NONE);
    PROTO_CHECK(router_breaker_record(breaker, 5, 50, "m", 499, "client_cancelled", 0, now) ==
                ROUTER_BREAKER_NONE);
    PROTO_CHECK(router_breaker_check(breaker, 5, 50, "m", now, false).state ==
                ROUTER_BREAKER_CLOSED);
}

void router_breaker_test(bool verbose)
{
    if (verbose)
        printf(" * router_breaker: ");
    router_breaker_config_t config = router_breaker_defaults();
    config.threshold = 2;
    router_breaker_t *breaker = router_breaker_new(&config);
    uint64_t now = 1000;
    now = s_test_model_layer(breaker, now);
    now = s_test_cooldowns(breaker, &config, now);
    s_test_key_layer(breaker, &config, now);

    //  Two breakers fed the same outcomes agree (what two routers do).
    router_breaker_t *other = router_breaker_new(&config);
    router_breaker_t *both[2] = {breaker, other};
    for (int i = 0; i < 2; i++) {
        router_breaker_record(both[i], 7, 70, "z", 500, NULL, 0, now);
        router_breaker_record(both[i], 7, 70, "z", 500, NULL, 0, now + 1);
    }
    PROTO_CHECK(router_breaker_check(breaker, 7, 70, "z", now + 2, false).until_ms ==
                router_breaker_check(other, 7, 70, "z", now + 2, false).until_ms);
    router_breaker_destroy(&other);

    //  The listing shows what is not closed, with times for people.
    json_t *list = router_breaker_list(breaker, now, 1700000000000ULL);
    PROTO_CHECK(json_array_size(list) >= 4);
    bool saw_disabled_key = false;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *item = json_array_get(list, i);
        PROTO_CHECK(json_string_value(json_object_get(item, "state")));
        if (json_integer_value(json_object_get(item, "provider_key_id")) == 21)
            saw_disabled_key = json_integer_value(json_object_get(item, "reopens_at_ms")) ==
                               (json_int_t)(1700000000000ULL + config.cooldown_network_ms);
    }
    PROTO_CHECK(saw_disabled_key);
    json_decref(list);
    router_breaker_destroy(&breaker);
    PROTO_CHECK(breaker == NULL);
    if (verbose)
        printf("OK\n");
}
