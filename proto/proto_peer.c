#include "proto_peer.h"
#include "proto_check.h"
#include "proto_batch.h"
#include "proto_socket.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct _proto_peer_t {
    proto_loop_t *loop;   //  the test's loop (borrowed)
    zsock_t *socket;      //  our end
    zlistx_t *received;   //  proto_msg_t * not taken yet
    size_t count;         //  messages received
    size_t malformed;     //  messages that would not decode
    int want_type;        //  what the current wait waits for, -1 when none
    const char *want_rid; //  and its request id, or NULL
    bool timed_out;       //  the current wait's timer fired
};

static bool s_matches(proto_peer_t *self, const proto_msg_t *msg)
{
    return (int)proto_msg_type(msg) == self->want_type &&
           (!self->want_rid || strcmp(proto_msg_request_id(msg), self->want_rid) == 0);
}

static void s_take(proto_msg_t **msg_p, void *arg)
{
    proto_peer_t *self = arg;
    self->count++;
    proto_msg_t *msg = *msg_p;
    *msg_p = NULL;
    zlistx_add_end(self->received, msg);
    if (self->want_type >= 0 && s_matches(self, msg))
        proto_loop_stop(self->loop);
}

static void s_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    proto_peer_t *self = arg;
    if (proto_batch_recv(socket, s_take, self) == -2)
        self->malformed++;
}

proto_peer_t *proto_peer_new(proto_loop_t *loop, int type, const char *endpoint, bool bind)
{
    zsock_t *socket = proto_socket_new(type);
    if (!socket)
        return NULL;
    int rc =
        bind ? proto_socket_bind(socket, endpoint) : proto_socket_connect(socket, "test", endpoint);
    if (rc < 0) {
        zsock_destroy(&socket);
        return NULL;
    }
    if (type == ZMQ_SUB)
        zsock_set_subscribe(socket, "");
    proto_peer_t *self = calloc(1, sizeof *self);
    assert(self);
    self->loop = loop;
    self->socket = socket;
    self->received = zlistx_new();
    self->want_type = -1;
    proto_loop_add_socket(loop, socket, s_ready, self);
    return self;
}

void proto_peer_destroy(proto_peer_t **self_p)
{
    assert(self_p);
    proto_peer_t *self = *self_p;
    if (!self)
        return;
    proto_loop_remove_socket(self->loop, self->socket);
    zsock_destroy(&self->socket);
    proto_msg_t *msg;
    while ((msg = zlistx_detach(self->received, NULL)))
        proto_msg_destroy(&msg);
    zlistx_destroy(&self->received);
    free(self);
    *self_p = NULL;
}

int proto_peer_send(proto_peer_t *self, proto_msg_t **msg_p)
{
    return proto_msg_send(msg_p, self->socket);
}

//  Detaches the first received message the current wait matches.
static proto_msg_t *s_find(proto_peer_t *self)
{
    for (void *handle = zlistx_first(self->received) ? zlistx_cursor(self->received) : NULL; handle;
         handle = zlistx_next(self->received) ? zlistx_cursor(self->received) : NULL) {
        proto_msg_t *msg = zlistx_handle_item(handle);
        if (s_matches(self, msg))
            return zlistx_detach(self->received, handle);
    }
    return NULL;
}

static void s_timeout(proto_loop_t *loop, int id, void *arg)
{
    proto_peer_t *self = arg;
    self->timed_out = true;
    proto_loop_stop(loop);
}

proto_msg_t *proto_peer_wait(proto_peer_t *self, int type, const char *rid, uint64_t timeout_ms)
{
    self->want_type = type;
    self->want_rid = rid;
    self->timed_out = false;
    proto_msg_t *found = s_find(self);
    int timer = found ? 0 : proto_loop_add_timer(self->loop, timeout_ms, false, s_timeout, self);
    //  The loop also stops for other reasons (a server that drained); run
    //  it again until our message or our timer.
    while (!found && !self->timed_out) {
        proto_loop_run(self->loop);
        found = s_find(self);
    }
    if (timer && !self->timed_out)
        proto_loop_cancel_timer(self->loop, timer);
    self->want_type = -1;
    self->want_rid = NULL;
    return found;
}

size_t proto_peer_idle(proto_peer_t *self, int type, uint64_t ms)
{
    size_t before = 0;
    for (proto_msg_t *msg = zlistx_first(self->received); msg; msg = zlistx_next(self->received))
        before += (int)proto_msg_type(msg) == type;
    self->timed_out = false;
    int timer = proto_loop_add_timer(self->loop, ms, false, s_timeout, self);
    while (!self->timed_out)
        proto_loop_run(self->loop);
    (void)timer;
    size_t after = 0;
    for (proto_msg_t *msg = zlistx_first(self->received); msg; msg = zlistx_next(self->received))
        after += (int)proto_msg_type(msg) == type;
    return after - before;
}

size_t proto_peer_pending(proto_peer_t *self)
{
    return zlistx_size(self->received);
}

size_t proto_peer_received(proto_peer_t *self)
{
    return self->count;
}

size_t proto_peer_malformed(proto_peer_t *self)
{
    return self->malformed;
}

zsock_t *proto_peer_socket(proto_peer_t *self)
{
    return self->socket;
}

proto_service_t *proto_peer_service_new(const char *name, const char *catalog_json,
                                        const char *const *settings, char *error, size_t error_size)
{
    char path[] = "/tmp/tollgate-catalog-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        snprintf(error, error_size, "cannot make a catalog file");
        return NULL;
    }
    size_t length = strlen(catalog_json);
    bool written = write(fd, catalog_json, length) == (ssize_t)length;
    close(fd);
    proto_config_t *config = proto_config_new();
    const char *base[] = {"security",
                          "none",
                          "database_url",
                          "postgresql:///none?host=/nonexistent",
                          "db_connect_attempts",
                          "1",
                          "log_level_watch",
                          "false",
                          "catalog_file",
                          path,
                          NULL};
    int rc = written ? 0 : -1;
    for (int i = 0; rc == 0 && base[i]; i += 2)
        rc = proto_config_set(config, base[i], base[i + 1], "test", error, error_size);
    for (int i = 0; rc == 0 && settings && settings[i]; i += 2)
        rc = proto_config_set(config, settings[i], settings[i + 1], "test", error, error_size);
    proto_service_t *service =
        rc == 0 ? proto_service_new_test(name, &config, error, error_size) : NULL;
    if (!service) {
        unlink(path);
        proto_config_destroy(&config);
    }
    return service;
}

void proto_peer_service_destroy(proto_service_t **service_p)
{
    assert(service_p);
    if (!*service_p)
        return;
    unlink(proto_config_str(proto_service_config(*service_p), "catalog_file"));
    proto_service_destroy(service_p);
}

//  --------------------------------------------------------------------------
//  Self test

void proto_peer_test(bool verbose)
{
    if (verbose)
        printf(" * proto_peer: ");
    char error[256];
    PROTO_CHECK(proto_socket_init_with("none", "", "test", -1, error, sizeof error) == 0);
    proto_loop_t *loop = proto_loop_new();
    proto_peer_t *server = proto_peer_new(loop, ZMQ_ROUTER, "inproc://proto-peer-test", true);
    proto_peer_t *client = proto_peer_new(loop, ZMQ_DEALER, "inproc://proto-peer-test", false);
    PROTO_CHECK(server && client);

    proto_msg_t *ping = proto_msg_new(PROTO_MSG_PING);
    proto_msg_set_request_id(ping, "one");
    PROTO_CHECK(proto_peer_send(client, &ping) == 0);
    proto_msg_t *got = proto_peer_wait(server, PROTO_MSG_PING, "one", 2000);
    PROTO_CHECK(got && strcmp(proto_msg_request_id(got), "one") == 0);
    //  The answer goes back by the routing id the ROUTER read.
    proto_msg_t *pong = proto_msg_reply(got, PROTO_MSG_PONG);
    proto_msg_set_instance(pong, "peer");
    proto_msg_destroy(&got);
    PROTO_CHECK(proto_peer_send(server, &pong) == 0);
    got = proto_peer_wait(client, PROTO_MSG_PONG, NULL, 2000);
    PROTO_CHECK(got && strcmp(proto_msg_request_id(got), "one") == 0);
    proto_msg_destroy(&got);

    //  Messages that do not match stay for a later wait; a timeout is NULL.
    for (int i = 0; i < 3; i++) {
        proto_msg_t *msg = proto_msg_new(PROTO_MSG_PING);
        proto_msg_set_request_id(msg, i == 2 ? "three" : "other");
        PROTO_CHECK(proto_peer_send(client, &msg) == 0);
    }
    got = proto_peer_wait(server, PROTO_MSG_PING, "three", 2000);
    PROTO_CHECK(got);
    proto_msg_destroy(&got);
    PROTO_CHECK(proto_peer_pending(server) == 2 && proto_peer_received(server) == 4);
    PROTO_CHECK(!proto_peer_wait(server, PROTO_MSG_PONG, NULL, 20));
    PROTO_CHECK(proto_peer_idle(server, PROTO_MSG_PING, 20) == 0);
    PROTO_CHECK(proto_peer_malformed(server) == 0);

    proto_peer_destroy(&client);
    proto_peer_destroy(&server);
    PROTO_CHECK(!server);
    proto_loop_destroy(&loop);
    proto_socket_shutdown();
    if (verbose)
        printf("OK\n");
}
