/*  mock_req - the state the mock upstream's modules share: one request (mock_req_t) and the
    daemon it belongs to (struct _mock_upstream_t)

    A request goes mock_upstream.c (route, record, find its fault) -> mock_reply.c (what the
    answer says) -> mock_shape.c (the answer in its API's own JSON) or mock_stream.c (the
    answer as that API's stream of events) -> back to mock_upstream.c, which queues it to MHD
    or parks it in mock_waiter.c first. mock_control.c answers the /mock/ endpoints and keeps
    the counters.

    Streams are produced lazily: at dispatch time we only compute the list of event kinds;
    each event is rendered when MHD asks for more body (content reader callback), so a
    100000-chunk stream costs a few bytes per chunk until it is sent.
*/

#ifndef MOCK_REQ_H_INCLUDED
#define MOCK_REQ_H_INCLUDED

#include "mock_agent.h"
#include "mock_buf.h"
#include "mock_fault.h"
#include "mock_upstream.h"
#include "mock_waiter.h"

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define MOCK_MAX_LAST_BODY 65536 //  Bytes of the last request body kept for /mock/stats

typedef enum { P_OPENAI, P_ANTHROPIC, P_GEMINI } mock_proto_t;

typedef enum {
    R_NOT_FOUND,
    R_CHAT,          //  POST /v1/chat/completions
    R_RESPONSES,     //  POST /v1/responses
    R_EMBEDDINGS,    //  POST /v1/embeddings
    R_IMAGES,        //  POST /v1/images/generations
    R_MESSAGES,      //  POST /v1/messages
    R_COUNT_TOKENS,  //  POST /v1/messages/count_tokens
    R_GEM_GENERATE,  //  POST /v1beta/models/{m}:generateContent
    R_GEM_STREAM,    //  POST /v1beta/models/{m}:streamGenerateContent
    R_GEM_COUNT,     //  POST /v1beta/models/{m}:countTokens
    R_MODELS,        //  GET /v1/models (OpenAI or Anthropic shape)
    R_MODEL,         //  GET /v1/models/{id}
    R_GEM_MODELS,    //  GET /v1beta/models
    R_GEM_MODEL,     //  GET /v1beta/models/{m}
    R_MOCK_STATS,    //  GET /mock/stats
    R_MOCK_RESET,    //  POST /mock/reset
    R_MOCK_FAULTS,   //  GET|POST /mock/faults
    R_MOCK_REQUESTS, //  GET /mock/requests (mock_agent.h's journal)
} mock_route_t;

//  One stream event; its text is rendered only when it is about to be sent. Grouped by API
//  in this order (Chat, Responses, Anthropic, Gemini): mock_stream.c picks the renderer by range.
typedef enum {
    E_CHAT_ROLE,
    E_CHAT_DELTA,
    E_CHAT_TOOL_START,
    E_CHAT_TOOL_DELTA,
    E_CHAT_FINISH,
    E_CHAT_USAGE,
    E_CHAT_DONE,
    E_RESP_CREATED,
    E_RESP_IN_PROGRESS,
    E_RESP_ITEM_ADDED,
    E_RESP_PART_ADDED,
    E_RESP_TEXT_DELTA,
    E_RESP_TEXT_DONE,
    E_RESP_PART_DONE,
    E_RESP_ARGS_DELTA,
    E_RESP_ARGS_DONE,
    E_RESP_ITEM_DONE,
    E_RESP_COMPLETED,
    E_ANTH_START,
    E_ANTH_BLOCK_START,
    E_ANTH_PING,
    E_ANTH_DELTA,
    E_ANTH_BLOCK_STOP,
    E_ANTH_MSG_DELTA,
    E_ANTH_STOP,
    E_GEM_CHUNK,
    E_GEM_FINAL,
    E_GEM_TOOL,
    E_GEM_ARRAY_END,
} mock_event_kind_t;

typedef struct {
    uint8_t kind; //  mock_event_kind_t
    int arg;      //  Piece index for delta events
} mock_event_t;

typedef enum { PH_NEW, PH_WAIT, PH_QUEUED } mock_phase_t;

//  Per-request state; *con_cls for MHD. Reference counted because both the connection (until
//  MHD_OPTION_NOTIFY_COMPLETED) and a callback response (until its free callback) hold it,
//  and MHD does not promise which of the two lets go first.
struct _mock_req_t {
    atomic_int refs;             //  Owners: the connection, plus a callback response
    mock_upstream_t *owner;      //  Daemon this request belongs to
    struct MHD_Connection *conn; //  Connection, valid until completed
    char *path;                  //  URL path without query
    char *method;                //  HTTP method
    mock_buf_t body;             //  Accumulated request body
    bool too_large;              //  Body exceeded MOCK_UPSTREAM_MAX_BODY; answer 413
    mock_phase_t phase;          //  Where the request is in its life
    mock_route_t route;          //  What the path asked for
    mock_proto_t proto;          //  Which API's shapes to answer in
    //  Reply plan, computed once at dispatch
    mock_fault_t fault;    //  Fault in force for this request
    int status;            //  Status to answer with
    const char *ctype;     //  Content-Type of the answer
    char *reply;           //  Whole body for non-stream answers (malloc)
    size_t reply_len;      //  Its length
    bool stream;           //  Answer is a stream of events
    bool gemini_sse;       //  Gemini stream framed as SSE (alt=sse), else a JSON array
    bool include_usage;    //  OpenAI stream_options.include_usage
    bool tool;             //  Reply is a tool call
    char *tool_name;       //  Name of the tool called
    char *model;           //  Model named by the request ("" if none)
    char **pieces;         //  Text (or tool argument) pieces, one per chunk
    int n_pieces;          //  Number of pieces
    char *full_text;       //  Concatenation of the pieces
    int prompt_tokens;     //  ceil(body bytes / 4)
    int completion_tokens; //  Number of pieces
    int cached_tokens;     //  Part of prompt_tokens reported as cached
    int cache_write_5m;    //  Anthropic: tokens reported written to the 5-minute cache
    int cache_write_1h;    //  Anthropic: tokens reported written to the 1-hour cache
    unsigned long seq;     //  Per-daemon request number, used in ids
    long created;          //  Unix time of the request
    mock_event_t *events;  //  Stream plan
    int n_events;          //  Its length
    int malformed_event;   //  Index of the event to break, -1 none
    //  Stream progress (content reader side)
    int next_event;    //  Next event to render
    mock_buf_t out;    //  Rendered bytes not yet handed to MHD
    size_t out_off;    //  How much of out was handed over
    size_t body_sent;  //  Non-stream cut: bytes of reply handed over
    uint64_t next_due; //  Monotonic ms when the next event may go
    int events_sent;   //  Events handed to MHD (cut:N counts these)
    //  Waiting and accounting
    uint64_t wait_due;   //  Deadline while parked in the waiter, MOCK_NEVER for hang
    int wait_fd;         //  Socket watched for hang-up while parked, -1 none
    atomic_bool aborted; //  The waiter saw the client hang up
    bool held;           //  Counted in open_streams
    bool gathered;       //  Has waited at gather:N (once per stream)
    bool gathering;      //  Is waiting at gather:N now (counted in the waiter's n_gathering)
    bool finished;       //  Stream or cut ended on purpose: not a client abort
};

struct _mock_upstream_t {
    struct MHD_Daemon *daemon;     //  The HTTP server
    mock_waiter_t waiter;          //  Holds suspended connections and their deadlines
    bool waiter_started;           //  The waiter thread runs
    atomic_bool stopping;          //  Destroy in progress
    uint16_t port;                 //  Bound port
    char *require_key;             //  Key every API call must carry, or NULL
    char *aliases;                 //  "FROM=TO,..." paths served as others, or NULL
    char **models;                 //  Model list for the list endpoints
    size_t n_models;               //  Its length
    bool verbose;                  //  Log each request
    atomic_ulong seq;              //  Request numbers for ids
    pthread_mutex_t mutex;         //  Guards the counters and fault tables below
    json_t *static_faults;         //  model -> spec, from --fault; survive reset
    json_t *runtime_faults;        //  model -> spec, from POST /mock/faults
    json_t *flap_counts;           //  model -> requests seen under a flap fault
    unsigned long requests_total;  //  API requests (not /mock/*)
    json_t *paths;                 //  path -> count
    json_t *models_seen;           //  model -> count
    json_t *keys;                  //  API key -> count
    json_t *statuses;              //  "status" -> count
    unsigned long faults_injected; //  Requests that had any fault in force
    unsigned long client_aborts;   //  Streams/holds ended by the client going away
    unsigned long streams_started; //  Streamed answers started
    long open_streams;             //  Streams and held requests now open
    long max_open_streams;         //  High-water mark of open_streams
    json_t *last;                  //  Summary of the last API request
    char *last_body;               //  Its body (at most MOCK_MAX_LAST_BODY bytes)
    size_t last_body_len;          //  Its length
    size_t last_body_size;         //  The untruncated body size
    mock_journal_t *journal;       //  Every API request, for GET /mock/requests
};

//  Drops one reference (cls is a mock_req_t; MHD's free callback shape); frees on the last.
void mock_req_unref(void *cls);

//  A request header's value, or NULL. Borrowed from MHD for the connection's lifetime.
const char *mock_req_header(mock_req_t *req, const char *name);

#endif
