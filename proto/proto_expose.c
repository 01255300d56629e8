#include "proto_expose.h"
#include "proto_check.h"
#include "proto_log.h"

#include <arpa/inet.h>
#include <assert.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_HOOKS_MAX 16
#define S_TICK_MS 1000

typedef struct {
    proto_expose_collect_fn *fn; //  refreshes gauges
    void *arg;                   //  its argument
} s_hook_t;

struct _proto_expose_t {
    proto_loop_t *loop;          //  the process' loop (borrowed)
    proto_metrics_t *metrics;    //  the registry served (borrowed)
    struct MHD_Daemon *mhd;      //  the HTTP daemon, no thread of its own
    int epoll_fd;                //  MHD's epoll fd, watched in the loop
    int port;                    //  port bound
    int timer;                   //  MHD's housekeeping tick
    s_hook_t hooks[S_HOOKS_MAX]; //  collect hooks in registration order
    size_t hook_count;           //  how many
    proto_metric_t *scrapes;     //  scrapes served
};

static void s_mhd_log(void *arg, const char *format, va_list args)
{
    char text[512];
    vsnprintf(text, sizeof text, format, args);
    size_t length = strlen(text);
    while (length && (text[length - 1] == '\n' || text[length - 1] == '\r'))
        text[--length] = '\0';
    log_warn(NULL, "metrics http: %s", text);
}

char *proto_expose_render(proto_expose_t *self)
{
    for (size_t i = 0; i < self->hook_count; i++)
        self->hooks[i].fn(self->metrics, self->hooks[i].arg);
    return proto_metrics_render(self->metrics);
}

static enum MHD_Result s_queue(struct MHD_Connection *connection, unsigned status,
                               const char *content_type, char *text, size_t size)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer(size, text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(response, "Content-Type", content_type);
    enum MHD_Result rc = MHD_queue_response(connection, status, response);
    MHD_destroy_response(response);
    return rc;
}

static enum MHD_Result s_access(void *arg, struct MHD_Connection *connection, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **state)
{
    proto_expose_t *self = arg;
    //  MHD calls once for the headers and again for the (empty) body.
    if (!*state) {
        *state = self;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0; //  a body on a scrape is read and ignored
        return MHD_YES;
    }
    if (strcmp(url, "/metrics") != 0)
        return s_queue(connection, 404, "text/plain", strdup("not found\n"), 10);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return s_queue(connection, 405, "text/plain", strdup("method not allowed\n"), 19);
    proto_metric_add(self->scrapes, 1);
    char *text = proto_expose_render(self);
    return s_queue(connection, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
}

static void s_ready(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    proto_expose_t *self = arg;
    MHD_run(self->mhd);
}

static void s_tick(proto_loop_t *loop, int timer_id, void *arg)
{
    proto_expose_t *self = arg;
    MHD_run(self->mhd);
}

//  Parses "host:port" for an IPv4 listener ("localhost" is 127.0.0.1).
static int s_address(const char *address, struct sockaddr_in *sin, char *error, size_t error_size)
{
    const char *colon = strrchr(address, ':');
    char host[64];
    if (!colon || (size_t)(colon - address) >= sizeof host) {
        snprintf(error, error_size, "metrics address '%s' is not host:port", address);
        return -1;
    }
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    memset(sin, 0, sizeof *sin);
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    if (!*host || strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (!end || *end || port < 0 || port > 65535 || inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
        snprintf(error, error_size, "metrics address '%s' is not IPv4-host:port", address);
        return -1;
    }
    return 0;
}

proto_expose_t *proto_expose_new(proto_loop_t *loop, proto_metrics_t *metrics, const char *address,
                                 char *error, size_t error_size)
{
    struct sockaddr_in sin;
    if (s_address(address, &sin, error, error_size) != 0)
        return NULL;
    proto_expose_t *self = calloc(1, sizeof *self);
    assert(self);
    self->loop = loop;
    self->metrics = metrics;
    self->epoll_fd = -1;
    self->scrapes = proto_metrics_counter(metrics, "tollgate_metrics_scrapes_total",
                                          "Scrapes of this /metrics endpoint.", NULL);
    //  No internal thread: MHD_USE_EPOLL alone is external polling through
    //  an epoll fd the loop watches, like the ingress' own listeners.
    self->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_USE_ERROR_LOG, ntohs(sin.sin_port), NULL, NULL,
                                 s_access, self, MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, self,
                                 MHD_OPTION_SOCK_ADDR, &sin, MHD_OPTION_CONNECTION_LIMIT, 64u,
                                 MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!self->mhd) {
        snprintf(error, error_size, "cannot serve metrics on %s", address);
        free(self);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(self->mhd, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info ? info->port : ntohs(sin.sin_port);
    info = MHD_get_daemon_info(self->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    self->epoll_fd = info ? info->epoll_fd : -1;
    if (self->epoll_fd < 0 ||
        proto_loop_add_fd(loop, self->epoll_fd, EPOLLIN, s_ready, self) != 0) {
        snprintf(error, error_size, "cannot watch the metrics server's epoll fd");
        proto_expose_destroy(&self);
        return NULL;
    }
    self->timer = proto_loop_add_timer(loop, S_TICK_MS, true, s_tick, self);
    return self;
}

void proto_expose_destroy(proto_expose_t **self_p)
{
    assert(self_p);
    proto_expose_t *self = *self_p;
    if (!self)
        return;
    if (self->timer)
        proto_loop_cancel_timer(self->loop, self->timer);
    if (self->epoll_fd >= 0)
        proto_loop_remove_fd(self->loop, self->epoll_fd);
    MHD_stop_daemon(self->mhd);
    free(self);
    *self_p = NULL;
}

int proto_expose_on_collect(proto_expose_t *self, proto_expose_collect_fn *fn, void *arg)
{
    if (self->hook_count == S_HOOKS_MAX)
        return -1;
    self->hooks[self->hook_count++] = (s_hook_t){fn, arg};
    return 0;
}

int proto_expose_port(proto_expose_t *self)
{
    return self->port;
}

//  --------------------------------------------------------------------------
//  Self test: a client socket driven by hand from a loop timer.

typedef struct {
    int port;         //  where to connect
    int fd;           //  client socket
    char reply[8192]; //  what came back
    size_t size;      //  bytes of it
} s_client_t;

static void s_client_readable(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    s_client_t *client = arg;
    ssize_t got = read(fd, client->reply + client->size, sizeof client->reply - 1 - client->size);
    if (got > 0) {
        client->size += (size_t)got;
        client->reply[client->size] = '\0';
        return;
    }
    proto_loop_remove_fd(loop, fd);
    proto_loop_stop(loop);
}

static void s_collect(proto_metrics_t *metrics, void *arg)
{
    proto_metric_set(proto_metrics_gauge(metrics, "tg_collected", "Set at scrape.", NULL), 7);
}

void proto_expose_test(bool verbose)
{
    if (verbose)
        printf(" * proto_expose: ");
    proto_loop_t *loop = proto_loop_new();
    proto_metrics_t *metrics = proto_metrics_new();
    proto_metric_add(proto_metrics_counter(metrics, "tg_things_total", "Things.", NULL), 3);
    char error[256];
    PROTO_CHECK(!proto_expose_new(loop, metrics, "nonsense", error, sizeof error));
    proto_expose_t *expose = proto_expose_new(loop, metrics, "127.0.0.1:0", error, sizeof error);
    PROTO_CHECK(expose);
    PROTO_CHECK(proto_expose_on_collect(expose, s_collect, NULL) == 0);
    PROTO_CHECK(proto_expose_port(expose) > 0);

    s_client_t client = {.port = proto_expose_port(expose)};
    client.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)client.port)};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    PROTO_CHECK(connect(client.fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    const char *request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    PROTO_CHECK(write(client.fd, request, strlen(request)) == (ssize_t)strlen(request));
    proto_loop_add_fd(loop, client.fd, EPOLLIN, s_client_readable, &client);
    proto_loop_run(loop);
    close(client.fd);
    PROTO_CHECK(strstr(client.reply, "HTTP/1.1 200"));
    PROTO_CHECK(strstr(client.reply, "tg_things_total 3\n"));
    PROTO_CHECK(strstr(client.reply, "tg_collected 7\n"));
    PROTO_CHECK(strstr(client.reply, "tollgate_metrics_scrapes_total 1\n"));
    proto_expose_destroy(&expose);
    PROTO_CHECK(!expose);
    proto_metrics_destroy(&metrics);
    proto_loop_destroy(&loop);
    if (verbose)
        printf("OK\n");
}
