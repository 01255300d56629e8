#include "proto_outbox.h"
#include "proto_log.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    zframe_t *envelope;  //  encoded envelope, kept for re-sending
    zframe_t *body;      //  body frame, or NULL
    uint64_t sent_ms;    //  last time it went out
} s_entry_t;

struct _proto_outbox_t {
    proto_loop_t *loop;  //  for the re-send timer
    zsock_t *socket;     //  where messages go
    uint64_t resend_ms;  //  re-send period
    zhashx_t *entries;   //  request id -> s_entry_t*
    int timer;           //  re-send timer id
};

static void s_entry_destroy(void **item)
{
    s_entry_t *entry = *item;
    if (!entry)
        return;
    zframe_destroy(&entry->envelope);
    zframe_destroy(&entry->body);
    free(entry);
    *item = NULL;
}

static int s_transmit(proto_outbox_t *self, s_entry_t *entry)
{
    entry->sent_ms = proto_loop_now_ms();
    //  ZFRAME_REUSE keeps our copy; the socket gets its own.
    int rc = zframe_send(&entry->envelope, self->socket,
                         ZFRAME_REUSE | ZFRAME_DONTWAIT | (entry->body ? ZFRAME_MORE : 0));
    if (rc == 0 && entry->body)
        rc = zframe_send(&entry->body, self->socket, ZFRAME_REUSE | ZFRAME_DONTWAIT);
    return rc;
}

static void s_resend(proto_loop_t *loop, int id, void *arg)
{
    proto_outbox_t *self = arg;
    uint64_t now = proto_loop_now_ms();
    for (s_entry_t *entry = zhashx_first(self->entries); entry;
         entry = zhashx_next(self->entries))
        if (now - entry->sent_ms >= self->resend_ms)
            s_transmit(self, entry);
}

proto_outbox_t *proto_outbox_new(proto_loop_t *loop, zsock_t *socket, uint64_t resend_ms)
{
    proto_outbox_t *self = calloc(1, sizeof *self);
    assert(self);
    self->loop = loop;
    self->socket = socket;
    self->resend_ms = resend_ms;
    self->entries = zhashx_new();
    zhashx_set_destructor(self->entries, s_entry_destroy);
    uint64_t tick = resend_ms / 4 ? resend_ms / 4 : 1;
    self->timer = proto_loop_add_timer(loop, tick, true, s_resend, self);
    return self;
}

void proto_outbox_destroy(proto_outbox_t **self_p)
{
    assert(self_p);
    proto_outbox_t *self = *self_p;
    if (!self)
        return;
    proto_loop_cancel_timer(self->loop, self->timer);
    zhashx_destroy(&self->entries);
    free(self);
    *self_p = NULL;
}

int proto_outbox_send(proto_outbox_t *self, proto_msg_t **msg_p)
{
    proto_msg_t *msg = *msg_p;
    *msg_p = NULL;
    if (zhashx_size(self->entries) >= PROTO_OUTBOX_MAX) {
        proto_msg_destroy(&msg);
        return -1;
    }
    uint8_t *data;
    size_t size;
    proto_msg_encode(msg, &data, &size);
    s_entry_t *entry = calloc(1, sizeof *entry);
    assert(entry);
    entry->envelope = zframe_new(data, size);
    free(data);
    entry->body = proto_msg_take_body(msg);
    zhashx_update(self->entries, proto_msg_request_id(msg), entry);
    proto_msg_destroy(&msg);
    s_transmit(self, entry);
    return 0;
}

bool proto_outbox_ack(proto_outbox_t *self, const char *request_id)
{
    if (!zhashx_lookup(self->entries, request_id))
        return false;
    zhashx_delete(self->entries, request_id);
    return true;
}

size_t proto_outbox_pending(proto_outbox_t *self)
{
    return zhashx_size(self->entries);
}

//  --------------------------------------------------------------------------
//  Self test: an unacknowledged message comes again; an acknowledged one not.

typedef struct {
    int received; //  messages seen by the receiver
} s_test_t;

static void s_test_receive(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    s_test_t *test = arg;
    proto_msg_t *msg = NULL;
    if (proto_msg_recv(&msg, socket) == 0) {
        test->received++;
        assert(strcmp(proto_msg_request_id(msg), "r1") == 0);
        assert(zframe_size(proto_msg_body(msg)) == 4);
    }
    proto_msg_destroy(&msg);
    if (test->received == 3)
        proto_loop_stop(loop);
}

static void s_test_stop(proto_loop_t *loop, int id, void *arg)
{
    proto_loop_stop(loop);
}

void proto_outbox_test(bool verbose)
{
    if (verbose)
        printf(" * proto_outbox: ");
    proto_loop_t *loop = proto_loop_new();
    zsock_t *receiver = zsock_new_router("inproc://proto_outbox_test");
    zsock_t *sender = zsock_new_dealer("inproc://proto_outbox_test");
    s_test_t test = {0};
    proto_loop_add_socket(loop, receiver, s_test_receive, &test);
    proto_outbox_t *outbox = proto_outbox_new(loop, sender, 10);
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_SETTLE);
    proto_msg_set_request_id(msg, "r1");
    proto_msg_set_account_id(msg, 1);
    proto_msg_set_key_id(msg, 1);
    proto_msg_set_model(msg, "m");
    proto_msg_set_status(msg, 200);
    proto_msg_set_started_us(msg, 1);
    proto_msg_set_body_bytes(msg, "body", 4);
    assert(proto_outbox_send(outbox, &msg) == 0);
    assert(msg == NULL);
    assert(proto_outbox_pending(outbox) == 1);
    proto_loop_run(loop); //  stops after the third delivery
    assert(test.received == 3);
    assert(proto_outbox_ack(outbox, "r1"));
    assert(!proto_outbox_ack(outbox, "r1"));
    assert(proto_outbox_pending(outbox) == 0);
    proto_loop_add_timer(loop, 50, false, s_test_stop, NULL);
    proto_loop_run(loop);
    assert(test.received == 3); //  nothing after the ack
    proto_outbox_destroy(&outbox);
    zsock_destroy(&sender);
    zsock_destroy(&receiver);
    proto_loop_destroy(&loop);
    if (verbose)
        printf("OK\n");
}
