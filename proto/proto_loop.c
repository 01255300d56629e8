#include "proto_loop.h"
#include "proto_check.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define S_MAX_SOCKETS 32
#define S_BATCH 64 //  messages read from one socket before others get a turn
//  Every socket is asked for ZMQ_EVENTS at least this often, whatever its
//  fd and proto_loop_touched said: should a path that swallows a socket's
//  edge ever go unmarked, its messages wait this long, not forever.
#define S_FULL_CHECK_MS 100

typedef struct {
    int fd;               //  watched descriptor
    proto_loop_fd_fn *fn; //  handler
    void *arg;            //  handler argument
    uint64_t added;       //  the loop's epoll_wait count when it was added
} s_watch_t;

typedef struct {
    zsock_t *socket;          //  watched socket
    proto_loop_socket_fn *fn; //  handler
    void *arg;                //  handler argument
    bool edge;                //  looked at only when its fd woke (never sent on elsewhere)
    bool woke;                //  its fd woke since it was last drained
    bool received;            //  a receive in its handler found a message
    bool empty;               //  a receive in its handler found none
} s_socket_t;

typedef struct {
    int id;                  //  > 0 while active
    uint64_t due_ms;         //  monotonic time it fires
    uint64_t interval_ms;    //  period when repeating
    bool repeat;             //  fires again after interval
    proto_loop_timer_fn *fn; //  handler
    void *arg;               //  handler argument
} s_timer_t;

struct _proto_loop_t {
    int epoll_fd;                      //  the epoll set
    s_watch_t **watches;               //  fd-indexed table of watches
    int watch_capacity;                //  entries in watches
    s_socket_t sockets[S_MAX_SOCKETS]; //  watched ZeroMQ sockets
    int socket_count;                  //  entries in sockets
    s_timer_t *timers;                 //  active timers, unsorted
    int timer_count;                   //  entries in timers
    int timer_capacity;                //  allocated entries
    int next_timer_id;                 //  id for the next timer
    proto_loop_turn_fn *turn_fn;       //  per-turn hook
    void *turn_arg;                    //  its argument
    int signal_fd;                     //  signalfd, or -1
    proto_loop_signal_fn *signal_fn;   //  signal handler
    void *signal_arg;                  //  its argument
    bool stopped;                      //  run returns at the end of this turn
    uint64_t full_check_ms;            //  when every socket is next asked for ZMQ_EVENTS
    uint64_t waits;                    //  epoll_wait calls so far
};

//  The loop running on this thread (proto_loop_run), for proto_loop_touched.
//  Per thread: each process runs one loop per thread, and a socket belongs
//  to the thread that uses it.
static _Thread_local proto_loop_t *s_running;

void proto_loop_touched(zsock_t *socket)
{
    proto_loop_t *self = s_running;
    for (int i = 0; self && i < self->socket_count; i++)
        if (self->sockets[i].socket == socket) {
            self->sockets[i].woke = true;
            return;
        }
}

void proto_loop_received(zsock_t *socket, bool message)
{
    proto_loop_t *self = s_running;
    for (int i = 0; self && i < self->socket_count; i++)
        if (self->sockets[i].socket == socket) {
            if (message)
                self->sockets[i].received = true;
            else {
                //  As good as a ZMQ_EVENTS query: nothing is waiting, and
                //  the next message will wake the fd. A send after this
                //  marks the socket again.
                self->sockets[i].empty = true;
                self->sockets[i].woke = false;
            }
            return;
        }
}

int proto_loop_events(zsock_t *socket)
{
    int events = zsock_events(socket);
    proto_loop_touched(socket);
    return events;
}

uint64_t proto_loop_now_ms(void)
{
    return proto_loop_now_us() / 1000;
}

uint64_t proto_loop_now_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
}

uint64_t proto_loop_wall_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000;
}

proto_loop_t *proto_loop_new(void)
{
    proto_loop_t *self = calloc(1, sizeof *self);
    assert(self);
    self->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epoll_fd < 0) {
        free(self);
        return NULL;
    }
    self->signal_fd = -1;
    self->next_timer_id = 1;
    return self;
}

void proto_loop_destroy(proto_loop_t **self_p)
{
    assert(self_p);
    proto_loop_t *self = *self_p;
    if (!self)
        return;
    for (int fd = 0; fd < self->watch_capacity; fd++)
        free(self->watches[fd]);
    free(self->watches);
    free(self->timers);
    if (self->signal_fd >= 0)
        close(self->signal_fd);
    close(self->epoll_fd);
    free(self);
    *self_p = NULL;
}

int proto_loop_add_fd(proto_loop_t *self, int fd, uint32_t events, proto_loop_fd_fn *fn, void *arg)
{
    assert(fd >= 0);
    if (fd >= self->watch_capacity) {
        int capacity = self->watch_capacity ? self->watch_capacity : 64;
        while (capacity <= fd)
            capacity *= 2;
        s_watch_t **watches = realloc(self->watches, (size_t)capacity * sizeof *watches);
        if (!watches)
            return -1;
        memset(watches + self->watch_capacity, 0,
               (size_t)(capacity - self->watch_capacity) * sizeof *watches);
        self->watches = watches;
        self->watch_capacity = capacity;
    }
    if (self->watches[fd])
        return -1;
    struct epoll_event event = {.events = events, .data.fd = fd};
    if (epoll_ctl(self->epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0)
        return -1;
    s_watch_t *watch = malloc(sizeof *watch);
    assert(watch);
    *watch = (s_watch_t){fd, fn, arg, self->waits};
    self->watches[fd] = watch;
    return 0;
}

int proto_loop_modify_fd(proto_loop_t *self, int fd, uint32_t events)
{
    struct epoll_event event = {.events = events, .data.fd = fd};
    return epoll_ctl(self->epoll_fd, EPOLL_CTL_MOD, fd, &event);
}

void proto_loop_remove_fd(proto_loop_t *self, int fd)
{
    if (fd < 0 || fd >= self->watch_capacity || !self->watches[fd])
        return;
    epoll_ctl(self->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
    proto_loop_forget_fd(self, fd);
}

void proto_loop_forget_fd(proto_loop_t *self, int fd)
{
    if (fd < 0 || fd >= self->watch_capacity || !self->watches[fd])
        return;
    free(self->watches[fd]);
    self->watches[fd] = NULL;
}

//  Socket fds only wake epoll; the messages themselves are found by asking
//  ZMQ_EVENTS on every turn.
//  A socket's ZMQ_FD became readable: something may be waiting on it.
static void s_socket_woke(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    for (int i = 0; i < loop->socket_count; i++)
        if (loop->sockets[i].socket == arg)
            loop->sockets[i].woke = true;
}

static int s_add_socket(proto_loop_t *self, zsock_t *socket, proto_loop_socket_fn *fn, void *arg,
                        bool edge)
{
    if (self->socket_count == S_MAX_SOCKETS)
        return -1;
    int fd = zsock_fd(socket);
    if (proto_loop_add_fd(self, fd, EPOLLIN, s_socket_woke, socket) != 0)
        return -1;
    self->sockets[self->socket_count++] = (s_socket_t){socket, fn, arg, edge, true, false, false};
    return 0;
}

int proto_loop_add_socket(proto_loop_t *self, zsock_t *socket, proto_loop_socket_fn *fn, void *arg)
{
    return s_add_socket(self, socket, fn, arg, false);
}

int proto_loop_add_socket_edge(proto_loop_t *self, zsock_t *socket, proto_loop_socket_fn *fn,
                               void *arg)
{
    return s_add_socket(self, socket, fn, arg, true);
}

void proto_loop_remove_socket(proto_loop_t *self, zsock_t *socket)
{
    for (int i = 0; i < self->socket_count; i++)
        if (self->sockets[i].socket == socket) {
            proto_loop_remove_fd(self, zsock_fd(socket));
            self->sockets[i] = self->sockets[--self->socket_count];
            return;
        }
}

int proto_loop_add_timer(proto_loop_t *self, uint64_t delay_ms, bool repeat,
                         proto_loop_timer_fn *fn, void *arg)
{
    if (self->timer_count == self->timer_capacity) {
        int capacity = self->timer_capacity ? self->timer_capacity * 2 : 16;
        s_timer_t *timers = realloc(self->timers, (size_t)capacity * sizeof *timers);
        assert(timers);
        self->timers = timers;
        self->timer_capacity = capacity;
    }
    int id = self->next_timer_id++;
    if (self->next_timer_id <= 0)
        self->next_timer_id = 1;
    self->timers[self->timer_count++] =
        (s_timer_t){id, proto_loop_now_ms() + delay_ms, delay_ms, repeat, fn, arg};
    return id;
}

void proto_loop_cancel_timer(proto_loop_t *self, int timer_id)
{
    for (int i = 0; i < self->timer_count; i++)
        if (self->timers[i].id == timer_id) {
            self->timers[i] = self->timers[--self->timer_count];
            return;
        }
}

void proto_loop_set_turn(proto_loop_t *self, proto_loop_turn_fn *fn, void *arg)
{
    self->turn_fn = fn;
    self->turn_arg = arg;
}

static void s_signal_ready(proto_loop_t *self, int fd, uint32_t events, void *arg)
{
    struct signalfd_siginfo info;
    while (read(fd, &info, sizeof info) == (ssize_t)sizeof info)
        if (self->signal_fn)
            self->signal_fn(self, (int)info.ssi_signo, self->signal_arg);
}

int proto_loop_watch_signals(proto_loop_t *self, proto_loop_signal_fn *fn, void *arg)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0)
        return -1;
    self->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (self->signal_fd < 0)
        return -1;
    self->signal_fn = fn;
    self->signal_arg = arg;
    return proto_loop_add_fd(self, self->signal_fd, EPOLLIN, s_signal_ready, NULL);
}

void proto_loop_stop(proto_loop_t *self)
{
    self->stopped = true;
}

//  Returns ms until the next timer is due, or -1 when none.
static int s_timer_wait(proto_loop_t *self)
{
    uint64_t now = proto_loop_now_ms();
    int64_t wait = -1;
    for (int i = 0; i < self->timer_count; i++) {
        int64_t left = (int64_t)(self->timers[i].due_ms - now);
        if (wait < 0 || left < wait)
            wait = left < 0 ? 0 : left;
    }
    return (int)wait;
}

//  Fires due timers; returns ms until the next one, or -1 when none.
static int s_run_timers(proto_loop_t *self)
{
    uint64_t now = proto_loop_now_ms();
    //  A handler may add or cancel timers, so look the due one up each time.
    for (int i = 0; i < self->timer_count;) {
        s_timer_t timer = self->timers[i];
        if (timer.due_ms > now) {
            i++;
            continue;
        }
        if (timer.repeat)
            self->timers[i].due_ms = now + (timer.interval_ms ? timer.interval_ms : 1);
        else
            self->timers[i] = self->timers[--self->timer_count];
        timer.fn(self, timer.id, timer.arg);
        i = 0;
        now = proto_loop_now_ms();
    }
    return s_timer_wait(self);
}

//  Reads waiting messages; returns true when some socket still has more.
static bool s_run_sockets(proto_loop_t *self)
{
    bool more = false;
    uint64_t now = proto_loop_now_ms();
    bool full = now >= self->full_check_ms;
    if (full)
        self->full_check_ms = now + S_FULL_CHECK_MS;
    for (int i = 0; i < self->socket_count; i++) {
        s_socket_t entry = self->sockets[i];
        //  Asking a socket for ZMQ_EVENTS costs libzmq a system call (a
        //  poll, and a getpid too without proto_pid). Its fd says when
        //  messages came, unless a send, receive or ZMQ_EVENTS query on it
        //  swallowed the edge: those mark it (proto_loop_touched), and the
        //  periodic full check covers any that did not.
        if (!entry.woke && (entry.edge || !full))
            continue;
        int batch = 0;
        bool ask = true;
        while (!self->stopped) {
            //  Asked after the handler ran: whatever it sent or received on
            //  this socket is covered, so its marks are cleared.
            self->sockets[i].woke = false;
            if (ask && !(zsock_events(entry.socket) & ZMQ_POLLIN))
                break;
            if (batch++ == S_BATCH) {
                more = true;
                self->sockets[i].woke = true;
                break;
            }
            self->sockets[i].received = self->sockets[i].empty = false;
            entry.fn(self, entry.socket, entry.arg);
            //  The handler may have removed this socket.
            if (i >= self->socket_count || self->sockets[i].socket != entry.socket)
                break;
            s_socket_t *after = &self->sockets[i];
            if (after->empty && !after->received) {
                //  Its receive found none after libzmq processed the
                //  socket's commands: drained, as a ZMQ_EVENTS query would
                //  have said (a send in the handler touched it again).
                break;
            }
            //  A handler that found a message may find another without a
            //  query (a system call) first: its next receive says.
            ask = !after->received || after->empty;
        }
    }
    return more;
}

static int s_run(proto_loop_t *self);

static int s_min_wait(int a, int b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

int proto_loop_run(proto_loop_t *self)
{
    proto_loop_t *outer = s_running;
    s_running = self;
    int rc = s_run(self);
    s_running = outer;
    return rc;
}

static int s_run(proto_loop_t *self)
{
    struct epoll_event events[256];
    self->stopped = false;
    while (!self->stopped) {
        int wait = s_run_timers(self);
        if (s_run_sockets(self))
            wait = 0;
        //  Socket handlers may have started timers (libcurl asks for a 0 ms
        //  one when a transfer is added) that the wait above does not know.
        wait = s_min_wait(wait, s_timer_wait(self));
        if (self->turn_fn)
            wait = s_min_wait(wait, self->turn_fn(self, self->turn_arg));
        if (self->socket_count)
            wait = s_min_wait(wait, S_FULL_CHECK_MS);
        if (self->stopped)
            break;
        int count = epoll_wait(self->epoll_fd, events, 256, wait);
        if (count < 0 && errno != EINTR)
            return -1;
        self->waits++;
        for (int i = 0; i < count; i++) {
            int fd = events[i].data.fd;
            //  An earlier handler in this batch may have removed this fd, or
            //  closed it and watched a new descriptor with the same number:
            //  this batch's events are the old one's, not the new watch's.
            if (fd < self->watch_capacity && self->watches[fd] &&
                self->watches[fd]->added < self->waits) {
                s_watch_t watch = *self->watches[fd];
                watch.fn(self, fd, events[i].events, watch.arg);
            }
        }
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Self test

typedef struct {
    int pings;     //  messages received
    int ticks;     //  repeating timer firings
    int once;      //  one-shot timer firings
    int pipe_read; //  bytes seen on the pipe
} s_test_state_t;

static void s_test_socket(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    s_test_state_t *state = arg;
    char *text = zstr_recv(socket);
    free(text);
    if (++state->pings == 1000)
        proto_loop_stop(loop);
}

static void s_test_tick(proto_loop_t *loop, int id, void *arg)
{
    ((s_test_state_t *)arg)->ticks++;
}

static void s_test_once(proto_loop_t *loop, int id, void *arg)
{
    ((s_test_state_t *)arg)->once++;
}

static void s_test_pipe(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    char buffer[16];
    ssize_t got = read(fd, buffer, sizeof buffer);
    if (got > 0)
        ((s_test_state_t *)arg)->pipe_read += (int)got;
}

static void s_test_stop(proto_loop_t *loop, int id, void *arg)
{
    proto_loop_stop(loop);
}

static void s_test_socket_timer(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    char *text = zstr_recv(socket);
    free(text);
    proto_loop_add_timer(loop, 0, false, s_test_stop, NULL);
}

//  Two readable pipes in one epoll batch: the first handler to run closes
//  the other's read end and watches a new pipe that takes its number. The
//  batch's event for the old descriptor must not reach the new watch.
typedef struct {
    int reads[2];    //  the two pipes' read ends
    int writes[2];   //  their write ends
    int fresh[2];    //  the new pipe
    bool swapped;    //  the first handler ran
    int fresh_calls; //  the new watch's handler ran (nothing was written to it)
} s_test_reuse_t;

static void s_test_fresh(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    ((s_test_reuse_t *)arg)->fresh_calls++;
}

static void s_test_reused(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    s_test_reuse_t *test = arg;
    if (test->swapped)
        return;
    test->swapped = true;
    int other = test->reads[0] == fd ? 1 : 0;
    int number = test->reads[other];
    proto_loop_remove_fd(loop, number);
    close(number);
    PROTO_CHECK(pipe(test->fresh) == 0);
    PROTO_CHECK(test->fresh[0] == number); //  the lowest free number
    PROTO_CHECK(proto_loop_add_fd(loop, test->fresh[0], EPOLLIN, s_test_fresh, test) == 0);
    test->reads[other] = -1;
    proto_loop_add_timer(loop, 50, false, s_test_stop, NULL);
}

static void s_test_number_reuse(void)
{
    proto_loop_t *loop = proto_loop_new();
    s_test_reuse_t test = {.swapped = false};
    for (int i = 0; i < 2; i++) {
        int fds[2];
        PROTO_CHECK(pipe(fds) == 0);
        test.reads[i] = fds[0];
        test.writes[i] = fds[1];
        PROTO_CHECK(proto_loop_add_fd(loop, fds[0], EPOLLIN, s_test_reused, &test) == 0);
        PROTO_CHECK(write(fds[1], "x", 1) == 1);
    }
    proto_loop_run(loop);
    PROTO_CHECK(test.swapped && test.fresh_calls == 0);
    for (int i = 0; i < 2; i++) {
        if (test.reads[i] >= 0) {
            proto_loop_remove_fd(loop, test.reads[i]);
            close(test.reads[i]);
        }
        close(test.writes[i]);
    }
    proto_loop_remove_fd(loop, test.fresh[0]);
    close(test.fresh[0]);
    close(test.fresh[1]);
    proto_loop_destroy(&loop);
}

void proto_loop_test(bool verbose)
{
    if (verbose)
        printf(" * proto_loop: ");
    s_test_number_reuse();
    proto_loop_t *loop = proto_loop_new();
    PROTO_CHECK(loop);
    s_test_state_t state = {0};

    //  A thousand messages queued before the loop runs are all delivered,
    //  even though ZMQ_FD signalled only once.
    zsock_t *pull = zsock_new_pull("inproc://proto_loop_test");
    zsock_t *push = zsock_new_push("inproc://proto_loop_test");
    for (int i = 0; i < 1000; i++)
        zstr_send(push, "ping");
    PROTO_CHECK(proto_loop_add_socket(loop, pull, s_test_socket, &state) == 0);
    int pipe_fds[2];
    PROTO_CHECK(pipe(pipe_fds) == 0);
    PROTO_CHECK(proto_loop_add_fd(loop, pipe_fds[0], EPOLLIN, s_test_pipe, &state) == 0);
    PROTO_CHECK(write(pipe_fds[1], "abc", 3) == 3);
    int tick = proto_loop_add_timer(loop, 1, true, s_test_tick, &state);
    int cancelled = proto_loop_add_timer(loop, 0, false, s_test_once, &state);
    proto_loop_cancel_timer(loop, cancelled);
    proto_loop_run(loop);
    PROTO_CHECK(state.pings == 1000);
    PROTO_CHECK(state.once == 0);

    //  Timers fire in order and the fd handler ran.
    proto_loop_add_timer(loop, 5, false, s_test_once, &state);
    proto_loop_add_timer(loop, 30, false, s_test_stop, NULL);
    uint64_t start = proto_loop_now_ms();
    proto_loop_run(loop);
    PROTO_CHECK(proto_loop_now_ms() - start >= 30);
    PROTO_CHECK(state.once == 1);
    PROTO_CHECK(state.ticks >= 2);
    PROTO_CHECK(state.pipe_read == 3);
    proto_loop_cancel_timer(loop, tick);

    //  A timer started by a socket handler counts for the wait that
    //  follows: it fires at once, not when the 2 s timer wakes the loop.
    zstr_send(push, "start");
    state.pings = 0;
    proto_loop_remove_socket(loop, pull);
    proto_loop_add_socket(loop, pull, s_test_socket_timer, NULL);
    int late = proto_loop_add_timer(loop, 2000, false, s_test_stop, NULL);
    start = proto_loop_now_ms();
    proto_loop_run(loop);
    PROTO_CHECK(proto_loop_now_ms() - start < 1000);
    proto_loop_cancel_timer(loop, late);

    proto_loop_remove_fd(loop, pipe_fds[0]);
    proto_loop_remove_socket(loop, pull);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    zsock_destroy(&push);
    zsock_destroy(&pull);
    proto_loop_destroy(&loop);
    PROTO_CHECK(loop == NULL);
    if (verbose)
        printf("OK\n");
}
