/*  proto_catalog: an in-memory snapshot of the configuration tables.

    Every program answers requests from memory (DESIGN: the hot path never
    waits on PostgreSQL); the catalog is that memory. It is loaded whole from
    PostgreSQL at start and again whenever proto_watch reports a change. A
    loaded catalog never changes: the owner swaps in a new one, so pointers
    into the old one stay valid until the owner destroys it.

    Entries are plain read-only structs; strings are owned by the catalog.
*/
#ifndef PROTO_CATALOG_H_INCLUDED
#define PROTO_CATALOG_H_INCLUDED

#include "proto_snapshot.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t count; //  entries in names
    char **names; //  allowed model names
    bool any;     //  true when no list is set: every model is allowed
} proto_model_list_t;

//  A set of tags, e.g. capabilities ("vision", "tools", "context-1m").
typedef struct {
    size_t count; //  entries in names
    char **names; //  the tags, as stored
} proto_tags_t;

typedef struct {
    int64_t rpm;            //  requests per minute, 0 = no limit
    int64_t tpm;            //  tokens per minute, 0 = no limit
    int64_t concurrency;    //  requests in flight, 0 = no limit
    int64_t daily_micros;   //  spend per UTC day, -1 = no cap
    int64_t monthly_micros; //  spend per UTC month, -1 = no cap
} proto_limits_t;

typedef struct {
    uint64_t id;                     //  accounts.id
    char *name;                      //  unique name
    bool active;                     //  status = 'active'
    int64_t balance_micros;          //  balance when loaded
    char *currency;                  //  e.g. USD
    proto_limits_t limits;           //  account-wide limits
    proto_model_list_t models;       //  allowed models
    proto_tags_t force_capabilities; //  every request of the account needs these
    int64_t multiplier_ppm;          //  cost multiplier, parts per million (0 = free tier)
} proto_account_t;

typedef struct {
    uint64_t id;                     //  api_keys.id
    uint64_t account_id;             //  owner
    char *name;                      //  label
    char hash[65];                   //  SHA-256 hex of the key
    char *prefix;                    //  display prefix
    char *status;                    //  active, disabled or revoked
    int64_t expires_us;              //  epoch microseconds, 0 = never
    proto_limits_t limits;           //  per-key limits
    proto_model_list_t models;       //  allowed models
    proto_tags_t force_capabilities; //  every request with the key needs these
} proto_api_key_t;

typedef struct {
    uint64_t id;    //  providers.id
    char *name;     //  unique name
    int protocol;   //  proto_protocol_t
    char *base_url; //  without trailing slash
    int priority;   //  higher first
    int weight;     //  share among equals
    bool active;    //  status = 'active'
    bool strict;    //  strict_conversion: refuse what conversion would drop
    //  Reaching it as it is (migration 0012, docs/routing.md "Reaching providers"):
    proto_tags_t headers;        //  extra request headers, each "Name: value"
    proto_tags_t proxies;        //  proxy URLs (opened), used in turn; empty when sealed
    size_t proxy_count;          //  proxies configured, known even when sealed
    char *path;                  //  generate endpoint path template, NULL = the protocol's
    proto_tags_t blocked_models; //  glob patterns of upstream models never sent here
    uint64_t failover[4];        //  bit (status - 400): fails over whatever the default
    uint64_t returned[4];        //  bit (status - 400): returned as it is, whatever the default
    uint64_t account_id;         //  the account that owns it (bring your own key), 0 = operator's
    //  Default prices (migration 0019): what a model it lists costs when no
    //  logical model has that name. -1 in and out: none, it adds no names
    //  (one that other providers' prices admit may still be served through
    //  it, charged at their highest). Cache prices default to the input
    //  price, the request price to 0.
    int64_t default_price_in_micros;          //  per million input tokens
    int64_t default_price_out_micros;         //  per million output tokens
    int64_t default_price_cache_read_micros;  //  per million cache-read tokens
    int64_t default_price_cache_write_micros; //  per million cache-write tokens
    int64_t default_price_request_micros;     //  per request
} proto_provider_t;

//  Per (provider, upstream model): protocol and path where they differ from
//  the provider's (migration 0012).
typedef struct {
    uint64_t id;          //  provider_model_settings.id
    uint64_t provider_id; //  provider
    char *model;          //  upstream model name
    int protocol;         //  proto_protocol_t, 0 = the provider's
    char *path;           //  path template, NULL = the provider's
} proto_model_setting_t;

typedef struct {
    uint64_t id;               //  provider_keys.id
    uint64_t provider_id;      //  owner
    char *secret;              //  opened secret, or NULL when not loaded with the key
    char *hint;                //  last characters, for humans
    int priority;              //  higher first
    int weight;                //  share among equals
    bool active;               //  status = 'active'
    int64_t multiplier_ppm;    //  cost multiplier, parts per million
    proto_tags_t capabilities; //  what this key can do (e.g. "context-1m")
    int64_t max_rps;           //  requests per second across the cluster, 0 = no limit
    int64_t max_concurrent;    //  requests in flight across the cluster, 0 = no limit
    char *disabled_reason;     //  why it is disabled, "" when none
    char *name;                //  label
} proto_provider_key_t;

typedef struct {
    uint64_t id;                         //  models.id
    char *name;                          //  the logical name clients use
    bool active;                         //  status = 'active'
    int64_t price_in_micros;             //  per million input tokens
    int64_t price_out_micros;            //  per million output tokens
    int64_t price_cache_read_micros;     //  per million cache-read tokens
    int64_t price_cache_write_micros;    //  per million cache-write tokens (5 min)
    int64_t price_cache_write_1h_micros; //  per million cache-write tokens (1 h; NULL: 5 min's)
    int64_t price_request_micros;        //  per request
    int64_t long_context_threshold;      //  input tokens above which long prices apply, 0 = none
    int64_t long_price_in_micros;        //  long-context input price
    int64_t long_price_out_micros;       //  long-context output price
    char *scheduling;                    //  scheduling mode
    int64_t created_s;                   //  creation time, epoch seconds
    proto_tags_t capabilities;           //  what the model offers everywhere it is served
    bool strict;                         //  strict_conversion: refuse what conversion would drop
    proto_tags_t force_capabilities;     //  every request for the model needs these
    int64_t max_output_tokens;           //  the most output tokens a request may ask, 0 = unknown
    int64_t price_image_micros;          //  per generated image; -1 (NULL): serves no images
    bool unlisted; //  no row: a name providers list, priced by their default prices (id 0)
} proto_model_t;

typedef struct {
    uint64_t id;          //  routes.id
    uint64_t model_id;    //  logical model
    uint64_t provider_id; //  provider
    char *upstream_model; //  name at the provider
    int priority;         //  higher first
    int weight;           //  share among equals
    bool active;          //  status = 'active'
} proto_route_t;

//  A mapping rule: resolves a logical model against providers' model lists.
typedef struct {
    uint64_t id;          //  mapping_rules.id
    uint64_t model_id;    //  logical model
    char *kind;           //  exact, prefix, keyword, regex, exclude_keyword,
                          //  include, exclude_provider
    char *pattern;        //  what it matches
    uint64_t provider_id; //  only this provider, 0 = any
    int priority;         //  higher first, for pairs it adds
    int weight;           //  share among equals, for pairs it adds
} proto_mapping_rule_t;

//  One model a provider listed when its model list was last fetched.
typedef struct {
    uint64_t provider_id; //  providers.id
    char *name;           //  model id at the provider
    int64_t first_seen_s; //  when the provider first listed it, epoch seconds
} proto_provider_model_t;

typedef struct _proto_catalog_t proto_catalog_t;

//  Loads a snapshot. With secret_key (64 hex) provider secrets are opened;
//  with NULL they stay sealed (secret = NULL). Returns NULL with a reason in
//  error. Caller owns return value.
proto_catalog_t *proto_catalog_load(PGconn *db, const char *secret_key, char *error,
                                    size_t error_size);

//  An empty catalog (for tests and for a start without a database).
proto_catalog_t *proto_catalog_new_empty(void);

//  A catalog from JSON, for tests and tools: an object with arrays
//  "accounts", "keys", "providers", "provider_keys", "models", "routes",
//  "mapping_rules", "provider_models", "model_settings", each element an object with the
//  entry's field names (e.g. {"id":1,"name":"p","protocol":"openai"});
//  absent fields take the schema's defaults, "status" is "active" unless
//  given, tags are arrays of strings; "snapshot" is pg_snapshot's text
//  (proto_catalog_saw_transaction). Returns NULL with a reason in error.
//  Caller owns return value.
proto_catalog_t *proto_catalog_from_json(const char *text, char *error, size_t error_size);

//  Destroys a snapshot; nulls the pointer.
void proto_catalog_destroy(proto_catalog_t **self_p);

//  True when the committed transaction `txid` (pg_current_xact_id() of a
//  writer, e.g. a ledger batch) is already in what this catalog read: its
//  balances include that transaction's charges. False when the catalog did
//  not see it, has no snapshot (JSON without "snapshot"), or txid is 0.
bool proto_catalog_saw_transaction(const proto_catalog_t *self, uint64_t txid);

//  Adds the unlisted models of a freshly loaded catalog (before anyone reads
//  it; proto_watch does it on every load): a name an active operator's
//  provider with default prices lists, that no logical model has and that
//  the provider does not block, becomes a model clients may name (docs/billing.md
//  "Names no logical model has"). Its prices, for admission, are the highest
//  of those providers' default prices; a request is charged at the serving
//  provider's (proto_catalog_serving_price). Nothing is added when
//  zero_config (router.zero_config) is off: routing would not serve them.
void proto_catalog_add_unlisted(proto_catalog_t *self, bool zero_config);

//  Lookups; NULL when absent. Returned entries are borrowed.
const proto_api_key_t *proto_catalog_key_by_hash(proto_catalog_t *self, const char *hash);
const proto_api_key_t *proto_catalog_key(proto_catalog_t *self, uint64_t id);
const proto_account_t *proto_catalog_account(proto_catalog_t *self, uint64_t id);
const proto_model_t *proto_catalog_model_by_name(proto_catalog_t *self, const char *name);
//  A logical model by name, else an unlisted one (proto_catalog_add_unlisted).
const proto_model_t *proto_catalog_model_named(proto_catalog_t *self, const char *name);
//  The model a client's model name is admitted and priced as: the model of
//  that name (logical, else unlisted), else for `provider/model` (a
//  provider's name, then a model's) that model, as routing pins it to the
//  provider (docs/routing.md). NULL when neither.
const proto_model_t *proto_catalog_model_for_client(proto_catalog_t *self, const char *name);
//  The prices a request for `model` served through provider_id is charged
//  at: the model itself when it is a logical one; for an unlisted one the
//  provider's default prices, written into *scratch, or the model's (the
//  highest) when that provider's prices did not admit it (none, disabled,
//  an account's own, unknown). `model` NULL (the name left the catalog
//  since admission): the provider's default prices when it has them, else
//  NULL. Borrowed or scratch.
const proto_model_t *proto_catalog_serving_price(proto_catalog_t *self, const proto_model_t *model,
                                                 uint64_t provider_id, proto_model_t *scratch);
const proto_model_t *proto_catalog_model(proto_catalog_t *self, uint64_t id);
const proto_provider_t *proto_catalog_provider(proto_catalog_t *self, uint64_t id);
const proto_provider_key_t *proto_catalog_provider_key(proto_catalog_t *self, uint64_t id);

//  Iteration by index, 0 .. count-1.
size_t proto_catalog_model_count(proto_catalog_t *self);
const proto_model_t *proto_catalog_model_at(proto_catalog_t *self, size_t index);
size_t proto_catalog_route_count(proto_catalog_t *self);
const proto_route_t *proto_catalog_route_at(proto_catalog_t *self, size_t index);
size_t proto_catalog_provider_key_count(proto_catalog_t *self);
const proto_provider_key_t *proto_catalog_provider_key_at(proto_catalog_t *self, size_t index);
size_t proto_catalog_key_count(proto_catalog_t *self);
size_t proto_catalog_provider_count(proto_catalog_t *self);
const proto_provider_t *proto_catalog_provider_at(proto_catalog_t *self, size_t index);
//  Mapping rules, by model then id.
size_t proto_catalog_rule_count(proto_catalog_t *self);
const proto_mapping_rule_t *proto_catalog_rule_at(proto_catalog_t *self, size_t index);
//  Fetched provider model lists, by provider then name (empty before
//  migration 0002 or before tollgate-health fetched them).
size_t proto_catalog_provider_model_count(proto_catalog_t *self);
//  Unlisted models (proto_catalog_add_unlisted), by name.
size_t proto_catalog_unlisted_count(proto_catalog_t *self);
const proto_model_t *proto_catalog_unlisted_at(proto_catalog_t *self, size_t index);
const proto_provider_model_t *proto_catalog_provider_model_at(proto_catalog_t *self, size_t index);

//  The settings of (provider, upstream model), or NULL when it has none. Borrowed.
const proto_model_setting_t *proto_catalog_model_setting(proto_catalog_t *self,
                                                         uint64_t provider_id, const char *model);

//  What a provider says about an upstream status: 1 fail over, 0 return it
//  as it is, -1 no word (the default classification applies).
int proto_provider_status_policy(const proto_provider_t *provider, int status);

//  True when the provider's block list matches the upstream model (glob
//  patterns, case-insensitive).
bool proto_provider_blocks(const proto_provider_t *provider, const char *model);

//  A provider by name; NULL when absent. Borrowed.
const proto_provider_t *proto_catalog_provider_by_name(proto_catalog_t *self, const char *name);

//  True when the tag set holds `tag` (exact, case-insensitive).
bool proto_tags_has(const proto_tags_t *tags, const char *tag);

//  True when a model list allows the name.
bool proto_model_list_allows(const proto_model_list_t *list, const char *model);

//  Why a key may not be used now, or NULL when it may: "unknown", "disabled",
//  "revoked", "expired", "account_disabled". `now_us` is epoch microseconds.
const char *proto_catalog_key_problem(proto_catalog_t *self, const proto_api_key_t *key,
                                      uint64_t now_us);

//  True when key and its account both allow the model, and the model is active.
bool proto_catalog_key_allows(proto_catalog_t *self, const proto_api_key_t *key, const char *model);

//  Parses "openai", "anthropic", "gemini" to proto_protocol_t; 0 when unknown.
int proto_protocol_parse(const char *name);

//  Name of a proto_protocol_t. Static string.
const char *proto_protocol_name(int protocol);

#endif
