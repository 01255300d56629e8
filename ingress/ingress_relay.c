#include "ingress_relay.h"
#include "proto_check.h"
#include "ingress_fixture.h"
#include "ingress_buffer.h"
#include "ingress_parse.h"
#include "ingress_server_private.h"
#include "proto_error.h"
#include "proto_log.h"
#include "proto_loop.h"
#include "proto_observe.h"
#include "proto_price.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

//  Most bytes one content-reader call hands MHD. MHD allocates (and zeroes)
//  this with every streamed response, but over HTTP/1.1 (chunked) the
//  reader writes into the connection's write buffer and this block is never
//  used: only an HTTP/1.0 client's stream goes through it, 256 bytes at a
//  time (a send each; such clients are rare). 1 KiB here was 7.5 MiB of
//  zeroed memory at 10,000 open streams.
#define S_STREAM_BLOCK 256
#define S_STREAM_BUFFER_MAX (4u * 1024 * 1024) //  unread stream bytes held per request
#define S_DISPATCH_DRAINING_MS 2000            //  a dispatch that said `draining` is skipped
#define S_HOLD_RETRY_MS 100                    //  a held request looks for a dispatch again
#define S_LOST_RETRY_MS 20                     //  one whose dispatch dropped looks for it again

//  x-tollgate-dropped-fields is cut after this many bytes.
#define S_DROPPED_HEADER_MAX 200

static int s_pick_dispatch(ingress_server_t *self, ingress_request_t *r, bool reachable);
static void s_send_dispatch(ingress_server_t *self, ingress_request_t *r, int chosen);
static void s_send_dispatch_to(ingress_server_t *self, ingress_request_t *r, int chosen,
                               bool asked);

static void s_free_frame(void *arg)
{
    zframe_t *frame = arg;
    zframe_destroy(&frame);
}

static void s_cancel(ingress_request_t *r, const char *reason)
{
    ingress_server_t *self = r->server;
    if (r->dispatch_index < 0 || r->upstream_done)
        return;
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_CANCEL);
    proto_msg_set_request_id(msg, r->id);
    proto_msg_set_trace(msg, r->trace);
    proto_msg_set_reason(msg, reason);
    if (proto_msg_send(&msg, self->dispatch[r->dispatch_index].socket) != 0)
        log_warn(r->id, "could not send CANCEL to dispatch %d", r->dispatch_index);
    proto_metric_add(self->cancels, 1);
    log_debug(r->id, "cancelled (%s)", reason);
}

void ingress_relay_end(ingress_request_t *r, const char *reason)
{
    s_cancel(r, reason);
    r->upstream_done = true;
    ingress_server_forget(r);
}

//  A client gone while its request waits for a dispatch: held after a hand
//  back, no dispatch has it, and it is ours to settle; held after its
//  dispatch's connection dropped, that dispatch settles it (alive) or its
//  journal records the call (dead), and the CANCEL goes there.
void ingress_relay_settle_held(ingress_request_t *r)
{
    if (r->dispatch_index >= 0)
        return;
    if (r->lost_index >= 0)
        r->dispatch_index = r->lost_index;
    else
        ingress_admit_settle(r, 499);
}

static ssize_t s_reader(void *arg, uint64_t position, char *buffer, size_t max)
{
    ingress_request_t *r = arg;
    if (!r->out || r->client_gone)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t size = ingress_buffer_read(r->out, buffer, max);
    if (size)
        return (ssize_t)size;
    if (r->upstream_done)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (!r->connection)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    //  Nothing to send yet: step out of MHD's polling until the next CHUNK,
    //  instead of returning 0 to a loop that would call us straight back.
    ingress_request_suspend(r);
    r->reader_waiting = true;
    return 0;
}

static void s_reader_free(void *arg)
{
    ingress_request_unref(arg);
}

//  Ends a stream early with a protocol-correct error event after the bytes
//  already buffered, and stops the upstream call.
static void s_cut(ingress_request_t *r, int status, const char *code, const char *message)
{
    log_warn(r->id, "stream cut: %s", message);
    ingress_relay_end(r, code);
    if (r->json_array) {
        //  A Gemini stream read as one JSON array: the error is its last
        //  element, and the array is closed. The first CHUNK opened it with
        //  an element (dispatch sends nothing before the first content).
        char *body = proto_error_body(r->protocol, status, code, message);
        ingress_buffer_append_bytes(r->out, ",\r\n", 3);
        ingress_buffer_append_bytes(r->out, body, strlen(body));
        ingress_buffer_append_bytes(r->out, "]", 1);
        free(body);
    } else {
        char *event = proto_error_event(r->protocol, status, code, message);
        ingress_buffer_append_bytes(r->out, event, strlen(event));
        free(event);
    }
    if (r->reader_waiting)
        ingress_request_resume(r);
}

//  The headers every answer carries: the fields a conversion dropped, and
//  the gateway's own time (what the upstream's time, upstream_us, leaves of
//  the whole), also observed as the overhead metric.
static void s_gateway_headers(ingress_server_t *self, ingress_request_t *r, proto_msg_t *msg,
                              struct MHD_Response *response, uint64_t upstream_us)
{
    if (proto_msg_has(msg, PROTO_FIELD_dropped)) {
        //  The answer's headers share the connection's pool with the
        //  request's head (ingress_daemon_head_room): a long list is cut at
        //  a field's end.
        const char *dropped = proto_msg_dropped(msg);
        char cut[S_DROPPED_HEADER_MAX + 4];
        if (strlen(dropped) > S_DROPPED_HEADER_MAX) {
            int end = S_DROPPED_HEADER_MAX;
            while (end > 0 && dropped[end] != ',')
                end--;
            snprintf(cut, sizeof cut, "%.*s,...", end, dropped);
            dropped = cut;
        }
        MHD_add_response_header(response, "x-tollgate-dropped-fields", dropped);
    }
    char overhead[32];
    ingress_parse_ms_text(
        ingress_parse_overhead_us(r->received_us, proto_loop_now_us(), upstream_us), overhead,
        sizeof overhead);
    MHD_add_response_header(response, "x-tollgate-overhead-ms", overhead);
    proto_metric_observe(self->overhead, strtod(overhead, NULL) / 1000.0);
}

static void s_on_chunk(ingress_server_t *self, ingress_request_t *r, proto_msg_t *msg)
{
    uint64_t sequence = proto_msg_sequence(msg);
    zframe_t *body = proto_msg_take_body(msg);
    if (r->phase == INGRESS_PHASE_DISPATCHED && sequence != 0) {
        //  The answer's head went down a connection that dropped: nothing
        //  reached the client, which hears an error it can retry on.
        zframe_destroy(&body);
        log_warn(r->id, "first CHUNK is %llu: the head of the answer was lost",
                 (unsigned long long)sequence);
        ingress_relay_end(r, "stream_interrupted");
        r->phase = INGRESS_PHASE_ANSWERED;
        ingress_request_answer_error(r, 502, "stream_interrupted",
                                     "The answer was lost between gateway programs; please retry.");
        return;
    }
    if (r->phase == INGRESS_PHASE_DISPATCHED) {
        //  The first CHUNK brings the status line: the response starts now.
        //  The body is no longer needed for a re-send.
        free(r->body);
        r->body = NULL;
        r->next_sequence = sequence + 1;
        proto_observe_first_byte(self->metrics, self->tracer, r->id, r->trace, r->started_us);
        r->first_byte_us = proto_loop_now_us();
        unsigned status =
            proto_msg_has(msg, PROTO_FIELD_status) ? (unsigned)proto_msg_status(msg) : 200;
        if (status < 100 || status > 599)
            status = 502;
        const char *content_type =
            proto_msg_has(msg, PROTO_FIELD_content_type)
                ? proto_msg_content_type(msg)
                : (r->parsed.stream ? "text/event-stream" : "application/json");
        r->out = ingress_buffer_new(S_STREAM_BUFFER_MAX);
        ingress_buffer_append(r->out, &body);
        struct MHD_Response *response = MHD_create_response_from_callback(
            MHD_SIZE_UNKNOWN, S_STREAM_BLOCK, s_reader, r, s_reader_free);
        r->refs++; //  the reader's, until s_reader_free
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
        MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        s_gateway_headers(self, r, msg, response, proto_msg_ttfb_us(msg));
        r->phase = INGRESS_PHASE_STREAMING;
        ingress_request_answer(r, status, response);
        return;
    }
    if (r->phase != INGRESS_PHASE_STREAMING) {
        zframe_destroy(&body);
        return;
    }
    if (sequence != r->next_sequence) {
        zframe_destroy(&body);
        char message[128];
        snprintf(message, sizeof message, "The response stream lost data (chunk %llu, not %llu)",
                 (unsigned long long)sequence, (unsigned long long)r->next_sequence);
        s_cut(r, 502, "stream_interrupted", message);
        return;
    }
    r->next_sequence++;
    if (ingress_buffer_append(r->out, &body) != 0) {
        //  The client reads slower than the upstream writes and we hold
        //  S_STREAM_BUFFER_MAX unread bytes already: stop the upstream
        //  rather than hold an unbounded answer in memory.
        s_cut(r, 500, "client_too_slow",
              "The client read the stream too slowly; the response was cut off");
        return;
    }
    if (r->reader_waiting)
        ingress_request_resume(r);
}

//  A DONE 503 `draining` before any CHUNK: the instance took nothing on
//  (it settles nothing either), so the request may go to another.
bool ingress_relay_draining_answer(proto_msg_t *msg)
{
    return proto_msg_status(msg) == 503 && proto_msg_has(msg, PROTO_FIELD_error_code) &&
           strcmp(proto_msg_error_code(msg), "draining") == 0;
}

//  Sends a request a draining dispatch handed back to another instance
//  (same id, same candidates), each instance at most once. False when
//  there is none left to try.
static bool s_redispatch(ingress_server_t *self, ingress_request_t *r)
{
    ingress_peer_t *peer = &self->dispatch[r->dispatch_index];
    peer->draining_since = proto_loop_now_ms();
    peer->draining_until = peer->draining_since + S_DISPATCH_DRAINING_MS;
    if (s_pick_dispatch(self, r, true) < 0)
        return false;
    log_info(r->id, "dispatch %d is draining; sending the request to another instance",
             r->dispatch_index);
    ingress_relay_dispatch(self, r);
    return true;
}

//  A request whose dispatch's connection dropped while it ran there. That
//  instance may be alive (a blip) and still running it, so the request goes
//  back to it as soon as the connection is back: an instance answers a
//  request it has taken once and never calls the upstream twice. Only after
//  ingress.dispatch_grace_ms is it presumed dead (its journal records the
//  call it lost) and the request goes to another. True when handled.
static bool s_lost_waits(ingress_server_t *self, ingress_request_t *r)
{
    int index = r->lost_index;
    if (proto_loop_events(self->dispatch[index].socket) & ZMQ_POLLOUT) {
        log_info(r->id, "dispatch %d is back; sending the request to it again", index);
        r->lost_index = -1;
        s_send_dispatch(self, r, index);
        return true;
    }
    if (proto_loop_now_ms() < r->lost_until_ms) {
        ingress_queue_push(self->held, &r->timeout, S_LOST_RETRY_MS);
        return true;
    }
    log_warn(r->id, "dispatch %d did not come back within %llu ms; trying another instance", index,
             (unsigned long long)self->dispatch_grace_ms);
    r->lost_index = -1;
    r->dispatch_tried = 1u << index;
    int chosen = s_pick_dispatch(self, r, true);
    if (chosen < 0)
        return false; //  held as any other
    s_send_dispatch(self, r, chosen);
    return true;
}

//  Handed back with no other instance to try (one dispatch, restarting
//  under its supervisor), or taken by none (s_wait_for_dispatch): the
//  request waits, for at most the internal timeout from the first time,
//  and tries every instance again every S_HOLD_RETRY_MS. No dispatch
//  holds it meanwhile.
static void s_hold(ingress_server_t *self, ingress_request_t *r)
{
    if (!r->held_until_ms)
        r->held_until_ms = proto_loop_now_ms() + self->internal_timeout_ms;
    r->dispatch_index = -1;
    ingress_queue_push(self->held, &r->timeout, S_HOLD_RETRY_MS);
}

//  No dispatch instance took the request: none has a live connection yet
//  (this ingress has just started, or a blip cut them all) or every queue
//  is full. It waits as a handed-back one does, for at most the internal
//  timeout from the first miss, then is answered 503 and settled here: no
//  dispatch has it.
static void s_wait_for_dispatch(ingress_server_t *self, ingress_request_t *r, const char *why)
{
    if (!r->held_until_ms || proto_loop_now_ms() < r->held_until_ms) {
        log_debug(r->id, "%s; waiting for one", why);
        r->phase = INGRESS_PHASE_DISPATCHED; //  suspended; a hang-up settles it
        s_hold(self, r);
        return;
    }
    log_warn(r->id, "%s within %llu ms; answering 503", why,
             (unsigned long long)self->internal_timeout_ms);
    r->phase = INGRESS_PHASE_ANSWERED;
    ingress_admit_settle(r, 503);
    ingress_server_forget(r);
    ingress_request_answer_error(r, 503, "dispatch_unavailable",
                                 "The gateway cannot reach its dispatch service");
}

void ingress_relay_held_expired(ingress_queue_item_t *item, void *arg)
{
    ingress_server_t *self = arg;
    ingress_request_t *r = ingress_request_of(item);
    if (r->lost_index >= 0 && s_lost_waits(self, r))
        return;
    //  Any instance again, the draining one included: its successor binds
    //  the same endpoint.
    r->dispatch_tried = 0;
    if (s_pick_dispatch(self, r, true) < 0 && proto_loop_now_ms() < r->held_until_ms) {
        ingress_queue_push(self->held, &r->timeout, S_HOLD_RETRY_MS);
        return;
    }
    ingress_relay_dispatch(self, r); //  answers dispatch_unavailable when none is live
}

//  What a finished request costs, priced here exactly as billing prices it
//  (proto_price): a lease's credit is counted in real costs, not estimates.
static void s_price_done(ingress_server_t *self, ingress_request_t *r, proto_msg_t *msg)
{
    const proto_model_t *model = proto_catalog_model_for_client(self->catalog, r->parsed.model);
    const proto_provider_key_t *key =
        proto_msg_has(msg, PROTO_FIELD_provider_key_id)
            ? proto_catalog_provider_key(self->catalog, proto_msg_provider_key_id(msg))
            : NULL;
    const proto_account_t *account = proto_catalog_account(self->catalog, r->account_id);
    proto_price_usage_t usage = {.tokens_in = proto_msg_tokens_in(msg),
                                 .tokens_out = proto_msg_tokens_out(msg),
                                 .tokens_cache_read = proto_msg_tokens_cache_read(msg),
                                 .tokens_cache_write = proto_msg_tokens_cache_write(msg),
                                 .tokens_cache_write_1h = proto_msg_tokens_cache_write_1h(msg),
                                 .images = proto_msg_images(msg),
                                 .status = proto_msg_status(msg)};
    int64_t multiplier = proto_price_scale(key ? key->multiplier_ppm : PROTO_PRICE_PPM_ONE,
                                           account ? account->multiplier_ppm : PROTO_PRICE_PPM_ONE);
    //  An unlisted name costs the serving provider's default prices.
    proto_model_t scratch;
    model = proto_catalog_serving_price(self->catalog, model, key ? key->provider_id : 0, &scratch);
    int64_t cost = 0;
    if (!model || proto_price_cost(model, &usage, multiplier, &cost) != 0)
        return; //  not priceable here: the estimate stays counted
    r->done_seen = true;
    r->done_cost = cost;
    r->done_tokens =
        usage.tokens_in + usage.tokens_out + usage.tokens_cache_read + usage.tokens_cache_write;
}

static void s_on_done(ingress_server_t *self, ingress_request_t *r, proto_msg_t *msg)
{
    r->attempts = proto_msg_attempts(msg);
    if (r->lease.lease_id && !ingress_relay_draining_answer(msg))
        s_price_done(self, r, msg);
    if (r->phase == INGRESS_PHASE_DISPATCHED && ingress_relay_draining_answer(msg)) {
        if (s_redispatch(self, r))
            return;
        if (!r->held_until_ms || proto_loop_now_ms() < r->held_until_ms) {
            s_hold(self, r);
            return;
        }
        //  Held long enough: the answer stands, and what billing admitted
        //  is ours to settle (a draining dispatch settles nothing).
        log_warn(r->id, "every dispatch instance is draining; answering 503");
        ingress_admit_settle(r, 503);
    }
    free(r->body);
    r->body = NULL;
    zframe_t *body = proto_msg_take_body(msg);
    if (r->phase == INGRESS_PHASE_STREAMING) {
        if (body && ingress_buffer_append(r->out, &body) != 0) {
            s_cut(r, 500, "client_too_slow",
                  "The client read the stream too slowly; the response was cut off");
            return;
        }
        r->upstream_done = true;
        ingress_server_forget(r);
        if (r->reader_waiting)
            ingress_request_resume(r);
        return;
    }
    if (r->phase != INGRESS_PHASE_DISPATCHED) {
        zframe_destroy(&body);
        return;
    }
    //  Not streamed (or nothing came before the end): DONE is the answer.
    r->upstream_done = true;
    r->phase = INGRESS_PHASE_ANSWERED;
    unsigned status = (unsigned)proto_msg_status(msg);
    if (status < 100 || status > 599)
        status = 502;
    struct MHD_Response *response;
    if (body && zframe_size(body)) {
        response = MHD_create_response_from_buffer_with_free_callback_cls(
            zframe_size(body), zframe_data(body), s_free_frame, body);
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                                proto_msg_has(msg, PROTO_FIELD_content_type)
                                    ? proto_msg_content_type(msg)
                                    : "application/json");
    } else {
        zframe_destroy(&body);
        char *text = proto_error_body(
            r->protocol, (int)status,
            proto_msg_has(msg, PROTO_FIELD_error_code) ? proto_msg_error_code(msg) : NULL,
            proto_msg_has(msg, PROTO_FIELD_error_message) ? proto_msg_error_message(msg)
                                                          : "The upstream returned no body");
        response = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    }
    s_gateway_headers(self, r, msg, response, proto_msg_latency_us(msg));
    ingress_server_forget(r);
    ingress_request_answer(r, status, response);
}

void ingress_relay_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    ingress_peer_t *peer = arg;
    ingress_server_t *self = peer->server;
    proto_msg_t *msg = NULL;
    int rc = proto_msg_recv(&msg, socket);
    if (rc == -2)
        log_warn(NULL, "dispatch %d: dropped a malformed message", peer->index);
    if (rc != 0)
        return;
    proto_msg_type_t type = proto_msg_type(msg);
    //  Arrived, whatever becomes of it: dispatch may drop its copy.
    if (type == PROTO_MSG_DONE && proto_msg_link(msg)) {
        peer->done_link = proto_msg_link(msg);
        peer->done_sequence = proto_msg_link_sequence(msg);
    }
    peer->connected = true; //  a message came over it
    ingress_request_t *r = zhashx_lookup(self->requests, proto_msg_request_id(msg));
    if (type != PROTO_MSG_CHUNK && type != PROTO_MSG_DONE)
        log_warn(proto_msg_request_id(msg), "dispatch %d: ignored %s", peer->index,
                 proto_msg_type_name((int)type));
    else if (!r || r->dispatch_index != peer->index) {
        proto_metric_add(self->dropped, 1);
        log_debug(proto_msg_request_id(msg), "dropped a late %s", proto_msg_type_name((int)type));
    } else {
        //  An answer to a request sent after the peer said `draining`:
        //  its successor on the same endpoint took it.
        if (r->dispatched_ms > peer->draining_since &&
            (type == PROTO_MSG_CHUNK || !ingress_relay_draining_answer(msg)))
            peer->draining_until = 0;
        if (type == PROTO_MSG_CHUNK)
            s_on_chunk(self, r, msg);
        else
            s_on_done(self, r, msg);
    }
    proto_msg_destroy(&msg);
}

//  The next dispatch instance for this request, round-robin, or -1: skip
//  those this request went to already; prefer those that have not said
//  `draining`. A DEALER with ZMQ_IMMEDIATE is writable only with a live
//  connection; with `reachable`, instances that are down are skipped by
//  asking (ZMQ_EVENTS: a system call). The request path does not ask:
//  a send such a DEALER refuses goes to the next instance (s_send_dispatch).
static int s_pick_dispatch(ingress_server_t *self, ingress_request_t *r, bool reachable)
{
    uint64_t now = proto_loop_now_ms();
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < self->dispatch_count; i++) {
            int index = (int)((self->next_dispatch + (unsigned)i) % (unsigned)self->dispatch_count);
            ingress_peer_t *peer = &self->dispatch[index];
            if ((r->dispatch_tried & (1u << index)) || (pass == 0 && peer->draining_until > now))
                continue;
            if (!reachable || (proto_loop_events(peer->socket) & ZMQ_POLLOUT))
                return index;
        }
    return -1;
}

//  The one round trip of a request: dispatch picks the candidates from its
//  routing table, calls the upstream and answers with CHUNKs and DONE.
void ingress_relay_dispatch(ingress_server_t *self, ingress_request_t *r)
{
    int chosen = s_pick_dispatch(self, r, false);
    if (chosen < 0) {
        s_wait_for_dispatch(self, r, "no dispatch instance is reachable");
        return;
    }
    self->next_dispatch = (unsigned)chosen + 1;
    s_send_dispatch(self, r, chosen);
}

//  Sends the DISPATCH to instance `chosen` (with a live connection).
static void s_send_dispatch(ingress_server_t *self, ingress_request_t *r, int chosen)
{
    s_send_dispatch_to(self, r, chosen, false);
}

//  Every instance refused the send. libzmq's send path looks at a socket's
//  news (a connection made, a queue drained) at most once a millisecond;
//  ZMQ_EVENTS looks now: the usual pick, asking it, over every instance
//  again. False when none is writable.
static bool s_send_asked(ingress_server_t *self, ingress_request_t *r)
{
    r->dispatch_tried = 0;
    int index = s_pick_dispatch(self, r, true);
    if (index < 0)
        return false;
    self->next_dispatch = (unsigned)index + 1;
    s_send_dispatch_to(self, r, index, true);
    return true;
}

static void s_send_dispatch_to(ingress_server_t *self, ingress_request_t *r, int chosen, bool asked)
{
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_DISPATCH);
    ingress_request_stamp(r, msg, self->request_timeout_ms);
    proto_msg_set_client_protocol(msg, (uint64_t)r->protocol);
    proto_msg_set_model(msg, r->parsed.model);
    proto_msg_set_stream(msg, r->parsed.stream);
    proto_msg_set_include_usage(msg, r->parsed.include_usage);
    proto_msg_set_started_us(msg, r->started_wall_us); //  the usage row's key, for every sender
    //  What the path says beyond protocol, model and stream (docs/conversion.md).
    if (r->route->count_tokens)
        proto_msg_set_meta(msg, "{\"count_tokens\":true}");
    else if (r->json_array)
        proto_msg_set_meta(msg, "{\"json_array\":true}");
    if (r->parsed.session[0])
        proto_msg_set_session(msg, r->parsed.session);
    if (r->parsed.capabilities[0])
        proto_msg_set_capabilities(msg, r->parsed.capabilities);
    proto_msg_set_key_id(msg, r->key_id);
    proto_msg_set_account_id(msg, r->account_id);
    proto_msg_set_reserve_micros(msg, r->reserve_micros);
    if (r->lease.lease_id)
        proto_msg_set_lease_id(msg, r->lease.lease_id);
    if (ingress_admit_grant(r))
        proto_msg_set_grant(msg, ingress_admit_grant(r));
    //  The first send cannot find the request taken anywhere: dispatch
    //  looks up only those sent before.
    proto_msg_set_attempt(msg, r->dispatch_sends + 1);
    //  The DONEs that arrived from this instance: it keeps their answers
    //  (to send again after a blip) until it hears so.
    ingress_peer_t *peer = &self->dispatch[chosen];
    if (peer->done_link) {
        proto_msg_set_link(msg, peer->done_link);
        proto_msg_set_link_sequence(msg, peer->done_sequence);
    }
    //  A copy of the body travels; ours stays until the first CHUNK or DONE
    //  in case a draining instance hands the request back (s_redispatch).
    zframe_t *frame = zframe_new(r->body, r->body_size);
    proto_msg_set_body(msg, &frame);
    r->dispatch_tried |= 1u << chosen;
    if (proto_msg_send(&msg, self->dispatch[chosen].socket) != 0) {
        //  Down (no live connection) or its queue full: the next instance.
        int next = s_pick_dispatch(self, r, false);
        if (next >= 0) {
            log_debug(r->id, "dispatch %d refused the request; trying %d", chosen, next);
            self->next_dispatch = (unsigned)next + 1;
            s_send_dispatch_to(self, r, next, asked);
            return;
        }
        if (!asked && s_send_asked(self, r))
            return;
        s_wait_for_dispatch(self, r, "no dispatch instance took the request");
        return;
    }
    r->dispatch_index = chosen;
    r->dispatch_sends++;
    r->dispatched_ms = proto_loop_now_ms();
    r->phase = INGRESS_PHASE_DISPATCHED;
    ingress_queue_push(self->running, &r->timeout, self->request_timeout_ms);
    log_debug(r->id, "dispatched to %d", chosen);
}

void ingress_relay_running_expired(ingress_queue_item_t *item, void *arg)
{
    ingress_server_t *self = arg;
    ingress_request_t *r = ingress_request_of(item);
    if (r->phase == INGRESS_PHASE_STREAMING) {
        s_cut(r, 504, "request_timeout", "The request took longer than the gateway allows");
        return;
    }
    log_warn(r->id, "request timed out after %llu ms",
             (unsigned long long)self->request_timeout_ms);
    ingress_relay_end(r, "request_timeout");
    r->phase = INGRESS_PHASE_ANSWERED;
    ingress_request_answer_error(r, 504, "request_timeout",
                                 "The request took longer than the gateway allows");
}

//  A dispatch instance's connection dropped: it exited (drained, killed) or
//  the network blinked. What it had answered is read first. A request it
//  holds with no CHUNK sent waits for that instance to come back, then goes
//  to another (s_lost_waits): it never runs twice. A request already
//  streaming cannot be repeated or resumed: its stream ends now with an
//  error event; the instance settles what it relayed (from its journal, if
//  it died).
static void s_dispatch_lost(proto_loop_t *loop, ingress_peer_t *peer)
{
    ingress_server_t *self = peer->server;
    while (proto_loop_events(peer->socket) & ZMQ_POLLIN)
        ingress_relay_ready(loop, peer->socket, peer);
    //  What arrived is said; the next connection's DONEs have new numbers.
    peer->done_link = 0;
    zlistx_t *orphans = zlistx_new();
    for (ingress_request_t *r = zhashx_first(self->requests); r; r = zhashx_next(self->requests))
        if ((r->phase == INGRESS_PHASE_DISPATCHED || r->phase == INGRESS_PHASE_STREAMING) &&
            r->dispatch_index == peer->index)
            zlistx_add_end(orphans, r);
    if (zlistx_size(orphans))
        log_warn(NULL, "dispatch %d: connection lost holding %zu request(s)", peer->index,
                 zlistx_size(orphans));
    uint64_t now = proto_loop_now_ms();
    for (ingress_request_t *r = zlistx_first(orphans); r; r = zlistx_next(orphans)) {
        if (r->phase == INGRESS_PHASE_STREAMING) {
            r->dispatch_index = -1; //  no CANCEL down a dead connection
            s_cut(r, 502, "stream_interrupted",
                  "The gateway lost its connection to the dispatch service mid-stream");
            continue;
        }
        log_info(r->id, "dispatch %d: connection lost; waiting up to %llu ms for it", peer->index,
                 (unsigned long long)self->dispatch_grace_ms);
        r->lost_index = peer->index;
        r->lost_until_ms = now + self->dispatch_grace_ms;
        r->held_until_ms = r->lost_until_ms + self->internal_timeout_ms;
        r->dispatch_index = -1;
        ingress_queue_push(self->held, &r->timeout, S_LOST_RETRY_MS);
    }
    zlistx_destroy(&orphans);
}

//  The connection's news: a handshake done (a live connection: ingress is
//  ready), or the connection dropped.
static void s_dispatch_event(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    ingress_peer_t *peer = arg;
    zmsg_t *event = zmsg_recv(socket);
    char *name = event ? zmsg_popstr(event) : NULL;
    zmsg_destroy(&event);
    if (name && strcmp(name, "HANDSHAKE_SUCCEEDED") == 0) {
        peer->connected = true;
        //  Requests waiting for a dispatch look again now, not at their
        //  next retry.
        ingress_queue_hasten(peer->server->held);
    } else if (name && strcmp(name, "DISCONNECTED") == 0) {
        s_dispatch_lost(loop, peer);
        peer->connected = false; //  after what was left of it was read
    }
    free(name);
}

//  A live connection to some dispatch instance. The monitor may have
//  started after the first handshake, and a message from the instance says
//  so too; a socket that takes a send (ZMQ_IMMEDIATE) has one.
bool ingress_relay_dispatch_connected(ingress_server_t *self)
{
    for (int i = 0; i < self->dispatch_count; i++)
        if (self->dispatch[i].connected ||
            (proto_loop_events(self->dispatch[i].socket) & ZMQ_POLLOUT))
            return true;
    return false;
}

void ingress_relay_watch(ingress_server_t *self, ingress_peer_t *peer)
{
    peer->monitor = zactor_new(zmonitor, peer->socket);
    zstr_sendx(peer->monitor, "LISTEN", "DISCONNECTED", "HANDSHAKE_SUCCEEDED", NULL);
    zstr_sendx(peer->monitor, "START", NULL);
    zsock_wait(peer->monitor);
    proto_loop_add_socket_edge(self->loop, zactor_sock(peer->monitor), s_dispatch_event, peer);
}

//  --------------------------------------------------------------------------
//  Self test: through a server with fake billing and dispatch (ingress_fixture).

//  A whole answer: ADMIT, then DISPATCH (dispatch routes), then DONE.
static void s_test_whole_answer(ingress_fixture_t *test)
{
    char request[4096];
    ingress_fixture_client_t *client = ingress_fixture_request(
        test, ingress_fixture_chat("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e"
                                   "4736-00f067aa0ba902b7-01\r\n",
                                   ingress_fixture_chat_body, request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0);
    PROTO_CHECK(strstr(client->data, "{\"answer\":42}") && strstr(client->data, "x-request-id: "));
    PROTO_CHECK(strstr(client->data, "x-tollgate-overhead-ms: "));
    PROTO_CHECK(test->admits == 1 && test->dispatches == 1 && test->dispatch_ok);
    PROTO_CHECK(strcmp(test->dispatch_body, ingress_fixture_chat_body) == 0);
    PROTO_CHECK(test->dispatch_protocol == PROTO_PROTOCOL_OPENAI && !*test->dispatch_meta);
    PROTO_CHECK(!test->dispatch_link[0]); //  no DONE came before
}

//  Each DISPATCH names the last numbered DONE that came from the instance,
//  so that it drops the answers it kept to send again.
static void s_test_done_received(ingress_fixture_t *test)
{
    char request[4096];
    for (int i = 0; i < 2; i++) {
        ingress_fixture_client_t *client = ingress_fixture_request(
            test, ingress_fixture_chat("", ingress_fixture_chat_body, request, sizeof request));
        PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0);
    }
    //  The first DONE (test 1) was numbered 1, the next 2, then 3.
    PROTO_CHECK(test->dispatch_link[0] == 7 && test->dispatch_link[1] == 2);
    PROTO_CHECK(test->dispatch_attempt == 1); //  each request's first send
}

//  A stream: CHUNKs through the buffer, DONE ends it.
static void s_test_stream(ingress_fixture_t *test)
{
    char request[4096];
    test->mode = INGRESS_FIXTURE_STREAM_DONE;
    ingress_fixture_client_t *client =
        ingress_fixture_request(test, ingress_fixture_chat("",
                                                           "{\"model\":\"m\",\"messages\":[],"
                                                           "\"stream\":true}",
                                                           request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0);
    PROTO_CHECK(strstr(client->data, "text/event-stream"));
    char *first = strstr(client->data, "data: first");
    char *second = strstr(client->data, "data: second");
    char *last = strstr(client->data, "data: [DONE]");
    PROTO_CHECK(first && second && last && first < second && second < last);
}

//  Dispatch refuses after billing admitted, or every instance is draining.
static void s_test_refusals(ingress_fixture_t *test)
{
    char request[4096];
    ingress_fixture_client_t *client;
    //  Dispatch finds no provider after billing admitted: its 503 reaches
    //  the client, and ingress settles nothing (dispatch settles what it took).
    test->dispatch_status = 503;
    ingress_fixture_reset(test);
    client = ingress_fixture_request(
        test, ingress_fixture_chat("", ingress_fixture_chat_body, request, sizeof request));
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 503", 12) == 0);
    PROTO_CHECK(strstr(client->data, "No provider is available for model 'm'."));
    PROTO_CHECK(test->dispatches == 1 && test->settles == 0);

    //  Every dispatch is draining: the request waits for one (at most the
    //  internal timeout), then is answered 503 and settled here, since no
    //  dispatch took it.
    test->dispatch_code = "draining";
    ingress_fixture_reset(test);
    client = ingress_fixture_send(
        test, ingress_fixture_chat("", ingress_fixture_chat_body, request, sizeof request));
    ingress_fixture_run(test, ingress_fixture_settled);
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 503", 12) == 0 && test->dispatches >= 2);
    test->dispatch_code = NULL;

    test->dispatch_status = 200;
}
static bool s_answered(ingress_fixture_t *test)
{
    return test->client_count == 1 && strstr(test->clients[0].data, "{\"answer\":42}");
}

static bool s_dispatched_twice(ingress_fixture_t *test)
{
    return test->dispatches == 2;
}

//  Two hundred idle streams cost no CPU; hanging up cancels each.
static void s_test_idle_streams(ingress_fixture_t *test, bool verbose)
{
    char request[4096];
    test->mode = INGRESS_FIXTURE_STREAM_HOLD;
    ingress_fixture_reset(test);
    for (int i = 0; i < 200; i++)
        ingress_fixture_send(
            test, ingress_fixture_chat("", "{\"model\":\"m\",\"messages\":[],\"stream\":true}",
                                       request, sizeof request));
    ingress_fixture_run(test, ingress_fixture_all_streaming);
    PROTO_CHECK(test->dispatches == 200);
    double cpu = ingress_fixture_cpu_seconds();
    ingress_fixture_idle(test, 1000);
    cpu = ingress_fixture_cpu_seconds() - cpu;
    if (verbose)
        printf("(200 idle streams: %.1f ms CPU in 1 s) ", cpu * 1000);
    PROTO_CHECK(cpu < 0.2);
    for (int i = 0; i < test->client_count; i++) {
        proto_loop_remove_fd(test->loop, test->clients[i].fd);
        shutdown(test->clients[i].fd, SHUT_RDWR);
        test->clients[i].ended = true;
    }
    ingress_fixture_run(test, ingress_fixture_all_cancelled);
    PROTO_CHECK(test->cancels == 200);
    ingress_fixture_reset(test);
}

//  A client waiting for a whole answer that hangs up is heard at once, the
//  request cancelled (not left to the 10 s timeout), and so is one that
//  shut its side right after sending, before its request was suspended.
//  A keep-alive connection is watched for the hang-ups of all its requests.
static void s_test_hangups(ingress_fixture_t *test)
{
    char request[4096];
    test->mode = INGRESS_FIXTURE_DONE_WHOLE;
    ingress_fixture_reset(test);
    snprintf(request, sizeof request,
             "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n"
             "Authorization: Bearer tg-test\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(ingress_fixture_chat_body), ingress_fixture_chat_body);
    ingress_fixture_client_t *client = ingress_fixture_send(test, request);
    ingress_fixture_run(test, s_answered);
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0 && !client->ended);
    test->mode = INGRESS_FIXTURE_HOLD;
    client->size = 0;
    PROTO_CHECK(write(client->fd, request, strlen(request)) == (ssize_t)strlen(request));
    ingress_fixture_run(test, s_dispatched_twice);
    proto_loop_remove_fd(test->loop, client->fd);
    shutdown(client->fd, SHUT_RDWR);
    client->ended = true;
    ingress_fixture_run(test, ingress_fixture_all_cancelled);

    ingress_fixture_reset(test);
    client = ingress_fixture_send(test, request);
    shutdown(client->fd, SHUT_WR);
    ingress_fixture_run(test, ingress_fixture_all_ended);
    PROTO_CHECK(test->cancels == test->dispatches);
    test->mode = INGRESS_FIXTURE_DONE_WHOLE;
    ingress_fixture_reset(test);
}

static bool s_client_ended(ingress_fixture_t *test)
{
    return test->client_count >= 1 && test->clients[0].ended;
}

//  GET /healthz on a connection of its own answers `status` with `body` in it.
static void s_check_health(ingress_fixture_t *test, const char *status, const char *body)
{
    ingress_fixture_client_t *client =
        ingress_fixture_send(test, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    for (int turns = 0; !client->ended && turns < 500; turns++)
        ingress_fixture_idle(test, 10);
    PROTO_CHECK(strncmp(client->data, status, strlen(status)) == 0 && strstr(client->data, body));
}

//  No dispatch connected (an ingress just started, or every dispatch gone
//  for a moment): the request waits for one instead of failing at once,
//  and goes to it when it is there; after the internal timeout with none,
//  503 and settled here.
static void s_test_no_dispatch_yet(ingress_fixture_t *test)
{
    char request[4096], endpoint[128];
    snprintf(endpoint, sizeof endpoint, "%s", zsock_endpoint(test->dispatch));
    proto_loop_remove_socket(test->loop, test->dispatch);
    zsock_destroy(&test->dispatch);
    ingress_fixture_idle(test, 100); //  until ingress's DEALER has heard
    //  None comes within the internal timeout: 503, settled here.
    uint64_t internal_timeout_ms = test->server->internal_timeout_ms;
    test->server->internal_timeout_ms = 150;
    ingress_fixture_reset(test);
    ingress_fixture_client_t *client = ingress_fixture_send(
        test, ingress_fixture_chat("", ingress_fixture_chat_body, request, sizeof request));
    ingress_fixture_run(test, ingress_fixture_settled);
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 503", 12) == 0);
    PROTO_CHECK(strstr(client->data, "dispatch_unavailable") && test->settles == 1);
    //  One comes while the request waits: it goes there.
    test->server->internal_timeout_ms = internal_timeout_ms;
    ingress_fixture_reset(test);
    client = ingress_fixture_send(
        test, ingress_fixture_chat("", ingress_fixture_chat_body, request, sizeof request));
    ingress_fixture_idle(test, 300);
    PROTO_CHECK(client->size == 0 && !client->ended);
    s_check_health(test, "HTTP/1.1 503", "no_dispatch");
    for (int tries = 0; !test->dispatch && tries < 100; tries++) {
        test->dispatch = zsock_new_router(endpoint);
        if (!test->dispatch)
            ingress_fixture_idle(test, 10);
    }
    PROTO_CHECK(test->dispatch);
    proto_loop_add_socket(test->loop, test->dispatch, ingress_fixture_dispatch_ready, test);
    ingress_fixture_run(test, s_client_ended);
    PROTO_CHECK(strncmp(client->data, "HTTP/1.1 200", 12) == 0 && test->dispatches == 1);
    PROTO_CHECK(test->settles == 0); //  dispatch settles what it ran
    s_check_health(test, "HTTP/1.1 200", "\"ok\"");
}

void ingress_relay_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_relay: ");
    ingress_fixture_t *test = ingress_fixture_new(50);
    s_test_whole_answer(test);
    s_test_done_received(test);
    s_test_stream(test);
    s_test_refusals(test);
    ingress_fixture_destroy(&test);
    //  Two hundred clients at once keep the loop busy for longer than 50 ms
    //  on a loaded machine, and the fake billing's answers would come after
    //  the internal timeout: a timeout no test here waits for.
    test = ingress_fixture_new(10000);
    s_test_idle_streams(test, verbose);
    s_test_hangups(test);
    ingress_fixture_destroy(&test);
    test = ingress_fixture_new_with(10000, true);
    s_test_no_dispatch_yet(test);
    ingress_fixture_destroy(&test);
    if (verbose)
        printf("OK\n");
}
