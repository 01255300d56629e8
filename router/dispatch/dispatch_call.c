#include "dispatch_call.h"
#include "proto_log.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    self->easy = curl_easy_init();
    if (!self->easy) {
        dispatch_call_destroy(&self);
        return NULL;
    }
    CURL *easy = self->easy;
    curl_easy_setopt(easy, CURLOPT_URL, spec->url);
    //  libcurl's receive buffer is per transfer: 16 KiB by default, which is
    //  most of a stream's memory at thousands of streams; model answers
    //  come in small events. Its least, 1 KiB: at 4 KiB it was still a
    //  quarter of what dispatch holds per open stream (heaptrack, 1,000
    //  streams: ~15 KiB in libcurl of ~22 KiB); a larger answer costs a
    //  few more reads.
    curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, 1024L);
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
    if (self->easy) {
        if (self->running)
            proto_curl_remove(self->multi, self->easy);
        curl_easy_cleanup(self->easy);
    }
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
