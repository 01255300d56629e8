#include "ingress_admit.h"
#include "proto_check.h"
#include "ingress_fixture.h"
#include "ingress_relay.h"
#include "ingress_server_private.h"
#include "ingress_usage.h"
#include "proto_batch.h"
#include "proto_log.h"
#include "proto_observe.h"
#include "proto_price.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_RESEND_AFTER_MS 250      //  no ADMIT reply by then: re-send
#define S_RESEND_TICK_MS 50        //  how often waiting requests are looked at
#define S_ADMIT_RESEND_MAX_MS 1000 //  longest gap between ADMIT re-sends

static void s_send_to_billing(ingress_server_t *self, uint64_t account_id, proto_msg_t **msg_p);

const char *ingress_admit_grant(const ingress_request_t *r)
{
    if (r->lease.grant[0])
        return r->lease.grant;
    if (r->admit_reply && proto_msg_has(r->admit_reply, PROTO_FIELD_grant))
        return proto_msg_grant(r->admit_reply);
    return NULL;
}

//  Settles what billing admitted but dispatch never got: zero tokens, so
//  the reservation is released and the request leaves a usage row.
void ingress_admit_settle(ingress_request_t *r, int status)
{
    ingress_server_t *self = r->server;
    bool admitted =
        r->lease.lease_id || (r->admit_reply && proto_msg_status(r->admit_reply) == 200);
    if (!admitted || !self->billing_count)
        return;
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_SETTLE);
    proto_msg_set_request_id(msg, r->id);
    proto_msg_set_trace(msg, r->trace);
    proto_msg_set_account_id(msg, r->account_id);
    proto_msg_set_key_id(msg, r->key_id);
    proto_msg_set_model(msg, r->parsed.model);
    proto_msg_set_status(msg, (uint64_t)status);
    proto_msg_set_started_us(msg, r->started_wall_us);
    proto_msg_set_latency_us(msg, proto_loop_now_us() - r->started_us);
    proto_msg_set_attempts(msg, 0);
    proto_msg_set_tokens_in(msg, 0);
    proto_msg_set_tokens_out(msg, 0);
    proto_msg_set_reserve_micros(msg, r->reserve_micros);
    if (r->lease.lease_id)
        proto_msg_set_lease_id(msg, r->lease.lease_id);
    if (ingress_admit_grant(r))
        proto_msg_set_grant(msg, ingress_admit_grant(r));
    ingress_peer_t *billing = &self->billing[r->account_id % (uint64_t)self->billing_count];
    if (proto_outbox_send(billing->outbox, &msg) != 0)
        log_error(r->id, "SETTLE outbox full; the reservation stays until billing expires it");
    proto_metric_add(self->settles, 1);
    log_debug(r->id, "settled with status %d and no tokens", status);
}

//  The request's part of a lease ends with the pipeline's hold: the real
//  cost when DONE brought one, else the estimate stays counted.
void ingress_admit_lease_release(ingress_request_t *r)
{
    if (!r->lease.lease_id)
        return;
    ingress_lease_release(r->server->leases, r->key_id, &r->lease,
                          r->done_seen ? r->done_cost : r->lease.micros,
                          r->done_seen ? r->done_tokens : r->lease.tokens);
    r->lease.lease_id = 0;
}

//  Called when billing's answer arrives for a waiting or abandoned request.
static void s_decide(ingress_server_t *self, ingress_request_t *r)
{
    if (!r->admit_reply)
        return;
    bool admitted = proto_msg_status(r->admit_reply) == 200;
    if (r->phase == INGRESS_PHASE_ABANDONED) {
        if (admitted)
            ingress_admit_settle(r, r->abandon_status);
        ingress_server_forget(r);
        return;
    }
    if (!admitted) {
        r->phase = INGRESS_PHASE_ANSWERED;
        ingress_server_forget(r);
        ingress_request_answer_reply_error(r, r->admit_reply, "admission_refused",
                                           "The request was refused");
        return;
    }
    ingress_relay_dispatch(self, r);
}

static void s_on_reply(ingress_server_t *self, proto_msg_t **msg_p)
{
    proto_msg_t *msg = *msg_p;
    ingress_request_t *r = zhashx_lookup(self->requests, proto_msg_request_id(msg));
    proto_msg_t **slot = r ? &r->admit_reply : NULL;
    if (!r || (r->phase != INGRESS_PHASE_WAITING && r->phase != INGRESS_PHASE_ABANDONED) || *slot) {
        proto_metric_add(self->dropped, 1);
        log_debug(proto_msg_request_id(msg), "dropped a late %s",
                  proto_msg_type_name((int)proto_msg_type(msg)));
        return;
    }
    if (r->phase == INGRESS_PHASE_WAITING && ingress_relay_draining_answer(msg)) {
        //  A billing instance on its way out: its successor owns the shard
        //  in a moment, and s_resend_tick asks again.
        log_debug(r->id, "billing is draining; the ADMIT will be re-sent");
        return;
    }
    *slot = msg;
    *msg_p = NULL;
    if (proto_msg_status(msg) == 200)
        r->reserve_micros = proto_msg_reserve_micros(msg);
    proto_observe_span_since(self->tracer, r->id, r->trace, "ingress.admission",
                             r->received_us ? r->received_us : r->started_us,
                             (int)proto_msg_status(msg));
    s_decide(self, r);
}

//  Sends LEASE_RETURNs (taking them), each to its account's billing.
void ingress_admit_send_returns(ingress_server_t *self, zlistx_t *returns)
{
    for (proto_msg_t *back = zlistx_detach(returns, NULL); back;
         back = zlistx_detach(returns, NULL))
        s_send_to_billing(self, proto_msg_account_id(back), &back);
}

void ingress_admit_lease_sweep(proto_loop_t *loop, int id, void *arg)
{
    ingress_server_t *self = arg;
    zlistx_t *returns = zlistx_new();
    ingress_lease_sweep(self->leases, proto_loop_now_ms(), returns);
    ingress_admit_send_returns(self, returns);
    zlistx_destroy(&returns);
}

//  The key's own figures (GET /v1/usage and the dashboard routes): billing
//  has the money, the catalog the rest (ingress_usage).
static void s_on_balance(ingress_server_t *self, proto_msg_t *msg)
{
    ingress_request_t *r = zhashx_lookup(self->requests, proto_msg_request_id(msg));
    if (!r || r->phase != INGRESS_PHASE_QUERY) {
        proto_metric_add(self->dropped, 1);
        log_debug(proto_msg_request_id(msg), "dropped a late BALANCE_REPLY");
        return;
    }
    r->phase = INGRESS_PHASE_ANSWERED;
    ingress_server_forget(r);
    if (proto_msg_status(msg) != 200) {
        ingress_request_answer_reply_error(r, msg, "invalid_api_key", "Invalid API key.");
        return;
    }
    const proto_api_key_t *key = proto_catalog_key(self->catalog, r->key_id);
    char *text = key ? ingress_usage_answer(
                           r->route->name, self->catalog, key,
                           proto_msg_has(msg, PROTO_FIELD_meta) ? proto_msg_meta(msg) : NULL)
                     : NULL;
    if (!text) {
        log_warn(r->id, "billing's BALANCE_REPLY is not what ingress_usage reads");
        ingress_request_answer_error(r, 502, "internal_error",
                                     "The gateway's billing answered unexpectedly");
        return;
    }
    struct MHD_Response *response =
        MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    ingress_request_answer(r, 200, response);
}

static void s_billing_message(proto_msg_t **msg_p, void *arg)
{
    ingress_peer_t *peer = arg;
    ingress_server_t *self = peer->server;
    proto_msg_t *msg = *msg_p;
    if (proto_msg_type(msg) == PROTO_MSG_ADMIT_REPLY)
        s_on_reply(self, &msg);
    else if (proto_msg_type(msg) == PROTO_MSG_BALANCE_REPLY)
        s_on_balance(self, msg);
    else if (proto_msg_type(msg) == PROTO_MSG_LEASE)
        ingress_lease_granted(self->leases, msg, proto_loop_now_ms());
    else if (proto_msg_type(msg) == PROTO_MSG_LEASE_REVOKE) {
        zlistx_t *returns = zlistx_new();
        ingress_lease_revoked(self->leases, msg, returns);
        ingress_admit_send_returns(self, returns);
        zlistx_destroy(&returns);
    } else if (proto_msg_type(msg) == PROTO_MSG_COMMIT) {
        if (!proto_outbox_ack(peer->outbox, proto_msg_request_id(msg)))
            log_debug(proto_msg_request_id(msg), "COMMIT for a SETTLE we no longer hold");
        ingress_server_check_drained(self);
    } else
        log_warn(proto_msg_request_id(msg), "billing %d: ignored %s", peer->index,
                 proto_msg_type_name((int)proto_msg_type(msg)));
    *msg_p = msg; //  an ADMIT_REPLY kept by the request is NULL here
}

void ingress_admit_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    ingress_peer_t *peer = arg;
    if (proto_batch_recv(socket, s_billing_message, peer) == -2)
        log_warn(NULL, "billing %d: dropped a malformed message", peer->index);
}

//  A client gone before its answer while admission is unknown: keep the id
//  until billing has spoken, so an admission is settled, not leaked.
void ingress_admit_abandon(ingress_server_t *self, ingress_request_t *r, int status)
{
    r->abandon_status = status;
    if (r->admit_reply) {
        if (proto_msg_status(r->admit_reply) == 200)
            ingress_admit_settle(r, status);
        r->phase = INGRESS_PHASE_ANSWERED;
        ingress_server_forget(r);
        return;
    }
    r->phase = INGRESS_PHASE_ABANDONED;
    ingress_queue_push(self->waiting, &r->timeout, self->internal_timeout_ms);
}

void ingress_admit_waiting_expired(ingress_queue_item_t *item, void *arg)
{
    ingress_server_t *self = arg;
    ingress_request_t *r = ingress_request_of(item);
    if (r->phase == INGRESS_PHASE_QUERY) {
        log_warn(r->id, "no BALANCE reply from billing within %llu ms",
                 (unsigned long long)self->internal_timeout_ms);
        r->phase = INGRESS_PHASE_ANSWERED;
        ingress_server_forget(r);
        ingress_request_answer_error(r, 503, "internal_timeout",
                                     "The gateway's billing did not answer in time");
        return;
    }
    if (r->phase == INGRESS_PHASE_ABANDONED) {
        //  Billing never answered; it drops the ADMIT by its deadline.
        log_debug(r->id, "forgotten without an admission reply");
        ingress_server_forget(r);
        return;
    }
    const char *missing = "billing";
    log_warn(r->id, "no reply from %s within %llu ms", missing,
             (unsigned long long)self->internal_timeout_ms);
    char message[160];
    snprintf(message, sizeof message, "The gateway's %s did not answer in time", missing);
    ingress_request_answer_error(r, 503, "internal_timeout", message);
    ingress_admit_abandon(self, r, 503);
}

static proto_msg_t *s_admit_new(ingress_request_t *r, uint64_t timeout_ms)
{
    proto_msg_t *admit = proto_msg_new(PROTO_MSG_ADMIT);
    ingress_request_stamp(r, admit, timeout_ms);
    proto_msg_set_key_id(admit, r->key_id);
    proto_msg_set_account_id(admit, r->account_id);
    proto_msg_set_model(admit, r->parsed.model);
    proto_msg_set_stream(admit, r->parsed.stream);
    proto_msg_set_tokens_in(admit, r->parsed.tokens_estimate);
    if (r->parsed.max_output)
        proto_msg_set_tokens_out(admit, r->parsed.max_output);
    //  Billing names the client's own fields in a refusal.
    proto_msg_set_client_protocol(admit, (uint64_t)r->protocol);
    if (r->parsed.images)
        proto_msg_set_images(admit, r->parsed.images);
    return admit;
}

//  The request's admission estimate, as billing computes it: its prompt
//  and its own output limit at the model's prices. False when this ingress
//  cannot tell (a model it does not know, one the key may not use, a
//  max_tokens above the model's maximum, images of a model with no image
//  price):
//  then billing answers ADMIT with the reason.
static bool s_estimate(ingress_server_t *self, ingress_request_t *r, int64_t *micros)
{
    const proto_model_t *model = proto_catalog_model_for_client(self->catalog, r->parsed.model);
    const proto_api_key_t *key = proto_catalog_key(self->catalog, r->key_id);
    if (!model || !model->active || !key ||
        !proto_catalog_key_allows(self->catalog, key, r->parsed.model) ||
        !proto_price_output_allowed(model, r->parsed.max_output) ||
        (r->parsed.images && model->price_image_micros < 0))
        return false;
    const proto_account_t *account = proto_catalog_account(self->catalog, key->account_id);
    *micros = proto_price_scale(proto_price_reserve_images(model, r->parsed.tokens_estimate,
                                                           r->parsed.max_output, r->parsed.images),
                                account ? account->multiplier_ppm : PROTO_PRICE_PPM_ONE);
    return true;
}

static void s_send_to_billing(ingress_server_t *self, uint64_t account_id, proto_msg_t **msg_p)
{
    zsock_t *billing = self->billing[account_id % (uint64_t)self->billing_count].socket;
    if (proto_msg_send(msg_p, billing) != 0)
        log_debug(NULL, "billing did not take a lease message");
}

//  Asks for (or renews) the key's lease when it is due, beside the traffic.
static void s_lease_ask(ingress_server_t *self, ingress_request_t *r, int64_t estimate)
{
    if (!self->leases_on)
        return;
    proto_msg_t *ask = ingress_lease_ask(self->leases, r->key_id, r->account_id, estimate,
                                         r->parsed.tokens_estimate, proto_loop_now_ms());
    if (ask)
        s_send_to_billing(self, r->account_id, &ask);
}

//  Admits from the key's lease: no round trip; DISPATCH goes out now.
//  False when the lease does not cover the request (ask with ADMIT).
static bool s_admit_from_lease(ingress_server_t *self, ingress_request_t *r, int64_t estimate)
{
    if (!self->leases_on ||
        !ingress_lease_admit(self->leases, r->key_id, estimate, r->parsed.tokens_estimate,
                             proto_loop_now_ms(), &r->lease))
        return false;
    r->reserve_micros = estimate;
    proto_metric_add(self->lease_admits, 1);
    proto_observe_span_since(self->tracer, r->id, r->trace, "ingress.admission", r->received_us,
                             200);
    s_lease_ask(self, r, estimate); //  renewal ahead of need, when due
    ingress_relay_dispatch(self, r);
    if (r->phase == INGRESS_PHASE_DISPATCHED)
        ingress_request_suspend(r);
    log_debug(r->id, "admitted from lease %llu for model %s", (unsigned long long)r->lease.lease_id,
              r->parsed.model);
    return true;
}

//  A request waiting longer than S_RESEND_AFTER_MS lost its ADMIT in an
//  instance that exited (what a DEALER sent before the peer closed is
//  gone). ADMIT goes to the same shard (its billing comes back under the
//  supervisor) with growing gaps; a second ADMIT of an id takes nothing
//  more. The first reply wins: s_on_reply drops the others.
static void s_resend(ingress_server_t *self, ingress_request_t *r, uint64_t now)
{
    uint64_t left = r->timeout.due_ms > now ? r->timeout.due_ms - now : 1;
    if (!r->admit_reply && now >= r->admit_resend_ms) {
        r->admit_resend_gap_ms =
            r->admit_resend_gap_ms ? r->admit_resend_gap_ms * 2 : S_RESEND_AFTER_MS;
        if (r->admit_resend_gap_ms > S_ADMIT_RESEND_MAX_MS)
            r->admit_resend_gap_ms = S_ADMIT_RESEND_MAX_MS;
        r->admit_resend_ms = now + r->admit_resend_gap_ms;
        proto_msg_t *admit = s_admit_new(r, left);
        log_info(r->id, "no ADMIT_REPLY yet; asking billing again");
        if (proto_msg_send(
                &admit, self->billing[r->account_id % (uint64_t)self->billing_count].socket) != 0)
            log_warn(r->id, "could not re-send ADMIT");
    }
}

//  Walks the waiting queue from its oldest entries; stops at the first
//  younger than S_RESEND_AFTER_MS, so a quiet cluster costs one look.
static void s_resend_tick(proto_loop_t *loop, int id, void *arg)
{
    ingress_server_t *self = arg;
    if (!ingress_queue_first(self->waiting)) {
        proto_loop_cancel_timer(loop, self->resend_timer);
        self->resend_timer = 0;
        return;
    }
    uint64_t now = proto_loop_now_ms();
    for (ingress_queue_item_t *item = ingress_queue_first(self->waiting); item; item = item->next) {
        ingress_request_t *r = ingress_request_of(item);
        if (r->phase != INGRESS_PHASE_WAITING)
            continue; //  abandoned: only waits for billing's word
        if (r->timeout.due_ms + S_RESEND_AFTER_MS > now + self->internal_timeout_ms)
            break;
        s_resend(self, r, now);
    }
}

//  Asks for the request's admission: from the key's lease when it covers
//  it (DISPATCH goes out at once), else with an ADMIT to the account's
//  billing instance, the connection suspended until the reply.
void ingress_admit_submit(ingress_server_t *self, ingress_request_t *r)
{
    int64_t estimate = 0;
    bool priced = s_estimate(self, r, &estimate);
    if (priced && s_admit_from_lease(self, r, estimate))
        return;
    if (priced)
        s_lease_ask(self, r, estimate);
    proto_msg_t *admit = s_admit_new(r, self->internal_timeout_ms);
    zsock_t *billing = self->billing[r->account_id % (uint64_t)self->billing_count].socket;
    if (proto_msg_send(&admit, billing) != 0) {
        ingress_server_forget(r);
        log_warn(r->id, "billing queue full; refusing");
        ingress_request_answer_error(r, 503, "internal_unavailable",
                                     "The gateway's billing is unavailable");
        return;
    }
    r->phase = INGRESS_PHASE_WAITING;
    ingress_queue_push(self->waiting, &r->timeout, self->internal_timeout_ms);
    if (!self->resend_timer)
        self->resend_timer =
            proto_loop_add_timer(self->loop, S_RESEND_TICK_MS, true, s_resend_tick, self);
    ingress_request_suspend(r);
    log_debug(r->id, "admission asked for model %s", r->parsed.model);
}

//  Last call of a GET /v1/usage: asks the account's billing instance for
//  its figures (BALANCE) and waits, suspended, like an ADMIT.
void ingress_admit_usage(ingress_server_t *self, ingress_request_t *r)
{
    r->received_us = proto_loop_now_us();
    r->phase = INGRESS_PHASE_ANSWERED; //  unless it goes out below
    if (!ingress_request_register(r)) {
        ingress_parse_new_request_id(r->id);
        ingress_request_register(r);
    }
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_BALANCE);
    ingress_request_stamp(r, msg, self->internal_timeout_ms);
    proto_msg_set_key_id(msg, r->key_id);
    proto_msg_set_account_id(msg, r->account_id);
    zsock_t *billing = self->billing[r->account_id % (uint64_t)self->billing_count].socket;
    if (proto_msg_send(&msg, billing) != 0) {
        ingress_server_forget(r);
        ingress_request_answer_error(r, 503, "internal_unavailable",
                                     "The gateway's billing is unavailable");
        return;
    }
    r->phase = INGRESS_PHASE_QUERY;
    ingress_queue_push(self->waiting, &r->timeout, self->internal_timeout_ms);
    ingress_request_suspend(r);
}

//  --------------------------------------------------------------------------
//  Self test: through a server with fake billing and dispatch (ingress_fixture).

//  Billing says no: its status and words, no SETTLE. Billing silent:
//  the internal timeout answers.
static void s_test_refusals(ingress_fixture_t *test)
{
    char request[4096];
    test->admit_status = 429;
    ingress_fixture_client_t *client = ingress_fixture_request(
        test, ingress_fixture_chat("", ingress_fixture_chat_body, request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 429", 12) == 0);
    PROTO_CHECK(strstr(client->data, "Retry-After: 2\r\n") && strstr(client->data, "rate_limited"));
    PROTO_CHECK(test->dispatches == 0 && test->settles == 0);

    //  Billing silent: internal timeout.
    test->dispatch_status = 200;
    test->billing_silent = true;
    client = ingress_fixture_request(
        test, ingress_fixture_chat("", ingress_fixture_chat_body, request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 503", 12) == 0);
    PROTO_CHECK(strstr(client->data, "internal_timeout"));
    test->billing_silent = false;
}

void ingress_admit_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_admit: ");
    ingress_fixture_t *test = ingress_fixture_new(50);
    s_test_refusals(test);
    ingress_fixture_destroy(&test);
    if (verbose)
        printf("OK\n");
}
