#include "dispatch_adapter.h"
#include "proto_error.h"
#include "proto_msg.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

static int s_fail(dispatch_convert_t *conv, const char *format, const char *detail)
{
    snprintf(conv->error, sizeof conv->error, format, detail ? detail : "");
    return -1;
}

static void s_append(zchunk_t *out, const void *data, size_t size)
{
    if (size)
        zchunk_extend(out, data, size);
}

//  --------------------------------------------------------------------------
//  OpenAI Chat Completions to OpenAI Chat Completions: the body goes through
//  untouched but for `model` and, on streams, stream_options.include_usage,
//  which we force on because billing needs the usage. Jansson keeps the
//  order of keys, so the upstream sees the client's body in its own order.

static int s_openai_request(dispatch_convert_t *conv, const char *body, size_t size,
                            const char *upstream_model, char **out, size_t *out_size)
{
    json_error_t error;
    json_t *root = json_loadb(body, size, JSON_ALLOW_NUL, &error);
    if (!root)
        return s_fail(conv, "request body is not valid JSON: %s", error.text);
    int rc = -1;
    if (!json_is_object(root)) {
        s_fail(conv, "request body must be a JSON object%s", NULL);
        goto done;
    }
    json_object_set_new(root, "model", json_string(upstream_model));
    conv->stream = json_is_true(json_object_get(root, "stream"));
    if (conv->stream) {
        json_t *options = json_object_get(root, "stream_options");
        if (json_is_object(options)) {
            conv->client_usage = json_is_true(json_object_get(options, "include_usage"));
            json_object_set_new(options, "include_usage", json_true());
        } else if (!options || json_is_null(options))
            json_object_set_new(root, "stream_options", json_pack("{s:b}", "include_usage", 1));
        else {
            s_fail(conv, "stream_options must be an object%s", NULL);
            goto done;
        }
    }
    *out = json_dumps(root, JSON_COMPACT);
    if (!*out) {
        s_fail(conv, "request body could not be re-encoded%s", NULL);
        goto done;
    }
    *out_size = strlen(*out);
    rc = 0;
done:
    json_decref(root);
    return rc;
}

//  The message of an error object, for logs and our own error event.
static const char *s_error_message(json_t *error)
{
    const char *message = json_string_value(json_object_get(error, "message"));
    return message ? message : json_string_value(error) ? json_string_value(error) : "(none)";
}

static int s_openai_event(dispatch_convert_t *conv, const proto_sse_event_t *event, zchunk_t *out)
{
    //  Comments and blocks without data (keep-alives) pass as they came.
    if (!event->has_data) {
        s_append(out, event->raw, event->raw_size);
        return 0;
    }
    if (strcmp(event->data, "[DONE]") == 0) {
        conv->complete = true;
        s_append(out, event->raw, event->raw_size);
        return 0;
    }
    json_t *chunk = json_loadb(event->data, event->data_size, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(chunk)) {
        json_decref(chunk);
        return s_fail(conv, "upstream sent a stream event that is not a JSON object%s", NULL);
    }
    json_t *error = json_object_get(chunk, "error");
    if (error) {
        s_fail(conv, "upstream reported an error in the stream: %.200s", s_error_message(error));
        json_decref(chunk);
        return -1;
    }
    int has_usage =
        proto_usage_from_json(PROTO_PROTOCOL_OPENAI, chunk, event->name, true, &conv->usage);
    conv->content_bytes += proto_usage_content_bytes(PROTO_PROTOCOL_OPENAI, chunk, true);
    json_t *choices = json_object_get(chunk, "choices");
    //  The usage-only chunk exists because we asked for it; a client that
    //  did not ask must not see it (strict SDKs index choices[0]).
    bool usage_only = has_usage && json_is_array(choices) && json_array_size(choices) == 0;
    if (!usage_only || conv->client_usage)
        s_append(out, event->raw, event->raw_size);
    json_decref(chunk);
    return 0;
}

static int s_openai_body(dispatch_convert_t *conv, const char *body, size_t size, zchunk_t *out)
{
    json_t *answer = json_loadb(body, size, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(answer)) {
        json_decref(answer);
        return s_fail(conv, "upstream answer is not a JSON object%s", NULL);
    }
    memset(&conv->usage, 0, sizeof conv->usage);
    proto_usage_from_json(PROTO_PROTOCOL_OPENAI, answer, NULL, false, &conv->usage);
    conv->content_bytes += proto_usage_content_bytes(PROTO_PROTOCOL_OPENAI, answer, false);
    json_decref(answer);
    s_append(out, body, size);
    return 0;
}

//  Same protocol: the upstream's own error body is already in the client's
//  shape. Anything that is not a JSON object (a proxy's HTML page) is
//  replaced by our own error body, so the client always gets its format.
static void s_same_protocol_error(dispatch_convert_t *conv, int status, const char *body,
                                  size_t size, zchunk_t *out)
{
    json_t *parsed = size ? json_loadb(body, size, JSON_ALLOW_NUL, NULL) : NULL;
    if (json_is_object(parsed))
        s_append(out, body, size);
    else {
        char message[96];
        snprintf(message, sizeof message, "upstream answered HTTP %d", status);
        char *own =
            proto_error_body(conv->adapter->client_protocol, status, "upstream_error", message);
        s_append(out, own, strlen(own));
        free(own);
    }
    json_decref(parsed);
}

//  --------------------------------------------------------------------------
//  The table. Converters between protocols (Anthropic, Gemini, Responses)
//  are added here as rows.

static const dispatch_adapter_t s_adapters[] = {
    {PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI, "openai>openai", s_openai_request,
     s_openai_event, s_openai_body, s_same_protocol_error, NULL},
};

const dispatch_adapter_t *dispatch_adapter_find(int client_protocol, int upstream_protocol)
{
    for (size_t i = 0; i < sizeof s_adapters / sizeof s_adapters[0]; i++)
        if (s_adapters[i].client_protocol == client_protocol &&
            s_adapters[i].upstream_protocol == upstream_protocol)
            return &s_adapters[i];
    return NULL;
}

void dispatch_convert_init(dispatch_convert_t *conv, const dispatch_adapter_t *adapter)
{
    memset(conv, 0, sizeof *conv);
    conv->adapter = adapter;
}

void dispatch_convert_clear(dispatch_convert_t *conv)
{
    if (conv->extra && conv->adapter && conv->adapter->free_extra)
        conv->adapter->free_extra(conv->extra);
    conv->extra = NULL;
}

//  --------------------------------------------------------------------------
//  Self test

typedef struct {
    dispatch_convert_t *conv; //  the conversion under test
    zchunk_t *out;            //  what the client would get
    int failures;             //  events refused
} s_test_t;

static int s_test_event(const proto_sse_event_t *event, void *arg)
{
    s_test_t *test = arg;
    if (test->conv->adapter->event(test->conv, event, test->out) != 0)
        test->failures++;
    return 0;
}

static char *s_test_text(zchunk_t *chunk)
{
    return strndup((const char *)zchunk_data(chunk), zchunk_size(chunk));
}

//  Runs a whole upstream stream through the adapter and returns the client's bytes.
static char *s_test_stream(dispatch_convert_t *conv, const char *stream, int *failures)
{
    s_test_t test = {conv, zchunk_new(NULL, 0), 0};
    proto_sse_t *sse = proto_sse_new(0);
    assert(proto_sse_feed(sse, stream, strlen(stream), s_test_event, &test) == 0);
    assert(proto_sse_finish(sse, s_test_event, &test) == 0);
    proto_sse_destroy(&sse);
    char *text = s_test_text(test.out);
    zchunk_destroy(&test.out);
    *failures = test.failures;
    return text;
}

#define S_CHUNK(content)                                                                           \
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"         \
    "\"delta\":{\"content\":\"" content "\"},\"finish_reason\":null}],\"usage\":null}\n\n"
#define S_USAGE                                                                                    \
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":"          \
    "{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15,"                           \
    "\"prompt_tokens_details\":{\"cached_tokens\":2}}}\n\n"

void dispatch_adapter_test(bool verbose)
{
    if (verbose)
        printf(" * dispatch_adapter: ");
    assert(dispatch_adapter_find(PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI));
    assert(!dispatch_adapter_find(PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_ANTHROPIC));
    assert(!dispatch_adapter_find(PROTO_PROTOCOL_GEMINI, PROTO_PROTOCOL_OPENAI));
    const dispatch_adapter_t *adapter =
        dispatch_adapter_find(PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI);
    dispatch_convert_t conv;

    //  Request rewriting: model replaced in place, key order kept, usage
    //  asked for on streams, the client's own wish remembered.
    dispatch_convert_init(&conv, adapter);
    const char *body = "{\"model\":\"gpt\",\"messages\":[{\"role\":\"user\",\"content\":\"hé\"}],"
                       "\"stream\":true,\"temperature\":0.5}";
    char *out;
    size_t out_size;
    assert(adapter->request(&conv, body, strlen(body), "up-model", &out, &out_size) == 0);
    assert(strcmp(out, "{\"model\":\"up-model\",\"messages\":[{\"role\":\"user\",\"content\":"
                       "\"hé\"}],\"stream\":true,\"temperature\":0.5,\"stream_options\":"
                       "{\"include_usage\":true}}") == 0);
    assert(out_size == strlen(out));
    assert(conv.stream && !conv.client_usage);
    free(out);
    dispatch_convert_init(&conv, adapter);
    body = "{\"stream_options\":{\"include_usage\":true},\"stream\":true,\"model\":\"gpt\"}";
    assert(adapter->request(&conv, body, strlen(body), "m2", &out, &out_size) == 0);
    assert(strcmp(out, "{\"stream_options\":{\"include_usage\":true},\"stream\":true,\"model\":"
                       "\"m2\"}") == 0);
    assert(conv.stream && conv.client_usage);
    free(out);
    dispatch_convert_init(&conv, adapter);
    body = "{\"model\":\"gpt\",\"stream\":false}";
    assert(adapter->request(&conv, body, strlen(body), "m3", &out, &out_size) == 0);
    assert(strcmp(out, "{\"model\":\"m3\",\"stream\":false}") == 0 && !conv.stream);
    free(out);
    //  Client errors.
    assert(adapter->request(&conv, "[1]", 3, "m", &out, &out_size) == -1);
    assert(strstr(conv.error, "object"));
    assert(adapter->request(&conv, "{\"a\":", 5, "m", &out, &out_size) == -1);
    assert(strstr(conv.error, "not valid JSON"));
    body = "{\"stream\":true,\"stream_options\":3}";
    assert(adapter->request(&conv, body, strlen(body), "m", &out, &out_size) == -1);

    //  Streams: the usage-only chunk is dropped for a client that did not
    //  ask, kept for one that did; usage is read either way.
    const char *stream = ": keep-alive\n\n" S_CHUNK("Hel") S_CHUNK("lo") S_USAGE "data: [DONE]\n\n";
    int failures;
    dispatch_convert_init(&conv, adapter);
    char *client = s_test_stream(&conv, stream, &failures);
    assert(failures == 0 && conv.complete);
    assert(strcmp(client, ": keep-alive\n\n" S_CHUNK("Hel") S_CHUNK("lo") "data: [DONE]\n\n") == 0);
    assert(conv.usage.tokens_in == 10 && conv.usage.tokens_cache_read == 2);
    assert(conv.usage.tokens_out == 3 && conv.usage.seen_out);
    assert(conv.content_bytes == 5);
    free(client);
    dispatch_convert_init(&conv, adapter);
    conv.client_usage = true;
    client = s_test_stream(&conv, stream, &failures);
    assert(strcmp(client, stream) == 0);
    free(client);

    //  A cut stream is not complete; a broken or error event is refused.
    dispatch_convert_init(&conv, adapter);
    client = s_test_stream(&conv, S_CHUNK("a") "data: {\"id\":", &failures);
    assert(!conv.complete && failures == 0 && strcmp(client, S_CHUNK("a")) == 0);
    free(client);
    dispatch_convert_init(&conv, adapter);
    client = s_test_stream(&conv, "data: {\"choices\":[{\"delta\n\n", &failures);
    assert(failures == 1 && strstr(conv.error, "not a JSON object"));
    free(client);
    dispatch_convert_init(&conv, adapter);
    client = s_test_stream(&conv, "data: {\"error\":{\"message\":\"overloaded\"}}\n\n", &failures);
    assert(failures == 1 && strstr(conv.error, "overloaded") && !*client);
    free(client);

    //  Whole answers: usage read, body untouched.
    dispatch_convert_init(&conv, adapter);
    zchunk_t *chunk = zchunk_new(NULL, 0);
    const char *answer = "{\"choices\":[{\"message\":{\"content\":\"abcdefgh\"}}],"
                         "\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}";
    assert(adapter->body(&conv, answer, strlen(answer), chunk) == 0);
    assert(zchunk_size(chunk) == strlen(answer) && conv.usage.tokens_in == 7);
    assert(conv.content_bytes == 8);
    assert(adapter->body(&conv, "<html>", 6, chunk) == -1);
    zchunk_destroy(&chunk);

    //  Error bodies: JSON passes, anything else becomes ours.
    chunk = zchunk_new(NULL, 0);
    adapter->error_body(&conv, 400, "{\"error\":{\"message\":\"bad\"}}", 27, chunk);
    assert(zchunk_size(chunk) == 27);
    zchunk_destroy(&chunk);
    chunk = zchunk_new(NULL, 0);
    adapter->error_body(&conv, 502, "<html>bad gateway</html>", 24, chunk);
    char *text = s_test_text(chunk);
    assert(strstr(text, "\"upstream answered HTTP 502\"") && strstr(text, "server_error"));
    free(text);
    zchunk_destroy(&chunk);
    dispatch_convert_clear(&conv);
    if (verbose)
        printf("OK\n");
}
