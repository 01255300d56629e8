#include "router_store.h"
#include "proto_log.h"

#include <assert.h>
#include <czmq.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#define S_RECONNECT_MS 1000
#define S_QUEUE_MAX 10000

//  One queued statement with up to two text parameters.
typedef struct {
    char *sql;       //  statement
    char *params[3]; //  parameters, NULL when unused
    int count;       //  parameters used
    uint64_t key_id; //  a key disable: report it when done; 0 otherwise
    bool failed;     //  the server refused it
} s_command_t;

typedef enum {
    S_DOWN,       //  waiting to reconnect
    S_CONNECTING, //  PQconnectPoll in progress
    S_READY,      //  idle or running one command
} s_state_t;

struct _router_store_t {
    proto_loop_t *loop;                 //  the router's loop
    char *url;                          //  database_url
    router_store_notify_fn *fn;         //  notification handler
    router_store_disabled_fn *disabled; //  key disable committed, may be NULL
    void *arg;                          //  argument of both
    PGconn *db;                         //  connection, NULL while down
    int fd;                             //  socket watched, -1 when none
    s_state_t state;                    //  see above
    bool busy;                          //  a command (or LISTEN) is out
    s_command_t *current;               //  the command out, owned; NULL for LISTEN
    bool listening;                     //  LISTEN has been sent on this connection
    zlistx_t *queue;                    //  s_command_t waiting (owned)
    int reconnect_timer;                //  pending reconnect, 0 when none
};

static void s_command_free(s_command_t **command_p)
{
    s_command_t *command = *command_p;
    if (!command)
        return;
    free(command->sql);
    for (int i = 0; i < 3; i++)
        free(command->params[i]);
    free(command);
    *command_p = NULL;
}

static void s_start_connect(router_store_t *self);
static void s_pump(router_store_t *self);

static void s_watch(router_store_t *self, uint32_t events);

static void s_close(router_store_t *self)
{
    //  A command cut off may or may not have run: both kinds are
    //  idempotent, so it goes again first when the connection is back.
    if (self->current)
        zlistx_add_start(self->queue, self->current);
    self->current = NULL;
    if (self->fd >= 0)
        proto_loop_remove_fd(self->loop, self->fd);
    self->fd = -1;
    if (self->db)
        PQfinish(self->db);
    self->db = NULL;
    self->state = S_DOWN;
    self->busy = false;
    self->listening = false;
}

static void s_reconnect_due(proto_loop_t *loop, int id, void *arg)
{
    router_store_t *self = arg;
    self->reconnect_timer = 0;
    s_start_connect(self);
}

static void s_lost(router_store_t *self, const char *what)
{
    if (self->db) {
        char error[256];
        snprintf(error, sizeof error, "%s", PQerrorMessage(self->db));
        error[strcspn(error, "\n")] = '\0';
        log_warn(NULL, "router store: %s: %s", what, error);
    }
    s_close(self);
    if (!self->reconnect_timer)
        self->reconnect_timer =
            proto_loop_add_timer(self->loop, S_RECONNECT_MS, false, s_reconnect_due, self);
}

static void s_drain_notices(router_store_t *self)
{
    PGnotify *notice;
    while ((notice = PQnotifies(self->db))) {
        if (self->fn)
            self->fn(notice->extra, self->arg);
        PQfreemem(notice);
    }
}

//  Reads whatever results are in; returns false when the connection broke.
static bool s_collect(router_store_t *self)
{
    if (!PQconsumeInput(self->db))
        return false;
    while (self->busy && !PQisBusy(self->db)) {
        PGresult *result = PQgetResult(self->db);
        if (!result) {
            self->busy = false; //  the command is complete
            s_command_t *done = self->current;
            self->current = NULL;
            if (done && done->key_id && !done->failed && self->disabled)
                self->disabled(done->key_id, self->arg);
            s_command_free(&done);
            break;
        }
        ExecStatusType status = PQresultStatus(result);
        if ((status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) && self->current)
            self->current->failed = true;
        if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
            log_warn(NULL, "router store: statement failed: %s",
                     PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY)
                         ? PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY)
                         : "?");
        PQclear(result);
    }
    s_drain_notices(self);
    return true;
}

static void s_on_event(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    router_store_t *self = arg;
    if (self->state == S_CONNECTING) {
        PostgresPollingStatusType poll = PQconnectPoll(self->db);
        if (poll == PGRES_POLLING_FAILED) {
            s_lost(self, "cannot connect");
            return;
        }
        //  The socket may change while connecting (another address).
        if (PQsocket(self->db) != self->fd) {
            proto_loop_remove_fd(self->loop, self->fd);
            self->fd = PQsocket(self->db);
            proto_loop_add_fd(self->loop, self->fd, EPOLLIN, s_on_event, self);
        }
        if (poll == PGRES_POLLING_OK) {
            PQsetnonblocking(self->db, 1);
            self->state = S_READY;
            s_watch(self, EPOLLIN);
            log_info(NULL, "router store: connected");
            s_pump(self);
        } else
            s_watch(self, poll == PGRES_POLLING_WRITING ? EPOLLOUT : EPOLLIN);
        return;
    }
    if (events & EPOLLOUT) {
        int flushed = PQflush(self->db);
        if (flushed < 0) {
            s_lost(self, "send failed");
            return;
        }
        if (flushed == 0)
            s_watch(self, EPOLLIN);
    }
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !s_collect(self)) {
        s_lost(self, "connection lost");
        return;
    }
    s_pump(self);
}

static void s_watch(router_store_t *self, uint32_t events)
{
    if (self->fd >= 0)
        proto_loop_modify_fd(self->loop, self->fd, events);
}

static void s_start_connect(router_store_t *self)
{
    self->db = PQconnectStart(self->url);
    if (!self->db || PQstatus(self->db) == CONNECTION_BAD) {
        s_lost(self, "cannot start connecting");
        return;
    }
    self->state = S_CONNECTING;
    self->fd = PQsocket(self->db);
    //  libpq wants to be polled first when the socket is writable.
    proto_loop_add_fd(self->loop, self->fd, EPOLLOUT, s_on_event, self);
}

//  Sends the next command when the connection is idle.
static void s_pump(router_store_t *self)
{
    if (self->state != S_READY || self->busy)
        return;
    int sent;
    if (!self->listening) {
        sent = PQsendQuery(self->db, "LISTEN tollgate_routing");
        self->listening = sent == 1;
    } else {
        s_command_t *command = zlistx_first(self->queue);
        if (!command)
            return;
        sent = PQsendQueryParams(self->db, command->sql, command->count, NULL,
                                 (const char *const *)command->params, NULL, NULL, 0);
        if (sent == 1)
            self->current = zlistx_detach(self->queue, NULL);
    }
    if (sent != 1) {
        s_lost(self, "cannot send");
        return;
    }
    self->busy = true;
    int flushed = PQflush(self->db);
    if (flushed < 0)
        s_lost(self, "send failed");
    else if (flushed == 1)
        s_watch(self, EPOLLIN | EPOLLOUT);
}

router_store_t *router_store_new(proto_loop_t *loop, const char *database_url,
                                 router_store_notify_fn *fn, router_store_disabled_fn *disabled,
                                 void *arg)
{
    router_store_t *self = calloc(1, sizeof *self);
    assert(self);
    self->loop = loop;
    self->url = strdup(database_url);
    self->fn = fn;
    self->disabled = disabled;
    self->arg = arg;
    self->fd = -1;
    self->queue = zlistx_new();
    s_start_connect(self);
    return self;
}

void router_store_destroy(router_store_t **self_p)
{
    assert(self_p);
    router_store_t *self = *self_p;
    if (!self)
        return;
    if (self->reconnect_timer)
        proto_loop_cancel_timer(self->loop, self->reconnect_timer);
    s_close(self); //  puts a command in flight back on the queue
    s_command_t *command;
    while ((command = zlistx_detach(self->queue, NULL)))
        s_command_free(&command);
    zlistx_destroy(&self->queue);
    free(self->url);
    free(self);
    *self_p = NULL;
}

static void s_queue(router_store_t *self, const char *sql, const char *first, const char *second,
                    const char *third, uint64_t key_id)
{
    if (zlistx_size(self->queue) >= S_QUEUE_MAX) {
        s_command_t *oldest = zlistx_detach(self->queue, NULL);
        s_command_free(&oldest);
        log_warn(NULL, "router store: queue full, dropped the oldest command");
    }
    s_command_t *command = calloc(1, sizeof *command);
    assert(command);
    command->sql = strdup(sql);
    command->key_id = key_id;
    if (first)
        command->params[command->count++] = strdup(first);
    if (second)
        command->params[command->count++] = strdup(second);
    if (third)
        command->params[command->count++] = strdup(third);
    zlistx_add_end(self->queue, command);
    s_pump(self);
}

void router_store_disable_key(router_store_t *self, uint64_t provider_key_id, const char *reason,
                              uint64_t seen_wall_ms)
{
    char id[24], seen[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)provider_key_id);
    snprintf(seen, sizeof seen, "%llu", (unsigned long long)seen_wall_ms);
    //  Only an active key changes, so many routers writing the same disable
    //  is harmless; and only one not touched since the failure was seen, so
    //  a late write never undoes an operator's re-enable.
    s_queue(self,
            "UPDATE provider_keys SET status = 'disabled', disabled_reason = $2, "
            "updated_at = now() WHERE id = $1::bigint AND status = 'active' "
            "AND updated_at <= to_timestamp($3::double precision / 1000)",
            id, reason, seen, provider_key_id);
}

void router_store_broadcast(router_store_t *self, const char *payload)
{
    if (strlen(payload) >= 8000)
        return; //  PostgreSQL's NOTIFY payload limit
    s_queue(self, "SELECT pg_notify('tollgate_routing', $1)", payload, NULL, NULL, 0);
}

bool router_store_ready(router_store_t *self)
{
    return self->state == S_READY;
}

size_t router_store_pending(router_store_t *self)
{
    return zlistx_size(self->queue);
}
