#include "ingress_scan.h"
#include "proto_check.h"
#include "proto_jscan.h"
#include "proto_msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Deeper than this the scanner gives the body to jansson (which allows
//  2048): no request nests so deep, and the walks below recurse.
#define S_DEPTH_MAX 64
//  Keys of one object compared with each other, at most; more goes to jansson.
#define S_KEYS_MAX 64

//  One body being read.
typedef struct {
    const char *end; //  end of the text
    bool give_up;    //  something only jansson may decide
    bool vision;     //  an image part seen (ingress_parse's s_scan_needs)
    bool cache_1h;   //  a 1-hour cache_control seen
} s_scan_t;

//  True when the key token [key, key_end) is `name` (keys here have no
//  escapes: s_walk gives up on those).
static bool s_key_is(const char *key, const char *key_end, const char *name)
{
    size_t length = strlen(name);
    return (size_t)(key_end - key) == length + 2 && memcmp(key + 1, name, length) == 0;
}

//  True when the value is a string that decodes to exactly `text`.
static bool s_string_is(const char *value, const char *end, const char *text)
{
    char decoded[32];
    return value && *value == '"' && proto_jscan_string_copy(value, end, decoded, sizeof decoded) &&
           strcmp(decoded, text) == 0;
}

//  True when the value is a string that starts with `prefix` once decoded.
static bool s_string_starts(s_scan_t *scan, const char *value, const char *prefix)
{
    char decoded[256];
    if (!value || *value != '"')
        return false;
    if (!proto_jscan_string_copy(value, scan->end, decoded, sizeof decoded)) {
        scan->give_up = true; //  longer than any media type
        return false;
    }
    return strncmp(decoded, prefix, strlen(prefix)) == 0;
}

//  The members of one object that ingress_parse's s_scan_needs reads.
typedef struct {
    const char *type, *inline_data, *inline_snake, *file_data, *cache_control;
} s_marks_t;

static void s_note_mark(s_marks_t *marks, const char *key, const char *key_end, const char *value)
{
    if (s_key_is(key, key_end, "type"))
        marks->type = value;
    else if (s_key_is(key, key_end, "inlineData"))
        marks->inline_data = value;
    else if (s_key_is(key, key_end, "inline_data"))
        marks->inline_snake = value;
    else if (s_key_is(key, key_end, "fileData"))
        marks->file_data = value;
    else if (s_key_is(key, key_end, "cache_control"))
        marks->cache_control = value;
}

//  s_scan_needs's test of one object: image parts need "vision", a 1-hour
//  cache_control needs "prompt-cache-1h" (a missing member and a member of
//  the wrong type read alike).
static void s_judge_marks(s_scan_t *scan, const s_marks_t *marks)
{
    const char *end = scan->end;
    if (s_string_is(marks->type, end, "image_url") || s_string_is(marks->type, end, "image") ||
        s_string_is(marks->type, end, "input_image"))
        scan->vision = true;
    const char *inline_data = marks->inline_data    ? marks->inline_data
                              : marks->inline_snake ? marks->inline_snake
                                                    : marks->file_data;
    const char *mime = proto_jscan_member(inline_data, end, "mimeType");
    if (!mime || *mime != '"')
        mime = proto_jscan_member(inline_data, end, "mime_type");
    if (s_string_starts(scan, mime, "image/"))
        scan->vision = true;
    if (s_string_is(proto_jscan_member(marks->cache_control, end, "ttl"), end, "1h"))
        scan->cache_1h = true;
}

//  Where s_scan_needs looks: these members of the top object, all the way down.
static bool s_needs_root(const char *key, const char *key_end)
{
    return s_key_is(key, key_end, "messages") || s_key_is(key, key_end, "contents") ||
           s_key_is(key, key_end, "input") || s_key_is(key, key_end, "system") ||
           s_key_is(key, key_end, "tools");
}

static const char *s_walk(s_scan_t *scan, const char *value, int depth, bool needs);

//  s_walk of an array: its end.
static const char *s_walk_array(s_scan_t *scan, const char *array, int depth, bool needs)
{
    const char *end = scan->end;
    const char *at = proto_jscan_space(array + 1, end);
    while (at < end && *at != ']' && !scan->give_up) {
        at = proto_jscan_space(s_walk(scan, at, depth + 1, needs), end);
        if (at < end && *at == ',')
            at = proto_jscan_space(at + 1, end);
    }
    return at < end ? at + 1 : end;
}

//  s_walk of an object: no key twice (jansson's JSON_REJECT_DUPLICATES);
//  keys written with escapes could equal others only once decoded, so
//  those, like very wide objects, go to jansson.
static const char *s_walk_object(s_scan_t *scan, const char *object, int depth, bool needs)
{
    const char *end = scan->end;
    const char *keys[S_KEYS_MAX];
    size_t lengths[S_KEYS_MAX], count = 0;
    s_marks_t marks = {0};
    const char *at = proto_jscan_space(object + 1, end);
    while (at < end && *at == '"' && !scan->give_up) {
        const char *key_end = proto_jscan_skip(at, end);
        size_t length = (size_t)(key_end - at);
        if (count == S_KEYS_MAX || memchr(at, '\\', length)) {
            scan->give_up = true;
            return end;
        }
        for (size_t i = 0; i < count; i++)
            if (lengths[i] == length && memcmp(keys[i], at, length) == 0)
                scan->give_up = true; //  jansson refuses it, in its words
        keys[count] = at;
        lengths[count++] = length;
        const char *member = proto_jscan_space(proto_jscan_space(key_end, end) + 1, end);
        if (needs)
            s_note_mark(&marks, at, key_end, member);
        bool below = needs || (depth == 1 && s_needs_root(at, key_end));
        at = proto_jscan_space(s_walk(scan, member, depth + 1, below), end);
        if (at < end && *at == ',')
            at = proto_jscan_space(at + 1, end);
    }
    if (needs && !scan->give_up)
        s_judge_marks(scan, &marks);
    return at < end ? at + 1 : end;
}

//  One pass over one value of valid text; returns its end. Checks every
//  object's keys, and inside the members s_scan_needs covers (needs) reads
//  what it reads. Deeper than S_DEPTH_MAX it gives the body to jansson (so
//  s_scan_needs's own depth limit, 64 below those members, is never met).
static const char *s_walk(s_scan_t *scan, const char *value, int depth, bool needs)
{
    if (*value != '{' && *value != '[')
        return proto_jscan_skip(value, scan->end);
    if (depth > S_DEPTH_MAX) {
        scan->give_up = true;
        return scan->end;
    }
    return *value == '[' ? s_walk_array(scan, value, depth, needs)
                         : s_walk_object(scan, value, depth, needs);
}

//  A number token that jansson reads as an integer (no fraction, no
//  exponent) greater than zero; 0 otherwise. Read within the token: the
//  body need not end with a NUL. Valid text holds only integers that fit
//  int64 (proto_jscan_valid, as json_loadb).
static uint64_t s_positive_integer(const char *value, const char *end)
{
    if (proto_jscan_type(value) != PROTO_JSCAN_NUMBER || *value == '-')
        return 0;
    uint64_t number = 0;
    for (const char *at = value; at < end && *at >= '0' && *at <= '9'; at++)
        number = number * 10 + (uint64_t)(*at - '0');
    const char *after = proto_jscan_skip(value, end);
    for (const char *at = value; at < after; at++)
        if (*at == '.' || *at == 'e' || *at == 'E')
            return 0;
    return number;
}

//  ingress_parse's s_max_output on the top object.
static uint64_t s_max_output(const proto_jscan_object_t *top, const char *end)
{
    const char *names[] = {"max_completion_tokens", "max_tokens", "max_output_tokens"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        uint64_t value = s_positive_integer(proto_jscan_get(top, names[i]), end);
        if (value)
            return value;
    }
    const char *config = proto_jscan_get(top, "generationConfig");
    return s_positive_integer(proto_jscan_member(config, end, "maxOutputTokens"), end);
}

//  The session: Anthropic's metadata.user_id, else OpenAI's user; "" when
//  neither is a string or the one found is longer than INGRESS_SESSION_MAX.
static void s_session(const proto_jscan_object_t *top, const char *end, char *session)
{
    const char *value = proto_jscan_member(proto_jscan_get(top, "metadata"), end, "user_id");
    if (proto_jscan_type(value) != PROTO_JSCAN_STRING)
        value = proto_jscan_get(top, "user");
    if (proto_jscan_type(value) != PROTO_JSCAN_STRING ||
        !proto_jscan_string_copy(value, end, session, INGRESS_SESSION_MAX + 1))
        session[0] = '\0';
}

//  The conversation the protocol requires is there and of its type (the
//  checks of ingress_parse's s_conversation_ok that pass).
static bool s_conversation_ok(int protocol, bool count_tokens, const proto_jscan_object_t *top)
{
    const char *value = proto_jscan_get(top, ingress_parse_conversation_field(protocol));
    if (protocol == PROTO_PROTOCOL_GEMINI && count_tokens && !value)
        return proto_jscan_type(proto_jscan_get(top, "generateContentRequest")) ==
               PROTO_JSCAN_OBJECT;
    bool text_allowed =
        protocol == PROTO_PROTOCOL_OPENAI_RESPONSES || protocol == PROTO_PROTOCOL_OPENAI_EMBEDDINGS;
    proto_jscan_type_t type = proto_jscan_type(value);
    return type == PROTO_JSCAN_ARRAY || (text_allowed && type == PROTO_JSCAN_STRING);
}

//  The model: the path's, else the body's "model", a non-empty string of at
//  most INGRESS_MODEL_MAX bytes. False when jansson must say what is wrong.
static bool s_model(const char *path_model, const proto_jscan_object_t *top, const char *end,
                    char *model)
{
    if (path_model) {
        //  jansson's json_string refuses a name that is not UTF-8; an ASCII
        //  one it takes as it is.
        for (const char *at = path_model; *at; at++)
            if ((unsigned char)*at >= 0x80)
                return false;
        snprintf(model, INGRESS_MODEL_MAX + 1, "%s", path_model);
        return model[0] != '\0';
    }
    const char *value = proto_jscan_get(top, "model");
    return proto_jscan_type(value) == PROTO_JSCAN_STRING &&
           proto_jscan_string_copy(value, end, model, INGRESS_MODEL_MAX + 1) && model[0];
}

bool ingress_scan_body(int protocol, bool count_tokens, const char *path_model, const char *data,
                       size_t size, ingress_body_t *out)
{
    //  Images' checks and their wording stay with jansson (a rare request).
    if (protocol == PROTO_PROTOCOL_OPENAI_IMAGES)
        return false;
    if (path_model && strlen(path_model) > INGRESS_MODEL_MAX)
        return false;
    proto_jscan_object_t top;
    if (!proto_jscan_valid_indexed(data, size, 0, &top) || !top.object)
        return false;
    s_scan_t scan = {.end = data + size};
    s_walk(&scan, top.object, 1, false);
    char model[INGRESS_MODEL_MAX + 1];
    if (scan.give_up || !s_model(path_model, &top, scan.end, model) ||
        !s_conversation_ok(protocol, count_tokens, &top))
        return false;
    const char *stream = proto_jscan_get(&top, "stream");
    proto_jscan_type_t stream_type = proto_jscan_type(stream);
    if (protocol != PROTO_PROTOCOL_GEMINI && stream && stream_type != PROTO_JSCAN_TRUE &&
        stream_type != PROTO_JSCAN_FALSE && stream_type != PROTO_JSCAN_NULL)
        return false;
    char session[INGRESS_SESSION_MAX + 1];
    s_session(&top, scan.end, session);
    char capabilities[INGRESS_CAPABILITIES_MAX + 1] = "";
    if (proto_jscan_count(proto_jscan_get(&top, "tools"), scan.end) > 0)
        ingress_parse_add_capability(capabilities, "tools");
    if (scan.vision)
        ingress_parse_add_capability(capabilities, "vision");
    if (scan.cache_1h)
        ingress_parse_add_capability(capabilities, "prompt-cache-1h");

    *out = INGRESS_BODY_EMPTY;
    out->stream_given = stream && stream_type != PROTO_JSCAN_NULL;
    out->stream = protocol != PROTO_PROTOCOL_GEMINI &&
                  protocol != PROTO_PROTOCOL_OPENAI_EMBEDDINGS && !count_tokens &&
                  stream_type == PROTO_JSCAN_TRUE;
    out->include_usage =
        protocol == PROTO_PROTOCOL_OPENAI &&
        proto_jscan_type(proto_jscan_member(proto_jscan_get(&top, "stream_options"), scan.end,
                                            "include_usage")) == PROTO_JSCAN_TRUE;
    out->tokens_estimate = size / 4 + 1;
    out->max_output = count_tokens ? 0 : s_max_output(&top, scan.end);
    ingress_body_set_texts(out, model, session, capabilities);
    return true;
}

//  --------------------------------------------------------------------------
//  Self test

//  The scanner's answer for a body must be the jansson path's, or none.
static bool s_same(int protocol, bool count_tokens, const char *path_model, const char *body)
{
    ingress_body_t fast = INGRESS_BODY_EMPTY, tree = INGRESS_BODY_EMPTY;
    char error[256];
    bool scanned = ingress_scan_body(protocol, count_tokens, path_model, body, strlen(body), &fast);
    int rc = ingress_parse_body_tree(protocol, count_tokens, path_model, body, strlen(body), &tree,
                                     error, sizeof error);
    bool same = !scanned || (rc == 0 && ingress_body_same(&fast, &tree));
    ingress_body_release(&fast);
    ingress_body_release(&tree);
    return same;
}

//  Read from a copy with no NUL after it, as ingress holds a body (ASan
//  then catches a read past its end).
static bool s_scans(int protocol, const char *body)
{
    size_t size = strlen(body);
    char *copy = malloc(size);
    memcpy(copy, body, size);
    ingress_body_t out = INGRESS_BODY_EMPTY;
    bool scanned = ingress_scan_body(protocol, false, NULL, copy, size, &out);
    free(copy);
    ingress_body_release(&out);
    return scanned && s_same(protocol, false, NULL, body);
}

void ingress_scan_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_scan: ");
    const int openai = PROTO_PROTOCOL_OPENAI, anthropic = PROTO_PROTOCOL_ANTHROPIC;
    //  Read by the scanner, with the jansson path's answer.
    PROTO_CHECK(s_scans(openai, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
                                "\"Say hello\"}]}"));
    PROTO_CHECK(s_scans(openai, "{\"model\":\"m\",\"messages\":[],\"stream\":true,"
                                "\"stream_options\":{\"include_usage\":true},\"max_tokens\":5,"
                                "\"user\":\"u-1\",\"tools\":[{\"type\":\"function\"}]}"));
    PROTO_CHECK(s_scans(
        anthropic, "{\"model\":\"c\",\"max_tokens\":100,\"metadata\":{\"user_id\":\"s\\u00e9\"},"
                   "\"system\":[{\"type\":\"text\",\"text\":\"x\",\"cache_control\":"
                   "{\"type\":\"ephemeral\",\"ttl\":\"1h\"}}],\"messages\":[{\"role\":"
                   "\"user\",\"content\":[{\"type\":\"image\",\"source\":{}}]}]}"));
    PROTO_CHECK(s_scans(PROTO_PROTOCOL_OPENAI_RESPONSES, "{\"model\":\"m\",\"input\":\"hi\","
                                                         "\"max_output_tokens\":7}"));
    PROTO_CHECK(s_scans(openai, "{\"model\":\"m\",\"messages\":[],\"max_tokens\":5}"));
    PROTO_CHECK(s_same(PROTO_PROTOCOL_GEMINI, false, "gemini-x",
                       "{\"contents\":[{\"parts\":[{\"inlineData\":{\"mimeType\":\"image/png\","
                       "\"data\":\"AA==\"}}]}],\"generationConfig\":{\"maxOutputTokens\":9}}"));
    PROTO_CHECK(s_same(PROTO_PROTOCOL_GEMINI, true, "gemini-x",
                       "{\"generateContentRequest\":{\"contents\":[]}}"));
    //  Left to jansson: errors, duplicates (nested ones too), escaped keys,
    //  images, a model too long, a stream that is not a boolean.
    const char *left[] = {
        "{\"model\":\"m\"}",
        "{\"model\":\"m\",\"messages\":[],\"model\":\"n\"}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"a\",\"role\":\"b\"}]}",
        "{\"mod\\u0065l\":\"m\",\"messages\":[]}",
        "{\"model\":\"\",\"messages\":[]}",
        "{\"model\":7,\"messages\":[]}",
        "{\"model\":\"m\",\"messages\":{}}",
        "{\"model\":\"m\",\"messages\":[],\"stream\":\"yes\"}",
        "[1]",
        "{\"model\":\"m\",\"messages\":[]",
        "{\"model\":\"m\",\"messages\":[\"\\u0000\"]}",
    };
    for (size_t i = 0; i < sizeof left / sizeof left[0]; i++) {
        ingress_body_t out = INGRESS_BODY_EMPTY;
        PROTO_CHECK(!ingress_scan_body(openai, false, NULL, left[i], strlen(left[i]), &out));
        PROTO_CHECK(s_same(openai, false, NULL, left[i]));
    }
    char deep[200] = "{\"model\":\"m\",\"messages\":";
    for (int i = 0; i < 70; i++)
        strcat(deep, "[");
    for (int i = 0; i < 70; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    ingress_body_t out = INGRESS_BODY_EMPTY;
    PROTO_CHECK(!ingress_scan_body(openai, false, NULL, deep, strlen(deep), &out));
    PROTO_CHECK(!ingress_scan_body(PROTO_PROTOCOL_OPENAI_IMAGES, false, NULL,
                                   "{\"model\":\"i\",\"prompt\":\"p\"}", 27, &out));
    char model[INGRESS_MODEL_MAX + 64];
    snprintf(model, sizeof model, "{\"model\":\"%0*d\",\"messages\":[]}", INGRESS_MODEL_MAX + 1, 0);
    PROTO_CHECK(!ingress_scan_body(openai, false, NULL, model, strlen(model), &out));
    if (verbose)
        printf("OK\n");
}
