/*  mock_upstream - a fake OpenAI / Anthropic / Gemini upstream for Tollgate's tests

    Speaks the upstream HTTP APIs Tollgate calls (OpenAI Chat Completions, Responses and
    Embeddings, Anthropic Messages, Gemini generateContent), answers deterministically, and
    injects faults on demand so tests can drive failover, cancellation and billing paths.

    Request-side controls (all optional):

        x-mock-fault: SPEC          fault for this request (see below)
        x-mock-chunks: N            number of reply chunks (default 5, or model "mock-N")
        x-mock-cached-tokens: N     report N of the prompt tokens as cached
        last user message "echo:X"  reply exactly X
        last user message containing "call_tool", with tools defined: tool call to the first
                                    tool with arguments {"location":"Paris"}

    SPEC is a comma-separated list of: 401 403 404 429[:RETRY_AFTER] 500 502 503 (any 4xx/5xx),
    delay-headers:MS, delay-chunks:MS, cut:N, hang, malformed, no-terminator, flap:N,
    gather:N (a stream sends its first event, then waits until N streams wait so at once, or
    MOCK_GATHER_MAX_MS: benchmarks hold N streams open at the same moment), cached:N (not a fault:
   report N prompt tokens as cached, like x-mock-cached-tokens), cache-write-5m:N, cache-write-1h:N
   (not faults: Anthropic answers report N tokens written to the 5-minute or 1-hour cache, in
   cache_creation and cache_creation_input_tokens).

        user text "mock-call NAME {JSON}"
                                    tool call to NAME with those arguments, then "mock saw: "
                                    and the tool's result once it comes back (mock_agent.h)

    Control endpoints: GET /mock/stats, POST /mock/reset, POST /mock/faults
    {"model":"m","fault":"SPEC"} (empty fault clears; model "*" matches every model),
    GET /mock/faults, GET /mock/requests (every API request: path, model, headers without
    credentials, body; emptied by /mock/reset).
*/

#ifndef MOCK_UPSTREAM_H_INCLUDED
#define MOCK_UPSTREAM_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//  Largest request body we accumulate; beyond it the request is answered 413.
#define MOCK_UPSTREAM_MAX_BODY (32u * 1024u * 1024u)

typedef struct {
    const char *host;        //  Address to bind (IPv4 or IPv6 literal), default 127.0.0.1
    uint16_t port;           //  Port to bind, 0 = let the kernel pick a free one
    unsigned threads;        //  MHD worker threads (epoll, one per thread), default 2
    const char *require_key; //  If non-NULL, API calls must carry this key or get 401
    const char *models;      //  Comma-separated model list served by the list endpoints
    const char *aliases;     //  "FROM=TO,..." request paths served as other paths (a relay's
                             //  /api/chat/completions as /v1/chat/completions), or NULL
    bool verbose;            //  Log one line per request on stderr
} mock_upstream_config_t;

typedef struct _mock_upstream_t mock_upstream_t;

//  Fill a config with the defaults above. Strings are borrowed, not copied.
void mock_upstream_config_init(mock_upstream_config_t *config);

//  Start a mock upstream listening as configured. Returns NULL if the daemon cannot start
//  (bad address, port in use, bad model list). The config is copied.
mock_upstream_t *mock_upstream_new(const mock_upstream_config_t *config);

//  Stop the daemon, release every held connection and free the object; nulls *self_p.
void mock_upstream_destroy(mock_upstream_t **self_p);

//  Return the port actually bound (useful when the config asked for port 0).
uint16_t mock_upstream_port(mock_upstream_t *self);

//  Set the static fault for a model ("*" = every model), as --fault MODEL=SPEC does.
//  Static faults survive POST /mock/reset. An empty or NULL spec clears it.
//  Returns 0, or -1 if the spec does not parse.
int mock_upstream_set_fault(mock_upstream_t *self, const char *model, const char *spec);

//  Self test: start on port 0, drive a few requests over a raw socket, stop.
void mock_upstream_test(bool verbose);

#ifdef __cplusplus
}
#endif

#endif
