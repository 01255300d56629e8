/*  proto_curl: one libcurl multi handle driven by the process' loop.

    libcurl's socket interface tells us which sockets to watch
    (CURLMOPT_SOCKETFUNCTION -> proto_loop_add_fd/modify_fd/remove_fd) and
    when to call it back (CURLMOPT_TIMERFUNCTION -> a loop timer); we call
    curl_multi_socket_action when either fires. One multi handle for the
    whole process so that connections to a provider are kept alive and
    reused by later requests, and HTTP/2 streams share a connection
    (CURLPIPE_MULTIPLEX with CURLOPT_PIPEWAIT on each transfer).

    Transfers are added with a callback that runs when they end. By then the
    transfer is already out of the multi handle, so the callback may clean
    up the easy handle or add new transfers.
*/
#ifndef PROTO_CURL_H_INCLUDED
#define PROTO_CURL_H_INCLUDED

#include "proto_loop.h"

#include <curl/curl.h>

typedef struct _proto_curl_t proto_curl_t;

//  Called once when a transfer ends; result is libcurl's code.
typedef void(proto_curl_done_fn)(CURL *easy, CURLcode result, void *arg);

//  Creates the multi handle on a loop. curl_global_init must have run.
//  Caller owns return value.
proto_curl_t *proto_curl_new(proto_loop_t *loop);

//  Destroys it; transfers still running are aborted without callbacks.
//  Nulls the pointer.
void proto_curl_destroy(proto_curl_t **self_p);

//  Starts a transfer (the easy handle stays the caller's). Returns 0 or -1.
int proto_curl_add(proto_curl_t *self, CURL *easy, proto_curl_done_fn *fn, void *arg);

//  Aborts a running transfer without calling its callback: its connection
//  is closed at once. Unknown handles are ignored. Never call from inside
//  a libcurl callback.
void proto_curl_remove(proto_curl_t *self, CURL *easy);

//  Transfers running.
size_t proto_curl_running(proto_curl_t *self);

#endif
