/*  ingress_daemon: one libmicrohttpd daemon living in the process' loop.

    libmicrohttpd runs in "external polling" mode with epoll: no thread of
    its own, no thread per connection. Its epoll fd sits in our proto_loop;
    when it is readable we call MHD_run, and on every loop turn the daemon's
    turn function runs MHD again when a connection was resumed or MHD's own
    timeout (MHD_get_timeout, milliseconds) has come, and returns that
    timeout as the longest the loop may sleep.

    Suspend/resume: a connection whose answer is not ready is suspended
    (MHD stops polling it); the owner resumes it when the answer comes and
    calls ingress_daemon_resumed, so MHD runs before the loop sleeps again.
    MHD also signals its inter-thread channel on resume, which wakes the
    epoll fd; the flag just saves a loop turn.

    Slow clients (slowloris): MHD's connection timeout restarts with every
    byte, so a client sending one byte a second holds a connection forever.
    Each connection instead gets a read deadline when it opens and when its
    previous request completes; the owner clears it once the request is
    read whole (ingress_daemon_request_received). A sweep shuts down the
    socket of a connection past its deadline, and MHD closes it. Connections
    per client address are capped by MHD (MHD_OPTION_PER_IP_CONNECTION_LIMIT):
    one address cannot take every descriptor.

    TLS: with limits->tls the daemon speaks only HTTPS (proto_tls hands the
    current certificate to each handshake, so a reload needs nothing here).

    We create and bind the listening socket ourselves so that a busy port is
    reported with its errno, in one clear line, before MHD is involved.
*/
#ifndef INGRESS_DAEMON_H_INCLUDED
#define INGRESS_DAEMON_H_INCLUDED

#include "proto_loop.h"
#include "proto_tls.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct _ingress_daemon_t ingress_daemon_t;

//  Callbacks the daemon's owner provides (libmicrohttpd's own types).
typedef struct {
    MHD_AccessHandlerCallback access;       //  every request, body in pieces
    MHD_RequestCompletedCallback completed; //  every request's end, with why
    void *(*uri_log)(void *arg, const char *uri, struct MHD_Connection *connection);
    //  first sight of a request: raw URI
    void *arg; //  passed to all three
} ingress_daemon_handlers_t;

//  Limits and transport of one daemon.
typedef struct {
    unsigned connection_limit;     //  concurrent connections
    size_t connection_memory;      //  per-connection pool (headers, write buffer)
    unsigned connection_timeout_s; //  idle connections are closed after this
    unsigned per_ip_limit;         //  concurrent connections from one address, 0 = no limit
    uint64_t read_deadline_ms;     //  a request's headers and body within this, 0 = none
    proto_tls_t *tls;              //  HTTPS with these credentials (borrowed), NULL = HTTP
} ingress_daemon_limits_t;

//  Binds `address` ("host:port", port 0 = any) and starts a daemon served
//  by `loop`. `name` ("client", "admin") is for logs. Returns NULL with one
//  line of reason in error. Caller owns return value.
ingress_daemon_t *ingress_daemon_new(proto_loop_t *loop, const char *name, const char *address,
                                     const ingress_daemon_limits_t *limits,
                                     const ingress_daemon_handlers_t *handlers, char *error,
                                     size_t error_size);

//  Stops the daemon; every suspended connection must have been resumed
//  first (libmicrohttpd's rule). Nulls the pointer.
void ingress_daemon_destroy(ingress_daemon_t **self_p);

//  The port actually bound.
int ingress_daemon_port(ingress_daemon_t *self);

//  The host part of the address we bound, for logs. Borrowed.
const char *ingress_daemon_host(ingress_daemon_t *self);

//  The request on `connection` is read whole (headers and body): its read
//  deadline no longer applies. The next request on the connection gets a
//  new one when this one completes.
void ingress_daemon_request_received(ingress_daemon_t *self, struct MHD_Connection *connection);

//  MHD polls no suspended connection: a client that hangs up meanwhile is
//  heard from its socket, which the loop watches from the connection's start
//  to its close. `hangup` is called once (arg) if the client of
//  `connection` hangs up, or already has, before ingress_daemon_stop_waiting;
//  never from inside this call.
typedef void(ingress_daemon_hangup_fn)(void *arg);
void ingress_daemon_wait_hangup(ingress_daemon_t *self, struct MHD_Connection *connection,
                                ingress_daemon_hangup_fn *hangup, void *arg);
void ingress_daemon_stop_waiting(ingress_daemon_t *self, struct MHD_Connection *connection);
//  Connections closed because their request was not read by the deadline.
uint64_t ingress_daemon_deadline_closes(ingress_daemon_t *self);

//  A connection's pool (limits->connection_memory) holds its request's
//  head and then the answer's headers and, for a stream, its chunk buffer.
//  MHD refuses a head that leaves no room with its own HTML 431, and one
//  that leaves too little for the answer gets no answer at all: the
//  connection closes. So the owner refuses, in its clients' own format and
//  with no headers of its own, a head over ingress_daemon_head_room: the
//  pool less what our answers' headers and a stream's chunk buffer need
//  (measured with 0.9.75: a stream's answer failed ~300 bytes from the top).
//  A head within ~150-200 bytes of the top still gets nothing: MHD takes it
//  but cannot build even the 431's headers, and nothing here can help that.
#define INGRESS_DAEMON_ANSWER_ROOM 512
//  What the head of the request on `connection` takes of its pool, as
//  MHD keeps it (request line; each header, argument and cookie and its
//  list node).
size_t ingress_daemon_head_size(struct MHD_Connection *connection, const char *url,
                                const char *method);
//  The largest head with room left for any answer.
size_t ingress_daemon_head_room(ingress_daemon_t *self);

//  Notes that a connection was resumed: MHD runs before the loop sleeps.
void ingress_daemon_resumed(ingress_daemon_t *self);

//  Runs MHD if it is due; returns the longest wait in ms, or -1.
int ingress_daemon_turn(ingress_daemon_t *self);

//  Stops accepting connections; those open are served on.
void ingress_daemon_quiesce(ingress_daemon_t *self);

//  Open connections (suspended ones included).
unsigned ingress_daemon_connections(ingress_daemon_t *self);

//  Self test: a request served from the loop, a busy port refused.
void ingress_daemon_test(bool verbose);

#endif
