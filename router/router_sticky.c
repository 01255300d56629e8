#include "router_sticky.h"
#include "proto_text.h"
#include "proto_check.h"

#include <assert.h>
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct _router_sticky_t {
    zhashx_t *sessions;         //  session -> router_binding_t (owned)
    zhashx_t *preferences;      //  "KEY:PROVIDER" -> router_binding_t (owned; model + expiry)
    uint64_t ttl_ms;            //  life of an unused binding
    uint64_t preference_ttl_ms; //  life of an unrefreshed preference
    size_t max;                 //  entries per table
};

static void s_free(void **item)
{
    free(*item);
    *item = NULL;
}

router_sticky_t *router_sticky_new(uint64_t ttl_ms, uint64_t preference_ttl_ms, size_t max)
{
    router_sticky_t *self = calloc(1, sizeof *self);
    assert(self);
    self->sessions = zhashx_new();
    zhashx_set_destructor(self->sessions, s_free);
    self->preferences = zhashx_new();
    zhashx_set_destructor(self->preferences, s_free);
    self->ttl_ms = ttl_ms;
    self->preference_ttl_ms = preference_ttl_ms;
    self->max = max ? max : 1;
    return self;
}

void router_sticky_destroy(router_sticky_t **self_p)
{
    assert(self_p);
    router_sticky_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy(&self->sessions);
    zhashx_destroy(&self->preferences);
    free(self);
    *self_p = NULL;
}

static bool s_usable(const char *session)
{
    return session && *session && strlen(session) <= ROUTER_SESSION_MAX;
}

const router_binding_t *router_sticky_get(router_sticky_t *self, const char *session,
                                          uint64_t now_ms)
{
    if (!s_usable(session))
        return NULL;
    router_binding_t *binding = zhashx_lookup(self->sessions, session);
    if (binding && binding->expires_ms <= now_ms) {
        zhashx_delete(self->sessions, session);
        return NULL;
    }
    return binding;
}

//  Finds room for one more entry: sweeps when full. False when still full.
static bool s_room(router_sticky_t *self, zhashx_t *table, uint64_t now_ms)
{
    if (zhashx_size(table) < self->max)
        return true;
    router_sticky_sweep(self, now_ms);
    return zhashx_size(table) < self->max;
}

static void s_set(router_sticky_t *self, zhashx_t *table, const char *name, uint64_t provider_id,
                  uint64_t provider_key_id, const char *upstream_model, uint64_t now_ms,
                  uint64_t ttl_ms)
{
    router_binding_t *binding = zhashx_lookup(table, name);
    if (!binding) {
        if (!s_room(self, table, now_ms))
            return; //  full of live entries: serve without remembering
        binding = calloc(1, sizeof *binding);
        assert(binding);
        zhashx_insert(table, name, binding);
    }
    bool same = binding->provider_id == provider_id &&
                binding->provider_key_id == provider_key_id &&
                strcmp(binding->upstream_model, upstream_model) == 0;
    if (!same)
        binding->bound_ms = now_ms;
    binding->provider_id = provider_id;
    binding->provider_key_id = provider_key_id;
    snprintf(binding->upstream_model, sizeof binding->upstream_model, "%s", upstream_model);
    binding->expires_ms = now_ms + ttl_ms;
}

void router_sticky_bind(router_sticky_t *self, const char *session, uint64_t provider_id,
                        uint64_t provider_key_id, const char *upstream_model, uint64_t now_ms)
{
    if (s_usable(session))
        s_set(self, self->sessions, session, provider_id, provider_key_id, upstream_model, now_ms,
              self->ttl_ms);
}

bool router_sticky_drop(router_sticky_t *self, const char *session)
{
    if (!s_usable(session) || !zhashx_lookup(self->sessions, session))
        return false;
    zhashx_delete(self->sessions, session);
    return true;
}

bool router_sticky_drop_failed(router_sticky_t *self, const char *session, uint64_t provider_id,
                               uint64_t provider_key_id, const char *upstream_model)
{
    if (!s_usable(session))
        return false;
    router_binding_t *binding = zhashx_lookup(self->sessions, session);
    if (!binding || binding->provider_id != provider_id ||
        binding->provider_key_id != provider_key_id ||
        strcmp(binding->upstream_model, upstream_model) != 0)
        return false;
    zhashx_delete(self->sessions, session);
    return true;
}

static void s_preference_name(char *out, size_t size, uint64_t key_id, uint64_t provider_id)
{
    size_t used = 0;
    proto_text_add_u64(out, size, &used, key_id);
    proto_text_add(out, size, &used, ":");
    proto_text_add_u64(out, size, &used, provider_id);
}

void router_sticky_prefer(router_sticky_t *self, uint64_t key_id, uint64_t provider_id,
                          const char *upstream_model, uint64_t now_ms)
{
    char name[48];
    s_preference_name(name, sizeof name, key_id, provider_id);
    s_set(self, self->preferences, name, provider_id, 0, upstream_model, now_ms,
          self->preference_ttl_ms);
}

const char *router_sticky_preferred(router_sticky_t *self, uint64_t key_id, uint64_t provider_id,
                                    uint64_t now_ms)
{
    char name[48];
    s_preference_name(name, sizeof name, key_id, provider_id);
    router_binding_t *binding = zhashx_lookup(self->preferences, name);
    if (!binding)
        return NULL;
    if (binding->expires_ms <= now_ms) {
        zhashx_delete(self->preferences, name);
        return NULL;
    }
    return binding->upstream_model;
}

static size_t s_sweep(zhashx_t *table, uint64_t now_ms)
{
    zlistx_t *expired = zlistx_new();
    for (router_binding_t *binding = zhashx_first(table); binding; binding = zhashx_next(table))
        if (binding->expires_ms <= now_ms)
            zlistx_add_end(expired, (void *)zhashx_cursor(table));
    size_t count = zlistx_size(expired);
    //  Keys are the table's own strings: delete after the walk.
    for (const char *name = zlistx_first(expired); name; name = zlistx_next(expired)) {
        char copy[ROUTER_SESSION_MAX + 1];
        snprintf(copy, sizeof copy, "%s", name);
        zhashx_delete(table, copy);
    }
    zlistx_destroy(&expired);
    return count;
}

size_t router_sticky_sweep(router_sticky_t *self, uint64_t now_ms)
{
    return s_sweep(self->sessions, now_ms) + s_sweep(self->preferences, now_ms);
}

size_t router_sticky_count(router_sticky_t *self)
{
    return zhashx_size(self->sessions);
}

static json_t *s_binding_json(const char *session, const router_binding_t *binding, uint64_t now_ms,
                              uint64_t wall_now_ms)
{
    return json_pack("{s:s, s:I, s:I, s:s, s:I, s:I}", "session", session, "provider_id",
                     (json_int_t)binding->provider_id, "provider_key_id",
                     (json_int_t)binding->provider_key_id, "upstream_model",
                     binding->upstream_model, "bound_at_ms",
                     (json_int_t)(wall_now_ms - (now_ms - binding->bound_ms)), "expires_at_ms",
                     (json_int_t)(wall_now_ms + (binding->expires_ms - now_ms)));
}

json_t *router_sticky_list(router_sticky_t *self, const char *session, uint64_t now_ms,
                           uint64_t wall_now_ms)
{
    json_t *list = json_array();
    if (session && *session) {
        const router_binding_t *binding = router_sticky_get(self, session, now_ms);
        if (binding)
            json_array_append_new(list, s_binding_json(session, binding, now_ms, wall_now_ms));
        return list;
    }
    for (router_binding_t *binding = zhashx_first(self->sessions); binding;
         binding = zhashx_next(self->sessions))
        if (binding->expires_ms > now_ms)
            json_array_append_new(
                list, s_binding_json(zhashx_cursor(self->sessions), binding, now_ms, wall_now_ms));
    return list;
}

void router_sticky_test(bool verbose)
{
    if (verbose)
        printf(" * router_sticky: ");
    router_sticky_t *sticky = router_sticky_new(1000, 1000, 3);
    PROTO_CHECK(router_sticky_get(sticky, "s1", 0) == NULL);
    router_sticky_bind(sticky, "s1", 1, 10, "m", 0);
    const router_binding_t *binding = router_sticky_get(sticky, "s1", 999);
    PROTO_CHECK(binding && binding->provider_key_id == 10 &&
                strcmp(binding->upstream_model, "m") == 0);
    //  Use restarts the expiry (sliding), re-binding moves it.
    router_sticky_bind(sticky, "s1", 1, 10, "m", 900);
    PROTO_CHECK(router_sticky_get(sticky, "s1", 1500));
    PROTO_CHECK(router_sticky_get(sticky, "s1", 1900) == NULL);
    //  A failure elsewhere leaves it; a failure of the bound candidate drops it.
    router_sticky_bind(sticky, "s2", 2, 20, "x", 2000);
    PROTO_CHECK(!router_sticky_drop_failed(sticky, "s2", 2, 21, "x"));
    PROTO_CHECK(router_sticky_drop_failed(sticky, "s2", 2, 20, "x"));
    PROTO_CHECK(router_sticky_get(sticky, "s2", 2000) == NULL);
    //  Empty and over-long sessions are never bound.
    router_sticky_bind(sticky, "", 1, 1, "m", 0);
    char long_session[ROUTER_SESSION_MAX + 2];
    memset(long_session, 'a', sizeof long_session - 1);
    long_session[sizeof long_session - 1] = '\0';
    router_sticky_bind(sticky, long_session, 1, 1, "m", 3000);
    PROTO_CHECK(router_sticky_count(sticky) == 0);
    //  Full of live entries: new sessions are served unbound; expired make room.
    router_sticky_bind(sticky, "a", 1, 1, "m", 3000);
    router_sticky_bind(sticky, "b", 1, 1, "m", 3000);
    router_sticky_bind(sticky, "c", 1, 1, "m", 3500);
    router_sticky_bind(sticky, "d", 1, 1, "m", 3500);
    PROTO_CHECK(router_sticky_count(sticky) == 3 && !router_sticky_get(sticky, "d", 3500));
    router_sticky_bind(sticky, "d", 1, 1, "m", 4200);
    PROTO_CHECK(router_sticky_get(sticky, "d", 4200) && router_sticky_count(sticky) == 2);
    json_t *list = router_sticky_list(sticky, NULL, 4200, 1000000);
    PROTO_CHECK(json_array_size(list) == 2);
    json_decref(list);
    list = router_sticky_list(sticky, "d", 4200, 1000000);
    PROTO_CHECK(json_array_size(list) == 1 &&
                json_integer_value(json_object_get(json_array_get(list, 0), "expires_at_ms")) ==
                    1001000);
    json_decref(list);
    PROTO_CHECK(router_sticky_drop(sticky, "d") && !router_sticky_drop(sticky, "d"));
    //  Preferences per (client key, provider).
    PROTO_CHECK(router_sticky_preferred(sticky, 7, 1, 0) == NULL);
    router_sticky_prefer(sticky, 7, 1, "gpt-4o-2024", 5000);
    router_sticky_prefer(sticky, 7, 2, "other", 5000);
    PROTO_CHECK(strcmp(router_sticky_preferred(sticky, 7, 1, 5500), "gpt-4o-2024") == 0);
    PROTO_CHECK(router_sticky_preferred(sticky, 8, 1, 5500) == NULL);
    PROTO_CHECK(router_sticky_preferred(sticky, 7, 1, 6000) == NULL);
    PROTO_CHECK(router_sticky_sweep(sticky, 10000) >= 1);
    router_sticky_destroy(&sticky);
    if (verbose)
        printf("OK\n");
}
