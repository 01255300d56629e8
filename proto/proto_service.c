#include "proto_service.h"
#include "proto_check.h"
#include "proto_crypto.h"
#include "proto_capture.h"
#include "proto_db.h"
#include "proto_expose.h"
#include "proto_log.h"
#include "proto_msg.h"
#include "proto_pid.h"
#include "proto_socket.h"
#include "proto_trace.h"

#include <assert.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

extern char **environ;

#define S_DRAIN_TIMEOUT_MS 1500
#define S_RELOAD_HOOKS_MAX 4
#define S_LEVEL_RETRY_MS 1000      //  first retry of the settings watch
#define S_LEVEL_RETRY_MAX_MS 30000 //  backoff cap

struct _proto_service_t {
    const proto_service_def_t *def; //  the program
    proto_config_t *config;         //  effective configuration
    proto_loop_t *loop;             //  the one event loop
    proto_metrics_t *metrics;       //  metrics registry
    proto_trace_t *trace;           //  span sender; NULL in a test service
    proto_msg_counters_t *counters; //  messages by type, counted by the threads entered
    zsock_t *control;               //  ROUTER answering PING
    void *state;                    //  the program's own state
    char instance[128];             //  instance id
    uint64_t started_ms;            //  monotonic start time
    bool draining;                  //  SIGTERM seen
    proto_expose_t *expose;         //  /metrics listener, NULL when off
    proto_log_level_t base_level;   //  log_level from the configuration
    PGconn *level_db;               //  LISTENs for settings 'log_level', or NULL
    int level_fd;                   //  its socket while watched, else -1
    int level_timer;                //  reconnect timer, 0 when none
    uint64_t level_retry_ms;        //  next reconnect delay (doubles while away)
    bool level_warned;              //  said once that the database is away
    proto_service_def_t test_def;   //  def of a test service
    proto_service_reload_fn *reload_fns[S_RELOAD_HOOKS_MAX]; //  SIGHUP hooks
    void *reload_args[S_RELOAD_HOOKS_MAX];                   //  their arguments
    int reload_count;                                        //  hooks registered
};

proto_loop_t *proto_service_loop(proto_service_t *self)
{
    return self->loop;
}

proto_config_t *proto_service_config(proto_service_t *self)
{
    return self->config;
}

proto_trace_t *proto_service_trace(proto_service_t *self)
{
    return self->trace;
}

proto_metrics_t *proto_service_metrics(proto_service_t *self)
{
    return self->metrics;
}

void proto_service_enter(proto_service_t *self)
{
    proto_msg_counters_use(self->counters);
}

void proto_service_leave(proto_service_t *self)
{
    proto_msg_counters_t *before = proto_msg_counters_use(NULL);
    if (before != self->counters)
        proto_msg_counters_use(before); //  the thread counts for another service
}

void proto_service_msg_counts(proto_service_t *self, int type, proto_msg_counts_t *counts)
{
    proto_msg_counters_get(self->counters, type, counts);
}

const char *proto_service_instance(proto_service_t *self)
{
    return self->instance;
}

const char *proto_service_name(proto_service_t *self)
{
    return self->def->name;
}

int proto_service_on_collect(proto_service_t *self, proto_expose_collect_fn *fn, void *arg)
{
    return self->expose ? proto_expose_on_collect(self->expose, fn, arg) : 0;
}

int proto_service_on_reload(proto_service_t *self, proto_service_reload_fn *fn, void *arg)
{
    if (self->reload_count >= S_RELOAD_HOOKS_MAX)
        return -1;
    self->reload_fns[self->reload_count] = fn;
    self->reload_args[self->reload_count++] = arg;
    return 0;
}

bool proto_service_draining(proto_service_t *self)
{
    return self->draining;
}

void proto_service_drained(proto_service_t *self)
{
    proto_loop_stop(self->loop);
}

static void s_usage(FILE *out, const char *name)
{
    fprintf(out,
            "usage: tollgate-%s [--config FILE] [--set KEY=VALUE ...] [--print-config]\n"
            "  --config FILE     read `key = value` lines (also TOLLGATE_CONFIG)\n"
            "  --set KEY=VALUE   override one key (repeatable)\n"
            "  --print-config    print the effective configuration, secrets masked, and exit\n"
            "Environment: TOLLGATE_<KEY> with dots as underscores, e.g. TOLLGATE_LOG_LEVEL.\n",
            name);
}

//  Loads configuration from every source. Returns 0, 1 to exit 0 (help,
//  print-config), or -1 with a message in error.
static int s_configure(proto_config_t *config, int argc, char **argv, const char *name, bool *print,
                       char *error, size_t error_size)
{
    const char *path = getenv("TOLLGATE_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[++i];
        else if (strcmp(argv[i], "--print-config") == 0)
            *print = true;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            s_usage(stdout, name);
            return 1;
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc)
            i++;
        else {
            snprintf(error, error_size, "unknown argument '%s' (try --help)", argv[i]);
            return -1;
        }
    }
    if (path && *path && proto_config_load_file(config, path, error, error_size) != 0)
        return -1;
    if (proto_config_load_env(config, environ, error, error_size) != 0)
        return -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--set") != 0 || i + 1 >= argc)
            continue;
        char *pair = strdup(argv[++i]);
        char *equals = strchr(pair, '=');
        int rc = -1;
        if (!equals)
            snprintf(error, error_size, "--set takes KEY=VALUE, not '%s'", pair);
        else {
            *equals = '\0';
            rc = proto_config_set(config, pair, equals + 1, "command line", error, error_size);
        }
        free(pair);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static void s_control_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    proto_service_t *self = arg;
    proto_msg_t *request = NULL;
    int rc = proto_msg_recv(&request, socket);
    if (rc == -2)
        log_warn(NULL, "control: dropped a malformed message");
    if (rc != 0)
        return;
    if (proto_msg_type(request) == PROTO_MSG_PING) {
        proto_msg_t *pong = proto_msg_reply(request, PROTO_MSG_PONG);
        proto_msg_set_instance(pong, self->instance);
        char *extra = self->def->status && self->state ? self->def->status(self->state) : NULL;
        char meta[2048];
        snprintf(meta, sizeof meta,
                 "{\"program\":\"%s\",\"pid\":%d,\"uptime_ms\":%llu,\"draining\":%s%s%s}",
                 self->def->name, (int)getpid(),
                 (unsigned long long)(proto_loop_now_ms() - self->started_ms),
                 self->draining ? "true" : "false", extra ? ",\"status\":" : "",
                 extra ? extra : "");
        free(extra);
        proto_msg_set_meta(pong, meta);
        proto_msg_send(&pong, socket);
    } else
        log_warn(proto_msg_request_id(request), "control: ignored %s",
                 proto_msg_type_name(proto_msg_type(request)));
    proto_msg_destroy(&request);
}

//  --------------------------------------------------------------------------
//  Metrics every process has

//  Resident set size in bytes, from /proc/self/statm; 0 when unreadable.
static double s_rss_bytes(void)
{
    FILE *file = fopen("/proc/self/statm", "r");
    if (!file)
        return 0;
    unsigned long size = 0, resident = 0;
    int got = fscanf(file, "%lu %lu", &size, &resident);
    fclose(file);
    return got == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) : 0;
}

static void s_collect_process(proto_metrics_t *metrics, void *arg)
{
    proto_service_t *self = arg;
    proto_metric_set(proto_metrics_gauge(metrics, "tollgate_process_resident_memory_bytes",
                                         "Resident set size.", NULL),
                     s_rss_bytes());
    proto_metric_set(proto_metrics_gauge(metrics, "tollgate_process_uptime_seconds",
                                         "Seconds since the process started.", NULL),
                     (double)(proto_loop_now_ms() - self->started_ms) / 1000.0);
    char labels[400];
    char instance[sizeof self->instance * 2];
    proto_metrics_label(instance, sizeof instance, self->instance);
    snprintf(labels, sizeof labels, "program=\"%s\",instance_id=\"%s\"", self->def->name, instance);
    proto_metric_set(
        proto_metrics_gauge(metrics, "tollgate_info",
                            "Always 1: program and instance_id (instance is the scrape target's).",
                            labels),
        1);
    for (int level = PROTO_LOG_DEBUG; level <= PROTO_LOG_ERROR; level++) {
        snprintf(labels, sizeof labels, "level=\"%s\"", proto_log_level_name(level));
        proto_metric_set(proto_metrics_gauge(metrics, "tollgate_log_level",
                                             "1 for the log level in force.", labels),
                         proto_log_level() == (proto_log_level_t)level);
    }
    proto_metric_set(proto_metrics_gauge(metrics, "tollgate_draining", "1 after SIGTERM.", NULL),
                     self->draining);
    //  Message rates per message type: each type travels on one kind of
    //  socket (ADMIT on ingress' billing DEALERs, ENTRY on billing's ledger
    //  DEALER, ...), so the type names the socket.
    for (int type = 0; type < 64; type++) {
        proto_msg_counts_t counts;
        proto_msg_counters_get(self->counters, type, &counts);
        if (type == 0) {
            proto_metric_set(proto_metrics_counter(metrics, "tollgate_messages_malformed_total",
                                                   "Frames dropped as malformed.", NULL),
                             (double)counts.malformed);
            continue;
        }
        if (!counts.sent && !counts.received && !counts.send_failed)
            continue;
        const char *name = proto_msg_type_name(type);
        const struct {
            const char *direction;
            uint64_t value;
        } series[] = {
            {"in", counts.received}, {"out", counts.sent}, {"dropped", counts.send_failed}};
        for (size_t i = 0; i < 3; i++) {
            snprintf(labels, sizeof labels, "type=\"%s\",direction=\"%s\"", name,
                     series[i].direction);
            proto_metric_set(proto_metrics_counter(metrics, "tollgate_messages_total",
                                                   "ZeroMQ messages by type: received (in), "
                                                   "sent (out), refused by a full or "
                                                   "peerless socket (dropped).",
                                                   labels),
                             (double)series[i].value);
        }
    }
    proto_metric_set(proto_metrics_counter(metrics, "tollgate_spans_sent_total",
                                           "Trace spans handed to the ledger.", NULL),
                     (double)proto_trace_sent(self->trace));
    proto_metric_set(proto_metrics_counter(metrics, "tollgate_spans_dropped_total",
                                           "Trace spans dropped (queue full, no ledger).", NULL),
                     (double)proto_trace_dropped(self->trace));
}

//  --------------------------------------------------------------------------
//  Log level at run time: settings 'log_level' = {"level": "debug",
//  "programs": {"ingress": "warn"}}; a program's own entry wins over
//  "level", and without either the configured log_level applies again.
//  The schema's trigger notifies tollgate_config on every settings change.

static void s_level_schedule(proto_service_t *self);

static void s_level_disconnect(proto_service_t *self)
{
    if (self->level_fd >= 0)
        proto_loop_remove_fd(self->loop, self->level_fd);
    self->level_fd = -1;
    if (self->level_db)
        PQfinish(self->level_db);
    self->level_db = NULL;
}

//  Reads the setting and applies it. Returns 0, or -1 when the query failed.
static int s_level_apply(proto_service_t *self)
{
    //  The request log's capture level rides on the same notification.
    PGresult *capture =
        PQexec(self->level_db, "SELECT value::text FROM settings WHERE key = 'request_log'");
    if (PQresultStatus(capture) != PGRES_TUPLES_OK) {
        PQclear(capture);
        return -1;
    }
    proto_capture_configure_json(PQntuples(capture) == 1 ? PQgetvalue(capture, 0, 0) : NULL);
    PQclear(capture);
    //  And the client key prefix (settings 'client_keys', {"prefix": "tg-"}).
    PGresult *keys =
        PQexec(self->level_db, "SELECT value ->> 'prefix' FROM settings WHERE key = 'client_keys'");
    if (PQresultStatus(keys) != PGRES_TUPLES_OK) {
        PQclear(keys);
        return -1;
    }
    proto_crypto_set_key_prefix(PQntuples(keys) == 1 && !PQgetisnull(keys, 0, 0)
                                    ? PQgetvalue(keys, 0, 0)
                                    : PROTO_CRYPTO_KEY_PREFIX_DEFAULT);
    PQclear(keys);
    PGresult *result =
        PQexec(self->level_db, "SELECT value::text FROM settings WHERE key = 'log_level'");
    if (PQresultStatus(result) != PGRES_TUPLES_OK) {
        PQclear(result);
        return -1;
    }
    proto_log_level_t level = self->base_level;
    if (PQntuples(result) == 1) {
        json_t *value = json_loads(PQgetvalue(result, 0, 0), 0, NULL);
        const char *name = json_string_value(json_object_get(value, "level"));
        const char *own =
            json_string_value(json_object_get(json_object_get(value, "programs"), self->def->name));
        proto_log_level_t parsed;
        if (own && proto_log_level_parse(own, &parsed) == 0)
            level = parsed;
        else if (name && proto_log_level_parse(name, &parsed) == 0)
            level = parsed;
        json_decref(value);
    }
    PQclear(result);
    proto_log_level_t before = proto_log_level();
    if (level != before) {
        //  Written whatever the new level, so that the change shows.
        proto_log_set_level(PROTO_LOG_DEBUG);
        proto_log_write(PROTO_LOG_INFO, NULL, "log level %s -> %s (settings)",
                        proto_log_level_name(before), proto_log_level_name(level));
        proto_log_set_level(level);
    }
    return 0;
}

static void s_level_readable(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    proto_service_t *self = arg;
    if (!PQconsumeInput(self->level_db)) {
        log_warn(NULL, "log level watch: lost the database; reconnecting");
        s_level_disconnect(self);
        s_level_schedule(self);
        return;
    }
    bool changed = false;
    PGnotify *notice;
    while ((notice = PQnotifies(self->level_db))) {
        if (strcmp(notice->extra, "settings") == 0)
            changed = true;
        PQfreemem(notice);
    }
    if (changed && s_level_apply(self) != 0) {
        s_level_disconnect(self);
        s_level_schedule(self);
    }
}

//  Connects once, LISTENs and applies the current setting. Returns 0 or -1.
static int s_level_connect(proto_service_t *self)
{
    char error[512] = "cannot listen";
    //  This connect runs on the loop: a second at most, so a database host
    //  that drops packets cannot stall the program for the TCP timeout.
    const char *keywords[] = {"dbname", "connect_timeout", NULL};
    const char *values[] = {proto_config_str(self->config, "database_url"), "1", NULL};
    self->level_db = PQconnectdbParams(keywords, values, 1);
    if (PQstatus(self->level_db) != CONNECTION_OK)
        proto_db_error(self->level_db, error, sizeof error);
    if (PQstatus(self->level_db) != CONNECTION_OK ||
        proto_db_exec(self->level_db, "LISTEN tollgate_config", error, sizeof error) != 0 ||
        s_level_apply(self) != 0) {
        if (!self->level_warned)
            log_warn(NULL, "log level watch: %s; retrying, backing off to %d s", error,
                     S_LEVEL_RETRY_MAX_MS / 1000);
        self->level_warned = true;
        s_level_disconnect(self);
        return -1;
    }
    self->level_fd = PQsocket(self->level_db);
    proto_loop_add_fd(self->loop, self->level_fd, EPOLLIN, s_level_readable, self);
    if (self->level_warned)
        log_info(NULL, "log level watch: connected");
    self->level_warned = false;
    self->level_retry_ms = 0;
    return 0;
}

static void s_level_retry(proto_loop_t *loop, int id, void *arg)
{
    proto_service_t *self = arg;
    self->level_timer = 0;
    if (s_level_connect(self) != 0)
        s_level_schedule(self);
}

static void s_level_schedule(proto_service_t *self)
{
    if (self->level_timer)
        return;
    self->level_retry_ms = self->level_retry_ms ? self->level_retry_ms * 2 : S_LEVEL_RETRY_MS;
    if (self->level_retry_ms > S_LEVEL_RETRY_MAX_MS)
        self->level_retry_ms = S_LEVEL_RETRY_MAX_MS;
    self->level_timer =
        proto_loop_add_timer(self->loop, self->level_retry_ms, false, s_level_retry, self);
}

static void s_drain_timeout(proto_loop_t *loop, int id, void *arg)
{
    log_warn(NULL, "drain took longer than %d ms; exiting with work in flight", S_DRAIN_TIMEOUT_MS);
    proto_loop_stop(loop);
}

static void s_signal(proto_loop_t *loop, int signal_number, void *arg)
{
    proto_service_t *self = arg;
    if (signal_number == SIGHUP) {
        if (self->reload_count == 0)
            log_info(NULL, "SIGHUP received: nothing to reload");
        else
            log_info(NULL, "SIGHUP received, reloading");
        for (int i = 0; i < self->reload_count; i++)
            self->reload_fns[i](self->reload_args[i]);
        return;
    }
    if (self->draining) {
        //  A second signal means "now".
        proto_loop_stop(loop);
        return;
    }
    self->draining = true;
    log_info(NULL, "%s received, draining", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
    proto_loop_add_timer(loop, S_DRAIN_TIMEOUT_MS, false, s_drain_timeout, self);
    if (self->def->drain && self->state)
        self->def->drain(self->state);
    else
        proto_loop_stop(loop);
}

static void s_instance_id(proto_service_t *self)
{
    const char *configured = proto_config_str(self->config, "instance_id");
    if (*configured) {
        snprintf(self->instance, sizeof self->instance, "%s", configured);
        return;
    }
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    snprintf(self->instance, sizeof self->instance, "%s-%s-%d", self->def->name, host,
             (int)getpid());
}

int proto_service_main(int argc, char **argv, const proto_service_def_t *def)
{
    char program[64];
    snprintf(program, sizeof program, "%s", def->name);
    proto_log_init(program, PROTO_LOG_INFO);
    //  Before libzmq's first thread: its fork checks cost a system call each
    //  otherwise (proto_pid.h).
    if (!proto_pid_cache_start())
        log_warn(NULL, "getpid is not exported: libzmq asks the kernel for the pid");

    //  PostgreSQL names every connection of this process after the program
    //  (pg_stat_activity.application_name), unless the operator chose.
    char application[80];
    snprintf(application, sizeof application, "tollgate-%s", def->name);
    setenv("PGAPPNAME", application, 0);
    proto_service_t self = {.def = def, .config = proto_config_new(), .level_fd = -1};
    char error[1024];
    bool print = false;
    int rc = s_configure(self.config, argc, argv, def->name, &print, error, sizeof error);
    if (rc != 0) {
        if (rc < 0)
            log_error(NULL, "configuration: %s", error);
        proto_config_destroy(&self.config);
        return rc < 0 ? 2 : 0;
    }
    if (print) {
        proto_config_print(self.config, stdout);
        proto_config_destroy(&self.config);
        return 0;
    }
    proto_log_level_t level = PROTO_LOG_INFO;
    proto_log_level_parse(proto_config_str(self.config, "log_level"), &level);
    proto_log_set_level(level);
    self.base_level = level;
    s_instance_id(&self);

    //  Signals are blocked before ZeroMQ starts its I/O threads so that
    //  they reach the loop's signalfd and never CZMQ's own handler.
    zsys_handler_set(NULL);
    if (proto_crypto_init() != 0) {
        log_error(NULL, "cannot initialise libsodium");
        return 1;
    }
    self.loop = proto_loop_new();
    self.metrics = proto_metrics_new();
    //  This thread runs the program's loop: what it sends and receives from
    //  here on (def->start included) is the program's.
    self.counters = proto_msg_counters_new();
    proto_service_enter(&self);
    self.started_ms = proto_loop_now_ms();
    int exit_code = 1;
    if (!self.loop || proto_loop_watch_signals(self.loop, s_signal, &self) != 0) {
        log_error(NULL, "cannot set up the event loop");
        goto done;
    }
    zsys_init();
    zsys_set_linger(100);
    if (proto_socket_init(self.config, def->name, error, sizeof error) != 0) {
        log_error(NULL, "configuration: %s", error);
        exit_code = 2;
        goto done;
    }
    if (!proto_socket_secure())
        log_warn(NULL, "security=none: internal sockets are plain; anyone who reaches them can "
                       "send any message (dispatch requests, settlements, breaker resets)");

    char key[96];
    snprintf(key, sizeof key, "%s.control_bind", def->name);
    const char *control_endpoint = proto_config_str(self.config, key);
    self.control = proto_socket_new(ZMQ_ROUTER);
    //  The control socket carries PING and PONG only.
    int64_t control_max = PROTO_MSG_ENVELOPE_MAX;
    if (self.control)
        zmq_setsockopt(zsock_resolve(self.control), ZMQ_MAXMSGSIZE, &control_max,
                       sizeof control_max);
    if (!self.control || proto_socket_bind(self.control, control_endpoint) < 0) {
        log_error(NULL, "cannot bind control socket %s: %s", control_endpoint,
                  zmq_strerror(zmq_errno()));
        goto done;
    }
    proto_loop_add_socket_edge(self.loop, self.control, s_control_ready, &self);

    snprintf(key, sizeof key, "%s.metrics_listen", def->name);
    const char *metrics_address = proto_config_str(self.config, key);
    if (*metrics_address) {
        self.expose =
            proto_expose_new(self.loop, self.metrics, metrics_address, error, sizeof error);
        //  Metrics are not money: a taken port costs them, not the service.
        if (!self.expose)
            log_error(NULL, "%s; running without /metrics", error);
        else {
            proto_expose_on_collect(self.expose, s_collect_process, &self);
            log_info(NULL, "metrics on http://%s/metrics", metrics_address);
        }
    }
    self.trace = proto_trace_new(self.config, self.loop, def->name, self.instance);
    if (!self.trace)
        log_warn(NULL, "trace: cannot open the span socket; spans are dropped");
    if (proto_config_bool(self.config, "log_level_watch") && s_level_connect(&self) != 0)
        s_level_schedule(&self);

    self.state = def->start(&self);
    if (!self.state)
        goto done; //  start logged why
    log_info(NULL, "started %s as %s", def->name, self.instance);
    proto_loop_run(self.loop);
    exit_code = 0;
    log_info(NULL, "stopped");

done:
    if (self.state && def->stop)
        def->stop(&self.state);
    if (self.level_timer)
        proto_loop_cancel_timer(self.loop, self.level_timer);
    s_level_disconnect(&self);
    proto_expose_destroy(&self.expose);
    proto_trace_destroy(&self.trace);
    zsock_destroy(&self.control);
    proto_socket_shutdown();
    proto_metrics_destroy(&self.metrics);
    proto_msg_counters_destroy(&self.counters); //  this thread counts nothing after
    proto_loop_destroy(&self.loop);
    proto_config_destroy(&self.config);
    return exit_code;
}

proto_service_t *proto_service_new_test(const char *name, proto_config_t **config_p, char *error,
                                        size_t error_size)
{
    PROTO_CHECK(config_p && *config_p);
    proto_service_t *self = calloc(1, sizeof *self);
    PROTO_CHECK(self);
    self->test_def.name = name;
    self->def = &self->test_def;
    self->config = *config_p;
    *config_p = NULL;
    self->level_fd = -1;
    snprintf(self->instance, sizeof self->instance, "%s-test", name);
    if (proto_crypto_init() != 0) {
        snprintf(error, error_size, "cannot initialise libsodium");
        proto_service_destroy(&self);
        return NULL;
    }
    self->loop = proto_loop_new();
    self->metrics = proto_metrics_new();
    self->counters = proto_msg_counters_new();
    self->started_ms = proto_loop_now_ms();
    zsys_init();
    zsys_set_linger(0);
    if (proto_socket_init(self->config, name, error, error_size) != 0) {
        proto_service_destroy(&self);
        return NULL;
    }
    return self;
}

void proto_service_destroy(proto_service_t **self_p)
{
    assert(self_p);
    proto_service_t *self = *self_p;
    if (!self)
        return;
    proto_socket_shutdown();
    proto_metrics_destroy(&self->metrics);
    proto_msg_counters_destroy(&self->counters);
    proto_loop_destroy(&self->loop);
    proto_config_destroy(&self->config);
    free(self);
    *self_p = NULL;
}

//  One thread of the counters test: enters its service, sends `count`
//  PINGs to itself over inproc:// (and `junk` frames no codec takes),
//  reads them back, leaves.
typedef struct {
    proto_service_t *service; //  entered by the thread; NULL: none
    const char *endpoint;     //  inproc:// endpoint of its own
    int count;                //  PINGs sent and received
    int junk;                 //  malformed frames sent
    pthread_barrier_t *ready; //  all threads have entered; NULL when alone
} s_counting_t;

static void *s_counting_run(void *arg)
{
    s_counting_t *run = arg;
    if (run->service)
        proto_service_enter(run->service);
    //  Every thread sends only once all have entered, so that counters
    //  shared by the process instead of each thread's would show.
    if (run->ready)
        pthread_barrier_wait(run->ready);
    zsock_t *server = proto_socket_new(ZMQ_ROUTER);
    zsock_t *client = proto_socket_new(ZMQ_DEALER);
    PROTO_CHECK(server && client && proto_socket_bind(server, run->endpoint) == 0);
    PROTO_CHECK(zsock_connect(client, "%s", run->endpoint) == 0);
    for (int i = 0; i < run->count; i++) {
        proto_msg_t *msg = proto_msg_new(PROTO_MSG_PING);
        PROTO_CHECK(proto_msg_send(&msg, client) == 0);
    }
    for (int i = 0; i < run->junk; i++)
        PROTO_CHECK(zstr_send(client, "junk") == 0);
    int received = 0, malformed = 0;
    while (received + malformed < run->count + run->junk) {
        zmq_pollitem_t item = {zsock_resolve(server), 0, ZMQ_POLLIN, 0};
        PROTO_CHECK(zmq_poll(&item, 1, 5000) == 1);
        proto_msg_t *msg = NULL;
        int rc = proto_msg_recv(&msg, server);
        received += rc == 0;
        malformed += rc == -2;
        proto_msg_destroy(&msg);
    }
    PROTO_CHECK(received == run->count && malformed == run->junk);
    zsock_destroy(&client);
    zsock_destroy(&server);
    if (run->service)
        proto_service_leave(run->service);
    return NULL;
}

//  The value of one series in a rendered registry, or -1 when absent.
static double s_series(const char *text, const char *series)
{
    char wanted[256];
    snprintf(wanted, sizeof wanted, "\n%s ", series);
    const char *at = strstr(text, wanted);
    return at ? strtod(at + strlen(wanted), NULL) : -1;
}

//  Two services on two threads of one process count their own messages
//  only, a thread without a service counts nothing, and each service's
//  metrics show its messages by type.
static void s_test_counters(void)
{
    proto_service_t *services[2];
    for (int i = 0; i < 2; i++) {
        proto_config_t *config = proto_config_new();
        char error[512];
        PROTO_CHECK(proto_config_set(config, "security", "none", "test", error, sizeof error) == 0);
        services[i] = proto_service_new_test(i ? "two" : "one", &config, error, sizeof error);
        PROTO_CHECK(services[i]);
    }
    pthread_barrier_t ready;
    pthread_barrier_init(&ready, NULL, 3);
    s_counting_t runs[3] = {{services[0], "inproc://proto-service-count-1", 3, 0, &ready},
                            {services[1], "inproc://proto-service-count-2", 5, 1, &ready},
                            {NULL, "inproc://proto-service-count-3", 7, 2, &ready}};
    pthread_t threads[3];
    for (int i = 0; i < 3; i++)
        PROTO_CHECK(pthread_create(&threads[i], NULL, s_counting_run, &runs[i]) == 0);
    for (int i = 0; i < 3; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&ready);
    //  This thread entered neither: its PINGs are nobody's.
    runs[2].endpoint = "inproc://proto-service-count-0";
    runs[2].ready = NULL;
    s_counting_run(&runs[2]);

    for (int i = 0; i < 2; i++) {
        proto_msg_counts_t counts;
        proto_service_msg_counts(services[i], PROTO_MSG_PING, &counts);
        PROTO_CHECK(counts.sent == (uint64_t)runs[i].count);
        PROTO_CHECK(counts.received == (uint64_t)runs[i].count && counts.send_failed == 0);
        proto_service_msg_counts(services[i], 0, &counts);
        PROTO_CHECK(counts.malformed == (uint64_t)runs[i].junk);
        proto_service_msg_counts(services[i], PROTO_MSG_PONG, &counts);
        PROTO_CHECK(!counts.sent && !counts.received);

        //  What a scrape of the program's /metrics would show.
        s_collect_process(services[i]->metrics, services[i]);
        char *text = proto_metrics_render(services[i]->metrics);
        PROTO_CHECK(s_series(text, "tollgate_messages_total{type=\"PING\",direction=\"out\"}") ==
                    runs[i].count);
        PROTO_CHECK(s_series(text, "tollgate_messages_total{type=\"PING\",direction=\"in\"}") ==
                    runs[i].count);
        PROTO_CHECK(
            s_series(text, "tollgate_messages_total{type=\"PING\",direction=\"dropped\"}") == 0);
        PROTO_CHECK(s_series(text, "tollgate_messages_malformed_total") == runs[i].junk);
        PROTO_CHECK(!strstr(text, "type=\"PONG\""));
        free(text);
    }
    //  Leaving a service this thread does not count into changes nothing;
    //  destroying the one it counts into leaves it counting nothing.
    proto_service_enter(services[0]);
    proto_service_leave(services[1]);
    s_counting_t more = {NULL, "inproc://proto-service-count-4", 1, 0, NULL};
    s_counting_run(&more);
    proto_msg_counts_t counts;
    proto_service_msg_counts(services[0], PROTO_MSG_PING, &counts);
    PROTO_CHECK(counts.sent == (uint64_t)runs[0].count + 1);
    proto_service_destroy(&services[0]);
    //  Socket security is still process-wide, and went with the service.
    char error[256];
    PROTO_CHECK(proto_socket_init_with("none", "", "test", -1, error, sizeof error) == 0);
    more.endpoint = "inproc://proto-service-count-5";
    s_counting_run(&more);
    proto_service_msg_counts(services[1], PROTO_MSG_PING, &counts);
    PROTO_CHECK(counts.sent == (uint64_t)runs[1].count);
    proto_service_destroy(&services[1]);
}

void proto_service_test(bool verbose)
{
    if (verbose)
        printf(" * proto_service: ");
    //  Argument parsing; the running service is exercised by tests/ that
    //  start real programs.
    proto_config_t *config = proto_config_new();
    char error[512];
    bool print = false;
    char *good[] = {"x", "--set", "log_level=debug", "--print-config", NULL};
    PROTO_CHECK(s_configure(config, 4, good, "test", &print, error, sizeof error) == 0);
    PROTO_CHECK(print);
    PROTO_CHECK(strcmp(proto_config_str(config, "log_level"), "debug") == 0);
    char *bad[] = {"x", "--set", "log_level", NULL};
    PROTO_CHECK(s_configure(config, 3, bad, "test", &print, error, sizeof error) == -1);
    char *unknown[] = {"x", "--bogus", NULL};
    PROTO_CHECK(s_configure(config, 2, unknown, "test", &print, error, sizeof error) == -1);
    PROTO_CHECK(strstr(error, "--bogus"));
    char *missing[] = {"x", "--config", "/nonexistent/tollgate.conf", NULL};
    PROTO_CHECK(s_configure(config, 3, missing, "test", &print, error, sizeof error) == -1);
    PROTO_CHECK(strstr(error, "/nonexistent/tollgate.conf"));
    proto_config_destroy(&config);
    s_test_counters();
    if (verbose)
        printf("OK\n");
}
