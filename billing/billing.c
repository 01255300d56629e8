#include "billing.h"
#include "proto_check.h"
#include "billing_balance.h"
#include "billing_book.h"
#include "billing_committed.h"
#include "billing_grant.h"
#include "billing_lease.h"
#include "proto_price.h"
#include "proto_batch.h"
#include "proto_db.h"
#include "proto_log.h"
#include "proto_socket.h"
#include "proto_msg.h"
#include "proto_observe.h"
#include "proto_outbox.h"
#include "proto_trace.h"
#include "proto_watch.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

//  How often reservations are swept and gauges refreshed.
#define S_SWEEP_MS 5000
//  A reservation is released this long after the longest a request may take.
#define S_RESERVATION_MARGIN_MS 60000
//  Socket queues: a burst of settlements must not be dropped by ZeroMQ.
#define S_HWM 100000
//  Longest model name quoted back in an error message.
#define S_MODEL_QUOTE_MAX 200
//  A draining billing keeps admitting its shard (there is no one else to)
//  until no ADMIT or SETTLE came for S_DRAIN_QUIET_MS, or S_DRAIN_READ_MS
//  passed, and its outbox is empty: what ingress' DEALER sent until it saw
//  the connection close is answered, not lost (ingress re-sends an ADMIT
//  that got no reply to the successor).
#define S_DRAIN_QUIET_MS 200
#define S_DRAIN_READ_MS 1000
#define S_DRAIN_TICK_MS 50
//  An ADMIT refused only because leases hold the account's money waits at
//  most this long for their holders to give them back.
#define S_ADMIT_HOLD_MS 200
//  An ADMIT for a key this catalog does not have yet (created a moment ago:
//  the ingress that sends it has loaded it) waits this long at most for a
//  catalog that has it; then it is refused as an unknown key.
#define S_UNKNOWN_KEY_HOLD_MS 3000
//  Most ADMITs held at once; past that they are decided at once.
#define S_HELD_MAX 10000

//  A settlement sent to the ledger and not yet committed.
typedef struct {
    zframe_t *routing_id;                //  who to answer: the latest sender
    char trace[PROTO_MSG_TRACE_MAX + 1]; //  traceparent of the SETTLE
    uint64_t account_id;                 //  whose money
    int64_t cost_micros;                 //  what it costs
    uint64_t settled_us;                 //  monotonic arrival, for the span
    bool keep_span;                      //  failed, failed over or slow: traced
} s_pending_t;

//  What this month's spend so far is, per key, from the ledger's rollup:
//  the starting point of the daily and monthly spend caps.
static const char *s_spend_sql =
    "SELECT account_id, api_key_id,"
    " coalesce(sum(cost_micros) FILTER (WHERE day = (now() AT TIME ZONE 'UTC')::date), 0),"
    " coalesce(sum(cost_micros), 0)"
    " FROM usage_daily"
    " WHERE day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date"
    " GROUP BY account_id, api_key_id";

struct _billing_t {
    proto_service_t *service;         //  the program skeleton (borrowed)
    proto_loop_t *loop;               //  its loop (borrowed)
    zsock_t *router;                  //  billing.bind: ADMIT, SETTLE
    proto_batch_t *commits;           //  COMMITs to settlers, batched per settler
    zsock_t *ledger;                  //  DEALER to every ledger: ENTRY out, COMMIT in
    proto_outbox_t *outbox;           //  ENTRY kept until the ledger commits it
    proto_watch_t *watch;             //  keeps the catalog fresh
    proto_catalog_t *catalog;         //  current snapshot (owned)
    billing_book_t *book;             //  per-account balances and reservations
    billing_committed_t *committed;   //  recently committed request ids
    zhashx_t *pending;                //  request id -> s_pending_t*
    billing_lease_t *leases;          //  allowances ingress instances admit from
    billing_grant_t *grants;          //  vouchers for SETTLE (billing_grant)
    bool leases_on;                   //  billing.leases
    zlistx_t *held_admits;            //  s_held_t*: ADMITs waiting for leases to come back
    uint64_t reservation_max_ms;      //  reservation lifetime
    int sweep_timer;                  //  periodic sweep
    bool draining;                    //  SIGTERM seen
    int drain_timer;                  //  re-checks the drain while quiet, 0 = none
    uint64_t drain_started_ms;        //  when SIGTERM came
    uint64_t last_request_ms;         //  when the last ADMIT or SETTLE came
    proto_metric_t *m_settles;        //  SETTLE priced and sent on
    proto_metric_t *m_settle_dups;    //  SETTLE answered from memory
    proto_metric_t *m_losses;         //  upstream calls lost with their dispatch
    proto_metric_t *m_commits;        //  COMMIT passed on
    proto_metric_t *m_malformed;      //  messages dropped as malformed
    proto_metric_t *m_unvouched;      //  SETTLEs dropped: no admission vouches for them
    proto_metric_t *m_outbox;         //  gauge: entries not yet committed
    proto_metric_t *m_cost;           //  micros settled
    proto_metric_t *m_leases;         //  LEASE_ASKs granted
    proto_metric_t *m_lease_refusals; //  LEASE_ASKs answered "use ADMIT"
    proto_metric_t *m_lease_count;    //  gauge: live leases
    int tick_timer;                   //  decides held ADMITs that are due
};

//  An ADMIT that waits for an account's leases to come back.
typedef struct {
    proto_msg_t *admit;  //  the request (owned)
    uint64_t account_id; //  whose leases
    uint64_t due_ms;     //  answered then whatever happened
    bool unknown_key;    //  waits for a catalog that has its key, not for leases
} s_held_t;

static void s_held_destroy(void **item)
{
    s_held_t *held = *item;
    if (held)
        proto_msg_destroy(&held->admit);
    free(held);
    *item = NULL;
}

static void s_pending_destroy(void **item)
{
    s_pending_t *pending = *item;
    if (!pending)
        return;
    zframe_destroy(&pending->routing_id);
    free(pending);
    *item = NULL;
}

static void s_count_admit(billing_t *self, uint64_t status)
{
    char labels[32];
    snprintf(labels, sizeof labels, "status=\"%" PRIu64 "\"", status);
    proto_metric_add(proto_metrics_counter(proto_service_metrics(self->service),
                                           "tollgate_billing_admits_total",
                                           "ADMIT answers by status", labels),
                     1);
}

static void s_maybe_drained(billing_t *self)
{
    uint64_t now = proto_loop_now_ms();
    bool quiet = now - self->last_request_ms >= S_DRAIN_QUIET_MS ||
                 now - self->drain_started_ms >= S_DRAIN_READ_MS;
    if (self->draining && quiet && proto_outbox_pending(self->outbox) == 0)
        proto_service_drained(self->service);
}

static void s_drain_tick(proto_loop_t *loop, int id, void *arg)
{
    s_maybe_drained(arg);
}

static void s_admit_held(billing_t *self, uint64_t account_id);

static void s_tick(proto_loop_t *loop, int id, void *arg)
{
    billing_t *self = arg;
    if (zlistx_size(self->held_admits))
        s_admit_held(self, 0);
}

//  --------------------------------------------------------------------------
//  ADMIT

static void s_refuse(proto_msg_t *reply, uint64_t status, const char *code, const char *message)
{
    proto_msg_set_status(reply, status);
    proto_msg_set_error_code(reply, code);
    proto_msg_set_error_message(reply, message);
}

static const char *s_key_problem_text(const char *problem)
{
    if (strcmp(problem, "unknown") == 0)
        return "Invalid API key: the key is not known.";
    if (strcmp(problem, "revoked") == 0)
        return "Invalid API key: the key has been revoked.";
    if (strcmp(problem, "disabled") == 0)
        return "Invalid API key: the key is disabled.";
    if (strcmp(problem, "expired") == 0)
        return "Invalid API key: the key has expired.";
    if (strcmp(problem, "account_disabled") == 0)
        return "Invalid API key: the key's account is disabled.";
    return "Invalid API key.";
}

//  Tells every holder of the account's (or key's) leases to give them back.
static void s_revoke(billing_t *self, uint64_t account_id, uint64_t key_id, const char *reason)
{
    zlistx_t *holders = zlistx_new();
    zlistx_set_destructor(holders, (zlistx_destructor_fn *)zframe_destroy);
    size_t count = billing_lease_revoke(self->leases, account_id, key_id, holders);
    for (zframe_t *holder = zlistx_first(holders); holder; holder = zlistx_next(holders)) {
        proto_msg_t *revoke = proto_msg_new(PROTO_MSG_LEASE_REVOKE);
        proto_msg_set_account_id(revoke, account_id);
        if (key_id)
            proto_msg_set_key_id(revoke, key_id);
        proto_msg_set_reason(revoke, reason);
        proto_msg_set_routing_id(revoke, holder);
        proto_msg_send(&revoke, self->router);
    }
    if (count)
        log_info(NULL, "revoked %zu lease(s) of account %" PRIu64 ": %s", count, account_id,
                 reason);
    zlistx_destroy(&holders);
}

//  The request's output-limit field, in the client's protocol's words.
static const char *s_output_field(const proto_msg_t *request)
{
    switch (proto_msg_client_protocol(request)) {
    case PROTO_PROTOCOL_OPENAI_RESPONSES:
        return "max_output_tokens";
    case PROTO_PROTOCOL_GEMINI:
        return "generationConfig.maxOutputTokens";
    default:
        return "max_tokens";
    }
}

//  Decides an ADMIT. Returns the reply, or NULL when the request waits for
//  the account's leases (it was refused only because they hold its money
//  or its slots): they are revoked, and the request is decided again when
//  they come back (s_lease_return) or S_ADMIT_HOLD_MS passes.
static proto_msg_t *s_admit_decide(billing_t *self, proto_msg_t *request, bool may_wait)
{
    const char *rid = proto_msg_request_id(request);
    proto_msg_t *reply = proto_msg_reply(request, PROTO_MSG_ADMIT_REPLY);
    const char *model_name = proto_msg_model(request);
    const proto_api_key_t *key = proto_catalog_key(self->catalog, proto_msg_key_id(request));
    uint64_t wall_us = proto_loop_wall_us();
    const char *problem = proto_catalog_key_problem(self->catalog, key, wall_us);
    const proto_model_t *model = proto_catalog_model_for_client(self->catalog, model_name);
    char message[S_MODEL_QUOTE_MAX + 128];
    if (problem) {
        log_info(rid, "admit refused: key %" PRIu64 " is %s", proto_msg_key_id(request), problem);
        s_refuse(reply, 401, "invalid_api_key", s_key_problem_text(problem));
    } else if (!model || !model->active) {
        log_info(rid, "admit refused: model '%.*s' unknown or inactive", S_MODEL_QUOTE_MAX,
                 model_name);
        snprintf(message, sizeof message,
                 "The model '%.*s' does not exist or you do not have access to it.",
                 S_MODEL_QUOTE_MAX, model_name);
        s_refuse(reply, 404, "model_not_found", message);
    } else if (!proto_catalog_key_allows(self->catalog, key, model_name)) {
        //  The model exists but this key (or its account) may not use it:
        //  403, so the client knows a different key could.
        log_info(rid, "admit refused: model '%.*s' not allowed for key %" PRIu64, S_MODEL_QUOTE_MAX,
                 model_name, key->id);
        snprintf(message, sizeof message, "This API key is not allowed to use the model '%.*s'.",
                 S_MODEL_QUOTE_MAX, model_name);
        s_refuse(reply, 403, "model_not_allowed", message);
    } else if (proto_msg_images(request) && model->price_image_micros < 0) {
        //  Billed per image, so a model without that price makes none.
        snprintf(message, sizeof message,
                 "Invalid 'model': the model '%.*s' does not generate images (it has no price "
                 "per image)",
                 S_MODEL_QUOTE_MAX, model_name);
        s_refuse(reply, 400, "invalid_request_error", message);
    } else {
        //  The catalog's key decides the account: ingress' copy of the key
        //  may be older than ours.
        if (key->account_id != proto_msg_account_id(request))
            log_warn(rid,
                     "ADMIT names account %" PRIu64 " but key %" PRIu64 " belongs to %" PRIu64
                     "; using the latter",
                     proto_msg_account_id(request), key->id, key->account_id);
        const proto_account_t *account = proto_catalog_account(self->catalog, key->account_id);
        uint64_t tokens = proto_msg_tokens_in(request);
        int64_t reserve = proto_price_scale(
            proto_price_reserve_images(model, tokens, proto_msg_tokens_out(request),
                                       proto_msg_images(request)),
            account ? account->multiplier_ppm : PROTO_PRICE_PPM_ONE);
        billing_denial_t denial;
        if (!proto_price_output_allowed(model, proto_msg_tokens_out(request))) {
            //  Above the model's maximum: reserving the model's maximum could
            //  be less than the upstream produces, so refused as OpenAI does.
            log_info(rid, "admit refused: max_tokens %" PRIu64 " above the model's %" PRId64,
                     proto_msg_tokens_out(request), model->max_output_tokens);
            snprintf(message, sizeof message,
                     "%s is too large: %" PRIu64 ". This model supports at most %" PRId64
                     " output tokens.",
                     s_output_field(request), proto_msg_tokens_out(request),
                     model->max_output_tokens);
            s_refuse(reply, 400, "invalid_value", message);
        } else if (reserve == INT64_MAX) {
            //  What the request may cost does not fit 64 bits of micro-units:
            //  refused, since it could never be charged.
            log_info(rid, "admit refused: the reservation for %" PRIu64 " tokens overflows",
                     tokens);
            s_refuse(reply, 400, "cost_overflow",
                     "The request's possible cost (its prompt and max_tokens at the model's "
                     "prices) is too large to be charged.");
        } else if (billing_book_admit(self->book, rid, account, key, tokens, reserve,
                                      proto_loop_now_ms(), wall_us, &denial)) {
            proto_msg_set_status(reply, 200);
            proto_msg_set_reserve_micros(reply, reserve);
            char grant[BILLING_GRANT_MAX + 1];
            billing_grant_admit(self->grants, rid, proto_msg_account_id(request), key->id, grant);
            proto_msg_set_grant(reply, grant);
            log_debug(rid, "admitted key %" PRIu64 " model %s, reserved %" PRId64 " micros",
                      key->id, model_name, reserve);
        } else if (may_wait && billing_lease_held(self->leases, account->id) > 0) {
            proto_msg_destroy(&reply);
            s_revoke(self, account->id, 0, "an ADMIT needs what the leases hold");
            return NULL;
        } else {
            log_info(rid, "admit refused: %s for key %" PRIu64 " account %" PRIu64, denial.code,
                     key->id, account->id);
            s_refuse(reply, (uint64_t)denial.status, denial.code, denial.message);
            if (denial.retry_after_ms)
                proto_msg_set_retry_after_ms(reply, denial.retry_after_ms);
        }
    }
    return reply;
}

//  An ADMIT whose key this catalog does not have: the ingress that sent it
//  knows the key, so it is most likely newer than our catalog (created a
//  moment ago), and a 401 would refuse a good key's first requests. Held
//  until a catalog that has it (a reload is asked for now) or
//  S_UNKNOWN_KEY_HOLD_MS, whichever comes first. True when held.
static bool s_admit_hold_unknown(billing_t *self, proto_msg_t **request_p)
{
    uint64_t key_id = proto_msg_key_id(*request_p);
    if (proto_catalog_key(self->catalog, key_id) || !self->watch ||
        zlistx_size(self->held_admits) >= S_HELD_MAX)
        return false;
    //  Ingress asks again while we wait: the one held answers for both.
    const char *rid = proto_msg_request_id(*request_p);
    for (s_held_t *held = zlistx_first(self->held_admits); held;
         held = zlistx_next(self->held_admits))
        if (held->unknown_key && strcmp(proto_msg_request_id(held->admit), rid) == 0) {
            proto_msg_destroy(request_p);
            return true;
        }
    s_held_t *held = calloc(1, sizeof *held);
    assert(held);
    held->admit = *request_p;
    *request_p = NULL;
    held->account_id = proto_msg_account_id(held->admit);
    held->due_ms = proto_loop_now_ms() + S_UNKNOWN_KEY_HOLD_MS;
    held->unknown_key = true;
    zlistx_add_end(self->held_admits, held);
    log_info(proto_msg_request_id(held->admit),
             "ADMIT for key %" PRIu64 ", newer than this catalog: held until it reloads", key_id);
    proto_watch_reload(self->watch);
    return true;
}

static void s_admit(billing_t *self, proto_msg_t **request_p)
{
    if (s_admit_hold_unknown(self, request_p))
        return;
    proto_msg_t *reply = s_admit_decide(self, *request_p, true);
    if (!reply) {
        s_held_t *held = calloc(1, sizeof *held);
        assert(held);
        held->admit = *request_p;
        *request_p = NULL;
        const proto_api_key_t *key =
            proto_catalog_key(self->catalog, proto_msg_key_id(held->admit));
        held->account_id = key ? key->account_id : proto_msg_account_id(held->admit);
        held->due_ms = proto_loop_now_ms() + S_ADMIT_HOLD_MS;
        zlistx_add_end(self->held_admits, held);
        return;
    }
    s_count_admit(self, proto_msg_status(reply));
    proto_msg_send(&reply, self->router);
}

//  Decides the ADMITs that waited for an account's leases (every account
//  when account_id is 0), those past their time too.
static void s_admit_held(billing_t *self, uint64_t account_id)
{
    //  Take the due ones out first: deciding may hold a request again.
    uint64_t now = proto_loop_now_ms();
    zlistx_t *due = zlistx_new();
    void *handle = zlistx_first(self->held_admits) ? zlistx_cursor(self->held_admits) : NULL;
    while (handle) {
        s_held_t *held = zlistx_handle_item(handle);
        void *next = zlistx_next(self->held_admits) ? zlistx_cursor(self->held_admits) : NULL;
        bool ready = held->unknown_key
                         ? proto_catalog_key(self->catalog, proto_msg_key_id(held->admit)) != NULL
                         : account_id && held->account_id == account_id;
        if (ready || now >= held->due_ms)
            zlistx_add_end(due, zlistx_detach(self->held_admits, handle));
        handle = next;
    }
    for (s_held_t *held = zlistx_detach(due, NULL); held; held = zlistx_detach(due, NULL)) {
        proto_msg_t *reply = s_admit_decide(self, held->admit, false);
        s_count_admit(self, proto_msg_status(reply));
        proto_msg_send(&reply, self->router);
        s_held_destroy((void **)&held);
    }
    zlistx_destroy(&due);
}

//  --------------------------------------------------------------------------
//  Leases

static void s_lease_ask(billing_t *self, proto_msg_t *msg)
{
    billing_lease_ask_t ask = {.holder = proto_msg_instance(msg),
                               .routing_id = proto_msg_routing_id(msg),
                               .key_id = proto_msg_key_id(msg),
                               .account_id = proto_msg_account_id(msg),
                               .lease_id = proto_msg_lease_id(msg),
                               .credit_micros = proto_msg_credit_micros(msg),
                               .used_micros = proto_msg_used_micros(msg),
                               .inflight = proto_msg_reserve_micros(msg),
                               .requests_used = proto_msg_requests(msg),
                               .tokens_used = proto_msg_tokens(msg),
                               .slots_used = proto_msg_slots(msg),
                               .hint_micros = proto_msg_cost_micros(msg),
                               .hint_tokens = proto_msg_tokens_in(msg)};
    billing_lease_grant_t grant = {.status = 204};
    if (self->leases_on && !self->draining)
        billing_lease_ask(self->leases, self->catalog, &ask, proto_loop_now_ms(),
                          proto_loop_wall_us(), &grant);
    proto_msg_t *reply = proto_msg_reply(msg, PROTO_MSG_LEASE);
    proto_msg_set_key_id(reply, ask.key_id);
    proto_msg_set_account_id(reply, ask.account_id);
    proto_msg_set_status(reply, (uint64_t)grant.status);
    proto_msg_set_lease_id(reply, grant.lease_id ? grant.lease_id : ask.lease_id);
    if (grant.status == 200) {
        char voucher[BILLING_GRANT_MAX + 1];
        billing_grant_lease(self->grants, proto_msg_lease_id(reply), ask.account_id, ask.key_id,
                            voucher);
        proto_msg_set_grant(reply, voucher);
        proto_msg_set_credit_micros(reply, grant.credit_micros);
        proto_msg_set_used_micros(reply, grant.settled_micros);
        if (grant.requests_limited)
            proto_msg_set_requests(reply, grant.requests);
        if (grant.tokens_limited)
            proto_msg_set_tokens(reply, grant.tokens);
        if (grant.slots_limited)
            proto_msg_set_slots(reply, grant.slots);
        proto_msg_set_ttl_ms(reply, grant.ttl_ms);
    }
    if (grant.status == 404 && self->watch)
        proto_watch_reload(self->watch); //  the key is newer than our catalog
    proto_metric_add(grant.status == 200 ? self->m_leases : self->m_lease_refusals, 1);
    log_debug(NULL,
              "lease %s key %" PRIu64 ": %d credit %" PRId64 " slots %" PRIu64
              " (limited %d, holder uses %" PRIu64 ")",
              ask.holder, ask.key_id, grant.status, grant.credit_micros, grant.slots,
              grant.slots_limited, ask.slots_used);
    proto_msg_send(&reply, self->router);
}

static void s_lease_return(billing_t *self, proto_msg_t *msg)
{
    log_debug(NULL, "lease %" PRIu64 " returned: slots in use %" PRIu64 ", in flight %" PRId64,
              proto_msg_lease_id(msg), proto_msg_slots(msg), proto_msg_reserve_micros(msg));
    billing_lease_return(self->leases, self->catalog, proto_msg_lease_id(msg),
                         proto_msg_used_micros(msg), proto_msg_reserve_micros(msg),
                         proto_msg_requests(msg), proto_msg_tokens(msg), proto_msg_slots(msg),
                         proto_loop_now_ms());
    const proto_api_key_t *key = proto_catalog_key(self->catalog, proto_msg_key_id(msg));
    s_admit_held(self, key ? key->account_id : proto_msg_account_id(msg));
}

//  --------------------------------------------------------------------------
//  SETTLE

//  The ENTRY for the ledger: every field the SETTLE carried, plus the cost.
static proto_msg_t *s_entry_new(const proto_msg_t *settle, int64_t cost_micros, bool estimated)
{
    proto_msg_t *entry = proto_msg_new(PROTO_MSG_ENTRY);
    proto_msg_set_request_id(entry, proto_msg_request_id(settle));
    proto_msg_set_trace(entry, proto_msg_trace(settle));
#define S_COPY(name)                                                                               \
    if (proto_msg_has(settle, PROTO_FIELD_##name))                                                 \
        proto_msg_set_##name(entry, proto_msg_##name(settle));
    S_COPY(account_id)
    S_COPY(key_id)
    S_COPY(model)
    S_COPY(provider_id)
    S_COPY(provider_key_id)
    S_COPY(upstream_model)
    S_COPY(status)
    S_COPY(tokens_in)
    S_COPY(tokens_out)
    S_COPY(tokens_cache_read)
    S_COPY(tokens_cache_write)
    S_COPY(tokens_cache_write_1h)
    S_COPY(images)
    S_COPY(latency_us)
    S_COPY(ttfb_us)
    S_COPY(stream)
    S_COPY(started_us)
    S_COPY(attempts)
    S_COPY(estimated)
    S_COPY(reserve_micros)
    S_COPY(loss)
#undef S_COPY
    if (estimated)
        proto_msg_set_estimated(entry, true);
    proto_msg_set_cost_micros(entry, cost_micros);
    return entry;
}

//  Prices a settlement from the catalog. Sets *estimated when the cost could
//  not be computed and 0 is recorded instead (logged here, once).
static int64_t s_price(billing_t *self, const proto_msg_t *settle, bool *estimated)
{
    const char *rid = proto_msg_request_id(settle);
    const proto_model_t *model =
        proto_catalog_model_for_client(self->catalog, proto_msg_model(settle));
    int64_t multiplier = PROTO_PRICE_PPM_ONE;
    proto_model_t scratch;
    if (proto_msg_has(settle, PROTO_FIELD_provider_key_id)) {
        const proto_provider_key_t *provider_key =
            proto_catalog_provider_key(self->catalog, proto_msg_provider_key_id(settle));
        if (provider_key) {
            multiplier = provider_key->multiplier_ppm;
            //  An unlisted name costs the serving provider's default prices
            //  (also when its name left the catalog since admission).
            model = proto_catalog_serving_price(self->catalog, model, provider_key->provider_id,
                                                &scratch);
        } else
            log_warn(rid, "provider key %" PRIu64 " is not in the catalog; list price",
                     proto_msg_provider_key_id(settle));
    }
    if (!model) {
        //  Deleted between admission and settlement, and its provider has no
        //  default prices: the usage row is still written (tokens and all)
        //  so an operator can adjust it.
        log_warn(rid, "model '%.*s' is no longer in the catalog; recording cost 0",
                 S_MODEL_QUOTE_MAX, proto_msg_model(settle));
        *estimated = true;
        return 0;
    }
    //  The account's multiplier applies on top of the provider key's.
    const proto_account_t *account =
        proto_catalog_account(self->catalog, proto_msg_account_id(settle));
    if (account)
        multiplier = proto_price_scale(multiplier, account->multiplier_ppm);
    proto_price_usage_t usage = {.tokens_in = proto_msg_tokens_in(settle),
                                 .tokens_out = proto_msg_tokens_out(settle),
                                 .tokens_cache_read = proto_msg_tokens_cache_read(settle),
                                 .tokens_cache_write = proto_msg_tokens_cache_write(settle),
                                 .tokens_cache_write_1h = proto_msg_tokens_cache_write_1h(settle),
                                 .images = proto_msg_images(settle),
                                 .status = proto_msg_status(settle)};
    int64_t cost = 0;
    if (proto_price_cost(model, &usage, multiplier, &cost) != 0) {
        //  Only tokens no upstream reports get here (admission refuses a
        //  request whose reservation overflows): the most the request was
        //  admitted for is charged, never nothing.
        int64_t reserve = proto_msg_has(settle, PROTO_FIELD_reserve_micros) &&
                                  proto_msg_reserve_micros(settle) > 0
                              ? proto_msg_reserve_micros(settle)
                              : 0;
        log_error(rid,
                  "cost does not fit 64 bits (tokens in %" PRIu64 " out %" PRIu64
                  "); charging the reservation, %" PRId64 " micros, marked estimated",
                  usage.tokens_in, usage.tokens_out, reserve);
        *estimated = true;
        return reserve;
    }
    return cost;
}

static void s_send_commit(billing_t *self, const char *request_id, const char *trace,
                          zframe_t *routing_id)
{
    proto_msg_t *commit = proto_msg_new(PROTO_MSG_COMMIT);
    proto_msg_set_request_id(commit, request_id);
    proto_msg_set_trace(commit, trace);
    proto_msg_set_routing_id(commit, routing_id);
    if (proto_batch_add(self->commits, &commit) != 0)
        //  The settler is gone or slow; it keeps the SETTLE and re-sends,
        //  and the committed set answers then.
        log_debug(request_id, "COMMITs to a settler could not be sent");
}

//  Who may settle (docs/billing.md): a SETTLE is charged only when its
//  grant (billing_grant) names its request, or its lease, with its account
//  and key -- made by this instance or any other with the cluster's
//  secret_key, before or after a restart -- or when this instance holds the
//  request's reservation from its ADMIT (a sender that carries no grant).
//  Anything else is dropped, counted and logged without its fields' values
//  beyond ids; the sender gets no COMMIT.
static bool s_vouched(billing_t *self, const proto_msg_t *settle)
{
    const char *rid = proto_msg_request_id(settle);
    uint64_t account_id = proto_msg_account_id(settle);
    uint64_t key_id = proto_msg_key_id(settle);
    uint64_t lease_id =
        proto_msg_has(settle, PROTO_FIELD_lease_id) ? proto_msg_lease_id(settle) : 0;
    if (proto_msg_has(settle, PROTO_FIELD_grant) &&
        billing_grant_check(self->grants, proto_msg_grant(settle), rid, proto_msg_loss(settle),
                            lease_id, account_id, key_id))
        return true;
    if (billing_book_holds(self->book, rid, account_id, key_id))
        return true;
    proto_metric_add(self->m_unvouched, 1);
    log_warn(rid,
             "dropped a SETTLE from %s for account %" PRIu64 " key %" PRIu64
             ": %s; nothing charged",
             *proto_msg_peer(settle) ? proto_msg_peer(settle) : "a peer", account_id, key_id,
             proto_msg_has(settle, PROTO_FIELD_grant)
                 ? "its grant is not billing's for this request"
                 : "no grant, and no admission of this instance for it");
    return false;
}

static void s_settle(billing_t *self, proto_msg_t *settle)
{
    const char *rid = proto_msg_request_id(settle);
    if (billing_committed_has(self->committed, rid, proto_loop_now_ms())) {
        proto_metric_add(self->m_settle_dups, 1);
        s_send_commit(self, rid, proto_msg_trace(settle), proto_msg_routing_id(settle));
        return;
    }
    if (!s_vouched(self, settle))
        return;
    s_pending_t *pending = zhashx_lookup(self->pending, rid);
    if (pending) {
        //  A re-send while the ledger works on it: answer whoever asked last.
        zframe_destroy(&pending->routing_id);
        pending->routing_id = zframe_dup(proto_msg_routing_id(settle));
        proto_metric_add(self->m_settle_dups, 1);
        return;
    }
    //  An upstream call lost with its dispatch (docs/billing.md): recorded
    //  under its own id, the operator's loss; the account is not charged,
    //  and its reservation belongs to the request's answering attempt.
    bool loss = proto_msg_loss(settle);
    bool estimated = false;
    int64_t cost = loss ? 0 : s_price(self, settle, &estimated);
    proto_msg_t *entry = s_entry_new(settle, cost, estimated);
    if (proto_outbox_send(self->outbox, &entry) != 0) {
        //  Nothing is remembered: the settler keeps the SETTLE and re-sends.
        log_warn(rid, "outbox full (%zu entries); SETTLE left with its sender",
                 proto_outbox_pending(self->outbox));
        return;
    }
    pending = calloc(1, sizeof *pending);
    assert(pending);
    pending->routing_id = zframe_dup(proto_msg_routing_id(settle));
    snprintf(pending->trace, sizeof pending->trace, "%s", proto_msg_trace(settle));
    pending->account_id = proto_msg_account_id(settle);
    pending->cost_micros = cost;
    pending->settled_us = proto_loop_now_us();
    pending->keep_span = proto_msg_status(settle) >= 400 || proto_msg_attempts(settle) > 1 ||
                         proto_trace_is_slow(proto_service_trace(self->service),
                                             proto_trace_waited_us(proto_msg_stream(settle),
                                                                   proto_msg_latency_us(settle),
                                                                   proto_msg_ttfb_us(settle)));
    zhashx_insert(self->pending, rid, pending);
    uint64_t tokens_used = proto_msg_tokens_in(settle) + proto_msg_tokens_out(settle) +
                           proto_msg_tokens_cache_read(settle) +
                           proto_msg_tokens_cache_write(settle);
    if (loss) {
        //  Still releases what the request held (when it is the request's
        //  own record), with nothing spent.
        tokens_used = 0;
        proto_metric_add(self->m_losses, 1);
        log_info(rid, "recorded an upstream call lost in the cluster (operator's loss)");
    }
    //  A request admitted from a lease: its cost leaves the lease's hold,
    //  and its tokens were in the lease's grant already.
    bool leased =
        proto_msg_has(settle, PROTO_FIELD_lease_id) &&
        billing_lease_settle(self->leases, self->catalog, proto_msg_lease_id(settle), cost);
    billing_book_settle(self->book, self->catalog, rid, pending->account_id,
                        proto_msg_key_id(settle), cost, tokens_used, leased, proto_loop_now_ms(),
                        proto_loop_wall_us());
    proto_metric_add(self->m_settles, 1);
    proto_metric_add(self->m_cost, (double)cost);
    log_debug(rid, "settled status %" PRIu64 ": %" PRId64 " micros", proto_msg_status(settle),
              cost);
}

//  BALANCE: the key's account's figures (billing_balance), for the key
//  itself (GET /v1/usage). The catalog's key decides the account.
static void s_balance(billing_t *self, proto_msg_t *msg)
{
    proto_msg_t *reply = proto_msg_reply(msg, PROTO_MSG_BALANCE_REPLY);
    const proto_api_key_t *key = proto_catalog_key(self->catalog, proto_msg_key_id(msg));
    uint64_t wall_us = proto_loop_wall_us();
    const char *problem = proto_catalog_key_problem(self->catalog, key, wall_us);
    const proto_account_t *account =
        problem ? NULL : proto_catalog_account(self->catalog, key->account_id);
    if (!account)
        s_refuse(reply, 401, "invalid_api_key", s_key_problem_text(problem ? problem : "unknown"));
    else {
        char *meta = billing_balance_meta(self->book, self->catalog, key, account, wall_us);
        proto_msg_set_status(reply, 200);
        proto_msg_set_meta(reply, meta);
        free(meta);
    }
    proto_msg_send(&reply, self->router);
}

//  SETTLE from dispatch (and ingress, for what never reached dispatch);
//  admissions and leases from ingress.
static bool s_sender_may(const proto_msg_t *msg, int type)
{
    if (type == PROTO_MSG_SETTLE)
        return proto_msg_peer_is(msg, "dispatch") || proto_msg_peer_is(msg, "ingress");
    return proto_msg_peer_is(msg, "ingress");
}

static void s_request(proto_msg_t **msg_p, void *arg)
{
    billing_t *self = arg;
    proto_msg_t *msg = *msg_p;
    const char *rid = proto_msg_request_id(msg);
    int type = proto_msg_type(msg);
    if (!*rid && (type == PROTO_MSG_ADMIT || type == PROTO_MSG_SETTLE)) {
        proto_metric_add(self->m_malformed, 1);
        log_warn(NULL, "dropped %s without a request id", proto_msg_type_name(type));
    } else if (!s_sender_may(msg, type)) {
        //  Each kind only from the program that sends it: a certificate of
        //  the cluster is not enough to charge or admit.
        proto_metric_add(self->m_malformed, 1);
        log_warn(rid, "dropped %s from %s", proto_msg_type_name(type), proto_msg_peer(msg));
    } else if (type == PROTO_MSG_ADMIT) {
        self->last_request_ms = proto_loop_now_ms();
        s_admit(self, msg_p);
    } else if (type == PROTO_MSG_LEASE_ASK) {
        s_lease_ask(self, msg);
    } else if (type == PROTO_MSG_LEASE_RETURN) {
        s_lease_return(self, msg);
    } else if (type == PROTO_MSG_BALANCE) {
        s_balance(self, msg);
    } else if (type == PROTO_MSG_SETTLE) {
        self->last_request_ms = proto_loop_now_ms();
        s_settle(self, msg);
    } else
        log_warn(rid, "ignored %s on the billing socket", proto_msg_type_name(type));
}

static void s_router_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    billing_t *self = arg;
    if (proto_batch_recv(socket, s_request, self) == -2) {
        proto_metric_add(self->m_malformed, 1);
        log_warn(NULL, "dropped a malformed message");
    }
}

//  --------------------------------------------------------------------------
//  COMMIT from the ledger

static void s_ledger_message(proto_msg_t **msg_p, void *arg)
{
    billing_t *self = arg;
    proto_msg_t *msg = *msg_p;
    const char *rid = proto_msg_request_id(msg);
    s_pending_t *pending = NULL;
    if (proto_msg_type(msg) != PROTO_MSG_COMMIT)
        log_warn(rid, "ignored %s from the ledger", proto_msg_type_name(proto_msg_type(msg)));
    else if (!(pending = zhashx_lookup(self->pending, rid)))
        //  A second COMMIT for a re-sent ENTRY: already passed on.
        log_debug(rid, "COMMIT for a request not pending");
    else {
        proto_outbox_ack(self->outbox, rid);
        proto_observe_span_final(proto_service_trace(self->service), rid, pending->trace,
                                 "billing.settle", pending->settled_us, 0, 200, pending->keep_span);
        s_send_commit(self, rid, pending->trace, pending->routing_id);
        billing_committed_add(self->committed, rid, proto_loop_now_ms());
        billing_book_commit(self->book, pending->account_id, pending->cost_micros,
                            proto_catalog_saw_transaction(self->catalog, proto_msg_txid(msg)));
        zhashx_delete(self->pending, rid);
        proto_metric_add(self->m_commits, 1);
        s_maybe_drained(self);
    }
}

static void s_ledger_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    billing_t *self = arg;
    if (proto_batch_recv(socket, s_ledger_message, self) == -2) {
        proto_metric_add(self->m_malformed, 1);
        log_warn(NULL, "dropped a malformed message from the ledger");
    }
    //  The ledger commits in batches: pass its COMMITs on as one batch per
    //  settler, now.
    proto_batch_flush(self->commits);
}

//  --------------------------------------------------------------------------
//  Catalog, sweep, life cycle

static void s_catalog(proto_catalog_t **catalog_p, void *arg)
{
    billing_t *self = arg;
    proto_catalog_destroy(&self->catalog);
    self->catalog = *catalog_p;
    *catalog_p = NULL;
    billing_book_rebase(self->book, self->catalog);
    //  A lower balance, a disabled key or account, a changed limit: the
    //  leases that no longer fit go back at once.
    if (self->leases) {
        zlistx_t *accounts = zlistx_new();
        billing_lease_review(self->leases, self->catalog, proto_loop_now_ms(), proto_loop_wall_us(),
                             accounts);
        for (void *id = zlistx_first(accounts); id; id = zlistx_next(accounts))
            s_revoke(self, (uint64_t)(uintptr_t)id, 0, "configuration changed");
        zlistx_destroy(&accounts);
    }
    //  ADMITs that waited for a key this catalog may have.
    if (zlistx_size(self->held_admits))
        s_admit_held(self, 0);
}

static void s_sweep(proto_loop_t *loop, int id, void *arg)
{
    billing_t *self = arg;
    size_t expired = billing_book_expire(self->book, self->catalog, proto_loop_now_ms(),
                                         self->reservation_max_ms);
    if (expired)
        log_info(NULL, "released %zu reservations that were never settled", expired);
    billing_lease_sweep(self->leases, self->catalog, proto_loop_now_ms());
    billing_committed_expire(self->committed, proto_loop_now_ms());
    proto_metric_set(self->m_lease_count, (double)billing_lease_count(self->leases));
    proto_metric_set(self->m_outbox, (double)proto_outbox_pending(self->outbox));
}

//  The spend caps' starting point. Read once at start: from then on this
//  instance counts what it settles (it owns its accounts). Blocking is fine
//  here, no request is served yet; a failure only leaves the caps counting
//  from zero, which is logged.
static void s_load_spend(billing_t *self, proto_config_t *config)
{
    char error[512];
    PGconn *db = proto_db_connect(config, error, sizeof error);
    if (!db) {
        log_warn(NULL, "spend caps count from zero: %s", error);
        return;
    }
    PGresult *result = PQexec(db, s_spend_sql);
    if (PQresultStatus(result) != PGRES_TUPLES_OK) {
        proto_db_error(db, error, sizeof error);
        log_warn(NULL, "spend caps count from zero: cannot read usage_daily: %s", error);
    } else {
        uint64_t wall_us = proto_loop_wall_us();
        for (int row = 0; row < PQntuples(result); row++)
            billing_book_load_spend(self->book, self->catalog,
                                    strtoull(PQgetvalue(result, row, 0), NULL, 10),
                                    strtoull(PQgetvalue(result, row, 1), NULL, 10),
                                    strtoll(PQgetvalue(result, row, 2), NULL, 10),
                                    strtoll(PQgetvalue(result, row, 3), NULL, 10), wall_us);
        log_info(NULL, "spend this month loaded for %d key(s)", PQntuples(result));
    }
    PQclear(result);
    PQfinish(db);
}

static zsock_t *s_socket(int type, int hwm)
{
    zsock_t *socket = proto_socket_new(type);
    if (socket) {
        zsock_set_sndhwm(socket, hwm);
        zsock_set_rcvhwm(socket, hwm);
    }
    return socket;
}

billing_t *billing_new(proto_service_t *service)
{
    proto_config_t *config = proto_service_config(service);
    proto_metrics_t *metrics = proto_service_metrics(service);
    billing_t *self = calloc(1, sizeof *self);
    assert(self);
    self->service = service;
    self->loop = proto_service_loop(service);
    self->book = billing_book_new();
    self->committed = billing_committed_new(BILLING_COMMITTED_MAX, BILLING_COMMITTED_AGE_MS);
    self->pending = zhashx_new();
    zhashx_set_destructor(self->pending, s_pending_destroy);
    self->reservation_max_ms =
        (uint64_t)proto_config_int(config, "ingress.request_timeout_ms") + S_RESERVATION_MARGIN_MS;
    self->m_settles = proto_metrics_counter(metrics, "tollgate_billing_settles_total",
                                            "settlements priced and sent to the ledger", NULL);
    self->m_settle_dups =
        proto_metrics_counter(metrics, "tollgate_billing_settle_duplicates_total",
                              "SETTLE re-sends answered without a new ENTRY", NULL);
    self->m_losses = proto_metrics_counter(
        metrics, "tollgate_billing_operator_losses_total",
        "upstream calls lost with their dispatch: recorded, not charged", NULL);
    self->m_commits = proto_metrics_counter(metrics, "tollgate_billing_commits_total",
                                            "ledger commits passed on to settlers", NULL);
    self->m_malformed = proto_metrics_counter(metrics, "tollgate_billing_malformed_total",
                                              "messages dropped as malformed", NULL);
    self->m_unvouched = proto_metrics_counter(
        metrics, "tollgate_billing_settles_unvouched_total",
        "SETTLEs dropped because no admission or lease of billing vouches for them", NULL);
    self->m_outbox = proto_metrics_gauge(metrics, "tollgate_billing_outbox",
                                         "entries waiting for the ledger's commit", NULL);
    self->m_cost = proto_metrics_counter(metrics, "tollgate_billing_cost_micros_total",
                                         "cost settled, in micros", NULL);
    self->m_leases = proto_metrics_counter(metrics, "tollgate_billing_leases_total",
                                           "leases granted or renewed", NULL);
    self->m_lease_refusals =
        proto_metrics_counter(metrics, "tollgate_billing_lease_refusals_total",
                              "lease requests answered: ask with ADMIT (near a limit)", NULL);
    self->m_lease_count =
        proto_metrics_gauge(metrics, "tollgate_billing_leases", "leases held by ingresses", NULL);
    billing_lease_config_t lease_config = {
        .ttl_ms = (uint64_t)proto_config_int(config, "billing.lease_ttl_ms"),
        .max_micros = proto_config_int(config, "billing.lease_max_micros"),
        .settle_grace_ms = self->reservation_max_ms};
    self->leases = billing_lease_new(self->book, &lease_config);
    const char *grant_key = proto_config_str(config, "billing.grant_key");
    self->grants =
        billing_grant_new(*grant_key ? grant_key : proto_config_str(config, "secret_key"));
    if (!billing_grant_durable(self->grants))
        log_warn(NULL, "neither billing.grant_key nor secret_key is 64 hex digits: settlement "
                       "grants hold only until this process ends (a SETTLE replayed after a "
                       "restart is dropped)");
    self->leases_on = proto_config_bool(config, "billing.leases");
    self->held_admits = zlistx_new();
    zlistx_set_destructor(self->held_admits, s_held_destroy);

    const char *bind = proto_config_str(config, "billing.bind");
    self->router = s_socket(ZMQ_ROUTER, S_HWM);
    if (!self->router || proto_socket_bind(self->router, bind) < 0) {
        log_error(NULL, "cannot bind billing.bind %s: %s", bind, zmq_strerror(zmq_errno()));
        billing_destroy(&self);
        return NULL;
    }
    //  COMMITs only let senders forget what they journalled: no client
    //  waits on them, and every batch wakes the sender.
    self->commits =
        proto_batch_new(self->loop, self->router, PROTO_BATCH_ITEMS_MAX, PROTO_BATCH_BYTES_MAX, 5);
    self->ledger = s_socket(ZMQ_DEALER, S_HWM);
    const char *endpoints[64];
    int count = proto_config_endpoints(config, "ledger", endpoints, 64);
    for (int i = 0; i < count; i++)
        if (proto_socket_connect(self->ledger, "ledger", endpoints[i]) < 0) {
            billing_destroy(&self);
            return NULL;
        }
    self->outbox = proto_outbox_new(self->loop, self->ledger, BILLING_RESEND_MS);

    char error[1024];
    self->watch = proto_watch_new(self->loop, config, false, s_catalog, self, error, sizeof error);
    if (!self->watch) {
        log_error(NULL, "%s", error);
        billing_destroy(&self);
        return NULL;
    }
    assert(self->catalog);
    s_load_spend(self, config);
    proto_loop_add_socket(self->loop, self->router, s_router_ready, self);
    proto_loop_add_socket(self->loop, self->ledger, s_ledger_ready, self);
    self->sweep_timer = proto_loop_add_timer(self->loop, S_SWEEP_MS, true, s_sweep, self);
    self->tick_timer = proto_loop_add_timer(self->loop, 20, true, s_tick, self);
    log_info(NULL, "billing on %s, %d ledger endpoint%s", bind, count, count == 1 ? "" : "s");
    return self;
}

void billing_destroy(billing_t **self_p)
{
    assert(self_p);
    billing_t *self = *self_p;
    if (!self)
        return;
    if (self->sweep_timer)
        proto_loop_cancel_timer(self->loop, self->sweep_timer);
    if (self->tick_timer)
        proto_loop_cancel_timer(self->loop, self->tick_timer);
    if (self->drain_timer)
        proto_loop_cancel_timer(self->loop, self->drain_timer);
    if (self->router)
        proto_loop_remove_socket(self->loop, self->router);
    if (self->ledger)
        proto_loop_remove_socket(self->loop, self->ledger);
    if (self->outbox && proto_outbox_pending(self->outbox))
        log_warn(NULL, "exiting with %zu entries not committed; their senders still hold them",
                 proto_outbox_pending(self->outbox));
    proto_outbox_destroy(&self->outbox);
    proto_batch_destroy(&self->commits);
    proto_watch_destroy(&self->watch);
    proto_catalog_destroy(&self->catalog);
    zsock_destroy(&self->ledger);
    zsock_destroy(&self->router);
    zhashx_destroy(&self->pending);
    billing_committed_destroy(&self->committed);
    zlistx_destroy(&self->held_admits);
    billing_lease_destroy(&self->leases);
    billing_grant_destroy(&self->grants);
    billing_book_destroy(&self->book);
    free(self);
    *self_p = NULL;
}

void billing_drain(billing_t *self)
{
    self->draining = true;
    self->drain_started_ms = proto_loop_now_ms();
    if (!self->drain_timer)
        self->drain_timer =
            proto_loop_add_timer(self->loop, S_DRAIN_TICK_MS, true, s_drain_tick, self);
    log_info(NULL, "draining: %zu entries wait for the ledger", proto_outbox_pending(self->outbox));
    s_maybe_drained(self);
}

char *billing_status(billing_t *self)
{
    //  proto_service puts this inside a 2 KiB PONG meta; stay well below.
    char status[1800];
    int used = snprintf(status, sizeof status,
                        "{\"outbox\":%zu,\"committed_recent\":%zu,\"reservations\":%zu,"
                        "\"leases\":%zu,\"catalog_loads\":%" PRIu64 ",",
                        proto_outbox_pending(self->outbox), billing_committed_size(self->committed),
                        billing_book_reservations(self->book), billing_lease_count(self->leases),
                        proto_watch_loads(self->watch));
    used += (int)billing_book_status(self->book, status + used, sizeof status - (size_t)used - 2);
    snprintf(status + used, sizeof status - (size_t)used, "}");
    return strdup(status);
}

//  --------------------------------------------------------------------------
//  Self test: the server in this process, as Malamute tests its server. The
//  catalog is injected (catalog_file); a DEALER plays ingress and dispatch,
//  a ROUTER plays the ledger. No PostgreSQL: the spend caps start at zero.

#include "proto_peer.h"

#define S_TEST_WAIT_MS 5000

static const char s_test_catalog[] =
    "{\"accounts\":[{\"id\":1,\"name\":\"rich\",\"balance_micros\":100000000},"
    "{\"id\":2,\"name\":\"poor\",\"balance_micros\":5},"
    "{\"id\":3,\"name\":\"off\",\"balance_micros\":100000000,\"status\":\"disabled\"}],"
    "\"keys\":[{\"id\":10,\"account_id\":1,\"hash\":\"h10\"},"
    "{\"id\":11,\"account_id\":1,\"hash\":\"h11\",\"status\":\"revoked\"},"
    "{\"id\":12,\"account_id\":1,\"hash\":\"h12\",\"allowed_models\":[\"other\"]},"
    "{\"id\":20,\"account_id\":2,\"hash\":\"h20\"},"
    "{\"id\":30,\"account_id\":3,\"hash\":\"h30\"}],"
    "\"providers\":[{\"id\":40,\"name\":\"p\",\"protocol\":\"openai\"}],"
    "\"provider_keys\":[{\"id\":41,\"provider_id\":40}],"
    "\"models\":[{\"id\":50,\"name\":\"m\",\"price_in_micros\":2000000,"
    "\"price_out_micros\":4000000},{\"id\":51,\"name\":\"other\"},"
    "{\"id\":52,\"name\":\"gone\",\"status\":\"disabled\"},"
    "{\"id\":53,\"name\":\"capped\",\"price_out_micros\":1000000,\"max_output_tokens\":1000},"
    "{\"id\":54,\"name\":\"dear\",\"price_out_micros\":9000000000000000000}]}";

//  ADMIT from the DEALER, with max_tokens (0: none); returns the ADMIT_REPLY.
static proto_msg_t *s_test_admit_out(proto_peer_t *client, const char *rid, uint64_t key_id,
                                     uint64_t account_id, const char *model, uint64_t tokens_out)
{
    proto_msg_t *admit = proto_msg_new(PROTO_MSG_ADMIT);
    proto_msg_set_request_id(admit, rid);
    proto_msg_set_key_id(admit, key_id);
    proto_msg_set_account_id(admit, account_id);
    proto_msg_set_model(admit, model);
    proto_msg_set_tokens_in(admit, 100);
    if (tokens_out)
        proto_msg_set_tokens_out(admit, tokens_out);
    PROTO_CHECK(proto_peer_send(client, &admit) == 0);
    proto_msg_t *reply = proto_peer_wait(client, PROTO_MSG_ADMIT_REPLY, rid, S_TEST_WAIT_MS);
    PROTO_CHECK(reply);
    return reply;
}

static proto_msg_t *s_test_admit(proto_peer_t *client, const char *rid, uint64_t key_id,
                                 uint64_t account_id, const char *model)
{
    return s_test_admit_out(client, rid, key_id, account_id, model, 0);
}

static void s_test_refused(proto_peer_t *client, const char *rid, uint64_t key_id,
                           uint64_t account_id, const char *model, uint64_t status,
                           const char *code)
{
    proto_msg_t *reply = s_test_admit(client, rid, key_id, account_id, model);
    PROTO_CHECK(proto_msg_status(reply) == status);
    PROTO_CHECK(strcmp(proto_msg_error_code(reply), code) == 0);
    PROTO_CHECK(*proto_msg_error_message(reply));
    proto_msg_destroy(&reply);
}

static void s_test_settle(proto_peer_t *client, const char *rid, uint64_t status)
{
    proto_msg_t *settle = proto_msg_new(PROTO_MSG_SETTLE);
    proto_msg_set_request_id(settle, rid);
    proto_msg_set_account_id(settle, 1);
    proto_msg_set_key_id(settle, 10);
    proto_msg_set_model(settle, "m");
    proto_msg_set_provider_id(settle, 40);
    proto_msg_set_provider_key_id(settle, 41);
    proto_msg_set_upstream_model(settle, "up");
    proto_msg_set_status(settle, status);
    proto_msg_set_started_us(settle, proto_loop_wall_us());
    if (status < 400) {
        proto_msg_set_tokens_in(settle, 1000);
        proto_msg_set_tokens_out(settle, 500);
    }
    PROTO_CHECK(proto_peer_send(client, &settle) == 0);
}

//  The ledger's side: the ENTRY for rid arrives; answers COMMIT unless
//  `commit` is false. Returns the ENTRY's cost.
static int64_t s_test_entry(proto_peer_t *ledger, const char *rid, bool commit)
{
    proto_msg_t *entry = proto_peer_wait(ledger, PROTO_MSG_ENTRY, rid, S_TEST_WAIT_MS);
    PROTO_CHECK(entry);
    PROTO_CHECK(proto_msg_account_id(entry) == 1 && proto_msg_key_id(entry) == 10);
    int64_t cost = proto_msg_cost_micros(entry);
    if (commit) {
        proto_msg_t *done = proto_msg_reply(entry, PROTO_MSG_COMMIT);
        PROTO_CHECK(proto_peer_send(ledger, &done) == 0);
    }
    proto_msg_destroy(&entry);
    return cost;
}

//  The model's max_output_tokens: the reservation when the request names no
//  limit, a limit above it refused 400 invalid_value; a reservation that
//  overflows refused 400 cost_overflow; a settled cost that overflows
//  charges the reservation, marked estimated, never 0.
static void s_test_output_limits(proto_peer_t *client, proto_peer_t *ledger)
{
    //  capped: $1/M out, at most 1000: 1000 reserved, not 4096.
    proto_msg_t *reply = s_test_admit(client, "t-20", 10, 1, "capped");
    PROTO_CHECK(proto_msg_status(reply) == 200 && proto_msg_reserve_micros(reply) == 1000);
    proto_msg_destroy(&reply);
    reply = s_test_admit_out(client, "t-21", 10, 1, "capped", 1000);
    PROTO_CHECK(proto_msg_status(reply) == 200 && proto_msg_reserve_micros(reply) == 1000);
    proto_msg_destroy(&reply);
    reply = s_test_admit_out(client, "t-22", 10, 1, "capped", 1001);
    PROTO_CHECK(proto_msg_status(reply) == 400);
    PROTO_CHECK(streq(proto_msg_error_code(reply), "invalid_value"));
    PROTO_CHECK(strstr(proto_msg_error_message(reply), "max_tokens is too large: 1001"));
    PROTO_CHECK(strstr(proto_msg_error_message(reply), "at most 1000 output tokens"));
    proto_msg_destroy(&reply);
    //  In the client's own words: Gemini's field.
    proto_msg_t *admit = proto_msg_new(PROTO_MSG_ADMIT);
    proto_msg_set_request_id(admit, "t-22g");
    proto_msg_set_key_id(admit, 10);
    proto_msg_set_account_id(admit, 1);
    proto_msg_set_model(admit, "capped");
    proto_msg_set_tokens_out(admit, 2000);
    proto_msg_set_client_protocol(admit, PROTO_PROTOCOL_GEMINI);
    PROTO_CHECK(proto_peer_send(client, &admit) == 0);
    reply = proto_peer_wait(client, PROTO_MSG_ADMIT_REPLY, "t-22g", S_TEST_WAIT_MS);
    PROTO_CHECK(reply && proto_msg_status(reply) == 400);
    PROTO_CHECK(strstr(proto_msg_error_message(reply),
                       "generationConfig.maxOutputTokens is too large: 2000"));
    proto_msg_destroy(&reply);
    //  No maximum on m: 4096 x 4 + 100 x 2 micros.
    reply = s_test_admit(client, "t-23", 10, 1, "m");
    PROTO_CHECK(proto_msg_status(reply) == 200 && proto_msg_reserve_micros(reply) == 16584);
    proto_msg_destroy(&reply);
    //  dear: 2e12 output tokens at 9e18 micros per million do not fit.
    reply = s_test_admit_out(client, "t-24", 10, 1, "dear", UINT64_C(2000000000000));
    PROTO_CHECK(proto_msg_status(reply) == 400);
    PROTO_CHECK(streq(proto_msg_error_code(reply), "cost_overflow"));
    proto_msg_destroy(&reply);

    //  A settlement whose cost overflows (tokens no upstream reports)
    //  charges what the request was admitted for, marked estimated.
    proto_msg_t *settle = proto_msg_new(PROTO_MSG_SETTLE);
    proto_msg_set_request_id(settle, "t-20");
    proto_msg_set_account_id(settle, 1);
    proto_msg_set_key_id(settle, 10);
    proto_msg_set_model(settle, "dear");
    proto_msg_set_status(settle, 200);
    proto_msg_set_started_us(settle, proto_loop_wall_us());
    proto_msg_set_tokens_out(settle, UINT64_C(1000000000000));
    proto_msg_set_reserve_micros(settle, 1000);
    PROTO_CHECK(proto_peer_send(client, &settle) == 0);
    proto_msg_t *entry = proto_peer_wait(ledger, PROTO_MSG_ENTRY, "t-20", S_TEST_WAIT_MS);
    PROTO_CHECK(entry && proto_msg_cost_micros(entry) == 1000 && proto_msg_estimated(entry));
    proto_msg_t *done = proto_msg_reply(entry, PROTO_MSG_COMMIT);
    proto_msg_destroy(&entry);
    PROTO_CHECK(proto_peer_send(ledger, &done) == 0);
    proto_msg_t *commit = proto_peer_wait(client, PROTO_MSG_COMMIT, "t-20", S_TEST_WAIT_MS);
    PROTO_CHECK(commit);
    proto_msg_destroy(&commit);
    //  The others admitted here settle (releasing their reservations).
    const char *admitted[] = {"t-21", "t-23"};
    for (size_t i = 0; i < sizeof admitted / sizeof *admitted; i++) {
        s_test_settle(client, admitted[i], 200);
        PROTO_CHECK(s_test_entry(ledger, admitted[i], true) == 4000);
        commit = proto_peer_wait(client, PROTO_MSG_COMMIT, admitted[i], S_TEST_WAIT_MS);
        PROTO_CHECK(commit);
        proto_msg_destroy(&commit);
    }
}

//  A SETTLE as dispatch sends it for rid, with grant (NULL: none).
static void s_test_settle_grant(proto_peer_t *client, const char *rid, const char *grant)
{
    proto_msg_t *settle = proto_msg_new(PROTO_MSG_SETTLE);
    proto_msg_set_request_id(settle, rid);
    proto_msg_set_account_id(settle, 1);
    proto_msg_set_key_id(settle, 10);
    proto_msg_set_model(settle, "m");
    proto_msg_set_status(settle, 200);
    proto_msg_set_started_us(settle, proto_loop_wall_us());
    proto_msg_set_tokens_in(settle, 1000);
    proto_msg_set_tokens_out(settle, 500);
    if (grant)
        proto_msg_set_grant(settle, grant);
    PROTO_CHECK(proto_peer_send(client, &settle) == 0);
}

//  Who may settle: a SETTLE no admission vouches for is dropped (no ENTRY,
//  no COMMIT); the grant of an ADMIT_REPLY is still good after a restart,
//  when the reservation is gone. Returns the restarted billing.
static billing_t *s_test_vouchers(proto_service_t *service, billing_t *billing,
                                  proto_peer_t **client_p, proto_peer_t *ledger)
{
    proto_peer_t *client = *client_p;
    //  Never admitted: no grant, a made-up one, or another request's.
    proto_msg_t *reply = s_test_admit(client, "t-30", 10, 1, "m");
    PROTO_CHECK(proto_msg_status(reply) == 200 && proto_msg_has(reply, PROTO_FIELD_grant));
    char grant[BILLING_GRANT_MAX + 1];
    snprintf(grant, sizeof grant, "%s", proto_msg_grant(reply));
    proto_msg_destroy(&reply);
    s_test_settle_grant(client, "t-forged-1", NULL);
    s_test_settle_grant(client, "t-forged-2", "a1.00000000000000000000000000000000");
    s_test_settle_grant(client, "t-forged-3", grant);
    PROTO_CHECK(proto_peer_idle(ledger, PROTO_MSG_ENTRY, 100) == 0);
    PROTO_CHECK(proto_peer_idle(client, PROTO_MSG_COMMIT, 10) == 0);
    //  Its own grant, for another account: dropped too.
    proto_msg_t *settle = proto_msg_new(PROTO_MSG_SETTLE);
    proto_msg_set_request_id(settle, "t-30");
    proto_msg_set_account_id(settle, 2);
    proto_msg_set_key_id(settle, 20);
    proto_msg_set_model(settle, "m");
    proto_msg_set_status(settle, 200);
    proto_msg_set_started_us(settle, proto_loop_wall_us());
    proto_msg_set_grant(settle, grant);
    PROTO_CHECK(proto_peer_send(client, &settle) == 0);
    PROTO_CHECK(proto_peer_idle(ledger, PROTO_MSG_ENTRY, 100) == 0);

    //  Billing restarts: the reservation of t-30 is gone, its grant holds.
    billing_destroy(&billing);
    //  ZeroMQ frees the inproc name when its reaper has closed the socket.
    for (int tries = 0; !billing && tries < 100; tries++) {
        zclock_sleep(10);
        billing = billing_new(service);
    }
    PROTO_CHECK(billing);
    //  A new connection, as dispatch's DEALER reconnects by itself.
    proto_peer_destroy(client_p);
    *client_p = client =
        proto_peer_new(proto_service_loop(service), ZMQ_DEALER, "inproc://billing-test", false);
    PROTO_CHECK(client);
    s_test_settle_grant(client, "t-30", NULL);
    PROTO_CHECK(proto_peer_idle(ledger, PROTO_MSG_ENTRY, 100) == 0);
    s_test_settle_grant(client, "t-30", grant);
    PROTO_CHECK(s_test_entry(ledger, "t-30", true) == 4000);
    proto_msg_t *commit = proto_peer_wait(client, PROTO_MSG_COMMIT, "t-30", S_TEST_WAIT_MS);
    PROTO_CHECK(commit);
    proto_msg_destroy(&commit);
    return billing;
}

void billing_test(bool verbose)
{
    if (verbose)
        printf(" * billing: ");
    char error[512];
    const char *settings[] = {"billing.bind",
                              "inproc://billing-test",
                              "ledger.endpoints",
                              "inproc://billing-test-ledger",
                              "billing.leases",
                              "false",
                              "secret_key",
                              "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                              NULL};
    proto_service_t *service =
        proto_peer_service_new("billing", s_test_catalog, settings, error, sizeof error);
    PROTO_CHECK(service);
    proto_loop_t *loop = proto_service_loop(service);
    //  The ledger binds first (inproc), as a ledger would be up already.
    proto_peer_t *ledger = proto_peer_new(loop, ZMQ_ROUTER, "inproc://billing-test-ledger", true);
    PROTO_CHECK(ledger);
    billing_t *billing = billing_new(service);
    PROTO_CHECK(billing);
    proto_peer_t *client = proto_peer_new(loop, ZMQ_DEALER, "inproc://billing-test", false);
    PROTO_CHECK(client);

    //  Admission: admitted with a reservation priced from the catalog.
    proto_msg_t *reply = s_test_admit(client, "t-1", 10, 1, "m");
    PROTO_CHECK(proto_msg_status(reply) == 200);
    PROTO_CHECK(proto_msg_reserve_micros(reply) > 0);
    proto_msg_destroy(&reply);
    //  Every refusal, with its code, from the injected catalog alone.
    s_test_refused(client, "t-2", 99, 1, "m", 401, "invalid_api_key");
    s_test_refused(client, "t-3", 11, 1, "m", 401, "invalid_api_key");
    s_test_refused(client, "t-4", 30, 3, "m", 401, "invalid_api_key");
    s_test_refused(client, "t-5", 10, 1, "nosuch", 404, "model_not_found");
    s_test_refused(client, "t-6", 10, 1, "gone", 404, "model_not_found");
    s_test_refused(client, "t-7", 12, 1, "m", 403, "model_not_allowed");
    s_test_refused(client, "t-8", 20, 2, "m", 402, "insufficient_balance");

    //  Settlement: ENTRY to the ledger with the cost, COMMIT back to the
    //  settler only once the ledger has committed.
    s_test_settle(client, "t-1", 200);
    proto_msg_t *entry = proto_peer_wait(ledger, PROTO_MSG_ENTRY, "t-1", S_TEST_WAIT_MS);
    //  Prices are micros per million tokens: 1000 * 2 + 500 * 4.
    PROTO_CHECK(entry && proto_msg_cost_micros(entry) == 4000);
    PROTO_CHECK(proto_msg_account_id(entry) == 1 && proto_msg_key_id(entry) == 10);
    //  Nothing for the settler until the ledger has committed.
    PROTO_CHECK(proto_peer_idle(client, PROTO_MSG_COMMIT, 50) == 0);
    proto_msg_t *commit = proto_msg_reply(entry, PROTO_MSG_COMMIT);
    proto_msg_destroy(&entry);
    PROTO_CHECK(proto_peer_send(ledger, &commit) == 0);
    commit = proto_peer_wait(client, PROTO_MSG_COMMIT, "t-1", S_TEST_WAIT_MS);
    PROTO_CHECK(commit);
    proto_msg_destroy(&commit);
    char *status = billing_status(billing);
    PROTO_CHECK(strstr(status, "\"outbox\":0"));
    free(status);

    //  A re-sent SETTLE after the commit: COMMIT at once, no second ENTRY.
    s_test_settle(client, "t-1", 200);
    commit = proto_peer_wait(client, PROTO_MSG_COMMIT, "t-1", S_TEST_WAIT_MS);
    PROTO_CHECK(commit);
    proto_msg_destroy(&commit);
    PROTO_CHECK(proto_peer_idle(ledger, PROTO_MSG_ENTRY, 50) == 0);

    //  A failed request: recorded, at cost 0.
    reply = s_test_admit(client, "t-9", 10, 1, "m");
    PROTO_CHECK(proto_msg_status(reply) == 200);
    proto_msg_destroy(&reply);
    s_test_settle(client, "t-9", 502);
    PROTO_CHECK(s_test_entry(ledger, "t-9", true) == 0);
    commit = proto_peer_wait(client, PROTO_MSG_COMMIT, "t-9", S_TEST_WAIT_MS);
    PROTO_CHECK(commit);
    proto_msg_destroy(&commit);

    s_test_output_limits(client, ledger);
    billing = s_test_vouchers(service, billing, &client, ledger);

    //  Hostile input: garbage frames and an ADMIT without a request id are
    //  dropped, and the server answers the next request.
    zsock_t *raw = proto_peer_socket(client);
    zstr_send(raw, "not a message");
    proto_msg_t *nameless = proto_msg_new(PROTO_MSG_ADMIT);
    proto_msg_set_key_id(nameless, 10);
    proto_msg_set_account_id(nameless, 1);
    proto_msg_set_model(nameless, "m");
    PROTO_CHECK(proto_peer_send(client, &nameless) == 0);
    reply = s_test_admit(client, "t-10", 10, 1, "m");
    PROTO_CHECK(proto_msg_status(reply) == 200);
    proto_msg_destroy(&reply);
    PROTO_CHECK(proto_peer_pending(client) == 0);

    proto_peer_destroy(&client);
    billing_destroy(&billing);
    PROTO_CHECK(!billing);
    proto_peer_destroy(&ledger);
    proto_peer_service_destroy(&service);
    if (verbose)
        printf("OK\n");
}
