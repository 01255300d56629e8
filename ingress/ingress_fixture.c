//  ingress_fixture: see the header.
#include "ingress_fixture.h"
#include "ingress_server_private.h"
#include "proto_batch.h"
#include "proto_check.h"
#include "proto_socket.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

bool ingress_fixture_all_ended(ingress_fixture_t *test)
{
    for (int i = 0; i < test->client_count; i++)
        if (!test->clients[i].ended)
            return false;
    return true;
}

bool ingress_fixture_all_streaming(ingress_fixture_t *test)
{
    for (int i = 0; i < test->client_count; i++)
        if (!strstr(test->clients[i].data, "data: first"))
            return false;
    return true;
}

bool ingress_fixture_all_cancelled(ingress_fixture_t *test)
{
    return test->cancels == test->client_count;
}

static void s_check(ingress_fixture_t *test)
{
    if (test->until && test->until(test))
        proto_loop_stop(test->loop);
}

static void s_client_ready(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    ingress_fixture_client_t *client = arg;
    ssize_t got = read(fd, client->data + client->size, sizeof client->data - 1 - client->size);
    if (got > 0) {
        client->size += (size_t)got;
        client->data[client->size] = '\0';
    } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
        client->ended = true;
        proto_loop_remove_fd(loop, fd);
    }
    s_check(client->test);
}

ingress_fixture_client_t *ingress_fixture_send(ingress_fixture_t *test, const char *request)
{
    PROTO_CHECK(test->client_count < INGRESS_FIXTURE_CLIENTS);
    ingress_fixture_client_t *client = &test->clients[test->client_count++];
    *client = (ingress_fixture_client_t){.test = test};
    client->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)test->port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    PROTO_CHECK(connect(client->fd, (struct sockaddr *)&to, sizeof to) == 0);
    PROTO_CHECK(write(client->fd, request, strlen(request)) == (ssize_t)strlen(request));
    proto_loop_add_fd(test->loop, client->fd, EPOLLIN, s_client_ready, client);
    return client;
}

void ingress_fixture_reset(ingress_fixture_t *test)
{
    for (int i = 0; i < test->client_count; i++) {
        if (!test->clients[i].ended)
            proto_loop_remove_fd(test->loop, test->clients[i].fd);
        close(test->clients[i].fd);
    }
    test->client_count = 0;
    test->admits = test->dispatches = test->cancels = test->settles = 0;
}

static void s_timeout(proto_loop_t *loop, int id, void *arg)
{
    fprintf(stderr, "ingress_fixture: step timed out\n");
    PROTO_CHECK(false);
}

//  Some conditions change inside the server, out of the test's sight (a
//  COMMIT it reads from billing): look at them again every few ms too.
static void s_recheck(proto_loop_t *loop, int id, void *arg)
{
    s_check(arg);
}

void ingress_fixture_run(ingress_fixture_t *test, bool (*until)(ingress_fixture_t *))
{
    test->until = until;
    if (until(test))
        return;
    int guard = proto_loop_add_timer(test->loop, 10000, false, s_timeout, test);
    int recheck = proto_loop_add_timer(test->loop, 5, true, s_recheck, test);
    proto_loop_run(test->loop);
    proto_loop_cancel_timer(test->loop, recheck);
    proto_loop_cancel_timer(test->loop, guard);
}

//  One client, one request, until the server closes the connection.
ingress_fixture_client_t *ingress_fixture_request(ingress_fixture_t *test, const char *request)
{
    ingress_fixture_reset(test);
    ingress_fixture_client_t *client = ingress_fixture_send(test, request);
    ingress_fixture_run(test, ingress_fixture_all_ended);
    return client;
}

char *ingress_fixture_chat(const char *extra_headers, const char *body, char *out, size_t size)
{
    snprintf(out, size,
             "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
             "Authorization: Bearer tg-test\r\nContent-Type: application/json\r\n%s"
             "Content-Length: %zu\r\n\r\n%s",
             extra_headers, strlen(body), body);
    return out;
}

static void s_billing_message(proto_msg_t **msg_p, void *arg)
{
    ingress_fixture_t *test = arg;
    proto_msg_t *msg = *msg_p;
    zsock_t *socket = test->billing;
    if (proto_msg_type(msg) == PROTO_MSG_ADMIT) {
        test->admits++;
        PROTO_CHECK(proto_msg_key_id(msg) == 7 && proto_msg_account_id(msg) == 3);
        PROTO_CHECK(strlen(proto_msg_trace(msg)) == 55 && proto_msg_deadline(msg) > 0);
        if (!test->billing_silent) {
            proto_msg_t *reply = proto_msg_reply(msg, PROTO_MSG_ADMIT_REPLY);
            proto_msg_set_status(reply, (uint64_t)test->admit_status);
            proto_msg_set_reserve_micros(reply, 1234);
            if (test->admit_status == 429) {
                proto_msg_set_error_code(reply, "rate_limited");
                proto_msg_set_error_message(reply, "Too many requests");
                proto_msg_set_retry_after_ms(reply, 1500);
            }
            proto_msg_send(&reply, socket);
        }
    } else if (proto_msg_type(msg) == PROTO_MSG_SETTLE) {
        test->settles++;
        PROTO_CHECK(proto_msg_tokens_out(msg) == 0 && proto_msg_reserve_micros(msg) == 1234);
        proto_msg_t *reply = proto_msg_reply(msg, PROTO_MSG_COMMIT);
        proto_msg_send(&reply, socket);
    }
}

static void s_billing(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    //  -1: nothing waits (the loop may call again to find out).
    PROTO_CHECK(proto_batch_recv(socket, s_billing_message, arg) != -2);
    s_check(arg);
}

void ingress_fixture_dispatch_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    ingress_fixture_t *test = arg;
    proto_msg_t *msg = NULL;
    int rc = proto_msg_recv(&msg, socket);
    PROTO_CHECK(rc != -2);
    if (rc != 0)
        return; //  nothing waits (the loop may call again to find out)
    if (proto_msg_type(msg) == PROTO_MSG_CANCEL) {
        test->cancels++;
        proto_msg_destroy(&msg);
        s_check(test);
        return;
    }
    PROTO_CHECK(proto_msg_type(msg) == PROTO_MSG_DISPATCH);
    test->dispatches++;
    zframe_t *body = proto_msg_body(msg);
    test->dispatch_ok = !proto_msg_has(msg, PROTO_FIELD_candidates) &&
                        proto_msg_reserve_micros(msg) == 1234 && body &&
                        proto_msg_account_id(msg) == 3 && proto_msg_deadline(msg) > 0;
    snprintf(test->dispatch_body, sizeof test->dispatch_body, "%.*s",
             body ? (int)zframe_size(body) : 0, body ? (char *)zframe_data(body) : "");
    snprintf(test->dispatch_model, sizeof test->dispatch_model, "%s", proto_msg_model(msg));
    snprintf(test->dispatch_meta, sizeof test->dispatch_meta, "%s",
             proto_msg_has(msg, PROTO_FIELD_meta) ? proto_msg_meta(msg) : "");
    test->dispatch_stream = proto_msg_stream(msg);
    test->dispatch_protocol = (int)proto_msg_client_protocol(msg);
    test->dispatch_link[0] = proto_msg_link(msg);
    test->dispatch_link[1] = proto_msg_link_sequence(msg);
    test->dispatch_attempt = proto_msg_attempt(msg);
    if (test->dispatch_status != 200) {
        //  Dispatch found no candidate: its own error, settled by itself.
        proto_msg_t *done = proto_msg_reply(msg, PROTO_MSG_DONE);
        proto_msg_set_status(done, (uint64_t)test->dispatch_status);
        proto_msg_set_error_code(done, test->dispatch_code ? test->dispatch_code : "no_provider");
        proto_msg_set_error_message(done, "No provider is available for model 'm'.");
        proto_msg_send(&done, socket);
    } else if (test->mode == INGRESS_FIXTURE_HOLD) {
        //  The answer never comes: only a hang-up or the timeout ends it.
    } else if (test->mode == INGRESS_FIXTURE_DONE_WHOLE) {
        proto_msg_t *done = proto_msg_reply(msg, PROTO_MSG_DONE);
        proto_msg_set_status(done, 200);
        proto_msg_set_latency_us(done, 1000);
        proto_msg_set_body_bytes(done, "{\"answer\":42}", 13);
        //  Kept to be sent again: numbered on link 7.
        proto_msg_set_link(done, 7);
        proto_msg_set_link_sequence(done, ++test->dones_numbered);
        proto_msg_send(&done, socket);
    } else {
        proto_msg_t *chunk = proto_msg_reply(msg, PROTO_MSG_CHUNK);
        proto_msg_set_sequence(chunk, 0);
        proto_msg_set_status(chunk, 200);
        proto_msg_set_content_type(chunk, "text/event-stream");
        proto_msg_set_ttfb_us(chunk, 500);
        proto_msg_set_body_bytes(chunk, "data: first\n\n", 13);
        proto_msg_send(&chunk, socket);
        if (test->mode == INGRESS_FIXTURE_STREAM_DONE) {
            chunk = proto_msg_reply(msg, PROTO_MSG_CHUNK);
            proto_msg_set_sequence(chunk, 1);
            proto_msg_set_body_bytes(chunk, "data: second\n\n", 14);
            proto_msg_send(&chunk, socket);
            proto_msg_t *done = proto_msg_reply(msg, PROTO_MSG_DONE);
            proto_msg_set_status(done, 200);
            proto_msg_set_body_bytes(done, "data: [DONE]\n\n", 14);
            proto_msg_send(&done, socket);
        }
    }
    proto_msg_destroy(&msg);
}

void ingress_fixture_drained(void *arg)
{
    ((ingress_fixture_t *)arg)->drained = true;
}

double ingress_fixture_cpu_seconds(void)
{
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

static void s_stop(proto_loop_t *loop, int id, void *arg)
{
    proto_loop_stop(loop);
}

void ingress_fixture_idle(ingress_fixture_t *test, uint64_t ms)
{
    test->until = NULL;
    proto_loop_add_timer(test->loop, ms, false, s_stop, NULL);
    proto_loop_run(test->loop);
}

bool ingress_fixture_settled(ingress_fixture_t *test)
{
    return test->settles == 1 && ingress_fixture_all_ended(test) &&
           ingress_server_settles_pending(test->server) == 0;
}

const char ingress_fixture_chat_body[] =
    "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

ingress_fixture_t *ingress_fixture_new(uint64_t internal_timeout_ms)
{
    return ingress_fixture_new_with(internal_timeout_ms, false);
}

ingress_fixture_t *ingress_fixture_new_with(uint64_t internal_timeout_ms, bool dispatch_over_tcp)
{
    zsys_init();
    ingress_fixture_t *test = calloc(1, sizeof *test);
    assert(test);
    test->admit_status = 200;
    test->dispatch_status = 200;
    test->loop = proto_loop_new();
    //  Endpoints of their own: ZeroMQ frees a closed socket's inproc name
    //  in its own thread, so the previous fixture's may still be taken.
    static int fixtures;
    char billing[64], dispatch[64], internal_timeout[24];
    snprintf(internal_timeout, sizeof internal_timeout, "%llu",
             (unsigned long long)internal_timeout_ms);
    snprintf(billing, sizeof billing, "inproc://ingress-fixture-billing-%d", fixtures);
    snprintf(dispatch, sizeof dispatch, "inproc://ingress-fixture-dispatch-%d", fixtures++);
    test->billing = zsock_new_router(billing);
    if (dispatch_over_tcp)
        snprintf(dispatch, sizeof dispatch, "tcp://127.0.0.1:*");
    test->dispatch = zsock_new_router(dispatch);
    PROTO_CHECK(test->billing && test->dispatch);
    snprintf(dispatch, sizeof dispatch, "%s", zsock_endpoint(test->dispatch));
    proto_loop_add_socket(test->loop, test->billing, s_billing, test);
    proto_loop_add_socket(test->loop, test->dispatch, ingress_fixture_dispatch_ready, test);
    test->config = proto_config_new();
    const char *settings[][2] = {
        {"ingress.listen", "127.0.0.1:0"},
        {"billing.endpoints", billing},
        {"dispatch.endpoints", dispatch},
        {"ingress.max_body_bytes", "2048"},
        {"ingress.internal_timeout_ms", internal_timeout},
    };
    char error[256];
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++)
        PROTO_CHECK(proto_config_set(test->config, settings[i][0], settings[i][1], "test", error,
                                     sizeof error) == 0);
    test->metrics = proto_metrics_new();
    //  inproc:// peers carry no security; the socket limits still apply.
    PROTO_CHECK(proto_socket_init_with("none", "", "ingress", -1, error, sizeof error) == 0);
    test->server = ingress_server_new(test->loop, test->config, test->metrics, NULL, false, error,
                                      sizeof error);
    PROTO_CHECK(test->server);
    test->port = ingress_server_port(test->server);
    PROTO_CHECK(test->port > 0);
    test->key = (proto_api_key_t){.id = 7, .account_id = 3, .status = "active"};
    test->server->test_key = &test->key;
    return test;
}

void ingress_fixture_destroy(ingress_fixture_t **self_p)
{
    assert(self_p);
    ingress_fixture_t *test = *self_p;
    if (!test)
        return;
    ingress_server_destroy(&test->server);
    proto_socket_shutdown();
    PROTO_CHECK(test->server == NULL);
    proto_loop_remove_socket(test->loop, test->billing);
    proto_loop_remove_socket(test->loop, test->dispatch);
    zsock_destroy(&test->billing);
    zsock_destroy(&test->dispatch);
    proto_metrics_destroy(&test->metrics);
    proto_config_destroy(&test->config);
    proto_loop_destroy(&test->loop);
    free(test);
    *self_p = NULL;
}
