#include "ingress_request.h"
#include "ingress_daemon.h"
#include "ingress_fixture.h"
#include "ingress_server_private.h"
#include "proto_check.h"
#include "proto_error.h"
#include "proto_loop.h"

#include <assert.h>
#include <malloc.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

ingress_request_t *ingress_request_of(ingress_queue_item_t *item)
{
    return (ingress_request_t *)((char *)item - offsetof(ingress_request_t, timeout));
}

//  The live requests changed: the gauge, and the threads' policy.
static void s_in_flight(ingress_server_t *self)
{
    proto_metric_set(self->in_flight, (double)self->live_count);
    if (self->sched)
        proto_sched_load(self->sched, self->live_count, proto_loop_now_ms());
}

ingress_request_t *ingress_request_new(ingress_server_t *self, struct MHD_Connection *connection)
{
    ingress_request_t *r = calloc(1, sizeof *r);
    assert(r);
    r->server = self;
    r->connection = connection;
    r->refs = 1; //  the connection's
    r->dispatch_index = -1;
    r->lost_index = -1;
    r->protocol = PROTO_PROTOCOL_OPENAI;
    r->parsed = INGRESS_BODY_EMPTY;
    r->started_us = proto_loop_now_us();
    r->started_wall_us = proto_loop_wall_us();
    r->capture = proto_capture_headers_new(connection);
    r->live_next = self->live;
    if (self->live)
        self->live->live_prev = r;
    self->live = r;
    self->live_count++;
    s_in_flight(self);
    return r;
}

void ingress_request_unlink(ingress_request_t *r)
{
    ingress_server_t *self = r->server;
    if (r->live_prev)
        r->live_prev->live_next = r->live_next;
    else
        self->live = r->live_next;
    if (r->live_next)
        r->live_next->live_prev = r->live_prev;
    r->live_prev = r->live_next = NULL;
    self->live_count--;
    s_in_flight(self);
}

void ingress_request_unref(ingress_request_t *r)
{
    assert(r->refs > 0);
    if (--r->refs > 0)
        return;
    assert(!r->registered && !r->timeout.queue && !r->watching);
    if (r->response)
        MHD_destroy_response(r->response);
    ingress_buffer_destroy(&r->out);
    proto_msg_destroy(&r->admit_reply);
    proto_capture_destroy(&r->capture);
    ingress_body_release(&r->parsed);
    free(r->path_model);
    free(r->body);
    free(r);
}

void ingress_request_unwatch(ingress_request_t *r)
{
    if (r->watching)
        ingress_daemon_stop_waiting(r->server->client, r->connection);
    r->watching = false;
}

//  MHD polls no suspended connection, so a client that goes away would go
//  unnoticed until we resume it; watch its socket for the hang-up meanwhile.
void ingress_request_suspend(ingress_request_t *r)
{
    assert(r->connection && !r->suspended);
    MHD_suspend_connection(r->connection);
    r->suspended = true;
    ingress_daemon_wait_hangup(r->server->client, r->connection, ingress_server_hangup, r);
    r->watching = true;
}

void ingress_request_resume(ingress_request_t *r)
{
    if (!r->suspended)
        return;
    //  Unwatch first: once MHD has the socket back it may close it.
    ingress_request_unwatch(r);
    r->suspended = false;
    r->reader_waiting = false;
    MHD_resume_connection(r->connection);
    ingress_daemon_resumed(r->server->client);
}

bool ingress_request_register(ingress_request_t *r)
{
    if (zhashx_insert(r->server->requests, r->id, r) != 0)
        return false;
    r->registered = true;
    r->refs++;
    return true;
}

static void s_add_common_headers(ingress_request_t *r, struct MHD_Response *response)
{
    if (r->bare_answer)
        return;
    MHD_add_response_header(response, "x-request-id", r->id);
    if (r->received_us) {
        //  Local answers spent no time upstream: all of it is ours.
        char text[32];
        ingress_parse_ms_text(ingress_parse_overhead_us(r->received_us, proto_loop_now_us(), 0),
                              text, sizeof text);
        if (!MHD_get_response_header(response, "x-tollgate-overhead-ms"))
            MHD_add_response_header(response, "x-tollgate-overhead-ms", text);
    }
    if (r->server->draining)
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
}

void ingress_request_answer(ingress_request_t *r, unsigned status, struct MHD_Response *response)
{
    s_add_common_headers(r, response);
    proto_capture_response_headers(r->capture, response);
    r->status = (int)status;
    if (!r->connection) {
        MHD_destroy_response(response);
        return;
    }
    //  An answer decided from the headers alone waits for the handler's
    //  last call: queued before the request is read, MHD would close the
    //  connection instead of keeping it alive. An oversize body is the
    //  exception; it is answered without being read.
    if (r->in_handler && !r->suspended && r->first_call && !r->close_now) {
        r->response = response;
        r->response_status = status;
        return;
    }
    if (r->in_handler && !r->suspended) {
        MHD_queue_response(r->connection, status, response);
        MHD_destroy_response(response);
        return;
    }
    assert(r->suspended && !r->response);
    r->response = response;
    r->response_status = status;
    ingress_request_resume(r);
}

void ingress_request_answer_text(ingress_request_t *r, unsigned status, const char *content_type,
                                 char *text, bool owned)
{
    struct MHD_Response *response = MHD_create_response_from_buffer(
        strlen(text), text, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    ingress_request_answer(r, status, response);
}

void ingress_request_answer_error(ingress_request_t *r, unsigned status, const char *code,
                                  const char *message)
{
    char *body = proto_error_body(r->protocol, (int)status, code, message);
    struct MHD_Response *response =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    ingress_request_answer(r, status, response);
}

void ingress_request_answer_reply_error(ingress_request_t *r, proto_msg_t *reply,
                                        const char *fallback_code, const char *fallback_message)
{
    unsigned status = (unsigned)proto_msg_status(reply);
    if (status < 400 || status > 599)
        status = 502;
    const char *code =
        proto_msg_has(reply, PROTO_FIELD_error_code) ? proto_msg_error_code(reply) : fallback_code;
    const char *message = proto_msg_has(reply, PROTO_FIELD_error_message)
                              ? proto_msg_error_message(reply)
                              : fallback_message;
    char *body = proto_error_body(r->protocol, (int)status, code, message);
    struct MHD_Response *response =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (status == 429 || status == 503) {
        uint64_t retry_ms = proto_msg_retry_after_ms(reply);
        if (retry_ms || status == 429) {
            char seconds[24];
            snprintf(seconds, sizeof seconds, "%llu",
                     (unsigned long long)(retry_ms ? (retry_ms + 999) / 1000 : 1));
            MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
        }
    }
    ingress_request_answer(r, status, response);
}

void ingress_request_stamp(ingress_request_t *r, proto_msg_t *msg, uint64_t timeout_ms)
{
    proto_msg_set_request_id(msg, r->id);
    proto_msg_set_trace(msg, r->trace);
    proto_msg_set_deadline(msg, proto_loop_wall_us() / 1000 + timeout_ms);
}

//  --------------------------------------------------------------------------
//  Self test

//  What a request in flight costs the ingress besides MHD's connection:
//  its record and the texts its parse keeps. 10,000 open streams keep
//  10,000 of them (docs/benchmarks.md); with the body's texts and the
//  path's model in fixed arrays (~790 bytes, mostly unused) it was ~1.4
//  KiB (mallinfo2 counts nothing under ASan, whose allocator is its own).
static void s_test_size(ingress_fixture_t *test, bool verbose)
{
    enum { N = 1000 };
    const char *chat = "{\"model\":\"gpt-4o-mini\",\"user\":\"user-1234\",\"stream\":true,"
                       "\"tools\":[{\"type\":\"function\"}],"
                       "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    const char *gemini = "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"hi\"}]}]}";
    ingress_request_t **requests = calloc(N, sizeof *requests);
    assert(requests);
    char error[256];
    size_t in_use = mallinfo2().uordblks;
    for (int i = 0; i < N; i++) {
        ingress_request_t *r = ingress_request_new(test->server, NULL);
        //  Half OpenAI chats with a session and a capability, half Gemini
        //  requests naming their model in the path.
        if (i % 2) {
            r->protocol = PROTO_PROTOCOL_GEMINI;
            r->path_model = strdup("gemini-2.0-flash");
            assert(r->path_model);
        }
        const char *body = i % 2 ? gemini : chat;
        PROTO_CHECK(ingress_parse_body(r->protocol, false, r->path_model, body, strlen(body),
                                       &r->parsed, error, sizeof error) == 0);
        requests[i] = r;
    }
    size_t grown = mallinfo2().uordblks - in_use;
    if (verbose)
        printf("(%zu bytes per request, record %zu) ", grown / N, sizeof(ingress_request_t));
    PROTO_CHECK(grown / N <= 800);
    PROTO_CHECK(strcmp(requests[0]->parsed.model, "gpt-4o-mini") == 0);
    PROTO_CHECK(strcmp(requests[0]->parsed.session, "user-1234") == 0);
    PROTO_CHECK(strcmp(requests[0]->parsed.capabilities, "tools") == 0);
    PROTO_CHECK(strcmp(requests[1]->parsed.model, "gemini-2.0-flash") == 0);
    PROTO_CHECK(!*requests[1]->parsed.session && !*requests[1]->parsed.capabilities);
    for (int i = 0; i < N; i++) {
        ingress_request_unlink(requests[i]);
        ingress_request_unref(requests[i]);
    }
    free(requests);
}

void ingress_request_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_request: ");
    ingress_fixture_t *test = ingress_fixture_new(50);
    //  A request that has not parsed a body reads as empty.
    ingress_request_t *r = ingress_request_new(test->server, NULL);
    PROTO_CHECK(!*r->parsed.model && !*r->parsed.session && !*r->parsed.capabilities);
    PROTO_CHECK(!r->path_model);
    ingress_request_unlink(r);
    ingress_request_unref(r);
    s_test_size(test, verbose);
    ingress_fixture_destroy(&test);
    if (verbose)
        printf("OK\n");
}
