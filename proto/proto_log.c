#include "proto_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

//  Process-wide logging settings: set once at start-up by the program's main.
static const char *s_program = "tollgate";
static proto_log_level_t s_level = PROTO_LOG_INFO;

static const char *s_level_names[] = {"debug", "info", "warn", "error"};

void proto_log_init(const char *program, proto_log_level_t level)
{
    s_program = program ? program : "tollgate";
    s_level = level;
}

void proto_log_set_level(proto_log_level_t level)
{
    s_level = level;
}

proto_log_level_t proto_log_level(void)
{
    return s_level;
}

int proto_log_level_parse(const char *name, proto_log_level_t *level)
{
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, s_level_names[i]) == 0) {
            *level = (proto_log_level_t)i;
            return 0;
        }
    return -1;
}

const char *proto_log_level_name(proto_log_level_t level)
{
    return level <= PROTO_LOG_ERROR ? s_level_names[level] : "?";
}

bool proto_log_enabled(proto_log_level_t level)
{
    return level >= s_level;
}

size_t proto_log_json_escape(char *out, size_t size, const char *text)
{
    size_t n = 0;
    if (size == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)text; p && *p; p++) {
        char esc[8];
        size_t len;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            len = 2;
        } else if (*p == '\n') {
            memcpy(esc, "\\n", 2);
            len = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            len = (size_t)snprintf(esc, sizeof esc, "\\u%04x", *p);
        } else {
            esc[0] = (char)*p;
            len = 1;
        }
        if (n + len >= size)
            break;
        memcpy(out + n, esc, len);
        n += len;
    }
    out[n] = '\0';
    return n;
}

void proto_log_write(proto_log_level_t level, const char *request_id, const char *format, ...)
{
    char message[4096];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);

    char escaped[8192];
    proto_log_json_escape(escaped, sizeof escaped, message);
    char rid[160] = "";
    if (request_id && *request_id) {
        char rid_escaped[128];
        proto_log_json_escape(rid_escaped, sizeof rid_escaped, request_id);
        snprintf(rid, sizeof rid, ",\"rid\":\"%s\"", rid_escaped);
    }

    struct timeval now;
    gettimeofday(&now, NULL);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);

    //  One fprintf per line keeps lines whole when several processes share a file.
    fprintf(stderr, "{\"ts\":\"%s.%03dZ\",\"level\":\"%s\",\"prog\":\"%s\"%s,\"msg\":\"%s\"}\n",
            stamp, (int)(now.tv_usec / 1000), proto_log_level_name(level), s_program, rid, escaped);
    fflush(stderr);
}
