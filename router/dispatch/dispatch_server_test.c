//  dispatch_server's selftest: the assembled program (server, requests,
//  route, settlement, held DISPATCHes) driven through its sockets.
#include "dispatch_server.h"
#include "proto_check.h"
#include "proto_catalog.h"
#include "proto_loop.h"
#include "proto_msg.h"
#include "proto_peer.h"

#include <assert.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  --------------------------------------------------------------------------
//  Self test: the server in this process with an injected catalog, as
//  Malamute tests its server. The test plays every peer: ingress (a
//  DEALER), billing (a ROUTER that commits SETTLEs), a listener on the
//  outcomes (a SUB) and the upstream (a libmicrohttpd daemon on a thread of
//  its own: one OpenAI chat answer, streamed or not, and a 500 for the
//  upstream model "broken"). No PostgreSQL and no router: dispatch decides
//  from the catalog alone.

#define S_TEST_WAIT_MS 5000

typedef struct {
    char *body;  //  request body so far
    size_t size; //  its bytes
} s_test_upload_t;

static const char s_test_answer[] =
    "{\"id\":\"c-1\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"up\","
    "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"hello\"},"
    "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,"
    "\"total_tokens\":15}}";

static const char s_test_events[] =
    "data: {\"id\":\"c-2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"up\","
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hel\"}}]}\n\n"
    "data: {\"id\":\"c-2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"up\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"id\":\"c-2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"up\","
    "\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,"
    "\"total_tokens\":15}}\n\n"
    "data: [DONE]\n\n";

//  A long stream (upstream model "long"): S_TEST_LONG_EVENTS content events
//  of ~110 bytes each, written at once, ~20 of dispatch's 1 KiB reads.
#define S_TEST_LONG_EVENTS 200
static char s_test_long[S_TEST_LONG_EVENTS * 128 + 512];

static void s_test_long_events(void)
{
    size_t used = 0;
    for (int i = 0; i < S_TEST_LONG_EVENTS; i++)
        used +=
            (size_t)snprintf(s_test_long + used, sizeof s_test_long - used,
                             "data: {\"id\":\"c-3\",\"object\":\"chat.completion.chunk\","
                             "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w%03d \"}}]}\n\n",
                             i);
    snprintf(s_test_long + used, sizeof s_test_long - used,
             "data: {\"id\":\"c-3\",\"object\":\"chat.completion.chunk\",\"choices\":[{"
             "\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
             "data: {\"id\":\"c-3\",\"object\":\"chat.completion.chunk\",\"choices\":[],"
             "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":200,\"total_tokens\":210}}"
             "\n\ndata: [DONE]\n\n");
}

static enum MHD_Result s_test_upstream(void *arg, struct MHD_Connection *connection,
                                       const char *url, const char *method, const char *version,
                                       const char *upload_data, size_t *upload_data_size,
                                       void **request_p)
{
    s_test_upload_t *upload = *request_p;
    if (!upload) {
        *request_p = calloc(1, sizeof(s_test_upload_t));
        return MHD_YES;
    }
    if (*upload_data_size) {
        upload->body = realloc(upload->body, upload->size + *upload_data_size + 1);
        memcpy(upload->body + upload->size, upload_data, *upload_data_size);
        upload->size += *upload_data_size;
        upload->body[upload->size] = '\0';
        *upload_data_size = 0;
        return MHD_YES;
    }
    const char *body = upload->body ? upload->body : "";
    const char *authorization =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Authorization");
    unsigned status = 200;
    const char *text = s_test_answer, *type = "application/json";
    if (!authorization || strcmp(authorization, "Bearer sk-test") != 0 ||
        strcmp(url, "/v1/chat/completions") != 0) {
        status = 401;
        text = "{\"error\":{\"message\":\"bad key or path\"}}";
    } else if (strstr(body, "\"broken\"")) {
        status = 500;
        text = "{\"error\":{\"message\":\"upstream broke\"}}";
    } else if (strstr(body, "\"stream\":true")) {
        text = strstr(body, "\"long\"") ? s_test_long : s_test_events;
        type = "text/event-stream";
    }
    struct MHD_Response *response =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(response, "Content-Type", type);
    enum MHD_Result rc = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return rc;
}

static void s_test_upload_done(void *arg, struct MHD_Connection *connection, void **request_p,
                               enum MHD_RequestTerminationCode code)
{
    s_test_upload_t *upload = *request_p;
    if (upload)
        free(upload->body);
    free(upload);
    *request_p = NULL;
}

static proto_msg_t *s_test_dispatch_msg(const char *rid, const char *model, uint64_t account_id,
                                        bool stream)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]%s}", model,
             stream ? ",\"stream\":true" : "");
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_DISPATCH);
    proto_msg_set_request_id(msg, rid);
    proto_msg_set_deadline(msg, proto_loop_wall_us() / 1000 + 20000);
    proto_msg_set_client_protocol(msg, (uint64_t)proto_protocol_parse("openai"));
    proto_msg_set_model(msg, model);
    proto_msg_set_stream(msg, stream);
    proto_msg_set_key_id(msg, 7);
    proto_msg_set_account_id(msg, account_id);
    proto_msg_set_reserve_micros(msg, 1000);
    proto_msg_set_body_bytes(msg, body, strlen(body));
    return msg;
}

static void s_test_dispatch(proto_peer_t *ingress, const char *rid, const char *model,
                            uint64_t account_id, bool stream)
{
    proto_msg_t *msg = s_test_dispatch_msg(rid, model, account_id, stream);
    PROTO_CHECK(proto_peer_send(ingress, &msg) == 0);
}

//  Billing's side: the SETTLE for rid, answered COMMIT. Returns it.
static proto_msg_t *s_test_settle(proto_peer_t *billing, const char *rid)
{
    proto_msg_t *settle = proto_peer_wait(billing, PROTO_MSG_SETTLE, rid, S_TEST_WAIT_MS);
    PROTO_CHECK(settle);
    proto_msg_t *commit = proto_msg_reply(settle, PROTO_MSG_COMMIT);
    PROTO_CHECK(proto_peer_send(billing, &commit) == 0);
    return settle;
}

//  Everything ingress got for rid up to DONE: the bytes for the client in
//  out (CHUNK bodies, then DONE's), the CHUNKs counted and DONE's bytes
//  measured. Returns DONE's status.
static uint64_t s_test_answer_of_counting(proto_peer_t *ingress, const char *rid, char *out,
                                          size_t size, size_t *chunks, size_t *done_bytes)
{
    size_t used = 0;
    out[0] = '\0';
    proto_msg_t *done = proto_peer_wait(ingress, PROTO_MSG_DONE, rid, S_TEST_WAIT_MS);
    PROTO_CHECK(done);
    proto_msg_t *chunk;
    while ((chunk = proto_peer_wait(ingress, PROTO_MSG_CHUNK, rid, 0))) {
        zframe_t *body = proto_msg_body(chunk);
        (*chunks)++;
        if (body && used + zframe_size(body) < size) {
            memcpy(out + used, zframe_data(body), zframe_size(body));
            used += zframe_size(body);
        }
        proto_msg_destroy(&chunk);
    }
    zframe_t *body = proto_msg_body(done);
    *done_bytes = body ? zframe_size(body) : 0;
    if (body && used + zframe_size(body) < size) {
        memcpy(out + used, zframe_data(body), zframe_size(body));
        used += zframe_size(body);
    }
    out[used] = '\0';
    uint64_t status = proto_msg_status(done);
    proto_msg_destroy(&done);
    return status;
}

static uint64_t s_test_answer_of(proto_peer_t *ingress, const char *rid, char *out, size_t size)
{
    size_t chunks = 0, done_bytes = 0;
    return s_test_answer_of_counting(ingress, rid, out, size, &chunks, &done_bytes);
}

//  A DISPATCH sent again for a finished request gets its kept answer (no
//  number: it speaks for no connection), and no second upstream call;
//  once a DISPATCH says the DONE arrived, the answer is dropped and a
//  late re-send gets an error, still no second call.
static void s_test_sent_again(proto_peer_t *ingress, proto_peer_t *billing)
{
    s_test_dispatch(ingress, "d-again", "m", 3, false);
    proto_msg_t *done = proto_peer_wait(ingress, PROTO_MSG_DONE, "d-again", S_TEST_WAIT_MS);
    PROTO_CHECK(done && proto_msg_status(done) == 200 && proto_msg_link(done) &&
                proto_msg_link_sequence(done));
    uint64_t link = proto_msg_link(done), sequence = proto_msg_link_sequence(done);
    proto_msg_destroy(&done);
    proto_msg_t *settle = s_test_settle(billing, "d-again");
    proto_msg_destroy(&settle);

    //  Said to be a second send: looked up, the kept answer.
    proto_msg_t *again = s_test_dispatch_msg("d-again", "m", 3, false);
    proto_msg_set_attempt(again, 2);
    PROTO_CHECK(proto_peer_send(ingress, &again) == 0);
    done = proto_peer_wait(ingress, PROTO_MSG_DONE, "d-again", S_TEST_WAIT_MS);
    PROTO_CHECK(done && proto_msg_status(done) == 200 && !proto_msg_link(done));
    PROTO_CHECK(proto_msg_body(done) && memmem(zframe_data(proto_msg_body(done)),
                                               zframe_size(proto_msg_body(done)), "hello", 5));
    proto_msg_destroy(&done);

    proto_msg_t *next = s_test_dispatch_msg("d-next", "m", 3, false);
    proto_msg_set_link(next, link);
    proto_msg_set_link_sequence(next, sequence);
    PROTO_CHECK(proto_peer_send(ingress, &next) == 0);
    done = proto_peer_wait(ingress, PROTO_MSG_DONE, "d-next", S_TEST_WAIT_MS);
    PROTO_CHECK(done && proto_msg_status(done) == 200 && proto_msg_link(done) == link &&
                proto_msg_link_sequence(done) == sequence + 1);
    proto_msg_destroy(&done);
    settle = s_test_settle(billing, "d-next");
    proto_msg_destroy(&settle);

    s_test_dispatch(ingress, "d-again", "m", 3, false);
    done = proto_peer_wait(ingress, PROTO_MSG_DONE, "d-again", S_TEST_WAIT_MS);
    PROTO_CHECK(done && proto_msg_status(done) == 502);
    PROTO_CHECK(strcmp(proto_msg_error_code(done), "answer_lost") == 0);
    proto_msg_destroy(&done);
    PROTO_CHECK(!proto_peer_wait(billing, PROTO_MSG_SETTLE, "d-again", 200));
    //  Said to be a first send (ingress says so only when it is): not
    //  looked up, so it runs.
    again = s_test_dispatch_msg("d-again", "m", 3, false);
    proto_msg_set_attempt(again, 1);
    PROTO_CHECK(proto_peer_send(ingress, &again) == 0);
    done = proto_peer_wait(ingress, PROTO_MSG_DONE, "d-again", S_TEST_WAIT_MS);
    PROTO_CHECK(done && proto_msg_status(done) == 200);
    proto_msg_destroy(&done);
    settle = s_test_settle(billing, "d-again");
    proto_msg_destroy(&settle);
}

static void s_test_long_stream(proto_peer_t *ingress, proto_peer_t *billing, bool verbose)
{
    //  A long stream read ~1 KiB at a time: every event relayed in order,
    //  in one CHUNK for what one round of reads brought (the first goes
    //  alone, at once), not one per read; what the round that ended the
    //  transfer read goes with DONE, not in a CHUNK of its own.
    s_test_dispatch(ingress, "d-long", "long", 3, true);
    static char long_answer[sizeof s_test_long + 1024];
    size_t chunks = 0, done_bytes = 0;
    PROTO_CHECK(s_test_answer_of_counting(ingress, "d-long", long_answer, sizeof long_answer,
                                          &chunks, &done_bytes) == 200);
    //  All of it but the usage-only event, which the client did not ask for.
    const char *usage = strstr(
        s_test_long, "data: {\"id\":\"c-3\",\"object\":\"chat.completion.chunk\",\"choices\":[],");
    PROTO_CHECK(usage);
    size_t before = (size_t)(usage - s_test_long);
    PROTO_CHECK(strncmp(long_answer, s_test_long, before) == 0);
    PROTO_CHECK(strcmp(long_answer + before, "data: [DONE]\n\n") == 0);
    if (verbose)
        printf("(%zu CHUNKs and %zu bytes in DONE for %zu bytes) ", chunks, done_bytes,
               strlen(s_test_long));
    PROTO_CHECK(chunks >= 1 && chunks <= 6);
    //  The answer's last read (its length complete) held at least the end
    //  marker: it ended the transfer, so DONE carries it.
    PROTO_CHECK(done_bytes >= strlen("data: [DONE]\n\n"));
    proto_msg_t *settle = s_test_settle(billing, "d-long");
    PROTO_CHECK(proto_msg_tokens_out(settle) == 200);
    proto_msg_destroy(&settle);
}

void dispatch_server_test(bool verbose)
{
    if (verbose)
        printf(" * dispatch_server: ");
    s_test_long_events();
    struct MHD_Daemon *upstream = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL, s_test_upstream, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, s_test_upload_done, NULL, MHD_OPTION_END);
    PROTO_CHECK(upstream);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(upstream, MHD_DAEMON_INFO_BIND_PORT);
    PROTO_CHECK(info && info->port);
    char catalog[2048];
    snprintf(catalog, sizeof catalog,
             "{\"accounts\":[{\"id\":3,\"name\":\"a\"}],"
             "\"keys\":[{\"id\":7,\"account_id\":3,\"hash\":\"h7\"}],"
             "\"providers\":[{\"id\":1,\"name\":\"up\",\"protocol\":\"openai\","
             "\"base_url\":\"http://127.0.0.1:%d\"},{\"id\":2,\"name\":\"other\","
             "\"protocol\":\"openai\",\"base_url\":\"http://127.0.0.1:%d\"}],"
             "\"provider_keys\":[{\"id\":11,\"provider_id\":1,\"secret\":\"sk-test\"},"
             "{\"id\":21,\"provider_id\":2,\"secret\":\"sk-test\"}],"
             "\"models\":[{\"id\":5,\"name\":\"m\"},{\"id\":6,\"name\":\"failover\"},"
             "{\"id\":8,\"name\":\"down\"},{\"id\":9,\"name\":\"long\"}],"
             "\"routes\":[{\"id\":1,\"model_id\":5,\"provider_id\":1,\"upstream_model\":\"up\"},"
             "{\"id\":2,\"model_id\":6,\"provider_id\":2,\"upstream_model\":\"broken\","
             "\"priority\":10},"
             "{\"id\":3,\"model_id\":6,\"provider_id\":1,\"upstream_model\":\"up\"},"
             "{\"id\":4,\"model_id\":8,\"provider_id\":2,\"upstream_model\":\"broken\"},"
             "{\"id\":5,\"model_id\":9,\"provider_id\":1,\"upstream_model\":\"long\"}]}",
             (int)info->port, (int)info->port);
    char error[512];
    const char *settings[] = {"dispatch.bind",
                              "inproc://dispatch-test",
                              "dispatch.events.bind",
                              "inproc://dispatch-test-events",
                              "billing.endpoints",
                              "inproc://dispatch-test-billing",
                              "router.breaker_threshold",
                              "100",
                              NULL};
    proto_service_t *service =
        proto_peer_service_new("dispatch", catalog, settings, error, sizeof error);
    PROTO_CHECK(service);
    proto_loop_t *loop = proto_service_loop(service);
    proto_peer_t *billing =
        proto_peer_new(loop, ZMQ_ROUTER, "inproc://dispatch-test-billing", true);
    PROTO_CHECK(billing);
    dispatch_server_t *dispatch = dispatch_server_new(service);
    PROTO_CHECK(dispatch);
    proto_peer_t *ingress = proto_peer_new(loop, ZMQ_DEALER, "inproc://dispatch-test", false);
    proto_peer_t *outcomes = proto_peer_new(loop, ZMQ_SUB, "inproc://dispatch-test-events", false);
    PROTO_CHECK(ingress && outcomes);
    char answer[4096];

    //  A plain call: the upstream's answer comes back in the client's
    //  protocol, and the usage is settled once with the upstream's tokens.
    s_test_dispatch(ingress, "d-1", "m", 3, false);
    PROTO_CHECK(s_test_answer_of(ingress, "d-1", answer, sizeof answer) == 200);
    PROTO_CHECK(strstr(answer, "hello") && strstr(answer, "chat.completion"));
    proto_msg_t *settle = s_test_settle(billing, "d-1");
    PROTO_CHECK(proto_msg_status(settle) == 200 && proto_msg_account_id(settle) == 3 &&
                proto_msg_key_id(settle) == 7 && proto_msg_provider_key_id(settle) == 11);
    PROTO_CHECK(proto_msg_tokens_in(settle) == 10 && proto_msg_tokens_out(settle) == 5);
    proto_msg_destroy(&settle);

    //  Streamed: CHUNKs then DONE, the events relayed in order.
    s_test_dispatch(ingress, "d-2", "m", 3, true);
    PROTO_CHECK(s_test_answer_of(ingress, "d-2", answer, sizeof answer) == 200);
    char *hel = strstr(answer, "\"hel\"");
    PROTO_CHECK(hel && strstr(hel, "\"lo\"") && strstr(answer, "[DONE]"));
    settle = s_test_settle(billing, "d-2");
    PROTO_CHECK(proto_msg_tokens_out(settle) == 5);
    proto_msg_destroy(&settle);

    s_test_long_stream(ingress, billing, verbose);
    s_test_sent_again(ingress, billing);

    //  A 500 before the first byte fails over to the next candidate (on
    //  another provider: on the same one, the model that served this client
    //  key well would go first); both attempts are published as outcomes,
    //  the request settled once.
    s_test_dispatch(ingress, "d-3", "failover", 3, false);
    PROTO_CHECK(s_test_answer_of(ingress, "d-3", answer, sizeof answer) == 200);
    PROTO_CHECK(strstr(answer, "hello"));
    proto_msg_t *first = proto_peer_wait(outcomes, PROTO_MSG_OUTCOME, "d-3", S_TEST_WAIT_MS);
    proto_msg_t *second = proto_peer_wait(outcomes, PROTO_MSG_OUTCOME, "d-3", S_TEST_WAIT_MS);
    PROTO_CHECK(first && second);
    PROTO_CHECK(proto_msg_status(first) == 500 &&
                strcmp(proto_msg_upstream_model(first), "broken") == 0);
    PROTO_CHECK(proto_msg_status(second) == 200 &&
                strcmp(proto_msg_upstream_model(second), "up") == 0);
    proto_msg_destroy(&first);
    proto_msg_destroy(&second);
    settle = s_test_settle(billing, "d-3");
    PROTO_CHECK(proto_msg_status(settle) == 200 &&
                strcmp(proto_msg_upstream_model(settle), "up") == 0);
    proto_msg_destroy(&settle);
    PROTO_CHECK(proto_peer_idle(billing, PROTO_MSG_SETTLE, 50) == 0);

    //  No candidate left: the upstream's failure in the client's protocol,
    //  settled (the upstream was called) at its status.
    s_test_dispatch(ingress, "d-4", "down", 3, false);
    uint64_t status = s_test_answer_of(ingress, "d-4", answer, sizeof answer);
    PROTO_CHECK(status >= 500 && strstr(answer, "error"));
    settle = s_test_settle(billing, "d-4");
    PROTO_CHECK(proto_msg_status(settle) >= 500);
    proto_msg_destroy(&settle);

    //  An account the catalog does not know reaches no upstream: 403 after
    //  the catalog has had its chance to catch up, and nothing to settle.
    s_test_dispatch(ingress, "d-5", "m", 99, false);
    proto_msg_t *done = proto_peer_wait(ingress, PROTO_MSG_DONE, "d-5", S_TEST_WAIT_MS);
    PROTO_CHECK(done && proto_msg_status(done) == 403);
    proto_msg_destroy(&done);
    PROTO_CHECK(proto_peer_idle(billing, PROTO_MSG_SETTLE, 50) == 0);

    //  Garbage from "ingress" is dropped; the next DISPATCH is served.
    zstr_send(proto_peer_socket(ingress), "garbage");
    s_test_dispatch(ingress, "d-6", "m", 3, false);
    PROTO_CHECK(s_test_answer_of(ingress, "d-6", answer, sizeof answer) == 200);
    settle = s_test_settle(billing, "d-6");
    proto_msg_destroy(&settle);
    //  Every SETTLE was committed: nothing is left in the outbox.
    proto_peer_idle(billing, PROTO_MSG_SETTLE, 20);
    char *text = dispatch_server_status(dispatch);
    PROTO_CHECK(text && strstr(text, "\"in_flight\":0,") && strstr(text, "\"settle_pending\":0,"));
    free(text);

    proto_peer_destroy(&outcomes);
    proto_peer_destroy(&ingress);
    dispatch_server_destroy(&dispatch);
    PROTO_CHECK(!dispatch);
    proto_peer_destroy(&billing);
    proto_peer_service_destroy(&service);
    MHD_stop_daemon(upstream);
    if (verbose)
        printf("OK\n");
}
