#include "ops_cluster.h"
#include "ops_demo.h"
#include "ops_migrate.h"
#include "ops_pg.h"
#include "ops_ping.h"
#include "ops_state.h"
#include "ops_supervisor.h"
#include "proto_db.h"
#include "proto_log.h"
#include "proto_loop.h"
#include "proto_tls.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_SUPERVISOR_START_MS 30000 //  wait for a new supervisor to take its lock
#define S_DOWN_WAIT_MS 15000        //  wait for the supervisor to stop its programs
#define S_PING_TIMEOUT_MS 5000      //  `status`: how long a program may take to answer
#define S_LOG_TAIL_LINES 20

struct _ops_cluster_t {
    ops_state_t *state;      //  the state folder
    char bindir[PATH_MAX];   //  where tollgate-<program> live
    char self_exe[PATH_MAX]; //  this executable, re-run as the supervisor
};

ops_cluster_t *ops_cluster_new(const char *dir, const char *bindir, char *error, size_t error_size)
{
    ops_cluster_t *self = calloc(1, sizeof *self);
    assert(self);
    self->state = ops_state_new(dir, error, error_size);
    if (!self->state) {
        free(self);
        return NULL;
    }
    ssize_t length = readlink("/proc/self/exe", self->self_exe, sizeof self->self_exe - 1);
    if (length <= 0) {
        snprintf(error, error_size, "cannot find the running executable: %s", strerror(errno));
        ops_cluster_destroy(&self);
        return NULL;
    }
    self->self_exe[length] = '\0';
    if (bindir)
        snprintf(self->bindir, sizeof self->bindir, "%s", bindir);
    else {
        char copy[PATH_MAX];
        snprintf(copy, sizeof copy, "%s", self->self_exe);
        snprintf(self->bindir, sizeof self->bindir, "%s", dirname(copy));
    }
    return self;
}

void ops_cluster_destroy(ops_cluster_t **self_p)
{
    assert(self_p);
    ops_cluster_t *self = *self_p;
    if (!self)
        return;
    ops_state_destroy(&self->state);
    free(self);
    *self_p = NULL;
}

//  Splits "host:port" (host may be "[::1]"). Returns 0 or -1.
static int s_split_address(const char *address, char *host, size_t host_size, char *port,
                           size_t port_size)
{
    const char *colon = strrchr(address, ':');
    if (!colon || colon == address)
        return -1;
    const char *start = address;
    size_t length = (size_t)(colon - address);
    if (*start == '[' && colon[-1] == ']') {
        start++;
        length -= 2;
    }
    if (length >= host_size)
        return -1;
    memcpy(host, start, length);
    host[length] = '\0';
    snprintf(port, port_size, "%s", colon + 1);
    return 0;
}

//  True when something accepts TCP connections at "host:port". A wildcard
//  listener is tried on the loopback address.
static bool s_tcp_accepts(const char *address)
{
    char host[256], port[16];
    if (s_split_address(address, host, sizeof host, port, sizeof port) != 0)
        return false;
    if (strcmp(host, "0.0.0.0") == 0 || *host == '\0')
        snprintf(host, sizeof host, "127.0.0.1");
    else if (strcmp(host, "::") == 0)
        snprintf(host, sizeof host, "::1");
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *found = NULL;
    if (getaddrinfo(host, port, &hints, &found) != 0)
        return false;
    bool accepted = false;
    for (struct addrinfo *item = found; item && !accepted; item = item->ai_next) {
        int fd = socket(item->ai_family, item->ai_socktype | SOCK_CLOEXEC, item->ai_protocol);
        if (fd < 0)
            continue;
        accepted = connect(fd, item->ai_addr, item->ai_addrlen) == 0;
        close(fd);
    }
    freeaddrinfo(found);
    return accepted;
}

//  Prints the lines scripts read (`up` on stdout; nothing else goes there):
//  the gateway, the admin API, the console (the admin listener's /) and the
//  bootstrap token.
static void s_print_endpoints(proto_config_t *config)
{
    const char *gateway = *proto_config_str(config, "ingress.tls_cert") ? "https" : "http";
    const char *admin = *proto_config_str(config, "admin.tls_cert") ? "https" : "http";
    printf("gateway: %s://%s\n", gateway, proto_config_str(config, "ingress.listen"));
    printf("admin:   %s://%s\n", admin, proto_config_str(config, "admin.listen"));
    printf("console: %s://%s/\n", admin, proto_config_str(config, "admin.listen"));
    printf("token:   %s\n", proto_config_str(config, "admin.token"));
    fflush(stdout);
}

//  Starts `tollgate supervise --dir DIR` as a daemon: its own session, no
//  terminal, output in log/supervisor.log. Exec rather than carry on in the
//  fork so the daemon starts clean of whatever this process set up.
static int s_spawn_supervisor(ops_cluster_t *self, char *error, size_t error_size)
{
    char log_path[PATH_MAX];
    snprintf(log_path, sizeof log_path, "%s", ops_state_path(self->state, "log/supervisor.log"));
    //  The last supervisor's status (every program stopped, each with its
    //  last exit) is not this one's: waiting for the file, or reading a
    //  program's exit from it, must see only what the new one writes.
    if (unlink(ops_state_path(self->state, "run/status.json")) != 0 && errno != ENOENT) {
        snprintf(error, error_size, "cannot remove the old run/status.json: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(error, error_size, "cannot fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        setsid();
        //  A second fork so the daemon is not a session leader and can
        //  never acquire a controlling terminal.
        pid_t daemon = fork();
        if (daemon != 0)
            _exit(daemon < 0 ? 1 : 0);
        int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int null = open("/dev/null", O_RDONLY);
        if (log < 0 || null < 0 || chdir(ops_state_dir(self->state)) != 0)
            _exit(126);
        dup2(null, STDIN_FILENO);
        dup2(log, STDOUT_FILENO);
        dup2(log, STDERR_FILENO);
        execl(self->self_exe, "tollgate", "supervise", "--dir", ops_state_dir(self->state),
              (char *)NULL);
        dprintf(STDERR_FILENO, "cannot run %s: %s\n", self->self_exe, strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    uint64_t deadline = proto_loop_now_ms() + S_SUPERVISOR_START_MS;
    while (proto_loop_now_ms() < deadline) {
        if (ops_state_supervisor_pid(self->state) > 0 &&
            access(ops_state_path(self->state, "run/status.json"), F_OK) == 0)
            return 0;
        usleep(20 * 1000);
    }
    snprintf(error, error_size, "the supervisor did not start in %d ms", S_SUPERVISOR_START_MS);
    return -1;
}

//  Says why `up` failed, with the last lines of the log of `program` (the
//  supervisor or the program that failed), or where the logs are.
static void s_report_start_failure(ops_cluster_t *self, const char *error, const char *program)
{
    fprintf(stderr, "tollgate: %s\n", error);
    if (program) {
        char log_path[PATH_MAX + 64];
        snprintf(log_path, sizeof log_path, "%s/log/%s.log", ops_state_dir(self->state), program);
        fprintf(stderr, "last lines of %s:\n", log_path);
        ops_state_print_tail(log_path, S_LOG_TAIL_LINES, stderr);
    } else
        fprintf(stderr, "logs are in %s/log\n", ops_state_dir(self->state));
}

//  Stops the supervisor, which stops every program. Returns 0 or -1.
static int s_stop_supervisor(ops_cluster_t *self, char *error, size_t error_size)
{
    pid_t pid = ops_state_supervisor_pid(self->state);
    if (pid == 0)
        return 0;
    if (pid > 0)
        kill(pid, SIGTERM);
    uint64_t deadline = proto_loop_now_ms() + S_DOWN_WAIT_MS;
    while (proto_loop_now_ms() < deadline) {
        if (ops_state_supervisor_pid(self->state) == 0)
            return 0;
        usleep(20 * 1000);
    }
    //  Its programs die with it (PR_SET_PDEATHSIG).
    if (pid > 0)
        kill(pid, SIGKILL);
    snprintf(error, error_size, "the supervisor (pid %d) did not stop in %d ms; killed it",
             (int)pid, S_DOWN_WAIT_MS);
    return -1;
}

//  Reads run/status.json. Caller owns return value; NULL when absent.
static json_t *s_read_status(ops_cluster_t *self)
{
    return json_load_file(ops_state_path(self->state, "run/status.json"), 0, NULL);
}

static json_t *s_status_program(json_t *status, const char *name)
{
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(status, "programs"), i, item)
    {
        const char *item_name = json_string_value(json_object_get(item, "name"));
        if (item_name && strcmp(item_name, name) == 0)
            return item;
    }
    return NULL;
}

//  Runs the private PostgreSQL: initdb on first use, start, create the
//  database, apply migrations. *started says whether we started it.
static int s_database_up(ops_cluster_t *self, bool *started, char *error, size_t error_size)
{
    ops_pg_t *pg = ops_pg_new(self->state, error, error_size);
    if (!pg)
        return -1;
    int rc = -1;
    *started = false;
    if (!ops_pg_initialized(pg)) {
        fprintf(stderr, "initialising PostgreSQL in %s/pg\n", ops_state_dir(self->state));
        if (ops_pg_init(pg, error, error_size) != 0)
            goto done;
    }
    if (ops_pg_pid(pg) == 0) {
        if (ops_pg_start(pg, error, error_size) != 0)
            goto done;
        *started = true;
    }
    if (ops_pg_create_database(pg, error, error_size) != 0)
        goto done;
    PGconn *db = proto_db_connect_once(ops_state_database_url(self->state), error, error_size);
    if (!db)
        goto done;
    ops_migrate_t *migrate = ops_migrate_new();
    //  New migrations of an upgraded binary are applied on every `up`.
    if (ops_migrate_apply(migrate, db, stderr, error, error_size) >= 0)
        rc = 0;
    ops_migrate_destroy(&migrate);
    PQfinish(db);
done:
    ops_pg_destroy(&pg);
    return rc;
}

static void s_stop_database(ops_cluster_t *self)
{
    char error[512];
    ops_pg_t *pg = ops_pg_new(self->state, error, sizeof error);
    if (pg && ops_pg_stop(pg, error, sizeof error) != 0)
        fprintf(stderr, "tollgate: %s\n", error);
    ops_pg_destroy(&pg);
}

//  Waits until every program answers PING and the gateway accepts TCP
//  connections. When `fresh` (we started the supervisor), any program exit
//  is a failed start: its name goes in *failed. Returns 0 or -1.
static int s_wait_ready(ops_cluster_t *self, proto_config_t *config, bool fresh, int timeout_ms,
                        const char **failed, char *error, size_t error_size)
{
    bool answered[OPS_PROGRAM_COUNT] = {false};
    int remaining = OPS_PROGRAM_COUNT;
    uint64_t deadline = proto_loop_now_ms() + (uint64_t)timeout_ms;
    *failed = NULL;
    while (proto_loop_now_ms() < deadline) {
        if (ops_state_supervisor_pid(self->state) == 0) {
            snprintf(error, error_size, "the supervisor exited; see %s",
                     ops_state_path(self->state, "log/supervisor.log"));
            return -1;
        }
        json_t *status = fresh ? s_read_status(self) : NULL;
        for (int i = 0; ops_programs[i] && status; i++) {
            json_t *item = s_status_program(status, ops_programs[i]);
            const char *last_exit = json_string_value(json_object_get(item, "last_exit"));
            if (last_exit) {
                *failed = ops_programs[i];
                snprintf(error, error_size, "tollgate-%s exited during start (%s)", ops_programs[i],
                         last_exit);
                json_decref(status);
                return -1;
            }
        }
        json_decref(status);

        const char *names[OPS_PROGRAM_COUNT];
        int index[OPS_PROGRAM_COUNT], count = 0;
        for (int i = 0; i < OPS_PROGRAM_COUNT; i++)
            if (!answered[i]) {
                names[count] = ops_programs[i];
                index[count++] = i;
            }
        ops_ping_result_t results[OPS_PROGRAM_COUNT];
        if (count > 0)
            ops_ping_programs(config, names, count, 250, results);
        for (int j = 0; j < count; j++)
            if (results[j].answered) {
                answered[index[j]] = true;
                remaining--;
            }
        if (remaining == 0 && s_tcp_accepts(proto_config_str(config, "ingress.listen")) &&
            s_tcp_accepts(proto_config_str(config, "admin.listen")))
            return 0;
        if (count == 0 || remaining == 0)
            usleep(50 * 1000);
    }
    char missing[256] = "";
    int silent = 0;
    for (int i = 0; i < OPS_PROGRAM_COUNT; i++)
        if (!answered[i]) {
            size_t used = strlen(missing);
            snprintf(missing + used, sizeof missing - used, " %s", ops_programs[i]);
            //  With one culprit its log is worth showing; with several, the folder.
            *failed = silent++ == 0 ? ops_programs[i] : NULL;
        }
    if (silent)
        snprintf(error, error_size, "no answer to PING within %d ms from:%s", timeout_ms, missing);
    else {
        snprintf(error, error_size, "the gateway does not accept connections on %s",
                 proto_config_str(config, "ingress.listen"));
        *failed = "ingress";
    }
    return -1;
}

int ops_cluster_up(ops_cluster_t *self, const ops_up_options_t *options)
{
    char error[1024];
    if (ops_state_create(self->state, error, sizeof error) != 0) {
        fprintf(stderr, "tollgate: %s\n", error);
        return 1;
    }
    //  Two `up`s (or an `up` and a `down`) on one folder take turns.
    int lock = ops_state_lock_operations(self->state, error, sizeof error);
    if (lock < 0) {
        fprintf(stderr, "tollgate: %s\n", error);
        return 1;
    }
    int exit_code = 1;
    bool started_pg = false, started_supervisor = false;
    proto_config_t *config = NULL;

    if (!options->db_only)
        for (int i = 0; ops_programs[i]; i++) {
            char path[PATH_MAX + 32];
            snprintf(path, sizeof path, "%s/tollgate-%s", self->bindir, ops_programs[i]);
            if (access(path, X_OK) != 0) {
                fprintf(stderr, "tollgate: %s is missing; build every program first (%s)\n", path,
                        strerror(errno));
                goto done;
            }
        }
    if (!ops_state_exists(self->state)) {
        if (ops_state_write_config(self->state, options->host, options->port, options->admin_port,
                                   error, sizeof error) != 0)
            goto failed;
        fprintf(stderr, "created %s\n", ops_state_path(self->state, "tollgate.conf"));
    }
    static const char *const tls_keys[4] = {"ingress.tls_cert", "ingress.tls_key", "admin.tls_cert",
                                            "admin.tls_key"};
    for (int i = 0; i < 4; i++)
        if (options->tls[i] && ops_state_set_config(self->state, tls_keys[i], options->tls[i],
                                                    error, sizeof error) != 0)
            goto failed;
    config = ops_state_load_config(self->state, error, sizeof error);
    if (!config)
        goto failed;
    //  A certificate that will not load is the programs' start error; say
    //  it here, once, rather than after a restart loop.
    static const char *const tls_prefixes[2] = {"ingress", "admin"};
    for (int i = 0; i < 2 && !options->db_only; i++) {
        proto_tls_t *tls = NULL;
        if (proto_tls_from_config(config, tls_prefixes[i], &tls, error, sizeof error) != 0)
            goto failed;
        proto_tls_destroy(&tls);
    }
    if (options->listen_given) {
        char wanted[300];
        snprintf(wanted, sizeof wanted, "%s:%d", options->host, options->port);
        if (strcmp(wanted, proto_config_str(config, "ingress.listen")) != 0)
            fprintf(stderr, "note: keeping ingress.listen = %s from %s\n",
                    proto_config_str(config, "ingress.listen"),
                    ops_state_path(self->state, "tollgate.conf"));
    }
    if (s_database_up(self, &started_pg, error, sizeof error) != 0)
        goto failed;
    if (options->db_only) {
        printf("database: %s\n", proto_config_str(config, "database_url"));
        exit_code = 0;
        goto done;
    }

    bool running = ops_state_supervisor_pid(self->state) != 0;
    if (running)
        fprintf(stderr, "tollgate is already up in %s\n", ops_state_dir(self->state));
    else {
        //  Counted as started even when it is late: `stop` then ends a
        //  supervisor that takes its lock after we gave up on it.
        started_supervisor = true;
        if (s_spawn_supervisor(self, error, sizeof error) != 0) {
            s_report_start_failure(self, error, "supervisor");
            goto stop;
        }
    }
    const char *failed_program = NULL;
    if (s_wait_ready(self, config, started_supervisor, options->timeout_ms, &failed_program, error,
                     sizeof error) != 0) {
        s_report_start_failure(self, error, failed_program);
        goto stop;
    }
    s_print_endpoints(config);
    if (options->demo && ops_demo_start(ops_state_dir(self->state), self->bindir, self->self_exe,
                                        config, error, sizeof error) != 0) {
        //  The cluster itself is up and stays up; only the demo failed.
        fprintf(stderr, "tollgate: --demo: %s\n", error);
        exit_code = 1;
        goto done;
    }
    exit_code = 0;
    goto done;

failed:
    fprintf(stderr, "tollgate: %s\n", error);
stop:
    //  Leave things as they were: stop only what this run started.
    if (started_supervisor && s_stop_supervisor(self, error, sizeof error) != 0)
        fprintf(stderr, "tollgate: %s\n", error);
    if (started_pg)
        s_stop_database(self);
done:
    proto_config_destroy(&config);
    close(lock);
    return exit_code;
}

int ops_cluster_down(ops_cluster_t *self)
{
    if (access(ops_state_dir(self->state), F_OK) != 0 ||
        access(ops_state_path(self->state, "run"), F_OK) != 0) {
        fprintf(stderr, "nothing to stop in %s\n", ops_state_dir(self->state));
        return 0;
    }
    char error[1024];
    int lock = ops_state_lock_operations(self->state, error, sizeof error);
    if (lock < 0) {
        fprintf(stderr, "tollgate: %s\n", error);
        return 1;
    }
    int exit_code = 0;
    ops_demo_stop(ops_state_dir(self->state));
    if (s_stop_supervisor(self, error, sizeof error) != 0) {
        fprintf(stderr, "tollgate: %s\n", error);
        exit_code = 1;
    }
    ops_pg_t *pg = ops_pg_new(self->state, error, sizeof error);
    if (pg && ops_pg_stop(pg, error, sizeof error) != 0) {
        fprintf(stderr, "tollgate: %s\n", error);
        exit_code = 1;
    }
    ops_pg_destroy(&pg);
    close(lock);
    if (exit_code == 0)
        fprintf(stderr, "tollgate is down in %s\n", ops_state_dir(self->state));
    return exit_code;
}

static void s_format_uptime(int64_t seconds, char *out, size_t out_size)
{
    if (seconds < 0)
        snprintf(out, out_size, "-");
    else if (seconds < 60)
        snprintf(out, out_size, "%llds", (long long)seconds);
    else if (seconds < 3600)
        snprintf(out, out_size, "%lldm%02llds", (long long)seconds / 60, (long long)seconds % 60);
    else
        snprintf(out, out_size, "%lldh%02lldm", (long long)seconds / 3600,
                 (long long)(seconds / 60) % 60);
}

int ops_cluster_status(ops_cluster_t *self, bool json, FILE *out)
{
    char error[1024];
    bool exists = ops_state_exists(self->state);
    pid_t supervisor = exists ? ops_state_supervisor_pid(self->state) : 0;
    json_t *status = supervisor ? s_read_status(self) : NULL;
    proto_config_t *config =
        exists ? ops_state_load_config(self->state, error, sizeof error) : NULL;
    int64_t now_ms = (int64_t)(proto_loop_wall_us() / 1000);

    //  Ask only programs whose process exists; a dead one cannot answer.
    const char *names[OPS_PROGRAM_COUNT];
    pid_t pids[OPS_PROGRAM_COUNT] = {0};
    int64_t started[OPS_PROGRAM_COUNT] = {0};
    int restarts[OPS_PROGRAM_COUNT] = {0};
    const char *last_exit[OPS_PROGRAM_COUNT] = {NULL};
    int ping_index[OPS_PROGRAM_COUNT], ping_count = 0;
    for (int i = 0; i < OPS_PROGRAM_COUNT; i++) {
        json_t *item = s_status_program(status, ops_programs[i]);
        pids[i] = (pid_t)json_integer_value(json_object_get(item, "pid"));
        started[i] = (int64_t)json_integer_value(json_object_get(item, "started_ms"));
        restarts[i] = (int)json_integer_value(json_object_get(item, "restarts"));
        last_exit[i] = json_string_value(json_object_get(item, "last_exit"));
        if (pids[i] > 0 && kill(pids[i], 0) != 0 && errno == ESRCH)
            pids[i] = 0;
        if (pids[i] > 0 && config) {
            names[ping_count] = ops_programs[i];
            ping_index[ping_count++] = i;
        }
    }
    ops_ping_result_t results[OPS_PROGRAM_COUNT];
    bool answered[OPS_PROGRAM_COUNT] = {false};
    if (ping_count > 0)
        ops_ping_programs(config, names, ping_count, S_PING_TIMEOUT_MS, results);
    for (int j = 0; j < ping_count; j++)
        answered[ping_index[j]] = results[j].answered;

    pid_t pg_pid = 0;
    if (exists) {
        ops_pg_t *pg = ops_pg_new(self->state, error, sizeof error);
        pg_pid = pg ? ops_pg_pid(pg) : 0;
        ops_pg_destroy(&pg);
    }

    bool all_up = exists && supervisor != 0 && pg_pid > 0;
    for (int i = 0; i < OPS_PROGRAM_COUNT; i++)
        all_up = all_up && pids[i] > 0 && answered[i];

    if (json) {
        json_t *root = json_object();
        json_object_set_new(root, "dir", json_string(ops_state_dir(self->state)));
        json_object_set_new(root, "up", json_boolean(all_up));
        json_t *sup = json_object();
        json_object_set_new(sup, "pid", supervisor > 0 ? json_integer(supervisor) : json_null());
        json_object_set_new(sup, "state", json_string(supervisor ? "up" : "down"));
        json_object_set_new(root, "supervisor", sup);
        json_t *list = json_array();
        for (int i = 0; i < OPS_PROGRAM_COUNT; i++) {
            json_t *item = json_object();
            json_object_set_new(item, "name", json_string(ops_programs[i]));
            json_object_set_new(item, "pid", pids[i] > 0 ? json_integer(pids[i]) : json_null());
            json_object_set_new(item, "state", json_string(pids[i] > 0 ? "up" : "down"));
            json_object_set_new(item, "uptime_s",
                                pids[i] > 0 && started[i]
                                    ? json_integer((now_ms - started[i]) / 1000)
                                    : json_null());
            json_object_set_new(item, "restarts", json_integer(restarts[i]));
            json_object_set_new(item, "last_exit",
                                last_exit[i] ? json_string(last_exit[i]) : json_null());
            json_object_set_new(item, "ping", json_boolean(answered[i]));
            json_array_append_new(list, item);
        }
        json_object_set_new(root, "programs", list);
        json_t *postgres = json_object();
        json_object_set_new(postgres, "pid", pg_pid > 0 ? json_integer(pg_pid) : json_null());
        json_object_set_new(postgres, "state", json_string(pg_pid > 0 ? "up" : "down"));
        json_object_set_new(root, "postgres", postgres);
        char *text = json_dumps(root, JSON_INDENT(2));
        fprintf(out, "%s\n", text);
        free(text);
        json_decref(root);
    } else {
        if (!exists)
            fprintf(out, "no cluster in %s (tollgate up --dir %s)\n", ops_state_dir(self->state),
                    ops_state_dir(self->state));
        fprintf(out, "%-10s %8s  %-5s %8s  %8s  %s\n", "PROGRAM", "PID", "STATE", "UPTIME",
                "RESTARTS", "PING");
        for (int i = 0; i < OPS_PROGRAM_COUNT; i++) {
            char uptime[32] = "-", pid[16] = "-";
            if (pids[i] > 0) {
                snprintf(pid, sizeof pid, "%d", (int)pids[i]);
                if (started[i])
                    s_format_uptime((now_ms - started[i]) / 1000, uptime, sizeof uptime);
            }
            fprintf(out, "%-10s %8s  %-5s %8s  %8d  %s\n", ops_programs[i], pid,
                    pids[i] > 0 ? "up" : "down", uptime, restarts[i],
                    pids[i] <= 0  ? "-"
                    : answered[i] ? "ok"
                                  : "no answer");
        }
        char pid[16] = "-";
        if (pg_pid > 0)
            snprintf(pid, sizeof pid, "%d", (int)pg_pid);
        fprintf(out, "%-10s %8s  %s\n", "postgres", pid, pg_pid > 0 ? "up" : "down");
    }
    json_decref(status);
    proto_config_destroy(&config);
    return all_up ? 0 : 1;
}

int ops_cluster_ping(ops_cluster_t *self, const char *const names[], int count, int timeout_ms,
                     FILE *out)
{
    char error[1024];
    proto_config_t *config = ops_state_load_config(self->state, error, sizeof error);
    if (!config) {
        fprintf(stderr, "tollgate: %s\n", error);
        return 1;
    }
    const char *all[OPS_PROGRAM_COUNT];
    if (count == 0) {
        for (int i = 0; ops_programs[i]; i++)
            all[i] = ops_programs[i];
        names = all;
        count = OPS_PROGRAM_COUNT;
    }
    ops_ping_result_t *results = calloc((size_t)count, sizeof *results);
    assert(results);
    int answered = ops_ping_programs(config, names, count, timeout_ms, results);
    for (int i = 0; i < count; i++)
        fprintf(out, "%-10s %s %s\n", names[i], results[i].answered ? "ok" : "no answer",
                results[i].meta);
    free(results);
    proto_config_destroy(&config);
    return answered == count ? 0 : 1;
}

//  The pid in a PONG's meta JSON, and whether it says draining. Returns the
//  pid, or 0 when the meta does not parse.
static pid_t s_pong_pid(const char *meta, bool *draining)
{
    json_t *root = json_loads(meta, 0, NULL);
    pid_t pid = (pid_t)json_integer_value(json_object_get(root, "pid"));
    *draining = json_is_true(json_object_get(root, "draining"));
    json_decref(root);
    return pid;
}

//  Waits until status.json shows `name` running with a pid other than
//  old_pid, and that process answers PING not draining. Returns the new
//  pid, or 0 at the deadline.
static pid_t s_wait_replaced(ops_cluster_t *self, proto_config_t *config, const char *name,
                             pid_t old_pid, uint64_t deadline)
{
    while (proto_loop_now_ms() < deadline) {
        json_t *status = s_read_status(self);
        json_t *item = s_status_program(status, name);
        const char *state = json_string_value(json_object_get(item, "state"));
        bool running = state && strcmp(state, "running") == 0;
        pid_t pid = (pid_t)json_integer_value(json_object_get(item, "pid"));
        json_decref(status);
        if (running && pid > 0 && pid != old_pid) {
            //  The old process may still answer on the same endpoint while
            //  it drains, so the answer must come from the new pid.
            ops_ping_result_t result;
            const char *names[] = {name};
            bool draining = true;
            if (ops_ping_programs(config, names, 1, 250, &result) == 1 &&
                s_pong_pid(result.meta, &draining) == pid && !draining)
                return pid;
        }
        usleep(20 * 1000);
    }
    return 0;
}

int ops_cluster_restart(ops_cluster_t *self, const char *name, int timeout_ms, FILE *out)
{
    bool known = false;
    for (int i = 0; ops_programs[i]; i++)
        known = known || strcmp(ops_programs[i], name) == 0;
    if (!known) {
        fprintf(stderr, "tollgate restart: no program named '%s'\n", name);
        return 2;
    }
    char error[1024];
    pid_t supervisor = ops_state_supervisor_pid(self->state);
    if (supervisor <= 0) {
        fprintf(stderr, "tollgate restart: no cluster is up in %s\n", ops_state_dir(self->state));
        return 1;
    }
    //  Not while an `up` or `down` runs on the same folder.
    int lock = ops_state_lock_operations(self->state, error, sizeof error);
    if (lock < 0) {
        fprintf(stderr, "tollgate restart: %s\n", error);
        return 1;
    }
    proto_config_t *config = ops_state_load_config(self->state, error, sizeof error);
    int exit_code = 1;
    if (!config) {
        fprintf(stderr, "tollgate restart: %s\n", error);
        goto done;
    }
    //  Every instance of the program in status.json, one at a time: the
    //  local supervisor runs one of each today; the loop is the roll.
    json_t *status = s_read_status(self);
    pid_t pids[16];
    int count = 0;
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(status, "programs"), i, item)
    {
        const char *item_name = json_string_value(json_object_get(item, "name"));
        if (item_name && strcmp(item_name, name) == 0 && count < 16)
            pids[count++] = (pid_t)json_integer_value(json_object_get(item, "pid"));
    }
    json_decref(status);
    exit_code = 0;
    for (int n = 0; n < count && exit_code == 0; n++) {
        uint64_t started = proto_loop_now_ms();
        if (pids[n] <= 0) {
            fprintf(stderr,
                    "tollgate restart: %s is not running (the supervisor is restarting "
                    "it)\n",
                    name);
            exit_code = 1;
            break;
        }
        if (ops_supervisor_restart_request(supervisor, name) != 0) {
            fprintf(stderr, "tollgate restart: cannot signal the supervisor (pid %d): %s\n",
                    (int)supervisor, strerror(errno));
            exit_code = 1;
            break;
        }
        pid_t pid = s_wait_replaced(self, config, name, pids[n], started + (uint64_t)timeout_ms);
        if (pid == 0) {
            fprintf(stderr,
                    "tollgate restart: %s did not come back answering PING within %d ms; "
                    "see %s/log/%s.log\n",
                    name, timeout_ms, ops_state_dir(self->state), name);
            exit_code = 1;
            break;
        }
        fprintf(out, "%s: pid %d -> %d, answering after %llu ms\n", name, (int)pids[n], (int)pid,
                (unsigned long long)(proto_loop_now_ms() - started));
    }
done:
    proto_config_destroy(&config);
    close(lock);
    return exit_code;
}

//  The configuration a command without a cluster reads: TOLLGATE_CONFIG's
//  file, else DIR/tollgate.conf when there is one (TOLLGATE_SECURITY and
//  TOLLGATE_CURVE_DIR override it: ops_ping_security). Caller owns return
//  value; NULL with a message in error.
static proto_config_t *s_ambient_config(const char *dir, char *error, size_t error_size)
{
    proto_config_t *config = proto_config_new();
    const char *file = getenv("TOLLGATE_CONFIG");
    char state_file[PATH_MAX];
    snprintf(state_file, sizeof state_file, "%s/tollgate.conf", dir);
    if (!file || !*file)
        file = access(state_file, R_OK) == 0 ? state_file : NULL;
    if ((file && proto_config_load_file(config, file, error, error_size) != 0) ||
        ops_ping_overrides(config, error, error_size) != 0)
        proto_config_destroy(&config);
    return config;
}

int ops_cluster_ping_endpoint(const char *dir, const char *endpoint, int timeout_ms, bool ready,
                              FILE *out)
{
    char error[1024];
    proto_config_t *config = s_ambient_config(dir, error, sizeof error);
    if (!config) {
        fprintf(stderr, "tollgate ping: %s\n", error);
        return 2;
    }
    //  ops_ping reads endpoints from a configuration: every program's
    //  control socket is set to this endpoint. With CURVE the client must
    //  name the server's public key, and the endpoint does not say whose it
    //  is, so one PING goes out with each program's key and the one that
    //  fits answers.
    const char *names[16];
    int count = 0;
    bool curve = strcmp(proto_config_str(config, "security"), "curve") == 0;
    for (int i = 0; ops_programs[i] && count < 16; i++) {
        char key[96], cert[PATH_MAX];
        snprintf(key, sizeof key, "%s.control_bind", ops_programs[i]);
        snprintf(cert, sizeof cert, "%s/public/%s.cert", proto_config_str(config, "curve.dir"),
                 ops_programs[i]);
        if (curve ? access(cert, R_OK) != 0 : count > 0)
            continue;
        if (proto_config_set(config, key, endpoint, "--endpoint", error, sizeof error) != 0) {
            fprintf(stderr, "tollgate ping: %s\n", error);
            proto_config_destroy(&config);
            return 2;
        }
        names[count++] = ops_programs[i];
    }
    ops_ping_result_t results[16];
    int answered = count ? ops_ping_programs(config, names, count, timeout_ms, results) : 0;
    proto_config_destroy(&config);
    const char *meta = "";
    for (int i = 0; i < count; i++)
        if (results[i].answered)
            meta = results[i].meta;
    bool draining = false;
    if (answered >= 1)
        s_pong_pid(meta, &draining);
    fprintf(out, "%s %s %s\n", endpoint,
            answered < 1 ? "no answer"
            : draining   ? "draining"
                         : "ok",
            meta);
    return answered >= 1 && !(ready && draining) ? 0 : 1;
}

int ops_cluster_supervise(ops_cluster_t *self)
{
    proto_log_init("supervisor", PROTO_LOG_INFO);
    char error[512];
    if (ops_state_lock_supervisor(self->state, error, sizeof error) != 0) {
        log_error(NULL, "%s", error);
        return 1;
    }
    ops_supervisor_t *supervisor = ops_supervisor_new(self->state, self->bindir);
    int rc = ops_supervisor_run(supervisor);
    ops_supervisor_destroy(&supervisor);
    return rc;
}
