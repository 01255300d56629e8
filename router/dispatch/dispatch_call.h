/*  dispatch_call: one HTTP call to an upstream, as one attempt of a request.

    Wraps a libcurl easy handle on the shared proto_curl. The body is
    handed to the owner as it arrives (never buffered here), so a streamed
    answer flows through at the upstream's pace. Timeouts:
      connect      CURLOPT_CONNECTTIMEOUT_MS
      first byte   our timer, from the start until the first body byte
      idle gap     our timer, restarted by every body write
      total        CURLOPT_TIMEOUT_MS (the owner passes the smaller of the
                   configured total and what is left of the request's deadline)
    One loop timer serves first byte and idle: each write only records the
    time, and the timer, when it fires early, re-arms for the remainder, so
    a busy stream costs no timer work per chunk.

    Callbacks run inside libcurl (response, data) or from the loop (done).
    The owner may destroy the call in `done`, never in the other two.
*/
#ifndef DISPATCH_CALL_H_INCLUDED
#define DISPATCH_CALL_H_INCLUDED

#include "proto_curl.h"
#include "dispatch_policy.h"

#include <curl/curl.h>
#include <stdint.h>

typedef struct _dispatch_call_t dispatch_call_t;

//  What to call and how long to wait.
typedef struct {
    const char *url;                //  full URL; copied
    struct curl_slist *headers;     //  request headers; the call takes them
    char *body;                     //  request body (malloc'd); the call takes it
    size_t body_size;               //  bytes in body
    uint64_t connect_timeout_ms;    //  to connect (and TLS)
    uint64_t first_byte_timeout_ms; //  from start to the first body byte
    uint64_t idle_timeout_ms;       //  longest gap between body bytes
    uint64_t total_timeout_ms;      //  the whole call
    const char *proxy;              //  CURLOPT_PROXY (http://, socks5h://, ...), NULL = none;
                                    //  copied
} dispatch_call_spec_t;

typedef struct {
    //  The first body bytes are about to come: the final status and content
    //  type (borrowed, may be NULL) are known.
    void (*response)(void *arg, int status, const char *content_type);
    //  Body bytes, borrowed for the call. Returns DISPATCH_FAIL_NONE to go
    //  on, or the failure that ends the call.
    dispatch_fail_t (*data)(void *arg, const char *data, size_t size);
    //  The call ended with `fail` (DISPATCH_FAIL_NONE: the transfer
    //  completed; look at the status). detail is a borrowed reason for logs.
    void (*done)(void *arg, dispatch_fail_t fail, const char *detail);
} dispatch_call_handler_t;

//  Starts a call. Returns NULL when libcurl refuses it (spec's headers and
//  body are freed either way). Caller owns return value.
dispatch_call_t *dispatch_call_new(proto_curl_t *multi, proto_loop_t *loop,
                                   dispatch_call_spec_t *spec,
                                   const dispatch_call_handler_t *handler, void *arg);

//  Destroys a call, aborting it if it still runs (its connection is closed
//  at once); no callback follows. Nulls the pointer.
void dispatch_call_destroy(dispatch_call_t **self_p);

//  The upstream's HTTP status, 0 while unknown.
int dispatch_call_status(dispatch_call_t *self);

//  Microseconds from the start to the first body byte, 0 before it.
uint64_t dispatch_call_ttfb_us(dispatch_call_t *self);

//  Microseconds since the call started (or its whole length once ended).
uint64_t dispatch_call_latency_us(dispatch_call_t *self);

//  The upstream's Retry-After in ms (seconds form only), 0 when absent.
uint64_t dispatch_call_retry_after_ms(dispatch_call_t *self);

//  True once the first body byte arrived.
bool dispatch_call_answered(dispatch_call_t *self);

//  Self test of this class.
void dispatch_call_test(bool verbose);

#endif
