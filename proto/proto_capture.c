#include "proto_capture.h"
#include "proto_check.h"
#include "proto_crypto.h"
#include "proto_log.h"
#include "proto_msg.h"
#include "proto_trace.h"

#include <assert.h>
#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

//  Bytes kept past the cap until redaction, so that a secret across the
//  cut is still found whole before the cut is made.
#define S_SLACK 512
#define S_SECRET_MIN 8
#define S_KEY_RUN_MIN 32 //  characters after a key prefix that make a client key's shape
#define S_HEADERS_MAX 64 //  headers kept per side

//  Process-wide settings, like proto_log's level: set from settings
//  'request_log' by proto_service.
static proto_capture_level_t s_level = PROTO_CAPTURE_BASE;
static size_t s_max_body = 65536;

static const char *s_dropped_headers[] = {
    "authorization", "x-api-key",  "x-goog-api-key",      "api-key",
    "cookie",        "set-cookie", "proxy-authorization", NULL};

struct _proto_capture_t {
    proto_capture_level_t level; //  level when it began
    size_t max_body;             //  cap when it began
    json_t *request_headers;     //  object, or NULL (dispatch)
    json_t *response_headers;    //  object, or NULL
    zchunk_t *request_body;      //  up to max_body + slack bytes, or NULL (ingress)
    zchunk_t *response_body;     //  likewise
    bool request_truncated;      //  the request body was longer than kept
    bool response_truncated;     //  the response body was longer than kept
};

void proto_capture_configure(proto_capture_level_t level, size_t max_body_bytes)
{
    if (level != s_level || max_body_bytes != s_max_body)
        log_info(NULL, "request log: level %s, bodies up to %zu bytes",
                 level == PROTO_CAPTURE_FULL      ? "full"
                 : level == PROTO_CAPTURE_HEADERS ? "headers"
                                                  : "base",
                 max_body_bytes);
    s_level = level;
    s_max_body = max_body_bytes;
}

void proto_capture_configure_json(const char *text)
{
    json_t *value = text ? json_loads(text, 0, NULL) : NULL;
    const char *level = json_string_value(json_object_get(value, "level"));
    json_t *max = json_object_get(value, "max_body_bytes");
    proto_capture_configure(level && strcmp(level, "full") == 0      ? PROTO_CAPTURE_FULL
                            : level && strcmp(level, "headers") == 0 ? PROTO_CAPTURE_HEADERS
                                                                     : PROTO_CAPTURE_BASE,
                            json_is_integer(max) && json_integer_value(max) >= 0
                                ? (size_t)json_integer_value(max)
                                : 65536);
    json_decref(value);
}

proto_capture_level_t proto_capture_level(void)
{
    return s_level;
}

static proto_capture_t *s_new(void)
{
    proto_capture_t *self = calloc(1, sizeof *self);
    assert(self);
    self->level = s_level;
    self->max_body = s_max_body;
    return self;
}

void proto_capture_destroy(proto_capture_t **self_p)
{
    assert(self_p);
    proto_capture_t *self = *self_p;
    if (!self)
        return;
    json_decref(self->request_headers);
    json_decref(self->response_headers);
    zchunk_destroy(&self->request_body);
    zchunk_destroy(&self->response_body);
    free(self);
    *self_p = NULL;
}

//  --------------------------------------------------------------------------
//  Redaction

//  Replaces client-key-shaped tokens (prefix + a long alphanumeric run)
//  with "***".
static void s_redact_prefix(char *text, const char *prefix)
{
    size_t length = strlen(prefix);
    char *cursor = text;
    while ((cursor = strstr(cursor, prefix))) {
        size_t run = 0;
        while (isalnum((unsigned char)cursor[length + run]))
            run++;
        if (run >= S_KEY_RUN_MIN) {
            memcpy(cursor, "***", 3);
            memmove(cursor + 3, cursor + length + run, strlen(cursor + length + run) + 1);
            cursor += 3;
        } else
            cursor += length;
    }
}

//  Keys of the default prefix and of the configured one (settings
//  'client_keys'): keys made before a change of prefix keep theirs.
static void s_redact_keys(char *text)
{
    s_redact_prefix(text, PROTO_CRYPTO_KEY_PREFIX_DEFAULT);
    if (strcmp(proto_crypto_key_prefix(), PROTO_CRYPTO_KEY_PREFIX_DEFAULT) != 0)
        s_redact_prefix(text, proto_crypto_key_prefix());
}

void proto_capture_redact(char *text, const char *const *secrets, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        const char *secret = secrets[i];
        size_t length = secret ? strlen(secret) : 0;
        if (length < S_SECRET_MIN)
            continue;
        char *cursor = text;
        while ((cursor = strstr(cursor, secret))) {
            memcpy(cursor, "***", 3);
            memmove(cursor + 3, cursor + length, strlen(cursor + length) + 1);
            cursor += 3;
        }
    }
    s_redact_keys(text);
}

//  Makes bytes into text PostgreSQL and JSON accept: NUL and invalid UTF-8
//  become '?'. Caller owns return value.
static char *s_text(const void *data, size_t size)
{
    const unsigned char *in = data;
    char *out = malloc(size + 1);
    assert(out);
    size_t n = 0;
    for (size_t i = 0; i < size;) {
        unsigned char c = in[i];
        size_t length = c < 0x80         ? 1
                        : (c >> 5) == 6  ? 2
                        : (c >> 4) == 14 ? 3
                        : (c >> 3) == 30 ? 4
                                         : 0;
        bool valid = length > 0 && c != 0 && i + length <= size;
        for (size_t k = 1; valid && k < length; k++)
            valid = (in[i + k] & 0xc0) == 0x80;
        if (!valid) {
            out[n++] = '?';
            i++;
            continue;
        }
        memcpy(out + n, in + i, length);
        n += length;
        i += length;
    }
    out[n] = '\0';
    return out;
}

//  Cuts text to at most max bytes at a UTF-8 boundary. Returns true when
//  it cut anything.
static bool s_cut(char *text, size_t max)
{
    size_t length = strlen(text);
    if (length <= max)
        return false;
    size_t cut = max;
    while (cut > 0 && ((unsigned char)text[cut] & 0xc0) == 0x80)
        cut--;
    text[cut] = '\0';
    return true;
}

//  --------------------------------------------------------------------------
//  Ingress: headers

static enum MHD_Result s_header(void *arg, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    json_t *headers = arg;
    if (!key || json_object_size(headers) >= S_HEADERS_MAX)
        return MHD_YES;
    char name[128];
    size_t i = 0;
    for (; key[i] && i + 1 < sizeof name; i++)
        name[i] = (char)tolower((unsigned char)key[i]);
    name[i] = '\0';
    for (const char **dropped = s_dropped_headers; *dropped; dropped++)
        if (strcmp(name, *dropped) == 0)
            return MHD_YES;
    char *text = s_text(value ? value : "", value ? strlen(value) : 0);
    s_cut(text, 1024);
    s_redact_keys(text);
    json_object_set_new(headers, name, json_string(text));
    free(text);
    return MHD_YES;
}

proto_capture_t *proto_capture_headers_new(struct MHD_Connection *connection)
{
    if (s_level < PROTO_CAPTURE_HEADERS || !connection)
        return NULL;
    proto_capture_t *self = s_new();
    self->request_headers = json_object();
    MHD_get_connection_values(connection, MHD_HEADER_KIND, s_header, self->request_headers);
    return self;
}

void proto_capture_response_headers(proto_capture_t *self, struct MHD_Response *response)
{
    if (!self || !response)
        return;
    json_decref(self->response_headers);
    self->response_headers = json_object();
    MHD_get_response_headers(response, s_header, self->response_headers);
}

//  --------------------------------------------------------------------------
//  Dispatch: bodies

static void s_keep(zchunk_t *chunk, size_t max, bool *truncated, const void *data, size_t size)
{
    size_t room = max + S_SLACK > zchunk_size(chunk) ? max + S_SLACK - zchunk_size(chunk) : 0;
    if (size > room)
        *truncated = true;
    if (room && size)
        zchunk_extend(chunk, data, size < room ? size : room);
}

proto_capture_t *proto_capture_bodies_new(const void *request_body, size_t size)
{
    if (s_level < PROTO_CAPTURE_FULL)
        return NULL;
    proto_capture_t *self = s_new();
    self->request_body = zchunk_new(NULL, 0);
    self->response_body = zchunk_new(NULL, 0);
    s_keep(self->request_body, self->max_body, &self->request_truncated, request_body, size);
    return self;
}

void proto_capture_response_body(proto_capture_t *self, const void *data, size_t size)
{
    if (self && self->response_body)
        s_keep(self->response_body, self->max_body, &self->response_truncated, data, size);
}

//  A kept body as redacted, cut text. Caller owns return value.
static char *s_body(zchunk_t *chunk, size_t max, bool *truncated, const char *const *secrets,
                    size_t count)
{
    char *text = s_text(zchunk_data(chunk), zchunk_size(chunk));
    proto_capture_redact(text, secrets, count);
    if (s_cut(text, max))
        *truncated = true;
    return text;
}

static const char *s_protocol_name(int protocol)
{
    switch (protocol) {
    case PROTO_PROTOCOL_OPENAI:
        return "openai";
    case PROTO_PROTOCOL_OPENAI_RESPONSES:
        return "openai-responses";
    case PROTO_PROTOCOL_ANTHROPIC:
        return "anthropic";
    case PROTO_PROTOCOL_GEMINI:
        return "gemini";
    case PROTO_PROTOCOL_OPENAI_EMBEDDINGS:
        return "openai-embeddings";
    case PROTO_PROTOCOL_OPENAI_IMAGES:
        return "openai-images";
    default:
        return NULL;
    }
}

//  The row half as JSON text: the columns of request_details this capture
//  fills. Caller owns return value.
static char *s_row(proto_capture_t *self, int client_protocol, proto_catalog_t *catalog)
{
    json_t *row =
        json_pack("{s:s}", "level", self->level == PROTO_CAPTURE_FULL ? "full" : "headers");
    const char *protocol = s_protocol_name(client_protocol);
    if (protocol)
        json_object_set_new(row, "client_protocol", json_string(protocol));
    if (self->request_headers)
        json_object_set(row, "request_headers", self->request_headers);
    if (self->response_headers)
        json_object_set(row, "response_headers", self->response_headers);
    if (self->request_body) {
        size_t count = catalog ? proto_catalog_provider_key_count(catalog) : 0;
        const char **secrets = calloc(count + 1, sizeof *secrets);
        assert(secrets);
        for (size_t i = 0; i < count; i++)
            secrets[i] = proto_catalog_provider_key_at(catalog, i)->secret;
        char *request =
            s_body(self->request_body, self->max_body, &self->request_truncated, secrets, count);
        char *response =
            s_body(self->response_body, self->max_body, &self->response_truncated, secrets, count);
        free(secrets);
        json_object_set_new(row, "request_body", json_string(request));
        json_object_set_new(row, "response_body", json_string(response));
        json_object_set_new(row, "request_truncated", json_boolean(self->request_truncated));
        json_object_set_new(row, "response_truncated", json_boolean(self->response_truncated));
        free(request);
        free(response);
    }
    char *text = json_dumps(row, JSON_COMPACT);
    json_decref(row);
    return text;
}

void proto_capture_send(proto_capture_t **self_p, proto_trace_t *tracer, const char *request_id,
                        const char *trace, int client_protocol, proto_catalog_t *catalog)
{
    proto_capture_t *self = *self_p;
    if (self && request_id && *request_id) {
        char *row = s_row(self, client_protocol, catalog);
        if (row) {
            proto_msg_t *msg = proto_msg_new(PROTO_MSG_DETAILS);
            proto_msg_set_request_id(msg, request_id);
            proto_msg_set_trace(msg, trace && strlen(trace) <= PROTO_MSG_TRACE_MAX ? trace : "");
            proto_msg_set_body_bytes(msg, row, strlen(row));
            proto_trace_send(tracer, &msg);
            free(row);
        }
    }
    proto_capture_destroy(self_p);
}

//  --------------------------------------------------------------------------
//  Self test

static void s_test_sink(proto_msg_t **msg_p, void *arg)
{
    proto_msg_t **kept = arg;
    if (proto_msg_type(*msg_p) == PROTO_MSG_DETAILS) {
        proto_msg_destroy(kept);
        *kept = *msg_p;
        *msg_p = NULL;
    }
}

void proto_capture_test(bool verbose)
{
    if (verbose)
        printf(" * proto_capture: ");
    char text[256];
    snprintf(text, sizeof text,
             "key tg-0123456789abcdef0123456789abcdef0123456789abcdef and sk-provider-secret-1 "
             "twice sk-provider-secret-1; short tg-abc; tiny x");
    const char *secrets[] = {"sk-provider-secret-1", "x", NULL};
    proto_capture_redact(text, secrets, 3);
    PROTO_CHECK(strcmp(text, "key *** and *** twice ***; short tg-abc; tiny x") == 0);
    //  A configured prefix is redacted beside the default one.
    proto_crypto_set_key_prefix("acme_");
    snprintf(text, sizeof text,
             "old tg-0123456789abcdef0123456789abcdef0123456789abcdef new "
             "acme_0123456789abcdef0123456789abcdef0123456789abcdef; acme_short");
    proto_capture_redact(text, NULL, 0);
    PROTO_CHECK(strcmp(text, "old *** new ***; acme_short") == 0);
    proto_crypto_set_key_prefix(PROTO_CRYPTO_KEY_PREFIX_DEFAULT);
    //  UTF-8 cut and sanitising.
    char *sane = s_text("a\xc3\xa9\xff\0b", 6);
    PROTO_CHECK(strcmp(sane, "a\xc3\xa9??b") == 0);
    PROTO_CHECK(s_cut(sane, 2) && strcmp(sane, "a") == 0);
    free(sane);

    proto_capture_configure(PROTO_CAPTURE_BASE, 65536);
    PROTO_CHECK(!proto_capture_bodies_new("x", 1));
    PROTO_CHECK(!proto_capture_headers_new(NULL));
    proto_capture_configure_json("{\"level\":\"full\",\"max_body_bytes\":16}");
    PROTO_CHECK(proto_capture_level() == PROTO_CAPTURE_FULL);
    const char *body = "{\"secret\":\"sk-provider-secret-1\",\"pad\":\"0123456789abcdef\"}";
    proto_capture_t *capture = proto_capture_bodies_new(body, strlen(body));
    PROTO_CHECK(capture);
    proto_capture_response_body(capture, "h\xc3\xa9llo ", 7);
    proto_capture_response_body(capture, "world and more than sixteen bytes", 33);
    proto_msg_t *kept = NULL;
    proto_trace_t *tracer = proto_trace_new(NULL, NULL, "test", "test-1");
    proto_trace_set_sink(tracer, s_test_sink, &kept);
    //  Without a catalog only the key shape is redacted; the secret goes
    //  with the cut here (16 bytes), which the redaction ran before.
    proto_capture_send(&capture, tracer, "req-9", "", PROTO_PROTOCOL_OPENAI, NULL);
    PROTO_CHECK(!capture && kept);
    zframe_t *frame = proto_msg_body(kept);
    json_t *row = json_loadb((const char *)zframe_data(frame), zframe_size(frame), 0, NULL);
    PROTO_CHECK(row);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(row, "level")), "full") == 0);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(row, "client_protocol")), "openai") == 0);
    PROTO_CHECK(strlen(json_string_value(json_object_get(row, "request_body"))) <= 16);
    PROTO_CHECK(json_is_true(json_object_get(row, "request_truncated")));
    PROTO_CHECK(json_is_true(json_object_get(row, "response_truncated")));
    PROTO_CHECK(strncmp(json_string_value(json_object_get(row, "response_body")),
                        "h\xc3\xa9llo world", 12) == 0);
    json_decref(row);
    proto_msg_destroy(&kept);
    proto_trace_destroy(&tracer);
    proto_capture_configure(PROTO_CAPTURE_BASE, 65536);
    if (verbose)
        printf("OK\n");
}
