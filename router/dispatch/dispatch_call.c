#include "dispatch_call.h"
#include "proto_check.h"
#include "proto_log.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

struct _dispatch_call_t {
    proto_curl_t *multi;                    //  where the transfer runs
    proto_loop_t *loop;                     //  for our timer
    CURL *easy;                             //  the transfer
    struct curl_slist *headers;             //  request headers, alive while it runs
    char *body;                             //  request body, alive while it runs
    const dispatch_call_handler_t *handler; //  owner's callbacks
    void *arg;                              //  their argument
    uint64_t first_byte_timeout_ms;         //  see spec
    uint64_t idle_timeout_ms;               //  see spec
    uint64_t started_us;                    //  monotonic start
    uint64_t first_byte_us;                 //  monotonic first body byte, 0 before
    uint64_t last_data_us;                  //  monotonic last body write
    uint64_t ended_us;                      //  monotonic end, 0 while running
    int timer;                              //  first-byte/idle timer, 0 when none
    int status;                             //  HTTP status once known
    uint64_t retry_after_ms;                //  Retry-After of the final response
    dispatch_fail_t abort_fail;             //  why data() stopped the transfer
    bool running;                           //  in the multi handle
    char error[CURL_ERROR_SIZE];            //  libcurl's message
};

static void s_timer_due(proto_loop_t *loop, int id, void *arg);

//  Arms the timer for whichever of first byte and idle comes next.
static void s_arm(dispatch_call_t *self)
{
    uint64_t now = proto_loop_now_us();
    uint64_t due = self->first_byte_us ? self->last_data_us + self->idle_timeout_ms * 1000
                                       : self->started_us + self->first_byte_timeout_ms * 1000;
    uint64_t wait_ms = due > now ? (due - now + 999) / 1000 : 0;
    self->timer = proto_loop_add_timer(self->loop, wait_ms, false, s_timer_due, self);
}

static void s_end(dispatch_call_t *self, dispatch_fail_t fail, const char *detail)
{
    self->running = false;
    self->ended_us = proto_loop_now_us();
    if (self->timer)
        proto_loop_cancel_timer(self->loop, self->timer);
    self->timer = 0;
    self->handler->done(self->arg, fail, detail);
}

static void s_timer_due(proto_loop_t *loop, int id, void *arg)
{
    dispatch_call_t *self = arg;
    self->timer = 0;
    uint64_t now = proto_loop_now_us();
    bool first = !self->first_byte_us;
    uint64_t due = first ? self->started_us + self->first_byte_timeout_ms * 1000
                         : self->last_data_us + self->idle_timeout_ms * 1000;
    if (now < due) {
        s_arm(self); //  data came meanwhile
        return;
    }
    proto_curl_remove(self->multi, self->easy);
    char detail[96];
    snprintf(detail, sizeof detail, "no %s within %llu ms", first ? "first byte" : "data",
             (unsigned long long)(first ? self->first_byte_timeout_ms : self->idle_timeout_ms));
    s_end(self, DISPATCH_FAIL_TIMEOUT, detail);
}

static dispatch_fail_t s_fail_of(CURLcode code)
{
    switch (code) {
    case CURLE_OK:
        return DISPATCH_FAIL_NONE;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        return DISPATCH_FAIL_CONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return DISPATCH_FAIL_TIMEOUT;
    default:
        return DISPATCH_FAIL_TRANSPORT;
    }
}

static void s_transfer_done(CURL *easy, CURLcode result, void *arg)
{
    dispatch_call_t *self = arg;
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    self->status = (int)status;
    dispatch_fail_t fail = s_fail_of(result);
    if (result == CURLE_WRITE_ERROR && self->abort_fail != DISPATCH_FAIL_NONE)
        fail = self->abort_fail;
    s_end(self, fail, self->error[0] ? self->error : curl_easy_strerror(result));
}

//  Headers: only Retry-After matters here. A new status line (a 100
//  Continue before the real answer) starts over.
static size_t s_header_fn(char *line, size_t size, size_t count, void *arg)
{
    dispatch_call_t *self = arg;
    size_t length = size * count;
    if (length > 5 && strncmp(line, "HTTP/", 5) == 0)
        self->retry_after_ms = 0;
    else if (length > 12 && strncasecmp(line, "retry-after:", 12) == 0) {
        const char *value = line + 12;
        while (value < line + length && (*value == ' ' || *value == '\t'))
            value++;
        uint64_t seconds = 0;
        int digits = 0;
        while (value < line + length && isdigit((unsigned char)*value) && digits < 9) {
            seconds = seconds * 10 + (uint64_t)(*value++ - '0');
            digits++;
        }
        if (digits)
            self->retry_after_ms = seconds * 1000;
    }
    return length;
}

static size_t s_write_fn(char *data, size_t size, size_t count, void *arg)
{
    dispatch_call_t *self = arg;
    size_t length = size * count;
    uint64_t now = proto_loop_now_us();
    if (!self->first_byte_us) {
        self->first_byte_us = now;
        long status = 0;
        curl_easy_getinfo(self->easy, CURLINFO_RESPONSE_CODE, &status);
        self->status = (int)status;
        char *content_type = NULL;
        curl_easy_getinfo(self->easy, CURLINFO_CONTENT_TYPE, &content_type);
        self->handler->response(self->arg, self->status, content_type);
    }
    self->last_data_us = now;
    dispatch_fail_t fail = self->handler->data(self->arg, data, length);
    if (fail != DISPATCH_FAIL_NONE) {
        self->abort_fail = fail;
        return 0; //  makes libcurl end the transfer with CURLE_WRITE_ERROR
    }
    return length;
}

dispatch_call_t *dispatch_call_new(proto_curl_t *multi, proto_loop_t *loop,
                                   dispatch_call_spec_t *spec,
                                   const dispatch_call_handler_t *handler, void *arg)
{
    dispatch_call_t *self = calloc(1, sizeof *self);
    assert(self);
    self->multi = multi;
    self->loop = loop;
    self->handler = handler;
    self->arg = arg;
    self->headers = spec->headers;
    self->body = spec->body;
    spec->headers = NULL;
    spec->body = NULL;
    self->first_byte_timeout_ms = spec->first_byte_timeout_ms;
    self->idle_timeout_ms = spec->idle_timeout_ms;
    //  A handle released by an earlier call when there is one: reset, so
    //  nothing of that call's options is left (proto_curl).
    self->easy = proto_curl_easy(multi);
    if (!self->easy) {
        dispatch_call_destroy(&self);
        return NULL;
    }
    CURL *easy = self->easy;
    curl_easy_setopt(easy, CURLOPT_URL, spec->url);
    //  The receive buffer's size is proto_curl's (16 KiB for its first 64
    //  handles, 1 KiB for any more: thousands of open streams).
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, self->headers);
    curl_easy_setopt(easy, CURLOPT_POST, 1L);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, self->body);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)spec->body_size);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, s_write_fn);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, self);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, s_header_fn);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, self);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, self->error);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)spec->connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)spec->total_timeout_ms);
    //  HTTP/2 where TLS offers it; wait for a connection being set up
    //  rather than open a second one, so streams multiplex.
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    //  Only where HTTP/2 is possible at all: on plain http:// (HTTP/1.1)
    //  PIPEWAIT made a new transfer wait for a busy connection to finish
    //  (seen: concurrent streams to one upstream served one after another).
    if (strncasecmp(spec->url, "https://", 8) == 0)
        curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "tollgate/0.1");
    //  The provider's proxy; without one, none from the environment either
    //  (an http_proxy variable must not reroute provider calls unseen).
    curl_easy_setopt(easy, CURLOPT_PROXY, spec->proxy ? spec->proxy : "");
    self->started_us = proto_loop_now_us();
    if (proto_curl_add(multi, easy, s_transfer_done, self) != 0) {
        dispatch_call_destroy(&self);
        return NULL;
    }
    self->running = true;
    s_arm(self);
    return self;
}

void dispatch_call_destroy(dispatch_call_t **self_p)
{
    assert(self_p);
    dispatch_call_t *self = *self_p;
    if (!self)
        return;
    if (self->timer)
        proto_loop_cancel_timer(self->loop, self->timer);
    if (self->easy && self->running)
        proto_curl_remove(self->multi, self->easy);
    //  Out of the multi handle either way: reset and kept for the next call.
    proto_curl_easy_release(self->multi, &self->easy);
    curl_slist_free_all(self->headers);
    if (self->body) {
        free(self->body);
    }
    free(self);
    *self_p = NULL;
}

int dispatch_call_status(dispatch_call_t *self)
{
    return self->status;
}

uint64_t dispatch_call_ttfb_us(dispatch_call_t *self)
{
    return self->first_byte_us ? self->first_byte_us - self->started_us : 0;
}

uint64_t dispatch_call_latency_us(dispatch_call_t *self)
{
    return (self->ended_us ? self->ended_us : proto_loop_now_us()) - self->started_us;
}

uint64_t dispatch_call_retry_after_ms(dispatch_call_t *self)
{
    return self->retry_after_ms;
}

bool dispatch_call_answered(dispatch_call_t *self)
{
    return self->first_byte_us != 0;
}

//  --------------------------------------------------------------------------
//  Self test: easy handles are reused, and nothing of one call's secrets
//  reaches the next call on the same handle. A libmicrohttpd daemon plays
//  the upstream and, for the first call, the provider's HTTP proxy; it
//  records every request's line and headers.

typedef struct {
    pthread_mutex_t lock; //  the daemon's thread writes, the test reads
    char seen[4][2048];   //  each request's URL and headers, one per line
    int count;            //  requests seen
} s_test_wire_t;

static enum MHD_Result s_test_header(void *arg, enum MHD_ValueKind kind, const char *name,
                                     const char *value)
{
    char *seen = arg;
    size_t used = strlen(seen);
    snprintf(seen + used, 2048 - used, "%s: %s\n", name, value ? value : "");
    return MHD_YES;
}

static enum MHD_Result s_test_answer(void *arg, struct MHD_Connection *connection, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **request_p)
{
    s_test_wire_t *wire = arg;
    if (!*request_p) {
        *request_p = wire;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&wire->lock);
    if (wire->count < 4) {
        char *seen = wire->seen[wire->count++];
        snprintf(seen, 2048, "%s %s\n", method, url);
        MHD_get_connection_values(connection, MHD_HEADER_KIND, s_test_header, seen);
    }
    pthread_mutex_unlock(&wire->lock);
    static const char text[] = "{\"ok\":true}";
    static const char large[8000]; //  what the bytes are does not matter here
    bool is_large = strcmp(url, "/large") == 0;
    struct MHD_Response *response =
        MHD_create_response_from_buffer(is_large ? sizeof large : strlen(text),
                                        (void *)(is_large ? large : text), MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(response, "Content-Type", "application/json");
    enum MHD_Result rc = MHD_queue_response(connection, 200, response);
    MHD_destroy_response(response);
    return rc;
}

typedef struct {
    proto_loop_t *loop;
    dispatch_fail_t fail; //  how the call ended
    bool ended;           //  done came
} s_test_call_t;

static void s_test_response(void *arg, int status, const char *content_type) {}

static dispatch_fail_t s_test_data(void *arg, const char *data, size_t size)
{
    return DISPATCH_FAIL_NONE;
}

static void s_test_done(void *arg, dispatch_fail_t fail, const char *detail)
{
    s_test_call_t *test = arg;
    test->fail = fail;
    test->ended = true;
    proto_loop_stop(test->loop);
}

static size_t s_test_sink(char *data, size_t size, size_t count, void *arg)
{
    return size * count;
}

//  Keeps the largest piece libcurl handed over in one write callback.
static size_t s_test_largest(char *data, size_t size, size_t count, void *arg)
{
    size_t *largest = arg;
    if (size * count > *largest)
        *largest = size * count;
    return size * count;
}

static void s_test_raw_done(CURL *easy, CURLcode result, void *arg)
{
    s_test_call_t *test = arg;
    test->fail = result == CURLE_OK ? DISPATCH_FAIL_NONE : DISPATCH_FAIL_TRANSPORT;
    test->ended = true;
    proto_loop_stop(test->loop);
}

//  Runs one call to completion; returns its easy handle's address (for
//  reuse checks) and its status.
static CURL *s_test_run(proto_curl_t *multi, proto_loop_t *loop, const char *url,
                        struct curl_slist *headers, const char *proxy, int *status)
{
    static const dispatch_call_handler_t handler = {s_test_response, s_test_data, s_test_done};
    s_test_call_t test = {.loop = loop};
    dispatch_call_spec_t spec = {.url = url,
                                 .headers = headers,
                                 .body = strdup("{}"),
                                 .body_size = 2,
                                 .connect_timeout_ms = 2000,
                                 .first_byte_timeout_ms = 5000,
                                 .idle_timeout_ms = 5000,
                                 .total_timeout_ms = 5000,
                                 .proxy = proxy};
    dispatch_call_t *call = dispatch_call_new(multi, loop, &spec, &handler, &test);
    PROTO_CHECK(call);
    CURL *easy = call->easy;
    proto_loop_run(loop);
    PROTO_CHECK(test.ended && test.fail == DISPATCH_FAIL_NONE);
    *status = dispatch_call_status(call);
    dispatch_call_destroy(&call);
    return easy;
}

static void s_test_fd(proto_loop_t *loop, int fd, uint32_t events, void *arg) {}

static void s_test_stop(proto_loop_t *loop, int id, void *arg)
{
    proto_loop_stop(loop);
}

static double s_test_cpu_seconds(void)
{
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

//  The largest piece one read of an 8,000-byte answer gave on this handle.
static size_t s_test_read_size(proto_curl_t *multi, proto_loop_t *loop, CURL *easy, int port)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/large", port);
    size_t largest = 0;
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, s_test_largest);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &largest);
    s_test_call_t raw = {.loop = loop};
    PROTO_CHECK(proto_curl_add(multi, easy, s_test_raw_done, &raw) == 0);
    proto_loop_run(loop);
    PROTO_CHECK(raw.ended && raw.fail == DISPATCH_FAIL_NONE);
    return largest;
}

//  The first PROTO_CURL_LARGE_HANDLES handles read 16 KiB at once, any
//  more 1 KiB (thousands of open streams); each keeps its size when it
//  comes back reset.
static void s_test_buffers(proto_curl_t *multi, proto_loop_t *loop, int port)
{
    CURL *handles[PROTO_CURL_LARGE_HANDLES + 1];
    for (int i = 0; i <= PROTO_CURL_LARGE_HANDLES; i++) {
        handles[i] = proto_curl_easy(multi);
        PROTO_CHECK(handles[i]);
    }
    PROTO_CHECK(s_test_read_size(multi, loop, handles[0], port) > 1024);
    PROTO_CHECK(s_test_read_size(multi, loop, handles[PROTO_CURL_LARGE_HANDLES], port) <= 1024);
    for (int i = 0; i <= PROTO_CURL_LARGE_HANDLES; i++)
        proto_curl_easy_release(multi, &handles[i]);
    //  Back reset: the large one first, still large; then the small one.
    CURL *large = proto_curl_easy(multi);
    PROTO_CHECK(s_test_read_size(multi, loop, large, port) > 1024);
    CURL *others[PROTO_CURL_LARGE_HANDLES];
    for (int i = 0; i < PROTO_CURL_LARGE_HANDLES; i++)
        others[i] = proto_curl_easy(multi);
    PROTO_CHECK(s_test_read_size(multi, loop, others[PROTO_CURL_LARGE_HANDLES - 1], port) <= 1024);
    proto_curl_easy_release(multi, &large);
    for (int i = 0; i < PROTO_CURL_LARGE_HANDLES; i++)
        proto_curl_easy_release(multi, &others[i]);
}

//  An idle pooled connection's socket stays in the loop between calls
//  (proto_curl parks it). When the upstream closes it, it leaves the loop
//  instead of waking it on every turn, and the next call opens a new one.
static void s_test_parked(proto_curl_t *multi, proto_loop_t *loop, struct MHD_Daemon **daemon,
                          s_test_wire_t *wire)
{
    MHD_stop_daemon(*daemon); //  closes the connection libcurl keeps
    double cpu = s_test_cpu_seconds();
    proto_loop_add_timer(loop, 300, false, s_test_stop, NULL);
    proto_loop_run(loop);
    PROTO_CHECK(s_test_cpu_seconds() - cpu < 0.15);
    *daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, s_test_answer, wire,
        MHD_OPTION_SOCK_ADDR,
        &(struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)},
        MHD_OPTION_END);
    PROTO_CHECK(*daemon);
    int port = MHD_get_daemon_info(*daemon, MHD_DAEMON_INFO_BIND_PORT)->port;
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/fourth", port);
    for (int i = 0; i < 3; i++) {
        int status = 0;
        s_test_run(multi, loop, url, NULL, NULL, &status);
        PROTO_CHECK(status == 200);
    }
}

void dispatch_call_test(bool verbose)
{
    printf(" * dispatch_call: ");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    s_test_wire_t wire = {.count = 0};
    pthread_mutex_init(&wire.lock, NULL);
    struct MHD_Daemon *daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, s_test_answer, &wire,
        MHD_OPTION_SOCK_ADDR,
        &(struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)},
        MHD_OPTION_END);
    PROTO_CHECK(daemon);
    int port = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT)->port;
    proto_loop_t *loop = proto_loop_new();
    proto_curl_t *multi = proto_curl_new(loop);
    char url[128], proxy[128];

    //  1. The provider's key in a header, through a proxy with credentials.
    snprintf(url, sizeof url, "http://127.0.0.1:%d/first", port);
    snprintf(proxy, sizeof proxy, "http://proxyuser:proxy-secret@127.0.0.1:%d", port);
    struct curl_slist *headers = curl_slist_append(NULL, "Authorization: Bearer sk-first-secret");
    int status = 0;
    CURL *first = s_test_run(multi, loop, url, headers, proxy, &status);
    PROTO_CHECK(status == 200);
    PROTO_CHECK(proto_curl_easy_kept(multi) == 1);
    //  The daemon saw what a proxy sees: the whole URL and both credentials.
    PROTO_CHECK(wire.count == 1);
    PROTO_CHECK(strstr(wire.seen[0], "POST http://127.0.0.1:"));
    PROTO_CHECK(strstr(wire.seen[0], "sk-first-secret"));
    PROTO_CHECK(strstr(wire.seen[0], "Proxy-Authorization: Basic"));

    //  2. The same handle as it comes back from proto_curl, given only a
    //  URL: nothing of the first call's options is left (dispatch_call sets
    //  them all anyway; this is the reset itself).
    CURL *second = proto_curl_easy(multi);
    PROTO_CHECK(second == first);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/second", port);
    curl_easy_setopt(second, CURLOPT_URL, url);
    curl_easy_setopt(second, CURLOPT_POSTFIELDS, "{}");
    curl_easy_setopt(second, CURLOPT_WRITEFUNCTION, s_test_sink);
    s_test_call_t raw = {.loop = loop};
    PROTO_CHECK(proto_curl_add(multi, second, s_test_raw_done, &raw) == 0);
    proto_loop_run(loop);
    PROTO_CHECK(raw.ended && raw.fail == DISPATCH_FAIL_NONE);
    proto_curl_easy_release(multi, &second);
    PROTO_CHECK(wire.count == 2);
    if (verbose)
        printf("\n%s", wire.seen[1]);
    PROTO_CHECK(strncmp(wire.seen[1], "POST /second\n", 13) == 0);
    PROTO_CHECK(!strcasestr(wire.seen[1], "authorization"));
    PROTO_CHECK(!strstr(wire.seen[1], "secret"));
    PROTO_CHECK(!strstr(wire.seen[1], "proxyuser"));
    PROTO_CHECK(!strstr(wire.seen[1], "tollgate/0.1")); //  even our user agent went

    //  3. Another key on the same handle: only that one.
    headers = curl_slist_append(NULL, "Authorization: Bearer sk-third");
    snprintf(url, sizeof url, "http://127.0.0.1:%d/third", port);
    CURL *third = s_test_run(multi, loop, url, headers, NULL, &status);
    PROTO_CHECK(third == first);
    PROTO_CHECK(wire.count == 3);
    PROTO_CHECK(strstr(wire.seen[2], "Authorization: Bearer sk-third\n"));
    PROTO_CHECK(!strstr(wire.seen[2], "secret"));
    PROTO_CHECK(!strcasestr(wire.seen[2], "proxy-authorization"));

    s_test_buffers(multi, loop, port);
    s_test_parked(multi, loop, &daemon, &wire);
    proto_curl_destroy(&multi);
    //  libcurl closed its sockets through proto_curl: no watch is left on
    //  their numbers, which the next descriptors take.
    int fds[2][2];
    PROTO_CHECK(pipe(fds[0]) == 0 && pipe(fds[1]) == 0);
    for (int i = 0; i < 4; i++)
        PROTO_CHECK(proto_loop_add_fd(loop, fds[i / 2][i % 2], EPOLLIN, s_test_fd, NULL) == 0);
    for (int i = 0; i < 4; i++) {
        proto_loop_remove_fd(loop, fds[i / 2][i % 2]);
        close(fds[i / 2][i % 2]);
    }
    proto_loop_destroy(&loop);
    MHD_stop_daemon(daemon);
    pthread_mutex_destroy(&wire.lock);
    curl_global_cleanup();
    printf("OK\n");
}
