#include "ingress_lease.h"
#include "proto_text.h"
#include "proto_check.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define S_ASK_AGAIN_MS 500 //  an unanswered ask may be repeated after this
#define S_REFUSED_MS 1000  //  after a refusal the key goes to ADMIT this long
#define S_UNKNOWN_MS 50    //  first wait after "unknown yet", doubling to S_REFUSED_MS

typedef struct {
    uint64_t key_id;                         //  api_keys.id
    uint64_t account_id;                     //  its account (picks the billing instance)
    uint64_t lease_id;                       //  0 until granted
    bool granted;                            //  a grant arrived and is in force
    int64_t credit;                          //  money granted so far
    int64_t spent;                           //  costs of our requests that ended
    int64_t inflight;                        //  estimates of our requests in flight
    bool requests_limited;                   //  rpm applies
    uint64_t requests;                       //  granted so far
    uint64_t requests_used;                  //  started
    bool tokens_limited;                     //  tpm applies
    uint64_t tokens;                         //  granted so far
    uint64_t tokens_used;                    //  taken by estimates, then by what was used
    bool slots_limited;                      //  concurrency applies
    uint64_t slots;                          //  held
    uint64_t slots_used;                     //  in flight
    uint64_t ttl_ms;                         //  of the last grant
    uint64_t expires_ms;                     //  no admission after this
    uint64_t asked_ms;                       //  an ask is out since then, 0 = none
    uint64_t refused_until;                  //  ADMIT only until then
    uint64_t unknown_wait_ms;                //  last wait after "unknown yet", 0 = none
    int64_t money_target;                    //  money left right after the last grant
    uint64_t requests_target;                //  requests left right after the last grant
    char grant[INGRESS_LEASE_GRANT_MAX + 1]; //  billing's voucher for SETTLEs under it
} s_lease_t;

struct _ingress_lease_t {
    char holder[128]; //  this ingress instance
    zhashx_t *leases; //  "KEY_ID" -> s_lease_t (owned)
};

static void s_free(void **item)
{
    free(*item);
    *item = NULL;
}

ingress_lease_t *ingress_lease_new(const char *holder)
{
    ingress_lease_t *self = calloc(1, sizeof *self);
    assert(self);
    snprintf(self->holder, sizeof self->holder, "%s", holder);
    self->leases = zhashx_new();
    zhashx_set_destructor(self->leases, s_free);
    return self;
}

void ingress_lease_destroy(ingress_lease_t **self_p)
{
    assert(self_p);
    ingress_lease_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy(&self->leases);
    free(self);
    *self_p = NULL;
}

static s_lease_t *s_find(ingress_lease_t *self, uint64_t key_id, bool create)
{
    char name[24];
    proto_text_u64(name, key_id);
    s_lease_t *lease = zhashx_lookup(self->leases, name);
    if (!lease && create) {
        lease = calloc(1, sizeof *lease);
        assert(lease);
        lease->key_id = key_id;
        zhashx_insert(self->leases, name, lease);
    }
    return lease;
}

static void s_remove(ingress_lease_t *self, uint64_t key_id)
{
    char name[24];
    proto_text_u64(name, key_id);
    zhashx_delete(self->leases, name);
}

static int64_t s_money_left(const s_lease_t *lease)
{
    return lease->credit - lease->spent - lease->inflight;
}

bool ingress_lease_admit(ingress_lease_t *self, uint64_t key_id, int64_t estimate, uint64_t tokens,
                         uint64_t now_ms, ingress_lease_take_t *take)
{
    memset(take, 0, sizeof *take);
    s_lease_t *lease = s_find(self, key_id, false);
    if (!lease || !lease->granted || now_ms >= lease->expires_ms)
        return false;
    if (estimate < 0)
        estimate = 0;
    if (s_money_left(lease) < estimate)
        return false;
    if (lease->requests_limited && lease->requests_used >= lease->requests)
        return false;
    if (lease->tokens_limited && lease->tokens_used + tokens > lease->tokens)
        return false;
    if (lease->slots_limited && lease->slots_used >= lease->slots)
        return false;
    lease->inflight += estimate;
    lease->requests_used++;
    lease->tokens_used += tokens;
    lease->slots_used++;
    *take =
        (ingress_lease_take_t){.lease_id = lease->lease_id, .micros = estimate, .tokens = tokens};
    snprintf(take->grant, sizeof take->grant, "%s", lease->grant);
    return true;
}

void ingress_lease_release(ingress_lease_t *self, uint64_t key_id, const ingress_lease_take_t *take,
                           int64_t cost_micros, uint64_t tokens_used)
{
    s_lease_t *lease = take->lease_id ? s_find(self, key_id, false) : NULL;
    if (!lease || lease->lease_id != take->lease_id)
        return;
    lease->inflight -= take->micros;
    if (lease->inflight < 0)
        lease->inflight = 0;
    lease->spent += cost_micros > 0 ? cost_micros : 0;
    //  Tokens: the estimate was taken; what was used counts instead.
    lease->tokens_used = lease->tokens_used - take->tokens + tokens_used;
    if (lease->slots_used)
        lease->slots_used--;
}

//  True when the lease should be renewed now: unusable, half its last
//  grant used, or half-way to its expiry.
static bool s_wants_more(const s_lease_t *lease, uint64_t now_ms)
{
    if (!lease->granted || now_ms >= lease->expires_ms)
        return true;
    if (lease->money_target > 0 && s_money_left(lease) * 2 < lease->money_target)
        return true;
    if (lease->requests_limited && lease->requests_target &&
        (lease->requests - lease->requests_used) * 2 < lease->requests_target)
        return true;
    return lease->expires_ms - now_ms < lease->ttl_ms / 2;
}

proto_msg_t *ingress_lease_ask(ingress_lease_t *self, uint64_t key_id, uint64_t account_id,
                               int64_t hint_micros, uint64_t hint_tokens, uint64_t now_ms)
{
    s_lease_t *lease = s_find(self, key_id, true);
    lease->account_id = account_id;
    if (now_ms < lease->refused_until)
        return NULL;
    if (lease->asked_ms && now_ms - lease->asked_ms < S_ASK_AGAIN_MS)
        return NULL;
    if (!s_wants_more(lease, now_ms))
        return NULL;
    lease->asked_ms = now_ms;
    proto_msg_t *ask = proto_msg_new(PROTO_MSG_LEASE_ASK);
    proto_msg_set_instance(ask, self->holder);
    proto_msg_set_key_id(ask, key_id);
    proto_msg_set_account_id(ask, account_id);
    if (lease->lease_id) {
        //  Our figures: a billing instance that does not know the lease
        //  (it restarted) takes them as they are.
        proto_msg_set_lease_id(ask, lease->lease_id);
        proto_msg_set_credit_micros(ask, lease->credit);
        proto_msg_set_used_micros(ask, lease->spent);
        proto_msg_set_reserve_micros(ask, lease->inflight);
        proto_msg_set_requests(ask, lease->requests_used);
        proto_msg_set_tokens(ask, lease->tokens_used);
        proto_msg_set_slots(ask, lease->slots_used);
    }
    proto_msg_set_cost_micros(ask, hint_micros > 0 ? hint_micros : 0);
    proto_msg_set_tokens_in(ask, hint_tokens);
    return ask;
}

void ingress_lease_granted(ingress_lease_t *self, const proto_msg_t *msg, uint64_t now_ms)
{
    s_lease_t *lease = s_find(self, proto_msg_key_id(msg), false);
    if (!lease)
        return; //  given back meanwhile; billing's hold lapses with its expiry
    lease->asked_ms = 0;
    if (proto_msg_status(msg) == 404) {
        //  Billing's catalog does not know the key yet (it was just made):
        //  ask again soon, waiting longer each time.
        lease->unknown_wait_ms = lease->unknown_wait_ms ? lease->unknown_wait_ms * 2 : S_UNKNOWN_MS;
        if (lease->unknown_wait_ms > S_REFUSED_MS)
            lease->unknown_wait_ms = S_REFUSED_MS;
        lease->refused_until = now_ms + lease->unknown_wait_ms;
        return;
    }
    lease->unknown_wait_ms = 0;
    if (proto_msg_status(msg) != 200) {
        //  Near a limit: ADMIT for a while. What the lease still covers is
        //  held by billing and may be used until it expires.
        lease->refused_until = now_ms + S_REFUSED_MS;
        return;
    }
    if (lease->lease_id && lease->lease_id != proto_msg_lease_id(msg)) {
        //  A new lease replaces one billing no longer knew: start over.
        lease->spent = lease->inflight = 0;
        lease->requests_used = lease->tokens_used = lease->slots_used = 0;
    }
    lease->lease_id = proto_msg_lease_id(msg);
    lease->granted = true;
    //  The grant names the lease id: a longer one is not billing's.
    const char *grant = proto_msg_has(msg, PROTO_FIELD_grant) ? proto_msg_grant(msg) : "";
    snprintf(lease->grant, sizeof lease->grant, "%s",
             strlen(grant) <= INGRESS_LEASE_GRANT_MAX ? grant : "");
    lease->credit = proto_msg_credit_micros(msg);
    lease->requests_limited = proto_msg_has(msg, PROTO_FIELD_requests);
    lease->requests = proto_msg_requests(msg);
    lease->tokens_limited = proto_msg_has(msg, PROTO_FIELD_tokens);
    lease->tokens = proto_msg_tokens(msg);
    lease->slots_limited = proto_msg_has(msg, PROTO_FIELD_slots);
    lease->slots = proto_msg_slots(msg);
    lease->ttl_ms = proto_msg_ttl_ms(msg);
    lease->expires_ms = now_ms + lease->ttl_ms;
    lease->money_target = s_money_left(lease);
    lease->requests_target =
        lease->requests > lease->requests_used ? lease->requests - lease->requests_used : 0;
}

static proto_msg_t *s_return(const s_lease_t *lease)
{
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_LEASE_RETURN);
    proto_msg_set_key_id(msg, lease->key_id);
    proto_msg_set_account_id(msg, lease->account_id);
    proto_msg_set_lease_id(msg, lease->lease_id);
    proto_msg_set_used_micros(msg, lease->spent);
    proto_msg_set_reserve_micros(msg, lease->inflight);
    proto_msg_set_requests(msg, lease->requests_used);
    proto_msg_set_tokens(msg, lease->tokens_used);
    proto_msg_set_slots(msg, lease->slots_used);
    return msg;
}

void ingress_lease_revoked(ingress_lease_t *self, const proto_msg_t *revoke, zlistx_t *returns)
{
    uint64_t account_id = proto_msg_account_id(revoke);
    uint64_t key_id = proto_msg_has(revoke, PROTO_FIELD_key_id) ? proto_msg_key_id(revoke) : 0;
    zlistx_t *gone = zlistx_new();
    for (s_lease_t *lease = zhashx_first(self->leases); lease; lease = zhashx_next(self->leases))
        if (lease->account_id == account_id && (!key_id || lease->key_id == key_id)) {
            if (lease->lease_id)
                zlistx_add_end(returns, s_return(lease));
            zlistx_add_end(gone, (void *)(uintptr_t)lease->key_id);
        }
    for (void *key = zlistx_first(gone); key; key = zlistx_next(gone))
        s_remove(self, (uint64_t)(uintptr_t)key);
    zlistx_destroy(&gone);
}

void ingress_lease_sweep(ingress_lease_t *self, uint64_t now_ms, zlistx_t *returns)
{
    zlistx_t *gone = zlistx_new();
    for (s_lease_t *lease = zhashx_first(self->leases); lease; lease = zhashx_next(self->leases)) {
        bool expired = lease->granted && now_ms >= lease->expires_ms;
        bool stale_ask = !lease->granted && lease->asked_ms && now_ms - lease->asked_ms > 10000;
        bool idle = !lease->granted && !lease->asked_ms && now_ms >= lease->refused_until;
        if (!expired && !stale_ask && !idle)
            continue;
        if (lease->lease_id)
            zlistx_add_end(returns, s_return(lease));
        zlistx_add_end(gone, (void *)(uintptr_t)lease->key_id);
    }
    for (void *key = zlistx_first(gone); key; key = zlistx_next(gone))
        s_remove(self, (uint64_t)(uintptr_t)key);
    zlistx_destroy(&gone);
}

size_t ingress_lease_count(ingress_lease_t *self)
{
    return zhashx_size(self->leases);
}

//  --------------------------------------------------------------------------
//  Self test

static proto_msg_t *s_test_grant(uint64_t key_id, uint64_t lease_id, int64_t credit,
                                 int64_t requests)
{
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_LEASE);
    proto_msg_set_key_id(msg, key_id);
    proto_msg_set_account_id(msg, 1);
    proto_msg_set_lease_id(msg, lease_id);
    proto_msg_set_status(msg, 200);
    proto_msg_set_credit_micros(msg, credit);
    if (requests >= 0)
        proto_msg_set_requests(msg, (uint64_t)requests);
    proto_msg_set_ttl_ms(msg, 2000);
    return msg;
}

void ingress_lease_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_lease: ");
    ingress_lease_t *leases = ingress_lease_new("ingress-test");
    ingress_lease_take_t take, other;
    //  No lease: ADMIT, and an ask goes out (once, until answered).
    PROTO_CHECK(!ingress_lease_admit(leases, 7, 100, 10, 1000, &take) && take.lease_id == 0);
    proto_msg_t *ask = ingress_lease_ask(leases, 7, 1, 100, 10, 1000);
    PROTO_CHECK(ask && proto_msg_type(ask) == PROTO_MSG_LEASE_ASK && !proto_msg_lease_id(ask));
    PROTO_CHECK(proto_msg_cost_micros(ask) == 100 &&
                strcmp(proto_msg_instance(ask), "ingress-test") == 0);
    proto_msg_destroy(&ask);
    PROTO_CHECK(!ingress_lease_ask(leases, 7, 1, 100, 10, 1100));
    //  Granted 1000 micros and 4 requests: four requests of 200 fit, then
    //  the requests run out.
    proto_msg_t *grant = s_test_grant(7, 55, 1000, 4);
    ingress_lease_granted(leases, grant, 1200);
    proto_msg_destroy(&grant);
    for (int i = 0; i < 4; i++)
        PROTO_CHECK(ingress_lease_admit(leases, 7, 200, 10, 1300, &take) && take.lease_id == 55);
    PROTO_CHECK(!ingress_lease_admit(leases, 7, 200, 10, 1300, &other));
    //  Running low: a renewal carries our figures.
    ask = ingress_lease_ask(leases, 7, 1, 200, 10, 1300);
    PROTO_CHECK(ask && proto_msg_lease_id(ask) == 55 && proto_msg_reserve_micros(ask) == 800 &&
                proto_msg_requests(ask) == 4);
    proto_msg_destroy(&ask);
    //  A request ends costing 50: 150 of its estimate comes back.
    ingress_lease_release(leases, 7, &take, 50, 12);
    grant = s_test_grant(7, 55, 1500, 8);
    ingress_lease_granted(leases, grant, 1400);
    proto_msg_destroy(&grant);
    PROTO_CHECK(ingress_lease_admit(leases, 7, 800, 0, 1400, &take)); //  1500 - 50 - 600 = 850 left
    PROTO_CHECK(!ingress_lease_admit(leases, 7, 100, 0, 1400, &other));
    //  Expired: ADMIT again; the sweep gives it back with what is in flight.
    PROTO_CHECK(!ingress_lease_admit(leases, 7, 1, 0, 1400 + 2000, &other));
    zlistx_t *returns = zlistx_new();
    ingress_lease_sweep(leases, 1400 + 2000, returns);
    PROTO_CHECK(zlistx_size(returns) == 1);
    proto_msg_t *back = zlistx_first(returns);
    PROTO_CHECK(proto_msg_type(back) == PROTO_MSG_LEASE_RETURN && proto_msg_lease_id(back) == 55 &&
                proto_msg_reserve_micros(back) == 1400);
    proto_msg_destroy(&back);
    zlistx_purge(returns);
    PROTO_CHECK(ingress_lease_count(leases) == 0);
    //  A refusal sends the key to ADMIT for a while.
    ask = ingress_lease_ask(leases, 8, 1, 100, 0, 5000);
    proto_msg_destroy(&ask);
    proto_msg_t *refusal = proto_msg_new(PROTO_MSG_LEASE);
    proto_msg_set_key_id(refusal, 8);
    proto_msg_set_account_id(refusal, 1);
    proto_msg_set_lease_id(refusal, 0);
    proto_msg_set_status(refusal, 204);
    ingress_lease_granted(leases, refusal, 5001);
    proto_msg_destroy(&refusal);
    PROTO_CHECK(!ingress_lease_ask(leases, 8, 1, 100, 0, 5500));
    ask = ingress_lease_ask(leases, 8, 1, 100, 0, 6100);
    PROTO_CHECK(ask);
    proto_msg_destroy(&ask);
    //  Revocation: every lease of the account goes back.
    grant = s_test_grant(8, 66, 1000, -1);
    ingress_lease_granted(leases, grant, 6200);
    proto_msg_destroy(&grant);
    PROTO_CHECK(ingress_lease_admit(leases, 8, 100, 0, 6200, &take));
    proto_msg_t *revoke = proto_msg_new(PROTO_MSG_LEASE_REVOKE);
    proto_msg_set_account_id(revoke, 1);
    ingress_lease_revoked(leases, revoke, returns);
    proto_msg_destroy(&revoke);
    back = zlistx_first(returns);
    PROTO_CHECK(zlistx_size(returns) == 1 && proto_msg_lease_id(back) == 66 &&
                proto_msg_reserve_micros(back) == 100);
    proto_msg_destroy(&back);
    zlistx_destroy(&returns);
    PROTO_CHECK(!ingress_lease_admit(leases, 8, 100, 0, 6200, &other));
    ingress_lease_release(leases, 8, &take, 10, 0); //  of a lease that is gone: ignored
    //  "Unknown yet" (billing's catalog is older than ours): asked again
    //  after 50 ms, then 100 ms, not after a refusal's second.
    ask = ingress_lease_ask(leases, 9, 1, 100, 0, 7000);
    PROTO_CHECK(ask);
    proto_msg_destroy(&ask);
    proto_msg_t *unknown = proto_msg_new(PROTO_MSG_LEASE);
    proto_msg_set_key_id(unknown, 9);
    proto_msg_set_account_id(unknown, 1);
    proto_msg_set_lease_id(unknown, 0);
    proto_msg_set_status(unknown, 404);
    ingress_lease_granted(leases, unknown, 7001);
    PROTO_CHECK(!ingress_lease_ask(leases, 9, 1, 100, 0, 7040));
    ask = ingress_lease_ask(leases, 9, 1, 100, 0, 7060);
    PROTO_CHECK(ask);
    proto_msg_destroy(&ask);
    ingress_lease_granted(leases, unknown, 7061);
    PROTO_CHECK(!ingress_lease_ask(leases, 9, 1, 100, 0, 7150));
    ask = ingress_lease_ask(leases, 9, 1, 100, 0, 7170);
    PROTO_CHECK(ask);
    proto_msg_destroy(&ask);
    proto_msg_destroy(&unknown);
    grant = s_test_grant(9, 99, 1000, -1);
    ingress_lease_granted(leases, grant, 7200);
    proto_msg_destroy(&grant);
    PROTO_CHECK(ingress_lease_admit(leases, 9, 100, 0, 7200, &take));
    ingress_lease_release(leases, 9, &take, 100, 0);
    ingress_lease_destroy(&leases);
    if (verbose)
        printf("OK\n");
}
