/*  ingress_models: the model lists clients read (GET /v1/models, /models,
    /v1beta/models, and one model by name), in the shape of the client's
    protocol.

    A key may use a name when billing would admit it: an active logical
    model that the key's and its account's allowed_models leave in
    (proto_catalog_key_allows). However its pairs are found (routes,
    include and matching rules, zero-config on the model's own name) the
    name is the logical model's, so the list is the logical models. A list
    is built once per (key, protocol) and kept for ingress.models_cache_ms
    or until the catalog changes, whichever comes first: clients such as
    IDE plugins poll the list, and a catalog of thousands of models is
    walked once per TTL, not once per poll.
*/
#ifndef INGRESS_MODELS_H_INCLUDED
#define INGRESS_MODELS_H_INCLUDED

#include "proto_catalog.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct _ingress_models_t ingress_models_t;

//  A cache of lists kept ttl_ms (0 = built for every request) and at most
//  max_entries (then emptied and refilled). Caller owns return value.
ingress_models_t *ingress_models_new(uint64_t ttl_ms, size_t max_entries);

//  Destroys the cache; nulls the pointer.
void ingress_models_destroy(ingress_models_t **self_p);

//  Forgets every list (a new catalog).
void ingress_models_reset(ingress_models_t *self);

//  The list body of what `key` may use, in protocol's shape (OpenAI
//  {object, data}, Anthropic {data, has_more, first_id, last_id}, Gemini
//  {models}). Borrowed: valid until the next call on self. *hit tells
//  whether it came from the cache (may be NULL).
const char *ingress_models_list(ingress_models_t *self, proto_catalog_t *catalog,
                                const proto_api_key_t *key, int protocol, uint64_t now_ms,
                                bool *hit);

//  One model's body (OpenAI and Anthropic by id, Gemini by "models/NAME"
//  or NAME), or NULL when the key may not use that name. Caller owns
//  return value.
char *ingress_models_one(proto_catalog_t *catalog, const proto_api_key_t *key, int protocol,
                         const char *name);

//  Entries held, for tests.
size_t ingress_models_size(ingress_models_t *self);

//  Self test.
void ingress_models_test(bool verbose);

#endif
