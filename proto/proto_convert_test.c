/*  proto_convert_test: the converters' self test.

    Fixtures: every .json file in tests/fixtures/convert is one case (format in
    tests/fixtures/convert/README.md): a request, a whole answer or a stream
    replayed event by event, with the exact client output expected after
    each upstream event, so a converter that holds bytes back fails. In
    expected JSON the string "<any>" matches any value (ids, timestamps).
    With PROTO_CONVERT_UPDATE=1 the expected outputs are rewritten from the
    converters' output, for review in git diff.

    Then the bug classes users report most, asserted one by one.
*/
#include "proto_convert_ir.h"
#include "proto_check.h"
#include "proto_sse.h"

#include <assert.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PROTO_CONVERT_FIXTURES
#define PROTO_CONVERT_FIXTURES "tests/fixtures/convert"
#endif

static int s_protocol(const char *name)
{
    if (!name)
        return 0;
    if (strcmp(name, "openai") == 0)
        return PROTO_PROTOCOL_OPENAI;
    if (strcmp(name, "responses") == 0)
        return PROTO_PROTOCOL_OPENAI_RESPONSES;
    if (strcmp(name, "anthropic") == 0)
        return PROTO_PROTOCOL_ANTHROPIC;
    if (strcmp(name, "gemini") == 0)
        return PROTO_PROTOCOL_GEMINI;
    return 0;
}

//  Equality where an expected "<any>" matches anything.
static bool s_match(const json_t *expected, const json_t *actual)
{
    if (json_is_string(expected) && strcmp(json_string_value(expected), "<any>") == 0)
        return actual != NULL;
    if (json_is_object(expected)) {
        if (!json_is_object(actual) || json_object_size(expected) != json_object_size(actual))
            return false;
        const char *key;
        json_t *value;
        json_object_foreach((json_t *)expected, key,
                            value) if (!s_match(value, json_object_get(actual, key))) return false;
        return true;
    }
    if (json_is_array(expected)) {
        if (!json_is_array(actual) || json_array_size(expected) != json_array_size(actual))
            return false;
        for (size_t index = 0; index < json_array_size(expected); index++)
            if (!s_match(json_array_get(expected, index), json_array_get(actual, index)))
                return false;
        return true;
    }
    if (json_is_number(expected) && json_is_number(actual))
        return json_number_value(expected) == json_number_value(actual);
    return json_equal((json_t *)expected, (json_t *)actual);
}

static void s_show(const char *label, const json_t *value)
{
    char *text = json_dumps(value, JSON_INDENT(2) | JSON_ENCODE_ANY);
    fprintf(stderr, "%s:\n%s\n", label, text ? text : "(null)");
    free(text);
}

//  SSE bytes -> [{event, data}] with data parsed when it is JSON.
static int s_collect(const proto_sse_event_t *event, void *arg)
{
    json_t *list = arg;
    if (!event->has_data)
        return 0;
    json_t *data = json_loadb(event->data, event->data_size, 0, NULL);
    if (!data)
        data = json_stringn(event->data, event->data_size);
    json_t *item = json_pack("{s:o}", "data", data);
    json_object_set_new(item, "event", *event->name ? json_string(event->name) : json_null());
    json_array_append_new(list, item);
    return 0;
}

static json_t *s_parse_sse(zchunk_t *chunk)
{
    json_t *list = json_array();
    proto_sse_t *reader = proto_sse_new(0);
    proto_sse_feed(reader, zchunk_data(chunk), zchunk_size(chunk), s_collect, list);
    proto_sse_finish(reader, s_collect, list);
    assert(proto_sse_pending(reader) == 0);
    proto_sse_destroy(&reader);
    return list;
}

static void s_check_usage(const char *file, const json_t *expected, const proto_usage_t *usage)
{
    if (!expected)
        return;
    uint64_t in = (uint64_t)json_integer_value(json_object_get(expected, "in"));
    uint64_t out = (uint64_t)json_integer_value(json_object_get(expected, "out"));
    uint64_t read = (uint64_t)json_integer_value(json_object_get(expected, "cache_read"));
    uint64_t write = (uint64_t)json_integer_value(json_object_get(expected, "cache_write"));
    if (usage->tokens_in != in || usage->tokens_out != out || usage->tokens_cache_read != read ||
        usage->tokens_cache_write != write) {
        fprintf(stderr, "%s: usage in=%llu out=%llu read=%llu write=%llu\n", file,
                (unsigned long long)usage->tokens_in, (unsigned long long)usage->tokens_out,
                (unsigned long long)usage->tokens_cache_read,
                (unsigned long long)usage->tokens_cache_write);
        assert(!"usage differs");
    }
}

//  Timestamps differ from run to run: an updated fixture expects "<any>".
static void s_wildcard(json_t *value)
{
    const char *key;
    json_t *member;
    size_t index;
    if (json_is_object(value))
        json_object_foreach(value, key, member)
        {
            if (strcmp(key, "created") == 0 || strcmp(key, "created_at") == 0)
                json_object_set_new(value, key, json_string("<any>"));
            else
                s_wildcard(member);
        }
    else if (json_is_array(value))
        json_array_foreach(value, index, member) s_wildcard(member);
}

//  Compares (or, updating, stores) one expected value. Returns true when
//  the fixture changed.
static bool s_expect(const char *file, json_t *fixture, const char *key, json_t *actual,
                     bool update)
{
    json_t *expected = json_object_get(fixture, key);
    if (update) {
        if (expected && s_match(expected, actual))
            return false;
        json_t *copy = actual ? json_deep_copy(actual) : json_null();
        s_wildcard(copy);
        json_object_set_new(fixture, key, copy);
        return true;
    }
    if (!s_match(expected, actual)) {
        fprintf(stderr, "%s: %s differs\n", file, key);
        s_show("expected", expected);
        s_show("actual", actual);
        assert(!"fixture output differs");
    }
    return false;
}

static bool s_run_request(const char *file, json_t *fixture, bool update)
{
    char error[256] = "";
    const char *model = json_string_value(json_object_get(fixture, "model"));
    json_t *dropped = json_array();
    json_t *body = proto_convert_request_policy(
        s_protocol(json_string_value(json_object_get(fixture, "from"))),
        s_protocol(json_string_value(json_object_get(fixture, "to"))),
        json_object_get(fixture, "input"), model, json_is_true(json_object_get(fixture, "stream")),
        json_is_true(json_object_get(fixture, "strict")), dropped, error, sizeof error);
    const char *refusal = json_string_value(json_object_get(fixture, "error"));
    if (refusal) {
        if (body || !strstr(error, refusal)) {
            fprintf(stderr, "%s: expected refusal '%s', got '%s'\n", file, refusal, error);
            s_show("body", body);
            assert(!"refusal expected");
        }
        json_decref(dropped);
        return false;
    }
    if (!body) {
        fprintf(stderr, "%s: refused: %s\n", file, error);
        assert(!"request refused");
    }
    bool changed = s_expect(file, fixture, "expect", body, update);
    //  What was left out, in the client's names (none when not listed).
    if (json_array_size(dropped) || json_object_get(fixture, "dropped"))
        changed |= s_expect(file, fixture, "dropped", dropped, update);
    json_decref(dropped);
    json_decref(body);
    return changed;
}

static bool s_run_response(const char *file, json_t *fixture, bool update)
{
    char error[256] = "";
    proto_usage_t usage;
    json_t *body = proto_convert_response(
        s_protocol(json_string_value(json_object_get(fixture, "from"))),
        s_protocol(json_string_value(json_object_get(fixture, "to"))),
        json_object_get(fixture, "input"), json_string_value(json_object_get(fixture, "model")),
        &usage, error, sizeof error);
    const char *refusal = json_string_value(json_object_get(fixture, "error"));
    if (refusal) {
        assert(!body && strstr(error, refusal));
        return false;
    }
    if (!body) {
        fprintf(stderr, "%s: %s\n", file, error);
        assert(!"response not converted");
    }
    s_check_usage(file, json_object_get(fixture, "usage"), &usage);
    bool changed = s_expect(file, fixture, "expect", body, update);
    json_decref(body);
    return changed;
}

static bool s_run_stream(const char *file, json_t *fixture, bool update)
{
    proto_convert_stream_t *stream =
        proto_convert_stream_new(s_protocol(json_string_value(json_object_get(fixture, "from"))),
                                 s_protocol(json_string_value(json_object_get(fixture, "to"))),
                                 json_string_value(json_object_get(fixture, "model")),
                                 !json_is_false(json_object_get(fixture, "client_usage")));
    assert(stream);
    bool array = json_is_true(json_object_get(fixture, "json_array"));
    proto_convert_stream_set_json_array(stream, array);
    bool changed = false;
    bool failed = false;
    size_t index;
    json_t *event;
    json_array_foreach(json_object_get(fixture, "events"), index, event)
    {
        json_t *data = json_object_get(event, "data");
        char *text =
            json_is_string(data) ? strdup(json_string_value(data)) : json_dumps(data, JSON_COMPACT);
        const char *name = json_string_value(json_object_get(event, "event"));
        zchunk_t *out = zchunk_new(NULL, 0);
        int rc = proto_convert_stream_event(stream, name ? name : "", text, strlen(text), out);
        free(text);
        //  No buffering: the first upstream event already gives the client
        //  its first bytes.
        if (index == 0 && !json_is_true(json_object_get(fixture, "first_empty_ok")) &&
            zchunk_size(out) == 0) {
            fprintf(stderr, "%s: no client bytes after the first upstream event\n", file);
            assert(!"first event buffered");
        }
        json_t *actual = array ? json_stringn((const char *)zchunk_data(out), zchunk_size(out))
                               : s_parse_sse(out);
        if (rc)
            failed = true;
        json_t *expected = json_object_get(event, "expect");
        if (update) {
            if (!expected || !s_match(expected, actual)) {
                json_t *copy = json_deep_copy(actual);
                s_wildcard(copy);
                json_object_set_new(event, "expect", copy);
                changed = true;
            }
        } else if (!s_match(expected, actual)) {
            fprintf(stderr, "%s: output after event %zu differs\n", file, index);
            s_show("expected", expected);
            s_show("actual", actual);
            assert(!"stream output differs");
        }
        json_decref(actual);
        zchunk_destroy(&out);
    }
    zchunk_t *out = zchunk_new(NULL, 0);
    bool completed = !json_is_false(json_object_get(fixture, "completed"));
    int rc = proto_convert_stream_finish(stream, completed, out);
    json_t *actual =
        array ? json_stringn((const char *)zchunk_data(out), zchunk_size(out)) : s_parse_sse(out);
    changed |= s_expect(file, fixture, "finish_expect", actual, update);
    json_decref(actual);
    zchunk_destroy(&out);
    bool expect_fail = json_is_true(json_object_get(fixture, "fails"));
    if ((rc != 0 || failed) != expect_fail) {
        fprintf(stderr, "%s: stream %s (%s)\n", file, rc ? "failed" : "succeeded",
                proto_convert_stream_error(stream));
        assert(!"stream outcome differs");
    }
    proto_usage_t usage;
    proto_convert_stream_usage(stream, &usage);
    s_check_usage(file, json_object_get(fixture, "usage"), &usage);
    proto_convert_stream_destroy(&stream);
    return changed;
}

static int s_fixtures(bool verbose)
{
    const char *dir_name = getenv("PROTO_CONVERT_FIXTURES");
    if (!dir_name)
        dir_name = PROTO_CONVERT_FIXTURES;
    bool update = getenv("PROTO_CONVERT_UPDATE") != NULL;
    DIR *dir = opendir(dir_name);
    if (!dir) {
        fprintf(stderr, "proto_convert: no fixtures in %s\n", dir_name);
        assert(!"fixture directory missing");
    }
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        size_t length = strlen(entry->d_name);
        if (length < 6 || strcmp(entry->d_name + length - 5, ".json"))
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir_name, entry->d_name);
        json_error_t error;
        json_t *fixture = json_load_file(path, JSON_DECODE_ANY, &error);
        if (!fixture) {
            fprintf(stderr, "%s:%d: %s\n", path, error.line, error.text);
            assert(!"fixture does not parse");
        }
        const char *kind = json_string_value(json_object_get(fixture, "kind"));
        bool changed;
        if (verbose)
            printf("   %s\n", entry->d_name);
        if (kind && strcmp(kind, "request") == 0)
            changed = s_run_request(path, fixture, update);
        else if (kind && strcmp(kind, "response") == 0)
            changed = s_run_response(path, fixture, update);
        else if (kind && strcmp(kind, "stream") == 0)
            changed = s_run_stream(path, fixture, update);
        else {
            fprintf(stderr, "%s: unknown kind\n", path);
            abort();
        }
        if (changed) {
            json_dump_file(fixture, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            fprintf(stderr, "updated %s\n", path);
        }
        json_decref(fixture);
        count++;
    }
    closedir(dir);
    return count;
}

//  ---------------------------------------------------------------------------
//  Bug classes, one by one

static json_t *s_feed(proto_convert_stream_t *stream, const char *name, const char *data, int *rc)
{
    zchunk_t *out = zchunk_new(NULL, 0);
    *rc = proto_convert_stream_event(stream, name, data, strlen(data), out);
    json_t *events = s_parse_sse(out);
    zchunk_destroy(&out);
    return events;
}

static void s_test_malformed(void)
{
    //  Every pair: garbage in the middle of a stream is an error, then an
    //  error event in the client's protocol, never a crash.
    static const char *junk[] = {
        "{\"choices\":",
        "[1,2]",
        "\"text\"",
        "{\"type\":7}",
        "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":3,\"function\":{\"arguments\":\"x\"}}"
        "]}}]}",
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\","
        "\"partial_json\":\"{\"}}",
        "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{}}]}}]}",
        "{\"type\":\"response.function_call_arguments.delta\",\"delta\":\"x\"}"};
    int protocols[] = {PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI_RESPONSES,
                       PROTO_PROTOCOL_ANTHROPIC, PROTO_PROTOCOL_GEMINI};
    for (int up = 0; up < 4; up++)
        for (int cl = 0; cl < 4; cl++)
            for (size_t bad = 0; bad < sizeof junk / sizeof junk[0]; bad++) {
                proto_convert_stream_t *stream =
                    proto_convert_stream_new(protocols[up], protocols[cl], "m", true);
                zchunk_t *out = zchunk_new(NULL, 0);
                proto_convert_stream_event(stream, "", junk[bad], strlen(junk[bad]), out);
                int rc = proto_convert_stream_finish(stream, true, out);
                //  Nothing valid ended the upstream stream: the client is told.
                PROTO_CHECK(rc == -1);
                PROTO_CHECK(zchunk_size(out) > 0);
                PROTO_CHECK(*proto_convert_stream_error(stream));
                zchunk_destroy(&out);
                proto_convert_stream_destroy(&stream);
            }
    //  A non-JSON upstream answer body is refused, not crashed on.
    char error[128];
    json_t *array = json_array();
    for (int up = 0; up < 4; up++)
        for (int cl = 0; cl < 4; cl++)
            PROTO_CHECK(!proto_convert_response(protocols[up], protocols[cl], array, "m", NULL,
                                                error, sizeof error));
    json_decref(array);
}

static void s_test_cut(void)
{
    //  Anthropic -> OpenAI cut after a text delta: the client sees the text,
    //  then an error, never a clean [DONE].
    proto_convert_stream_t *stream =
        proto_convert_stream_new(PROTO_PROTOCOL_ANTHROPIC, PROTO_PROTOCOL_OPENAI, "gpt", true);
    int rc;
    json_t *events =
        s_feed(stream, "message_start",
               "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":"
               "{\"input_tokens\":10,\"cache_read_input_tokens\":90,\"output_tokens\":1}}}",
               &rc);
    PROTO_CHECK(rc == 0 && json_array_size(events) == 1);
    json_decref(events);
    events = s_feed(stream, "content_block_start",
                    "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
                    "\"text\",\"text\":\"\"}}",
                    &rc);
    //  An empty text block announces nothing.
    PROTO_CHECK(rc == 0 && json_array_size(events) == 0);
    json_decref(events);
    events = s_feed(stream, "content_block_delta",
                    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
                    "\"text_delta\",\"text\":\"Hi\"}}",
                    &rc);
    PROTO_CHECK(rc == 0 && json_array_size(events) == 1);
    json_decref(events);
    zchunk_t *out = zchunk_new(NULL, 0);
    PROTO_CHECK(proto_convert_stream_finish(stream, false, out) == -1);
    zchunk_extend(out, "", 1);
    PROTO_CHECK(strstr((const char *)zchunk_data(out), "\"error\""));
    PROTO_CHECK(!strstr((const char *)zchunk_data(out), "[DONE]"));
    zchunk_destroy(&out);
    proto_usage_t usage;
    proto_convert_stream_usage(stream, &usage);
    //  Cached tokens survive even a cut stream.
    PROTO_CHECK(usage.tokens_cache_read == 90 && usage.tokens_in == 10);
    proto_convert_stream_destroy(&stream);
}

static void s_test_paths(void)
{
    char path[128];
    PROTO_CHECK(proto_convert_upstream_path(PROTO_PROTOCOL_GEMINI, "gemini-2.5-flash", true, path,
                                            sizeof path) == 0);
    PROTO_CHECK(strcmp(path, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse") == 0);
    PROTO_CHECK(proto_convert_upstream_path(PROTO_PROTOCOL_GEMINI, "x/../y", false, path,
                                            sizeof path) == -1);
    PROTO_CHECK(
        proto_convert_upstream_path(PROTO_PROTOCOL_ANTHROPIC, "c", true, path, sizeof path) == 0);
    PROTO_CHECK(strcmp(path, "/v1/messages") == 0);
    PROTO_CHECK(proto_convert_upstream_path(PROTO_PROTOCOL_OPENAI, "c", true, path, 4) == -1);
}

static void s_test_errors(void)
{
    const char *body = "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":"
                       "\"Overloaded\"}}";
    char *converted = proto_convert_error_body(PROTO_PROTOCOL_ANTHROPIC, PROTO_PROTOCOL_OPENAI, 529,
                                               body, strlen(body));
    json_t *json = json_loads(converted, 0, NULL);
    PROTO_CHECK(
        strcmp(json_string_value(json_object_get(json_object_get(json, "error"), "message")),
               "Overloaded") == 0);
    json_decref(json);
    free(converted);
    converted =
        proto_convert_error_body(PROTO_PROTOCOL_GEMINI, PROTO_PROTOCOL_ANTHROPIC, 502, "<html>", 6);
    PROTO_CHECK(strstr(converted, "\"type\":\"error\"") && strstr(converted, "HTTP 502"));
    free(converted);
}

void proto_convert_test(bool verbose)
{
    printf(" * proto_convert: ");
    if (verbose)
        printf("\n");
    int count = s_fixtures(verbose);
    s_test_malformed();
    s_test_cut();
    s_test_paths();
    s_test_errors();
    printf("OK (%d fixtures)\n", count);
}
