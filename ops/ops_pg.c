#include "ops_pg.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct _ops_pg_t {
    ops_state_t *state;    //  borrowed
    char bindir[PATH_MAX]; //  where initdb and pg_ctl live
    bool switch_user;      //  we are root: run as postgres
    uid_t uid;             //  postgres' uid when switch_user
    gid_t gid;             //  postgres' gid when switch_user
};

//  Newest /usr/lib/postgresql/N/bin holding initdb, else initdb's folder on PATH.
static int s_find_bindir(char *out, size_t out_size)
{
    int best = -1;
    DIR *dir = opendir("/usr/lib/postgresql");
    if (dir) {
        struct dirent *item;
        while ((item = readdir(dir))) {
            int version = atoi(item->d_name);
            char path[PATH_MAX];
            snprintf(path, sizeof path, "/usr/lib/postgresql/%s/bin/initdb", item->d_name);
            if (version > best && access(path, X_OK) == 0) {
                best = version;
                snprintf(out, out_size, "/usr/lib/postgresql/%s/bin", item->d_name);
            }
        }
        closedir(dir);
    }
    if (best >= 0)
        return 0;
    const char *search = getenv("PATH");
    char *copy = strdup(search ? search : "/usr/bin:/bin");
    char *save = NULL;
    int rc = -1;
    for (char *folder = strtok_r(copy, ":", &save); folder && rc != 0;
         folder = strtok_r(NULL, ":", &save)) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/initdb", folder);
        if (access(path, X_OK) == 0) {
            snprintf(out, out_size, "%s", folder);
            rc = 0;
        }
    }
    free(copy);
    return rc;
}

ops_pg_t *ops_pg_new(ops_state_t *state, char *error, size_t error_size)
{
    ops_pg_t *self = calloc(1, sizeof *self);
    assert(self);
    self->state = state;
    if (s_find_bindir(self->bindir, sizeof self->bindir) != 0) {
        snprintf(error, error_size,
                 "PostgreSQL's initdb was not found in /usr/lib/postgresql/*/bin or on PATH "
                 "(apt-get install postgresql)");
        free(self);
        return NULL;
    }
    if (geteuid() == 0) {
        struct passwd *user = getpwnam("postgres");
        if (!user) {
            snprintf(error, error_size,
                     "running as root needs a 'postgres' user to run PostgreSQL as "
                     "(installing the postgresql package creates it)");
            free(self);
            return NULL;
        }
        self->switch_user = true;
        self->uid = user->pw_uid;
        self->gid = user->pw_gid;
    }
    return self;
}

void ops_pg_destroy(ops_pg_t **self_p)
{
    assert(self_p);
    free(*self_p);
    *self_p = NULL;
}

const char *ops_pg_bindir(ops_pg_t *self)
{
    return self->bindir;
}

bool ops_pg_initialized(ops_pg_t *self)
{
    return access(ops_state_path(self->state, "pg/PG_VERSION"), F_OK) == 0;
}

//  Creates a folder (or file) the server writes, owned by its user.
static int s_prepare(ops_pg_t *self, const char *relative, bool is_dir, char *error,
                     size_t error_size)
{
    const char *path = ops_state_path(self->state, relative);
    int rc = 0;
    if (is_dir)
        rc = mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -1;
    else {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        rc = fd >= 0 ? close(fd) : -1;
    }
    if (rc == 0 && self->switch_user)
        rc = chown(path, self->uid, self->gid);
    if (rc != 0)
        snprintf(error, error_size, "cannot prepare %s: %s", path, strerror(errno));
    return rc;
}

//  Runs a PostgreSQL program as the server's user, output appended to
//  log/<log_name>. Returns its exit status, or -1 when it could not run.
static int s_run(ops_pg_t *self, const char *const argv[], const char *log_name)
{
    char log_path[PATH_MAX + 64];
    snprintf(log_path, sizeof log_path, "%s/log/%s", ops_state_dir(self->state), log_name);
    char program[PATH_MAX + 64];
    snprintf(program, sizeof program, "%s/%s", self->bindir, argv[0]);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int null = open("/dev/null", O_RDONLY);
        if (log < 0 || null < 0)
            _exit(126);
        dup2(null, STDIN_FILENO);
        dup2(log, STDOUT_FILENO);
        dup2(log, STDERR_FILENO);
        //  initdb and pg_ctl resolve the working directory; the postgres
        //  user may not be allowed into ours.
        if (chdir(ops_state_dir(self->state)) != 0)
            _exit(126);
        if (self->switch_user &&
            (setgroups(0, NULL) != 0 || setgid(self->gid) != 0 || setuid(self->uid) != 0)) {
            dprintf(STDERR_FILENO, "cannot switch to the postgres user: %s\n", strerror(errno));
            _exit(126);
        }
        execv(program, (char *const *)argv);
        dprintf(STDERR_FILENO, "cannot run %s: %s\n", program, strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int ops_pg_init(ops_pg_t *self, char *error, size_t error_size)
{
    if (self->switch_user) {
        //  The postgres user must reach DIR; a folder under /root would not do.
        char probe[PATH_MAX + 64];
        snprintf(probe, sizeof probe, "%s", ops_state_dir(self->state));
        struct stat info;
        for (char *slash = probe + strlen(probe); slash > probe;) {
            if (stat(probe, &info) != 0 || !(info.st_mode & S_IXOTH)) {
                snprintf(error, error_size,
                         "%s is not searchable by the postgres user; choose a state folder "
                         "whose parents are mode 755 (e.g. under /var or /tmp)",
                         probe);
                return -1;
            }
            slash = strrchr(probe, '/');
            if (!slash)
                break;
            *slash = '\0';
        }
    }
    if (s_prepare(self, "pg", true, error, error_size) != 0 ||
        s_prepare(self, "run/pg", true, error, error_size) != 0 ||
        s_prepare(self, "log/postgres.log", false, error, error_size) != 0)
        return -1;
    char data[PATH_MAX];
    snprintf(data, sizeof data, "%s/pg", ops_state_dir(self->state));
    const char *argv[] = {"initdb", "-D",    data, "-U",   "tollgate",
                          "-A",     "trust", "-E", "UTF8", "--locale=C.UTF-8",
                          NULL};
    int status = s_run(self, argv, "initdb.log");
    if (status != 0) {
        snprintf(error, error_size, "initdb failed (status %d); see %s/log/initdb.log", status,
                 ops_state_dir(self->state));
        return -1;
    }
    //  Appended, so the last setting wins over initdb's defaults. Only the
    //  socket is open; a second cluster on the same host never clashes on
    //  a port because each has its own socket folder.
    char settings[PATH_MAX + 512];
    snprintf(settings, sizeof settings,
             "\n# Added by `tollgate up`: a private server reachable only through its socket.\n"
             "listen_addresses = ''\n"
             "unix_socket_directories = '%s'\n"
             "unix_socket_permissions = 0700\n"
             "port = 5432\n"
             "max_connections = 200\n"
             "logging_collector = off\n",
             ops_state_pg_socket_dir(self->state));
    FILE *conf = fopen(ops_state_path(self->state, "pg/postgresql.conf"), "a");
    if (!conf || fputs(settings, conf) < 0 || fclose(conf) != 0) {
        snprintf(error, error_size, "cannot write %s: %s", ops_state_path(self->state, "pg"),
                 strerror(errno));
        return -1;
    }
    return 0;
}

pid_t ops_pg_pid(ops_pg_t *self)
{
    FILE *file = fopen(ops_state_path(self->state, "pg/postmaster.pid"), "r");
    if (!file)
        return 0;
    long pid = 0;
    if (fscanf(file, "%ld", &pid) != 1)
        pid = 0;
    fclose(file);
    //  A pid file left by a killed server names a dead or reused pid.
    if (pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH))
        return 0;
    return (pid_t)pid;
}

int ops_pg_start(ops_pg_t *self, char *error, size_t error_size)
{
    if (ops_pg_pid(self) > 0)
        return 0;
    //  run/ may have been cleaned out; the socket folder has to exist.
    if (s_prepare(self, "run/pg", true, error, error_size) != 0 ||
        s_prepare(self, "log/postgres.log", false, error, error_size) != 0)
        return -1;
    char data[PATH_MAX], log[PATH_MAX];
    snprintf(data, sizeof data, "%s/pg", ops_state_dir(self->state));
    snprintf(log, sizeof log, "%s/log/postgres.log", ops_state_dir(self->state));
    const char *argv[] = {"pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-s", "start", NULL};
    int status = s_run(self, argv, "pg_ctl.log");
    if (status != 0) {
        snprintf(error, error_size, "PostgreSQL did not start (pg_ctl status %d); see %s", status,
                 log);
        return -1;
    }
    return 0;
}

int ops_pg_stop(ops_pg_t *self, char *error, size_t error_size)
{
    if (!ops_pg_initialized(self) || ops_pg_pid(self) == 0)
        return 0;
    char data[PATH_MAX];
    snprintf(data, sizeof data, "%s/pg", ops_state_dir(self->state));
    const char *argv[] = {"pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "60", "-s", "stop", NULL};
    int status = s_run(self, argv, "pg_ctl.log");
    if (status != 0 && ops_pg_pid(self) > 0) {
        snprintf(error, error_size, "PostgreSQL did not stop (pg_ctl status %d); see %s/log",
                 status, ops_state_dir(self->state));
        return -1;
    }
    return 0;
}

int ops_pg_create_database(ops_pg_t *self, char *error, size_t error_size)
{
    char url[PATH_MAX + 128];
    snprintf(url, sizeof url, "host=%s port=5432 dbname=postgres user=tollgate",
             ops_state_pg_socket_dir(self->state));
    PGconn *db = PQconnectdb(url);
    int rc = -1;
    if (PQstatus(db) != CONNECTION_OK) {
        snprintf(error, error_size, "cannot connect to the private PostgreSQL: %s",
                 PQerrorMessage(db));
        goto done;
    }
    PGresult *result = PQexec(db, "SELECT 1 FROM pg_database WHERE datname = 'tollgate'");
    bool exists = PQresultStatus(result) == PGRES_TUPLES_OK && PQntuples(result) == 1;
    PQclear(result);
    if (exists) {
        rc = 0;
        goto done;
    }
    result = PQexec(db, "CREATE DATABASE tollgate");
    if (PQresultStatus(result) == PGRES_COMMAND_OK)
        rc = 0;
    else
        snprintf(error, error_size, "cannot create database tollgate: %s", PQerrorMessage(db));
    PQclear(result);
done:
    PQfinish(db);
    //  libpq messages end in a newline; our callers print one line.
    if (rc != 0) {
        size_t length = strlen(error);
        while (length && error[length - 1] == '\n')
            error[--length] = '\0';
    }
    return rc;
}
