/*  mock_waiter - parks suspended connections until a deadline or the client's hang-up */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
//  Asserts guard our own invariants: they stay on in release builds.
#undef NDEBUG
#include "mock_waiter.h"
#include "mock_req.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void s_signal(mock_waiter_t *self)
{
    uint64_t one = 1;
    //  A full eventfd counter still wakes the reader, so a failed write is harmless.
    if (write(self->evfd, &one, sizeof(one)) < 0)
        return;
}

static void *s_run(void *args)
{
    mock_waiter_t *self = args;
    size_t cap_ready = 64;
    mock_req_t **ready = malloc(cap_ready * sizeof(*ready));
    assert(ready);
    while (true) {
        pthread_mutex_lock(&self->mutex);
        uint64_t next = MOCK_NEVER;
        for (size_t index = 0; index < self->n_items; index++)
            if (self->items[index]->wait_due < next)
                next = self->items[index]->wait_due;
        self->next_wake = next;
        bool stopping = self->stopping;
        pthread_mutex_unlock(&self->mutex);

        int timeout = -1;
        if (stopping)
            timeout = 0;
        else if (next != MOCK_NEVER) {
            uint64_t now = mock_now_ms();
            timeout = next <= now ? 0 : (next - now > 60000 ? 60000 : (int)(next - now));
        }
        struct epoll_event events[64];
        int count = epoll_wait(self->epfd, events, 64, timeout);

        pthread_mutex_lock(&self->mutex);
        //  Only this thread removes items, so every pointer epoll returns is still parked.
        for (int index = 0; index < count; index++) {
            mock_req_t *req = events[index].data.ptr;
            if (req)
                atomic_store(&req->aborted, true);
            else {
                uint64_t drain;
                if (read(self->evfd, &drain, sizeof(drain)) < 0)
                    drain = 0;
            }
        }
        uint64_t now = mock_now_ms();
        size_t n_ready = 0;
        for (size_t index = 0; index < self->n_items;) {
            mock_req_t *req = self->items[index];
            if (self->stopping || atomic_load(&req->aborted) || req->wait_due <= now) {
                //  Forget the socket before resuming: once resumed it may close and its
                //  number be reused by another connection.
                if (req->wait_fd >= 0)
                    epoll_ctl(self->epfd, EPOLL_CTL_DEL, req->wait_fd, NULL);
                if (req->gathering) {
                    req->gathering = false;
                    self->n_gathering--;
                }
                if (n_ready == cap_ready) {
                    cap_ready *= 2;
                    mock_req_t **grown = realloc(ready, cap_ready * sizeof(*ready));
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

int mock_waiter_start(mock_waiter_t *self)
{
    memset(self, 0, sizeof(*self));
    pthread_mutex_init(&self->mutex, NULL);
    self->next_wake = MOCK_NEVER;
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    self->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (self->epfd < 0 || self->evfd < 0)
        return -1;
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, self->evfd, &event))
        return -1;
    return pthread_create(&self->thread, NULL, s_run, self) ? -1 : 0;
}

//  Parks a request whose connection the caller has just suspended. Returns -1 if the
//  waiter is stopping; the caller must then resume the connection itself.
static int s_park(mock_waiter_t *self, mock_req_t *req, uint64_t due, int gather)
{
    pthread_mutex_lock(&self->mutex);
    if (self->stopping) {
        pthread_mutex_unlock(&self->mutex);
        return -1;
    }
    if (self->n_items == self->cap_items) {
        size_t cap = self->cap_items ? self->cap_items * 2 : 64;
        mock_req_t **items = realloc(self->items, cap * sizeof(*items));
        if (!items) {
            pthread_mutex_unlock(&self->mutex);
            return -1;
        }
        self->items = items;
        self->cap_items = cap;
    }
    req->wait_due = due;
    self->items[self->n_items++] = req;
    if (gather) {
        req->gathering = true;
        //  The last one to arrive lets every one waiting go now (due 0 = already due).
        if (++self->n_gathering >= (size_t)gather) {
            for (size_t index = 0; index < self->n_items; index++)
                if (self->items[index]->gathering)
                    self->items[index]->wait_due = 0;
            due = 0;
        }
    }
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
        s_signal(self);
    return 0;
}

void mock_waiter_stop(mock_waiter_t *self)
{
    pthread_mutex_lock(&self->mutex);
    self->stopping = true;
    pthread_mutex_unlock(&self->mutex);
    s_signal(self);
    pthread_join(self->thread, NULL);
}

void mock_waiter_close(mock_waiter_t *self)
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
static int s_hold(mock_req_t *req, uint64_t due, int gather)
{
    mock_upstream_t *self = req->owner;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    req->wait_fd = info ? info->connect_fd : -1;
    MHD_suspend_connection(req->conn);
    if (s_park(&self->waiter, req, due, gather)) {
        MHD_resume_connection(req->conn);
        return -1;
    }
    return 0;
}

int mock_waiter_hold(mock_req_t *req, uint64_t due)
{
    return s_hold(req, due, 0);
}

int mock_waiter_gather(mock_req_t *req, int count)
{
    return s_hold(req, mock_now_ms() + MOCK_GATHER_MAX_MS, count > 0 ? count : 1);
}
