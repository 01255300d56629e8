/*  router_sticky: session bindings and per-key model preferences, soft state
    with expiry.

    A session (X-Session-Id, Anthropic metadata.user_id, OpenAI `user`) is
    bound to the (provider, key, upstream model) that served it, so the
    provider's prompt cache keeps hitting. A binding expires `ttl_ms` after
    its last use; a failure on the bound candidate drops it and the next
    decision chooses afresh. Separately, per client key and provider, the
    upstream model that last answered successfully is remembered, and
    preferred among that provider's models.

    Bindings are learned from OUTCOMEs (every router hears them all) and
    from this router's own decisions; they are not durable: a restarted
    router relearns them from traffic. Pure data, no sockets.
*/
#ifndef ROUTER_STICKY_H_INCLUDED
#define ROUTER_STICKY_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ROUTER_SESSION_MAX 256 //  longer session ids are not bound

typedef struct {
    uint64_t provider_id;     //  providers.id
    uint64_t provider_key_id; //  provider_keys.id
    char upstream_model[128]; //  model at the provider
    uint64_t expires_ms;      //  when it lapses unless used again
    uint64_t bound_ms;        //  when it was made
} router_binding_t;

typedef struct _router_sticky_t router_sticky_t;

//  Creates the tables: session bindings live ttl_ms after their last use,
//  key preferences preference_ttl_ms; `max` caps each table's entries.
//  Caller owns return value.
router_sticky_t *router_sticky_new(uint64_t ttl_ms, uint64_t preference_ttl_ms, size_t max);

//  Destroys the tables; nulls the pointer.
void router_sticky_destroy(router_sticky_t **self_p);

//  The live binding of a session, or NULL. Borrowed until the next change.
const router_binding_t *router_sticky_get(router_sticky_t *self, const char *session,
                                          uint64_t now_ms);

//  Binds (or re-binds) a session and restarts its expiry. Ignored for an
//  empty or over-long session, or when the table is full of live entries.
void router_sticky_bind(router_sticky_t *self, const char *session, uint64_t provider_id,
                        uint64_t provider_key_id, const char *upstream_model, uint64_t now_ms);

//  Drops a session's binding. Returns true when there was one.
bool router_sticky_drop(router_sticky_t *self, const char *session);

//  Drops a session's binding only if it points at this candidate (it
//  failed). Returns true when it did.
bool router_sticky_drop_failed(router_sticky_t *self, const char *session, uint64_t provider_id,
                               uint64_t provider_key_id, const char *upstream_model);

//  Remembers the model that last served `key_id` well at a provider.
void router_sticky_prefer(router_sticky_t *self, uint64_t key_id, uint64_t provider_id,
                          const char *upstream_model, uint64_t now_ms);

//  The preferred model of `key_id` at a provider, or NULL. Borrowed.
const char *router_sticky_preferred(router_sticky_t *self, uint64_t key_id, uint64_t provider_id,
                                    uint64_t now_ms);

//  Removes expired entries. Returns how many went.
size_t router_sticky_sweep(router_sticky_t *self, uint64_t now_ms);

//  Live bindings.
size_t router_sticky_count(router_sticky_t *self);

//  Live bindings as a JSON array (one session only when `session` is not
//  NULL or ""), times in epoch ms via wall_now_ms. Caller owns return value.
json_t *router_sticky_list(router_sticky_t *self, const char *session, uint64_t now_ms,
                           uint64_t wall_now_ms);

//  Self test.
void router_sticky_test(bool verbose);

#endif
