#include "ops_demo.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S_MODEL "demo-model"
#define S_WAIT_MS 10000

static void s_sleep_ms(long ms)
{
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

//  Reads a small file into buffer (trailing newline removed). Returns 0 or -1.
static int s_read_small(const char *path, char *buffer, size_t size)
{
    FILE *file = fopen(path, "r");
    if (!file)
        return -1;
    size_t got = fread(buffer, 1, size - 1, file);
    fclose(file);
    buffer[got] = '\0';
    while (got && (buffer[got - 1] == '\n' || buffer[got - 1] == ' '))
        buffer[--got] = '\0';
    return got ? 0 : -1;
}

static pid_t s_running_mock(const char *dir)
{
    char path[PATH_MAX], text[32];
    snprintf(path, sizeof path, "%s/run/mock.pid", dir);
    if (s_read_small(path, text, sizeof text) != 0)
        return 0;
    pid_t pid = (pid_t)atol(text);
    return pid > 0 && kill(pid, 0) == 0 ? pid : 0;
}

//  Starts the mock as a daemon on `port` (0 = any) and returns the port it
//  took, read from the first line of its log.
static int s_start_mock(const char *dir, const char *bindir, int port, char *error,
                        size_t error_size)
{
    char program[PATH_MAX], log_path[PATH_MAX], port_text[16];
    snprintf(program, sizeof program, "%s/tollgate-mock-upstream", bindir);
    snprintf(log_path, sizeof log_path, "%s/log/mock.log", dir);
    snprintf(port_text, sizeof port_text, "%d", port);
    unlink(log_path);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(error, error_size, "cannot fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        setsid();
        int log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int null = open("/dev/null", O_RDONLY);
        if (log < 0 || null < 0)
            _exit(127);
        dup2(null, 0);
        dup2(log, 1);
        dup2(log, 2);
        execl(program, program, "--port", port_text, "--models", S_MODEL ",gpt-4o-mini", NULL);
        _exit(127);
    }
    char pid_path[PATH_MAX], pid_text[32];
    snprintf(pid_path, sizeof pid_path, "%s/run/mock.pid", dir);
    FILE *file = fopen(pid_path, "w");
    if (file) {
        snprintf(pid_text, sizeof pid_text, "%d\n", (int)pid);
        fputs(pid_text, file);
        fclose(file);
    }
    for (int waited = 0; waited < 5000; waited += 20) {
        char line[256];
        if (s_read_small(log_path, line, sizeof line) == 0 && strncmp(line, "port=", 5) == 0)
            return atoi(line + 5);
        if (waitpid(pid, NULL, WNOHANG) == pid)
            break;
        s_sleep_ms(20);
    }
    snprintf(error, error_size, "the mock upstream did not start; see %s", log_path);
    return -1;
}

//  Runs `tollgate ARGS` against this cluster; the last stdout line goes to
//  `last` when given. Returns the exit code, or -1 when it could not run.
static int s_tollgate(const char *tollgate, const char *dir, char *last, size_t last_size,
                      char *const args[])
{
    int out[2];
    if (pipe(out) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        char *argv[16] = {(char *)tollgate};
        int count = 1;
        for (int i = 0; args[i] && count < 14; i++)
            argv[count++] = args[i];
        argv[count++] = "--dir";
        argv[count++] = (char *)dir;
        argv[count] = NULL;
        execv(tollgate, argv);
        _exit(127);
    }
    close(out[1]);
    char buffer[4096];
    size_t used = 0;
    ssize_t got;
    while ((got = read(out[0], buffer + used, sizeof buffer - 1 - used)) > 0)
        used += (size_t)got;
    close(out[0]);
    buffer[used] = '\0';
    int status = 0;
    waitpid(pid, &status, 0);
    if (last) {
        while (used && buffer[used - 1] == '\n')
            buffer[--used] = '\0';
        char *line = strrchr(buffer, '\n');
        snprintf(last, last_size, "%s", line ? line + 1 : buffer);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

//  Registers provider, key, model, account and client key. A second run
//  finds them there (409s) and keeps going; only the client key is new.
static int s_register(const char *tollgate, const char *dir, int port, char *key, size_t key_size,
                      char *error, size_t error_size)
{
    char base_url[64];
    snprintf(base_url, sizeof base_url, "http://127.0.0.1:%d", port);
    char *provider[] = {"provider", "add",        "demo",   "--protocol",
                        "openai",   "--base-url", base_url, NULL};
    char *provider_key[] = {"provider", "key", "add", "demo", "--secret", "demo-secret", NULL};
    char *model[] = {"model",      "add", S_MODEL,       "--route", "demo:" S_MODEL,
                     "--price-in", "1",   "--price-out", "2",       NULL};
    char *account[] = {"account", "add", "demo", "--balance", "100", NULL};
    char *create[] = {"key", "create", "demo", "--name", "demo", NULL};
    bool fresh = s_tollgate(tollgate, dir, NULL, 0, provider) == 0;
    if (fresh && s_tollgate(tollgate, dir, NULL, 0, provider_key) != 0) {
        snprintf(error, error_size, "could not add the demo provider key");
        return -1;
    }
    s_tollgate(tollgate, dir, NULL, 0, model);
    s_tollgate(tollgate, dir, NULL, 0, account);
    //  The key is the last line, with whatever prefix settings 'client_keys'
    //  gives (tg- unless set): 48 hex digits follow it.
    if (s_tollgate(tollgate, dir, key, key_size, create) != 0 || strlen(key) <= 48 ||
        strspn(key + strlen(key) - 48, "0123456789abcdef") != 48) {
        snprintf(error, error_size, "could not create the demo key");
        return -1;
    }
    return 0;
}

static size_t s_discard(char *data, size_t size, size_t count, void *arg)
{
    return size * count;
}

//  Waits until the gateway knows the key (the catalog reloads within ms).
//  Over https when the gateway has a certificate (`ca`, trusted as is).
static bool s_key_works(const char *gateway, const char *ca, const char *key)
{
    char url[300], header[300];
    snprintf(url, sizeof url, "%s://%s/v1/models", *ca ? "https" : "http", gateway);
    snprintf(header, sizeof header, "Authorization: Bearer %s", key);
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = curl_slist_append(NULL, header);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    if (*ca)
        curl_easy_setopt(curl, CURLOPT_CAINFO, ca);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, s_discard);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 2000L);
    long status = 0;
    for (int waited = 0; waited < S_WAIT_MS && status != 200; waited += 50) {
        if (curl_easy_perform(curl) == CURLE_OK)
            curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        if (status != 200)
            s_sleep_ms(50);
    }
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return status == 200;
}

int ops_demo_start(const char *dir, const char *bindir, const char *tollgate,
                   proto_config_t *config, char *error, size_t error_size)
{
    char port_path[PATH_MAX], key_path[PATH_MAX], text[128];
    snprintf(port_path, sizeof port_path, "%s/run/mock.port", dir);
    snprintf(key_path, sizeof key_path, "%s/demo_key", dir);
    int port = s_read_small(port_path, text, sizeof text) == 0 ? atoi(text) : 0;
    if (!s_running_mock(dir)) {
        //  Same port as before when there was one: the provider row names it.
        port = s_start_mock(dir, bindir, port, error, error_size);
        if (port <= 0)
            return -1;
        FILE *file = fopen(port_path, "w");
        if (file) {
            fprintf(file, "%d\n", port);
            fclose(file);
        }
    }
    char key[128] = "";
    if (s_read_small(key_path, key, sizeof key) != 0) {
        if (s_register(tollgate, dir, port, key, sizeof key, error, error_size) != 0)
            return -1;
        int fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dprintf(fd, "%s\n", key);
            close(fd);
        }
    }
    const char *gateway = proto_config_str(config, "ingress.listen");
    const char *ca = proto_config_str(config, "ingress.tls_cert");
    if (!s_key_works(gateway, ca, key)) {
        snprintf(error, error_size, "the gateway did not accept the demo key in time");
        return -1;
    }
    printf("demo:    mock upstream on http://127.0.0.1:%d, model %s, key %s\n", port, S_MODEL, key);
    char curl_ca[4200] = "";
    if (*ca)
        snprintf(curl_ca, sizeof curl_ca, "--cacert '%s' ", ca);
    printf("try:     curl -s %s%s://%s/v1/chat/completions -H 'Authorization: Bearer %s' "
           "-H 'Content-Type: application/json' "
           "-d '{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'\n",
           curl_ca, *ca ? "https" : "http", gateway, key, S_MODEL);
    fflush(stdout);
    return 0;
}

int ops_demo_stop(const char *dir)
{
    pid_t pid = s_running_mock(dir);
    if (pid) {
        kill(pid, SIGTERM);
        for (int waited = 0; waited < 2000 && kill(pid, 0) == 0; waited += 20)
            s_sleep_ms(20);
        if (kill(pid, 0) == 0)
            kill(pid, SIGKILL);
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/run/mock.pid", dir);
    unlink(path);
    return 0;
}
