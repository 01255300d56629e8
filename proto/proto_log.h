/*  proto_log: JSON-lines logging shared by every Tollgate program.

    One line per event on stderr:
    {"ts":"2026-11-21T23:30:17.123Z","level":"info","prog":"ingress","rid":"…","msg":"…"}
    The level check happens in the macro, so arguments below the configured
    level are never evaluated (Redis' serverLog trick). The level is process
    configuration, set at start-up and changed at run time through settings
    'log_level' (proto_service follows it; docs/observability.md).
*/
#ifndef PROTO_LOG_H_INCLUDED
#define PROTO_LOG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    PROTO_LOG_DEBUG = 0,
    PROTO_LOG_INFO = 1,
    PROTO_LOG_WARN = 2,
    PROTO_LOG_ERROR = 3,
} proto_log_level_t;

//  Sets the program name written on every line and the minimum level.
void proto_log_init(const char *program, proto_log_level_t level);

//  Changes the minimum level at run time.
void proto_log_set_level(proto_log_level_t level);

//  The minimum level in force.
proto_log_level_t proto_log_level(void);

//  Parses "debug", "info", "warn", "error"; returns -1 when unknown.
int proto_log_level_parse(const char *name, proto_log_level_t *level);

//  Name of a level ("info"). Returns a static string.
const char *proto_log_level_name(proto_log_level_t level);

//  True when lines of this level are written.
bool proto_log_enabled(proto_log_level_t level);

//  Writes one line; request_id may be NULL. Use the macros below instead.
void proto_log_write(proto_log_level_t level, const char *request_id, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

#define proto_log(level, rid, ...)                                                                 \
    do {                                                                                           \
        if (proto_log_enabled(level))                                                              \
            proto_log_write(level, rid, __VA_ARGS__);                                              \
    } while (0)

#define log_debug(rid, ...) proto_log(PROTO_LOG_DEBUG, rid, __VA_ARGS__)
#define log_info(rid, ...) proto_log(PROTO_LOG_INFO, rid, __VA_ARGS__)
#define log_warn(rid, ...) proto_log(PROTO_LOG_WARN, rid, __VA_ARGS__)
#define log_error(rid, ...) proto_log(PROTO_LOG_ERROR, rid, __VA_ARGS__)

//  Appends `text` to `out` (capacity `size`) as the inside of a JSON string,
//  escaping quotes, backslashes and control bytes. Returns bytes written.
//  Truncates rather than overflow; the output is always NUL-terminated.
size_t proto_log_json_escape(char *out, size_t size, const char *text);

#endif
