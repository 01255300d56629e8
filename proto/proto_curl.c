#include "proto_curl.h"
#include "proto_log.h"

#include <assert.h>
#include <stdlib.h>
#include <sys/epoll.h>

//  Connections kept open for reuse once idle; a few per busy provider.
#define S_MAX_IDLE_CONNECTIONS 512
//  Easy handles kept for reuse: what a loop turn ends and starts again
//  under load, at ~6 KiB each while idle.
#define S_MAX_FREE_HANDLES 64

typedef struct {
    proto_curl_done_fn *fn; //  called when the transfer ends
    void *arg;              //  its argument
} s_transfer_t;

struct _proto_curl_t {
    proto_loop_t *loop;             //  the loop we are driven by
    CURLM *multi;                   //  the one multi handle
    int timer;                      //  libcurl's timeout as a loop timer, 0 when none
    size_t running;                 //  transfers added and not yet ended
    CURL *free[S_MAX_FREE_HANDLES]; //  reset easy handles for the next transfers
    size_t free_count;              //  entries used in free
};

//  Takes ended transfers out of the multi handle and tells their owners.
static void s_check_done(proto_curl_t *self)
{
    CURLMsg *message;
    int left;
    while ((message = curl_multi_info_read(self->multi, &left))) {
        if (message->msg != CURLMSG_DONE)
            continue;
        //  The message dies with remove_handle: copy what we need first.
        CURL *easy = message->easy_handle;
        CURLcode result = message->data.result;
        s_transfer_t *transfer = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&transfer);
        curl_multi_remove_handle(self->multi, easy);
        self->running--;
        if (transfer) {
            s_transfer_t copy = *transfer;
            free(transfer);
            curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
            copy.fn(easy, result, copy.arg);
        }
    }
}

static void s_socket_ready(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    proto_curl_t *self = arg;
    int mask = 0;
    if (events & EPOLLIN)
        mask |= CURL_CSELECT_IN;
    if (events & EPOLLOUT)
        mask |= CURL_CSELECT_OUT;
    if (events & (EPOLLERR | EPOLLHUP))
        mask |= CURL_CSELECT_ERR;
    int running;
    curl_multi_socket_action(self->multi, fd, mask, &running);
    s_check_done(self);
}

static void s_timer_due(proto_loop_t *loop, int id, void *arg)
{
    proto_curl_t *self = arg;
    self->timer = 0;
    int running;
    curl_multi_socket_action(self->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    s_check_done(self);
}

//  CURLMOPT_SOCKETFUNCTION: watch, change or forget a socket. socketp is
//  non-NULL once we watch the socket (set with curl_multi_assign).
static int s_socket_fn(CURL *easy, curl_socket_t fd, int what, void *arg, void *socketp)
{
    proto_curl_t *self = arg;
    if (what == CURL_POLL_REMOVE) {
        proto_loop_remove_fd(self->loop, fd);
        curl_multi_assign(self->multi, fd, NULL);
        return 0;
    }
    uint32_t events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    if (socketp) {
        proto_loop_modify_fd(self->loop, fd, events);
        return 0;
    }
    //  A stale watch on a reused descriptor number would refuse the add;
    //  the number is ours again now, so forget what it was.
    if (proto_loop_add_fd(self->loop, fd, events, s_socket_ready, self) != 0) {
        proto_loop_remove_fd(self->loop, fd);
        if (proto_loop_add_fd(self->loop, fd, events, s_socket_ready, self) != 0) {
            log_error(NULL, "cannot watch upstream socket %d", (int)fd);
            return -1;
        }
    }
    curl_multi_assign(self->multi, fd, self);
    return 0;
}

//  CURLMOPT_TIMERFUNCTION: one timer, replaced on each call; -1 deletes it.
static int s_timer_fn(CURLM *multi, long timeout_ms, void *arg)
{
    proto_curl_t *self = arg;
    if (self->timer)
        proto_loop_cancel_timer(self->loop, self->timer);
    self->timer = 0;
    if (timeout_ms >= 0)
        self->timer =
            proto_loop_add_timer(self->loop, (uint64_t)timeout_ms, false, s_timer_due, self);
    return 0;
}

proto_curl_t *proto_curl_new(proto_loop_t *loop)
{
    proto_curl_t *self = calloc(1, sizeof *self);
    assert(self);
    self->loop = loop;
    self->multi = curl_multi_init();
    if (!self->multi) {
        free(self);
        return NULL;
    }
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETFUNCTION, s_socket_fn);
    curl_multi_setopt(self->multi, CURLMOPT_SOCKETDATA, self);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERFUNCTION, s_timer_fn);
    curl_multi_setopt(self->multi, CURLMOPT_TIMERDATA, self);
    curl_multi_setopt(self->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(self->multi, CURLMOPT_MAXCONNECTS, (long)S_MAX_IDLE_CONNECTIONS);
    //  No cap on connections per host or in total: over HTTP/1.1 every
    //  open stream needs its own, and a cap would queue requests unseen.
    curl_multi_setopt(self->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
    curl_multi_setopt(self->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
    return self;
}

void proto_curl_destroy(proto_curl_t **self_p)
{
    assert(self_p);
    proto_curl_t *self = *self_p;
    if (!self)
        return;
    if (self->timer)
        proto_loop_cancel_timer(self->loop, self->timer);
    self->timer = 0;
    while (self->free_count)
        curl_easy_cleanup(self->free[--self->free_count]);
    //  Cleanup closes the cached connections, telling s_socket_fn to
    //  forget their sockets.
    curl_multi_cleanup(self->multi);
    free(self);
    *self_p = NULL;
}

int proto_curl_add(proto_curl_t *self, CURL *easy, proto_curl_done_fn *fn, void *arg)
{
    s_transfer_t *transfer = malloc(sizeof *transfer);
    assert(transfer);
    *transfer = (s_transfer_t){fn, arg};
    curl_easy_setopt(easy, CURLOPT_PRIVATE, transfer);
    if (curl_multi_add_handle(self->multi, easy) != CURLM_OK) {
        curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
        free(transfer);
        return -1;
    }
    self->running++;
    return 0;
}

void proto_curl_remove(proto_curl_t *self, CURL *easy)
{
    s_transfer_t *transfer = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&transfer);
    if (!transfer)
        return; //  not running (never added, or already ended)
    //  Removing a transfer that has not finished makes libcurl close its
    //  connection: the upstream sees the client go away.
    curl_multi_remove_handle(self->multi, easy);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
    free(transfer);
    self->running--;
}

CURL *proto_curl_easy(proto_curl_t *self)
{
    if (self->free_count)
        return self->free[--self->free_count];
    return curl_easy_init();
}

void proto_curl_easy_release(proto_curl_t *self, CURL **easy_p)
{
    assert(easy_p);
    CURL *easy = *easy_p;
    if (!easy)
        return;
    *easy_p = NULL;
    if (self->free_count == S_MAX_FREE_HANDLES) {
        curl_easy_cleanup(easy);
        return;
    }
    //  Nothing of the last transfer's options may reach the next one: its
    //  headers (the provider's key), its proxy and the proxy's credentials
    //  go with the reset (proto_curl selftest; dispatch_call's checks it
    //  on the wire).
    curl_easy_reset(easy);
    self->free[self->free_count++] = easy;
}

size_t proto_curl_easy_kept(proto_curl_t *self)
{
    return self->free_count;
}

size_t proto_curl_running(proto_curl_t *self)
{
    return self->running;
}
