#include "dispatch_settle.h"
#include "proto_log.h"
#include "proto_outbox.h"
#include "proto_socket.h"
#include "proto_batch.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_SETTLE_RESEND_MS 2000
#define S_MAX_ENDPOINTS 64
//  As the ROUTER towards ingress: a SETTLE must never be dropped at the
//  mark, so the mark is high (the outbox re-sends, but only after a while).
#define S_BILLING_SNDHWM 1000000

struct _dispatch_settle_t {
    proto_loop_t *loop;                   //  the program's loop
    zsock_t *router;                      //  towards ingress, for DONEs (borrowed)
    zsock_t *billing[S_MAX_ENDPOINTS];    //  one DEALER per billing instance
    int billing_count;                    //  entries in billing
    proto_outbox_t *outbox;               //  SETTLEs until COMMIT, by account, journaled
    zlistx_t *done_waiting;               //  DONE messages waiting for the journal's write
    bool journal_sync;                    //  dispatch.journal_sync: fdatasync before DONE
    dispatch_settle_commit_fn *on_commit; //  told after each COMMIT
    void *arg;                            //  its argument
};

static void s_billing_message(proto_msg_t **msg_p, void *arg)
{
    dispatch_settle_t *self = arg;
    proto_msg_t *msg = *msg_p;
    if (proto_msg_type(msg) == PROTO_MSG_COMMIT) {
        if (!proto_outbox_ack(self->outbox, proto_msg_request_id(msg)))
            log_debug(proto_msg_request_id(msg), "COMMIT for a settlement not held (a re-send)");
        self->on_commit(self->arg);
    } else
        log_warn(proto_msg_request_id(msg), "billing: unexpected %s dropped",
                 proto_msg_type_name(proto_msg_type(msg)));
}

static void s_billing_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    if (proto_batch_recv(socket, s_billing_message, arg) == -2)
        log_warn(NULL, "billing: dropped a malformed message");
}

//  After each turn's handlers: one write of every SETTLE journaled in this
//  turn (and one fdatasync with dispatch.journal_sync), then the DONEs that
//  waited for it: a client hears "done" only once its usage record would
//  survive a SIGKILL of this process.
static void s_send_waiting(dispatch_settle_t *self)
{
    if (proto_outbox_write(self->outbox) != 0)
        log_error(NULL, "settlement journal: write failed: %s; the records are held in memory",
                  strerror(errno));
    if (zlistx_size(self->done_waiting) == 0)
        return;
    if (self->journal_sync && proto_outbox_sync(self->outbox) != 0)
        //  The record is still held in memory and re-sent; only a crash
        //  of this process before its COMMIT would lose it.
        log_error(NULL, "settlement journal: fdatasync failed: %s; answering anyway",
                  strerror(errno));
    proto_msg_t *done;
    while ((done = zlistx_detach(self->done_waiting, NULL)))
        if (proto_msg_send(&done, self->router) != 0)
            log_warn(NULL, "DONE could not be sent to ingress");
}

static int s_turn(proto_loop_t *loop, void *arg)
{
    s_send_waiting(arg);
    return -1;
}

//  The settlement journal's file: state_dir/dispatch-NAME.settle, NAME the
//  configured instance_id or else a hash of dispatch.bind (stable across
//  restarts; only one process can bind an endpoint, and the file is locked).
static void s_journal_path(proto_config_t *config, const char *state_dir, char *path, size_t size)
{
    const char *instance = proto_config_str(config, "instance_id");
    if (instance && *instance) {
        snprintf(path, size, "%s/dispatch-%s.settle", state_dir, instance);
        return;
    }
    const char *bind = proto_config_str(config, "dispatch.bind");
    uint64_t hash = 1469598103934665603ULL; //  FNV-1a
    for (const char *c = bind; *c; c++)
        hash = (hash ^ (uint8_t)*c) * 1099511628211ULL;
    snprintf(path, size, "%s/dispatch-%016llx.settle", state_dir, (unsigned long long)hash);
}

dispatch_settle_t *dispatch_settle_new(proto_loop_t *loop, proto_config_t *config, zsock_t *router,
                                       dispatch_settle_commit_fn *on_commit, void *arg)
{
    assert(on_commit);
    dispatch_settle_t *self = calloc(1, sizeof *self);
    assert(self);
    self->loop = loop;
    self->router = router;
    self->on_commit = on_commit;
    self->arg = arg;
    //  One DEALER per billing instance, SETTLE picked by account_id % count
    //  as ingress picks for ADMIT (docs/billing.md: sharding).
    const char *endpoints[S_MAX_ENDPOINTS];
    int count = proto_config_endpoints(config, "billing", endpoints, S_MAX_ENDPOINTS);
    if (count < 1) {
        log_error(NULL, "billing.endpoints lists no endpoint");
        goto fail;
    }
    for (int i = 0; i < count; i++) {
        self->billing[i] = proto_socket_new(ZMQ_DEALER);
        if (!self->billing[i])
            goto fail;
        self->billing_count++;
        zsock_set_sndhwm(self->billing[i], S_BILLING_SNDHWM);
        if (proto_socket_connect(self->billing[i], "billing", endpoints[i]) < 0)
            goto fail;
    }
    self->outbox =
        proto_outbox_new_sharded(self->loop, self->billing, (size_t)count, S_SETTLE_RESEND_MS);
    self->done_waiting = zlistx_new();
    const char *state_dir = proto_config_str(config, "state_dir");
    self->journal_sync = proto_config_bool(config, "dispatch.journal_sync");
    if (state_dir && *state_dir) {
        char path[1024];
        char error[512];
        s_journal_path(config, state_dir, path, sizeof path);
        proto_outbox_set_replay_hold(self->outbox,
                                     (uint64_t)proto_config_int(config, "dispatch.replay_hold_ms"));
        proto_outbox_set_synced(self->outbox, self->journal_sync);
        int replayed = proto_outbox_journal(self->outbox, path, error, sizeof error);
        if (replayed < 0) {
            log_error(NULL, "settlement journal: %s", error);
            goto fail;
        }
        log_info(NULL, "settlement journal %s: %d unacknowledged settlement(s) re-sent", path,
                 replayed);
    } else
        log_warn(NULL, "no state_dir: settlements are kept in memory only and a crash of this "
                       "process loses the unacknowledged ones");
    for (int i = 0; i < count; i++)
        proto_loop_add_socket(self->loop, self->billing[i], s_billing_ready, self);
    proto_loop_set_turn(self->loop, s_turn, self);
    return self;
fail:
    dispatch_settle_destroy(&self);
    return NULL;
}

void dispatch_settle_destroy(dispatch_settle_t **self_p)
{
    assert(self_p);
    dispatch_settle_t *self = *self_p;
    if (!self)
        return;
    if (self->done_waiting) {
        s_send_waiting(self);
        zlistx_destroy(&self->done_waiting);
        proto_loop_set_turn(self->loop, NULL, NULL);
    }
    for (int i = 0; i < self->billing_count; i++)
        proto_loop_remove_socket(self->loop, self->billing[i]);
    proto_outbox_destroy(&self->outbox);
    for (int i = 0; i < self->billing_count; i++)
        zsock_destroy(&self->billing[i]);
    free(self);
    *self_p = NULL;
}

int dispatch_settle_send(dispatch_settle_t *self, proto_msg_t **settle_p, uint64_t account_id)
{
    return proto_outbox_send_keyed(self->outbox, settle_p, account_id);
}

int dispatch_settle_keep(dispatch_settle_t *self, proto_msg_t **settle_p, uint64_t account_id)
{
    return proto_outbox_keep_keyed(self->outbox, settle_p, account_id);
}

void dispatch_settle_forget(dispatch_settle_t *self, const char *request_id)
{
    proto_outbox_ack(self->outbox, request_id);
}

bool dispatch_settle_rerun(dispatch_settle_t *self, const char *request_id)
{
    return proto_outbox_hold(self->outbox, request_id);
}

void dispatch_settle_done(dispatch_settle_t *self, proto_msg_t **done_p, const char *request_id)
{
    //  Written (in the kernel's page cache) is all a SIGKILL of this process
    //  needs; with dispatch.journal_sync the record must be on disk too, so
    //  a crash of the whole host loses nothing either, at the price of a
    //  disk flush on the request path.
    if (proto_outbox_unwritten(self->outbox) ||
        (self->journal_sync && proto_outbox_dirty(self->outbox))) {
        zlistx_add_end(self->done_waiting, *done_p);
        *done_p = NULL;
    } else if (proto_msg_send(done_p, self->router) != 0)
        log_warn(request_id, "DONE could not be sent to ingress");
}

size_t dispatch_settle_pending(dispatch_settle_t *self)
{
    return proto_outbox_pending(self->outbox);
}

size_t dispatch_settle_waiting(dispatch_settle_t *self)
{
    return zlistx_size(self->done_waiting);
}

int dispatch_settle_endpoints(dispatch_settle_t *self)
{
    return self->billing_count;
}
