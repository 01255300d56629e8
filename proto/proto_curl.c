#include "proto_curl.h"
#include "proto_log.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

//  Connections kept open for reuse once idle; a few per busy provider.
#define S_MAX_IDLE_CONNECTIONS 512
//  Easy handles kept for reuse: what a loop turn ends and starts again
//  under load, at ~6 KiB each while idle.
#define S_MAX_FREE_HANDLES 64
//  A handle's receive buffer, set once for its life (libcurl keeps it
//  across a reset). Each read fills at most one, and libcurl polls the
//  socket after each read to learn whether more waits: a 12 KB stream
//  through 1 KiB costs 12 reads, 12 polls and 12 write callbacks, through
//  16 KiB one of each. At thousands of open streams the buffer is most of
//  what one holds, and their events are small: 1 KiB (libcurl's least) is
//  enough there. So the first S_LARGE_HANDLES handles get 16 KiB and are
//  always kept (~1.6 MiB at most, and only the pages reads touched are
//  resident); every other handle gets 1 KiB.
#define S_LARGE_BUFFER 16384L
#define S_SMALL_BUFFER 1024L
#define S_LARGE_HANDLES PROTO_CURL_LARGE_HANDLES

//  What the loop watches on a socket of ours (proto_curl_t.sockets[fd]):
//  the epoll events, and these flags.
#define S_OPENED (1u << 29)  //  a connection's socket, opened and closed through us
#define S_WATCHED (1u << 30) //  in the loop's epoll set
#define S_PARKED (1u << 31)  //  libcurl said REMOVE: an idle pooled connection
#define S_EVENTS (EPOLLIN | EPOLLOUT)

typedef struct {
    proto_curl_done_fn *fn; //  called when the transfer ends
    void *arg;              //  its argument
} s_transfer_t;

struct _proto_curl_t {
    proto_loop_t *loop;                //  the loop we are driven by
    CURLM *multi;                      //  the one multi handle
    int timer;                         //  libcurl's timeout as a loop timer, 0 when none
    size_t running;                    //  transfers added and not yet ended
    CURL *free[S_MAX_FREE_HANDLES];    //  reset easy handles for the next transfers
    size_t free_count;                 //  entries used in free
    CURL *large[S_LARGE_HANDLES];      //  every handle with a large buffer, in use or free
    size_t large_count;                //  entries used in large
    CURL *free_large[S_LARGE_HANDLES]; //  those of them free, reset
    size_t free_large_count;           //  entries used in free_large
    uint32_t *sockets;                 //  per descriptor number: S_WATCHED, S_PARKED, events
    int socket_capacity;               //  entries in sockets
    proto_curl_action_fn *after;       //  called after each round of libcurl's callbacks
    void *after_arg;
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

//  Sockets stay in the loop's epoll set while their connection idles in
//  libcurl's pool ("parked"). libcurl says REMOVE when a transfer ends and
//  asks for the same socket and events when the next one reuses the
//  connection: an epoll_ctl DEL and ADD (and a malloc) per request that
//  parking saves. A parked socket that wakes (the upstream closed the idle
//  connection) leaves the set then; one libcurl closes is forgotten without
//  a system call (s_close_socket), since closing takes it out of the set.
//  Only connections' sockets park: libcurl closes others (its resolver's)
//  without telling us, and a closed socket left parked would go unwatched
//  when its number comes back.
static uint32_t *s_socket_state(proto_curl_t *self, int fd)
{
    if (fd >= self->socket_capacity) {
        int capacity = self->socket_capacity ? self->socket_capacity : 64;
        while (capacity <= fd)
            capacity *= 2;
        uint32_t *sockets = realloc(self->sockets, (size_t)capacity * sizeof *sockets);
        assert(sockets);
        memset(sockets + self->socket_capacity, 0,
               (size_t)(capacity - self->socket_capacity) * sizeof *sockets);
        self->sockets = sockets;
        self->socket_capacity = capacity;
    }
    return &self->sockets[fd];
}

static void s_unwatch(proto_curl_t *self, int fd)
{
    proto_loop_remove_fd(self->loop, fd);
    *s_socket_state(self, fd) = 0;
}

static void s_socket_ready(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    proto_curl_t *self = arg;
    if (*s_socket_state(self, fd) & S_PARKED) {
        s_unwatch(self, fd); //  libcurl finds the connection dead when it next looks
        return;
    }
    int mask = 0;
    if (events & EPOLLIN)
        mask |= CURL_CSELECT_IN;
    if (events & EPOLLOUT)
        mask |= CURL_CSELECT_OUT;
    if (events & (EPOLLERR | EPOLLHUP))
        mask |= CURL_CSELECT_ERR;
    int running;
    curl_multi_socket_action(self->multi, fd, mask, &running);
    //  Transfers that ended are told first: what their last reads
    //  brought leaves with their end, not in a message of its own.
    s_check_done(self);
    if (self->after)
        self->after(self->after_arg);
}

static void s_timer_due(proto_loop_t *loop, int id, void *arg)
{
    proto_curl_t *self = arg;
    self->timer = 0;
    int running;
    curl_multi_socket_action(self->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    //  Transfers that ended are told first: what their last reads
    //  brought leaves with their end, not in a message of its own.
    s_check_done(self);
    if (self->after)
        self->after(self->after_arg);
}

//  CURLMOPT_SOCKETFUNCTION: watch, change or forget a socket. socketp is
//  non-NULL once we watch the socket (set with curl_multi_assign).
static int s_socket_fn(CURL *easy, curl_socket_t fd, int what, void *arg, void *socketp)
{
    proto_curl_t *self = arg;
    uint32_t *state = s_socket_state(self, fd);
    if (what == CURL_POLL_REMOVE) {
        if ((*state & (S_OPENED | S_WATCHED)) == (S_OPENED | S_WATCHED))
            *state |= S_PARKED;
        else if (*state & S_WATCHED)
            s_unwatch(self, fd);
        curl_multi_assign(self->multi, fd, NULL);
        return 0;
    }
    uint32_t events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    //  The table is trusted only where we know the registration is live:
    //  libcurl says it watches through us (socketp), or a connection's
    //  socket parked and never closed behind our back. Any other entry may
    //  be a closed socket's (libcurl closes its resolver's without a word):
    //  it is added afresh below.
    bool parked = (*state & (S_OPENED | S_PARKED | S_WATCHED)) == (S_OPENED | S_PARKED | S_WATCHED);
    if ((*state & S_WATCHED) && (socketp || parked)) {
        if ((*state & S_EVENTS) != events && proto_loop_modify_fd(self->loop, fd, events) != 0) {
            s_unwatch(self, fd);
            return s_socket_fn(easy, fd, what, arg, NULL);
        }
        *state = (*state & S_OPENED) | S_WATCHED | events;
        if (!socketp)
            curl_multi_assign(self->multi, fd, self);
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
    *state = (*state & S_OPENED) | S_WATCHED | events;
    curl_multi_assign(self->multi, fd, self);
    return 0;
}

//  CURLOPT_OPENSOCKETFUNCTION, set on every transfer: a connection's socket,
//  which libcurl will close through s_close_socket.
static curl_socket_t s_open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *address)
{
    proto_curl_t *self = arg;
    int fd = socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
    if (fd >= 0)
        *s_socket_state(self, fd) = S_OPENED;
    return fd >= 0 ? fd : CURL_SOCKET_BAD;
}

//  CURLOPT_CLOSESOCKETFUNCTION, set on every transfer: libcurl closes one
//  of its sockets (REMOVE came first, so it is parked if watched).
static int s_close_socket(void *arg, curl_socket_t fd)
{
    proto_curl_t *self = arg;
    uint32_t *state = s_socket_state(self, fd);
    if (*state & S_WATCHED)
        proto_loop_forget_fd(self->loop, fd);
    *state = 0;
    return close(fd);
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
    while (self->free_large_count)
        curl_easy_cleanup(self->free_large[--self->free_large_count]);
    //  Cleanup closes the cached connections, telling s_socket_fn to
    //  forget their sockets.
    curl_multi_cleanup(self->multi);
    //  Sockets of connections libcurl never closed through us (none should
    //  be left) leave the loop with it.
    for (int fd = 0; fd < self->socket_capacity; fd++)
        if (self->sockets[fd] & S_WATCHED)
            proto_loop_remove_fd(self->loop, fd);
    free(self->sockets);
    free(self);
    *self_p = NULL;
}

int proto_curl_add(proto_curl_t *self, CURL *easy, proto_curl_done_fn *fn, void *arg)
{
    s_transfer_t *transfer = malloc(sizeof *transfer);
    assert(transfer);
    *transfer = (s_transfer_t){fn, arg};
    curl_easy_setopt(easy, CURLOPT_PRIVATE, transfer);
    //  A connection keeps the close function of the transfer that opened it.
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, s_open_socket);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, self);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, s_close_socket);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, self);
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

//  A new handle, its receive buffer's size set before its first transfer.
static CURL *s_easy_new(long buffer_size)
{
    CURL *easy = curl_easy_init();
    if (easy)
        curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, buffer_size);
    return easy;
}

CURL *proto_curl_easy(proto_curl_t *self)
{
    if (self->free_large_count)
        return self->free_large[--self->free_large_count];
    if (self->large_count < S_LARGE_HANDLES) {
        CURL *easy = s_easy_new(S_LARGE_BUFFER);
        if (easy)
            self->large[self->large_count++] = easy;
        return easy;
    }
    if (self->free_count)
        return self->free[--self->free_count];
    return s_easy_new(S_SMALL_BUFFER);
}

static bool s_is_large(proto_curl_t *self, CURL *easy)
{
    for (size_t i = 0; i < self->large_count; i++)
        if (self->large[i] == easy)
            return true;
    return false;
}

void proto_curl_easy_release(proto_curl_t *self, CURL **easy_p)
{
    assert(easy_p);
    CURL *easy = *easy_p;
    if (!easy)
        return;
    *easy_p = NULL;
    bool large = s_is_large(self, easy);
    if (!large && self->free_count == S_MAX_FREE_HANDLES) {
        curl_easy_cleanup(easy);
        return;
    }
    //  Nothing of the last transfer's options may reach the next one: its
    //  headers (the provider's key), its proxy and the proxy's credentials
    //  go with the reset (proto_curl selftest; dispatch_call's checks it
    //  on the wire). The reset also forgets the buffer's size, not the
    //  buffer: set again to the size it has.
    curl_easy_reset(easy);
    curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, large ? S_LARGE_BUFFER : S_SMALL_BUFFER);
    if (large)
        self->free_large[self->free_large_count++] = easy;
    else
        self->free[self->free_count++] = easy;
}

void proto_curl_after_action(proto_curl_t *self, proto_curl_action_fn *fn, void *arg)
{
    self->after = fn;
    self->after_arg = arg;
}

size_t proto_curl_easy_kept(proto_curl_t *self)
{
    return self->free_count + self->free_large_count;
}

size_t proto_curl_running(proto_curl_t *self)
{
    return self->running;
}
