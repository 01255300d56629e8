#include "ops_supervisor.h"
#include "proto_log.h"
#include "proto_loop.h"

#include "proto_check.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef enum {
    S_RUNNING,    //  started and not yet reaped
    S_RESTARTING, //  died; waiting out its backoff
    S_STOPPED,    //  not running and not to be restarted (shutting down)
} s_state_t;

typedef struct {
    const char *name;       //  "ingress", from ops_programs
    pid_t pid;              //  while S_RUNNING
    s_state_t state;        //  see above
    uint64_t started_ms;    //  monotonic, for backoff decisions
    uint64_t started_wall;  //  wall-clock ms since the epoch, for status.json
    uint64_t restart_at_ms; //  monotonic, while S_RESTARTING
    uint64_t backoff_ms;    //  delay used for the last restart, 0 before any
    int restarts;           //  unplanned restarts since the supervisor started
    int planned_restarts;   //  restarts asked for by `tollgate restart`
    bool planned;           //  we sent SIGTERM for a planned restart; not yet reaped
    bool planned_start;     //  the pending restart is a planned one
    char last_exit[64];     //  description of the last exit, "" before any
} s_program_t;

struct _ops_supervisor_t {
    ops_state_t *state;                      //  borrowed
    char bindir[PATH_MAX];                   //  where tollgate-<name> live
    s_program_t programs[OPS_PROGRAM_COUNT]; //  one per ops_programs entry
    int signal_fd;                           //  SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1
    bool stopping;                           //  SIGTERM seen
    uint64_t kill_at_ms;                     //  when stopping: SIGKILL stragglers then
    uint64_t started_wall;                   //  our own start, wall-clock ms
};

uint64_t ops_supervisor_backoff(uint64_t previous_ms, uint64_t ran_ms)
{
    if (previous_ms == 0 || ran_ms >= OPS_SUPERVISOR_HEALTHY_MS)
        return OPS_SUPERVISOR_BACKOFF_MIN_MS;
    uint64_t next = previous_ms * 2;
    return next > OPS_SUPERVISOR_BACKOFF_MAX_MS ? OPS_SUPERVISOR_BACKOFF_MAX_MS : next;
}

void ops_supervisor_describe_exit(int status, char *out, size_t out_size)
{
    if (WIFEXITED(status))
        snprintf(out, out_size, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, out_size, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(out, out_size, "status %d", status);
}

ops_supervisor_t *ops_supervisor_new(ops_state_t *state, const char *bindir)
{
    ops_supervisor_t *self = calloc(1, sizeof *self);
    assert(self);
    self->state = state;
    self->signal_fd = -1;
    snprintf(self->bindir, sizeof self->bindir, "%s", bindir);
    for (int i = 0; i < OPS_PROGRAM_COUNT; i++)
        self->programs[i] = (s_program_t){.name = ops_programs[i], .state = S_STOPPED};
    return self;
}

void ops_supervisor_destroy(ops_supervisor_t **self_p)
{
    assert(self_p);
    ops_supervisor_t *self = *self_p;
    if (!self)
        return;
    if (self->signal_fd >= 0)
        close(self->signal_fd);
    free(self);
    *self_p = NULL;
}

static void s_iso_time(uint64_t wall_ms, char *out, size_t out_size)
{
    time_t seconds = (time_t)(wall_ms / 1000);
    struct tm parts;
    gmtime_r(&seconds, &parts);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &parts);
    snprintf(out, out_size, "%s.%03dZ", base, (int)(wall_ms % 1000));
}

//  Rewrites run/status.json. Readers (`tollgate status`, `up`) never see a
//  half-written file because ops_state_write_file renames into place.
static void s_write_status(ops_supervisor_t *self)
{
    static const char *state_names[] = {"running", "restarting", "stopped"};
    char stamp[40];
    json_t *root = json_object();
    json_t *supervisor = json_object();
    s_iso_time(self->started_wall, stamp, sizeof stamp);
    json_object_set_new(supervisor, "pid", json_integer(getpid()));
    json_object_set_new(supervisor, "started_at", json_string(stamp));
    json_object_set_new(supervisor, "started_ms", json_integer((json_int_t)self->started_wall));
    json_object_set_new(supervisor, "stopping", json_boolean(self->stopping));
    json_object_set_new(root, "supervisor", supervisor);
    json_t *list = json_array();
    for (int i = 0; i < OPS_PROGRAM_COUNT; i++) {
        const s_program_t *program = &self->programs[i];
        json_t *item = json_object();
        json_object_set_new(item, "name", json_string(program->name));
        json_object_set_new(item, "pid",
                            program->state == S_RUNNING ? json_integer(program->pid) : json_null());
        json_object_set_new(item, "state", json_string(state_names[program->state]));
        s_iso_time(program->started_wall, stamp, sizeof stamp);
        json_object_set_new(item, "started_at",
                            program->started_wall ? json_string(stamp) : json_null());
        json_object_set_new(item, "started_ms", json_integer((json_int_t)program->started_wall));
        json_object_set_new(item, "restarts", json_integer(program->restarts));
        json_object_set_new(item, "planned_restarts", json_integer(program->planned_restarts));
        json_object_set_new(item, "last_exit",
                            *program->last_exit ? json_string(program->last_exit) : json_null());
        json_array_append_new(list, item);
    }
    json_object_set_new(root, "programs", list);
    char *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    size_t length = strlen(text);
    text = realloc(text, length + 2);
    assert(text);
    memcpy(text + length, "\n", 2);
    if (ops_state_write_file(ops_state_path(self->state, "run/status.json"), text, 0644) != 0)
        log_warn(NULL, "cannot write run/status.json: %s", strerror(errno));
    free(text);
}

static void s_start(ops_supervisor_t *self, s_program_t *program)
{
    char path[PATH_MAX], config[PATH_MAX], log_path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tollgate-%s", self->bindir, program->name);
    snprintf(config, sizeof config, "%s", ops_state_path(self->state, "tollgate.conf"));
    snprintf(log_path, sizeof log_path, "%s/log/%s.log", ops_state_dir(self->state), program->name);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        //  Treated like a quick death: it will be tried again after a delay.
        log_error(NULL, "cannot fork for %s: %s", program->name, strerror(errno));
        program->state = S_RESTARTING;
        program->backoff_ms = ops_supervisor_backoff(program->backoff_ms, 0);
        program->restart_at_ms = proto_loop_now_ms() + program->backoff_ms;
        return;
    }
    if (pid == 0) {
        //  The child must not inherit our blocked signals: the program
        //  sets up its own signal handling and expects a clean mask.
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        //  If the supervisor is SIGKILLed its programs go too, rather than
        //  linger unsupervised holding their sockets.
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int null = open("/dev/null", O_RDONLY);
        if (log < 0 || null < 0)
            _exit(126);
        dup2(null, STDIN_FILENO);
        dup2(log, STDOUT_FILENO);
        dup2(log, STDERR_FILENO);
        if (log > STDERR_FILENO)
            close(log);
        if (null > STDERR_FILENO)
            close(null);
        char name[64];
        snprintf(name, sizeof name, "tollgate-%s", program->name);
        char *argv[] = {name, "--config", config, NULL};
        execv(path, argv);
        dprintf(STDERR_FILENO, "tollgate supervisor: cannot run %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    program->pid = pid;
    program->state = S_RUNNING;
    program->started_ms = proto_loop_now_ms();
    program->started_wall = proto_loop_wall_us() / 1000;
    log_info(NULL, "started %s (pid %d)", program->name, (int)pid);
}

static s_program_t *s_find(ops_supervisor_t *self, pid_t pid)
{
    for (int i = 0; i < OPS_PROGRAM_COUNT; i++)
        if (self->programs[i].state == S_RUNNING && self->programs[i].pid == pid)
            return &self->programs[i];
    return NULL;
}

//  Collects every child that has exited and schedules its restart.
static void s_reap(ops_supervisor_t *self)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        s_program_t *program = s_find(self, pid);
        if (!program)
            continue;
        uint64_t ran = proto_loop_now_ms() - program->started_ms;
        ops_supervisor_describe_exit(status, program->last_exit, sizeof program->last_exit);
        program->pid = 0;
        if (self->stopping) {
            program->state = S_STOPPED;
            log_info(NULL, "%s (pid %d) stopped: %s", program->name, (int)pid, program->last_exit);
            continue;
        }
        bool planned = program->planned;
        program->planned = false;
        program->state = S_RESTARTING;
        if (planned && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            //  It drained and exited as asked: not a failure, so no delay
            //  and the backoff is left as it was.
            program->restart_at_ms = proto_loop_now_ms();
            program->planned_start = true;
            log_info(NULL, "%s (pid %d) drained for a planned restart after %llu ms; starting it",
                     program->name, (int)pid, (unsigned long long)ran);
            continue;
        }
        program->planned_start = false;
        program->backoff_ms = ops_supervisor_backoff(program->backoff_ms, ran);
        program->restart_at_ms = proto_loop_now_ms() + program->backoff_ms;
        log_warn(NULL, "%s (pid %d) exited after %llu ms: %s; restart %d in %llu ms", program->name,
                 (int)pid, (unsigned long long)ran, program->last_exit, program->restarts + 1,
                 (unsigned long long)program->backoff_ms);
    }
}

static void s_begin_stop(ops_supervisor_t *self, int signal_number)
{
    if (self->stopping)
        return;
    self->stopping = true;
    self->kill_at_ms = proto_loop_now_ms() + OPS_SUPERVISOR_KILL_AFTER_MS;
    log_info(NULL, "%s received: stopping every program", strsignal(signal_number));
    for (int i = 0; i < OPS_PROGRAM_COUNT; i++) {
        s_program_t *program = &self->programs[i];
        if (program->state == S_RUNNING)
            kill(program->pid, SIGTERM);
        else
            program->state = S_STOPPED;
    }
}

//  `tollgate restart` asked (SIGUSR1 carrying the program's index) for a
//  planned restart: SIGTERM it so it drains; s_reap starts it again at once
//  when it exits 0.
static void s_planned_restart(ops_supervisor_t *self, int index)
{
    if (index < 0 || index >= OPS_PROGRAM_COUNT) {
        log_warn(NULL, "restart request for program number %d ignored: no such program", index);
        return;
    }
    s_program_t *program = &self->programs[index];
    if (self->stopping || program->state != S_RUNNING || program->planned) {
        log_warn(NULL, "restart request for %s ignored: it is %s", program->name,
                 self->stopping     ? "stopping with the supervisor"
                 : program->planned ? "already restarting"
                                    : "not running");
        return;
    }
    log_info(NULL, "planned restart of %s: SIGTERM to pid %d", program->name, (int)program->pid);
    program->planned = true;
    kill(program->pid, SIGTERM);
}

int ops_supervisor_restart_request(pid_t supervisor, const char *name)
{
    for (int i = 0; i < OPS_PROGRAM_COUNT; i++)
        if (strcmp(ops_programs[i], name) == 0)
            return sigqueue(supervisor, SIGUSR1, (union sigval){.sival_int = i}) == 0 ? 0 : -1;
    errno = ENOENT;
    return -1;
}

static bool s_all_stopped(ops_supervisor_t *self)
{
    for (int i = 0; i < OPS_PROGRAM_COUNT; i++)
        if (self->programs[i].state != S_STOPPED)
            return false;
    return true;
}

int ops_supervisor_run(ops_supervisor_t *self)
{
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGCHLD);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    sigaddset(&signals, SIGUSR1);
    //  Blocked before the first fork, so no SIGCHLD can slip past signalfd.
    if (sigprocmask(SIG_BLOCK, &signals, NULL) != 0 ||
        (self->signal_fd = signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
        log_error(NULL, "cannot set up signals: %s", strerror(errno));
        return 1;
    }
    self->started_wall = proto_loop_wall_us() / 1000;
    log_info(NULL, "supervising %d programs from %s in %s", OPS_PROGRAM_COUNT, self->bindir,
             ops_state_dir(self->state));
    for (int i = 0; i < OPS_PROGRAM_COUNT; i++)
        s_start(self, &self->programs[i]);
    s_write_status(self);

    while (!(self->stopping && s_all_stopped(self))) {
        uint64_t now = proto_loop_now_ms();
        //  Sleep until the next restart or the kill deadline, whichever is first.
        int64_t wait_ms = -1;
        for (int i = 0; i < OPS_PROGRAM_COUNT; i++) {
            const s_program_t *program = &self->programs[i];
            if (program->state != S_RESTARTING)
                continue;
            int64_t due =
                program->restart_at_ms > now ? (int64_t)(program->restart_at_ms - now) : 0;
            if (wait_ms < 0 || due < wait_ms)
                wait_ms = due;
        }
        if (self->stopping && self->kill_at_ms != UINT64_MAX)
            wait_ms = self->kill_at_ms > now ? (int64_t)(self->kill_at_ms - now) : 0;
        else if (self->stopping)
            wait_ms = -1;
        if (wait_ms > INT_MAX)
            wait_ms = INT_MAX;

        struct pollfd item = {.fd = self->signal_fd, .events = POLLIN};
        int ready = poll(&item, 1, (int)wait_ms);
        if (ready < 0 && errno != EINTR) {
            log_error(NULL, "poll: %s", strerror(errno));
            break;
        }
        bool changed = false;
        struct signalfd_siginfo info;
        while (read(self->signal_fd, &info, sizeof info) == (ssize_t)sizeof info) {
            if (info.ssi_signo == SIGCHLD) {
                s_reap(self);
                changed = true;
            } else if (info.ssi_signo == SIGTERM || info.ssi_signo == SIGINT) {
                s_begin_stop(self, (int)info.ssi_signo);
                changed = true;
            } else if (info.ssi_signo == SIGUSR1) {
                s_planned_restart(self, info.ssi_int);
                changed = true;
            } else {
                //  Each program reloads what it can (TLS certificates);
                //  the rest of the configuration needs a restart.
                log_info(NULL, "SIGHUP: passed to every program (TLS certificates reload; "
                               "other settings need `tollgate restart`)");
                for (int i = 0; i < OPS_PROGRAM_COUNT; i++)
                    if (self->programs[i].state == S_RUNNING)
                        kill(self->programs[i].pid, SIGHUP);
            }
        }
        now = proto_loop_now_ms();
        if (self->stopping && now >= self->kill_at_ms) {
            for (int i = 0; i < OPS_PROGRAM_COUNT; i++)
                if (self->programs[i].state == S_RUNNING) {
                    log_warn(NULL, "%s (pid %d) did not stop within %d ms: SIGKILL",
                             self->programs[i].name, (int)self->programs[i].pid,
                             OPS_SUPERVISOR_KILL_AFTER_MS);
                    kill(self->programs[i].pid, SIGKILL);
                }
            //  Reaping continues through SIGCHLD; do not kill again.
            self->kill_at_ms = UINT64_MAX;
        }
        for (int i = 0; i < OPS_PROGRAM_COUNT && !self->stopping; i++) {
            s_program_t *program = &self->programs[i];
            if (program->state == S_RESTARTING && now >= program->restart_at_ms) {
                if (program->planned_start)
                    program->planned_restarts++;
                else
                    program->restarts++;
                program->planned_start = false;
                s_start(self, program);
                changed = true;
            }
        }
        if (changed)
            s_write_status(self);
    }
    //  The last status stays for post-mortems; readers trust the lock, not it.
    s_write_status(self);
    unlink(ops_state_path(self->state, "run/supervisor.pid"));
    log_info(NULL, "every program stopped; supervisor exits");
    return 0;
}

//  Test helper: reads status.json and returns program `name`'s object, or
//  NULL. Caller owns the returned root via *root_p.
static json_t *s_test_program(ops_state_t *state, const char *name, json_t **root_p)
{
    *root_p = json_load_file(ops_state_path(state, "run/status.json"), 0, NULL);
    json_t *programs = json_object_get(*root_p, "programs");
    size_t i;
    json_t *item;
    json_array_foreach(programs, i, item)
    {
        if (strcmp(json_string_value(json_object_get(item, "name")), name) == 0)
            return item;
    }
    return NULL;
}

//  Test helper: waits up to 5 s until ingress runs with `restarts` restarts,
//  `planned` planned ones and a pid other than `old_pid`. Returns the pid,
//  or 0 on timeout.
static pid_t s_test_wait_running(ops_state_t *state, int restarts, int planned, pid_t old_pid)
{
    uint64_t deadline = proto_loop_now_ms() + 5000;
    while (proto_loop_now_ms() < deadline) {
        json_t *root;
        json_t *item = s_test_program(state, "ingress", &root);
        pid_t pid = 0;
        if (item && json_integer_value(json_object_get(item, "restarts")) == restarts &&
            json_integer_value(json_object_get(item, "planned_restarts")) == planned &&
            strcmp(json_string_value(json_object_get(item, "state")), "running") == 0)
            pid = (pid_t)json_integer_value(json_object_get(item, "pid"));
        json_decref(root);
        if (pid > 0 && pid != old_pid)
            return pid;
        usleep(20 * 1000);
    }
    return 0;
}

//  Test helper: waits up to 5 s until process `pid` catches SIGTERM (its
//  SigCgt mask in /proc), so a stand-in cannot be signalled before its trap
//  is set. Returns true when it does.
static bool s_test_catches_term(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    uint64_t deadline = proto_loop_now_ms() + 5000;
    while (proto_loop_now_ms() < deadline) {
        FILE *file = fopen(path, "r");
        unsigned long long mask = 0;
        while (file && fgets(line, sizeof line, file))
            if (sscanf(line, "SigCgt: %llx", &mask) == 1)
                break;
        if (file)
            fclose(file);
        if (mask & (1ULL << (SIGTERM - 1)))
            return true;
        usleep(5 * 1000);
    }
    return false;
}

void ops_supervisor_test(bool verbose)
{
    if (verbose)
        printf(" * ops_supervisor: ");
    PROTO_CHECK(ops_supervisor_backoff(0, 0) == 100);
    PROTO_CHECK(ops_supervisor_backoff(100, 50) == 200);
    PROTO_CHECK(ops_supervisor_backoff(6400, 50) == 10000);
    PROTO_CHECK(ops_supervisor_backoff(10000, 50) == 10000);
    PROTO_CHECK(ops_supervisor_backoff(10000, 30000) == 100);
    char text[64];
    ops_supervisor_describe_exit(1 << 8, text, sizeof text);
    PROTO_CHECK(strcmp(text, "exit 1") == 0);
    ops_supervisor_describe_exit(SIGKILL, text, sizeof text);
    PROTO_CHECK(strncmp(text, "signal 9", 8) == 0);

    //  A run over stand-in programs: shell scripts that sleep and, like the
    //  real programs, exit 0 on SIGTERM.
    char base[] = "/tmp/ops_supervisor_testXXXXXX";
    PROTO_CHECK(mkdtemp(base));
    char error[256], path[PATH_MAX];
    ops_state_t *state = ops_state_new(base, error, sizeof error);
    PROTO_CHECK(state);
    PROTO_CHECK(ops_state_create(state, error, sizeof error) == 0);
    snprintf(path, sizeof path, "%s/bin", base);
    PROTO_CHECK(mkdir(path, 0755) == 0);
    for (int i = 0; ops_programs[i]; i++) {
        snprintf(path, sizeof path, "%s/bin/tollgate-%s", base, ops_programs[i]);
        FILE *file = fopen(path, "w");
        fputs("#!/bin/sh\ntrap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done\n", file);
        fclose(file);
        chmod(path, 0755);
    }
    pid_t child = fork();
    PROTO_CHECK(child >= 0);
    if (child == 0) {
        //  A failed check aborts this test; the supervisor and its stand-ins
        //  must not outlive it.
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        snprintf(path, sizeof path, "%s/bin", base);
        ops_supervisor_t *supervisor = ops_supervisor_new(state, path);
        int rc = ops_state_lock_supervisor(state, error, sizeof error) == 0
                     ? ops_supervisor_run(supervisor)
                     : 3;
        ops_supervisor_destroy(&supervisor);
        _exit(rc);
    }
    pid_t first = s_test_wait_running(state, 0, 0, 0);
    PROTO_CHECK(first > 0);
    PROTO_CHECK(ops_state_supervisor_pid(state) == child);
    kill(first, SIGKILL);
    pid_t second = s_test_wait_running(state, 1, 0, first);
    PROTO_CHECK(second > 0);
    json_t *root;
    json_t *item = s_test_program(state, "ingress", &root);
    PROTO_CHECK(strncmp(json_string_value(json_object_get(item, "last_exit")), "signal 9", 8) == 0);
    json_decref(root);

    //  A planned restart: SIGTERM, exit 0, started again, counted apart.
    PROTO_CHECK(ops_supervisor_restart_request(child, "nonesuch") == -1);
    PROTO_CHECK(s_test_catches_term(second));
    PROTO_CHECK(ops_supervisor_restart_request(child, "ingress") == 0);
    pid_t third = s_test_wait_running(state, 1, 1, second);
    PROTO_CHECK(third > 0);
    item = s_test_program(state, "ingress", &root);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(item, "last_exit")), "exit 0") == 0);
    json_decref(root);
    second = third;

    kill(child, SIGTERM);
    int status;
    PROTO_CHECK(waitpid(child, &status, 0) == child);
    PROTO_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    PROTO_CHECK(kill(second, 0) != 0); //  the program went with it
    PROTO_CHECK(ops_state_supervisor_pid(state) == 0);
    ops_state_destroy(&state);
    snprintf(path, sizeof path, "rm -rf '%s'", base);
    PROTO_CHECK(system(path) == 0);
    if (verbose)
        printf("OK\n");
}
