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

    Easy handles can come from here too (proto_curl_easy) and go back when
    done (proto_curl_easy_release): a few are kept, reset to libcurl's
    defaults, for the next transfers. A handle is ~5 KiB plus its receive
    buffer, made and freed once per upstream call otherwise. Reset forgets
    every option (headers, proxy and its credentials, callbacks, error
    buffer, private pointer); the connection and DNS caches are the multi
    handle's and stay. The receive buffer's size is ours: 16 KiB for the
    first 64 handles, 1 KiB for any more (thousands of open streams). Its
    owner must not set CURLOPT_BUFFERSIZE (libcurl keeps a handle's
    buffer across a reset, sized as it was first).
*/
#ifndef PROTO_CURL_H_INCLUDED
#define PROTO_CURL_H_INCLUDED

#include "proto_loop.h"

#include <curl/curl.h>

typedef struct _proto_curl_t proto_curl_t;

//  Handles with a 16 KiB receive buffer; any more get 1 KiB.
#define PROTO_CURL_LARGE_HANDLES 64

//  Called once when a transfer ends; result is libcurl's code.
typedef void(proto_curl_done_fn)(CURL *easy, CURLcode result, void *arg);
typedef void(proto_curl_action_fn)(void *arg);

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

//  An easy handle with libcurl's default options but its receive buffer's
//  size: one released before, or a new one. NULL when libcurl cannot make
//  one. Caller owns return value and gives it back with
//  proto_curl_easy_release, never curl_easy_cleanup (a large buffer's
//  handle is remembered here by its address).
CURL *proto_curl_easy(proto_curl_t *self);

//  Takes back an easy handle that no longer runs here (ended or removed):
//  its options are reset and it waits for proto_curl_easy, or it is
//  cleaned up when enough wait already. Nulls the pointer.
void proto_curl_easy_release(proto_curl_t *self, CURL **easy_p);

//  Easy handles waiting for reuse.
size_t proto_curl_easy_kept(proto_curl_t *self);

//  Calls fn(arg) after each round of libcurl's callbacks (one socket's
//  event or a timeout), after the transfers that round ended are told:
//  what the write callbacks of one round gathered can leave together, and
//  a transfer that ended takes its part with its end.
void proto_curl_after_action(proto_curl_t *self, proto_curl_action_fn *fn, void *arg);

//  Transfers running.
size_t proto_curl_running(proto_curl_t *self);

#endif
