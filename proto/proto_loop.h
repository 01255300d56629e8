/*  proto_loop: the one event loop each Tollgate process runs.

    An epoll reactor for plain file descriptors (libmicrohttpd's epoll fd,
    libcurl's sockets, signalfd), ZeroMQ sockets and timers, all on one
    thread. ZeroMQ's ZMQ_FD only signals edges, and a send, a receive or a
    ZMQ_EVENTS query on a socket can swallow the edge of a message that
    arrived meanwhile. Asking ZMQ_EVENTS costs two system calls, so the loop
    asks a socket only when its fd woke or something touched it since
    (proto_msg_send and proto_msg_recv say so through proto_loop_touched;
    code that asks ZMQ_EVENTS itself uses proto_loop_events), and every
    socket every 100 ms whatever happened.
*/
#ifndef PROTO_LOOP_H_INCLUDED
#define PROTO_LOOP_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct _proto_loop_t proto_loop_t;

//  Called when fd is ready; events are EPOLLIN/EPOLLOUT/EPOLLERR bits.
typedef void(proto_loop_fd_fn)(proto_loop_t *loop, int fd, uint32_t events, void *arg);
//  Called once per waiting message; it must read exactly one message.
typedef void(proto_loop_socket_fn)(proto_loop_t *loop, zsock_t *socket, void *arg);
//  Called when a timer fires.
typedef void(proto_loop_timer_fn)(proto_loop_t *loop, int timer_id, void *arg);
//  Called on each turn before waiting; returns the longest wait it allows in
//  ms, or -1 for no limit.
typedef int(proto_loop_turn_fn)(proto_loop_t *loop, void *arg);
//  Called when SIGTERM, SIGINT or SIGHUP arrives.
typedef void(proto_loop_signal_fn)(proto_loop_t *loop, int signal_number, void *arg);

//  Creates a loop. Caller owns return value.
proto_loop_t *proto_loop_new(void);

//  Destroys a loop (not the sockets or fds it watched); nulls the pointer.
void proto_loop_destroy(proto_loop_t **self_p);

//  Watches fd for events. Returns 0 or -1.
int proto_loop_add_fd(proto_loop_t *self, int fd, uint32_t events, proto_loop_fd_fn *fn, void *arg);

//  Changes the events watched on fd. Returns 0 or -1.
int proto_loop_modify_fd(proto_loop_t *self, int fd, uint32_t events);

//  Stops watching fd.
void proto_loop_remove_fd(proto_loop_t *self, int fd);

//  Forgets fd without asking epoll: only for a descriptor about to be
//  closed (and never duplicated), which closing takes out of the epoll set.
void proto_loop_forget_fd(proto_loop_t *self, int fd);

//  Watches a ZeroMQ socket for incoming messages. Returns 0 or -1. `fn`
//  receives one message (proto_msg_recv, proto_batch_recv); after one that
//  found a message it is called again without asking ZMQ_EVENTS, so it must
//  take a receive that finds nothing (-1) in its stride.
int proto_loop_add_socket(proto_loop_t *self, zsock_t *socket, proto_loop_socket_fn *fn, void *arg);

//  The same for a socket this process never sends on outside its own
//  handler (SUB sockets, control sockets, monitor pipes): it is looked at
//  only when its fd wakes, which spares two system calls per loop turn.
int proto_loop_add_socket_edge(proto_loop_t *self, zsock_t *socket, proto_loop_socket_fn *fn,
                               void *arg);

//  Stops watching a socket.
void proto_loop_remove_socket(proto_loop_t *self, zsock_t *socket);

//  Says that this thread sent or received on `socket`, or asked its
//  ZMQ_EVENTS, which may have swallowed its fd's edge: the loop running on
//  this thread asks it for messages on its next turn. Any socket, any
//  thread (a socket no running loop watches is ignored).
void proto_loop_touched(zsock_t *socket);

//  Says what a receive on `socket` found (proto_msg_recv calls it): a
//  message, or none (EAGAIN, which made libzmq process the socket's
//  commands as a ZMQ_EVENTS query does). While a handler's receives keep
//  finding messages, the loop calls it again without asking ZMQ_EVENTS
//  first; once one finds none, the socket is drained and the loop stops
//  asking it until its fd wakes or something touches it.
void proto_loop_received(zsock_t *socket, bool message);

//  zsock_events(socket), and proto_loop_touched(socket).
int proto_loop_events(zsock_t *socket);

//  Starts a timer; returns its id (> 0).
int proto_loop_add_timer(proto_loop_t *self, uint64_t delay_ms, bool repeat,
                         proto_loop_timer_fn *fn, void *arg);

//  Cancels a timer; unknown ids are ignored.
void proto_loop_cancel_timer(proto_loop_t *self, int timer_id);

//  Sets the per-turn hook (one per loop).
void proto_loop_set_turn(proto_loop_t *self, proto_loop_turn_fn *fn, void *arg);

//  Delivers SIGTERM, SIGINT and SIGHUP through the loop. Call before any thread is
//  started (ZeroMQ's I/O threads inherit the blocked mask). Returns 0 or -1.
int proto_loop_watch_signals(proto_loop_t *self, proto_loop_signal_fn *fn, void *arg);

//  Runs until proto_loop_stop. Returns 0.
int proto_loop_run(proto_loop_t *self);

//  Makes proto_loop_run return after the current turn.
void proto_loop_stop(proto_loop_t *self);

//  Monotonic milliseconds and microseconds.
uint64_t proto_loop_now_ms(void);
uint64_t proto_loop_now_us(void);

//  Wall-clock microseconds since the epoch.
uint64_t proto_loop_wall_us(void);

//  Self test.
void proto_loop_test(bool verbose);

#endif
