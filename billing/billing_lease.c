#include "billing_lease.h"
#include "proto_text.h"
#include "proto_check.h"

#include <assert.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

//  A grant is at most this fraction of what is free.
#define S_SHARE_DIVISOR 4
//  Below these a grant is not worth it: ask with ADMIT instead.
#define S_MIN_REQUESTS_OF_MONEY 16
#define S_MIN_REQUESTS 4
#define S_MIN_REQUESTS_OF_TOKENS 8
#define S_MIN_SLOTS 2

typedef struct {
    uint64_t lease_id;            //  as the holder knows it
    uint64_t key_id;              //  api_keys.id
    uint64_t account_id;          //  the key's account
    char holder[128];             //  ingress instance id
    zframe_t *routing_id;         //  the holder's DEALER, for LEASE_REVOKE
    int64_t credit;               //  money granted so far
    int64_t settled;              //  costs settled under it
    int64_t hold;                 //  money held in the book for it now
    bool requests_limited;        //  rpm applies
    bool tokens_limited;          //  tpm applies
    bool slots_limited;           //  concurrency applies
    proto_limits_t key_terms;     //  the key's limits when last granted
    proto_limits_t account_terms; //  the account's limits when last granted
    uint64_t requests;            //  requests granted so far
    uint64_t tokens;              //  tokens granted so far
    uint64_t slots;               //  slots held now
    uint64_t expires_ms;          //  the holder admits nothing after this
    uint64_t release_ms;          //  what it still holds is released after this
    bool returned;                //  the holder gave it back
    bool revoked;                 //  we took it back (the holder's return may follow)
} s_lease_t;

struct _billing_lease_t {
    billing_book_t *book;          //  the money and limits (borrowed)
    billing_lease_config_t config; //  ttl, most credit per grant
    zhashx_t *leases;              //  "LEASE_ID" -> s_lease_t (owned)
    uint64_t next_id;              //  next lease id (random start: ids outlive restarts)
};

static const proto_limits_t s_no_limits = {.daily_micros = -1, .monthly_micros = -1};

static void s_lease_free(void **item)
{
    s_lease_t *lease = *item;
    if (lease)
        zframe_destroy(&lease->routing_id);
    free(lease);
    *item = NULL;
}

billing_lease_t *billing_lease_new(billing_book_t *book, const billing_lease_config_t *config)
{
    billing_lease_t *self = calloc(1, sizeof *self);
    assert(self);
    self->book = book;
    self->config = *config;
    self->leases = zhashx_new();
    zhashx_set_destructor(self->leases, s_lease_free);
    randombytes_buf(&self->next_id, sizeof self->next_id);
    self->next_id = (self->next_id >> 16) | 1;
    return self;
}

void billing_lease_destroy(billing_lease_t **self_p)
{
    assert(self_p);
    billing_lease_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy(&self->leases);
    free(self);
    *self_p = NULL;
}

static s_lease_t *s_find(billing_lease_t *self, uint64_t lease_id)
{
    char name[24];
    proto_text_u64(name, lease_id);
    return zhashx_lookup(self->leases, name);
}

static s_lease_t *s_find_holder(billing_lease_t *self, const char *holder, uint64_t key_id)
{
    for (s_lease_t *lease = zhashx_first(self->leases); lease; lease = zhashx_next(self->leases))
        if (lease->key_id == key_id && !lease->returned && strcmp(lease->holder, holder) == 0)
            return lease;
    return NULL;
}

static s_lease_t *s_insert(billing_lease_t *self, uint64_t lease_id, const billing_lease_ask_t *ask,
                           uint64_t account_id)
{
    s_lease_t *lease = calloc(1, sizeof *lease);
    assert(lease);
    lease->lease_id = lease_id;
    lease->key_id = ask->key_id;
    lease->account_id = account_id;
    snprintf(lease->holder, sizeof lease->holder, "%s", ask->holder ? ask->holder : "");
    char name[24];
    proto_text_u64(name, lease_id);
    zhashx_insert(self->leases, name, lease);
    return lease;
}

static billing_limit_t *s_account_limit(billing_lease_t *self, const proto_account_t *account)
{
    return &billing_book_account(self->book, account->id, account->balance_micros)->limit;
}

//  Moves a lease's hold to `hold` (never below zero), in the book too.
static void s_set_hold(billing_lease_t *self, proto_catalog_t *catalog, s_lease_t *lease,
                       int64_t hold)
{
    if (hold < 0)
        hold = 0;
    if (hold != lease->hold)
        billing_book_lease_hold(self->book, catalog, lease->account_id, lease->key_id,
                                hold - lease->hold);
    lease->hold = hold;
}

//  Takes (or, negative, gives back) requests, tokens and slots from the
//  key's and the account's limit counters.
static void s_block(billing_lease_t *self, proto_catalog_t *catalog, const s_lease_t *lease,
                    int64_t requests, int64_t tokens, int64_t slots, uint64_t now_ms)
{
    const proto_api_key_t *key = proto_catalog_key(catalog, lease->key_id);
    const proto_account_t *account = proto_catalog_account(catalog, lease->account_id);
    billing_limit_block(billing_book_key(self->book, lease->key_id),
                        key ? &key->limits : &s_no_limits, requests, tokens, slots, 0, now_ms);
    if (account)
        billing_limit_block(s_account_limit(self, account), &account->limits, requests, tokens,
                            slots, 0, now_ms);
}

//  The smaller of two room figures, -1 meaning "no limit".
static int64_t s_min_room(int64_t a, int64_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

//  What the key and its account leave free now.
static billing_room_t s_room(billing_lease_t *self, const proto_api_key_t *key,
                             const proto_account_t *account, uint64_t now_ms, uint64_t wall_us)
{
    billing_room_t key_room, account_room;
    billing_limit_room(billing_book_key(self->book, key->id), &key->limits, now_ms, wall_us,
                       &key_room);
    billing_limit_room(s_account_limit(self, account), &account->limits, now_ms, wall_us,
                       &account_room);
    billing_room_t room = {
        .micros = s_min_room(s_min_room(key_room.micros, account_room.micros),
                             billing_book_available(self->book, account)),
        .requests = s_min_room(key_room.requests, account_room.requests),
        .tokens = s_min_room(key_room.tokens, account_room.tokens),
        .slots = s_min_room(key_room.slots, account_room.slots),
    };
    if (room.micros < 0)
        room.micros = 0;
    return room;
}

//  How much to add to a lease's running total so that what its holder has
//  left reaches a share of what is free; -1 when even a share is too small
//  to lease (the holder should ask with ADMIT).
static int64_t s_top_up(int64_t free_now, int64_t holder_left, int64_t minimum, int64_t cap)
{
    int64_t share = free_now / S_SHARE_DIVISOR;
    if (cap > 0 && share > cap)
        share = cap;
    if (share < minimum)
        return -1;
    //  Never more than is free, whatever the holder has left.
    int64_t add = share > holder_left ? share - holder_left : 0;
    return add < free_now ? add : free_now;
}

static void s_grant_out(const s_lease_t *lease, uint64_t ttl_ms, billing_lease_grant_t *grant)
{
    *grant = (billing_lease_grant_t){.status = 200,
                                     .lease_id = lease->lease_id,
                                     .credit_micros = lease->credit,
                                     .settled_micros = lease->settled,
                                     .requests_limited = lease->requests_limited,
                                     .requests = lease->requests,
                                     .tokens_limited = lease->tokens_limited,
                                     .tokens = lease->tokens,
                                     .slots_limited = lease->slots_limited,
                                     .slots = lease->slots,
                                     .ttl_ms = ttl_ms};
}

//  A lease this instance does not know (it restarted, or the lease was
//  granted by the shard's previous owner): the holder's figures stand.
static s_lease_t *s_adopt(billing_lease_t *self, proto_catalog_t *catalog,
                          const billing_lease_ask_t *ask, uint64_t account_id)
{
    s_lease_t *lease = s_insert(self, ask->lease_id, ask, account_id);
    lease->credit = ask->credit_micros > 0 ? ask->credit_micros : 0;
    lease->settled = ask->used_micros > 0 ? ask->used_micros : 0;
    lease->requests = ask->requests_used;
    lease->tokens = ask->tokens_used;
    s_set_hold(self, catalog, lease, lease->credit - lease->settled);
    lease->slots = ask->slots_used;
    s_block(self, catalog, lease, 0, 0, (int64_t)lease->slots, 0);
    return lease;
}

void billing_lease_ask(billing_lease_t *self, proto_catalog_t *catalog,
                       const billing_lease_ask_t *ask, uint64_t now_ms, uint64_t wall_us,
                       billing_lease_grant_t *grant)
{
    memset(grant, 0, sizeof *grant);
    grant->status = 204;
    const proto_api_key_t *key = proto_catalog_key(catalog, ask->key_id);
    const proto_account_t *account = key ? proto_catalog_account(catalog, key->account_id) : NULL;
    if (!key || !account) {
        //  The holder's catalog knows it (it authenticated the key), ours
        //  not yet: "unknown yet", and the holder asks again soon.
        grant->status = 404;
        return;
    }
    if (proto_catalog_key_problem(catalog, key, wall_us))
        return; //  ADMIT says what is wrong with it
    if (!account->active)
        return;
    s_lease_t *lease = ask->lease_id ? s_find(self, ask->lease_id) : NULL;
    if (lease && (lease->key_id != ask->key_id || strcmp(lease->holder, ask->holder) != 0))
        return; //  not this holder's
    if (!lease && ask->lease_id)
        lease = s_adopt(self, catalog, ask, account->id);
    if (!lease)
        lease = s_find_holder(self, ask->holder, ask->key_id);
    if (lease && (lease->revoked || lease->returned))
        return;
    bool fresh = !lease;
    billing_room_t room = s_room(self, key, account, now_ms, wall_us);
    //  What the holder still has of each, as it counts its own use.
    int64_t money_left =
        lease ? lease->credit - (ask->used_micros > 0 ? ask->used_micros : 0) - ask->inflight : 0;
    int64_t requests_left = lease ? (int64_t)lease->requests - (int64_t)ask->requests_used : 0;
    int64_t tokens_left = lease ? (int64_t)lease->tokens - (int64_t)ask->tokens_used : 0;
    int64_t slots_left = lease ? (int64_t)lease->slots - (int64_t)ask->slots_used : 0;
    int64_t hint = ask->hint_micros > 0 ? ask->hint_micros : 0;
    int64_t money = s_top_up(room.micros, money_left < 0 ? 0 : money_left,
                             hint * S_MIN_REQUESTS_OF_MONEY, self->config.max_micros);
    if (hint == 0 && money < 0)
        money = 0; //  a free model: credit is no object
    int64_t requests =
        room.requests < 0 ? 0 : s_top_up(room.requests, requests_left, S_MIN_REQUESTS, 0);
    int64_t tokens = room.tokens < 0
                         ? 0
                         : s_top_up(room.tokens, tokens_left,
                                    (int64_t)ask->hint_tokens * S_MIN_REQUESTS_OF_TOKENS, 0);
    int64_t slots = room.slots < 0 ? 0 : s_top_up(room.slots, slots_left, S_MIN_SLOTS, 0);
    bool near_limit = money < 0 || requests < 0 || tokens < 0 || slots < 0;
    if (near_limit && fresh)
        return;
    if (fresh)
        lease = s_insert(self, self->next_id++, ask, account->id);
    lease->requests_limited = room.requests >= 0;
    lease->tokens_limited = room.tokens >= 0;
    lease->slots_limited = room.slots >= 0;
    lease->key_terms = key->limits;
    lease->account_terms = account->limits;
    if (!near_limit) {
        //  Near a limit an existing lease keeps what it holds (it is held
        //  here) but gets no more: its holder turns to ADMIT when it runs out.
        lease->credit += money;
        s_set_hold(self, catalog, lease, lease->credit - lease->settled);
        lease->requests += (uint64_t)requests;
        lease->tokens += (uint64_t)tokens;
        lease->slots += (uint64_t)slots;
        s_block(self, catalog, lease, requests, tokens, slots, now_ms);
    }
    if (!lease->routing_id && ask->routing_id)
        lease->routing_id = zframe_dup(ask->routing_id);
    lease->expires_ms = now_ms + self->config.ttl_ms;
    lease->release_ms = lease->expires_ms + self->config.settle_grace_ms;
    s_grant_out(lease, self->config.ttl_ms, grant);
}

bool billing_lease_settle(billing_lease_t *self, proto_catalog_t *catalog, uint64_t lease_id,
                          int64_t cost_micros)
{
    s_lease_t *lease = s_find(self, lease_id);
    if (!lease)
        return false;
    if (cost_micros < 0)
        cost_micros = 0;
    lease->settled += cost_micros;
    if (lease->returned || lease->revoked)
        s_set_hold(self, catalog, lease, lease->hold - cost_micros);
    else
        s_set_hold(self, catalog, lease, lease->credit - lease->settled);
    return true;
}

void billing_lease_return(billing_lease_t *self, proto_catalog_t *catalog, uint64_t lease_id,
                          int64_t used, int64_t inflight, uint64_t requests_used,
                          uint64_t tokens_used, uint64_t slots_used, uint64_t now_ms)
{
    s_lease_t *lease = s_find(self, lease_id);
    if (!lease || lease->returned)
        return;
    int64_t requests = lease->requests_limited && lease->requests > requests_used
                           ? (int64_t)(lease->requests - requests_used)
                           : 0;
    int64_t tokens = lease->tokens_limited && lease->tokens > tokens_used
                         ? (int64_t)(lease->tokens - tokens_used)
                         : 0;
    int64_t slots = lease->slots > slots_used ? (int64_t)(lease->slots - slots_used) : 0;
    s_block(self, catalog, lease, -requests, -tokens, -slots, now_ms);
    lease->slots -= (uint64_t)slots;
    lease->requests -= (uint64_t)requests;
    lease->tokens -= (uint64_t)tokens;
    //  Still held: what the holder committed (its requests that ended and
    //  those in flight) that has not been settled here yet.
    int64_t committed = (used > 0 ? used : 0) + (inflight > 0 ? inflight : 0) - lease->settled;
    s_set_hold(self, catalog, lease, committed < lease->hold ? committed : lease->hold);
    lease->returned = true;
    lease->expires_ms = now_ms;
    lease->release_ms = now_ms + self->config.settle_grace_ms;
}

static void s_add_holder(zlistx_t *holders, zframe_t *routing_id)
{
    if (!routing_id)
        return;
    for (zframe_t *seen = zlistx_first(holders); seen; seen = zlistx_next(holders))
        if (zframe_eq(seen, routing_id))
            return;
    zlistx_add_end(holders, zframe_dup(routing_id));
}

size_t billing_lease_revoke(billing_lease_t *self, uint64_t account_id, uint64_t key_id,
                            zlistx_t *holders)
{
    size_t count = 0;
    for (s_lease_t *lease = zhashx_first(self->leases); lease; lease = zhashx_next(self->leases)) {
        if (lease->account_id != account_id || (key_id && lease->key_id != key_id) ||
            lease->returned || lease->revoked)
            continue; //  asked once is enough: its holder answers with LEASE_RETURN
        lease->revoked = true;
        s_add_holder(holders, lease->routing_id);
        count++;
    }
    return count;
}

static bool s_same_limits(const proto_limits_t *a, const proto_limits_t *b)
{
    return a->rpm == b->rpm && a->tpm == b->tpm && a->concurrency == b->concurrency &&
           a->daily_micros == b->daily_micros && a->monthly_micros == b->monthly_micros;
}

//  True when what the account's and key's leases hold no longer fits, or
//  was granted under limits that have changed since.
static bool s_overdrawn(billing_lease_t *self, proto_catalog_t *catalog, const s_lease_t *lease,
                        uint64_t now_ms, uint64_t wall_us)
{
    const proto_api_key_t *key = proto_catalog_key(catalog, lease->key_id);
    if (!key || proto_catalog_key_problem(catalog, key, wall_us))
        return true;
    const proto_account_t *account = proto_catalog_account(catalog, lease->account_id);
    if (!account || !account->active || key->account_id != account->id)
        return true;
    if (billing_book_available(self->book, account) < 0)
        return true;
    //  A limit lowered (or raised) since the grant: what the lease took
    //  from a bucket or a cap was a share of the old limit, which may be
    //  more than the new one allows, so the holder asks again.
    if (!s_same_limits(&lease->key_terms, &key->limits) ||
        !s_same_limits(&lease->account_terms, &account->limits))
        return true;
    billing_limit_t *limits[2] = {billing_book_key(self->book, key->id),
                                  s_account_limit(self, account)};
    const proto_limits_t *configured[2] = {&key->limits, &account->limits};
    for (int i = 0; i < 2; i++) {
        billing_room_t room;
        billing_limit_room(limits[i], configured[i], now_ms, wall_us, &room);
        const proto_limits_t *set = configured[i];
        if ((set->daily_micros >= 0 || set->monthly_micros >= 0) && room.micros == 0)
            return true;
        if (set->concurrency > 0 && limits[i]->in_flight > set->concurrency)
            return true;
        //  A limit set on either the key or its account, or lifted from
        //  both: lease again under the new terms.
        (void)set;
    }
    bool rpm = key->limits.rpm > 0 || account->limits.rpm > 0;
    bool tpm = key->limits.tpm > 0 || account->limits.tpm > 0;
    bool concurrency = key->limits.concurrency > 0 || account->limits.concurrency > 0;
    return rpm != lease->requests_limited || tpm != lease->tokens_limited ||
           concurrency != lease->slots_limited;
}

size_t billing_lease_review(billing_lease_t *self, proto_catalog_t *catalog, uint64_t now_ms,
                            uint64_t wall_us, zlistx_t *accounts)
{
    size_t count = 0;
    for (s_lease_t *lease = zhashx_first(self->leases); lease; lease = zhashx_next(self->leases)) {
        if (lease->returned || lease->revoked ||
            !s_overdrawn(self, catalog, lease, now_ms, wall_us))
            continue;
        bool listed = false;
        for (void *id = zlistx_first(accounts); id && !listed; id = zlistx_next(accounts))
            listed = (uint64_t)(uintptr_t)id == lease->account_id;
        if (!listed) {
            zlistx_add_end(accounts, (void *)(uintptr_t)lease->account_id);
            count++;
        }
    }
    return count;
}

size_t billing_lease_sweep(billing_lease_t *self, proto_catalog_t *catalog, uint64_t now_ms)
{
    zlistx_t *gone = zlistx_new();
    for (s_lease_t *lease = zhashx_first(self->leases); lease; lease = zhashx_next(self->leases))
        if (now_ms >= lease->release_ms)
            zlistx_add_end(gone, lease);
    size_t count = zlistx_size(gone);
    for (s_lease_t *lease = zlistx_first(gone); lease; lease = zlistx_next(gone)) {
        s_set_hold(self, catalog, lease, 0);
        s_block(self, catalog, lease, 0, 0, -(int64_t)lease->slots, now_ms);
        char name[24];
        proto_text_u64(name, lease->lease_id);
        zhashx_delete(self->leases, name);
    }
    zlistx_destroy(&gone);
    return count;
}

int64_t billing_lease_held(billing_lease_t *self, uint64_t account_id)
{
    int64_t held = 0;
    for (s_lease_t *lease = zhashx_first(self->leases); lease; lease = zhashx_next(self->leases))
        if (lease->account_id == account_id)
            held += lease->hold;
    return held;
}

size_t billing_lease_count(billing_lease_t *self)
{
    return zhashx_size(self->leases);
}

//  --------------------------------------------------------------------------
//  Self test

void billing_lease_test(bool verbose)
{
    if (verbose)
        printf(" * billing_lease: ");
    PROTO_CHECK(sodium_init() >= 0);
    char error[256];
    proto_catalog_t *catalog = proto_catalog_from_json(
        "{\"accounts\":[{\"id\":1,\"name\":\"a\",\"balance_micros\":1000000},"
        "{\"id\":2,\"name\":\"b\",\"balance_micros\":1000000,\"rpm\":100,\"concurrency\":40}],"
        "\"keys\":[{\"id\":10,\"account_id\":1,\"hash\":\"h10\"},"
        "{\"id\":20,\"account_id\":2,\"hash\":\"h20\"}]}",
        error, sizeof error);
    PROTO_CHECK(catalog);
    billing_book_t *book = billing_book_new();
    billing_lease_config_t config = {.ttl_ms = 2000, .max_micros = 0, .settle_grace_ms = 5000};
    billing_lease_t *leases = billing_lease_new(book, &config);
    uint64_t wall = 1790000000000000ULL;
    billing_lease_ask_t ask = {.holder = "ingress-1", .key_id = 10, .hint_micros = 1000};
    billing_lease_grant_t grant;

    //  A quarter of the 1.0 balance; the book holds it.
    billing_lease_ask(leases, catalog, &ask, 1000, wall, &grant);
    PROTO_CHECK(grant.status == 200 && grant.credit_micros == 250000 && !grant.requests_limited);
    const proto_account_t *a = proto_catalog_account(catalog, 1);
    PROTO_CHECK(billing_book_available(book, a) == 750000 &&
                billing_lease_held(leases, 1) == 250000);
    //  A second holder gets a quarter of what is left.
    billing_lease_ask_t other = {.holder = "ingress-2", .key_id = 10, .hint_micros = 1000};
    billing_lease_grant_t grant2;
    billing_lease_ask(leases, catalog, &other, 1000, wall, &grant2);
    PROTO_CHECK(grant2.status == 200 && grant2.credit_micros == 187500);
    PROTO_CHECK(billing_book_available(book, a) == 562500);
    //  Settling under the first lease moves money from its hold to pending.
    PROTO_CHECK(billing_lease_settle(leases, catalog, grant.lease_id, 50000));
    billing_book_settle(book, catalog, "r1", 1, 10, 50000, 10, true, 1000, wall);
    PROTO_CHECK(billing_lease_held(leases, 1) == 200000 + 187500);
    PROTO_CHECK(billing_book_available(book, a) == 562500);
    //  Renewing while the holder has more left than a quarter of what is
    //  free adds nothing (it used 50000 and has 20000 in flight: 180000
    //  left; a quarter of 562500 is 140625) but renews the expiry.
    ask.lease_id = grant.lease_id;
    ask.used_micros = 50000;
    ask.inflight = 20000;
    billing_lease_ask(leases, catalog, &ask, 1500, wall, &grant);
    PROTO_CHECK(grant.status == 200 && grant.credit_micros == 250000);
    //  Having used more (200000, 30000 left) it is topped up to the quarter.
    ask.used_micros = 200000;
    billing_lease_ask(leases, catalog, &ask, 1500, wall, &grant);
    PROTO_CHECK(grant.status == 200 && grant.credit_micros == 250000 + 140625 - 30000);
    int64_t held = billing_lease_held(leases, 1);
    PROTO_CHECK(held == grant.credit_micros - 50000 + 187500);
    //  Near the limit nothing new is leased: a hint of 100000 needs 16 times
    //  that in a quarter of what is free.
    billing_lease_ask_t big = {.holder = "ingress-3", .key_id = 10, .hint_micros = 100000};
    billing_lease_grant_t refused;
    billing_lease_ask(leases, catalog, &big, 1500, wall, &refused);
    PROTO_CHECK(refused.status == 204 && billing_lease_count(leases) == 2);
    //  The holder returns: the hold shrinks to what it committed (200000
    //  ended, 20000 in flight) less what was settled here (50000).
    billing_lease_return(leases, catalog, grant.lease_id, 200000, 20000, 0, 0, 0, 1600);
    PROTO_CHECK(billing_lease_held(leases, 1) == 170000 + 187500);
    billing_lease_settle(leases, catalog, grant.lease_id, 30000);
    PROTO_CHECK(billing_lease_held(leases, 1) == 140000 + 187500);
    //  Revoked leases answer no more; expiry releases what is left.
    zlistx_t *holders = zlistx_new();
    zlistx_set_destructor(holders, (zlistx_destructor_fn *)zframe_destroy);
    PROTO_CHECK(billing_lease_revoke(leases, 1, 0, holders) == 1);
    billing_lease_ask(leases, catalog, &other, 1700, wall, &refused);
    other.lease_id = grant2.lease_id;
    billing_lease_ask(leases, catalog, &other, 1700, wall, &refused);
    PROTO_CHECK(refused.status == 204);
    PROTO_CHECK(billing_lease_sweep(leases, catalog, 1000 + 2000 + 5000 + 1) == 2);
    PROTO_CHECK(billing_lease_held(leases, 1) == 0 && billing_lease_count(leases) == 0);
    PROTO_CHECK(billing_book_available(book, a) == 1000000 - 50000); //  r1 is pending

    //  Limits: rpm 100 gives 25 requests; concurrency 40 gives 10 slots,
    //  which count as in flight for ADMIT; a return gives the unused back.
    billing_lease_ask_t limited = {.holder = "ingress-1", .key_id = 20, .hint_micros = 0};
    billing_lease_ask(leases, catalog, &limited, 10000, wall, &grant);
    PROTO_CHECK(grant.status == 200 && grant.requests_limited && grant.requests == 25);
    PROTO_CHECK(grant.slots_limited && grant.slots == 10 && !grant.tokens_limited);
    const proto_account_t *b = proto_catalog_account(catalog, 2);
    billing_limit_t *b_limit = &billing_book_account(book, 2, b->balance_micros)->limit;
    PROTO_CHECK(b_limit->in_flight == 10);
    billing_lease_return(leases, catalog, grant.lease_id, 0, 0, 5, 0, 2, 10001);
    PROTO_CHECK(b_limit->in_flight == 2);
    billing_room_t room;
    billing_limit_room(b_limit, &b->limits, 10001, wall, &room);
    PROTO_CHECK(room.requests == 95);

    //  A key newer than this catalog: "unknown yet" (404), not "use ADMIT"
    //  (204, which keeps the holder away for a second); nothing is held.
    size_t count = billing_lease_count(leases);
    billing_lease_ask_t newer = {.holder = "ingress-1", .key_id = 30, .hint_micros = 10};
    billing_lease_ask(leases, catalog, &newer, 10002, wall, &refused);
    PROTO_CHECK(refused.status == 404 && billing_lease_count(leases) == count);

    //  Adoption: a lease this instance never granted keeps its holder's figures.
    billing_lease_ask_t known = {.holder = "ingress-9",
                                 .key_id = 10,
                                 .lease_id = 777,
                                 .credit_micros = 100000,
                                 .used_micros = 40000,
                                 .hint_micros = 10};
    billing_lease_ask(leases, catalog, &known, 20000, wall, &grant);
    PROTO_CHECK(grant.status == 200 && grant.lease_id == 777 && grant.credit_micros >= 100000);
    PROTO_CHECK(billing_lease_held(leases, 1) == grant.credit_micros - 40000);

    //  A limit changed since the grant revokes; the same limits do not.
    billing_lease_ask_t again = {.holder = "ingress-5", .key_id = 20, .hint_micros = 0};
    billing_lease_ask(leases, catalog, &again, 20000, wall, &grant);
    PROTO_CHECK(grant.status == 200 && grant.requests_limited);
    zlistx_t *changed = zlistx_new();
    PROTO_CHECK(billing_lease_review(leases, catalog, 20001, wall, changed) == 0);
    proto_catalog_t *lower = proto_catalog_from_json(
        "{\"accounts\":[{\"id\":1,\"name\":\"a\",\"balance_micros\":1000000},"
        "{\"id\":2,\"name\":\"b\",\"balance_micros\":1000000,\"rpm\":50,\"concurrency\":40}],"
        "\"keys\":[{\"id\":10,\"account_id\":1,\"hash\":\"h10\"},"
        "{\"id\":20,\"account_id\":2,\"hash\":\"h20\"}]}",
        error, sizeof error);
    PROTO_CHECK(lower);
    PROTO_CHECK(billing_lease_review(leases, lower, 20001, wall, changed) == 1);
    PROTO_CHECK((uint64_t)(uintptr_t)zlistx_first(changed) == 2);
    PROTO_CHECK(billing_lease_revoke(leases, 2, 0, holders) == 1);
    zlistx_destroy(&changed);
    proto_catalog_destroy(&lower);

    //  A catalog where the account has less than its leases hold: revoked.
    proto_catalog_t *poorer =
        proto_catalog_from_json("{\"accounts\":[{\"id\":1,\"name\":\"a\",\"balance_micros\":10}],"
                                "\"keys\":[{\"id\":10,\"account_id\":1,\"hash\":\"h10\"}]}",
                                error, sizeof error);
    billing_book_rebase(book, poorer);
    zlistx_t *accounts = zlistx_new();
    PROTO_CHECK(billing_lease_review(leases, poorer, 20001, wall, accounts) == 1);
    PROTO_CHECK((uint64_t)(uintptr_t)zlistx_first(accounts) == 1);
    zlistx_destroy(&accounts);
    proto_catalog_destroy(&poorer);
    zlistx_destroy(&holders);
    billing_lease_destroy(&leases);
    billing_book_destroy(&book);
    proto_catalog_destroy(&catalog);
    if (verbose)
        printf("OK\n");
}
