#include "proto_batch.h"
#include "proto_check.h"
#include "proto_log.h"
#include "proto_loop.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define S_PEERS_MAX 256 //  ROUTER peers with a batch of their own

//  The batch of one peer (or of the socket, when it is not a ROUTER).
typedef struct {
    zframe_t *routing_id; //  peer, NULL when not a ROUTER
    zchunk_t *records;    //  encoded messages so far
    size_t items;         //  how many
} s_pending_t;

struct _proto_batch_t {
    proto_loop_t *loop;             //  for the delay timer (borrowed)
    zsock_t *socket;                //  where batches go (borrowed)
    bool router;                    //  a ROUTER: one batch per peer
    size_t max_items;               //  a batch this full leaves at once
    size_t max_bytes;               //  so does one this large
    uint64_t delay_ms;              //  the longest a message waits
    int timer;                      //  pending flush, 0 = none
    s_pending_t peers[S_PEERS_MAX]; //  batches being filled
    size_t peer_count;              //  entries in peers
    size_t held;                    //  messages in all of them
};

static void s_put32(uint8_t *at, uint32_t value)
{
    at[0] = (uint8_t)(value >> 24);
    at[1] = (uint8_t)(value >> 16);
    at[2] = (uint8_t)(value >> 8);
    at[3] = (uint8_t)value;
}

static uint32_t s_get32(const uint8_t *at)
{
    return (uint32_t)at[0] << 24 | (uint32_t)at[1] << 16 | (uint32_t)at[2] << 8 | at[3];
}

proto_batch_t *proto_batch_new(proto_loop_t *loop, zsock_t *socket, size_t max_items,
                               size_t max_bytes, uint64_t delay_ms)
{
    assert(socket && max_items > 0 && delay_ms > 0);
    proto_batch_t *self = calloc(1, sizeof *self);
    assert(self);
    self->loop = loop;
    self->socket = socket;
    self->router = zsock_type(socket) == ZMQ_ROUTER;
    self->max_items = max_items > PROTO_BATCH_ITEMS_MAX ? PROTO_BATCH_ITEMS_MAX : max_items;
    self->max_bytes = max_bytes > PROTO_BATCH_BYTES_MAX ? PROTO_BATCH_BYTES_MAX : max_bytes;
    self->delay_ms = delay_ms;
    return self;
}

void proto_batch_destroy(proto_batch_t **self_p)
{
    assert(self_p);
    proto_batch_t *self = *self_p;
    if (!self)
        return;
    proto_batch_flush(self);
    if (self->timer)
        proto_loop_cancel_timer(self->loop, self->timer);
    for (size_t i = 0; i < self->peer_count; i++) {
        zframe_destroy(&self->peers[i].routing_id);
        zchunk_destroy(&self->peers[i].records);
    }
    free(self);
    *self_p = NULL;
}

//  Sends one peer's batch. A lone message goes as itself (envelope and
//  body frames), not wrapped: at low load batching saves nothing.
static int s_send(proto_batch_t *self, s_pending_t *peer)
{
    if (!peer->items)
        return 0;
    void *handle = zsock_resolve(self->socket);
    int rc = 0;
    if (self->router)
        rc = zmq_send(handle, zframe_data(peer->routing_id), zframe_size(peer->routing_id),
                      ZMQ_SNDMORE | ZMQ_DONTWAIT);
    const uint8_t *records = zchunk_data(peer->records);
    if (peer->items == 1) {
        uint32_t envelope_size = s_get32(records);
        uint32_t body_field = s_get32(records + 4 + envelope_size);
        if (rc >= 0)
            rc = zmq_send(handle, records + 4, envelope_size,
                          ZMQ_DONTWAIT | (body_field ? ZMQ_SNDMORE : 0));
        if (rc >= 0 && body_field)
            rc = zmq_send(handle, records + 8 + envelope_size, body_field - 1, ZMQ_DONTWAIT);
    } else {
        uint8_t *envelope = NULL;
        size_t envelope_size = 0;
        proto_msg_t *batch = proto_msg_new(PROTO_MSG_BATCH);
        proto_msg_encode(batch, &envelope, &envelope_size);
        proto_msg_destroy(&batch);
        if (rc >= 0)
            rc = zmq_send(handle, envelope, envelope_size, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        free(envelope);
        if (rc >= 0)
            rc = zmq_send(handle, records, zchunk_size(peer->records), ZMQ_DONTWAIT);
        proto_msg_count_sent(PROTO_MSG_BATCH, rc >= 0);
    }
    zchunk_set(peer->records, NULL, 0);
    self->held -= peer->items;
    peer->items = 0;
    return rc < 0 ? -1 : 0;
}

int proto_batch_flush(proto_batch_t *self)
{
    int rc = 0;
    for (size_t i = 0; i < self->peer_count; i++)
        if (s_send(self, &self->peers[i]) != 0)
            rc = -1;
    //  Peers come and go on a ROUTER: keep only those with a batch open.
    if (self->router) {
        size_t kept = 0;
        for (size_t i = 0; i < self->peer_count; i++)
            if (self->peers[i].items)
                self->peers[kept++] = self->peers[i];
            else {
                zframe_destroy(&self->peers[i].routing_id);
                zchunk_destroy(&self->peers[i].records);
            }
        self->peer_count = kept;
    }
    return rc;
}

static void s_due(proto_loop_t *loop, int id, void *arg)
{
    proto_batch_t *self = arg;
    self->timer = 0;
    if (proto_batch_flush(self) != 0)
        log_debug(NULL, "a batch could not be sent (no peer, or its queue is full)");
}

static s_pending_t *s_peer(proto_batch_t *self, zframe_t *routing_id)
{
    for (size_t i = 0; i < self->peer_count; i++) {
        s_pending_t *peer = &self->peers[i];
        if (!self->router || zframe_eq(peer->routing_id, routing_id))
            return peer;
    }
    if (self->peer_count == S_PEERS_MAX && proto_batch_flush(self) != 0 &&
        self->peer_count == S_PEERS_MAX)
        return NULL;
    if (self->peer_count == S_PEERS_MAX)
        return NULL;
    s_pending_t *peer = &self->peers[self->peer_count++];
    memset(peer, 0, sizeof *peer);
    peer->routing_id = self->router ? zframe_dup(routing_id) : NULL;
    peer->records = zchunk_new(NULL, 4096);
    return peer;
}

int proto_batch_add_encoded(proto_batch_t *self, zframe_t *routing_id, const void *envelope,
                            size_t envelope_size, const void *body, size_t body_size, bool has_body)
{
    assert(!self->router || routing_id);
    s_pending_t *peer = s_peer(self, routing_id);
    if (!peer)
        return -1;
    //  A message that would push the batch over its size goes after it.
    size_t record = 8 + envelope_size + (has_body ? body_size : 0);
    int rc = 0;
    if (peer->items && zchunk_size(peer->records) + record > self->max_bytes)
        rc = s_send(self, peer);
    uint8_t header[4];
    s_put32(header, (uint32_t)envelope_size);
    zchunk_extend(peer->records, header, 4);
    zchunk_extend(peer->records, envelope, envelope_size);
    s_put32(header, has_body ? (uint32_t)body_size + 1 : 0);
    zchunk_extend(peer->records, header, 4);
    if (has_body && body_size)
        zchunk_extend(peer->records, body, body_size);
    peer->items++;
    self->held++;
    if (peer->items >= self->max_items || zchunk_size(peer->records) >= self->max_bytes)
        rc |= s_send(self, peer);
    else if (!self->timer)
        self->timer = proto_loop_add_timer(self->loop, self->delay_ms, false, s_due, self);
    return rc ? -1 : 0;
}

int proto_batch_add(proto_batch_t *self, proto_msg_t **msg_p)
{
    assert(msg_p && *msg_p);
    proto_msg_t *msg = *msg_p;
    uint8_t *envelope = NULL;
    size_t envelope_size = 0;
    proto_msg_encode(msg, &envelope, &envelope_size);
    zframe_t *body = proto_msg_body(msg);
    int rc = proto_batch_add_encoded(self, proto_msg_routing_id(msg), envelope, envelope_size,
                                     body ? zframe_data(body) : NULL, body ? zframe_size(body) : 0,
                                     body != NULL);
    //  Counted when it joins a batch; the BATCH itself is counted when sent.
    proto_msg_count_sent(proto_msg_type(msg), rc == 0);
    free(envelope);
    proto_msg_destroy(msg_p);
    return rc;
}

size_t proto_batch_pending(proto_batch_t *self)
{
    return self->held;
}

//  --------------------------------------------------------------------------
//  Receiving

static int s_open(const uint8_t *data, size_t size, zframe_t *routing_id, const char *peer,
                  proto_batch_fn *fn, void *arg)
{
    size_t at = 0, items = 0;
    while (at < size) {
        if (++items > PROTO_BATCH_ITEMS_MAX || size - at < 4)
            return -2;
        uint32_t envelope_size = s_get32(data + at);
        at += 4;
        if (envelope_size > size - at || size - at - envelope_size < 4)
            return -2;
        const uint8_t *envelope = data + at;
        at += envelope_size;
        uint32_t body_field = s_get32(data + at);
        at += 4;
        if (body_field && body_field - 1 > size - at)
            return -2;
        proto_msg_t *msg = NULL;
        if (proto_msg_decode(envelope, envelope_size, &msg) != 0 ||
            proto_msg_type(msg) == PROTO_MSG_BATCH) {
            proto_msg_destroy(&msg);
            return -2;
        }
        if (body_field) {
            proto_msg_set_body_bytes(msg, data + at, body_field - 1);
            at += body_field - 1;
        }
        if (routing_id)
            proto_msg_set_routing_id(msg, routing_id);
        proto_msg_set_peer(msg, peer);
        proto_msg_count_received(proto_msg_type(msg));
        fn(&msg, arg);
        proto_msg_destroy(&msg);
    }
    return items ? 0 : -2;
}

int proto_batch_open(const proto_msg_t *batch, proto_batch_fn *fn, void *arg)
{
    zframe_t *body = proto_msg_body(batch);
    if (proto_msg_type(batch) != PROTO_MSG_BATCH || !body)
        return -2;
    return s_open(zframe_data(body), zframe_size(body), proto_msg_routing_id(batch),
                  proto_msg_peer(batch), fn, arg);
}

int proto_batch_recv(zsock_t *socket, proto_batch_fn *fn, void *arg)
{
    proto_msg_t *msg = NULL;
    int rc = proto_msg_recv(&msg, socket);
    if (rc != 0)
        return rc;
    if (proto_msg_type(msg) == PROTO_MSG_BATCH) {
        rc = proto_batch_open(msg, fn, arg);
        if (rc != 0)
            proto_msg_count_received(0); //  malformed
    } else
        fn(&msg, arg);
    proto_msg_destroy(&msg);
    return rc;
}

static void s_enqueue(proto_msg_t **msg_p, void *arg)
{
    zlistx_add_end(arg, *msg_p);
    *msg_p = NULL;
}

int proto_batch_recv_one(zsock_t *socket, zlistx_t *queue, proto_msg_t **msg_p)
{
    *msg_p = NULL;
    if (!zlistx_size(queue)) {
        int rc = proto_batch_recv(socket, s_enqueue, queue);
        if (rc != 0 && !zlistx_size(queue))
            return rc;
    }
    *msg_p = zlistx_detach(queue, NULL);
    return *msg_p ? 0 : -1;
}

//  --------------------------------------------------------------------------
//  Self test

typedef struct {
    size_t count;         //  messages handed on
    char last[64];        //  request id of the last
    bool bodies_ok;       //  every body was "body-<id>" or absent as sent
    zframe_t *routing_id; //  of the last, when any
} s_test_seen_t;

static void s_test_take(proto_msg_t **msg_p, void *arg)
{
    s_test_seen_t *seen = arg;
    proto_msg_t *msg = *msg_p;
    seen->count++;
    snprintf(seen->last, sizeof seen->last, "%s", proto_msg_request_id(msg));
    zframe_t *body = proto_msg_body(msg);
    char expected[80];
    snprintf(expected, sizeof expected, "body-%s", proto_msg_request_id(msg));
    bool odd = strtoul(proto_msg_request_id(msg) + 1, NULL, 10) % 2;
    if (odd ? body != NULL
            : !body || zframe_size(body) != strlen(expected) ||
                  memcmp(zframe_data(body), expected, strlen(expected)) != 0)
        seen->bodies_ok = false;
    zframe_destroy(&seen->routing_id);
    if (proto_msg_routing_id(msg))
        seen->routing_id = zframe_dup(proto_msg_routing_id(msg));
}

static proto_msg_t *s_test_msg(int n)
{
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_SETTLE);
    char rid[32];
    snprintf(rid, sizeof rid, "r%d", n);
    proto_msg_set_request_id(msg, rid);
    proto_msg_set_account_id(msg, 7);
    proto_msg_set_key_id(msg, 8);
    proto_msg_set_model(msg, "m");
    proto_msg_set_status(msg, 200);
    proto_msg_set_started_us(msg, 1);
    if (n % 2 == 0) {
        char body[80];
        snprintf(body, sizeof body, "body-%s", rid);
        proto_msg_set_body_bytes(msg, body, strlen(body));
    }
    return msg;
}

static void s_test_stop(proto_loop_t *loop, int id, void *arg)
{
    proto_loop_stop(loop);
}

//  Receives everything waiting on socket into seen; returns ZeroMQ messages read.
static int s_test_drain(zsock_t *socket, s_test_seen_t *seen)
{
    int wire = 0;
    while (proto_loop_events(socket) & ZMQ_POLLIN) {
        PROTO_CHECK(proto_batch_recv(socket, s_test_take, seen) == 0);
        wire++;
    }
    return wire;
}

//  Malformed batches are refused whole, and random bytes never crash the reader.
static void s_test_malformed(void)
{
    s_test_seen_t seen = {0};
    //  Malformed bodies: truncated, lying lengths, a BATCH inside a BATCH.
    const uint8_t bad[][12] = {{0, 0, 0, 9, 1, 2}, {0xff, 0xff, 0xff, 0xff}, {0, 0, 0, 0}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        proto_msg_t *msg = proto_msg_new(PROTO_MSG_BATCH);
        proto_msg_set_body_bytes(msg, bad[i], 6);
        seen = (s_test_seen_t){0};
        PROTO_CHECK(proto_batch_open(msg, s_test_take, &seen) == -2 && seen.count == 0);
        proto_msg_destroy(&msg);
    }
    {
        proto_msg_t *inner = proto_msg_new(PROTO_MSG_BATCH);
        uint8_t *envelope;
        size_t size;
        proto_msg_encode(inner, &envelope, &size);
        proto_msg_destroy(&inner);
        uint8_t record[256];
        s_put32(record, (uint32_t)size);
        memcpy(record + 4, envelope, size);
        s_put32(record + 4 + size, 0);
        free(envelope);
        proto_msg_t *msg = proto_msg_new(PROTO_MSG_BATCH);
        proto_msg_set_body_bytes(msg, record, 8 + size);
        PROTO_CHECK(proto_batch_open(msg, s_test_take, &seen) == -2);
        proto_msg_destroy(&msg);
    }
    //  Random bytes never crash the reader.
    for (int round = 0; round < 20000; round++) {
        uint8_t noise[64];
        size_t size = (size_t)(random() % (long)sizeof noise);
        for (size_t i = 0; i < size; i++)
            noise[i] = (uint8_t)random();
        if (size >= 4 && round % 2)
            s_put32(noise, (uint32_t)(random() % 64));
        s_open(noise, size, NULL, "", s_test_take, &seen);
    }
    zframe_destroy(&seen.routing_id);
}

void proto_batch_test(bool verbose)
{
    if (verbose)
        printf(" * proto_batch: ");
    proto_loop_t *loop = proto_loop_new();
    zsock_t *pull = zsock_new_pull("inproc://proto-batch-test");
    zsock_t *push = zsock_new_push("inproc://proto-batch-test");
    PROTO_CHECK(pull && push);

    //  By count: 10 messages with max_items 4 make 2 full batches now, and
    //  2 messages wait for the delay.
    proto_batch_t *batch = proto_batch_new(loop, push, 4, 1 << 20, 20);
    for (int i = 0; i < 10; i++) {
        proto_msg_t *msg = s_test_msg(i);
        PROTO_CHECK(proto_batch_add(batch, &msg) == 0);
        PROTO_CHECK(!msg);
    }
    PROTO_CHECK(proto_batch_pending(batch) == 2);
    s_test_seen_t seen = {.bodies_ok = true};
    zclock_sleep(5);
    PROTO_CHECK(s_test_drain(pull, &seen) == 2);
    PROTO_CHECK(seen.count == 8 && seen.bodies_ok && strcmp(seen.last, "r7") == 0);
    //  By time: the loop's timer sends the rest.
    proto_loop_add_timer(loop, 60, false, s_test_stop, NULL);
    proto_loop_run(loop);
    PROTO_CHECK(proto_batch_pending(batch) == 0);
    PROTO_CHECK(s_test_drain(pull, &seen) == 1);
    PROTO_CHECK(seen.count == 10 && seen.bodies_ok && strcmp(seen.last, "r9") == 0);
    proto_batch_destroy(&batch);

    //  By size: 1 KiB bodies, 4 KiB batches.
    batch = proto_batch_new(loop, push, 100, 4096, 1000);
    char big[1024];
    memset(big, 'x', sizeof big);
    for (int i = 0; i < 8; i++) {
        proto_msg_t *msg = s_test_msg(1);
        proto_msg_set_body_bytes(msg, big, sizeof big);
        proto_batch_add(batch, &msg);
    }
    proto_batch_destroy(&batch); //  flushes what is left
    zclock_sleep(5);
    seen = (s_test_seen_t){.bodies_ok = true};
    int wire = s_test_drain(pull, &seen);
    PROTO_CHECK(seen.count == 8 && wire >= 2 && wire <= 4);

    //  A plain message is handed on as itself, and so is a batch of one.
    proto_msg_t *single = s_test_msg(2);
    proto_msg_send(&single, push);
    batch = proto_batch_new(loop, push, 10, 1 << 20, 1000);
    single = s_test_msg(4);
    proto_batch_add(batch, &single);
    proto_batch_destroy(&batch);
    zclock_sleep(5);
    {
        proto_msg_t *plain = NULL;
        proto_msg_t *first = NULL;
        PROTO_CHECK(proto_msg_recv(&first, pull) == 0 && proto_msg_type(first) == PROTO_MSG_SETTLE);
        PROTO_CHECK(proto_msg_recv(&plain, pull) == 0 && proto_msg_type(plain) == PROTO_MSG_SETTLE);
        PROTO_CHECK(zframe_size(proto_msg_body(plain)) == strlen("body-r4"));
        proto_msg_destroy(&first);
        proto_msg_destroy(&plain);
    }
    single = s_test_msg(2);
    proto_msg_send(&single, push);
    zclock_sleep(5);
    seen = (s_test_seen_t){.bodies_ok = true};
    PROTO_CHECK(s_test_drain(pull, &seen) == 1 && seen.count == 1 && seen.bodies_ok);

    s_test_malformed();

    //  A ROUTER keeps one batch per peer, and each reaches its own peer.
    zsock_t *server = zsock_new_router("inproc://proto-batch-router");
    zsock_t *peer_a = zsock_new_dealer("inproc://proto-batch-router");
    zsock_t *peer_b = zsock_new_dealer("inproc://proto-batch-router");
    zframe_t *ids[2] = {NULL, NULL};
    zsock_t *peers[2] = {peer_a, peer_b};
    for (int i = 0; i < 2; i++) {
        proto_msg_t *hello = s_test_msg(i);
        proto_msg_send(&hello, peers[i]);
        proto_msg_t *got = NULL;
        zsock_set_rcvtimeo(server, 1000);
        while (proto_msg_recv(&got, server) == -1)
            ;
        ids[i] = zframe_dup(proto_msg_routing_id(got));
        proto_msg_destroy(&got);
    }
    batch = proto_batch_new(loop, server, 100, 1 << 20, 1000);
    for (int i = 0; i < 6; i++) {
        proto_msg_t *msg = s_test_msg(i);
        proto_msg_set_routing_id(msg, ids[i % 2]);
        proto_batch_add(batch, &msg);
    }
    PROTO_CHECK(proto_batch_flush(batch) == 0);
    zclock_sleep(5);
    for (int i = 0; i < 2; i++) {
        seen = (s_test_seen_t){.bodies_ok = true};
        PROTO_CHECK(s_test_drain(peers[i], &seen) == 1);
        PROTO_CHECK(seen.count == 3 && seen.bodies_ok);
        PROTO_CHECK(strcmp(seen.last, i ? "r5" : "r4") == 0);
        zframe_destroy(&seen.routing_id);
    }
    //  Received on the ROUTER, a batch's messages carry its routing id.
    proto_batch_t *client = proto_batch_new(loop, peer_b, 10, 1 << 20, 1000);
    for (int i = 0; i < 3; i++) {
        proto_msg_t *msg = s_test_msg(i);
        proto_batch_add(client, &msg);
    }
    proto_batch_destroy(&client);
    zclock_sleep(5);
    seen = (s_test_seen_t){.bodies_ok = true};
    PROTO_CHECK(s_test_drain(server, &seen) == 1 && seen.count == 3);
    PROTO_CHECK(seen.routing_id && zframe_eq(seen.routing_id, ids[1]));
    zframe_destroy(&seen.routing_id);
    proto_batch_destroy(&batch);
    zframe_destroy(&ids[0]);
    zframe_destroy(&ids[1]);
    zsock_destroy(&peer_a);
    zsock_destroy(&peer_b);
    zsock_destroy(&server);
    zsock_destroy(&push);
    zsock_destroy(&pull);
    proto_loop_destroy(&loop);
    if (verbose)
        printf("OK\n");
}
