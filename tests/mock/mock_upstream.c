/*  mock_upstream - a fake OpenAI / Anthropic / Gemini upstream for Tollgate's tests

    How it stays fast and never blocks: libmicrohttpd runs N epoll worker threads. Nothing
    ever sleeps inside an MHD callback. A request that must wait (delay-headers, hang, the gap
    between two stream chunks under delay-chunks) suspends its connection and hands it to one
    "waiter" thread, which owns an epoll set of the waiting sockets and a list of deadlines.
    The waiter resumes a connection when its deadline passes, or as soon as the client hangs
    up (EPOLLRDHUP) - MHD itself does not notice a disconnect while a connection is
    suspended, and tests need client aborts to be seen promptly (client_aborts in stats).

    Streams are produced lazily: at dispatch time we only compute the list of event kinds;
    each event is rendered when MHD asks for more body (content reader callback), so a
    100000-chunk stream costs a few bytes per chunk until it is sent.
*/

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
//  Asserts guard our own invariants and drive the self test: they stay on in release builds.
#undef NDEBUG
#include "mock_agent.h"
#include "mock_upstream.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define S_MAX_CHUNKS 100000   //  Cap on x-mock-chunks / mock-N, to bound memory
#define S_DEFAULT_CHUNKS 5    //  Reply length when nothing asks otherwise
#define S_MAX_LAST_BODY 65536 //  Bytes of the last request body kept for /mock/stats
#define S_TOOL_ARGS "{\"location\":\"Paris\"}"
#define S_NEVER UINT64_MAX

//  -------------------------------------------------------------------------
//  Small growable buffer

typedef struct {
    char *data; //  NUL-terminated contents, or NULL when empty
    size_t len; //  Bytes used, excluding the terminator
    size_t cap; //  Bytes allocated
} s_buf_t;

static int s_buf_reserve(s_buf_t *self, size_t extra)
{
    if (self->len + extra + 1 <= self->cap)
        return 0;
    size_t cap = self->cap ? self->cap : 256;
    while (cap < self->len + extra + 1)
        cap *= 2;
    char *data = realloc(self->data, cap);
    if (!data)
        return -1;
    self->data = data;
    self->cap = cap;
    return 0;
}

static int s_buf_append(s_buf_t *self, const char *bytes, size_t size)
{
    if (s_buf_reserve(self, size))
        return -1;
    memcpy(self->data + self->len, bytes, size);
    self->len += size;
    self->data[self->len] = 0;
    return 0;
}

static int s_buf_appendf(s_buf_t *self, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    int size = vsnprintf(NULL, 0, format, args);
    va_end(args);
    if (size < 0 || s_buf_reserve(self, (size_t)size))
        return -1;
    va_start(args, format);
    vsnprintf(self->data + self->len, (size_t)size + 1, format, args);
    va_end(args);
    self->len += (size_t)size;
    return 0;
}

static void s_buf_reset(s_buf_t *self)
{
    free(self->data);
    memset(self, 0, sizeof(*self));
}

static uint64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

//  -------------------------------------------------------------------------
//  Fault specs

typedef struct {
    int status;           //  HTTP error status to answer with, 0 = none
    int retry_after;      //  Retry-After seconds for 429
    int delay_headers_ms; //  Wait this long before sending the response headers
    int delay_chunks_ms;  //  Wait this long between two stream events
    int cut_after;        //  Stream: close after this many events; body: after half; -1 = off
    int flap;             //  Every Nth request for the model fails with 500; 0 = off
    bool hang;            //  Never answer; hold the connection until the client leaves
    bool malformed;       //  Invalid JSON body / one malformed SSE data line
    bool no_terminator;   //  Stream ends cleanly at HTTP level but without its terminator
    int cached_tokens;    //  Report this many prompt tokens as cached (as x-mock-cached-tokens)
} s_fault_t;

static bool s_parse_int(const char *text, int low, int high, int *value)
{
    if (!text || !*text)
        return false;
    char *end;
    errno = 0;
    long number = strtol(text, &end, 10);
    if (errno || *end || number < low || number > high)
        return false;
    *value = (int)number;
    return true;
}

//  Parses SPEC, a comma-separated list; returns 0 or -1 if any item is unknown.
static int s_fault_parse_items(const char *spec, s_fault_t *fault)
{
    memset(fault, 0, sizeof(*fault));
    fault->cut_after = -1;
    if (!spec)
        return 0;
    char copy[256];
    if (strlen(spec) >= sizeof(copy))
        return -1;
    strcpy(copy, spec);
    char *save = NULL;
    for (char *item = strtok_r(copy, ", ", &save); item; item = strtok_r(NULL, ", ", &save)) {
        char *arg = strchr(item, ':');
        if (arg)
            *arg++ = 0;
        int value;
        if (s_parse_int(item, 400, 599, &value)) {
            fault->status = value;
            fault->retry_after = 1;
            if (arg && !(value == 429 && s_parse_int(arg, 0, 86400, &fault->retry_after)))
                return -1;
        } else if (!strcmp(item, "delay-headers") && s_parse_int(arg, 0, 3600000, &value))
            fault->delay_headers_ms = value;
        else if (!strcmp(item, "delay-chunks") && s_parse_int(arg, 0, 3600000, &value))
            fault->delay_chunks_ms = value;
        else if (!strcmp(item, "cut") && s_parse_int(arg, 0, S_MAX_CHUNKS * 2, &value))
            fault->cut_after = value;
        else if (!strcmp(item, "flap") && s_parse_int(arg, 1, 1000000, &value))
            fault->flap = value;
        else if (!strcmp(item, "hang") && !arg)
            fault->hang = true;
        else if (!strcmp(item, "malformed") && !arg)
            fault->malformed = true;
        else if (!strcmp(item, "no-terminator") && !arg)
            fault->no_terminator = true;
        else if (!strcmp(item, "cached") && s_parse_int(arg, 0, 1 << 30, &value))
            fault->cached_tokens = value;
        else
            return -1;
    }
    return 0;
}

//  A spec that does not parse leaves no partial fault behind.
static int s_fault_parse(const char *spec, s_fault_t *fault)
{
    if (s_fault_parse_items(spec, fault) == 0)
        return 0;
    memset(fault, 0, sizeof(*fault));
    fault->cut_after = -1;
    return -1;
}

//  -------------------------------------------------------------------------
//  Protocols, routes and stream events

typedef enum { P_OPENAI, P_ANTHROPIC, P_GEMINI } s_proto_t;

typedef enum {
    R_NOT_FOUND,
    R_CHAT,          //  POST /v1/chat/completions
    R_RESPONSES,     //  POST /v1/responses
    R_EMBEDDINGS,    //  POST /v1/embeddings
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
} s_route_t;

//  One stream event; its text is rendered only when it is about to be sent.
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
} s_event_kind_t;

typedef struct {
    uint8_t kind; //  s_event_kind_t
    int arg;      //  Piece index for delta events
} s_event_t;

typedef enum { PH_NEW, PH_WAIT, PH_QUEUED } s_phase_t;

typedef struct _s_waiter_t s_waiter_t;

//  Per-request state; *con_cls for MHD. Reference counted because both the connection (until
//  MHD_OPTION_NOTIFY_COMPLETED) and a callback response (until its free callback) hold it,
//  and MHD does not promise which of the two lets go first.
typedef struct {
    atomic_int refs;             //  Owners: the connection, plus a callback response
    mock_upstream_t *owner;      //  Daemon this request belongs to
    struct MHD_Connection *conn; //  Connection, valid until completed
    char *path;                  //  URL path without query
    char *method;                //  HTTP method
    s_buf_t body;                //  Accumulated request body
    bool too_large;              //  Body exceeded MOCK_UPSTREAM_MAX_BODY; answer 413
    s_phase_t phase;             //  Where the request is in its life
    s_route_t route;             //  What the path asked for
    s_proto_t proto;             //  Which API's shapes to answer in
    //  Reply plan, computed once at dispatch
    s_fault_t fault;       //  Fault in force for this request
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
    unsigned long seq;     //  Per-daemon request number, used in ids
    long created;          //  Unix time of the request
    s_event_t *events;     //  Stream plan
    int n_events;          //  Its length
    int malformed_event;   //  Index of the event to break, -1 none
    //  Stream progress (content reader side)
    int next_event;    //  Next event to render
    s_buf_t out;       //  Rendered bytes not yet handed to MHD
    size_t out_off;    //  How much of out was handed over
    size_t body_sent;  //  Non-stream cut: bytes of reply handed over
    uint64_t next_due; //  Monotonic ms when the next event may go
    int events_sent;   //  Events handed to MHD (cut:N counts these)
    //  Waiting and accounting
    uint64_t wait_due;   //  Deadline while parked in the waiter, S_NEVER for hang
    int wait_fd;         //  Socket watched for hang-up while parked, -1 none
    atomic_bool aborted; //  The waiter saw the client hang up
    bool held;           //  Counted in open_streams
    bool finished;       //  Stream or cut ended on purpose: not a client abort
} s_req_t;

struct _s_waiter_t {
    pthread_t thread;      //  Runs s_waiter_run
    pthread_mutex_t mutex; //  Guards everything below
    int epfd;              //  Sockets of parked connections, watched for EPOLLRDHUP
    int evfd;              //  Wakes the thread when an earlier deadline arrives or on stop
    s_req_t **items;       //  Parked requests
    size_t n_items;        //  How many
    size_t cap_items;      //  Allocated slots
    uint64_t next_wake;    //  Deadline the thread currently sleeps towards
    bool stopping;         //  Destroy in progress: resume everything, accept nothing
};

struct _mock_upstream_t {
    struct MHD_Daemon *daemon;     //  The HTTP server
    s_waiter_t waiter;             //  Holds suspended connections and their deadlines
    bool waiter_started;           //  The waiter thread runs
    atomic_bool stopping;          //  Destroy in progress
    uint16_t port;                 //  Bound port
    char *require_key;             //  Key every API call must carry, or NULL
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
    char *last_body;               //  Its body (at most S_MAX_LAST_BODY bytes)
    size_t last_body_len;          //  Its length
    size_t last_body_size;         //  The untruncated body size
    mock_journal_t *journal;       //  Every API request, for GET /mock/requests
};

static void s_req_unref(void *cls)
{
    s_req_t *self = cls;
    if (!self || atomic_fetch_sub(&self->refs, 1) != 1)
        return;
    free(self->path);
    free(self->method);
    s_buf_reset(&self->body);
    free(self->reply);
    free(self->tool_name);
    free(self->model);
    for (int index = 0; index < self->n_pieces; index++)
        free(self->pieces[index]);
    free(self->pieces);
    free(self->full_text);
    free(self->events);
    s_buf_reset(&self->out);
    free(self);
}

//  -------------------------------------------------------------------------
//  Waiter: parks suspended connections until a deadline or the client's hang-up

static void s_waiter_signal(s_waiter_t *self)
{
    uint64_t one = 1;
    //  A full eventfd counter still wakes the reader, so a failed write is harmless.
    if (write(self->evfd, &one, sizeof(one)) < 0)
        return;
}

static void *s_waiter_run(void *args)
{
    s_waiter_t *self = args;
    size_t cap_ready = 64;
    s_req_t **ready = malloc(cap_ready * sizeof(*ready));
    assert(ready);
    while (true) {
        pthread_mutex_lock(&self->mutex);
        uint64_t next = S_NEVER;
        for (size_t index = 0; index < self->n_items; index++)
            if (self->items[index]->wait_due < next)
                next = self->items[index]->wait_due;
        self->next_wake = next;
        bool stopping = self->stopping;
        pthread_mutex_unlock(&self->mutex);

        int timeout = -1;
        if (stopping)
            timeout = 0;
        else if (next != S_NEVER) {
            uint64_t now = s_now_ms();
            timeout = next <= now ? 0 : (next - now > 60000 ? 60000 : (int)(next - now));
        }
        struct epoll_event events[64];
        int count = epoll_wait(self->epfd, events, 64, timeout);

        pthread_mutex_lock(&self->mutex);
        //  Only this thread removes items, so every pointer epoll returns is still parked.
        for (int index = 0; index < count; index++) {
            s_req_t *req = events[index].data.ptr;
            if (req)
                atomic_store(&req->aborted, true);
            else {
                uint64_t drain;
                if (read(self->evfd, &drain, sizeof(drain)) < 0)
                    drain = 0;
            }
        }
        uint64_t now = s_now_ms();
        size_t n_ready = 0;
        for (size_t index = 0; index < self->n_items;) {
            s_req_t *req = self->items[index];
            if (self->stopping || atomic_load(&req->aborted) || req->wait_due <= now) {
                //  Forget the socket before resuming: once resumed it may close and its
                //  number be reused by another connection.
                if (req->wait_fd >= 0)
                    epoll_ctl(self->epfd, EPOLL_CTL_DEL, req->wait_fd, NULL);
                if (n_ready == cap_ready) {
                    cap_ready *= 2;
                    s_req_t **grown = realloc(ready, cap_ready * sizeof(*ready));
                    assert(grown);
                    ready = grown;
                }
                ready[n_ready++] = req;
                self->items[index] = self->items[--self->n_items];
            } else
                index++;
        }
        stopping = self->stopping;
        pthread_mutex_unlock(&self->mutex);

        //  Resume outside our lock: MHD takes its own locks in here.
        for (size_t index = 0; index < n_ready; index++)
            MHD_resume_connection(ready[index]->conn);
        if (stopping)
            break;
    }
    free(ready);
    return NULL;
}

static int s_waiter_start(s_waiter_t *self)
{
    memset(self, 0, sizeof(*self));
    pthread_mutex_init(&self->mutex, NULL);
    self->next_wake = S_NEVER;
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    self->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (self->epfd < 0 || self->evfd < 0)
        return -1;
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, self->evfd, &event))
        return -1;
    return pthread_create(&self->thread, NULL, s_waiter_run, self) ? -1 : 0;
}

//  Parks a request whose connection the caller has just suspended. Returns -1 if the
//  waiter is stopping; the caller must then resume the connection itself.
static int s_waiter_park(s_waiter_t *self, s_req_t *req, uint64_t due)
{
    pthread_mutex_lock(&self->mutex);
    if (self->stopping) {
        pthread_mutex_unlock(&self->mutex);
        return -1;
    }
    if (self->n_items == self->cap_items) {
        size_t cap = self->cap_items ? self->cap_items * 2 : 64;
        s_req_t **items = realloc(self->items, cap * sizeof(*items));
        if (!items) {
            pthread_mutex_unlock(&self->mutex);
            return -1;
        }
        self->items = items;
        self->cap_items = cap;
    }
    req->wait_due = due;
    self->items[self->n_items++] = req;
    if (req->wait_fd >= 0) {
        struct epoll_event event = {.events = EPOLLRDHUP, .data.ptr = req};
        if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, req->wait_fd, &event) && errno == EEXIST)
            epoll_ctl(self->epfd, EPOLL_CTL_MOD, req->wait_fd, &event);
    }
    //  The thread only needs waking when this deadline is earlier than the one it sleeps
    //  towards; this keeps a thousand chunk-delayed streams from waking it per chunk.
    bool wake = due < self->next_wake;
    if (wake)
        self->next_wake = due;
    pthread_mutex_unlock(&self->mutex);
    if (wake)
        s_waiter_signal(self);
    return 0;
}

static void s_waiter_stop(s_waiter_t *self)
{
    pthread_mutex_lock(&self->mutex);
    self->stopping = true;
    pthread_mutex_unlock(&self->mutex);
    s_waiter_signal(self);
    pthread_join(self->thread, NULL);
}

static void s_waiter_close(s_waiter_t *self)
{
    if (self->epfd >= 0)
        close(self->epfd);
    if (self->evfd >= 0)
        close(self->evfd);
    free(self->items);
    pthread_mutex_destroy(&self->mutex);
}

//  Suspends req's connection until due (or the client leaves). Must be called from an MHD
//  callback of that connection. Returns 0, or -1 when shutting down (connection not held).
static int s_hold(s_req_t *req, uint64_t due)
{
    mock_upstream_t *self = req->owner;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    req->wait_fd = info ? info->connect_fd : -1;
    MHD_suspend_connection(req->conn);
    if (s_waiter_park(&self->waiter, req, due)) {
        MHD_resume_connection(req->conn);
        return -1;
    }
    return 0;
}

//  -------------------------------------------------------------------------
//  Counters

static void s_count(json_t *map, const char *key)
{
    json_t *value = json_object_get(map, key);
    if (value)
        json_integer_set(value, json_integer_value(value) + 1);
    else
        json_object_set_new(map, key, json_integer(1));
}

static void s_open_stream(mock_upstream_t *self, s_req_t *req)
{
    if (req->held)
        return;
    req->held = true;
    pthread_mutex_lock(&self->mutex);
    if (++self->open_streams > self->max_open_streams)
        self->max_open_streams = self->open_streams;
    pthread_mutex_unlock(&self->mutex);
}

static void s_reset_counters(mock_upstream_t *self)
{
    json_decref(self->paths);
    json_decref(self->models_seen);
    json_decref(self->keys);
    json_decref(self->statuses);
    json_decref(self->flap_counts);
    json_decref(self->runtime_faults);
    json_decref(self->last);
    free(self->last_body);
    self->paths = json_object();
    self->models_seen = json_object();
    self->keys = json_object();
    self->statuses = json_object();
    self->flap_counts = json_object();
    self->runtime_faults = json_object();
    self->last = json_null();
    self->last_body = NULL;
    self->last_body_len = self->last_body_size = 0;
    self->requests_total = self->faults_injected = 0;
    self->client_aborts = self->streams_started = 0;
    //  open_streams describes live connections, so a reset keeps it; the peak restarts there.
    self->max_open_streams = self->open_streams;
}

//  -------------------------------------------------------------------------
//  Request reading helpers

static const char *s_header(s_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

static enum MHD_Result s_collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value)
{
    (void)kind;
    char name[128];
    size_t size = strlen(key);
    if (size >= sizeof(name))
        return MHD_YES;
    for (size_t index = 0; index <= size; index++)
        name[index] = (char)(key[index] >= 'A' && key[index] <= 'Z' ? key[index] + 32 : key[index]);
    json_object_set_new(cls, name, json_string(value ? value : ""));
    return MHD_YES;
}

//  Concatenated text of a message whose content is a string or an array of parts with
//  "text" members (OpenAI, Anthropic, Responses) or a Gemini "parts" array.
static void s_text_of(json_t *content, s_buf_t *text)
{
    if (json_is_string(content)) {
        s_buf_append(text, json_string_value(content), json_string_length(content));
        return;
    }
    size_t index;
    json_t *part;
    json_array_foreach(content, index, part)
    {
        json_t *value = json_object_get(part, "text");
        if (json_is_string(value))
            s_buf_append(text, json_string_value(value), json_string_length(value));
    }
}

//  Text of the conversation's final message if, and only if, it is a user message. A
//  conversation ending in a tool result (OpenAI role "tool", Responses function_call_output,
//  Anthropic tool_result, Gemini functionResponse) yields no text, so a tool-call round trip
//  ends with a plain answer instead of calling the tool again.
static void s_last_user_text(s_req_t *req, json_t *body, s_buf_t *text)
{
    json_t *last = NULL;
    if (req->route == R_RESPONSES) {
        json_t *input = json_object_get(body, "input");
        if (json_is_string(input)) {
            s_text_of(input, text);
            return;
        }
        last = json_array_get(input, json_array_size(input) - 1);
        const char *type = json_string_value(json_object_get(last, "type"));
        if (type && strcmp(type, "message"))
            return;
    } else if (req->proto == P_GEMINI) {
        json_t *contents = json_object_get(body, "contents");
        last = json_array_get(contents, json_array_size(contents) - 1);
        const char *role = json_string_value(json_object_get(last, "role"));
        if (!role || !strcmp(role, "user"))
            s_text_of(json_object_get(last, "parts"), text);
        return;
    } else {
        json_t *messages = json_object_get(body, "messages");
        last = json_array_get(messages, json_array_size(messages) - 1);
    }
    const char *role = json_string_value(json_object_get(last, "role"));
    if (role && !strcmp(role, "user"))
        s_text_of(json_object_get(last, "content"), text);
}

//  Name of the first function tool the request defines, or NULL.
static const char *s_first_tool(s_req_t *req, json_t *body)
{
    json_t *tools = json_object_get(body, "tools");
    size_t index;
    json_t *tool;
    json_array_foreach(tools, index, tool)
    {
        const char *name = NULL;
        if (req->proto == P_GEMINI) {
            json_t *decls = json_object_get(tool, "functionDeclarations");
            if (!decls)
                decls = json_object_get(tool, "function_declarations");
            name = json_string_value(json_object_get(json_array_get(decls, 0), "name"));
        } else if (req->route == R_CHAT)
            name = json_string_value(json_object_get(json_object_get(tool, "function"), "name"));
        else
            name = json_string_value(json_object_get(tool, "name"));
        if (name)
            return name;
    }
    if (req->route == R_CHAT) //  Legacy "functions"
        return json_string_value(
            json_object_get(json_array_get(json_object_get(body, "functions"), 0), "name"));
    return NULL;
}

static int s_add_piece(s_req_t *req, const char *bytes, size_t size)
{
    char **pieces = realloc(req->pieces, (size_t)(req->n_pieces + 1) * sizeof(*pieces));
    if (!pieces)
        return -1;
    req->pieces = pieces;
    //  Upload data is not NUL-terminated: copy exactly `size` bytes.
    char *piece = malloc(size + 1);
    if (!piece)
        return -1;
    memcpy(piece, bytes, size);
    piece[size] = '\0';
    req->pieces[req->n_pieces++] = piece;
    return 0;
}

//  Decides what the reply says: tool call, echo, or N words. Fills pieces and tokens.
static int s_plan_reply(s_req_t *req, json_t *body)
{
    s_buf_t text = {0};
    s_last_user_text(req, body, &text);
    const char *tool = s_first_tool(req, body);
    int rc = 0;
    mock_agent_plan_t plan;
    mock_agent_api_t api = req->route == R_RESPONSES   ? MOCK_AGENT_RESPONSES
                           : req->proto == P_GEMINI    ? MOCK_AGENT_GEMINI
                           : req->proto == P_ANTHROPIC ? MOCK_AGENT_ANTHROPIC
                                                       : MOCK_AGENT_CHAT;
    mock_agent_reply_t scripted = mock_agent_plan(body, api, &plan);
    if (scripted == MOCK_AGENT_CALL) {
        //  An agent's own tool with the arguments the test chose (mock_agent.h).
        size_t half = strlen(plan.arguments) / 2;
        req->tool = true;
        req->tool_name = strdup(plan.tool);
        rc = s_add_piece(req, plan.arguments, half) ||
             s_add_piece(req, plan.arguments + half, strlen(plan.arguments) - half);
    } else if (scripted == MOCK_AGENT_TEXT) {
        const char *start = plan.text;
        while (*start && !rc) {
            const char *end = start;
            while (*end == ' ')
                end++;
            while (*end && *end != ' ')
                end++;
            rc = s_add_piece(req, start, (size_t)(end - start));
            start = end;
        }
    } else if (tool && text.data && strstr(text.data, "call_tool")) {
        //  Split the arguments so a streaming client must reassemble them.
        const char *args = S_TOOL_ARGS;
        req->tool = true;
        req->tool_name = strdup(tool);
        rc = s_add_piece(req, args, 12) || s_add_piece(req, args + 12, strlen(args) - 12);
    } else if (text.data && !strncmp(text.data, "echo:", 5)) {
        //  One piece per word, each carrying its leading spaces, so pieces rejoin exactly.
        const char *start = text.data + 5;
        while (*start && !rc) {
            const char *end = start;
            while (*end == ' ')
                end++;
            while (*end && *end != ' ')
                end++;
            rc = s_add_piece(req, start, (size_t)(end - start));
            start = end;
        }
    } else {
        static const char *words[] = {" Hello", " from", " mock", " upstream", " model"};
        int chunks = S_DEFAULT_CHUNKS;
        const char *header = s_header(req, "x-mock-chunks");
        if (header)
            s_parse_int(header, 0, S_MAX_CHUNKS, &chunks);
        else if (!strncmp(req->model, "mock-", 5))
            s_parse_int(req->model + 5, 0, S_MAX_CHUNKS, &chunks);
        for (int index = 0; index < chunks && !rc; index++) {
            const char *word = words[index % 5] + (index == 0); //  No leading space at first
            rc = s_add_piece(req, word, strlen(word));
        }
    }
    s_buf_reset(&text);
    mock_agent_plan_clear(&plan);
    if (rc || (req->tool && !req->tool_name))
        return -1;
    s_buf_t full = {0};
    for (int index = 0; index < req->n_pieces; index++)
        s_buf_append(&full, req->pieces[index], strlen(req->pieces[index]));
    req->full_text = full.data ? full.data : strdup("");
    req->completion_tokens = req->n_pieces;
    return req->full_text ? 0 : -1;
}

//  -------------------------------------------------------------------------
//  Response shapes

//  Error body in the API's own shape. An unknown URL is not a missing model, so it carries
//  no OpenAI "model_not_found" code.
static json_t *s_error_json(s_proto_t proto, int status, const char *message, bool bad_url)
{
    if (proto == P_ANTHROPIC) {
        const char *type = status == 400                    ? "invalid_request_error"
                           : status == 401                  ? "authentication_error"
                           : status == 403                  ? "permission_error"
                           : status == 404                  ? "not_found_error"
                           : status == 413                  ? "request_too_large"
                           : status == 429                  ? "rate_limit_error"
                           : status == 503 || status == 529 ? "overloaded_error"
                           : status >= 500                  ? "api_error"
                                                            : "invalid_request_error";
        return json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type", type, "message",
                         message);
    }
    if (proto == P_GEMINI) {
        const char *state = status == 400                    ? "INVALID_ARGUMENT"
                            : status == 401                  ? "UNAUTHENTICATED"
                            : status == 403                  ? "PERMISSION_DENIED"
                            : status == 404                  ? "NOT_FOUND"
                            : status == 429                  ? "RESOURCE_EXHAUSTED"
                            : status == 502 || status == 503 ? "UNAVAILABLE"
                            : status == 504                  ? "DEADLINE_EXCEEDED"
                            : status >= 500                  ? "INTERNAL"
                                                             : "INVALID_ARGUMENT";
        return json_pack("{s:{s:i, s:s, s:s}}", "error", "code", status, "message", message,
                         "status", state);
    }
    const char *type = status == 429   ? "requests"
                       : status >= 500 ? "server_error"
                                       : "invalid_request_error";
    const char *code = status == 401               ? "invalid_api_key"
                       : status == 403             ? "permission_denied"
                       : status == 404 && !bad_url ? "model_not_found"
                       : status == 413             ? "request_too_large"
                       : status == 429             ? "rate_limit_exceeded"
                                                   : NULL;
    return json_pack("{s:{s:s, s:s, s:n, s:o}}", "error", "message", message, "type", type, "param",
                     "code", code ? json_string(code) : json_null());
}

static void s_set_json(s_req_t *req, int status, json_t *object)
{
    free(req->reply);
    req->status = status;
    req->ctype = "application/json";
    //  Embeddings are float32 upstream; nine significant digits round-trip a float.
    req->reply = object ? json_dumps(object, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    req->reply_len = req->reply ? strlen(req->reply) : 0;
    req->stream = false;
    json_decref(object);
}

static void s_set_error(s_req_t *req, int status, const char *message)
{
    s_set_json(req, status, s_error_json(req->proto, status, message, req->route == R_NOT_FOUND));
}

static json_t *s_chat_usage(s_req_t *req)
{
    return json_pack("{s:i, s:i, s:i, s:{s:i, s:i}, s:{s:i, s:i}}", "prompt_tokens",
                     req->prompt_tokens, "completion_tokens", req->completion_tokens,
                     "total_tokens", req->prompt_tokens + req->completion_tokens,
                     "prompt_tokens_details", "cached_tokens", req->cached_tokens, "audio_tokens",
                     0, "completion_tokens_details", "reasoning_tokens", 0, "audio_tokens", 0);
}

static json_t *s_resp_usage(s_req_t *req)
{
    return json_pack("{s:i, s:{s:i}, s:i, s:{s:i}, s:i}", "input_tokens", req->prompt_tokens,
                     "input_tokens_details", "cached_tokens", req->cached_tokens, "output_tokens",
                     req->completion_tokens, "output_tokens_details", "reasoning_tokens", 0,
                     "total_tokens", req->prompt_tokens + req->completion_tokens);
}

//  Anthropic's input_tokens excludes cache reads, which are reported on their own.
static json_t *s_anth_usage(s_req_t *req, int output_tokens)
{
    return json_pack("{s:i, s:i, s:i, s:i}", "input_tokens",
                     req->prompt_tokens - req->cached_tokens, "cache_creation_input_tokens", 0,
                     "cache_read_input_tokens", req->cached_tokens, "output_tokens", output_tokens);
}

static json_t *s_gem_usage(s_req_t *req, int candidates)
{
    return json_pack("{s:i, s:i, s:i, s:i}", "promptTokenCount", req->prompt_tokens,
                     "candidatesTokenCount", candidates, "totalTokenCount",
                     req->prompt_tokens + candidates, "cachedContentTokenCount",
                     req->cached_tokens);
}

static json_t *s_chat_tool_call(s_req_t *req, bool with_index, const char *arguments)
{
    json_t *call = json_object();
    //  Streamed tool_calls deltas are addressed by index; the final message has none.
    if (with_index)
        json_object_set_new(call, "index", json_integer(0));
    json_object_set_new(call, "id", json_sprintf("call_mock%lu", req->seq));
    json_object_set_new(call, "type", json_string("function"));
    json_object_set_new(call, "function",
                        json_pack("{s:s, s:s}", "name", req->tool_name, "arguments", arguments));
    return call;
}

static json_t *s_resp_item(s_req_t *req, bool done)
{
    const char *status = done ? "completed" : "in_progress";
    if (req->tool)
        return json_pack("{s:o, s:s, s:s, s:s, s:o, s:s}", "id",
                         json_sprintf("fc_mock%lu", req->seq), "type", "function_call", "status",
                         status, "arguments", done ? req->full_text : "", "call_id",
                         json_sprintf("call_mock%lu", req->seq), "name", req->tool_name);
    json_t *content = json_array();
    if (done)
        json_array_append_new(content, json_pack("{s:s, s:s, s:[]}", "type", "output_text", "text",
                                                 req->full_text, "annotations"));
    return json_pack("{s:o, s:s, s:s, s:s, s:o}", "id", json_sprintf("msg_mock%lu", req->seq),
                     "type", "message", "status", status, "role", "assistant", "content", content);
}

static json_t *s_resp_object(s_req_t *req, bool done)
{
    json_t *output = json_array();
    if (done)
        json_array_append_new(output, s_resp_item(req, true));
    return json_pack("{s:o, s:s, s:I, s:s, s:n, s:n, s:n, s:s, s:o, s:b, s:s, s:[], s:o}", "id",
                     json_sprintf("resp_mock%lu", req->seq), "object", "response", "created_at",
                     (json_int_t)req->created, "status", done ? "completed" : "in_progress",
                     "error", "incomplete_details", "instructions", "model", req->model, "output",
                     output, "parallel_tool_calls", 1, "tool_choice", "auto", "tools", "usage",
                     done ? s_resp_usage(req) : json_null());
}

//  The tool call's arguments as an object (they are JSON text in full_text).
static json_t *s_tool_input(s_req_t *req)
{
    json_t *input = json_loads(req->full_text ? req->full_text : "", 0, NULL);
    if (!json_is_object(input)) {
        json_decref(input);
        input = json_object();
    }
    return input;
}

static json_t *s_anth_block(s_req_t *req, bool done)
{
    if (req->tool)
        return json_pack("{s:s, s:o, s:s, s:o}", "type", "tool_use", "id",
                         json_sprintf("toolu_mock%lu", req->seq), "name", req->tool_name, "input",
                         done ? s_tool_input(req) : json_object());
    return json_pack("{s:s, s:s}", "type", "text", "text", done ? req->full_text : "");
}

static json_t *s_anth_message(s_req_t *req, bool done)
{
    json_t *content = json_array();
    if (done)
        json_array_append_new(content, s_anth_block(req, true));
    return json_pack(
        "{s:o, s:s, s:s, s:s, s:o, s:o, s:n, s:o}", "id", json_sprintf("msg_mock%lu", req->seq),
        "type", "message", "role", "assistant", "model", req->model, "content", content,
        "stop_reason", done ? json_string(req->tool ? "tool_use" : "end_turn") : json_null(),
        "stop_sequence", "usage", s_anth_usage(req, done ? req->completion_tokens : 1));
}

//  One GenerateContentResponse. parts is stolen; finish is NULL for a non-final chunk.
static json_t *s_gem_response(s_req_t *req, json_t *parts, const char *finish, int candidates)
{
    json_t *candidate =
        json_pack("{s:{s:o, s:s}, s:i}", "content", "parts", parts, "role", "model", "index", 0);
    if (finish)
        json_object_set_new(candidate, "finishReason", json_string(finish));
    return json_pack("{s:[o], s:o, s:s, s:o}", "candidates", candidate, "usageMetadata",
                     s_gem_usage(req, candidates), "modelVersion", req->model, "responseId",
                     json_sprintf("mock-%lu", req->seq));
}

static json_t *s_gem_tool_parts(s_req_t *req)
{
    return json_pack("[{s:{s:s, s:o}}]", "functionCall", "name", req->tool_name, "args",
                     s_tool_input(req));
}

//  Whole non-streamed answer for a generation route.
static json_t *s_full_answer(s_req_t *req)
{
    switch (req->route) {
    case R_CHAT: {
        json_t *message = json_pack("{s:s, s:s?, s:n}", "role", "assistant", "content",
                                    req->tool ? NULL : req->full_text, "refusal");
        if (req->tool)
            json_object_set_new(message, "tool_calls",
                                json_pack("[o]", s_chat_tool_call(req, false, req->full_text)));
        return json_pack("{s:o, s:s, s:I, s:s, s:s, s:[{s:i, s:o, s:n, s:s}], s:o}", "id",
                         json_sprintf("chatcmpl-mock%lu", req->seq), "object", "chat.completion",
                         "created", (json_int_t)req->created, "model", req->model,
                         "system_fingerprint", "fp_mock", "choices", "index", 0, "message", message,
                         "logprobs", "finish_reason", req->tool ? "tool_calls" : "stop", "usage",
                         s_chat_usage(req));
    }
    case R_RESPONSES:
        return s_resp_object(req, true);
    case R_MESSAGES:
        return s_anth_message(req, true);
    default:
        return s_gem_response(
            req, req->tool ? s_gem_tool_parts(req) : json_pack("[{s:s}]", "text", req->full_text),
            "STOP", req->completion_tokens);
    }
}

//  -------------------------------------------------------------------------
//  Stream plan and rendering

static int s_push_event(s_req_t *req, s_event_kind_t kind, int arg, int *cap)
{
    if (req->n_events == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        s_event_t *events = realloc(req->events, (size_t)*cap * sizeof(*events));
        if (!events)
            return -1;
        req->events = events;
    }
    req->events[req->n_events].kind = (uint8_t)kind;
    req->events[req->n_events++].arg = arg;
    return 0;
}

//  The event list each API sends, in order. no-terminator drops the final event(s) a client
//  uses to know the stream is complete; everything before it is unchanged.
static int s_plan_stream(s_req_t *req)
{
    int cap = 0, rc = 0;
    bool cut_end = req->fault.no_terminator;
    int n = req->n_pieces;
    switch (req->route) {
    case R_CHAT:
        rc |= s_push_event(req, req->tool ? E_CHAT_TOOL_START : E_CHAT_ROLE, 0, &cap);
        for (int index = 0; index < n; index++)
            rc |= s_push_event(req, req->tool ? E_CHAT_TOOL_DELTA : E_CHAT_DELTA, index, &cap);
        rc |= s_push_event(req, E_CHAT_FINISH, 0, &cap);
        if (req->include_usage)
            rc |= s_push_event(req, E_CHAT_USAGE, 0, &cap);
        if (!cut_end)
            rc |= s_push_event(req, E_CHAT_DONE, 0, &cap);
        break;
    case R_RESPONSES:
        rc |= s_push_event(req, E_RESP_CREATED, 0, &cap);
        rc |= s_push_event(req, E_RESP_IN_PROGRESS, 0, &cap);
        rc |= s_push_event(req, E_RESP_ITEM_ADDED, 0, &cap);
        if (!req->tool)
            rc |= s_push_event(req, E_RESP_PART_ADDED, 0, &cap);
        for (int index = 0; index < n; index++)
            rc |= s_push_event(req, req->tool ? E_RESP_ARGS_DELTA : E_RESP_TEXT_DELTA, index, &cap);
        if (req->tool)
            rc |= s_push_event(req, E_RESP_ARGS_DONE, 0, &cap);
        else {
            rc |= s_push_event(req, E_RESP_TEXT_DONE, 0, &cap);
            rc |= s_push_event(req, E_RESP_PART_DONE, 0, &cap);
        }
        rc |= s_push_event(req, E_RESP_ITEM_DONE, 0, &cap);
        if (!cut_end)
            rc |= s_push_event(req, E_RESP_COMPLETED, 0, &cap);
        break;
    case R_MESSAGES:
        rc |= s_push_event(req, E_ANTH_START, 0, &cap);
        rc |= s_push_event(req, E_ANTH_BLOCK_START, 0, &cap);
        rc |= s_push_event(req, E_ANTH_PING, 0, &cap);
        for (int index = 0; index < n; index++)
            rc |= s_push_event(req, E_ANTH_DELTA, index, &cap);
        rc |= s_push_event(req, E_ANTH_BLOCK_STOP, 0, &cap);
        rc |= s_push_event(req, E_ANTH_MSG_DELTA, 0, &cap);
        if (!cut_end)
            rc |= s_push_event(req, E_ANTH_STOP, 0, &cap);
        break;
    default: //  Gemini: no terminator of its own; the last chunk carries finishReason
        if (req->tool)
            rc |= s_push_event(req, E_GEM_TOOL, 0, &cap);
        else {
            for (int index = 0; index < n; index++)
                rc |= s_push_event(req, E_GEM_CHUNK, index, &cap);
            if (!cut_end)
                rc |= s_push_event(req, E_GEM_FINAL, 0, &cap);
        }
        if (!req->gemini_sse && !cut_end)
            rc |= s_push_event(req, E_GEM_ARRAY_END, 0, &cap);
        break;
    }
    //  Break the first content-bearing event (index 1), or the only one.
    req->malformed_event = req->fault.malformed ? (req->n_events > 1 ? 1 : 0) : -1;
    return rc ? -1 : 0;
}

static json_t *s_chat_chunk(s_req_t *req, json_t *delta, const char *finish)
{
    json_t *chunk =
        json_pack("{s:o, s:s, s:I, s:s, s:s, s:[{s:i, s:o, s:n, s:o}]}", "id",
                  json_sprintf("chatcmpl-mock%lu", req->seq), "object", "chat.completion.chunk",
                  "created", (json_int_t)req->created, "model", req->model, "system_fingerprint",
                  "fp_mock", "choices", "index", 0, "delta", delta, "logprobs", "finish_reason",
                  finish ? json_string(finish) : json_null());
    //  With include_usage every chunk carries "usage": null until the final usage chunk.
    if (req->include_usage)
        json_object_set_new(chunk, "usage", json_null());
    return chunk;
}

//  Renders event number index into req->out.
static int s_render_event(s_req_t *req, int index)
{
    s_event_t *event = &req->events[index];
    const char *piece = event->arg < req->n_pieces ? req->pieces[event->arg] : "";
    const char *name = NULL; //  SSE "event:" field, when the API uses one
    json_t *data = NULL;
    char *item_id = NULL;
    int seq = index; //  Responses sequence_number
    switch ((s_event_kind_t)event->kind) {
    case E_CHAT_ROLE:
        data = s_chat_chunk(
            req, json_pack("{s:s, s:s, s:n}", "role", "assistant", "content", "", "refusal"), NULL);
        break;
    case E_CHAT_DELTA:
        data = s_chat_chunk(req, json_pack("{s:s}", "content", piece), NULL);
        break;
    case E_CHAT_TOOL_START:
        data = s_chat_chunk(req,
                            json_pack("{s:s, s:n, s:[o]}", "role", "assistant", "content",
                                      "tool_calls", s_chat_tool_call(req, true, "")),
                            NULL);
        break;
    case E_CHAT_TOOL_DELTA:
        data = s_chat_chunk(req,
                            json_pack("{s:[{s:i, s:{s:s}}]}", "tool_calls", "index", 0, "function",
                                      "arguments", piece),
                            NULL);
        break;
    case E_CHAT_FINISH:
        data = s_chat_chunk(req, json_object(), req->tool ? "tool_calls" : "stop");
        break;
    case E_CHAT_USAGE:
        data =
            json_pack("{s:o, s:s, s:I, s:s, s:s, s:[], s:o}", "id",
                      json_sprintf("chatcmpl-mock%lu", req->seq), "object", "chat.completion.chunk",
                      "created", (json_int_t)req->created, "model", req->model,
                      "system_fingerprint", "fp_mock", "choices", "usage", s_chat_usage(req));
        break;
    case E_CHAT_DONE:
        return s_buf_appendf(&req->out, "data: [DONE]\n\n");
    case E_RESP_CREATED:
    case E_RESP_IN_PROGRESS:
    case E_RESP_COMPLETED:
        name = event->kind == E_RESP_CREATED       ? "response.created"
               : event->kind == E_RESP_IN_PROGRESS ? "response.in_progress"
                                                   : "response.completed";
        data = json_pack("{s:s, s:i, s:o}", "type", name, "sequence_number", seq, "response",
                         s_resp_object(req, event->kind == E_RESP_COMPLETED));
        break;
    case E_RESP_ITEM_ADDED:
    case E_RESP_ITEM_DONE:
        name = event->kind == E_RESP_ITEM_ADDED ? "response.output_item.added"
                                                : "response.output_item.done";
        data =
            json_pack("{s:s, s:i, s:i, s:o}", "type", name, "sequence_number", seq, "output_index",
                      0, "item", s_resp_item(req, event->kind == E_RESP_ITEM_DONE));
        break;
    default:
        break;
    }
    if (event->kind >= E_RESP_PART_ADDED && event->kind <= E_RESP_ARGS_DONE) {
        //  Responses events addressed to the output item (a contiguous run of the enum)
        if (asprintf(&item_id, req->tool ? "fc_mock%lu" : "msg_mock%lu", req->seq) < 0)
            return -1;
        switch ((s_event_kind_t)event->kind) {
        case E_RESP_PART_ADDED:
        case E_RESP_PART_DONE:
            name = event->kind == E_RESP_PART_ADDED ? "response.content_part.added"
                                                    : "response.content_part.done";
            data = json_pack("{s:s, s:i, s:s, s:i, s:i, s:{s:s, s:s, s:[]}}", "type", name,
                             "sequence_number", seq, "item_id", item_id, "output_index", 0,
                             "content_index", 0, "part", "type", "output_text", "text",
                             event->kind == E_RESP_PART_DONE ? req->full_text : "", "annotations");
            break;
        case E_RESP_TEXT_DELTA:
        case E_RESP_TEXT_DONE:
            name = event->kind == E_RESP_TEXT_DELTA ? "response.output_text.delta"
                                                    : "response.output_text.done";
            data =
                json_pack("{s:s, s:i, s:s, s:i, s:i, s:s, s:[]}", "type", name, "sequence_number",
                          seq, "item_id", item_id, "output_index", 0, "content_index", 0,
                          event->kind == E_RESP_TEXT_DELTA ? "delta" : "text",
                          event->kind == E_RESP_TEXT_DELTA ? piece : req->full_text, "logprobs");
            break;
        case E_RESP_ARGS_DELTA:
            name = "response.function_call_arguments.delta";
            data = json_pack("{s:s, s:i, s:s, s:i, s:s}", "type", name, "sequence_number", seq,
                             "item_id", item_id, "output_index", 0, "delta", piece);
            break;
        case E_RESP_ARGS_DONE:
            name = "response.function_call_arguments.done";
            data = json_pack("{s:s, s:i, s:s, s:i, s:s, s:s}", "type", name, "sequence_number", seq,
                             "item_id", item_id, "output_index", 0, "name", req->tool_name,
                             "arguments", req->full_text);
            break;
        default:
            break;
        }
        free(item_id);
    }
    if (!data) {
        switch ((s_event_kind_t)event->kind) {
        case E_ANTH_START:
            name = "message_start";
            data = json_pack("{s:s, s:o}", "type", name, "message", s_anth_message(req, false));
            break;
        case E_ANTH_BLOCK_START:
            name = "content_block_start";
            data = json_pack("{s:s, s:i, s:o}", "type", name, "index", 0, "content_block",
                             s_anth_block(req, false));
            break;
        case E_ANTH_PING:
            name = "ping";
            data = json_pack("{s:s}", "type", name);
            break;
        case E_ANTH_DELTA:
            name = "content_block_delta";
            data = json_pack("{s:s, s:i, s:{s:s, s:s}}", "type", name, "index", 0, "delta", "type",
                             req->tool ? "input_json_delta" : "text_delta",
                             req->tool ? "partial_json" : "text", piece);
            break;
        case E_ANTH_BLOCK_STOP:
            name = "content_block_stop";
            data = json_pack("{s:s, s:i}", "type", name, "index", 0);
            break;
        case E_ANTH_MSG_DELTA:
            name = "message_delta";
            data = json_pack("{s:s, s:{s:s, s:n}, s:{s:i}}", "type", name, "delta", "stop_reason",
                             req->tool ? "tool_use" : "end_turn", "stop_sequence", "usage",
                             "output_tokens", req->completion_tokens);
            break;
        case E_ANTH_STOP:
            name = "message_stop";
            data = json_pack("{s:s}", "type", name);
            break;
        case E_GEM_CHUNK:
            //  Like Gemini, every chunk carries usageMetadata with the running candidate
            //  count: a client must keep the last one, not add them up.
            data = s_gem_response(req, json_pack("[{s:s}]", "text", piece), NULL, event->arg + 1);
            break;
        case E_GEM_FINAL:
            data = s_gem_response(req, json_pack("[{s:s}]", "text", ""), "STOP",
                                  req->completion_tokens);
            break;
        case E_GEM_TOOL:
            data = s_gem_response(req, s_gem_tool_parts(req), "STOP", req->completion_tokens);
            break;
        case E_GEM_ARRAY_END:
            return s_buf_append(&req->out, "]", 1);
        default:
            break;
        }
    }
    if (!data)
        return -1;
    char *json = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (!json)
        return -1;
    if (index == req->malformed_event) {
        //  Cut the JSON short: still one well-formed SSE event, but its data will not parse.
        json[strlen(json) / 2] = 0;
    }
    int rc;
    if (req->route == R_CHAT)
        rc = s_buf_appendf(&req->out, "data: %s\n\n", json);
    else if (name)
        rc = s_buf_appendf(&req->out, "event: %s\ndata: %s\n\n", name, json);
    else if (req->gemini_sse)
        rc = s_buf_appendf(&req->out, "data: %s\r\n\r\n", json);
    else //  Gemini without alt=sse: one JSON array, elements sent as they are generated
        rc = s_buf_appendf(&req->out, "%s%s", index == 0 ? "[" : ",\r\n", json);
    free(json);
    return rc;
}

//  Content reader for streams. Hands over as many events as fit, or exactly one per
//  delay-chunks interval; parks the connection in the waiter between two delayed events.
static ssize_t s_stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    s_req_t *req = cls;
    mock_upstream_t *self = req->owner;
    if (atomic_load(&self->stopping) || atomic_load(&req->aborted))
        return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t written = 0;
    while (written < max) {
        if (req->out_off < req->out.len) {
            size_t size = req->out.len - req->out_off;
            if (size > max - written)
                size = max - written;
            memcpy(buf + written, req->out.data + req->out_off, size);
            written += size;
            req->out_off += size;
            continue;
        }
        req->out.len = req->out_off = 0;
        if (written && req->fault.delay_chunks_ms)
            break;
        if (req->fault.cut_after >= 0 && req->events_sent >= req->fault.cut_after) {
            if (written)
                break;
            //  MHD closes the socket without the terminating zero-length chunk.
            req->finished = true;
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (req->next_event >= req->n_events) {
            if (written)
                break;
            req->finished = true;
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (req->fault.delay_chunks_ms && req->events_sent > 0) {
            uint64_t now = s_now_ms();
            if (now < req->next_due) {
                if (s_hold(req, req->next_due))
                    return MHD_CONTENT_READER_END_WITH_ERROR;
                return 0; //  Nothing now; the waiter resumes us at next_due
            }
        }
        if (s_render_event(req, req->next_event++))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        req->events_sent++;
        if (req->fault.delay_chunks_ms)
            req->next_due = s_now_ms() + (uint64_t)req->fault.delay_chunks_ms;
    }
    return (ssize_t)written;
}

//  Content reader for a non-stream answer cut after half its body.
static ssize_t s_cut_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    s_req_t *req = cls;
    size_t half = req->reply_len / 2;
    if (pos >= half) {
        req->finished = true;
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t size = half - (size_t)pos;
    if (size > max)
        size = max;
    memcpy(buf, req->reply + pos, size);
    return (ssize_t)size;
}

//  -------------------------------------------------------------------------
//  Answering

static enum MHD_Result s_queue(s_req_t *req)
{
    mock_upstream_t *self = req->owner;
    struct MHD_Response *response;
    bool shared = false; //  The response holds a reference to req
    if (req->stream) {
        shared = true;
        atomic_fetch_add(&req->refs, 1);
        response = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, s_stream_reader, req,
                                                     s_req_unref);
        s_open_stream(self, req);
        pthread_mutex_lock(&self->mutex);
        self->streams_started++;
        pthread_mutex_unlock(&self->mutex);
    } else if (req->fault.cut_after >= 0 && req->reply) {
        shared = true;
        atomic_fetch_add(&req->refs, 1);
        response = MHD_create_response_from_callback(req->reply_len, 16384, s_cut_reader, req,
                                                     s_req_unref);
    } else {
        size_t size = req->reply_len;
        if (req->fault.malformed && req->status < 300)
            size /= 2; //  Valid HTTP, invalid JSON
        response = MHD_create_response_from_buffer(size, req->reply, MHD_RESPMEM_MUST_FREE);
        if (response)
            req->reply = NULL; //  MHD owns it now
    }
    if (!response) {
        if (shared)
            s_req_unref(req);
        return MHD_NO;
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, req->ctype);
    if (req->stream)
        MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    char value[64];
    snprintf(value, sizeof(value), "mock-%lu", req->seq);
    MHD_add_response_header(response, "x-request-id", value);
    if (req->status == 429) {
        snprintf(value, sizeof(value), "%d", req->fault.retry_after);
        MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, value);
    }
    enum MHD_Result rc = MHD_queue_response(req->conn, (unsigned)req->status, response);
    MHD_destroy_response(response);
    req->phase = PH_QUEUED;
    if (self->verbose)
        fprintf(stderr, "mock: %s %s model=%s status=%d%s\n", req->method, req->path,
                req->model ? req->model : "", req->status, req->stream ? " stream" : "");
    return rc;
}

//  Sends the plan now, or holds the connection first for delay-headers / hang.
static enum MHD_Result s_deliver(s_req_t *req)
{
    if (req->fault.hang || req->fault.delay_headers_ms) {
        uint64_t due =
            req->fault.hang ? S_NEVER : s_now_ms() + (uint64_t)req->fault.delay_headers_ms;
        s_open_stream(req->owner, req);
        req->phase = PH_WAIT;
        return s_hold(req, due) ? MHD_NO : MHD_YES;
    }
    return s_queue(req);
}

static json_t *s_models_json(mock_upstream_t *self, s_req_t *req, const char *only)
{
    json_t *list = json_array();
    for (size_t index = 0; index < self->n_models; index++) {
        const char *id = self->models[index];
        if (only && strcmp(only, id))
            continue;
        json_t *model;
        if (req->proto == P_GEMINI)
            model = json_pack("{s:o, s:s, s:s, s:s, s:s, s:i, s:i, s:[s, s, s]}", "name",
                              json_sprintf("models/%s", id), "baseModelId", id, "version", "001",
                              "displayName", id, "description", "Tollgate mock model",
                              "inputTokenLimit", 1048576, "outputTokenLimit", 8192,
                              "supportedGenerationMethods", "generateContent",
                              "streamGenerateContent", "countTokens");
        else if (req->proto == P_ANTHROPIC)
            model = json_pack("{s:s, s:s, s:s, s:s}", "type", "model", "id", id, "display_name", id,
                              "created_at", "2024-10-22T00:00:00Z");
        else
            model = json_pack("{s:s, s:s, s:i, s:s}", "id", id, "object", "model", "created",
                              1700000000, "owned_by", "tollgate-mock");
        if (only)
            return model;
        json_array_append_new(list, model);
    }
    if (only) {
        json_decref(list);
        return NULL;
    }
    if (req->proto == P_GEMINI)
        return json_pack("{s:o}", "models", list);
    if (req->proto == P_ANTHROPIC) {
        size_t size = json_array_size(list);
        return json_pack(
            "{s:o, s:b, s:o, s:o}", "data", list, "has_more", 0, "first_id",
            size ? json_deep_copy(json_object_get(json_array_get(list, 0), "id")) : json_null(),
            "last_id",
            size ? json_deep_copy(json_object_get(json_array_get(list, size - 1), "id"))
                 : json_null());
    }
    return json_pack("{s:s, s:o}", "object", "list", "data", list);
}

//  Deterministic small unit vectors: seeded from the input's text, so equal inputs embed
//  equally across runs.
static json_t *s_embeddings_json(s_req_t *req, json_t *body)
{
    json_t *input = json_object_get(body, "input");
    json_t *inputs = json_array();
    if (json_is_array(input) && json_array_size(input) &&
        !json_is_integer(json_array_get(input, 0)))
        json_array_extend(inputs, input);
    else
        json_array_append(inputs, input);
    int dims = 8;
    json_t *wanted = json_object_get(body, "dimensions");
    if (json_is_integer(wanted) && json_integer_value(wanted) > 0 &&
        json_integer_value(wanted) <= 4096)
        dims = (int)json_integer_value(wanted);
    const char *format = json_string_value(json_object_get(body, "encoding_format"));
    bool base64 = format && !strcmp(format, "base64");
    float *vector = calloc((size_t)dims, sizeof(*vector));
    json_t *data = json_array();
    size_t index;
    json_t *item;
    json_array_foreach(inputs, index, item)
    {
        char *text = json_dumps(item, JSON_COMPACT | JSON_ENCODE_ANY);
        uint64_t state = 1469598103934665603ull; //  FNV-1a
        for (const char *cursor = text ? text : ""; *cursor; cursor++)
            state = (state ^ (uint8_t)*cursor) * 1099511628211ull;
        free(text);
        double norm = 0;
        for (int dim = 0; dim < dims; dim++) {
            state ^= state << 13; //  xorshift64
            state ^= state >> 7;
            state ^= state << 17;
            vector[dim] = (float)((double)(state >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
            norm += (double)vector[dim] * vector[dim];
        }
        json_t *embedding;
        if (base64) {
            //  encoding_format=base64: little-endian float32 array, base64-encoded
            static const char alphabet[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            size_t size = (size_t)dims * 4;
            uint8_t *raw = malloc(size);
            char *encoded = malloc((size + 2) / 3 * 4 + 1);
            if (!raw || !encoded) {
                free(raw);
                free(encoded);
                continue;
            }
            for (int dim = 0; dim < dims; dim++) {
                float value = (float)(vector[dim] / sqrt(norm));
                uint32_t bits;
                memcpy(&bits, &value, 4);
                for (int byte = 0; byte < 4; byte++)
                    raw[dim * 4 + byte] = (uint8_t)(bits >> (8 * byte));
            }
            size_t out = 0;
            for (size_t at = 0; at < size; at += 3) {
                uint32_t triple = (uint32_t)raw[at] << 16;
                if (at + 1 < size)
                    triple |= (uint32_t)raw[at + 1] << 8;
                if (at + 2 < size)
                    triple |= raw[at + 2];
                encoded[out++] = alphabet[(triple >> 18) & 63];
                encoded[out++] = alphabet[(triple >> 12) & 63];
                encoded[out++] = at + 1 < size ? alphabet[(triple >> 6) & 63] : '=';
                encoded[out++] = at + 2 < size ? alphabet[triple & 63] : '=';
            }
            encoded[out] = 0;
            embedding = json_string(encoded);
            free(raw);
            free(encoded);
        } else {
            embedding = json_array();
            for (int dim = 0; dim < dims; dim++)
                json_array_append_new(embedding, json_real(vector[dim] / sqrt(norm)));
        }
        json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "embedding", "index",
                                              (int)index, "embedding", embedding));
    }
    free(vector);
    json_decref(inputs);
    return json_pack("{s:s, s:o, s:s, s:{s:i, s:i}}", "object", "list", "data", data, "model",
                     req->model, "usage", "prompt_tokens", req->prompt_tokens, "total_tokens",
                     req->prompt_tokens);
}

//  -------------------------------------------------------------------------
//  Control endpoints

static enum MHD_Result s_mock_control(s_req_t *req)
{
    mock_upstream_t *self = req->owner;
    req->proto = P_OPENAI;
    if (req->route == R_MOCK_STATS) {
        pthread_mutex_lock(&self->mutex);
        json_t *last = json_deep_copy(self->last);
        if (json_is_object(last)) {
            json_object_set_new(
                last, "body",
                json_stringn(self->last_body ? self->last_body : "", self->last_body_len));
            json_object_set_new(last, "body_size", json_integer((json_int_t)self->last_body_size));
            json_object_set_new(last, "body_truncated",
                                json_boolean(self->last_body_size > self->last_body_len));
            json_t *parsed =
                self->last_body ? json_loadb(self->last_body, self->last_body_len, 0, NULL) : NULL;
            json_object_set_new(last, "body_json", parsed ? parsed : json_null());
        }
        json_t *stats = json_pack(
            "{s:I, s:O, s:O, s:O, s:O, s:I, s:I, s:I, s:I, s:I, s:o, s:{s:O, s:O}}",
            "requests_total", (json_int_t)self->requests_total, "paths", self->paths, "models",
            self->models_seen, "keys", self->keys, "statuses", self->statuses, "faults_injected",
            (json_int_t)self->faults_injected, "client_aborts", (json_int_t)self->client_aborts,
            "streams_started", (json_int_t)self->streams_started, "open_streams",
            (json_int_t)self->open_streams, "max_open_streams", (json_int_t)self->max_open_streams,
            "last", last, "faults", "static", self->static_faults, "runtime", self->runtime_faults);
        //  Dump under the lock: the maps inside are shared, not copied.
        s_set_json(req, 200, stats);
        pthread_mutex_unlock(&self->mutex);
        return s_queue(req);
    }
    if (req->route == R_MOCK_REQUESTS) {
        s_set_json(req, 200, json_pack("{s:o}", "requests", mock_journal_json(self->journal)));
        return s_queue(req);
    }
    if (req->route == R_MOCK_RESET) {
        pthread_mutex_lock(&self->mutex);
        s_reset_counters(self);
        pthread_mutex_unlock(&self->mutex);
        mock_journal_clear(self->journal);
        s_set_json(req, 200, json_pack("{s:b}", "ok", 1));
        return s_queue(req);
    }
    //  R_MOCK_FAULTS
    if (!strcmp(req->method, "POST")) {
        json_t *body = json_loadb(req->body.data ? req->body.data : "", req->body.len, 0, NULL);
        const char *model = json_string_value(json_object_get(body, "model"));
        const char *spec = json_string_value(json_object_get(body, "fault"));
        s_fault_t fault;
        if (!model || (spec && s_fault_parse(spec, &fault)))
            s_set_error(req, 400,
                        "expected {\"model\":\"m\",\"fault\":\"SPEC\"} with a valid SPEC");
        else {
            pthread_mutex_lock(&self->mutex);
            if (spec && *spec)
                json_object_set_new(self->runtime_faults, model, json_string(spec));
            else
                json_object_del(self->runtime_faults, model);
            json_object_del(self->flap_counts, model);
            pthread_mutex_unlock(&self->mutex);
            s_set_json(req, 200, json_pack("{s:b}", "ok", 1));
        }
        json_decref(body);
        return s_queue(req);
    }
    pthread_mutex_lock(&self->mutex);
    s_set_json(
        req, 200,
        json_pack("{s:O, s:O}", "static", self->static_faults, "runtime", self->runtime_faults));
    pthread_mutex_unlock(&self->mutex);
    return s_queue(req);
}

//  -------------------------------------------------------------------------
//  Dispatch

static void s_route(s_req_t *req)
{
    const char *path = req->path;
    bool post = !strcmp(req->method, "POST");
    bool get = !strcmp(req->method, "GET");
    req->route = R_NOT_FOUND;
    req->proto = P_OPENAI;
    if (!strncmp(path, "/v1beta/", 8) ||
        (!strncmp(path, "/v1/models/", 11) && strchr(path + 11, ':'))) {
        req->proto = P_GEMINI;
        const char *rest = strstr(path, "/models");
        rest = rest ? rest + 7 : "";
        const char *colon = strchr(rest, ':');
        if (!strcmp(rest, "") && get)
            req->route = R_GEM_MODELS;
        else if (*rest == '/' && !colon && get) {
            req->route = R_GEM_MODEL;
            req->model = strdup(rest + 1);
        } else if (*rest == '/' && colon && post) {
            req->model = strndup(rest + 1, (size_t)(colon - rest - 1));
            if (!strcmp(colon, ":generateContent"))
                req->route = R_GEM_GENERATE;
            else if (!strcmp(colon, ":streamGenerateContent"))
                req->route = R_GEM_STREAM;
            else if (!strcmp(colon, ":countTokens"))
                req->route = R_GEM_COUNT;
        }
        return;
    }
    if (!strcmp(path, "/v1/messages") || !strcmp(path, "/v1/messages/count_tokens")) {
        req->proto = P_ANTHROPIC;
        if (post)
            req->route = path[12] ? R_COUNT_TOKENS : R_MESSAGES;
        return;
    }
    if (!strncmp(path, "/v1/models", 10) && s_header(req, "anthropic-version"))
        req->proto = P_ANTHROPIC;
    if (post && !strcmp(path, "/v1/chat/completions"))
        req->route = R_CHAT;
    else if (post && !strcmp(path, "/v1/responses"))
        req->route = R_RESPONSES;
    else if (post && !strcmp(path, "/v1/embeddings"))
        req->route = R_EMBEDDINGS;
    else if (get && !strcmp(path, "/v1/models"))
        req->route = R_MODELS;
    else if (get && !strncmp(path, "/v1/models/", 11)) {
        req->route = R_MODEL;
        req->model = strdup(path + 11);
    } else if (get && !strcmp(path, "/mock/stats"))
        req->route = R_MOCK_STATS;
    else if (post && !strcmp(path, "/mock/reset"))
        req->route = R_MOCK_RESET;
    else if (get && !strcmp(path, "/mock/requests"))
        req->route = R_MOCK_REQUESTS;
    else if ((post || get) && !strcmp(path, "/mock/faults"))
        req->route = R_MOCK_FAULTS;
}

//  Returns the API key the request carries and how; NULL if none.
static const char *s_api_key(s_req_t *req, const char **kind)
{
    const char *value = s_header(req, "authorization");
    if (value && !strncasecmp(value, "Bearer ", 7)) {
        *kind = "bearer";
        return value + 7;
    }
    if ((value = s_header(req, "x-api-key"))) {
        *kind = "x-api-key";
        return value;
    }
    if ((value = s_header(req, "x-goog-api-key"))) {
        *kind = "x-goog-api-key";
        return value;
    }
    if ((value = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "key"))) {
        *kind = "query-key";
        return value;
    }
    *kind = NULL;
    return NULL;
}

//  Records the request in the counters and as "last"; returns the key seen.
static void s_record(s_req_t *req, json_t *body, const char *key, const char *kind)
{
    mock_upstream_t *self = req->owner;
    json_t *headers = json_object();
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, s_collect_header, headers);
    json_t *stream = NULL;
    if (req->route == R_GEM_STREAM || req->route == R_GEM_GENERATE)
        stream = json_boolean(req->route == R_GEM_STREAM);
    else
        stream = json_incref(json_object_get(body, "stream"));
    json_t *options = json_object_get(body, "stream_options");
    const char *version = s_header(req, "anthropic-version");
    const char *beta = s_header(req, "anthropic-beta");
    json_t *last = json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:s?, s:s?, s:o, s:o, s:o}", "method",
                             req->method, "path", req->path, "model", req->model, "auth_type", kind,
                             "api_key", key, "anthropic_version", version, "anthropic_beta", beta,
                             "stream", stream ? stream : json_null(), "stream_options",
                             options ? json_deep_copy(options) : json_null(), "headers", headers);
    const char *query = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "alt");
    if (query)
        json_object_set_new(last, "alt", json_string(query));
    char alt[64];
    snprintf(alt, sizeof alt, "alt=%s", query ? query : "");
    mock_journal_add(self->journal, req->method, req->path, query ? alt : NULL, req->model, headers,
                     req->body.data, req->body.len);
    size_t keep = req->body.len < S_MAX_LAST_BODY ? req->body.len : S_MAX_LAST_BODY;
    char *copy = keep ? malloc(keep) : NULL;
    if (copy)
        memcpy(copy, req->body.data, keep);

    pthread_mutex_lock(&self->mutex);
    self->requests_total++;
    s_count(self->paths, req->path);
    if (req->model && *req->model)
        s_count(self->models_seen, req->model);
    if (key)
        s_count(self->keys, key);
    json_decref(self->last);
    self->last = last;
    free(self->last_body);
    self->last_body = copy;
    self->last_body_len = copy ? keep : 0;
    self->last_body_size = req->body.len;
    pthread_mutex_unlock(&self->mutex);
}

//  Finds the fault in force: header, then runtime, then static; the model, then "*".
static int s_find_fault(s_req_t *req)
{
    mock_upstream_t *self = req->owner;
    const char *header = s_header(req, "x-mock-fault");
    if (header)
        return s_fault_parse(header, &req->fault);
    char spec[256] = "";
    const char *model = req->model ? req->model : "";
    pthread_mutex_lock(&self->mutex);
    json_t *tables[] = {self->runtime_faults, self->static_faults};
    for (int table = 0; table < 2 && !*spec; table++) {
        const char *found = json_string_value(json_object_get(tables[table], model));
        if (!found)
            found = json_string_value(json_object_get(tables[table], "*"));
        if (found)
            snprintf(spec, sizeof(spec), "%s", found);
    }
    pthread_mutex_unlock(&self->mutex);
    return s_fault_parse(*spec ? spec : NULL, &req->fault);
}

static bool s_fault_any(const s_fault_t *fault)
{
    return fault->status || fault->delay_headers_ms || fault->delay_chunks_ms ||
           fault->cut_after >= 0 || fault->flap || fault->hang || fault->malformed ||
           fault->no_terminator;
}

static enum MHD_Result s_dispatch(s_req_t *req)
{
    mock_upstream_t *self = req->owner;
    s_route(req);
    if (req->route >= R_MOCK_STATS)
        return s_mock_control(req);

    req->seq = atomic_fetch_add(&self->seq, 1) + 1;
    req->created = (long)time(NULL);
    req->prompt_tokens = (int)((req->body.len + 3) / 4);
    json_t *body = NULL;
    bool posted = req->route != R_MODELS && req->route != R_MODEL && req->route != R_GEM_MODELS &&
                  req->route != R_GEM_MODEL;
    bool bad_json = false;
    if (posted && req->route != R_NOT_FOUND && !req->too_large) {
        body = json_loadb(req->body.data ? req->body.data : "", req->body.len, 0, NULL);
        bad_json = !json_is_object(body);
        const char *model = json_string_value(json_object_get(body, "model"));
        if (model && !req->model)
            req->model = strdup(model);
    }
    if (!req->model)
        req->model = strdup("");
    const char *kind;
    const char *key = s_api_key(req, &kind);
    s_record(req, body, key, kind);

    int fault_rc = s_find_fault(req);
    if (req->too_large)
        s_set_error(req, 413, "request body too large");
    else if (req->route == R_NOT_FOUND)
        s_set_error(req, 404, "no such endpoint on the mock upstream");
    else if (self->require_key && (!key || strcmp(key, self->require_key)))
        s_set_error(req, 401, "invalid API key (mock)");
    else if (fault_rc)
        s_set_error(req, 400, "unparsable x-mock-fault or configured fault spec");
    else if (bad_json)
        s_set_error(req, 400, "request body is not a JSON object");
    else {
        s_fault_t *fault = &req->fault;
        if (fault->flap) {
            pthread_mutex_lock(&self->mutex);
            s_count(self->flap_counts, req->model);
            json_int_t seen = json_integer_value(json_object_get(self->flap_counts, req->model));
            pthread_mutex_unlock(&self->mutex);
            if (seen % fault->flap == 0)
                fault->status = 500;
        }
        if (fault->status)
            s_set_error(req, fault->status, "injected fault (mock)");
        else if (req->route == R_MODELS || req->route == R_GEM_MODELS)
            s_set_json(req, 200, s_models_json(self, req, NULL));
        else if (req->route == R_MODEL || req->route == R_GEM_MODEL) {
            json_t *model = s_models_json(self, req, req->model);
            if (model)
                s_set_json(req, 200, model);
            else
                s_set_error(req, 404, "model not found (mock)");
        } else if (req->route == R_COUNT_TOKENS)
            s_set_json(req, 200, json_pack("{s:i}", "input_tokens", req->prompt_tokens));
        else if (req->route == R_GEM_COUNT)
            s_set_json(req, 200, json_pack("{s:i}", "totalTokens", req->prompt_tokens));
        else if (req->route == R_EMBEDDINGS)
            s_set_json(req, 200, s_embeddings_json(req, body));
        else {
            //  The header, else a per-model setting (for clients whose headers
            //  do not reach the upstream, such as a gateway's).
            const char *cached = s_header(req, "x-mock-cached-tokens");
            if (!(cached && s_parse_int(cached, 0, 1 << 30, &req->cached_tokens)))
                req->cached_tokens = fault->cached_tokens;
            if (req->cached_tokens > req->prompt_tokens)
                req->cached_tokens = req->prompt_tokens;
            req->stream =
                req->route == R_GEM_STREAM ||
                (req->route != R_GEM_GENERATE && json_is_true(json_object_get(body, "stream")));
            req->include_usage = json_is_true(
                json_object_get(json_object_get(body, "stream_options"), "include_usage"));
            const char *alt = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, "alt");
            req->gemini_sse = alt && !strcmp(alt, "sse");
            if (s_plan_reply(req, body))
                s_set_error(req, 500, "mock out of memory");
            else if (!req->stream)
                s_set_json(req, 200, s_full_answer(req));
            else if (s_plan_stream(req))
                s_set_error(req, 500, "mock out of memory");
            else {
                req->status = 200;
                req->ctype = req->route == R_GEM_STREAM && !req->gemini_sse
                                 ? "application/json; charset=UTF-8"
                                 : "text/event-stream; charset=utf-8";
            }
        }
    }
    json_decref(body);
    if (!req->stream && !req->reply)
        s_set_error(req, 500, "mock out of memory");

    pthread_mutex_lock(&self->mutex);
    char status[8];
    snprintf(status, sizeof(status), "%d", req->status);
    s_count(self->statuses, status);
    if (s_fault_any(&req->fault))
        self->faults_injected++;
    pthread_mutex_unlock(&self->mutex);
    return s_deliver(req);
}

//  -------------------------------------------------------------------------
//  MHD callbacks

static enum MHD_Result s_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    (void)version;
    mock_upstream_t *self = cls;
    s_req_t *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof(*req));
        if (!req)
            return MHD_NO;
        atomic_init(&req->refs, 1);
        req->owner = self;
        req->conn = conn;
        req->path = strdup(url);
        req->method = strdup(method);
        req->wait_fd = -1;
        req->malformed_event = -1;
        req->fault.cut_after = -1;
        *con_cls = req;
        if (!req->path || !req->method)
            return MHD_NO;
        //  A declared oversize body is refused before reading it; MHD then closes.
        const char *length = s_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length && strtoull(length, NULL, 10) > MOCK_UPSTREAM_MAX_BODY) {
            req->too_large = true;
            return s_dispatch(req);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!req->too_large && req->body.len + *upload_data_size > MOCK_UPSTREAM_MAX_BODY) {
            req->too_large = true; //  Chunked upload: discard the rest, answer 413 at the end
            s_buf_reset(&req->body);
        }
        if (!req->too_large && s_buf_append(&req->body, upload_data, *upload_data_size))
            return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->phase == PH_QUEUED)
        return MHD_YES;
    if (req->phase == PH_WAIT) {
        //  Resumed by the waiter: deadline reached, or the client left, or shutdown.
        if (atomic_load(&req->aborted) || atomic_load(&self->stopping) || req->wait_due == S_NEVER)
            return MHD_NO;
        return s_queue(req);
    }
    if (atomic_load(&self->stopping))
        return MHD_NO;
    return s_dispatch(req);
}

static void s_on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    mock_upstream_t *self = cls;
    s_req_t *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    if (req->held) {
        //  A held request that did not end on our terms was ended by the client.
        bool aborted = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && !req->finished &&
                       toe != MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN &&
                       !atomic_load(&self->stopping);
        pthread_mutex_lock(&self->mutex);
        self->open_streams--;
        if (aborted)
            self->client_aborts++;
        pthread_mutex_unlock(&self->mutex);
    }
    s_req_unref(req);
}

//  -------------------------------------------------------------------------
//  Constructor and destructor

void mock_upstream_config_init(mock_upstream_config_t *config)
{
    memset(config, 0, sizeof(*config));
    config->host = "127.0.0.1";
    config->threads = 2;
    config->models = "gpt-4o-mini,claude-3-5-haiku-latest,gemini-2.0-flash,mock-model";
}

mock_upstream_t *mock_upstream_new(const mock_upstream_config_t *config)
{
    mock_upstream_t *self = calloc(1, sizeof(*self));
    if (!self)
        return NULL;
    pthread_mutex_init(&self->mutex, NULL);
    self->verbose = config->verbose;
    self->static_faults = json_object();
    self->journal = mock_journal_new();
    s_reset_counters(self);
    if (config->require_key)
        self->require_key = strdup(config->require_key);
    char *models = strdup(config->models ? config->models : "");
    char *save = NULL;
    for (char *model = strtok_r(models, ",", &save); model; model = strtok_r(NULL, ",", &save)) {
        char **grown = realloc(self->models, (self->n_models + 1) * sizeof(*grown));
        if (!grown)
            break;
        self->models = grown;
        self->models[self->n_models++] = strdup(model);
    }
    free(models);

    struct sockaddr_storage address;
    memset(&address, 0, sizeof(address));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&address;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&address;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME;
    const char *host = config->host ? config->host : "127.0.0.1";
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(config->port);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(config->port);
        flags |= MHD_USE_IPv6;
    } else {
        fprintf(stderr, "mock: bad --host %s\n", host);
        mock_upstream_destroy(&self);
        return NULL;
    }
    if (config->verbose)
        flags |= MHD_USE_ERROR_LOG;
    if (s_waiter_start(&self->waiter)) {
        mock_upstream_destroy(&self);
        return NULL;
    }
    self->waiter_started = true;
    unsigned threads = config->threads ? config->threads : 1;
    //  MHD's default connection cap is FD_SETSIZE-4 even with epoll; streams tests hold
    //  thousands of connections open.
    self->daemon = MHD_start_daemon(
        flags, config->port, NULL, NULL, s_on_request, self, MHD_OPTION_SOCK_ADDR, &address,
        MHD_OPTION_NOTIFY_COMPLETED, s_on_completed, self, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)60000, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)4096,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024), MHD_OPTION_THREAD_POOL_SIZE,
        threads > 1 ? threads : 0u, MHD_OPTION_END);
    if (!self->daemon) {
        fprintf(stderr, "mock: cannot start HTTP daemon on %s:%u\n", host, (unsigned)config->port);
        mock_upstream_destroy(&self);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info ? info->port : config->port;
    return self;
}

void mock_upstream_destroy(mock_upstream_t **self_p)
{
    assert(self_p);
    mock_upstream_t *self = *self_p;
    if (!self)
        return;
    //  Order matters: flag the stop so no callback parks a connection again, make the waiter
    //  resume every parked connection (MHD must not be stopped with suspended ones), then
    //  stop MHD, which runs the resumed connections to their close.
    atomic_store(&self->stopping, true);
    if (self->waiter_started)
        s_waiter_stop(&self->waiter);
    if (self->daemon)
        MHD_stop_daemon(self->daemon);
    s_waiter_close(&self->waiter);
    for (size_t index = 0; index < self->n_models; index++)
        free(self->models[index]);
    free(self->models);
    free(self->require_key);
    json_decref(self->paths);
    json_decref(self->models_seen);
    json_decref(self->keys);
    json_decref(self->statuses);
    json_decref(self->flap_counts);
    json_decref(self->runtime_faults);
    json_decref(self->static_faults);
    json_decref(self->last);
    free(self->last_body);
    mock_journal_destroy(&self->journal);
    pthread_mutex_destroy(&self->mutex);
    free(self);
    *self_p = NULL;
}

uint16_t mock_upstream_port(mock_upstream_t *self)
{
    assert(self);
    return self->port;
}

int mock_upstream_set_fault(mock_upstream_t *self, const char *model, const char *spec)
{
    assert(self);
    assert(model);
    s_fault_t fault;
    if (spec && s_fault_parse(spec, &fault))
        return -1;
    pthread_mutex_lock(&self->mutex);
    if (spec && *spec)
        json_object_set_new(self->static_faults, model, json_string(spec));
    else
        json_object_del(self->static_faults, model);
    pthread_mutex_unlock(&self->mutex);
    return 0;
}

//  -------------------------------------------------------------------------
//  Self test

//  Sends a raw HTTP/1.1 request and returns the socket (response left unread).
static int s_test_send(uint16_t port, const char *request)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    size_t size = strlen(request);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof(address)) ||
        send(fd, request, size, MSG_NOSIGNAL) != (ssize_t)size) {
        perror("mock_upstream_test");
        abort();
    }
    return fd;
}

//  Reads until the peer closes (requests use Connection: close).
static void s_test_read_all(int fd, s_buf_t *out)
{
    char chunk[4096];
    ssize_t size;
    while ((size = recv(fd, chunk, sizeof(chunk), 0)) > 0)
        s_buf_append(out, chunk, (size_t)size);
    close(fd);
}

static int s_test_post(char *request, size_t size, const char *path, const char *extra,
                       const char *body)
{
    return snprintf(request, size,
                    "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n"
                    "Content-Length: %zu\r\n\r\n%s",
                    path, extra, strlen(body), body);
}

void mock_upstream_test(bool verbose)
{
    printf(" * mock_upstream: ");
    s_fault_t fault;
    assert(s_fault_parse("429:5, cut:3", &fault) == 0);
    assert(fault.status == 429 && fault.retry_after == 5 && fault.cut_after == 3);
    assert(s_fault_parse("hang,bogus", &fault) == -1);
    assert(!fault.hang && fault.cut_after == -1);
    assert(s_fault_parse("500:3", &fault) == -1);

    mock_upstream_config_t config;
    mock_upstream_config_init(&config);
    config.verbose = verbose;
    mock_upstream_t *self = mock_upstream_new(&config);
    assert(self);
    assert(mock_upstream_port(self) > 0);
    assert(mock_upstream_set_fault(self, "mock-bad", "nonsense") == -1);
    assert(mock_upstream_set_fault(self, "mock-err", "503") == 0);

    char request[1024];
    s_test_post(request, sizeof(request), "/v1/chat/completions", "Connection: close\r\n",
                "{\"model\":\"mock-3\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    s_buf_t reply = {0};
    s_test_read_all(s_test_send(self->port, request), &reply);
    assert(reply.data && strstr(reply.data, "200 OK"));
    assert(strstr(reply.data, "\"content\":\"Hello from mock\""));
    assert(strstr(reply.data, "\"completion_tokens\":3"));
    s_buf_reset(&reply);

    s_test_post(request, sizeof(request), "/v1/messages", "Connection: close\r\n",
                "{\"model\":\"mock-err\",\"messages\":[]}");
    s_test_read_all(s_test_send(self->port, request), &reply);
    assert(reply.data && strstr(reply.data, "HTTP/1.1 503"));
    assert(strstr(reply.data, "\"type\":\"overloaded_error\""));
    s_buf_reset(&reply);

    //  A held connection (hang) and a parked stream must not stop destroy from finishing.
    int hung = s_test_send(self->port, "GET /v1/models HTTP/1.1\r\nHost: x\r\n"
                                       "x-mock-fault: hang\r\n\r\n");
    s_test_post(request, sizeof(request), "/v1/chat/completions",
                "x-mock-fault: delay-chunks:60000\r\n",
                "{\"model\":\"mock-3\",\"stream\":true,\"messages\":[]}");
    int parked = s_test_send(self->port, request);
    char first[64];
    if (recv(parked, first, sizeof(first), 0) <= 0) //  Headers: the stream has started
        abort();
    mock_upstream_destroy(&self);
    assert(self == NULL);
    close(hung);
    close(parked);
    printf("OK\n");
}
