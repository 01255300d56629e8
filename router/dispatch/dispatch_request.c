#include "dispatch_request.h"
#include "proto_text.h"
#include "dispatch_adapter.h"
#include "dispatch_audio.h"
#include "dispatch_call.h"
#include "dispatch_policy.h"
#include "proto_capture.h"
#include "proto_check.h"
#include "proto_error.h"
#include "proto_log.h"
#include "proto_observe.h"
#include "proto_sse.h"
#include "proto_upstream.h"
#include "proto_usage.h"

#include <assert.h>
#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define S_MAX_ANSWER (64u * 1024u * 1024u) //  a whole non-streamed answer
#define S_MAX_ERROR_BODY (1024u * 1024u)   //  an upstream error body we relay
#define S_STATUS_CANCELLED 499             //  nginx' "client closed request"
//  A streamed request's provisional record follows what was relayed in
//  steps of this many content bytes.
#define S_PROVISIONAL_STEP 4096
//  The most a stream's client-bytes buffer keeps between two CHUNKs.
#define S_OUT_IDLE_MAX 256

//  What a request keeps of its DISPATCH: the fields its replies, OUTCOMEs,
//  SETTLEs, spans and attempts read after it arrived, not the message (a
//  proto_msg_t has a slot for every field there is, plus its routing-id
//  frame and a malloc per string: ~1.7 KiB per request in flight, 17 MiB at
//  10,000 streams). The strings share one allocation sized to them.
typedef struct {
    uint64_t key_id;          //  the client's key
    uint64_t account_id;      //  its account (also picks the billing instance)
    uint64_t deadline_ms;     //  the envelope's deadline, copied onto replies
    int64_t reserve_micros;   //  billing's reservation, when has_reserve
    uint64_t lease_id;        //  the lease it ran under, when has_lease
    bool has_reserve;         //  DISPATCH carried reserve_micros
    bool has_lease;           //  DISPATCH carried lease_id
    bool stream;              //  the client asked for a stream
    uint8_t routing_size;     //  bytes of routing_id
    uint8_t *routing_id;      //  ingress's connection (ROUTER id), NULL when none
    char *strings;            //  the one allocation the strings below point into
    const char *trace;        //  W3C traceparent, "" when none
    const char *model;        //  the client's model
    const char *session;      //  NULL when the DISPATCH had none
    const char *grant;        //  billing's voucher, NULL when none
    const char *capabilities; //  required tags, NULL when none
} s_kept_t;

//  One request from DISPATCH to DONE or CANCEL.
struct _dispatch_request_t {
    const dispatch_request_env_t *env; //  what it borrows from the server
    dispatch_request_t *unsent_prev;   //  in env->unsent while out waits for its CHUNK
    dispatch_request_t *unsent_next;
    bool unsent;
    char rid[PROTO_MSG_RID_MAX + 1]; //  request id (also the table key)
    s_kept_t kept;                   //  what replies and records read of the DISPATCH
    zframe_t *body;                  //  the client's body, until a CHUNK went out
    size_t body_size;                //  its size (usage estimates read it after)
    int client_protocol;             //  proto_protocol_t of the client
    bool count_tokens;               //  a token count (DISPATCH meta), not a generation
    bool json_array;                 //  a Gemini client's stream as one JSON array (meta)
    proto_candidate_t *candidates;   //  the decision's order (as many as it gave)
    size_t candidate_count;          //  entries in candidates
    size_t next;                     //  next candidate to try
    int attempts;                    //  attempts started
    bool unsupported;                //  a candidate was skipped for its protocol pair
    char *audio;                     //  the body's first audio field, NULL when none
    bool audio_skipped;              //  a candidate was skipped: it takes no audio
    uint64_t received_us;            //  monotonic time DISPATCH arrived
    uint64_t started_wall_us;        //  wall clock at the same moment
    uint64_t record_started_us;      //  the usage row's started_at: ingress's stamp when sent
    uint64_t deadline_us;            //  monotonic deadline, 0 = none
    dispatch_failures_t failures;    //  attempts that failed over
    //  The current attempt
    const proto_candidate_t *candidate; //  its candidate, NULL before the first
    dispatch_call_t *call;              //  its upstream call, NULL when none runs
    int proxy;                          //  index of its provider's proxy, -1 = none
    int proxy_retries;                  //  candidates retried through another proxy
    dispatch_convert_t conv;            //  its conversion state
    proto_sse_t *sse;                   //  its stream reader, when relaying a stream
    zchunk_t *out;                      //  client bytes made but not yet sent
    zchunk_t *answer;                   //  buffered answer or error body
    int status;                         //  its HTTP status
    char content_type[128];             //  its content type
    uint64_t first_byte_us;             //  monotonic first upstream byte, 0 before
    dispatch_fail_t event_fail;         //  set when the adapter refused an event
    //  Towards ingress
    uint64_t sequence; //  next CHUNK sequence number
    bool relayed;      //  a CHUNK went out: no more failover
    //  Provisional records in the journal, for a SIGKILL mid-request
    bool lost_kept;           //  the operator's-loss record is kept (no CHUNK out yet)
    size_t provisional_bytes; //  content relayed when `rid`'s record was kept
    bool head_lost;           //  CHUNKs went to a connection now gone
    proto_capture_t *capture; //  request-log bodies at level full, else NULL
};
//  A request is allocated (and freed) once per DISPATCH: at 1,000 bytes or
//  less it stays in glibc's small bins, where an allocation never sweeps the
//  fastbins first (malloc_consolidate, up to 3 % of dispatch's CPU when it
//  was 1,096 bytes; perf, issue 11).
_Static_assert(sizeof(struct _dispatch_request_t) <= 1000, "dispatch_request_t over 1,000 bytes");

static void s_try_next(dispatch_request_t *request);

//  Replaces a chunk's bytes. (zchunk_set alone would cut them to the
//  chunk's current capacity.)
static void s_chunk_replace(zchunk_t *chunk, const void *data, size_t size)
{
    zchunk_set(chunk, NULL, 0);
    if (size)
        zchunk_extend(chunk, data, size);
}

//  --------------------------------------------------------------------------
//  What is kept of the DISPATCH

//  Copies `text` (NULL: none) to *cursor and advances it; returns the copy.
static const char *s_kept_string(char **cursor, const char *text)
{
    if (!text)
        return NULL;
    size_t size = strlen(text) + 1;
    memcpy(*cursor, text, size);
    const char *copy = *cursor;
    *cursor += size;
    return copy;
}

//  Replies go to `routing_id` (NULL: none) from now on.
static void s_kept_routing(s_kept_t *kept, zframe_t *routing_id)
{
    free(kept->routing_id);
    kept->routing_id = NULL;
    kept->routing_size = 0;
    //  A ROUTER's ids are 1 to 255 bytes (ZeroMQ's own are 5).
    if (routing_id && zframe_size(routing_id) && zframe_size(routing_id) <= UINT8_MAX) {
        kept->routing_size = (uint8_t)zframe_size(routing_id);
        kept->routing_id = malloc(kept->routing_size);
        assert(kept->routing_id);
        memcpy(kept->routing_id, zframe_data(routing_id), kept->routing_size);
    }
}

//  Fills `kept` from a DISPATCH.
static void s_keep(s_kept_t *kept, const proto_msg_t *msg)
{
    kept->key_id = proto_msg_key_id(msg);
    kept->account_id = proto_msg_account_id(msg);
    kept->deadline_ms = proto_msg_deadline(msg);
    kept->has_reserve = proto_msg_has(msg, PROTO_FIELD_reserve_micros);
    kept->reserve_micros = kept->has_reserve ? proto_msg_reserve_micros(msg) : 0;
    kept->has_lease = proto_msg_has(msg, PROTO_FIELD_lease_id);
    kept->lease_id = kept->has_lease ? proto_msg_lease_id(msg) : 0;
    kept->stream = proto_msg_stream(msg);
    s_kept_routing(kept, proto_msg_routing_id(msg));
    const char *session = proto_msg_has(msg, PROTO_FIELD_session) ? proto_msg_session(msg) : NULL;
    const char *grant = proto_msg_has(msg, PROTO_FIELD_grant) ? proto_msg_grant(msg) : NULL;
    const char *capabilities =
        proto_msg_has(msg, PROTO_FIELD_capabilities) ? proto_msg_capabilities(msg) : NULL;
    size_t size = strlen(proto_msg_trace(msg)) + 1 + strlen(proto_msg_model(msg)) + 1;
    size += session ? strlen(session) + 1 : 0;
    size += grant ? strlen(grant) + 1 : 0;
    size += capabilities ? strlen(capabilities) + 1 : 0;
    kept->strings = malloc(size);
    assert(kept->strings);
    char *cursor = kept->strings;
    kept->trace = s_kept_string(&cursor, proto_msg_trace(msg));
    kept->model = s_kept_string(&cursor, proto_msg_model(msg));
    kept->session = s_kept_string(&cursor, session);
    kept->grant = s_kept_string(&cursor, grant);
    kept->capabilities = s_kept_string(&cursor, capabilities);
}

static void s_kept_clear(s_kept_t *kept)
{
    free(kept->routing_id);
    free(kept->strings);
    *kept = (s_kept_t){0};
}

//  A new message of `type` for ingress, as proto_msg_reply makes it from
//  the DISPATCH: its request id, trace, deadline and routing id.
static proto_msg_t *s_reply(dispatch_request_t *self, proto_msg_type_t type)
{
    proto_msg_t *reply = proto_msg_new(type);
    proto_msg_set_request_id(reply, self->rid);
    proto_msg_set_trace(reply, self->kept.trace);
    proto_msg_set_deadline(reply, self->kept.deadline_ms);
    if (self->kept.routing_id)
        proto_msg_set_routing_id_bytes(reply, self->kept.routing_id, self->kept.routing_size);
    return reply;
}

//  --------------------------------------------------------------------------
//  Request life

dispatch_request_t *dispatch_request_new(const dispatch_request_env_t *env,
                                         proto_msg_t **dispatch_p)
{
    dispatch_request_t *self = calloc(1, sizeof *self);
    assert(self);
    proto_msg_t *dispatch = *dispatch_p;
    *dispatch_p = NULL;
    self->env = env;
    proto_text_copy(self->rid, sizeof self->rid, proto_msg_request_id(dispatch));
    s_keep(&self->kept, dispatch);
    self->body = proto_msg_take_body(dispatch);
    self->body_size = self->body ? zframe_size(self->body) : 0;
    self->client_protocol = (int)proto_msg_client_protocol(dispatch);
    self->capture = proto_capture_bodies_new(self->body ? zframe_data(self->body) : NULL,
                                             self->body ? zframe_size(self->body) : 0);
    //  What the client's path said beyond the protocol: a token count, or a
    //  Gemini stream read as a JSON array (no alt=sse). Ingress sets them.
    if (proto_msg_has(dispatch, PROTO_FIELD_meta)) {
        json_t *meta = json_loads(proto_msg_meta(dispatch), 0, NULL);
        self->count_tokens = json_is_true(json_object_get(meta, "count_tokens"));
        self->json_array = json_is_true(json_object_get(meta, "json_array"));
        json_decref(meta);
    }
    //  Audio input goes only where the client's own protocol is spoken
    //  (dispatch_audio); a token count is estimated anywhere.
    //  The field is kept apart: a request without audio (nearly all) keeps
    //  no room for it.
    char audio[DISPATCH_AUDIO_FIELD_MAX];
    if (!self->count_tokens && self->body &&
        dispatch_audio_field(self->client_protocol, (const char *)zframe_data(self->body),
                             zframe_size(self->body), audio, sizeof audio)) {
        self->audio = strdup(audio);
        assert(self->audio);
    }
    self->received_us = proto_loop_now_us();
    self->started_wall_us = proto_loop_wall_us();
    //  The ledger keys usage by (request id, started_at). Every sender of a
    //  request's record (this instance, another one it was handed to, the
    //  ingress when the client left) must name the same start, or one
    //  request could leave two rows: so it is ingress's, when it sent one.
    self->record_started_us = proto_msg_has(dispatch, PROTO_FIELD_started_us)
                                  ? proto_msg_started_us(dispatch)
                                  : self->started_wall_us;
    uint64_t deadline_ms = proto_msg_deadline(dispatch);
    if (deadline_ms) {
        uint64_t now_wall_us = self->started_wall_us;
        uint64_t deadline_wall_us = deadline_ms * 1000;
        self->deadline_us = self->received_us +
                            (deadline_wall_us > now_wall_us ? deadline_wall_us - now_wall_us : 0);
    }
    self->out = zchunk_new(NULL, 0);
    self->answer = zchunk_new(NULL, 0);
    proto_msg_destroy(&dispatch);
    return self;
}

//  Forgets the current attempt (aborting its call if it still runs).
static void s_attempt_clear(dispatch_request_t *self)
{
    dispatch_call_destroy(&self->call);
    proto_sse_destroy(&self->sse);
    dispatch_convert_clear(&self->conv);
    dispatch_convert_init(&self->conv, NULL);
    zchunk_set(self->out, NULL, 0);
    zchunk_set(self->answer, NULL, 0);
    self->status = 0;
    self->content_type[0] = '\0';
    self->first_byte_us = 0;
    self->event_fail = DISPATCH_FAIL_NONE;
}

//  Takes the request out of env->unsent (its bytes go now, or never).
static void s_sent(dispatch_request_t *self)
{
    if (!self->unsent)
        return;
    if (self->unsent_prev)
        self->unsent_prev->unsent_next = self->unsent_next;
    else
        *self->env->unsent = self->unsent_next;
    if (self->unsent_next)
        self->unsent_next->unsent_prev = self->unsent_prev;
    self->unsent_prev = self->unsent_next = NULL;
    self->unsent = false;
}

void dispatch_request_destroy(dispatch_request_t **self_p)
{
    dispatch_request_t *self = *self_p;
    if (!self)
        return;
    s_sent(self);
    s_attempt_clear(self);
    proto_capture_destroy(&self->capture);
    zchunk_destroy(&self->out);
    zchunk_destroy(&self->answer);
    zframe_destroy(&self->body);
    s_kept_clear(&self->kept);
    free(self->candidates);
    free(self->audio);
    free(self);
    *self_p = NULL;
}

static size_t s_body_size(dispatch_request_t *self)
{
    return self->body_size;
}

//  Publishes the OUTCOME of the current attempt.
static void s_outcome(dispatch_request_t *self, int status, const char *error_code)
{
    const dispatch_request_env_t *env = self->env;
    //  Our own outcome changes our breakers at once, before the router's
    //  table says so.
    dispatch_route_learn(env->route, self->rid, self->candidate, self->kept.key_id, status,
                         error_code, self->call ? dispatch_call_retry_after_ms(self->call) : 0);
    proto_msg_t *outcome = proto_msg_new(PROTO_MSG_OUTCOME);
    proto_msg_set_request_id(outcome, self->rid);
    proto_msg_set_trace(outcome, self->kept.trace);
    proto_msg_set_provider_id(outcome, self->candidate->provider_id);
    proto_msg_set_provider_key_id(outcome, self->candidate->provider_key_id);
    proto_msg_set_upstream_model(outcome, self->candidate->upstream_model);
    proto_msg_set_status(outcome, (uint64_t)status);
    proto_msg_set_attempt(outcome, (uint64_t)self->attempts);
    //  Every router learns sticky bindings and per-key preferences from
    //  these, not only the one that made the decision.
    proto_msg_set_key_id(outcome, self->kept.key_id);
    if (self->kept.session)
        proto_msg_set_session(outcome, self->kept.session);
    if (self->call) {
        proto_msg_set_latency_us(outcome, dispatch_call_latency_us(self->call));
        proto_msg_set_ttfb_us(outcome, dispatch_call_ttfb_us(self->call));
        if (dispatch_call_retry_after_ms(self->call))
            proto_msg_set_retry_after_ms(outcome, dispatch_call_retry_after_ms(self->call));
    }
    if (error_code)
        proto_msg_set_error_code(outcome, error_code);
    proto_batch_add(env->outcomes, &outcome);
    //  A failure goes at once: breakers in the routers react to it, and a
    //  success can wait for its batch.
    if (status < 200 || status >= 300)
        proto_batch_flush(env->outcomes);
    char labels[32];
    size_t used = 0;
    proto_text_add(labels, sizeof labels, &used, "status=\"");
    proto_text_add_i64(labels, sizeof labels, &used, status);
    proto_text_add(labels, sizeof labels, &used, "\"");
    proto_metric_add(proto_metrics_counter(env->metrics, "tollgate_dispatch_attempts_total",
                                           "Upstream attempts by status", labels),
                     1);
    const proto_provider_t *provider =
        proto_catalog_provider(env->catalog, self->candidate->provider_id);
    proto_observe_attempt_t attempt = {
        .request_id = self->rid,
        .trace = self->kept.trace,
        .attempt = (uint64_t)self->attempts,
        .provider_id = self->candidate->provider_id,
        .provider_key_id = self->candidate->provider_key_id,
        .provider_name = provider ? provider->name : NULL,
        .model = self->kept.model,
        .upstream_model = self->candidate->upstream_model,
        .status = status,
        .error_code = error_code,
        .latency_us = self->call ? dispatch_call_latency_us(self->call) : 0,
        .ttfb_us = self->call ? dispatch_call_ttfb_us(self->call) : 0,
        .streamed = self->kept.stream};
    proto_observe_attempt(env->metrics, env->tracer, &attempt);
}

//  The usage the client is charged for at the end of the current attempt:
//  what the upstream reported, the rest estimated.
static proto_usage_t s_usage(dispatch_request_t *self, bool output_produced)
{
    proto_usage_t usage = self->conv.usage;
    if (self->count_tokens)
        return (proto_usage_t){0}; //  counting tokens is free at every provider
    proto_usage_estimate(&usage, s_body_size(self), output_produced ? self->conv.content_bytes : 0);
    return usage;
}

//  What a finished request tells ingress and billing.
typedef struct {
    int status;               //  final status
    const char *content_type; //  of the body, or NULL
    const char *error_code;   //  our error code, or NULL
    proto_usage_t usage;      //  what the client is charged for
    uint64_t retry_after_ms;  //  for a 429
    bool reply;               //  send DONE (false after CANCEL)
} s_ending_t;

//  The usage record of the request as it stands, under `request_id`; with
//  the request's reservation and lease when it is the client's record.
static proto_msg_t *s_settle_new(dispatch_request_t *self, const char *request_id, int status,
                                 const proto_usage_t *usage, bool client)
{
    uint64_t now = proto_loop_now_us();
    uint64_t latency_us = now - self->received_us;
    uint64_t ttfb_us = self->first_byte_us ? self->first_byte_us - self->received_us : 0;
    const proto_candidate_t *candidate = self->candidate;
    proto_msg_t *settle = proto_msg_new(PROTO_MSG_SETTLE);
    proto_msg_set_request_id(settle, request_id);
    proto_msg_set_trace(settle, self->kept.trace);
    proto_msg_set_account_id(settle, self->kept.account_id);
    proto_msg_set_key_id(settle, self->kept.key_id);
    proto_msg_set_model(settle, self->kept.model);
    if (candidate) {
        proto_msg_set_provider_id(settle, candidate->provider_id);
        proto_msg_set_provider_key_id(settle, candidate->provider_key_id);
        proto_msg_set_upstream_model(settle, candidate->upstream_model);
    }
    proto_msg_set_status(settle, (uint64_t)status);
    proto_msg_set_tokens_in(settle, usage->tokens_in);
    proto_msg_set_tokens_out(settle, usage->tokens_out);
    proto_msg_set_tokens_cache_read(settle, usage->tokens_cache_read);
    proto_msg_set_tokens_cache_write(settle, usage->tokens_cache_write);
    proto_msg_set_tokens_cache_write_1h(settle, usage->tokens_cache_write_1h);
    if (usage->images)
        proto_msg_set_images(settle, usage->images);
    proto_msg_set_latency_us(settle, latency_us);
    proto_msg_set_ttfb_us(settle, ttfb_us);
    if (self->kept.stream)
        proto_msg_set_stream(settle, true);
    proto_msg_set_started_us(settle, self->record_started_us);
    proto_msg_set_attempts(settle, (uint64_t)self->attempts);
    proto_msg_set_estimated(settle, usage->estimated);
    if (client && self->kept.has_reserve)
        proto_msg_set_reserve_micros(settle, self->kept.reserve_micros);
    if (client && self->kept.has_lease)
        proto_msg_set_lease_id(settle, self->kept.lease_id);
    //  Billing's voucher (docs/billing.md, "Who may settle"): an
    //  operator's-loss record carries its request's too.
    if (self->kept.grant)
        proto_msg_set_grant(settle, self->kept.grant);
    return settle;
}

//  The id of the request's operator's-loss record (into id, PROTO_MSG_RID_MAX
//  + 1 bytes): made again when needed, not kept, so the request stays small.
static void s_lost_id(const dispatch_request_t *self, char *id)
{
    snprintf(id, PROTO_MSG_RID_MAX + 1, "%.*s~lost-%08x", PROTO_MSG_RID_MAX - 14, self->rid,
             self->env->nonce);
}

//  Provisional records (docs/billing.md, "Every upstream call, once"): what
//  the journal says happened if this process dies now. While an upstream
//  call runs and nothing reached the client, an operator's-loss record under
//  its own id (ingress will send the request again, and the attempt that
//  answers is the client's charge); once CHUNKs went out, the client's
//  record for what was relayed so far (ingress cannot send it again). The
//  final SETTLE replaces them; only a replay after a crash sends them.
static void s_provisional_lost(dispatch_request_t *self)
{
    const dispatch_request_env_t *env = self->env;
    if (self->lost_kept || self->relayed || self->count_tokens)
        return;
    char lost_id[PROTO_MSG_RID_MAX + 1];
    s_lost_id(self, lost_id);
    proto_usage_t usage = s_usage(self, false);
    usage.estimated = true;
    //  Not the client's: no reservation or lease of its own.
    proto_msg_t *settle = s_settle_new(self, lost_id, 502, &usage, false);
    proto_msg_set_loss(settle, true);
    proto_msg_set_attempts(settle, 1);
    if (dispatch_settle_keep(env->settle, &settle, self->kept.account_id) == 0)
        self->lost_kept = true;
}

static void s_provisional_forget_lost(dispatch_request_t *self)
{
    if (self->lost_kept) {
        char lost_id[PROTO_MSG_RID_MAX + 1];
        s_lost_id(self, lost_id);
        dispatch_settle_forget(self->env->settle, lost_id);
    }
    self->lost_kept = false;
}

static void s_provisional_relayed(dispatch_request_t *self)
{
    if (self->count_tokens)
        return;
    proto_usage_t usage = s_usage(self, true);
    usage.estimated = true;
    //  Sent only if this process dies, and then the client's stream was cut:
    //  502, as a stream broken off by its upstream is recorded.
    proto_msg_t *settle = s_settle_new(self, self->rid, 502, &usage, true);
    if (dispatch_settle_keep(self->env->settle, &settle, self->kept.account_id) == 0)
        self->provisional_bytes = self->conv.content_bytes;
    s_provisional_forget_lost(self);
}

//  Sends DONE (body = what is left in self->out) and SETTLE, and forgets
//  the request. The request is destroyed: callers return at once.
static void s_finish(dispatch_request_t *self, const s_ending_t *ending)
{
    const dispatch_request_env_t *env = self->env;
    uint64_t now = proto_loop_now_us();
    uint64_t latency_us = now - self->received_us;
    uint64_t ttfb_us = self->first_byte_us ? self->first_byte_us - self->received_us : 0;
    const proto_candidate_t *candidate = self->candidate;
    const proto_usage_t *usage = &ending->usage;

    //  Settlement first: every request that reached us, exactly once. It
    //  replaces the provisional record under the same id.
    proto_msg_t *settle = s_settle_new(self, self->rid, ending->status, usage, true);
    if (self->head_lost)
        //  Its CHUNKs went to a connection that is gone, and the client got
        //  nothing: recorded, not charged.
        proto_msg_set_loss(settle, true);
    s_provisional_forget_lost(self);
    //  Keyed by account: the billing instance that admitted it (ingress
    //  picks by the same rule) is the one that settles it.
    if (dispatch_settle_send(env->settle, &settle, self->kept.account_id) != 0)
        log_error(self->rid, "settlement outbox full or journal unwritable: usage record lost");

    if (ending->reply) {
        proto_msg_t *done = s_reply(self, PROTO_MSG_DONE);
        proto_msg_set_status(done, (uint64_t)ending->status);
        proto_msg_set_sequence(done, self->sequence);
        if (ending->content_type)
            proto_msg_set_content_type(done, ending->content_type);
        if (ending->error_code)
            proto_msg_set_error_code(done, ending->error_code);
        if (!self->relayed && self->conv.dropped)
            proto_msg_set_dropped(done, self->conv.dropped);
        proto_msg_set_tokens_in(done, usage->tokens_in);
        proto_msg_set_tokens_out(done, usage->tokens_out);
        proto_msg_set_tokens_cache_read(done, usage->tokens_cache_read);
        proto_msg_set_tokens_cache_write(done, usage->tokens_cache_write);
        proto_msg_set_tokens_cache_write_1h(done, usage->tokens_cache_write_1h);
        if (usage->images)
            proto_msg_set_images(done, usage->images);
        proto_msg_set_estimated(done, usage->estimated);
        proto_msg_set_latency_us(done, latency_us);
        proto_msg_set_ttfb_us(done, ttfb_us);
        proto_msg_set_attempts(done, (uint64_t)self->attempts);
        if (ending->retry_after_ms)
            proto_msg_set_retry_after_ms(done, ending->retry_after_ms);
        if (candidate) {
            proto_msg_set_provider_id(done, candidate->provider_id);
            proto_msg_set_provider_key_id(done, candidate->provider_key_id);
            proto_msg_set_upstream_model(done, candidate->upstream_model);
        }
        if (zchunk_size(self->out))
            proto_msg_set_body_bytes(done, zchunk_data(self->out), zchunk_size(self->out));
        //  For a DISPATCH sent again: the DONE is the whole answer only
        //  when no CHUNK went before it.
        dispatch_taken_add(env->taken, self->rid, self->relayed ? NULL : done, proto_loop_now_ms());
        //  The client learns that the request is complete only from DONE,
        //  so DONE waits for the SETTLE above to be in the journal's file
        //  (written, in the kernel's page cache), which is all a SIGKILL of
        //  this process needs: one write for all of a turn's records, at
        //  the end of the turn, never a wait on anything else.
        //  With dispatch.journal_sync DONE also waits until it is on disk,
        //  so a crash of the whole host loses nothing either (group commit:
        //  one fdatasync per loop turn) — at the price of a disk flush on
        //  the request path (dispatch_settle).
        dispatch_settle_done(env->settle, &done, self->rid);
    }

    //  One line per request is a write per request: at info only for the
    //  requests an operator looks for (failed or failed over), as with spans.
    proto_log_level_t level =
        ending->status >= 400 || self->attempts > 1 ? PROTO_LOG_INFO : PROTO_LOG_DEBUG;
    proto_log(level, self->rid,
              "done status=%d attempts=%d provider=%llu model=%s in=%llu out=%llu%s "
              "latency_ms=%llu ttfb_ms=%llu%s%s",
              ending->status, self->attempts,
              (unsigned long long)(candidate ? candidate->provider_id : 0),
              candidate ? candidate->upstream_model : "-", (unsigned long long)usage->tokens_in,
              (unsigned long long)usage->tokens_out, usage->estimated ? " (estimated)" : "",
              (unsigned long long)(latency_us / 1000), (unsigned long long)(ttfb_us / 1000),
              ending->error_code ? " error=" : "", ending->error_code ? ending->error_code : "");
    if (ending->reply)
        proto_capture_response_body(self->capture, zchunk_data(self->out), zchunk_size(self->out));
    else
        dispatch_taken_add(env->taken, self->rid, NULL, proto_loop_now_ms());
    proto_capture_send(&self->capture, env->tracer, self->rid, self->kept.trace,
                       self->client_protocol, env->catalog);
    //  The attempts' spans waited for this: kept when the request failed,
    //  failed over or was slow (a stream by its first byte).
    uint64_t waited_us = proto_trace_waited_us(self->kept.stream, latency_us, ttfb_us);
    proto_trace_finish(env->tracer, self->rid,
                       ending->status >= 400 || self->attempts > 1 ||
                           proto_trace_is_slow(env->tracer, waited_us));
    dispatch_route_finish(env->route, self->rid);
    env->on_end(self->rid, env->arg); //  destroys the request
}

//  Ends a request with our own error body, before anything went out.
static void s_finish_error(dispatch_request_t *self, int status, const char *code,
                           const char *message, uint64_t retry_after_ms)
{
    log_info(self->rid, "answering %d %s: %s", status, code, message);
    char *body = proto_error_body(self->client_protocol, status, code, message);
    s_chunk_replace(self->out, body, strlen(body));
    free(body);
    s_ending_t ending = {.status = status,
                         .content_type = "application/json",
                         .error_code = code,
                         .retry_after_ms = retry_after_ms,
                         .reply = true};
    s_finish(self, &ending);
}

//  --------------------------------------------------------------------------
//  Relaying an attempt's answer

//  Sends the client bytes made so far as one CHUNK; the first carries the
//  status, content type and time to first byte.
static void s_flush(dispatch_request_t *self)
{
    s_sent(self);
    if (zchunk_size(self->out) == 0)
        return;
    proto_msg_t *chunk = s_reply(self, PROTO_MSG_CHUNK);
    proto_msg_set_sequence(chunk, self->sequence++);
    if (!self->relayed) {
        proto_msg_set_status(chunk, (uint64_t)self->status);
        proto_msg_set_content_type(chunk, self->conv.content_type);
        proto_msg_set_ttfb_us(chunk, self->first_byte_us - self->received_us);
        if (self->conv.dropped)
            proto_msg_set_dropped(chunk, self->conv.dropped);
    }
    proto_msg_set_body_bytes(chunk, zchunk_data(self->out), zchunk_size(self->out));
    proto_capture_response_body(self->capture, zchunk_data(self->out), zchunk_size(self->out));
    zchunk_set(self->out, NULL, 0);
    //  A stream waits between its events: it need not keep what the last
    //  one grew its buffer to (~0.5 KiB each, 5 MiB at 10,000 streams).
    if (zchunk_max_size(self->out) > S_OUT_IDLE_MAX) {
        zchunk_destroy(&self->out);
        self->out = zchunk_new(NULL, 0);
    }
    if (proto_msg_send(&chunk, self->env->router) != 0)
        log_warn(self->rid, "CHUNK could not be sent to ingress");
    bool first = !self->relayed;
    self->relayed = true;
    //  No other candidate will be tried now: the client's body is not read
    //  again (usage estimates read its size). A stream holds it no longer.
    zframe_destroy(&self->body);
    if (first || self->conv.content_bytes >= self->provisional_bytes + S_PROVISIONAL_STEP)
        s_provisional_relayed(self);
}

static int s_on_event(const proto_sse_event_t *event, void *arg)
{
    dispatch_request_t *self = arg;
    if (self->conv.adapter->event(&self->conv, event, self->out) != 0) {
        self->event_fail = DISPATCH_FAIL_PROTOCOL;
        return -1;
    }
    return 0;
}

//  The upstream's first body byte: from now on we know how to read it.
static void s_on_response(void *arg, int status, const char *content_type)
{
    dispatch_request_t *self = arg;
    self->status = status;
    self->first_byte_us = proto_loop_now_us();
    proto_text_copy(self->content_type, sizeof self->content_type, content_type);
    bool ok = status >= 200 && status < 300;
    //  A stream is relayed as it comes only when it is one; an upstream
    //  that answers a stream request with plain JSON is read as a whole.
    if (ok && self->conv.stream && strncasecmp(self->content_type, "text/event-stream", 17) == 0)
        self->sse = proto_sse_new(PROTO_SSE_MAX_EVENT);
}

static void s_send_later(dispatch_request_t *self)
{
    if (self->unsent || zchunk_size(self->out) == 0)
        return;
    self->unsent = true;
    self->unsent_prev = NULL;
    self->unsent_next = *self->env->unsent;
    if (self->unsent_next)
        self->unsent_next->unsent_prev = self;
    *self->env->unsent = self;
}

void dispatch_request_send_unsent(dispatch_request_t **unsent)
{
    while (*unsent)
        s_flush(*unsent); //  takes it out of the list
}

static dispatch_fail_t s_on_data(void *arg, const char *data, size_t size)
{
    dispatch_request_t *self = arg;
    if (self->sse) {
        //  Relay on event boundaries, each write's complete events at once:
        //  never more than one event waits here.
        if (proto_sse_feed(self->sse, data, size, s_on_event, self) != 0) {
            if (!self->event_fail) {
                snprintf(self->conv.error, sizeof self->conv.error,
                         "upstream stream event larger than %u bytes", PROTO_SSE_MAX_EVENT);
                self->event_fail = DISPATCH_FAIL_PROTOCOL;
            }
            if (self->relayed)
                s_flush(self); //  the complete events before the bad one
            return DISPATCH_FAIL_PROTOCOL;
        }
        //  The first bytes go at once (and end failover); later ones wait
        //  for the end of libcurl's round, which may read more: one CHUNK
        //  for what one round brought, not one per 1 KiB read.
        if (!self->relayed || !self->env->unsent)
            s_flush(self);
        else
            s_send_later(self);
        return DISPATCH_FAIL_NONE;
    }
    bool ok = self->status >= 200 && self->status < 300;
    size_t limit = ok ? S_MAX_ANSWER : S_MAX_ERROR_BODY;
    if (zchunk_size(self->answer) + size > limit) {
        if (ok)
            return DISPATCH_FAIL_TOO_LARGE;
        return DISPATCH_FAIL_NONE; //  the head of an error body is enough
    }
    zchunk_extend(self->answer, data, size);
    return DISPATCH_FAIL_NONE;
}

//  After the transfer: was a 2xx answer complete and readable?
static dispatch_fail_t s_check_answer(dispatch_request_t *self, const char **detail)
{
    if (self->sse) {
        if (proto_sse_finish(self->sse, s_on_event, self) != 0) {
            *detail = self->conv.error[0] ? self->conv.error : "stream event too large";
            return DISPATCH_FAIL_PROTOCOL;
        }
        if (!self->conv.complete) {
            *detail = "stream ended before its end marker";
            return DISPATCH_FAIL_PROTOCOL;
        }
        //  The client's closing bytes not out yet (a converted stream's
        //  last events, a JSON array's bracket) go with DONE.
        self->conv.adapter->finish(&self->conv, true, 200, NULL, NULL, self->out);
        return DISPATCH_FAIL_NONE;
    }
    if (self->conv.adapter->body(&self->conv, (const char *)zchunk_data(self->answer),
                                 zchunk_size(self->answer), self->out) != 0) {
        *detail = self->conv.error;
        return DISPATCH_FAIL_PROTOCOL;
    }
    return DISPATCH_FAIL_NONE;
}

//  Replaces every provider secret this process knows with "***" in out.
//  Upstream error bodies are relayed to clients, and some upstreams (relays,
//  self-hosted servers) quote the key or the Authorization header back.
static void s_redact_secrets(proto_catalog_t *catalog, zchunk_t *out)
{
    size_t count = catalog ? proto_catalog_provider_key_count(catalog) : 0;
    if (!count || !zchunk_size(out))
        return;
    const char **secrets = calloc(count, sizeof *secrets);
    assert(secrets);
    size_t used = 0;
    for (size_t i = 0; i < count; i++) {
        const proto_provider_key_t *key = proto_catalog_provider_key_at(catalog, i);
        if (key->secret && *key->secret)
            secrets[used++] = key->secret;
    }
    char *text = zchunk_strdup(out);
    proto_capture_redact(text, secrets, used);
    zchunk_set(out, text, strlen(text));
    free(text);
    free(secrets);
}

static void s_on_done(void *arg, dispatch_fail_t fail, const char *detail)
{
    dispatch_request_t *self = arg;
    const dispatch_request_env_t *env = self->env;
    int status = dispatch_policy_key_status(
        (int)self->candidate->upstream_protocol, dispatch_call_status(self->call),
        (const char *)zchunk_data(self->answer), zchunk_size(self->answer));
    if (!self->status)
        self->status = status;
    if (fail == DISPATCH_FAIL_PROTOCOL && self->event_fail)
        detail = self->conv.error;
    if (fail == DISPATCH_FAIL_TOO_LARGE)
        detail = "answer larger than 64 MiB";
    if (fail == DISPATCH_FAIL_NONE && status >= 200 && status < 300)
        fail = s_check_answer(self, &detail);

    int outcome_status = dispatch_policy_outcome_status(fail, status);
    dispatch_next_t next = dispatch_policy_next(fail, status, self->relayed);
    //  The provider's own word on which statuses fail over (docs/routing.md).
    const proto_provider_t *provider =
        proto_catalog_provider(env->catalog, self->candidate->provider_id);
    next = dispatch_policy_provider(next, provider, fail, status);
    if (dispatch_reach_report(env->reach, self->candidate->provider_id, self->proxy, fail, status,
                              proto_loop_now_ms()))
        log_info(self->rid, "breaker: proxy %d of provider=%llu open here", self->proxy,
                 (unsigned long long)self->candidate->provider_id);
    s_outcome(self, outcome_status,
              fail != DISPATCH_FAIL_NONE      ? dispatch_policy_fail_name(fail)
              : next == DISPATCH_NEXT_SUCCESS ? NULL
                                              : "upstream_status");
    if (next != DISPATCH_NEXT_SUCCESS)
        log_info(self->rid, "attempt %d provider=%llu model=%s failed: status=%d %s (%s)",
                 self->attempts, (unsigned long long)self->candidate->provider_id,
                 self->candidate->upstream_model, status, dispatch_policy_fail_name(fail),
                 detail ? detail : "");

    switch (next) {
    case DISPATCH_NEXT_SUCCESS: {
        s_ending_t ending = {.status = status,
                             .content_type = self->sse             ? self->conv.content_type
                                             : *self->content_type ? self->content_type
                                                                   : "application/json",
                             .usage = s_usage(self, true),
                             .reply = true};
        s_finish(self, &ending);
        return;
    }
    case DISPATCH_NEXT_FAILOVER:
        dispatch_policy_record(&self->failures, fail, status,
                               dispatch_call_retry_after_ms(self->call));
        proto_metric_add(env->failovers, 1);
        if (dispatch_reach_retry(provider, self->proxy, fail, &self->proxy_retries))
            self->next--; //  the same candidate again, through the next proxy
        s_attempt_clear(self);
        s_try_next(self);
        return;
    case DISPATCH_NEXT_RELAY: {
        //  The upstream refused the request itself: the client hears it as
        //  the upstream said it, in its own protocol — minus any of our
        //  provider secrets the upstream quoted back.
        zchunk_set(self->out, NULL, 0);
        self->conv.adapter->error_body(&self->conv, status, (const char *)zchunk_data(self->answer),
                                       zchunk_size(self->answer), self->out);
        s_redact_secrets(env->catalog, self->out);
        s_ending_t ending = {.status = status,
                             .content_type = "application/json",
                             .error_code = "upstream_status",
                             .reply = true};
        s_finish(self, &ending);
        return;
    }
    case DISPATCH_NEXT_BROKEN: {
        //  Bytes already went to the client: the stream must not look
        //  finished. What is left of the good events goes out first, then
        //  an error event in the client's protocol.
        s_flush(self);
        int final = fail == DISPATCH_FAIL_TIMEOUT ? 504 : 502;
        const char *code = fail == DISPATCH_FAIL_TIMEOUT ? "upstream_timeout" : "upstream_error";
        //  The adapter writes the end: a converter closes the blocks it
        //  has open and names the reason; a JSON array gets its bracket.
        zchunk_set(self->out, NULL, 0);
        self->conv.adapter->finish(&self->conv, false, final, code,
                                   "The upstream stream broke off before it was complete.",
                                   self->out);
        s_ending_t ending = {.status = final,
                             .content_type = "text/event-stream",
                             .error_code = code,
                             .usage = s_usage(self, true),
                             .reply = true};
        s_finish(self, &ending);
        return;
    }
    }
}

static const dispatch_call_handler_t s_handler = {s_on_response, s_on_data, s_on_done};

//  --------------------------------------------------------------------------
//  Attempts

//  Starts the call for one candidate. Returns 0 when it runs, 1 when the
//  candidate cannot be used (skip it), -1 when the request has been
//  answered (a client error).
static int s_start_attempt(dispatch_request_t *self, const proto_candidate_t *candidate)
{
    const dispatch_request_env_t *env = self->env;
    const proto_provider_t *provider = proto_catalog_provider(env->catalog, candidate->provider_id);
    const proto_provider_key_t *key =
        proto_catalog_provider_key(env->catalog, candidate->provider_key_id);
    if (!provider || !key || key->provider_id != provider->id || !key->secret) {
        log_warn(self->rid,
                 "candidate provider=%llu key=%llu is not in the catalog (or its secret "
                 "did not open); skipped",
                 (unsigned long long)candidate->provider_id,
                 (unsigned long long)candidate->provider_key_id);
        return 1;
    }
    int upstream_protocol =
        candidate->upstream_protocol ? (int)candidate->upstream_protocol : provider->protocol;
    const dispatch_adapter_t *adapter =
        dispatch_adapter_find(self->client_protocol, upstream_protocol);
    if (!adapter) {
        log_info(self->rid, "no converter from %s to %s yet; candidate provider=%llu skipped",
                 proto_protocol_name(self->client_protocol), proto_protocol_name(upstream_protocol),
                 (unsigned long long)candidate->provider_id);
        self->unsupported = true;
        return 1;
    }
    if (self->audio && !dispatch_audio_accepted(self->client_protocol, upstream_protocol)) {
        log_info(self->rid, "%s takes no audio (%s); candidate provider=%llu skipped",
                 proto_protocol_name(upstream_protocol), self->audio,
                 (unsigned long long)candidate->provider_id);
        self->audio_skipped = true;
        return 1;
    }
    if (self->count_tokens && upstream_protocol != self->client_protocol) {
        //  No count endpoint of the client's protocol there: our estimate.
        char *answer = dispatch_adapter_count_answer(self->client_protocol, s_body_size(self));
        s_chunk_replace(self->out, answer, strlen(answer));
        free(answer);
        log_debug(self->rid, "token count estimated here (upstream speaks %s)",
                  proto_protocol_name(upstream_protocol));
        s_ending_t ending = {.status = 200, .content_type = "application/json", .reply = true};
        s_finish(self, &ending);
        return -1;
    }
    dispatch_convert_init(&self->conv, adapter);
    self->conv.client_model = self->kept.model;
    self->conv.client_stream = self->kept.stream;
    self->conv.json_array = self->json_array;
    self->conv.count_tokens = self->count_tokens;
    //  A strict provider, or a strict model, takes the whole request or none.
    const proto_model_t *model = proto_catalog_model_for_client(env->catalog, self->kept.model);
    self->conv.strict = provider->strict || (model && model->strict);
    char *body = NULL;
    size_t body_size = 0;
    assert(self->body && !self->relayed); //  dropped only once no attempt follows
    if (adapter->request(&self->conv, (const char *)zframe_data(self->body), s_body_size(self),
                         candidate->upstream_model, &body, &body_size) != 0) {
        char message[300];
        snprintf(message, sizeof message, "%s", self->conv.error);
        s_finish_error(self, 400, "invalid_request", message, 0);
        return -1;
    }
    char *url = dispatch_reach_url(env->catalog, provider, candidate->upstream_model,
                                   adapter->endpoint_protocol, upstream_protocol,
                                   self->count_tokens, self->conv.stream);
    if (!url) {
        free(body);
        log_warn(self->rid, "no URL for provider=%llu; skipped",
                 (unsigned long long)candidate->provider_id);
        return 1;
    }
    uint64_t total_ms = env->total_timeout_ms;
    if (self->deadline_us) {
        uint64_t now = proto_loop_now_us();
        uint64_t left_ms = self->deadline_us > now ? (self->deadline_us - now) / 1000 : 0;
        if (left_ms < total_ms)
            total_ms = left_ms ? left_ms : 1;
    }
    self->proxy = dispatch_reach_proxy(env->reach, provider, proto_loop_now_ms());
    dispatch_call_spec_t spec = {
        .url = url,
        .headers = dispatch_reach_headers(
            provider,
            proto_upstream_headers(adapter->endpoint_protocol, key->secret, self->conv.stream)),
        .proxy = self->proxy >= 0 ? provider->proxies.names[self->proxy] : NULL,
        .body = body,
        .body_size = body_size,
        .connect_timeout_ms = env->connect_timeout_ms,
        .first_byte_timeout_ms = env->first_byte_timeout_ms,
        .idle_timeout_ms = env->idle_timeout_ms,
        .total_timeout_ms = total_ms,
    };
    self->candidate = candidate;
    self->attempts++;
    self->call = dispatch_call_new(env->multi, env->loop, &spec, &s_handler, self);
    free(url);
    if (!self->call) {
        log_error(self->rid, "libcurl refused the upstream call");
        return 1;
    }
    //  Journaled at the end of this turn, before libcurl sends a byte (it
    //  sends from the loop's next turns).
    s_provisional_lost(self);
    if (self->conv.dropped)
        //  The request log names what the conversion left out, as the
        //  client's x-tollgate-dropped-fields header does.
        log_info(self->rid, "attempt %d to provider=%llu (%s) dropped fields: %s", self->attempts,
                 (unsigned long long)candidate->provider_id, adapter->name, self->conv.dropped);
    log_debug(self->rid, "attempt %d provider=%llu model=%s via %s", self->attempts,
              (unsigned long long)candidate->provider_id, candidate->upstream_model, adapter->name);
    return 0;
}

//  Tries candidates from self->next on until one runs; when none is left,
//  answers with the failure that fits what happened.
static void s_try_next(dispatch_request_t *self)
{
    while (self->next < self->candidate_count) {
        if (self->deadline_us && proto_loop_now_us() >= self->deadline_us) {
            dispatch_policy_record(&self->failures, DISPATCH_FAIL_TIMEOUT, 0, 0);
            break;
        }
        const proto_candidate_t *candidate = &self->candidates[self->next++];
        int rc = s_start_attempt(self, candidate);
        if (rc <= 0)
            return; //  running, or answered
    }
    if (self->failures.failed == 0 && self->audio_skipped) {
        char message[300];
        snprintf(message, sizeof message,
                 "Invalid '%s': audio input cannot be sent to this model's providers (their API "
                 "takes no audio).",
                 self->audio);
        s_finish_error(self, 400, "audio_not_supported", message, 0);
        return;
    }
    if (self->failures.failed == 0 && self->unsupported) {
        char message[200];
        snprintf(message, sizeof message,
                 "Requests in the %s protocol cannot be sent to this model's providers yet.",
                 proto_protocol_name(self->client_protocol));
        s_finish_error(self, 400, "unsupported_protocol", message, 0);
        return;
    }
    const char *code, *message;
    int status = dispatch_policy_final(&self->failures, &code, &message);
    s_finish_error(self, status, code, message, status == 429 ? self->failures.retry_after_ms : 0);
}

//  --------------------------------------------------------------------------
//  Routing: the same decision the router explains, made here

//  Orders the candidates of a new request. Returns 0, or -1 when it was
//  answered (404, 429, 503) instead.
static int s_decide(dispatch_request_t *request)
{
    const dispatch_request_env_t *env = request->env;
    const s_kept_t *kept = &request->kept;
    router_request_t query = {.request_id = request->rid,
                              .model = kept->model,
                              .key_id = kept->key_id,
                              .account_id = kept->account_id,
                              .session = kept->session,
                              .capabilities = kept->capabilities,
                              .now_ms = proto_loop_now_ms()};
    uint64_t started_us = proto_loop_now_us();
    //  The server's scratch, not one allocation per request: nothing below
    //  starts another decision, and what the request keeps is copied out.
    router_decision_t *decision = env->decision;
    dispatch_route_decide(env->route, &query, decision);
    int status = decision->status;
    proto_observe_decision(env->tracer, request->rid, kept->trace, status, decision->candidates,
                           status == 200 ? decision->count : 0, started_us);
    if (status == 200) {
        //  Sized by what the decision gave (usually one to three), not by
        //  the most a decision may give: a request in flight is small.
        request->candidates = malloc(decision->count * sizeof *decision->candidates);
        assert(request->candidates);
        memcpy(request->candidates, decision->candidates,
               decision->count * sizeof *decision->candidates);
        request->candidate_count = decision->count;
        if (decision->last_resort)
            log_info(request->rid, "model %s: every candidate is open; last resort provider=%llu",
                     query.model, (unsigned long long)decision->candidates[0].provider_id);
    } else {
        proto_metric_add(env->no_route, 1);
        log_info(request->rid, "no route for model %s: %d %s", query.model, status,
                 decision->error_code);
        s_finish_error(request, status, decision->error_code, decision->error_message,
                       decision->retry_after_ms);
    }
    return status == 200 ? 0 : -1;
}

//  --------------------------------------------------------------------------
//  Asked by the server

const char *dispatch_request_id(dispatch_request_t *self)
{
    return self->rid;
}

void dispatch_request_start(dispatch_request_t *self)
{
    int protocol = self->client_protocol;
    if (protocol < PROTO_PROTOCOL_OPENAI || protocol > PROTO_PROTOCOL_OPENAI_IMAGES)
        s_finish_error(self, 400, "unsupported_protocol", "Unknown client protocol.", 0);
    else if (!s_body_size(self))
        s_finish_error(self, 400, "invalid_request", "The request has no body.", 0);
    else if (s_decide(self) == 0)
        s_try_next(self);
}

//  A DISPATCH for a request running here: ingress lost its connection to us
//  and sent it again. Replies go to the new connection from now on. If
//  CHUNKs went to the old one, the client's answer lost its head: the
//  request ends with an error that ingress can still give (no byte reached
//  the client), recorded and not charged.
void dispatch_request_again(dispatch_request_t *request, proto_msg_t *msg)
{
    s_kept_routing(&request->kept, proto_msg_routing_id(msg));
    if (!request->relayed) {
        log_info(request->rid, "DISPATCH again for a request in flight: replies follow it");
        return;
    }
    log_warn(request->rid, "DISPATCH again after CHUNKs went to a lost connection; ending it");
    if (request->call) {
        s_outcome(request, S_STATUS_CANCELLED, "client_cancelled");
        dispatch_call_destroy(&request->call);
    }
    request->head_lost = true;
    request->relayed = false; //  the DONE below is the whole answer now
    char *body = proto_error_body(request->client_protocol, 502, "stream_interrupted",
                                  "The answer was lost between gateway programs; please retry.");
    s_chunk_replace(request->out, body, strlen(body));
    free(body);
    s_ending_t ending = {.status = 502,
                         .content_type = "application/json",
                         .error_code = "stream_interrupted",
                         .usage = s_usage(request, true),
                         .reply = true};
    s_finish(request, &ending);
}

void dispatch_request_cancel(dispatch_request_t *request, proto_msg_t *msg)
{
    const char *rid = request->rid;
    log_info(rid, "cancelled by ingress (%s) after %d attempt(s)",
             proto_msg_has(msg, PROTO_FIELD_reason) ? proto_msg_reason(msg) : "no reason",
             request->attempts);
    bool in_flight = request->call != NULL;
    if (in_flight) {
        s_outcome(request, S_STATUS_CANCELLED, "client_cancelled");
        //  Removing the transfer closes its connection now: the upstream
        //  stops generating (and charging) at once.
        dispatch_call_destroy(&request->call);
    }
    //  The upstream read the prompt, so input is charged; output only as
    //  far as it reached the client.
    proto_usage_t usage = {0};
    if (in_flight)
        usage = s_usage(request, request->relayed);
    s_ending_t ending = {.status = S_STATUS_CANCELLED,
                         .error_code = "client_cancelled",
                         .usage = usage,
                         .reply = false};
    s_finish(request, &ending);
}

//  --------------------------------------------------------------------------
//  Selftest

//  A DISPATCH as ingress sends it (ingress_relay), request `i`.
static proto_msg_t *s_test_dispatch(int i, bool session)
{
    char rid[32], trace[64];
    snprintf(rid, sizeof rid, "req-%08d", i);
    snprintf(trace, sizeof trace, "00-%032x-%016x-01", i, i);
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_DISPATCH);
    proto_msg_set_request_id(msg, rid);
    proto_msg_set_trace(msg, trace);
    proto_msg_set_deadline(msg, 1800000000000ull + (uint64_t)i);
    proto_msg_set_client_protocol(msg, PROTO_PROTOCOL_OPENAI);
    proto_msg_set_model(msg, "gpt-4o-mini");
    proto_msg_set_stream(msg, true);
    proto_msg_set_include_usage(msg, true);
    proto_msg_set_started_us(msg, 1700000000000000ull);
    if (session) {
        proto_msg_set_session(msg, "session-1");
        proto_msg_set_capabilities(msg, "vision,tools");
    }
    proto_msg_set_key_id(msg, 7);
    proto_msg_set_account_id(msg, 3);
    proto_msg_set_reserve_micros(msg, 1234);
    proto_msg_set_lease_id(msg, 99);
    proto_msg_set_grant(msg, "a1.0123456789abcdefghijklmnopqrstuvwxyzABCDEFG");
    char body[300];
    memset(body, 'x', sizeof body);
    proto_msg_set_body_bytes(msg, body, sizeof body);
    uint8_t routing[5] = {0, 0x80, 0, 0, (uint8_t)i};
    proto_msg_set_routing_id_bytes(msg, routing, sizeof routing);
    return msg;
}

//  True when two messages encode to the same envelope and routing id.
static bool s_test_same(const proto_msg_t *a, const proto_msg_t *b)
{
    uint8_t *data_a = NULL, *data_b = NULL;
    size_t size_a = 0, size_b = 0;
    PROTO_CHECK(proto_msg_encode(a, &data_a, &size_a) == 0);
    PROTO_CHECK(proto_msg_encode(b, &data_b, &size_b) == 0);
    bool same = size_a == size_b && memcmp(data_a, data_b, size_a) == 0;
    free(data_a);
    free(data_b);
    zframe_t *id_a = proto_msg_routing_id(a), *id_b = proto_msg_routing_id(b);
    return same && id_a && id_b && zframe_eq(id_a, id_b);
}

void dispatch_request_test(bool verbose)
{
    dispatch_request_env_t env = {0};
    //  Replies and records carry what the DISPATCH said, as when the whole
    //  message was kept; with and without the optional strings.
    for (int variant = 0; variant < 2; variant++) {
        proto_msg_t *msg = s_test_dispatch(5, variant == 1);
        proto_msg_t *same = s_test_dispatch(5, variant == 1);
        dispatch_request_t *request = dispatch_request_new(&env, &msg);
        PROTO_CHECK(!msg && strcmp(dispatch_request_id(request), "req-00000005") == 0);
        proto_msg_t *mine = s_reply(request, PROTO_MSG_CHUNK);
        proto_msg_t *theirs = proto_msg_reply(same, PROTO_MSG_CHUNK);
        PROTO_CHECK(s_test_same(mine, theirs));
        proto_msg_destroy(&mine);
        proto_msg_destroy(&theirs);
        proto_usage_t usage = {.tokens_in = 1};
        proto_msg_t *settle = s_settle_new(request, request->rid, 200, &usage, true);
        PROTO_CHECK(proto_msg_account_id(settle) == 3 && proto_msg_key_id(settle) == 7);
        PROTO_CHECK(strcmp(proto_msg_model(settle), "gpt-4o-mini") == 0);
        PROTO_CHECK(strcmp(proto_msg_trace(settle), proto_msg_trace(same)) == 0);
        PROTO_CHECK(proto_msg_reserve_micros(settle) == 1234 && proto_msg_lease_id(settle) == 99);
        PROTO_CHECK(strcmp(proto_msg_grant(settle), proto_msg_grant(same)) == 0);
        PROTO_CHECK(proto_msg_started_us(settle) == 1700000000000000ull);
        proto_msg_destroy(&settle);
        PROTO_CHECK(request->kept.stream && request->body_size == 300);
        if (variant == 1) {
            PROTO_CHECK(strcmp(request->kept.session, "session-1") == 0);
            PROTO_CHECK(strcmp(request->kept.capabilities, "vision,tools") == 0);
        } else
            PROTO_CHECK(!request->kept.session && !request->kept.capabilities);
        //  A DISPATCH sent again moves the replies to its connection.
        proto_msg_t *again = s_test_dispatch(6, false);
        dispatch_request_again(request, again);
        mine = s_reply(request, PROTO_MSG_DONE);
        PROTO_CHECK(zframe_eq(proto_msg_routing_id(mine), proto_msg_routing_id(again)));
        proto_msg_destroy(&mine);
        proto_msg_destroy(&again);
        proto_msg_destroy(&same);
        dispatch_request_destroy(&request);
    }

    //  What a request in flight holds from its DISPATCH on: its struct, the
    //  kept fields, its body (a frame of 300 bytes, until the first CHUNK)
    //  and two empty chunks: ~1,050 bytes besides the struct, where the
    //  whole DISPATCH kept was ~1.2 KiB more (mallinfo2 counts nothing
    //  under ASan, whose allocator is its own).
    enum { N = 1000 };
    dispatch_request_t **requests = calloc(N, sizeof *requests);
    assert(requests);
    size_t in_use = mallinfo2().uordblks;
    for (int i = 0; i < N; i++) {
        proto_msg_t *msg = s_test_dispatch(i, false);
        requests[i] = dispatch_request_new(&env, &msg);
    }
    size_t grown = mallinfo2().uordblks - in_use;
    if (verbose)
        printf("(%zu bytes per request, struct %zu) ", grown / N, sizeof(dispatch_request_t));
    PROTO_CHECK(grown / N <= sizeof(dispatch_request_t) + 1280);
    for (int i = 0; i < N; i++)
        dispatch_request_destroy(&requests[i]);
    free(requests);
}
