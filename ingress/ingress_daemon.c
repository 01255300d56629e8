#include "ingress_daemon.h"
#include "proto_check.h"
#include "proto_log.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_LISTEN_BACKLOG 4096

#define S_SWEEP_MS 100 //  how often read deadlines are checked

//  One open connection, for its read deadline and its hang-up (MHD's
//  socket context).
typedef struct s_conn_t {
    int fd;                           //  its socket
    uint64_t deadline_ms;             //  its request must be read by then; UINT64_MAX = none
    bool watched;                     //  its socket is in the loop for hang-ups
    bool hung_up;                     //  the client shut its side
    ingress_daemon_hangup_fn *hangup; //  who waits to hear it, or NULL
    void *hangup_arg;
    struct s_conn_t *prev; //  in the daemon's list
    struct s_conn_t *next;
} s_conn_t;

struct _ingress_daemon_t {
    proto_loop_t *loop;                 //  the process' loop (borrowed)
    ingress_daemon_handlers_t handlers; //  the owner's, called by ours
    uint64_t read_deadline_ms;          //  limits->read_deadline_ms
    size_t connection_memory;           //  limits->connection_memory
    s_conn_t *conns;                    //  open connections
    int sweep_timer;                    //  checks their deadlines, 0 = none
    uint64_t deadline_closes;           //  connections shut for a late request
    struct MHD_Daemon *mhd;             //  the daemon
    char name[16];                      //  "client" or "admin", for logs
    char host[256];                     //  host part of the address
    int port;                           //  port bound
    int listen_fd;                      //  our listening socket until quiesced, else -1
    int epoll_fd;                       //  MHD's epoll fd, watched in the loop
    bool resumed;                       //  a connection was resumed since MHD last ran
    uint64_t due_ms;                    //  MHD wants to run by then (UINT64_MAX: no timeout)
};

static void s_mhd_log(void *arg, const char *format, va_list args)
{
    ingress_daemon_t *self = arg;
    char text[512];
    vsnprintf(text, sizeof text, format, args);
    size_t length = strlen(text);
    while (length && (text[length - 1] == '\n' || text[length - 1] == '\r'))
        text[--length] = '\0';
    //  Refusals and closures of slow or greedy clients happen by the
    //  thousand under abuse: not worth a warning each.
    if (strstr(text, "connection limit") || strstr(text, "connection closure") ||
        strstr(text, "too many connections"))
        log_debug(NULL, "http %s: %s", self->name, text);
    else
        log_warn(NULL, "http %s: %s", self->name, text);
}

//  The client shut its side of the connection (or reset it).
static void s_conn_hangup(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    s_conn_t *conn = arg;
    conn->hung_up = true;
    ingress_daemon_hangup_fn *hangup = conn->hangup;
    conn->hangup = NULL;
    if (hangup)
        hangup(conn->hangup_arg);
}

//  Edge-triggered: while MHD serves the connection a hang-up wakes the loop
//  once, not on every turn until MHD closes it. Watching for the whole life
//  of the connection costs one epoll_ctl per connection instead of an add
//  and a remove around every suspended request.
#define S_HANGUP_EVENTS (EPOLLRDHUP | EPOLLET)

static void s_conn_watch(ingress_daemon_t *self, s_conn_t *conn)
{
    conn->watched = conn->fd >= 0 && proto_loop_add_fd(self->loop, conn->fd, S_HANGUP_EVENTS,
                                                       s_conn_hangup, conn) == 0;
    //  Not fatal: a hang-up is then heard only when the answer is written
    //  (ingress_daemon_wait_hangup tries again), but worth knowing.
    if (!conn->watched && conn->fd >= 0)
        log_warn(NULL, "http %s: cannot watch connection %d for hang-ups: %s", self->name, conn->fd,
                 strerror(errno));
}

static void s_notify_connection(void *arg, struct MHD_Connection *connection, void **socket_context,
                                enum MHD_ConnectionNotificationCode code)
{
    ingress_daemon_t *self = arg;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        s_conn_t *conn = calloc(1, sizeof *conn);
        assert(conn);
        conn->fd = info ? info->connect_fd : -1;
        conn->deadline_ms = proto_loop_now_ms() + self->read_deadline_ms;
        s_conn_watch(self, conn);
        conn->next = self->conns;
        if (self->conns)
            self->conns->prev = conn;
        self->conns = conn;
        *socket_context = conn;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        s_conn_t *conn = *socket_context;
        //  MHD reports the close before it closes the socket: the fd is
        //  still this connection's.
        if (conn->watched)
            proto_loop_remove_fd(self->loop, conn->fd);
        if (conn->prev)
            conn->prev->next = conn->next;
        else
            self->conns = conn->next;
        if (conn->next)
            conn->next->prev = conn->prev;
        free(conn);
        *socket_context = NULL;
    }
}

static s_conn_t *s_conn_of(struct MHD_Connection *connection)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

//  A request ended: the next one on this connection has its own deadline.
static void s_completed(void *arg, struct MHD_Connection *connection, void **request_p,
                        enum MHD_RequestTerminationCode code)
{
    ingress_daemon_t *self = arg;
    s_conn_t *conn = s_conn_of(connection);
    if (conn && self->read_deadline_ms)
        conn->deadline_ms = proto_loop_now_ms() + self->read_deadline_ms;
    if (self->handlers.completed)
        self->handlers.completed(self->handlers.arg, connection, request_p, code);
}

void ingress_daemon_request_received(ingress_daemon_t *self, struct MHD_Connection *connection)
{
    s_conn_t *conn = s_conn_of(connection);
    if (conn)
        conn->deadline_ms = UINT64_MAX;
}

void ingress_daemon_wait_hangup(ingress_daemon_t *self, struct MHD_Connection *connection,
                                ingress_daemon_hangup_fn *hangup, void *arg)
{
    s_conn_t *conn = s_conn_of(connection);
    if (!conn)
        return;
    conn->hangup = hangup;
    conn->hangup_arg = arg;
    if (!conn->watched)
        s_conn_watch(self, conn);
    else if (conn->hung_up)
        //  It hung up before anyone waited: re-arming makes epoll report it
        //  again on the next turn (never from inside the caller's call).
        proto_loop_modify_fd(self->loop, conn->fd, S_HANGUP_EVENTS);
}

void ingress_daemon_stop_waiting(ingress_daemon_t *self, struct MHD_Connection *connection)
{
    assert(self);
    s_conn_t *conn = s_conn_of(connection);
    if (conn)
        conn->hangup = NULL;
}

uint64_t ingress_daemon_deadline_closes(ingress_daemon_t *self)
{
    return self->deadline_closes;
}

//  MHD keeps each header, argument and cookie as a list node in the pool
//  beside its text (struct MHD_HTTP_Header: 56 bytes in 0.9.75).
#define S_HEAD_NODE_BYTES 64

static enum MHD_Result s_add_head_value(void *arg, enum MHD_ValueKind kind, const char *key,
                                        const char *value)
{
    (void)kind;
    size_t *size = arg;
    *size += S_HEAD_NODE_BYTES + strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

size_t ingress_daemon_head_size(struct MHD_Connection *connection, const char *url,
                                const char *method)
{
    size_t size = strlen(method) + strlen(url) + sizeof " HTTP/1.1\r\n";
    MHD_get_connection_values(connection, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND | MHD_COOKIE_KIND,
                              s_add_head_value, &size);
    return size;
}

size_t ingress_daemon_head_room(ingress_daemon_t *self)
{
    return self->connection_memory > INGRESS_DAEMON_ANSWER_ROOM
               ? self->connection_memory - INGRESS_DAEMON_ANSWER_ROOM
               : 0;
}

//  Shuts the sockets of connections past their read deadline: MHD then
//  reads end-of-file and closes them itself (there is no MHD call to close
//  a connection whose request it has not handed us).
static void s_sweep(proto_loop_t *loop, int id, void *arg)
{
    ingress_daemon_t *self = arg;
    uint64_t now = proto_loop_now_ms();
    for (s_conn_t *conn = self->conns; conn; conn = conn->next)
        if (conn->deadline_ms <= now && conn->fd >= 0) {
            shutdown(conn->fd, SHUT_RDWR);
            conn->deadline_ms = UINT64_MAX;
            self->deadline_closes++;
        }
}

static void s_ready(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    ingress_daemon_t *self = arg;
    self->resumed = false;
    MHD_run(self->mhd);
}

//  Splits "host:port" (host may be "[v6]") and binds a listening socket.
//  Returns the fd, or -1 with a reason.
static int s_listen(const char *address, char *host, size_t host_size, bool *ipv6, char *error,
                    size_t error_size)
{
    const char *colon = strrchr(address, ':');
    if (!colon || colon == address) {
        snprintf(error, error_size, "'%s' is not host:port", address);
        return -1;
    }
    size_t length = (size_t)(colon - address);
    const char *start = address;
    if (length >= 2 && address[0] == '[' && colon[-1] == ']') {
        start++;
        length -= 2;
    }
    if (length >= host_size) {
        snprintf(error, error_size, "host name too long in '%s'", address);
        return -1;
    }
    memcpy(host, start, length);
    host[length] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *found = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &found);
    if (rc != 0) {
        snprintf(error, error_size, "cannot resolve '%s': %s", address, gai_strerror(rc));
        return -1;
    }
    int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        bind(fd, found->ai_addr, found->ai_addrlen) != 0 || listen(fd, S_LISTEN_BACKLOG) != 0) {
        snprintf(error, error_size, "cannot listen on %s: %s", address, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    *ipv6 = found->ai_family == AF_INET6;
    freeaddrinfo(found);
    return fd;
}

static int s_bound_port(int fd)
{
    struct sockaddr_storage bound;
    socklen_t size = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &size) != 0)
        return 0;
    if (bound.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    return ntohs(((struct sockaddr_in *)&bound)->sin_port);
}

ingress_daemon_t *ingress_daemon_new(proto_loop_t *loop, const char *name, const char *address,
                                     const ingress_daemon_limits_t *limits,
                                     const ingress_daemon_handlers_t *handlers, char *error,
                                     size_t error_size)
{
    ingress_daemon_t *self = calloc(1, sizeof *self);
    assert(self);
    self->loop = loop;
    self->epoll_fd = -1;
    self->due_ms = UINT64_MAX;
    snprintf(self->name, sizeof self->name, "%s", name);
    self->handlers = *handlers;
    self->read_deadline_ms = limits->read_deadline_ms;
    self->connection_memory = limits->connection_memory;
    bool ipv6 = false;
    self->listen_fd = s_listen(address, self->host, sizeof self->host, &ipv6, error, error_size);
    if (self->listen_fd < 0) {
        free(self);
        return NULL;
    }
    int port = s_bound_port(self->listen_fd);
    //  No internal thread: MHD_USE_EPOLL alone is "external polling" with
    //  an epoll fd we can watch. Suspend/resume brings the inter-thread
    //  channel (MHD_USE_ITC) that makes a resume wake that fd.
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_TURBO |
                     (ipv6 ? MHD_USE_IPv6 : 0) | (limits->tls ? MHD_USE_TLS : 0);
    if (limits->tls && proto_tls_serve(limits->tls, self->listen_fd) != 0) {
        snprintf(error, error_size, "cannot serve TLS on %s: port taken by another listener",
                 address);
        close(self->listen_fd);
        free(self);
        return NULL;
    }
    self->mhd = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, handlers->access, handlers->arg,
        MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, self, MHD_OPTION_LISTEN_SOCKET, self->listen_fd,
        MHD_OPTION_CONNECTION_LIMIT, limits->connection_limit, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        limits->connection_memory, MHD_OPTION_CONNECTION_TIMEOUT, limits->connection_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, s_completed, self, MHD_OPTION_NOTIFY_CONNECTION,
        s_notify_connection, self, MHD_OPTION_PER_IP_CONNECTION_LIMIT, limits->per_ip_limit,
        MHD_OPTION_URI_LOG_CALLBACK, handlers->uri_log, handlers->arg, MHD_OPTION_ARRAY,
        proto_tls_mhd_options(limits->tls), MHD_OPTION_END);
    if (!self->mhd) {
        snprintf(error, error_size, "cannot start the HTTP server on %s", address);
        close(self->listen_fd);
        free(self);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(self->mhd, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info && info->port ? info->port : port;
    info = MHD_get_daemon_info(self->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    self->epoll_fd = info ? info->epoll_fd : -1;
    if (self->epoll_fd < 0 ||
        proto_loop_add_fd(loop, self->epoll_fd, EPOLLIN, s_ready, self) != 0) {
        snprintf(error, error_size, "cannot watch the HTTP server's epoll fd");
        ingress_daemon_destroy(&self);
        return NULL;
    }
    if (self->read_deadline_ms)
        self->sweep_timer = proto_loop_add_timer(loop, S_SWEEP_MS, true, s_sweep, self);
    return self;
}

void ingress_daemon_destroy(ingress_daemon_t **self_p)
{
    assert(self_p);
    ingress_daemon_t *self = *self_p;
    if (!self)
        return;
    if (self->epoll_fd >= 0)
        proto_loop_remove_fd(self->loop, self->epoll_fd);
    if (self->sweep_timer)
        proto_loop_cancel_timer(self->loop, self->sweep_timer);
    //  MHD closes a listening socket it still holds; a quiesced one is ours.
    //  It reports each connection closed (s_notify_connection frees ours).
    MHD_stop_daemon(self->mhd);
    while (self->conns) {
        s_conn_t *next = self->conns->next;
        free(self->conns);
        self->conns = next;
    }
    free(self);
    *self_p = NULL;
}

int ingress_daemon_port(ingress_daemon_t *self)
{
    return self->port;
}

const char *ingress_daemon_host(ingress_daemon_t *self)
{
    return self->host;
}

void ingress_daemon_resumed(ingress_daemon_t *self)
{
    self->resumed = true;
}

int ingress_daemon_turn(ingress_daemon_t *self)
{
    uint64_t now = proto_loop_now_ms();
    if (self->resumed || now >= self->due_ms) {
        self->resumed = false;
        MHD_run(self->mhd);
    }
    //  MHD_get_timeout speaks milliseconds, like our loop (zhttp_server
    //  passed them to select() as microseconds).
    MHD_UNSIGNED_LONG_LONG timeout;
    if (MHD_get_timeout(self->mhd, &timeout) != MHD_YES) {
        self->due_ms = UINT64_MAX;
        return -1;
    }
    if (timeout > INT_MAX)
        timeout = INT_MAX;
    self->due_ms = now + timeout;
    return (int)timeout;
}

void ingress_daemon_quiesce(ingress_daemon_t *self)
{
    if (self->listen_fd < 0)
        return;
    MHD_socket fd = MHD_quiesce_daemon(self->mhd);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    self->listen_fd = -1;
}

unsigned ingress_daemon_connections(ingress_daemon_t *self)
{
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(self->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return info ? info->num_connections : 0;
}

//  --------------------------------------------------------------------------
//  Self test: a plain socket client driven by the same loop.

typedef struct {
    ingress_daemon_t *daemon; //  under test
    char reply[4096];         //  bytes the client read
    size_t reply_size;        //  how many
    int requests;             //  access handler calls that answered
    int completed;            //  completion callbacks
    bool uri_seen;            //  the URI log callback ran
} s_test_t;

static void *s_test_uri(void *arg, const char *uri, struct MHD_Connection *connection)
{
    s_test_t *test = arg;
    test->uri_seen = strcmp(uri, "/hello?x=1") == 0;
    return NULL;
}

static enum MHD_Result s_test_access(void *arg, struct MHD_Connection *connection, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **request_p)
{
    s_test_t *test = arg;
    static const char body[] = "hello";
    struct MHD_Response *response =
        MHD_create_response_from_buffer(5, (void *)body, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result rc = MHD_queue_response(connection, 200, response);
    MHD_destroy_response(response);
    test->requests++;
    return rc;
}

static void s_test_completed(void *arg, struct MHD_Connection *connection, void **request_p,
                             enum MHD_RequestTerminationCode code)
{
    ((s_test_t *)arg)->completed++;
}

static void s_test_client(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    s_test_t *test = arg;
    ssize_t got =
        read(fd, test->reply + test->reply_size, sizeof test->reply - 1 - test->reply_size);
    if (got > 0)
        test->reply_size += (size_t)got;
    test->reply[test->reply_size] = '\0';
    if (got == 0 || strstr(test->reply, "\r\n\r\nhello"))
        proto_loop_stop(loop);
}

//  A slow client's socket: counts it closed at end of file.
typedef struct {
    int closed; //  sockets that saw end of file
    int open;   //  sockets being watched
} s_slow_t;

static void s_test_slow(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    s_slow_t *slow = arg;
    char buffer[512];
    ssize_t got = read(fd, buffer, sizeof buffer);
    if (got > 0)
        return;
    proto_loop_remove_fd(loop, fd);
    if (++slow->closed == slow->open)
        proto_loop_stop(loop);
}

static int s_test_turn(proto_loop_t *loop, void *arg)
{
    return ingress_daemon_turn(((s_test_t *)arg)->daemon);
}

//  Sends `request` on a new connection to `port` and runs the loop until
//  the answer ended; the answer is in test->reply.
static void s_test_once(proto_loop_t *loop, s_test_t *test, int port, const char *request)
{
    test->reply_size = 0;
    test->reply[0] = '\0';
    int client = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    PROTO_CHECK(connect(client, (struct sockaddr *)&to, sizeof to) == 0);
    PROTO_CHECK(write(client, request, strlen(request)) == (ssize_t)strlen(request));
    proto_loop_add_fd(loop, client, EPOLLIN, s_test_client, test);
    proto_loop_run(loop);
    proto_loop_remove_fd(loop, client);
    close(client);
}

//  Request headers take the connection's pool (ingress.connection_memory):
//  10 KiB of them pass a 32 KiB pool and are refused 431 by an 8 KiB one.
static void s_test_header_room(proto_loop_t *loop, s_test_t *test, int port)
{
    char *request = malloc(11 * 1024);
    assert(request);
    int length = snprintf(request, 200,
                          "GET /hello?x=1 HTTP/1.1\r\nHost: x\r\nConnection: "
                          "close\r\nX-Big: ");
    memset(request + length, 'a', 10 * 1024);
    strcpy(request + length + 10 * 1024, "\r\n\r\n");
    s_test_once(loop, test, port, request);
    PROTO_CHECK(strncmp(test->reply, "HTTP/1.1 200", 12) == 0);

    ingress_daemon_limits_t limits = {100, 8192, 10, 2, 300, NULL};
    ingress_daemon_handlers_t handlers = {s_test_access, s_test_completed, s_test_uri, test};
    char error[256];
    ingress_daemon_t *roomy = test->daemon;
    test->daemon =
        ingress_daemon_new(loop, "small", "127.0.0.1:0", &limits, &handlers, error, sizeof error);
    PROTO_CHECK(test->daemon);
    s_test_once(loop, test, ingress_daemon_port(test->daemon), request);
    PROTO_CHECK(strncmp(test->reply, "HTTP/1.1 431", 12) == 0);
    ingress_daemon_destroy(&test->daemon);
    test->daemon = roomy;
    free(request);
}

void ingress_daemon_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_daemon: ");
    proto_loop_t *loop = proto_loop_new();
    s_test_t test = {0};
    ingress_daemon_limits_t limits = {100, 32768, 10, 2, 300, NULL};
    ingress_daemon_handlers_t handlers = {s_test_access, s_test_completed, s_test_uri, &test};
    char error[256];
    test.daemon =
        ingress_daemon_new(loop, "test", "127.0.0.1:0", &limits, &handlers, error, sizeof error);
    PROTO_CHECK(test.daemon);
    int port = ingress_daemon_port(test.daemon);
    PROTO_CHECK(port > 0);
    PROTO_CHECK(strcmp(ingress_daemon_host(test.daemon), "127.0.0.1") == 0);

    //  The same port again is refused with the reason.
    char address[64];
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    ingress_daemon_t *twin =
        ingress_daemon_new(loop, "twin", address, &limits, &handlers, error, sizeof error);
    PROTO_CHECK(!twin);
    PROTO_CHECK(strstr(error, "Address already in use") && strstr(error, address));
    PROTO_CHECK(
        !ingress_daemon_new(loop, "bad", "nohost", &limits, &handlers, error, sizeof error));

    //  A request is served by the loop alone.
    int client = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    PROTO_CHECK(connect(client, (struct sockaddr *)&to, sizeof to) == 0);
    const char *request = "GET /hello?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    PROTO_CHECK(write(client, request, strlen(request)) == (ssize_t)strlen(request));
    proto_loop_add_fd(loop, client, EPOLLIN, s_test_client, &test);
    proto_loop_set_turn(loop, s_test_turn, &test);
    proto_loop_run(loop);
    PROTO_CHECK(strncmp(test.reply, "HTTP/1.1 200", 12) == 0);
    PROTO_CHECK(test.requests == 1 && test.uri_seen);
    proto_loop_remove_fd(loop, client);
    close(client);
    s_test_header_room(loop, &test, port);

    //  Slow clients: three connections from one address, each with half a
    //  request line. The third is over the per-address limit (2) and closed
    //  at once; the other two at their read deadline (300 ms).
    s_slow_t slow = {.open = 3};
    int slow_fds[3];
    for (int i = 0; i < 3; i++) {
        slow_fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        PROTO_CHECK(connect(slow_fds[i], (struct sockaddr *)&to, sizeof to) == 0);
        PROTO_CHECK(write(slow_fds[i], "GET /slow", 9) == 9);
        proto_loop_add_fd(loop, slow_fds[i], EPOLLIN | EPOLLRDHUP, s_test_slow, &slow);
    }
    proto_loop_run(loop);
    PROTO_CHECK(slow.closed == 3);
    PROTO_CHECK(ingress_daemon_deadline_closes(test.daemon) == 2);
    for (int i = 0; i < 3; i++)
        close(slow_fds[i]);

    ingress_daemon_quiesce(test.daemon);
    ingress_daemon_quiesce(test.daemon);
    int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    PROTO_CHECK(connect(probe, (struct sockaddr *)&to, sizeof to) != 0);
    close(probe);
    ingress_daemon_destroy(&test.daemon);
    PROTO_CHECK(test.daemon == NULL);
    proto_loop_destroy(&loop);
    if (verbose)
        printf("OK\n");
}
