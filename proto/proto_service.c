#include "proto_service.h"
#include "proto_log.h"
#include "proto_msg.h"

#include <assert.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

#define S_DRAIN_TIMEOUT_MS 1500

struct _proto_service_t {
    const proto_service_def_t *def; //  the program
    proto_config_t *config;         //  effective configuration
    proto_loop_t *loop;             //  the one event loop
    proto_metrics_t *metrics;       //  metrics registry
    zsock_t *control;               //  ROUTER answering PING
    void *state;                    //  the program's own state
    char instance[128];             //  instance id
    uint64_t started_ms;            //  monotonic start time
    bool draining;                  //  SIGTERM seen
};

proto_loop_t *proto_service_loop(proto_service_t *self)
{
    return self->loop;
}

proto_config_t *proto_service_config(proto_service_t *self)
{
    return self->config;
}

proto_metrics_t *proto_service_metrics(proto_service_t *self)
{
    return self->metrics;
}

const char *proto_service_instance(proto_service_t *self)
{
    return self->instance;
}

const char *proto_service_name(proto_service_t *self)
{
    return self->def->name;
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
static int s_configure(proto_config_t *config, int argc, char **argv, const char *name,
                       bool *print, char *error, size_t error_size)
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

static void s_drain_timeout(proto_loop_t *loop, int id, void *arg)
{
    log_warn(NULL, "drain took longer than %d ms; exiting with work in flight",
             S_DRAIN_TIMEOUT_MS);
    proto_loop_stop(loop);
}

static void s_signal(proto_loop_t *loop, int signal_number, void *arg)
{
    proto_service_t *self = arg;
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

    proto_service_t self = {.def = def, .config = proto_config_new()};
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
    s_instance_id(&self);

    //  Signals are blocked before ZeroMQ starts its I/O threads so that
    //  they reach the loop's signalfd and never CZMQ's own handler.
    zsys_handler_set(NULL);
    self.loop = proto_loop_new();
    self.metrics = proto_metrics_new();
    self.started_ms = proto_loop_now_ms();
    int exit_code = 1;
    if (!self.loop || proto_loop_watch_signals(self.loop, s_signal, &self) != 0) {
        log_error(NULL, "cannot set up the event loop");
        goto done;
    }
    zsys_init();
    zsys_set_linger(100);

    char key[96];
    snprintf(key, sizeof key, "%s.control_bind", def->name);
    const char *control_endpoint = proto_config_str(self.config, key);
    self.control = zsock_new(ZMQ_ROUTER);
    if (!self.control || zsock_bind(self.control, "%s", control_endpoint) < 0) {
        log_error(NULL, "cannot bind control socket %s: %s", control_endpoint,
                  zmq_strerror(zmq_errno()));
        goto done;
    }
    proto_loop_add_socket(self.loop, self.control, s_control_ready, &self);

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
    zsock_destroy(&self.control);
    proto_metrics_destroy(&self.metrics);
    proto_loop_destroy(&self.loop);
    proto_config_destroy(&self.config);
    return exit_code;
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
    assert(s_configure(config, 4, good, "test", &print, error, sizeof error) == 0);
    assert(print);
    assert(strcmp(proto_config_str(config, "log_level"), "debug") == 0);
    char *bad[] = {"x", "--set", "log_level", NULL};
    assert(s_configure(config, 3, bad, "test", &print, error, sizeof error) == -1);
    char *unknown[] = {"x", "--bogus", NULL};
    assert(s_configure(config, 2, unknown, "test", &print, error, sizeof error) == -1);
    assert(strstr(error, "--bogus"));
    char *missing[] = {"x", "--config", "/nonexistent/tollgate.conf", NULL};
    assert(s_configure(config, 3, missing, "test", &print, error, sizeof error) == -1);
    assert(strstr(error, "/nonexistent/tollgate.conf"));
    proto_config_destroy(&config);
    if (verbose)
        printf("OK\n");
}
