#include "ops_state.h"

#include "proto_check.h"
#include "proto_socket.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *const ops_programs[] = {"ledger",   "billing", "health", "router",
                                    "dispatch", "ingress", "admin",  NULL};

const char *const ops_cert_programs[] = {"ledger",  "billing", "health", "router",   "dispatch",
                                         "ingress", "admin",   "probe",  "tollgate", NULL};

//  Every ZeroMQ endpoint of a cluster: config key and socket file name.
//  Each program's control socket is added from ops_programs.
static const char *const s_endpoints[][2] = {
    {"billing.bind", "billing"},
    {"router.bind", "router"},
    {"router.table.bind", "router-table"},
    {"dispatch.bind", "dispatch"},
    {"dispatch.events.bind", "dispatch-events"},
    {"health.events.bind", "health-events"},
    {"ledger.bind", "ledger"},
};
#define S_ENDPOINT_COUNT (sizeof s_endpoints / sizeof s_endpoints[0])

struct _ops_state_t {
    char dir[PATH_MAX];                //  absolute folder path
    char path[PATH_MAX + 64];          //  scratch for ops_state_path
    char pg_socket_dir[PATH_MAX];      //  DIR/run/pg
    char database_url[PATH_MAX + 128]; //  conninfo for the private server
    int supervisor_lock;               //  fd holding the supervisor lock, or -1
};

//  Makes a path absolute without needing it to exist (realpath would).
static int s_absolute(const char *dir, char *out, size_t out_size)
{
    char resolved[PATH_MAX];
    if (realpath(dir, resolved)) {
        snprintf(out, out_size, "%s", resolved);
        return 0;
    }
    if (dir[0] == '/') {
        snprintf(out, out_size, "%s", dir);
        return 0;
    }
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return -1;
    const char *rest = strncmp(dir, "./", 2) == 0 ? dir + 2 : dir;
    int length = snprintf(out, out_size, "%s/%s", cwd, rest);
    return length > 0 && (size_t)length < out_size ? 0 : -1;
}

ops_state_t *ops_state_new(const char *dir, char *error, size_t error_size)
{
    ops_state_t *self = calloc(1, sizeof *self);
    assert(self);
    self->supervisor_lock = -1;
    if (s_absolute(dir, self->dir, sizeof self->dir) != 0) {
        snprintf(error, error_size, "cannot resolve folder %s: %s", dir, strerror(errno));
        free(self);
        return NULL;
    }
    size_t length = strlen(self->dir);
    while (length > 1 && self->dir[length - 1] == '/')
        self->dir[--length] = '\0';
    //  The path goes into conninfo, ZeroMQ endpoint lists and a key = value
    //  file; refusing the few characters that need quoting keeps all three
    //  simple and correct.
    for (const char *c = self->dir; *c; c++)
        if (*c <= ' ' || *c == '\'' || *c == '"' || *c == '\\' || *c == ',' || *c == '#') {
            snprintf(error, error_size,
                     "state folder %s: use a path without spaces, quotes, commas or '#'",
                     self->dir);
            free(self);
            return NULL;
        }
    //  The longest socket we create: run/dispatch-events.sock, and
    //  PostgreSQL's run/pg/.s.PGSQL.5432.lock.
    if (length + strlen("/run/dispatch-events.sock") > OPS_SOCKET_PATH_MAX ||
        length + strlen("/run/pg/.s.PGSQL.5432.lock") > OPS_SOCKET_PATH_MAX) {
        snprintf(error, error_size,
                 "state folder %s is too long: Unix socket paths inside it would pass %d bytes",
                 self->dir, OPS_SOCKET_PATH_MAX);
        free(self);
        return NULL;
    }
    snprintf(self->pg_socket_dir, sizeof self->pg_socket_dir, "%s/run/pg", self->dir);
    snprintf(self->database_url, sizeof self->database_url,
             "host=%s port=5432 dbname=tollgate user=tollgate", self->pg_socket_dir);
    return self;
}

void ops_state_destroy(ops_state_t **self_p)
{
    assert(self_p);
    ops_state_t *self = *self_p;
    if (!self)
        return;
    if (self->supervisor_lock >= 0)
        close(self->supervisor_lock);
    free(self);
    *self_p = NULL;
}

const char *ops_state_dir(ops_state_t *self)
{
    return self->dir;
}

const char *ops_state_path(ops_state_t *self, const char *relative)
{
    snprintf(self->path, sizeof self->path, "%s/%s", self->dir, relative);
    return self->path;
}

const char *ops_state_pg_socket_dir(ops_state_t *self)
{
    return self->pg_socket_dir;
}

const char *ops_state_database_url(ops_state_t *self)
{
    return self->database_url;
}

bool ops_state_exists(ops_state_t *self)
{
    return access(ops_state_path(self, "tollgate.conf"), F_OK) == 0;
}

static int s_mkdir(const char *path, mode_t mode, char *error, size_t error_size)
{
    if (mkdir(path, mode) == 0 || errno == EEXIST)
        return 0;
    snprintf(error, error_size, "cannot create %s: %s", path, strerror(errno));
    return -1;
}

int ops_state_create(ops_state_t *self, char *error, size_t error_size)
{
    //  Create missing parents of DIR too, like mkdir -p.
    char partial[PATH_MAX];
    snprintf(partial, sizeof partial, "%s", self->dir);
    for (char *slash = strchr(partial + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (s_mkdir(partial, 0755, error, error_size) != 0)
            return -1;
        *slash = '/';
    }
    //  0755, not 0700: PostgreSQL runs as another user when we are root and
    //  must reach pg/, log/postgres.log and run/pg/ through this folder.
    if (s_mkdir(self->dir, 0755, error, error_size) != 0 ||
        s_mkdir(ops_state_path(self, "log"), 0755, error, error_size) != 0 ||
        s_mkdir(ops_state_path(self, "run"), 0755, error, error_size) != 0 ||
        s_mkdir(ops_state_path(self, "data"), 0700, error, error_size) != 0)
        return -1;
    return 0;
}

void ops_state_random_hex(char *out, size_t out_size, size_t bytes)
{
    assert(out_size > bytes * 2);
    int rc = sodium_init();
    assert(rc >= 0); //  only fails when the system has no entropy source
    (void)rc;
    unsigned char raw[64];
    assert(bytes <= sizeof raw);
    randombytes_buf(raw, bytes);
    sodium_bin2hex(out, out_size, raw, bytes);
    sodium_memzero(raw, sizeof raw);
}

int ops_state_write_file(const char *path, const char *text, mode_t mode)
{
    char temporary[PATH_MAX + 16];
    snprintf(temporary, sizeof temporary, "%s.tmp%d", path, (int)getpid());
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    size_t length = strlen(text);
    bool ok = write(fd, text, length) == (ssize_t)length;
    //  open()'s mode is filtered by the umask; secrets must be 0600 exactly.
    ok = ok && fchmod(fd, mode) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(temporary, path) != 0) {
        unlink(temporary);
        return -1;
    }
    return 0;
}

//  A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick),
//  or 0. For the metrics listeners: a port taken later costs only the
//  metrics, since a program that cannot bind it logs that and runs on.
static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t size = sizeof address;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&address, sizeof address) == 0 &&
        getsockname(fd, (struct sockaddr *)&address, &size) == 0)
        port = ntohs(address.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

int ops_state_write_config(ops_state_t *self, const char *host, int port, int admin_port,
                           char *error, size_t error_size)
{
    if (ops_state_exists(self)) {
        snprintf(error, error_size, "%s already exists", ops_state_path(self, "tollgate.conf"));
        return -1;
    }
    char secret_key[129], token[65];
    ops_state_random_hex(secret_key, sizeof secret_key, 32);
    ops_state_random_hex(token, sizeof token, 32);

    char curve_dir[PATH_MAX];
    snprintf(curve_dir, sizeof curve_dir, "%s/curve", self->dir);
    int programs = 0;
    while (ops_cert_programs[programs])
        programs++;
    if (proto_socket_make_certs(curve_dir, ops_cert_programs, programs, false, error, error_size) <
        0)
        return -1;

    char *text = NULL;
    size_t text_size = 0;
    FILE *out = open_memstream(&text, &text_size);
    assert(out);
    time_t now = time(NULL);
    char stamp[64];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    fprintf(out,
            "# Tollgate local cluster, written by `tollgate up` at %s.\n"
            "# Kept on later runs: edit it, then `tollgate down && tollgate up`.\n"
            "# Every key: tollgate-ingress --print-config\n\n",
            stamp);
    fprintf(out, "log_level = info\n");
    fprintf(out, "state_dir = %s/data\n", self->dir);
    fprintf(out, "database_url = %s\n", self->database_url);
    fprintf(out, "secret_key = %s\n\n", secret_key);
    fprintf(out, "# Internal traffic: ZeroMQ CURVE with the certificates in curve.dir\n"
                 "# (tollgate cert list); security = none would make it plain.\n");
    fprintf(out, "security = curve\n");
    fprintf(out, "curve.dir = %s\n\n", curve_dir);
    fprintf(out, "ingress.listen = %s:%d\n", host, port);
    fprintf(out, "admin.listen = %s:%d\n", host, admin_port);
    fprintf(out, "admin.token = tga_%s\n\n", token);
    for (size_t i = 0; i < S_ENDPOINT_COUNT; i++)
        fprintf(out, "%s = ipc://%s/run/%s.sock\n", s_endpoints[i][0], self->dir,
                s_endpoints[i][1]);
    for (int i = 0; ops_programs[i]; i++)
        fprintf(out, "%s.control_bind = ipc://%s/run/%s-control.sock\n", ops_programs[i], self->dir,
                ops_programs[i]);
    fprintf(out, "\n# Prometheus /metrics of each program (tollgate top reads them)\n");
    for (int i = 0; ops_programs[i]; i++) {
        int metrics_port = s_free_port();
        if (metrics_port)
            fprintf(out, "%s.metrics_listen = 127.0.0.1:%d\n", ops_programs[i], metrics_port);
    }
    fclose(out);
    sodium_memzero(secret_key, sizeof secret_key);

    char token_line[80];
    snprintf(token_line, sizeof token_line, "tga_%s\n", token);
    sodium_memzero(token, sizeof token);
    //  The token file first: a config without it would be kept forever,
    //  while a stray token file is simply rewritten next time.
    int rc = 0;
    if (ops_state_write_file(ops_state_path(self, "admin_token"), token_line, 0600) != 0 ||
        ops_state_write_file(ops_state_path(self, "tollgate.conf"), text, 0600) != 0) {
        snprintf(error, error_size, "cannot write %s: %s", self->path, strerror(errno));
        rc = -1;
    }
    sodium_memzero(token_line, sizeof token_line);
    sodium_memzero(text, text_size);
    free(text);
    return rc;
}

int ops_state_set_config(ops_state_t *self, const char *key, const char *value, char *error,
                         size_t error_size)
{
    if (strpbrk(value, "\r\n")) {
        snprintf(error, error_size, "%s: a value cannot hold a line break", key);
        return -1;
    }
    const char *path = ops_state_path(self, "tollgate.conf");
    FILE *in = fopen(path, "r");
    if (!in) {
        snprintf(error, error_size, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char *text = NULL;
    size_t text_size = 0;
    FILE *out = open_memstream(&text, &text_size);
    assert(out);
    char line[8192];
    size_t key_length = strlen(key);
    while (fgets(line, sizeof line, in)) {
        const char *start = line + strspn(line, " \t");
        bool same =
            strncmp(start, key, key_length) == 0 &&
            (start[key_length] == ' ' || start[key_length] == '\t' || start[key_length] == '=');
        if (!same)
            fputs(line, out);
    }
    fclose(in);
    if (text_size && text[text_size - 1] != '\n')
        fputc('\n', out);
    fprintf(out, "%s = %s\n", key, value);
    fclose(out);
    int rc = ops_state_write_file(path, text, 0600);
    if (rc != 0)
        snprintf(error, error_size, "cannot write %s: %s", path, strerror(errno));
    sodium_memzero(text, text_size);
    free(text);
    return rc;
}

proto_config_t *ops_state_load_config(ops_state_t *self, char *error, size_t error_size)
{
    proto_config_t *config = proto_config_new();
    if (proto_config_load_file(config, ops_state_path(self, "tollgate.conf"), error, error_size) !=
        0)
        proto_config_destroy(&config);
    return config;
}

//  Opens a lock file under run/, close-on-exec. Returns the fd or -1.
static int s_open_lock(ops_state_t *self, const char *name)
{
    return open(ops_state_path(self, name), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
}

pid_t ops_state_supervisor_pid(ops_state_t *self)
{
    //  The lock, not the pid file, says whether a supervisor lives: a pid
    //  file outlives a SIGKILL and its number may be reused.
    int fd = open(ops_state_path(self, "run/supervisor.lock"), O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return 0;
    pid_t pid = 0;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
        FILE *file = fopen(ops_state_path(self, "run/supervisor.pid"), "r");
        long number = 0;
        if (file && fscanf(file, "%ld", &number) == 1 && number > 0)
            pid = (pid_t)number;
        if (file)
            fclose(file);
        //  Locked but no pid yet: the supervisor is starting; say "running".
        if (pid == 0)
            pid = -1;
    }
    close(fd);
    return pid;
}

int ops_state_lock_supervisor(ops_state_t *self, char *error, size_t error_size)
{
    assert(self->supervisor_lock < 0);
    int fd = s_open_lock(self, "run/supervisor.lock");
    if (fd < 0) {
        snprintf(error, error_size, "cannot open %s: %s", self->path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(error, error_size, "another supervisor is running in %s", self->dir);
        close(fd);
        return -1;
    }
    self->supervisor_lock = fd;
    char text[32];
    snprintf(text, sizeof text, "%d\n", (int)getpid());
    if (ops_state_write_file(ops_state_path(self, "run/supervisor.pid"), text, 0644) != 0) {
        snprintf(error, error_size, "cannot write %s: %s", self->path, strerror(errno));
        return -1;
    }
    return 0;
}

int ops_state_lock_operations(ops_state_t *self, char *error, size_t error_size)
{
    int fd = s_open_lock(self, "run/operations.lock");
    if (fd < 0 || flock(fd, LOCK_EX) != 0) {
        snprintf(error, error_size, "cannot lock %s: %s", self->path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

void ops_state_print_tail(const char *path, int lines, FILE *out)
{
    FILE *file = fopen(path, "r");
    if (!file)
        return;
    //  Logs can be large: read only the last 64 KiB.
    if (fseek(file, 0, SEEK_END) == 0 && ftell(file) > 65536)
        fseek(file, -65536, SEEK_END);
    else
        rewind(file);
    char *text = malloc(65537);
    assert(text);
    size_t size = fread(text, 1, 65536, file);
    text[size] = '\0';
    fclose(file);
    while (size && text[size - 1] == '\n')
        text[--size] = '\0';
    char *start = text + size;
    int seen = 0;
    while (start > text && seen < lines) {
        start--;
        if (*start == '\n' && ++seen == lines) {
            start++;
            break;
        }
    }
    if (*start)
        for (char *line = strtok(start, "\n"); line; line = strtok(NULL, "\n"))
            fprintf(out, "  %s\n", line);
    free(text);
}

void ops_state_test(bool verbose)
{
    if (verbose)
        printf(" * ops_state: ");
    char error[512];
    char base[] = "/tmp/ops_state_testXXXXXX";
    PROTO_CHECK(mkdtemp(base));
    char dir[256];
    snprintf(dir, sizeof dir, "%s/a/b", base);
    ops_state_t *state = ops_state_new(dir, error, sizeof error);
    PROTO_CHECK(state);
    PROTO_CHECK(strcmp(ops_state_dir(state), dir) == 0);
    PROTO_CHECK(!ops_state_exists(state));
    PROTO_CHECK(ops_state_create(state, error, sizeof error) == 0);
    PROTO_CHECK(ops_state_supervisor_pid(state) == 0);
    PROTO_CHECK(ops_state_write_config(state, "127.0.0.1", 18080, 18081, error, sizeof error) == 0);
    PROTO_CHECK(ops_state_exists(state));
    PROTO_CHECK(ops_state_write_config(state, "127.0.0.1", 1, 2, error, sizeof error) == -1);

    struct stat info;
    PROTO_CHECK(stat(ops_state_path(state, "admin_token"), &info) == 0);
    PROTO_CHECK((info.st_mode & 0777) == 0600);
    proto_config_t *config = ops_state_load_config(state, error, sizeof error);
    PROTO_CHECK(config);
    PROTO_CHECK(strcmp(proto_config_str(config, "ingress.listen"), "127.0.0.1:18080") == 0);
    PROTO_CHECK(strlen(proto_config_str(config, "secret_key")) == 64);
    const char *token = proto_config_str(config, "admin.token");
    PROTO_CHECK(strcmp(proto_config_str(config, "admin.listen"), "127.0.0.1:18081") == 0);
    PROTO_CHECK(strncmp(token, "tga_", 4) == 0 && strlen(token) == 68);
    PROTO_CHECK(
        strstr(proto_config_str(config, "ledger.control_bind"), "/run/ledger-control.sock"));
    PROTO_CHECK(strstr(proto_config_str(config, "database_url"), "/run/pg"));
    proto_config_destroy(&config);

    PROTO_CHECK(ops_state_lock_supervisor(state, error, sizeof error) == 0);
    PROTO_CHECK(ops_state_supervisor_pid(state) == getpid());
    ops_state_t *other = ops_state_new(dir, error, sizeof error);
    PROTO_CHECK(ops_state_lock_supervisor(other, error, sizeof error) == -1);
    ops_state_destroy(&other);
    ops_state_destroy(&state);
    PROTO_CHECK(state == NULL);

    PROTO_CHECK(!ops_state_new("/tmp/has space", error, sizeof error));
    char long_dir[200];
    memset(long_dir, 'x', sizeof long_dir - 1);
    long_dir[0] = '/';
    long_dir[sizeof long_dir - 1] = '\0';
    PROTO_CHECK(!ops_state_new(long_dir, error, sizeof error));
    PROTO_CHECK(strstr(error, "too long"));

    char path[300];
    snprintf(path, sizeof path, "%s/tail.txt", base);
    FILE *file = fopen(path, "w");
    fputs("one\ntwo\nthree\n\n", file);
    fclose(file);
    char *tail = NULL;
    size_t tail_size = 0;
    FILE *memory = open_memstream(&tail, &tail_size);
    ops_state_print_tail(path, 2, memory);
    ops_state_print_tail("/nonexistent/file", 2, memory);
    fclose(memory);
    PROTO_CHECK(strcmp(tail, "  two\n  three\n") == 0);
    free(tail);

    char command[512];
    snprintf(command, sizeof command, "rm -rf '%s'", base);
    PROTO_CHECK(system(command) == 0);
    if (verbose)
        printf("OK\n");
}
