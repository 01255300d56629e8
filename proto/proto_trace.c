#include "proto_trace.h"
#include "proto_check.h"
#include "proto_batch.h"
#include "proto_crypto.h"
#include "proto_log.h"
#include "proto_socket.h"

#include <assert.h>
#include <ctype.h>
#include <jansson.h>
#include <malloc.h>
#include <string.h>

#define S_SNDHWM 1000       //  batches queued towards the ledgers before they are dropped
#define S_BATCH_ITEMS 256   //  spans in one BATCH at most
#define S_BATCH_DELAY_MS 20 //  the longest a span waits for its batch
#define S_HELD_MAX 20000    //  requests whose spans wait for the end decision
#define S_HELD_SPANS_MAX 16 //  spans held per request; later ones are dropped

//  A span held for its request's end: a copy, made into a SPAN message
//  only if it is kept (most are not, and a message costs a JSON document
//  and a span id). One allocation sized to what it holds: a stream in
//  flight holds its spans the whole time (dispatch's route span, ingress'
//  admission), and fixed buffers, four string copies and a list node each
//  were ~0.4 KiB of the ~1.1 KiB per request (heaptrack, 10,000 streams).
typedef struct _s_copy_t s_copy_t;
struct _s_copy_t {
    s_copy_t *next;    //  the request's next held span, NULL at the last
    proto_span_t span; //  its fields; the strings point into text
    const char *trace; //  traceparent, into text
    char text[];       //  trace, name, model, error, attributes, each with its NUL
};

//  Spans of one request that is neither sampled nor known to be
//  interesting yet: kept until proto_trace_finish decides.
typedef struct {
    s_copy_t *first; //  oldest first
    s_copy_t *last;  //  where the next one goes
    size_t count;    //  spans in the chain
} s_held_t;

//  A program's sender, owned by its proto_service_t.
struct _proto_trace_t {
    zsock_t *dealer;           //  to every ledger, or NULL
    proto_batch_t *batch;      //  spans and DETAILS on their way to it
    bool enabled;              //  trace.spans
    uint64_t sample_ppm;       //  trace.sample_ppm: requests traced per million
    uint64_t slow_us;          //  trace.slow_ms: a request this slow is traced
    char program[32];          //  "ingress"
    char instance[128];        //  this process' instance id
    proto_trace_sink_fn *sink; //  local receiver instead of the socket
    void *sink_arg;            //  its argument
    zhashx_t *held;            //  request id -> s_held_t*, decided at the end
    uint64_t sent;             //  spans handed on
    uint64_t dropped;          //  spans lost (queue full, no ledger, held too long)
};

static void s_held_destroy(void **item)
{
    s_held_t *held = *item;
    if (!held)
        return;
    while (held->first) {
        s_copy_t *next = held->first->next;
        free(held->first);
        held->first = next;
    }
    free(held);
    *item = NULL;
}

//  Copies text (NULL: none) to *cursor and advances it; returns the copy.
static const char *s_copy_string(char **cursor, const char *text, size_t length)
{
    if (!text)
        return NULL;
    memcpy(*cursor, text, length);
    (*cursor)[length] = '\0';
    const char *copy = *cursor;
    *cursor += length + 1;
    return copy;
}

static s_copy_t *s_copy_new(const char *traceparent, const proto_span_t *span)
{
    const char *texts[5] = {traceparent ? traceparent : "", span->name, span->upstream_model,
                            span->error_code, span->attributes};
    size_t lengths[5] = {0};
    //  As a message's trace field holds it: at most PROTO_MSG_TRACE_MAX bytes.
    lengths[0] = strnlen(texts[0], PROTO_MSG_TRACE_MAX);
    size_t size = sizeof(s_copy_t) + lengths[0] + 1;
    for (int i = 1; i < 5; i++)
        if (texts[i]) {
            lengths[i] = strlen(texts[i]);
            size += lengths[i] + 1;
        }
    s_copy_t *copy = malloc(size);
    assert(copy);
    copy->next = NULL;
    copy->span = *span;
    char *cursor = copy->text;
    copy->trace = s_copy_string(&cursor, texts[0], lengths[0]);
    copy->span.name = s_copy_string(&cursor, texts[1], lengths[1]);
    copy->span.upstream_model = s_copy_string(&cursor, texts[2], lengths[2]);
    copy->span.error_code = s_copy_string(&cursor, texts[3], lengths[3]);
    copy->span.attributes = s_copy_string(&cursor, texts[4], lengths[4]);
    return copy;
}

static void s_held_new_table(proto_trace_t *self)
{
    if (self->held)
        return;
    self->held = zhashx_new();
    zhashx_set_destructor(self->held, s_held_destroy);
}

proto_trace_t *proto_trace_new(proto_config_t *config, proto_loop_t *loop, const char *program,
                               const char *instance)
{
    proto_trace_t *self = calloc(1, sizeof *self);
    assert(self);
    self->sample_ppm = 1000000;
    snprintf(self->program, sizeof self->program, "%s", program);
    snprintf(self->instance, sizeof self->instance, "%s", instance);
    s_held_new_table(self);
    if (!config)
        return self;
    self->enabled = proto_config_bool(config, "trace.spans");
    self->sample_ppm = (uint64_t)proto_config_int(config, "trace.sample_ppm");
    self->slow_us = (uint64_t)proto_config_int(config, "trace.slow_ms") * 1000;
    if (!self->enabled)
        return self;
    self->dealer = proto_socket_new(ZMQ_DEALER);
    if (!self->dealer) {
        proto_trace_destroy(&self);
        return NULL;
    }
    zsock_set_sndhwm(self->dealer, S_SNDHWM);
    zsock_set_sndtimeo(self->dealer, 0); //  never wait: drop instead
    zsock_set_linger(self->dealer, 0);
    proto_socket_connect_all(self->dealer, config, "ledger");
    self->batch =
        proto_batch_new(loop, self->dealer, S_BATCH_ITEMS, PROTO_BATCH_BYTES_MAX, S_BATCH_DELAY_MS);
    return self;
}

void proto_trace_destroy(proto_trace_t **self_p)
{
    assert(self_p);
    proto_trace_t *self = *self_p;
    if (!self)
        return;
    proto_batch_destroy(&self->batch);
    zsock_destroy(&self->dealer);
    zhashx_destroy(&self->held);
    free(self);
    *self_p = NULL;
}

uint64_t proto_trace_waited_us(bool stream, uint64_t latency_us, uint64_t ttfb_us)
{
    return stream && ttfb_us ? ttfb_us : latency_us;
}

bool proto_trace_is_slow(proto_trace_t *self, uint64_t waited_us)
{
    return self && self->slow_us && waited_us >= self->slow_us;
}

void proto_trace_set_sink(proto_trace_t *self, proto_trace_sink_fn *fn, void *arg)
{
    assert(self);
    self->sink = fn;
    self->sink_arg = arg;
}

uint64_t proto_trace_sent(proto_trace_t *self)
{
    return self ? self->sent : 0;
}

uint64_t proto_trace_dropped(proto_trace_t *self)
{
    return self ? self->dropped : 0;
}

static bool s_hex(const char *text, size_t length)
{
    for (size_t i = 0; i < length; i++)
        if (!isxdigit((unsigned char)text[i]) || isupper((unsigned char)text[i]))
            return false;
    return true;
}

char *proto_trace_id(const char *traceparent, char *out)
{
    out[0] = '\0';
    //  00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>
    if (traceparent && strlen(traceparent) >= 55 && traceparent[2] == '-' &&
        traceparent[35] == '-' && s_hex(traceparent + 3, 32)) {
        memcpy(out, traceparent + 3, 32);
        out[32] = '\0';
    }
    return out;
}

proto_msg_t *proto_trace_message(proto_trace_t *self, const char *request_id,
                                 const char *traceparent, const proto_span_t *span)
{
    char span_id[17];
    proto_crypto_random_hex(span_id, 8);
    json_t *meta = json_pack("{s:s, s:s, s:s}", "name", span->name ? span->name : "span", "program",
                             self && self->program[0] ? self->program : "?", "span_id", span_id);
    char trace_id[33];
    if (*proto_trace_id(traceparent, trace_id) && s_hex(traceparent + 36, 16)) {
        char parent[17];
        memcpy(parent, traceparent + 36, 16);
        parent[16] = '\0';
        json_object_set_new(meta, "parent_id", json_string(parent));
    }
    if (span->attributes) {
        json_t *attributes = json_loads(span->attributes, 0, NULL);
        if (json_is_object(attributes))
            json_object_set(meta, "attributes", attributes);
        json_decref(attributes);
    }
    char *meta_text = json_dumps(meta, JSON_COMPACT);
    json_decref(meta);

    proto_msg_t *msg = proto_msg_new(PROTO_MSG_SPAN);
    proto_msg_set_request_id(msg, request_id ? request_id : "");
    proto_msg_set_trace(msg, traceparent && strlen(traceparent) <= PROTO_MSG_TRACE_MAX ? traceparent
                                                                                       : "");
    proto_msg_set_instance(msg, self && self->instance[0] ? self->instance : "?");
    proto_msg_set_started_us(msg, span->started_us);
    proto_msg_set_meta(msg, meta_text);
    free(meta_text);
    proto_msg_set_latency_us(msg, span->duration_us);
    if (span->status)
        proto_msg_set_status(msg, (uint64_t)span->status);
    if (span->attempt)
        proto_msg_set_attempt(msg, span->attempt);
    if (span->provider_id)
        proto_msg_set_provider_id(msg, span->provider_id);
    if (span->provider_key_id)
        proto_msg_set_provider_key_id(msg, span->provider_key_id);
    if (span->upstream_model && *span->upstream_model)
        proto_msg_set_upstream_model(msg, span->upstream_model);
    if (span->error_code && *span->error_code)
        proto_msg_set_error_code(msg, span->error_code);
    return msg;
}

void proto_trace_send(proto_trace_t *self, proto_msg_t **msg_p)
{
    if (!self) {
        proto_msg_destroy(msg_p);
        return;
    }
    if (self->sink) {
        self->sent++;
        self->sink(msg_p, self->sink_arg);
        proto_msg_destroy(msg_p);
        return;
    }
    if (!self->batch) {
        proto_msg_destroy(msg_p);
        return;
    }
    if (proto_batch_add(self->batch, msg_p) == 0)
        self->sent++;
    else
        self->dropped++;
}

//  Whether a request is traced. Every process must decide the same for the
//  same request, or timelines would have holes: the decision is a hash of
//  the trace id (else the request id), which every hop carries.
static bool s_sampled(proto_trace_t *self, const char *request_id, const char *traceparent)
{
    if (self->sample_ppm >= 1000000)
        return true;
    char trace_id[33];
    const char *basis = *proto_trace_id(traceparent, trace_id) ? trace_id : request_id;
    uint64_t hash = 1469598103934665603ULL; //  FNV-1a
    for (const unsigned char *c = (const unsigned char *)basis; *c; c++)
        hash = (hash ^ *c) * 1099511628211ULL;
    return hash % 1000000 < self->sample_ppm;
}

bool proto_trace_sampled(proto_trace_t *self, const char *request_id, const char *traceparent)
{
    return self && s_sampled(self, request_id, traceparent);
}

//  Keeps a span until its request's end says whether it is wanted.
static void s_hold(proto_trace_t *self, const char *request_id, const char *traceparent,
                   const proto_span_t *span)
{
    s_held_new_table(self);
    s_held_t *held = zhashx_lookup(self->held, request_id);
    if (!held) {
        if (zhashx_size(self->held) >= S_HELD_MAX) {
            //  Requests that never reached their end (lost, or a program
            //  that does not call finish): forget the oldest-looking one.
            self->dropped++;
            zhashx_delete(self->held,
                          zhashx_first(self->held) ? zhashx_cursor(self->held) : request_id);
        }
        held = calloc(1, sizeof *held);
        assert(held);
        zhashx_insert(self->held, request_id, held);
    }
    if (held->count >= S_HELD_SPANS_MAX) {
        self->dropped++;
        return;
    }
    s_copy_t *copy = s_copy_new(traceparent, span);
    if (held->last)
        held->last->next = copy;
    else
        held->first = copy;
    held->last = copy;
    held->count++;
}

void proto_trace_span(proto_trace_t *self, const char *request_id, const char *traceparent,
                      const proto_span_t *span)
{
    if (!self || (!self->sink && !self->dealer))
        return;
    if (!request_id || !*request_id)
        return; //  spans belong to requests
    bool sampled = s_sampled(self, request_id, traceparent);
    bool interesting =
        span->keep || span->status >= 400 || span->attempt > 1 ||
        proto_trace_is_slow(self, proto_trace_waited_us(span->first_byte_us != 0, span->duration_us,
                                                        span->first_byte_us));
    if (!sampled && !interesting && !span->hold)
        return;
    if (!sampled && !interesting) {
        s_hold(self, request_id, traceparent, span);
        return;
    }
    proto_msg_t *msg = proto_trace_message(self, request_id, traceparent, span);
    proto_trace_send(self, &msg);
}

void proto_trace_finish(proto_trace_t *self, const char *request_id, bool keep)
{
    if (!self || !self->held || !request_id || !*request_id)
        return;
    s_held_t *held = zhashx_lookup(self->held, request_id);
    if (!held)
        return;
    if (keep)
        for (s_copy_t *copy = held->first; copy; copy = copy->next) {
            proto_msg_t *msg = proto_trace_message(self, request_id, copy->trace, &copy->span);
            proto_trace_send(self, &msg);
        }
    zhashx_delete(self->held, request_id);
}

size_t proto_trace_held(proto_trace_t *self)
{
    return self && self->held ? zhashx_size(self->held) : 0;
}

//  --------------------------------------------------------------------------
//  Self test

static void s_test_sink(proto_msg_t **msg_p, void *arg)
{
    proto_msg_t **kept = arg;
    proto_msg_destroy(kept); //  the last one sent is the one checked
    *kept = *msg_p;
    *msg_p = NULL;
}

//  Slow (trace.slow_ms) is a wait: a held span of a stream that ran 60 s
//  after a first byte at 1 ms waits for the end; one whose first byte took
//  6 s goes at once, as does a whole answer that took 6 s.
static void s_test_slowness(proto_trace_t *trace, const char *parent, proto_msg_t **kept)
{
    uint64_t slow_us = trace->slow_us;
    trace->slow_us = 5000000;
    PROTO_CHECK(!proto_trace_is_slow(trace, 4999999) && proto_trace_is_slow(trace, 5000000));
    PROTO_CHECK(proto_trace_waited_us(true, 60000000, 1000) == 1000);
    PROTO_CHECK(proto_trace_waited_us(true, 60000000, 0) == 60000000); //  no byte came
    PROTO_CHECK(proto_trace_waited_us(false, 6000000, 1000) == 6000000);
    proto_span_t streamed = {
        .name = "dispatch.attempt", .status = 200, .duration_us = 60000000, .hold = true};
    streamed.first_byte_us = 1000;
    proto_trace_span(trace, "req-7", parent, &streamed);
    PROTO_CHECK(!*kept && proto_trace_held(trace) == 1);
    proto_trace_finish(trace, "req-7", false);
    PROTO_CHECK(!*kept && proto_trace_held(trace) == 0);
    streamed.first_byte_us = 6000000;
    proto_trace_span(trace, "req-8", parent, &streamed);
    PROTO_CHECK(*kept && proto_msg_latency_us(*kept) == 60000000);
    proto_msg_destroy(kept);
    proto_span_t whole_answer = {
        .name = "dispatch.attempt", .status = 200, .duration_us = 6000000, .hold = true};
    proto_trace_span(trace, "req-9", parent, &whole_answer);
    PROTO_CHECK(*kept);
    proto_msg_destroy(kept);
    trace->slow_us = slow_us;
}

void proto_trace_test(bool verbose)
{
    if (verbose)
        printf(" * proto_trace: ");
    char id[33];
    const char *parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    PROTO_CHECK(strcmp(proto_trace_id(parent, id), "4bf92f3577b34da6a3ce929d0e0e4736") == 0);
    PROTO_CHECK(*proto_trace_id("garbage", id) == '\0');
    PROTO_CHECK(*proto_trace_id(NULL, id) == '\0');

    //  A sender without configuration: no socket, every request sampled.
    proto_trace_t *trace = proto_trace_new(NULL, NULL, "test", "test-1");
    proto_msg_t *kept = NULL;
    proto_trace_set_sink(trace, s_test_sink, &kept);
    proto_span_t span = {.name = "dispatch.attempt",
                         .started_us = 1700000000000000ull,
                         .duration_us = 1234,
                         .status = 500,
                         .attempt = 2,
                         .provider_id = 7,
                         .upstream_model = "gpt-x",
                         .error_code = "upstream_error",
                         .attributes = "{\"url\":\"http://x\"}"};
    proto_trace_span(trace, "", parent, &span); //  no request: nothing
    PROTO_CHECK(!kept);
    uint64_t sent = proto_trace_sent(trace);
    proto_trace_span(trace, "req-1", parent, &span);
    PROTO_CHECK(kept && proto_trace_sent(trace) == sent + 1);
    PROTO_CHECK(proto_msg_type(kept) == PROTO_MSG_SPAN);
    PROTO_CHECK(strcmp(proto_msg_request_id(kept), "req-1") == 0);
    PROTO_CHECK(strcmp(proto_msg_trace(kept), parent) == 0);
    PROTO_CHECK(proto_msg_status(kept) == 500 && proto_msg_attempt(kept) == 2);
    PROTO_CHECK(proto_msg_latency_us(kept) == 1234);
    PROTO_CHECK(!proto_msg_has(kept, PROTO_FIELD_provider_key_id));
    json_t *meta = json_loads(proto_msg_meta(kept), 0, NULL);
    PROTO_CHECK(meta);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(meta, "name")), "dispatch.attempt") == 0);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(meta, "parent_id")), "00f067aa0ba902b7") ==
                0);
    PROTO_CHECK(strlen(json_string_value(json_object_get(meta, "span_id"))) == 16);
    PROTO_CHECK(json_is_object(json_object_get(meta, "attributes")));
    json_decref(meta);
    //  The message survives the wire.
    uint8_t *data = NULL;
    size_t size = 0;
    PROTO_CHECK(proto_msg_encode(kept, &data, &size) == 0);
    proto_msg_t *decoded = NULL;
    PROTO_CHECK(proto_msg_decode(data, size, &decoded) == 0);
    free(data);
    proto_msg_destroy(&decoded);
    proto_msg_destroy(&kept);

    //  Tail sampling: a held span waits for its request's end; a failure
    //  goes at once.
    uint64_t ppm = trace->sample_ppm;
    trace->sample_ppm = 0;
    proto_span_t held = {.name = "ingress.admission", .started_us = 1, .status = 200, .hold = true};
    proto_trace_span(trace, "req-2", parent, &held);
    PROTO_CHECK(!kept && proto_trace_held(trace) >= 1);
    proto_trace_finish(trace, "req-2", true);
    PROTO_CHECK(kept && strcmp(proto_msg_request_id(kept), "req-2") == 0);
    proto_msg_destroy(&kept);
    proto_trace_span(trace, "req-3", parent, &held);
    proto_trace_finish(trace, "req-3", false);
    PROTO_CHECK(!kept);
    //  A held span comes back as it was given, whole.
    proto_span_t whole = span;
    whole.status = 200;
    whole.attempt = 1;
    whole.provider_key_id = 9;
    whole.hold = true;
    proto_trace_span(trace, "req-5", parent, &whole);
    proto_trace_span(trace, "req-5", "", &held);
    PROTO_CHECK(!kept);
    proto_trace_finish(trace, "req-5", true);
    PROTO_CHECK(kept && strcmp(proto_msg_trace(kept), "") == 0); //  the last one sent
    PROTO_CHECK(strstr(proto_msg_meta(kept), "\"ingress.admission\""));
    proto_msg_destroy(&kept);
    proto_msg_t *direct = proto_trace_message(trace, "req-5", parent, &whole);
    proto_trace_span(trace, "req-6", parent, &whole);
    proto_trace_finish(trace, "req-6", true);
    PROTO_CHECK(kept && strcmp(proto_msg_trace(kept), parent) == 0);
    PROTO_CHECK(proto_msg_status(kept) == 200 && proto_msg_attempt(kept) == 1);
    PROTO_CHECK(proto_msg_provider_id(kept) == 7 && proto_msg_provider_key_id(kept) == 9);
    PROTO_CHECK(proto_msg_started_us(kept) == whole.started_us);
    PROTO_CHECK(proto_msg_latency_us(kept) == whole.duration_us);
    PROTO_CHECK(strcmp(proto_msg_upstream_model(kept), "gpt-x") == 0);
    PROTO_CHECK(strcmp(proto_msg_error_code(kept), "upstream_error") == 0);
    //  The same meta but for the random span id.
    const char *a = proto_msg_meta(kept), *b = proto_msg_meta(direct);
    const char *at = strstr(a, "\"span_id\""), *bt = strstr(b, "\"span_id\"");
    PROTO_CHECK(at && bt && at - a == bt - b && strncmp(a, b, (size_t)(at - a)) == 0);
    PROTO_CHECK(strcmp(at + 28, bt + 28) == 0);
    proto_msg_destroy(&direct);
    proto_msg_destroy(&kept);

    //  What a request's held span costs while it waits (every stream in
    //  flight holds one in dispatch, a few in ingress): one allocation
    //  sized to it, not fixed buffers and a list (~0.7 KiB per request
    //  before; mallinfo2 counts nothing under ASan).
    enum { HELD = 1000 };
    const char *route = "{\"candidates\":[{\"provider_id\":1,\"provider_key_id\":1,"
                        "\"upstream_model\":\"mock-slow\"}],\"count\":1}";
    proto_span_t waiting = {.name = "dispatch.route",
                            .started_us = 1,
                            .status = 200,
                            .provider_id = 1,
                            .provider_key_id = 1,
                            .upstream_model = "mock-slow",
                            .attributes = route,
                            .hold = true};
    size_t in_use = mallinfo2().uordblks;
    for (int i = 0; i < HELD; i++) {
        char rid[40];
        snprintf(rid, sizeof rid, "%032x", i);
        proto_trace_span(trace, rid, parent, &waiting);
    }
    size_t grown = mallinfo2().uordblks - in_use;
    if (verbose)
        printf("(%zu bytes per request holding a route span) ", grown / HELD);
    PROTO_CHECK(grown / HELD <= 560);
    for (int i = 0; i < HELD; i++) {
        char rid[40];
        snprintf(rid, sizeof rid, "%032x", i);
        proto_trace_finish(trace, rid, false);
    }
    PROTO_CHECK(!kept);
    proto_span_t plain = {.name = "x", .status = 200};
    proto_trace_span(trace, "req-4", parent, &plain); //  neither held nor interesting: nothing
    PROTO_CHECK(!kept);
    proto_span_t failed = {.name = "x", .status = 502};
    proto_trace_span(trace, "req-4", parent, &failed);
    PROTO_CHECK(kept);
    proto_msg_destroy(&kept);
    s_test_slowness(trace, parent, &kept);
    trace->sample_ppm = ppm;
    proto_trace_destroy(&trace);
    PROTO_CHECK(trace == NULL);
    if (verbose)
        printf("OK\n");
}
