/*  dispatch_probe: drives a real tollgate-dispatch end to end.

    Plays ingress (a DEALER to dispatch.bind, a SUB to its outcomes) and
    billing (a ROUTER answering SETTLE with COMMIT), runs the mock upstream
    in-process with per-model faults, and writes its providers into the
    PostgreSQL given on the command line. Started by dispatch_probe.sh, which
    makes a throwaway PostgreSQL.

        dispatch_probe DATABASE_URL PATH/TO/tollgate-dispatch

    Every wait is on a message, with a deadline that only fails the probe.
*/
#include "mock_upstream.h"
#include "proto_check.h"
#include "proto_socket.h"
#include "proto_crypto.h"
#include "proto_log.h"
#include "proto_batch.h"
#include "proto_loop.h"
#include "proto_msg.h"

#include <assert.h>
#include <curl/curl.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_WAIT_MS 10000

static int s_failures = 0;

#define CHECK(condition, ...)                                                                      \
    do {                                                                                           \
        if (!(condition)) {                                                                        \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #condition);                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            s_failures++;                                                                          \
        }                                                                                          \
    } while (0)

//  What one request got back.
typedef struct {
    char rid[40];          //  request id
    int chunks;            //  CHUNKs seen
    int first_status;      //  status on the first CHUNK
    zchunk_t *stream;      //  CHUNK bodies, then DONE's body
    proto_msg_t *done;     //  DONE, once it came
    int outcomes;          //  OUTCOMEs seen
    int outcome_status[8]; //  their statuses in order
    int settles;           //  SETTLEs seen (re-sends included)
    proto_msg_t *settle;   //  the last SETTLE
    bool hold_commit;      //  do not answer its SETTLE yet
    bool committed;        //  COMMIT was sent
} s_result_t;

typedef struct {
    zsock_t *ingress;    //  DEALER to dispatch
    zsock_t *billing;    //  ROUTER dispatch connects to
    zsock_t *outcomes;   //  SUB to dispatch's events
    zpoller_t *poller;   //  over the three
    zhashx_t *results;   //  rid -> s_result_t*
    int sequence;        //  for request ids
    int port;            //  the mock upstream's
    uint64_t provider_a; //  providers.id of mock-a (base URL without /v1)
    uint64_t provider_b; //  providers.id of mock-b (base URL with /v1/)
    pid_t child;         //  tollgate-dispatch, 0 once it has exited
} s_probe_t;

static s_result_t *s_result(s_probe_t *probe, const char *rid)
{
    s_result_t *result = zhashx_lookup(probe->results, rid);
    if (!result) {
        result = calloc(1, sizeof *result);
        snprintf(result->rid, sizeof result->rid, "%s", rid);
        result->stream = zchunk_new(NULL, 0);
        zhashx_insert(probe->results, rid, result);
    }
    return result;
}

static void s_commit(s_probe_t *probe, s_result_t *result)
{
    proto_msg_t *commit = proto_msg_reply(result->settle, PROTO_MSG_COMMIT);
    proto_msg_send(&commit, probe->billing);
    result->committed = true;
}

static void s_message(proto_msg_t **msg_p, void *arg)
{
    s_probe_t *probe = arg;
    proto_msg_t *msg = *msg_p;
    s_result_t *result = s_result(probe, proto_msg_request_id(msg));
    switch (proto_msg_type(msg)) {
    case PROTO_MSG_CHUNK:
        CHECK(proto_msg_sequence(msg) == (uint64_t)result->chunks, "%s: CHUNK out of order",
              result->rid);
        if (result->chunks++ == 0)
            result->first_status = (int)proto_msg_status(msg);
        if (proto_msg_body(msg))
            zchunk_extend(result->stream, zframe_data(proto_msg_body(msg)),
                          zframe_size(proto_msg_body(msg)));
        break;
    case PROTO_MSG_DONE:
        CHECK(!result->done, "%s: two DONEs", result->rid);
        if (proto_msg_body(msg))
            zchunk_extend(result->stream, zframe_data(proto_msg_body(msg)),
                          zframe_size(proto_msg_body(msg)));
        result->done = msg;
        msg = NULL;
        break;
    case PROTO_MSG_OUTCOME:
        if (result->outcomes < 8)
            result->outcome_status[result->outcomes] = (int)proto_msg_status(msg);
        result->outcomes++;
        break;
    case PROTO_MSG_SETTLE:
        result->settles++;
        proto_msg_destroy(&result->settle);
        result->settle = msg;
        msg = NULL;
        if (!result->hold_commit)
            s_commit(probe, result);
        break;
    case PROTO_MSG_DEMAND:
        break; //  for the routers' shares of key limits
    default:
        CHECK(false, "unexpected %s", proto_msg_type_name(proto_msg_type(msg)));
    }
    *msg_p = msg;
}

//  Handles whatever arrives within timeout_ms (SETTLEs and OUTCOMEs come
//  in batches). Returns false on timeout.
static bool s_pump(s_probe_t *probe, int timeout_ms)
{
    zsock_t *which = zpoller_wait(probe->poller, timeout_ms);
    if (!which)
        return false;
    if (proto_batch_recv(which, s_message, probe) != 0)
        CHECK(false, "malformed message from dispatch");
    return true;
}

//  Pumps until result has its DONE and its SETTLE (and, when outcomes > 0,
//  that many OUTCOMEs).
static bool s_wait_done(s_probe_t *probe, s_result_t *result, int outcomes)
{
    uint64_t until = proto_loop_now_ms() + S_WAIT_MS;
    while (!result->done || !result->settles || result->outcomes < outcomes) {
        if (proto_loop_now_ms() > until)
            return false;
        s_pump(probe, 100);
    }
    return true;
}

//  Dispatch routes by itself from its catalog: each scenario is a logical
//  model whose routes are the candidates in order (route priority count..1).
static void s_model(PGconn *db, const char *name, const proto_candidate_t *candidates, size_t count)
{
    const char *values[1] = {name};
    PGresult *result = PQexecParams(db, "INSERT INTO models (name) VALUES ($1) RETURNING id", 1,
                                    NULL, values, NULL, NULL, 0);
    PROTO_CHECK(PQresultStatus(result) == PGRES_TUPLES_OK);
    char model_id[32];
    snprintf(model_id, sizeof model_id, "%s", PQgetvalue(result, 0, 0));
    PQclear(result);
    for (size_t i = 0; i < count; i++) {
        char provider[32], priority[16];
        snprintf(provider, sizeof provider, "%llu", (unsigned long long)candidates[i].provider_id);
        snprintf(priority, sizeof priority, "%zu", count - i);
        const char *route[4] = {model_id, provider, candidates[i].upstream_model, priority};
        result = PQexecParams(db,
                              "INSERT INTO routes (model_id, provider_id, upstream_model, priority)"
                              " VALUES ($1, $2, $3, $4)",
                              4, NULL, route, NULL, NULL, 0);
        PROTO_CHECK(PQresultStatus(result) == PGRES_COMMAND_OK);
        PQclear(result);
    }
}

static s_result_t *s_dispatch(s_probe_t *probe, int protocol, const char *body, const char *model,
                              bool stream)
{
    char rid[40];
    snprintf(rid, sizeof rid, "probe%08d%019d", getpid() % 100000000, ++probe->sequence);
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_DISPATCH);
    proto_msg_set_request_id(msg, rid);
    proto_msg_set_deadline(msg, proto_loop_wall_us() / 1000 + 20000);
    proto_msg_set_client_protocol(msg, (uint64_t)protocol);
    proto_msg_set_model(msg, model);
    proto_msg_set_stream(msg, stream);
    proto_msg_set_key_id(msg, 7);
    proto_msg_set_account_id(msg, 3);
    proto_msg_set_reserve_micros(msg, 1000);
    proto_msg_set_body_bytes(msg, body, strlen(body));
    s_result_t *result = s_result(probe, rid);
    proto_msg_send(&msg, probe->ingress);
    return result;
}

static void s_cancel(s_probe_t *probe, s_result_t *result)
{
    proto_msg_t *msg = proto_msg_new(PROTO_MSG_CANCEL);
    proto_msg_set_request_id(msg, result->rid);
    proto_msg_set_reason(msg, "client went away");
    proto_msg_send(&msg, probe->ingress);
}

static char *s_text(s_result_t *result)
{
    return zchunk_strdup(result->stream);
}

//  ---------------------------------------------------------------------------
//  The mock's statistics over HTTP

static size_t s_collect(char *data, size_t size, size_t count, void *arg)
{
    zchunk_extend(arg, data, size * count);
    return size * count;
}

static long s_mock_stat(int port, const char *name)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/mock/stats", port);
    zchunk_t *body = zchunk_new(NULL, 0);
    CURL *easy = curl_easy_init();
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, body);
    curl_easy_perform(easy);
    curl_easy_cleanup(easy);
    zchunk_extend(body, "", 1);
    char key[64];
    snprintf(key, sizeof key, "\"%s\":", name);
    const char *at = strstr((const char *)zchunk_data(body), key);
    long value = at ? strtol(at + strlen(key), NULL, 10) : -1;
    zchunk_destroy(&body);
    return value;
}

//  ---------------------------------------------------------------------------
//  Catalog rows

static uint64_t s_insert_provider(PGconn *db, const char *name, const char *base_url,
                                  const char *secret_key, const char *secret, uint64_t *key_id)
{
    const char *values[2] = {name, base_url};
    PGresult *result = PQexecParams(db,
                                    "INSERT INTO providers (name, protocol, base_url) VALUES "
                                    "($1, 'openai', $2) RETURNING id",
                                    2, NULL, values, NULL, NULL, 0);
    PROTO_CHECK(PQresultStatus(result) == PGRES_TUPLES_OK);
    uint64_t id = strtoull(PQgetvalue(result, 0, 0), NULL, 10);
    PQclear(result);
    uint8_t nonce[64], sealed[256];
    PROTO_CHECK(proto_crypto_seal(secret_key, secret, strlen(secret), nonce, sealed) == 0);
    char provider[32];
    snprintf(provider, sizeof provider, "%llu", (unsigned long long)id);
    const char *key_values[3] = {provider, (const char *)sealed, (const char *)nonce};
    int lengths[3] = {0, (int)(strlen(secret) + proto_crypto_overhead()),
                      (int)proto_crypto_nonce_size()};
    int formats[3] = {0, 1, 1};
    result = PQexecParams(db,
                          "INSERT INTO provider_keys (provider_id, secret_sealed, secret_nonce) "
                          "VALUES ($1, $2, $3) RETURNING id",
                          3, NULL, key_values, lengths, formats, 0);
    PROTO_CHECK(PQresultStatus(result) == PGRES_TUPLES_OK);
    *key_id = strtoull(PQgetvalue(result, 0, 0), NULL, 10);
    PQclear(result);
    return id;
}

//  The client every DISPATCH names (account 3, key 7): dispatch takes a
//  DISPATCH only for a key of its catalog.
static void s_insert_client(PGconn *db)
{
    PGresult *result = PQexec(db, "INSERT INTO accounts (id, name) VALUES (3, 'probe');"
                                  "INSERT INTO api_keys (id, account_id, key_hash, key_prefix) "
                                  "VALUES (7, 3, repeat('a', 64), 'tg-probe')");
    PROTO_CHECK(PQresultStatus(result) == PGRES_COMMAND_OK);
    PQclear(result);
}

static proto_candidate_t s_candidate(uint64_t provider, uint64_t key, const char *model)
{
    proto_candidate_t candidate = {provider, key, PROTO_PROTOCOL_OPENAI, ""};
    snprintf(candidate.upstream_model, sizeof candidate.upstream_model, "%s", model);
    return candidate;
}

//  ---------------------------------------------------------------------------

static const char *s_body_plain =
    "{\"model\":\"logical\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}";
static const char *s_body_stream = "{\"model\":\"logical\",\"messages\":[{\"role\":\"user\","
                                   "\"content\":\"hello there\"}],\"stream\":true}";
static const char *s_body_stream_usage =
    "{\"model\":\"logical\",\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}],"
    "\"stream\":true,\"stream_options\":{\"include_usage\":true}}";

//  Scenario 1: Non-streamed passthrough.
static void s_passthrough(s_probe_t *probe)
{
    s_result_t *r = s_dispatch(probe, PROTO_PROTOCOL_OPENAI, s_body_plain, "r-a", false);
    CHECK(s_wait_done(probe, r, 1), "no DONE");
    char *text = s_text(r);
    CHECK(proto_msg_status(r->done) == 200, "status %d", (int)proto_msg_status(r->done));
    CHECK(r->chunks == 0, "a whole answer comes in DONE");
    CHECK(strstr(text, "\"chat.completion\"") && strstr(text, "\"model\":\"gpt-4o-mini\""),
          "body %s", text);
    CHECK(proto_msg_tokens_in(r->done) > 0 && !proto_msg_estimated(r->done), "usage");
    CHECK(proto_msg_provider_id(r->done) == probe->provider_a, "provider");
    //  The mock answers at once: anything near a timer period means a
    //  transfer waited for the loop to wake up.
    CHECK(proto_msg_latency_us(r->done) < 100000, "latency %llu us",
          (unsigned long long)proto_msg_latency_us(r->done));
    CHECK(proto_msg_tokens_out(r->settle) == proto_msg_tokens_out(r->done), "settle usage");
    CHECK(proto_msg_started_us(r->settle) > 0 && proto_msg_attempts(r->settle) == 1,
          "settle fields");
    printf("ok 1 non-streamed passthrough: in=%llu out=%llu\n",
           (unsigned long long)proto_msg_tokens_in(r->done),
           (unsigned long long)proto_msg_tokens_out(r->done));
    free(text);
}

//  Scenario 2: Streamed, client did not ask for usage: the usage chunk is gone,
//  the usage is read anyway. Base URL with /v1/.
static void s_stream_stripped(s_probe_t *probe)
{
    s_result_t *r = s_dispatch(probe, PROTO_PROTOCOL_OPENAI, s_body_stream, "r-b", true);
    CHECK(s_wait_done(probe, r, 1), "no DONE");
    char *text = s_text(r);
    CHECK(r->chunks > 0 && r->first_status == 200, "chunks %d", r->chunks);
    CHECK(strstr(text, "data: [DONE]\n\n"), "terminator: %s", text);
    CHECK(!strstr(text, "\"choices\":[]"), "usage chunk relayed: %s", text);
    CHECK(proto_msg_status(r->done) == 200 && !proto_msg_estimated(r->done) &&
              proto_msg_tokens_out(r->done) > 0,
          "usage from the stripped chunk");
    printf("ok 2 streamed, usage chunk stripped: %d chunks, out=%llu\n", r->chunks,
           (unsigned long long)proto_msg_tokens_out(r->done));
    free(text);
}

//  Scenario 3: Streamed, client asked for usage: it gets the chunk.
static void s_stream_usage(s_probe_t *probe)
{
    s_result_t *r = s_dispatch(probe, PROTO_PROTOCOL_OPENAI, s_body_stream_usage, "r-a", true);
    CHECK(s_wait_done(probe, r, 1), "no DONE");
    char *text = s_text(r);
    CHECK(strstr(text, "\"choices\":[]") && strstr(text, "\"usage\":{"), "usage chunk: %s", text);
    printf("ok 3 streamed with include_usage\n");
    free(text);
}

//  Scenario 4: Failover: connection refused, 500, wrong key (401), then good.
static void s_failover(s_probe_t *probe)
{
    s_result_t *r = s_dispatch(probe, PROTO_PROTOCOL_OPENAI, s_body_stream, "r-failover", true);
    CHECK(s_wait_done(probe, r, 4), "no DONE");
    CHECK(proto_msg_status(r->done) == 200 && proto_msg_attempts(r->done) == 4,
          "status %d "
          "attempts %d",
          (int)proto_msg_status(r->done), (int)proto_msg_attempts(r->done));
    CHECK(r->outcome_status[0] == 502 && r->outcome_status[1] == 500 &&
              r->outcome_status[2] == 401 && r->outcome_status[3] == 200,
          "outcomes %d %d %d %d", r->outcome_status[0], r->outcome_status[1], r->outcome_status[2],
          r->outcome_status[3]);
    CHECK(proto_msg_provider_id(r->settle) == probe->provider_b &&
              strcmp(proto_msg_upstream_model(r->settle), "mock-3") == 0 &&
              proto_msg_attempts(r->settle) == 4,
          "settle names the final attempt");
    printf("ok 4 failover refused -> 500 -> 401 -> 200\n");
}

//  Scenario 5: All rate limited: 429 with the Retry-After.
static void s_all_limited(s_probe_t *probe)
{
    s_result_t *r = s_dispatch(probe, PROTO_PROTOCOL_OPENAI, s_body_plain, "r-429", false);
    CHECK(s_wait_done(probe, r, 2), "no DONE");
    char *text = s_text(r);
    CHECK(proto_msg_status(r->done) == 429 && proto_msg_retry_after_ms(r->done) == 3000,
          "status %d retry %d", (int)proto_msg_status(r->done),
          (int)proto_msg_retry_after_ms(r->done));
    CHECK(strstr(text, "rate_limit_error"), "body %s", text);
    CHECK(proto_msg_tokens_in(r->settle) == 0, "failed attempts are not billed");
    printf("ok 5 all 429 -> 429 retry_after_ms=3000\n");
    free(text);
}

//  Scenario 6: A client error is relayed at once, no failover.
static void s_client_error(s_probe_t *probe)
{
    s_result_t *r = s_dispatch(probe, PROTO_PROTOCOL_OPENAI, s_body_plain, "r-400", false);
    CHECK(s_wait_done(probe, r, 1), "no DONE");
    char *text = s_text(r);
    CHECK(proto_msg_status(r->done) == 400 && proto_msg_attempts(r->done) == 1, "status %d",
          (int)proto_msg_status(r->done));
    CHECK(strstr(text, "injected fault"), "upstream's body relayed: %s", text);
    printf("ok 6 400 relayed without failover\n");
    free(text);
}

//  Scenario 7: First-byte timeout on the only candidate: 504.
static void s_first_byte_timeout(s_probe_t *probe)
{
    uint64_t start = proto_loop_now_ms();
    s_result_t *r = s_dispatch(probe, PROTO_PROTOCOL_OPENAI, s_body_stream, "r-hang", true);
    CHECK(s_wait_done(probe, r, 1), "no DONE");
    uint64_t took = proto_loop_now_ms() - start;
    char *text = s_text(r);
    CHECK(proto_msg_status(r->done) == 504 && strstr(text, "upstream_timeout"), "%d %s",
          (int)proto_msg_status(r->done), text);
    CHECK(took >= 650 && took < 2000, "took %llu ms", (unsigned long long)took);
    printf("ok 7 first-byte timeout -> 504 after %llu ms\n", (unsigned long long)took);
    free(text);
}

//  Scenario 8: Stream cut after the first bytes went out: error event, 502,
//  even though another candidate is left.
static void s_cut_stream(s_probe_t *probe)
{
    s_result_t *r = s_dispatch(probe, PROTO_PROTOCOL_OPENAI, s_body_stream, "r-cut", true);
    CHECK(s_wait_done(probe, r, 1), "no DONE");
    char *text = s_text(r);
    CHECK(r->chunks > 0 && proto_msg_status(r->done) == 502, "status %d chunks %d",
          (int)proto_msg_status(r->done), r->chunks);
    CHECK(strstr(text, "data: {\"error\":") && !strstr(text, "[DONE]"), "stream: %s", text);
    CHECK(proto_msg_attempts(r->done) == 1, "no failover after the first byte");
    CHECK(proto_msg_tokens_out(r->settle) > 0 && proto_msg_estimated(r->settle),
          "what was relayed is settled, estimated");
    printf("ok 8 cut stream -> error event, settled out=%llu (estimated)\n",
           (unsigned long long)proto_msg_tokens_out(r->settle));
    free(text);
}

//  Scenario 8b: Idle gap after the first bytes: 504 error event, not a clean end.
static void s_idle_timeout(s_probe_t *probe)
{
    s_result_t *r = s_dispatch(probe, PROTO_PROTOCOL_OPENAI, s_body_stream, "r-stall", true);
    CHECK(s_wait_done(probe, r, 1), "no DONE");
    char *text = s_text(r);
    CHECK(r->chunks > 0 && proto_msg_status(r->done) == 504 && strstr(text, "upstream_timeout") &&
              !strstr(text, "[DONE]"),
          "status %d: %s", (int)proto_msg_status(r->done), text);
    printf("ok 8b idle timeout mid-stream -> error event 504\n");
    free(text);
}

//  Scenario 9: Cancel: the mock sees the connection close. The abort of
//  8b's stalled stream may still be on its way to the mock's count (seen
//  under ASan): the count is taken once it holds still.
static void s_cancel_scenario(s_probe_t *probe)
{
    long aborts = s_mock_stat(probe->port, "client_aborts");
    for (long settled = -1; settled != aborts;) {
        settled = aborts;
        s_pump(probe, 150);
        aborts = s_mock_stat(probe->port, "client_aborts");
    }
    s_result_t *r = s_dispatch(probe, PROTO_PROTOCOL_OPENAI, s_body_stream, "r-slow", true);
    uint64_t until = proto_loop_now_ms() + S_WAIT_MS;
    while (r->chunks == 0 && proto_loop_now_ms() < until)
        s_pump(probe, 100);
    CHECK(r->chunks > 0, "no first chunk");
    uint64_t cancelled = proto_loop_now_ms();
    s_cancel(probe, r);
    long now_aborts = aborts;
    while (now_aborts == aborts && proto_loop_now_ms() < cancelled + 2000) {
        s_pump(probe, 5);
        now_aborts = s_mock_stat(probe->port, "client_aborts");
    }
    uint64_t seen = proto_loop_now_ms() - cancelled;
    CHECK(now_aborts == aborts + 1, "mock saw no abort (%ld -> %ld)", aborts, now_aborts);
    CHECK(seen <= 100, "abort seen after %llu ms", (unsigned long long)seen);
    until = proto_loop_now_ms() + S_WAIT_MS;
    while ((!r->settles || r->outcomes < 1) && proto_loop_now_ms() < until)
        s_pump(probe, 100);
    CHECK(!r->done, "no DONE after CANCEL");
    CHECK(r->settles && proto_msg_status(r->settle) == 499, "settled as cancelled");
    CHECK(r->outcome_status[0] == 499, "outcome %d", r->outcome_status[0]);
    printf("ok 9 cancel: upstream saw the close after %llu ms; settled in=%llu out=%llu\n",
           (unsigned long long)seen, (unsigned long long)proto_msg_tokens_in(r->settle),
           (unsigned long long)proto_msg_tokens_out(r->settle));
}

//  Scenario 10: An unsupported protocol pair: 400 in the client's own format.
static void s_unsupported_pair(s_probe_t *probe)
{
    const char *anthropic = "{\"model\":\"x\",\"max_tokens\":10,\"messages\":[]}";
    s_result_t *r = s_dispatch(probe, PROTO_PROTOCOL_ANTHROPIC, anthropic, "r-a", false);
    CHECK(s_wait_done(probe, r, 0), "no DONE");
    char *text = s_text(r);
    CHECK(proto_msg_status(r->done) == 400 && strstr(text, "\"type\":\"error\""), "%s", text);
    printf("ok 10 unsupported pair -> 400 %s\n", text);
    free(text);
}

//  Scenario 11: A SETTLE without COMMIT is sent again; after COMMIT it stops.
static void s_settle_resent(s_probe_t *probe)
{
    s_result_t *r = s_dispatch(probe, PROTO_PROTOCOL_OPENAI, s_body_plain, "r-a", false);
    r->hold_commit = true;
    CHECK(s_wait_done(probe, r, 1), "no DONE");
    uint64_t until = proto_loop_now_ms() + 6000;
    while (r->settles < 2 && proto_loop_now_ms() < until)
        s_pump(probe, 100);
    CHECK(r->settles >= 2, "SETTLE not re-sent");
    s_commit(probe, r);
    int settles = r->settles;
    until = proto_loop_now_ms() + 2600;
    while (proto_loop_now_ms() < until)
        s_pump(probe, 100);
    CHECK(r->settles == settles, "re-sent after COMMIT");
    printf("ok 11 SETTLE re-sent until COMMIT (%d copies)\n", settles);
}

//  Scenario 12: Drain: in-flight finishes, new work is refused, exit 0.
static void s_drain(s_probe_t *probe)
{
    s_result_t *busy = s_dispatch(probe, PROTO_PROTOCOL_OPENAI, s_body_stream, "r-drain", true);
    uint64_t until = proto_loop_now_ms() + S_WAIT_MS;
    while (busy->chunks == 0 && proto_loop_now_ms() < until)
        s_pump(probe, 100);
    kill(probe->child, SIGTERM);
    //  Give the signal a moment to land before the next DISPATCH; the
    //  refusal below is what we check, not this wait.
    s_pump(probe, 50);
    s_result_t *late = s_dispatch(probe, PROTO_PROTOCOL_OPENAI, s_body_plain, "r-a", false);
    CHECK(s_wait_done(probe, busy, 1), "in-flight did not finish");
    //  Handed back to ingress, not taken: DONE without a SETTLE.
    until = proto_loop_now_ms() + S_WAIT_MS;
    while (!late->done && proto_loop_now_ms() < until)
        s_pump(probe, 100);
    CHECK(late->done, "no answer while draining");
    char *text = s_text(busy);
    CHECK(proto_msg_status(busy->done) == 200 && strstr(text, "[DONE]"), "drained stream");
    CHECK(busy->chunks > 2, "relayed as it came: %d chunks", busy->chunks);
    free(text);
    CHECK(proto_msg_status(late->done) == 503 &&
              strcmp(proto_msg_error_code(late->done), "draining") == 0,
          "late status %d", (int)proto_msg_status(late->done));
    CHECK(late->settles == 0, "a DISPATCH handed back was settled");
    int status = 0;
    waitpid(probe->child, &status, 0);
    probe->child = 0;
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
    printf("ok 12 drain: in-flight finished, new work handed back 503, exit 0\n");
}

//  The upstream, with faults chosen by model name.
static mock_upstream_t *s_mock_new(void)
{
    mock_upstream_config_t mock_config;
    mock_upstream_config_init(&mock_config);
    mock_config.require_key = "sk-probe-secret";
    mock_upstream_t *mock = mock_upstream_new(&mock_config);
    PROTO_CHECK(mock);
    PROTO_CHECK(mock_upstream_set_fault(mock, "m-500", "500") == 0);
    PROTO_CHECK(mock_upstream_set_fault(mock, "m-429", "429:3") == 0);
    PROTO_CHECK(mock_upstream_set_fault(mock, "m-400", "400") == 0);
    PROTO_CHECK(mock_upstream_set_fault(mock, "m-hang", "hang") == 0);
    PROTO_CHECK(mock_upstream_set_fault(mock, "m-cut", "cut:3") == 0);
    PROTO_CHECK(mock_upstream_set_fault(mock, "m-slow", "delay-chunks:300") == 0);
    PROTO_CHECK(mock_upstream_set_fault(mock, "m-drain", "delay-chunks:100") == 0);
    PROTO_CHECK(mock_upstream_set_fault(mock, "m-stall", "delay-chunks:1500") == 0);
    return mock;
}

//  Providers: the mock (twice: base URL with and without /v1), and one
//  whose port refuses connections; then the scenarios' models.
static void s_catalog(PGconn *db, s_probe_t *probe, const char *secret_key)
{
    char base[128], base_v1[128];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", probe->port);
    snprintf(base_v1, sizeof base_v1, "http://127.0.0.1:%d/v1/", probe->port);
    uint64_t key_a, key_b, key_dead, key_wrong;
    s_insert_client(db);
    uint64_t provider_a =
        s_insert_provider(db, "mock-a", base, secret_key, "sk-probe-secret", &key_a);
    uint64_t provider_b =
        s_insert_provider(db, "mock-b", base_v1, secret_key, "sk-probe-secret", &key_b);
    uint64_t provider_dead =
        s_insert_provider(db, "dead", "http://127.0.0.1:9", secret_key, "sk-x", &key_dead);
    uint64_t provider_wrong =
        s_insert_provider(db, "wrong-key", base, secret_key, "sk-not-it", &key_wrong);
    probe->provider_a = provider_a;
    probe->provider_b = provider_b;

    const proto_candidate_t c_a = s_candidate(provider_a, key_a, "gpt-4o-mini");
    const proto_candidate_t c_b = s_candidate(provider_b, key_b, "gpt-4o-mini");
    s_model(db, "r-a", &c_a, 1);
    s_model(db, "r-b", &c_b, 1);
    const proto_candidate_t failover[4] = {
        s_candidate(provider_dead, key_dead, "gpt-4o-mini"),
        s_candidate(provider_a, key_a, "m-500"),
        s_candidate(provider_wrong, key_wrong, "gpt-4o-mini"),
        s_candidate(provider_b, key_b, "mock-3"),
    };
    s_model(db, "r-failover", failover, 4);
    const proto_candidate_t limited[2] = {s_candidate(provider_a, key_a, "m-429"),
                                          s_candidate(provider_b, key_b, "m-429")};
    s_model(db, "r-429", limited, 2);
    //  The second candidate on another provider: on the same one, the model
    //  that last served the client key well would go first (router_select).
    const proto_candidate_t refused[2] = {s_candidate(provider_a, key_a, "m-400"), c_b};
    s_model(db, "r-400", refused, 2);
    const proto_candidate_t cut[2] = {s_candidate(provider_a, key_a, "m-cut"), c_b};
    s_model(db, "r-cut", cut, 2);
    const char *singles[] = {"m-hang", "m-stall", "m-slow", "m-drain"};
    for (size_t i = 0; i < sizeof singles / sizeof singles[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "r-%s", singles[i] + 2);
        const proto_candidate_t one = s_candidate(provider_a, key_a, singles[i]);
        s_model(db, name, &one, 1);
    }
}

//  Our sockets, on ipc:// in the private folder dir (the probe plays billing, a server, and
//  ingress, a client), then tollgate-dispatch started on them. Returns its pid.
static pid_t s_start(s_probe_t *probe, const char *dir, const char *binary,
                     const char *database_url, const char *secret_key)
{
    char dispatch_ep[160], events_ep[160], control_ep[160], billing_ep[160];
    snprintf(dispatch_ep, sizeof dispatch_ep, "ipc://%s/dispatch.sock", dir);
    snprintf(events_ep, sizeof events_ep, "ipc://%s/events.sock", dir);
    snprintf(control_ep, sizeof control_ep, "ipc://%s/control.sock", dir);
    snprintf(billing_ep, sizeof billing_ep, "ipc://%s/billing.sock", dir);
    probe->billing = proto_socket_server(ZMQ_ROUTER, billing_ep);
    probe->ingress = proto_socket_client(ZMQ_DEALER, "dispatch", dispatch_ep);
    probe->outcomes = proto_socket_client(ZMQ_SUB, "dispatch.events", events_ep);
    if (probe->outcomes)
        zsock_set_subscribe(probe->outcomes, "");
    PROTO_CHECK(probe->billing && probe->ingress && probe->outcomes);
    probe->poller = zpoller_new(probe->ingress, probe->billing, probe->outcomes, NULL);

    char set[11][300];
    snprintf(set[0], sizeof set[0], "database_url=%s", database_url);
    snprintf(set[1], sizeof set[1], "secret_key=%s", secret_key);
    snprintf(set[2], sizeof set[2], "dispatch.bind=%s", dispatch_ep);
    snprintf(set[3], sizeof set[3], "dispatch.events.bind=%s", events_ep);
    snprintf(set[4], sizeof set[4], "dispatch.control_bind=%s", control_ep);
    snprintf(set[5], sizeof set[5], "billing.endpoints=%s", billing_ep);
    snprintf(set[6], sizeof set[6], "dispatch.first_byte_timeout_ms=%d", 700);
    snprintf(set[7], sizeof set[7], "dispatch.idle_timeout_ms=%d", 700);
    snprintf(set[8], sizeof set[8], "dispatch.connect_timeout_ms=%d", 1000);
    snprintf(set[9], sizeof set[9], "log_level=%s",
             getenv("PROBE_LOG") ? getenv("PROBE_LOG") : "warn");
    //  Scenarios fail on purpose: breakers must not carry one into the next.
    snprintf(set[10], sizeof set[10], "router.breaker_threshold=1000");
    pid_t child = fork();
    if (child == 0) {
        char *args[32];
        int n = 0;
        args[n++] = (char *)binary;
        for (int i = 0; i < 11; i++) {
            args[n++] = "--set";
            args[n++] = set[i];
        }
        args[n] = NULL;
        execv(binary, args);
        _exit(127);
    }
    return child;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: dispatch_probe DATABASE_URL TOLLGATE_DISPATCH\n");
        return 2;
    }
    const char *database_url = argv[1];
    const char *binary = argv[2];
    curl_global_init(CURL_GLOBAL_DEFAULT);
    PROTO_CHECK(proto_crypto_init() == 0);
    proto_log_init("probe", PROTO_LOG_WARN);
    zsys_init();
    char socket_error[512];
    if (proto_socket_init_env("probe", socket_error, sizeof socket_error) != 0) {
        fprintf(stderr, "dispatch_probe: %s\n", socket_error);
        return 2;
    }

    s_probe_t probe = {0};
    probe.results = zhashx_new();
    mock_upstream_t *mock = s_mock_new();
    probe.port = mock_upstream_port(mock);
    char secret_key[PROTO_CRYPTO_KEY_HEX + 1];
    proto_crypto_random_hex(secret_key, PROTO_CRYPTO_KEY_HEX / 2);
    PGconn *db = PQconnectdb(database_url);
    PROTO_CHECK(PQstatus(db) == CONNECTION_OK);
    s_catalog(db, &probe, secret_key);
    char dir[] = "/tmp/dispatch_probe.XXXXXX";
    PROTO_CHECK(mkdtemp(dir));
    probe.child = s_start(&probe, dir, binary, database_url, secret_key);

    //  The PUB/SUB pair drops what is published before the subscription is
    //  through; a first request confirmed by its OUTCOME proves it is.
    s_result_t *warm = NULL;
    for (int i = 0; i < 50 && (!warm || !warm->outcomes); i++) {
        warm = s_dispatch(&probe, PROTO_PROTOCOL_OPENAI, s_body_plain, "r-a", false);
        s_wait_done(&probe, warm, 0);
        s_pump(&probe, 50);
    }
    CHECK(warm && warm->done && warm->outcomes == 1, "dispatch did not come up");
    if (!warm || !warm->done)
        goto done;

    s_passthrough(&probe);
    s_stream_stripped(&probe);
    s_stream_usage(&probe);
    s_failover(&probe);
    s_all_limited(&probe);
    s_client_error(&probe);
    s_first_byte_timeout(&probe);
    s_cut_stream(&probe);
    s_idle_timeout(&probe);
    s_cancel_scenario(&probe);
    s_unsupported_pair(&probe);
    s_settle_resent(&probe);
    s_drain(&probe);

done:
    if (probe.child > 0) {
        kill(probe.child, SIGKILL);
        waitpid(probe.child, NULL, 0);
    }
    for (s_result_t *r = zhashx_first(probe.results); r; r = zhashx_next(probe.results)) {
        proto_msg_destroy(&r->done);
        proto_msg_destroy(&r->settle);
        zchunk_destroy(&r->stream);
        free(r);
    }
    zhashx_destroy(&probe.results);
    zpoller_destroy(&probe.poller);
    zsock_destroy(&probe.ingress);
    zsock_destroy(&probe.billing);
    zsock_destroy(&probe.outcomes);
    mock_upstream_destroy(&mock);
    PQfinish(db);
    char command[200];
    snprintf(command, sizeof command, "rm -rf %s", dir);
    if (system(command) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    curl_global_cleanup();
    printf("%s\n", s_failures ? "FAILED" : "PASSED");
    return s_failures ? 1 : 0;
}
