/*  admin_server: see admin_server.h.

    Threads and what they share. The listener thread (MHD's) owns every
    connection and its s_request_t; a worker touches a request only between
    taking it from the queue and resuming its connection, and publishes the
    answer under the queue's mutex before the resume, so the listener sees
    a complete answer when MHD calls it again. The static files are read at
    start and never change. Counters are updated under the mutex.
*/
#include "admin_server.h"
#include "proto_check.h"
#include "admin_api.h"
#include "admin_call.h"
#include "proto_crypto.h"
#include "proto_log.h"
#include "proto_tls.h"

#include <arpa/inet.h>
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_BODY_MAX (1024 * 1024)          //  admin request bodies
#define S_CONNECTIONS 256                 //  open connections at most
#define S_CONNECTION_TIMEOUT_S 60         //  idle connections are closed after this
#define S_QUEUE_MAX 512                   //  requests waiting for a worker at most
#define S_WORKERS_MAX 64                  //  admin.workers at most
#define S_FILES_MAX 64                    //  console files
#define S_FILE_SIZE_MAX (4 * 1024 * 1024) //  one console file
#define S_DRAIN_CHECK_MS 20               //  how often a drain looks for the last answer

//  The console's pages and scripts come only from here; styles from here
//  (uPlot sets sizes through the CSSOM, which CSP allows); answers to /admin
//  are data, never rendered as pages.
#define S_CSP                                                                                      \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "                   \
    "frame-ancestors 'none'"

//  A console file, read at start.
typedef struct {
    char path[128];           //  URL path ("/app.js")
    char *data;               //  contents
    size_t size;              //  bytes
    const char *content_type; //  from the extension
} s_file_t;

typedef struct s_request s_request_t;

//  One request on one connection.
struct s_request {
    admin_server_t *server;            //  owner
    struct MHD_Connection *connection; //  its connection (suspended while queued)
    char *query;                       //  raw query string, or NULL
    char *body;                        //  body so far
    size_t body_size;                  //  bytes in body
    bool started;                      //  the first handler call has been made
    bool too_large;                    //  went over S_BODY_MAX
    bool queued;                       //  handed to the workers
    bool answered;                     //  a worker filled answer (under the mutex)
    admin_api_request_t api;           //  what the worker answers (strings below)
    char method[16];                   //  copies the worker reads
    char *path, *authorization, *cookie, *csrf;
    char ip[INET6_ADDRSTRLEN]; //  peer address
    char id[72];               //  x-request-id of the answer
    admin_api_answer_t answer; //  the worker's answer
    s_request_t *next;         //  in the queue
};

typedef struct {
    admin_server_t *server; //  owner
    admin_api_t *api;       //  this worker's API: its own connection and sockets
    pthread_t thread;       //  the thread
    bool started;           //  the thread runs
} s_worker_t;

struct _admin_server_t {
    proto_service_t *service;          //  the program (borrowed)
    proto_config_t *config;            //  its configuration (borrowed)
    struct MHD_Daemon *mhd;            //  the listener
    proto_tls_t *tls;                  //  its certificate (HTTPS), NULL = plain HTTP
    int listen_fd;                     //  its socket until quiesced, else -1
    int port;                          //  bound port
    s_file_t files[S_FILES_MAX];       //  the console
    int file_count;                    //  files loaded
    s_worker_t workers[S_WORKERS_MAX]; //  the pool
    int worker_count;                  //  workers started
    pthread_mutex_t mutex;             //  guards everything below
    pthread_cond_t wake;               //  a request was queued, or stop
    s_request_t *head, *tail;          //  the queue
    int queued;                        //  requests in the queue
    int in_flight;                     //  requests queued or being answered
    uint64_t served;                   //  answers given by workers
    bool stopping;                     //  workers leave
    bool draining;                     //  SIGTERM came: answers close their connection
    int drain_timer;                   //  checks for the last answer, 0 when none
};

// ---------------------------------------------------------------------------
//  Answers from the listener thread

static void s_headers(struct MHD_Response *response, bool draining)
{
    MHD_add_response_header(response, "Content-Security-Policy", S_CSP);
    MHD_add_response_header(response, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(response, "X-Frame-Options", "DENY");
    MHD_add_response_header(response, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(response, "Cross-Origin-Opener-Policy", "same-origin");
    MHD_add_response_header(response, "Cross-Origin-Resource-Policy", "same-origin");
    if (draining)
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
}

//  Queues an answer whose body MHD frees (or, when `copy` is false, a
//  static buffer it leaves alone).
static enum MHD_Result s_answer(s_request_t *request, unsigned status, char *body, size_t size,
                                const char *content_type, const char *set_cookie, bool owned)
{
    struct MHD_Response *response = MHD_create_response_from_buffer(
        size, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(response, "x-request-id", request->id);
    MHD_add_response_header(response, MHD_HTTP_HEADER_CACHE_CONTROL,
                            owned ? "no-store" : "no-cache");
    if (set_cookie && request->server->tls) {
        //  Over HTTPS the session cookie is never sent back in clear.
        char secure[1024];
        snprintf(secure, sizeof secure, "%s; Secure", set_cookie);
        MHD_add_response_header(response, MHD_HTTP_HEADER_SET_COOKIE, secure);
    } else if (set_cookie)
        MHD_add_response_header(response, MHD_HTTP_HEADER_SET_COOKIE, set_cookie);
    s_headers(response, request->server->draining);
    enum MHD_Result rc = MHD_queue_response(request->connection, status, response);
    MHD_destroy_response(response);
    return rc;
}

static enum MHD_Result s_error(s_request_t *request, unsigned status, const char *type,
                               const char *message)
{
    json_t *body = json_pack("{s:{s:s,s:s}}", "error", "message", message, "type", type);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    return s_answer(request, status, text, strlen(text), "application/json", NULL, true);
}

//  A request id: the client's when it is short and plain, else a new one.
static void s_request_id(const char *given, char *out, size_t size)
{
    size_t length = given ? strlen(given) : 0;
    if (length > 0 && length <= 64 &&
        strspn(given, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:") ==
            length) {
        snprintf(out, size, "%s", given);
        return;
    }
    char hex[33];
    proto_crypto_random_hex(hex, 16);
    snprintf(out, size, "adm-%s", hex);
}

static const s_file_t *s_file_find(admin_server_t *self, const char *path)
{
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    for (int i = 0; i < self->file_count; i++)
        if (strcmp(self->files[i].path, path) == 0)
            return &self->files[i];
    return NULL;
}

// ---------------------------------------------------------------------------
//  The queue

static char *s_dup(const char *text)
{
    return text ? strdup(text) : NULL;
}

//  Hands a complete /admin request to the workers and suspends its
//  connection. Returns false when the queue is full.
static bool s_enqueue(s_request_t *request, const char *url, const char *method)
{
    admin_server_t *self = request->server;
    struct MHD_Connection *connection = request->connection;
    snprintf(request->method, sizeof request->method, "%s", method);
    request->path = s_dup(url);
    request->authorization = s_dup(
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION));
    request->cookie =
        s_dup(MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_COOKIE));
    request->csrf = s_dup(MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "X-CSRF-Token"));
    request->api = (admin_api_request_t){
        .method = request->method,
        .path = request->path,
        .query = request->query,
        .authorization = request->authorization,
        .cookie = request->cookie,
        .csrf = request->csrf,
        .body = request->body,
        .body_size = request->body_size,
        .client_ip = request->ip[0] ? request->ip : NULL,
        .request_id = request->id,
    };
    pthread_mutex_lock(&self->mutex);
    bool room = self->queued < S_QUEUE_MAX && !self->stopping;
    if (room) {
        //  Suspended before a worker can see it, so its resume always
        //  follows this suspend.
        MHD_suspend_connection(connection);
        request->queued = true;
        request->next = NULL;
        if (self->tail)
            self->tail->next = request;
        else
            self->head = request;
        self->tail = request;
        self->queued++;
        self->in_flight++;
        pthread_cond_signal(&self->wake);
    }
    pthread_mutex_unlock(&self->mutex);
    return room;
}

static void *s_worker_run(void *arg)
{
    s_worker_t *worker = arg;
    admin_server_t *self = worker->server;
    //  The workers' questions to the routers (EXPLAIN, BREAKERS, STICKY, ...)
    //  are admin's messages too; the thread ends before the service goes.
    proto_service_enter(self->service);
    for (;;) {
        pthread_mutex_lock(&self->mutex);
        while (!self->head && !self->stopping)
            pthread_cond_wait(&self->wake, &self->mutex);
        if (!self->head) {
            pthread_mutex_unlock(&self->mutex);
            break;
        }
        s_request_t *request = self->head;
        self->head = request->next;
        if (!self->head)
            self->tail = NULL;
        self->queued--;
        pthread_mutex_unlock(&self->mutex);

        admin_api_answer_t answer;
        admin_api_handle(worker->api, &request->api, &answer);

        pthread_mutex_lock(&self->mutex);
        request->answer = answer;
        request->answered = true;
        self->served++;
        self->in_flight--;
        pthread_mutex_unlock(&self->mutex);
        MHD_resume_connection(request->connection);
    }
    return NULL;
}

// ---------------------------------------------------------------------------
//  libmicrohttpd's callbacks (listener thread)

static void *s_uri(void *arg, const char *uri, struct MHD_Connection *connection)
{
    s_request_t *request = calloc(1, sizeof *request);
    assert(request);
    request->server = arg;
    request->connection = connection;
    const char *query = strchr(uri, '?');
    if (query && query[1])
        request->query = strdup(query + 1);
    return request;
}

static void s_peer(struct MHD_Connection *connection, char *ip, size_t size)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!info || !info->client_addr)
        return;
    const struct sockaddr *address = info->client_addr;
    if (address->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)address)->sin_addr, ip, (socklen_t)size);
    else if (address->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)address)->sin6_addr, ip,
                  (socklen_t)size);
}

//  The first call of a request: its id, peer, and an early 413.
static enum MHD_Result s_begin(s_request_t *request)
{
    struct MHD_Connection *connection = request->connection;
    request->started = true;
    s_request_id(MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "x-request-id"),
                 request->id, sizeof request->id);
    s_peer(connection, request->ip, sizeof request->ip);
    const char *length =
        MHD_lookup_connection_value(connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length && strtoull(length, NULL, 10) > S_BODY_MAX)
        return s_error(request, 413, "request_too_large",
                       "admin request bodies are limited to 1 MiB");
    return MHD_YES;
}

static enum MHD_Result s_body(s_request_t *request, const char *data, size_t *size)
{
    size_t more = *size;
    *size = 0;
    if (request->too_large || request->body_size + more > S_BODY_MAX) {
        request->too_large = true;
        free(request->body);
        request->body = NULL;
        return MHD_YES;
    }
    char *grown = realloc(request->body, request->body_size + more + 1);
    assert(grown);
    request->body = grown;
    memcpy(request->body + request->body_size, data, more);
    request->body_size += more;
    request->body[request->body_size] = '\0';
    return MHD_YES;
}

static enum MHD_Result s_static(s_request_t *request, const char *url, const char *method)
{
    admin_server_t *self = request->server;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return s_error(request, 405, "method_not_allowed", "the console is read-only");
    const s_file_t *file = s_file_find(self, url);
    if (!file)
        return s_error(request, 404, "not_found",
                       self->file_count ? "no such page"
                                        : "the console's files are not installed "
                                          "(admin.console_dir)");
    return s_answer(request, 200, file->data, file->size, file->content_type, NULL, false);
}

static enum MHD_Result s_access(void *arg, struct MHD_Connection *connection, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **request_p)
{
    s_request_t *request = *request_p;
    if (!request)
        return MHD_NO; //  the URI callback always makes one
    if (!request->started)
        return s_begin(request);
    if (*upload_data_size)
        return s_body(request, upload_data, upload_data_size);
    if (request->answered) {
        admin_api_answer_t *answer = &request->answer;
        enum MHD_Result rc =
            s_answer(request, (unsigned)answer->status, answer->body, strlen(answer->body),
                     answer->content_type, answer->set_cookie, true);
        answer->body = NULL; //  MHD owns it now
        return rc;
    }
    if (request->queued)
        return MHD_YES; //  resumed spuriously: the answer is not there yet
    if (request->too_large)
        return s_error(request, 413, "request_too_large",
                       "admin request bodies are limited to 1 MiB");
    if (strcmp(url, "/healthz") == 0 && strcmp(method, "GET") == 0) {
        //  With the argon2id computations the workers run now: answered
        //  while one runs, it shows that this thread does not hash.
        char *ok = NULL;
        int size = asprintf(&ok, "{\"status\":\"ok\",\"hashing\":%d}", admin_hashing());
        assert(size > 0 && ok);
        return s_answer(request, 200, ok, (size_t)size, "application/json", NULL, true);
    }
    if (strncmp(url, "/admin/", 7) != 0 && strcmp(url, "/admin") != 0)
        return s_static(request, url, method);
    if (!s_enqueue(request, url, method))
        return s_error(request, 503, "overloaded", "the admin API is busy; try again");
    return MHD_YES;
}

static void s_completed(void *arg, struct MHD_Connection *connection, void **request_p,
                        enum MHD_RequestTerminationCode code)
{
    s_request_t *request = *request_p;
    if (!request)
        return;
    //  A queued request is never freed here: its connection is suspended,
    //  and MHD completes suspended connections only once they are resumed.
    assert(!request->queued || request->answered);
    free(request->query);
    free(request->body);
    free(request->path);
    free(request->authorization);
    free(request->cookie);
    free(request->csrf);
    admin_api_answer_free(&request->answer);
    free(request);
    *request_p = NULL;
}

static void s_mhd_log(void *arg, const char *format, va_list args)
{
    char text[512];
    vsnprintf(text, sizeof text, format, args);
    size_t length = strlen(text);
    while (length && (text[length - 1] == '\n' || text[length - 1] == '\r'))
        text[--length] = '\0';
    log_warn(NULL, "admin http: %s", text);
}

// ---------------------------------------------------------------------------
//  Start and stop

//  Binds "host:port" (host may be "[v6]"). Returns the fd, or -1 (logged).
static int s_listen(const char *address, bool *ipv6)
{
    char host[256];
    const char *colon = strrchr(address, ':');
    size_t length = colon ? (size_t)(colon - address) : 0;
    const char *start = address;
    if (length >= 2 && address[0] == '[' && colon[-1] == ']') {
        start++;
        length -= 2;
    }
    if (!colon || length == 0 || length >= sizeof host) {
        log_error(NULL, "admin.listen '%s' is not host:port", address);
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
        log_error(NULL, "admin.listen: cannot resolve '%s': %s", address, gai_strerror(rc));
        return -1;
    }
    int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int on = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
        bind(fd, found->ai_addr, found->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        log_error(NULL, "admin: cannot listen on %s: %s", address, strerror(errno));
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

static const char *s_content_type(const char *path)
{
    static const char *const types[][2] = {{".html", "text/html; charset=utf-8"},
                                           {".js", "text/javascript; charset=utf-8"},
                                           {".mjs", "text/javascript; charset=utf-8"},
                                           {".css", "text/css; charset=utf-8"},
                                           {".svg", "image/svg+xml"},
                                           {".png", "image/png"},
                                           {".ico", "image/x-icon"},
                                           {".json", "application/json"}};
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i][0]) == 0)
            return types[i][1];
    return NULL; //  not served
}

//  Reads the console's files under dir (and its folders, two deep).
static void s_load_files(admin_server_t *self, const char *dir, const char *prefix, int depth)
{
    DIR *folder = opendir(dir);
    if (!folder)
        return;
    struct dirent *entry;
    while ((entry = readdir(folder)) && self->file_count < S_FILES_MAX) {
        if (entry->d_name[0] == '.')
            continue;
        char path[PATH_MAX], url[sizeof self->files[0].path];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, entry->d_name) >= sizeof path ||
            (size_t)snprintf(url, sizeof url, "%s/%s", prefix, entry->d_name) >= sizeof url)
            continue;
        struct stat info;
        if (stat(path, &info) != 0)
            continue;
        if (S_ISDIR(info.st_mode)) {
            if (depth < 2)
                s_load_files(self, path, url, depth + 1);
            continue;
        }
        const char *type = s_content_type(entry->d_name);
        if (!S_ISREG(info.st_mode) || !type || info.st_size > S_FILE_SIZE_MAX)
            continue;
        FILE *file = fopen(path, "rb");
        if (!file)
            continue;
        s_file_t *slot = &self->files[self->file_count];
        slot->data = malloc((size_t)info.st_size + 1);
        assert(slot->data);
        slot->size = fread(slot->data, 1, (size_t)info.st_size, file);
        fclose(file);
        snprintf(slot->path, sizeof slot->path, "%s", url);
        slot->content_type = type;
        self->file_count++;
    }
    closedir(folder);
}

//  admin.console_dir, else `console` beside the executable.
static void s_console_dir(admin_server_t *self, char *out, size_t size)
{
    const char *configured = proto_config_str(self->config, "admin.console_dir");
    if (configured && *configured) {
        snprintf(out, size, "%s", configured);
        return;
    }
    char exe[PATH_MAX];
    ssize_t length = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (length <= 0) {
        snprintf(out, size, "console");
        return;
    }
    exe[length] = '\0';
    snprintf(out, size, "%s/console", dirname(exe));
}

static void s_drain_check(proto_loop_t *loop, int timer_id, void *arg)
{
    admin_server_t *self = arg;
    pthread_mutex_lock(&self->mutex);
    int in_flight = self->in_flight;
    pthread_mutex_unlock(&self->mutex);
    if (in_flight > 0)
        return;
    proto_loop_cancel_timer(loop, self->drain_timer);
    self->drain_timer = 0;
    log_info(NULL, "admin: drained");
    proto_service_drained(self->service);
}

static int s_start_workers(admin_server_t *self)
{
    int64_t wanted = proto_config_int(self->config, "admin.workers");
    for (int i = 0; i < wanted && i < S_WORKERS_MAX; i++) {
        char error[256];
        s_worker_t *worker = &self->workers[i];
        worker->server = self;
        worker->api = admin_api_new(self->config, error, sizeof error);
        if (!worker->api) {
            log_error(NULL, "admin: worker %d: %s", i, error);
            return -1;
        }
        if (pthread_create(&worker->thread, NULL, s_worker_run, worker) != 0) {
            log_error(NULL, "admin: cannot start worker %d", i);
            admin_api_destroy(&worker->api);
            return -1;
        }
        worker->started = true;
        self->worker_count++;
    }
    return 0;
}

admin_server_t *admin_server_new(proto_service_t *service)
{
    admin_server_t *self = calloc(1, sizeof *self);
    assert(self);
    self->service = service;
    self->config = proto_service_config(service);
    self->listen_fd = -1;
    pthread_mutex_init(&self->mutex, NULL);
    pthread_cond_init(&self->wake, NULL);
    char dir[PATH_MAX];
    s_console_dir(self, dir, sizeof dir);
    s_load_files(self, dir, "", 0);
    if (!s_file_find(self, "/index.html"))
        log_warn(NULL, "admin: no console in %s (admin.console_dir); the API is served alone", dir);
    char error[1024];
    if (proto_tls_from_config(self->config, "admin", &self->tls, error, sizeof error) != 0) {
        log_error(NULL, "admin: %s", error);
        admin_server_destroy(&self);
        return NULL;
    }
    if (s_start_workers(self) != 0) {
        admin_server_destroy(&self);
        return NULL;
    }
    const char *address = proto_config_str(self->config, "admin.listen");
    bool ipv6 = false;
    self->listen_fd = s_listen(address, &ipv6);
    if (self->listen_fd < 0) {
        admin_server_destroy(&self);
        return NULL;
    }
    self->port = s_bound_port(self->listen_fd);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | (ipv6 ? MHD_USE_IPv6 : 0) | (self->tls ? MHD_USE_TLS : 0);
    //  Registered before MHD's thread can accept: no handshake finds none.
    if (self->tls && proto_tls_serve(self->tls, self->listen_fd) != 0) {
        log_error(NULL, "admin: cannot serve TLS on %s", address);
        admin_server_destroy(&self);
        return NULL;
    }
    self->mhd = MHD_start_daemon(
        flags, (uint16_t)self->port, NULL, NULL, s_access, self, MHD_OPTION_EXTERNAL_LOGGER,
        s_mhd_log, self, MHD_OPTION_LISTEN_SOCKET, self->listen_fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)S_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)S_CONNECTION_TIMEOUT_S,
        MHD_OPTION_NOTIFY_COMPLETED, s_completed, self, MHD_OPTION_URI_LOG_CALLBACK, s_uri, self,
        MHD_OPTION_ARRAY, proto_tls_mhd_options(self->tls), MHD_OPTION_END);
    if (!self->mhd) {
        log_error(NULL, "admin: cannot start the HTTP server on %s", address);
        admin_server_destroy(&self);
        return NULL;
    }
    if (self->tls)
        proto_service_on_reload(service, proto_tls_reload_hook, self->tls);
    log_info(NULL, "admin API and console listening on %s://%s:%d (%d workers, %d console files)",
             self->tls ? "https" : "http", address, self->port, self->worker_count,
             self->file_count);
    return self;
}

void admin_server_drain(admin_server_t *self)
{
    self->draining = true;
    if (self->mhd && self->listen_fd >= 0) {
        int fd = MHD_quiesce_daemon(self->mhd);
        if (fd >= 0)
            close(fd);
        self->listen_fd = -1;
    }
    proto_loop_t *loop = proto_service_loop(self->service);
    self->drain_timer = proto_loop_add_timer(loop, S_DRAIN_CHECK_MS, true, s_drain_check, self);
}

void admin_server_destroy(admin_server_t **self_p)
{
    assert(self_p);
    admin_server_t *self = *self_p;
    if (!self)
        return;
    if (self->drain_timer)
        proto_loop_cancel_timer(proto_service_loop(self->service), self->drain_timer);
    //  Workers finish the request in hand (and resume it) and leave; what
    //  is still queued is answered 503 here, so no connection stays
    //  suspended when MHD stops.
    pthread_mutex_lock(&self->mutex);
    self->stopping = true;
    pthread_cond_broadcast(&self->wake);
    pthread_mutex_unlock(&self->mutex);
    for (int i = 0; i < S_WORKERS_MAX; i++)
        if (self->workers[i].started)
            pthread_join(self->workers[i].thread, NULL);
    for (s_request_t *request = self->head; request; request = request->next) {
        request->answer = (admin_api_answer_t){
            .status = 503,
            .body = strdup("{\"error\":{\"message\":\"tollgate-admin is stopping\","
                           "\"type\":\"unavailable\"}}"),
            .content_type = "application/json"};
        request->answered = true;
        MHD_resume_connection(request->connection);
    }
    self->head = self->tail = NULL;
    if (self->mhd)
        MHD_stop_daemon(self->mhd);
    else if (self->listen_fd >= 0)
        close(self->listen_fd);
    proto_tls_destroy(&self->tls);
    for (int i = 0; i < S_WORKERS_MAX; i++)
        admin_api_destroy(&self->workers[i].api);
    for (int i = 0; i < self->file_count; i++)
        free(self->files[i].data);
    pthread_mutex_destroy(&self->mutex);
    pthread_cond_destroy(&self->wake);
    free(self);
    *self_p = NULL;
}

char *admin_server_status(admin_server_t *self)
{
    pthread_mutex_lock(&self->mutex);
    json_t *status = json_pack("{s:i,s:i,s:i,s:i,s:I,s:i,s:b}", "port", self->port, "workers",
                               self->worker_count, "queued", self->queued, "in_flight",
                               self->in_flight, "served", (json_int_t)self->served, "console_files",
                               self->file_count, "draining", self->draining);
    pthread_mutex_unlock(&self->mutex);
    char *text = json_dumps(status, JSON_COMPACT);
    json_decref(status);
    return text;
}

int admin_server_port(admin_server_t *self)
{
    return self->port;
}

// ---------------------------------------------------------------------------
//  Self test

void admin_server_test(bool verbose)
{
    if (verbose)
        printf(" * admin_server: ");
    char id[72];
    s_request_id("abc-123", id, sizeof id);
    PROTO_CHECK(strcmp(id, "abc-123") == 0);
    s_request_id("bad id\n", id, sizeof id);
    PROTO_CHECK(strncmp(id, "adm-", 4) == 0 && strlen(id) == 36);
    s_request_id(NULL, id, sizeof id);
    PROTO_CHECK(strncmp(id, "adm-", 4) == 0);
    PROTO_CHECK(strcmp(s_content_type("/vendor/preact.mjs"), "text/javascript; charset=utf-8") ==
                0);
    PROTO_CHECK(strcmp(s_content_type("/index.html"), "text/html; charset=utf-8") == 0);
    PROTO_CHECK(!s_content_type("/secret.conf") && !s_content_type("/README"));
    //  The console's files from a folder, and / is index.html.
    char dir[] = "/tmp/tollgate-console-XXXXXX";
    PROTO_CHECK(mkdtemp(dir));
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/index.html", dir);
    FILE *file = fopen(path, "w");
    PROTO_CHECK(file);
    fputs("<!doctype html>", file);
    fclose(file);
    snprintf(path, sizeof path, "%s/notes.txt", dir);
    file = fopen(path, "w");
    PROTO_CHECK(file);
    fputs("not served", file);
    fclose(file);
    admin_server_t self = {.file_count = 0};
    s_load_files(&self, dir, "", 0);
    PROTO_CHECK(self.file_count == 1);
    const s_file_t *index = s_file_find(&self, "/");
    PROTO_CHECK(index && index->size == 15 && strncmp(index->data, "<!doctype", 9) == 0);
    PROTO_CHECK(!s_file_find(&self, "/notes.txt"));
    free(self.files[0].data);
    unlink(path);
    snprintf(path, sizeof path, "%s/index.html", dir);
    unlink(path);
    rmdir(dir);
    if (verbose)
        printf("OK\n");
}
