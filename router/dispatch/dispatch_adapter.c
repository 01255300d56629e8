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
//  Editing a JSON body in place. A body that jansson re-encodes comes out
//  changed: 0.7 becomes 0.69999999999999996 and integers past int64 do not
//  load at all. So jansson only validates and reads; the edits are made on
//  the client's own bytes, which stay as they were everywhere else.

typedef struct {
    size_t at;     //  offset in the original text
    size_t remove; //  bytes replaced there
    char *insert;  //  text put in their place (owned)
} s_edit_t;

#define S_EDITS_MAX 16

static const char *s_space(const char *at, const char *end)
{
    while (at < end && (*at == ' ' || *at == '\t' || *at == '\n' || *at == '\r'))
        at++;
    return at;
}

//  Skips one value of already validated JSON; returns what follows it.
static const char *s_skip(const char *at, const char *end)
{
    if (at < end && *at == '"') {
        for (at++; at < end && *at != '"'; at++)
            if (*at == '\\')
                at++;
        return at < end ? at + 1 : end;
    }
    if (at < end && (*at == '{' || *at == '[')) {
        int depth = 0;
        while (at < end) {
            if (*at == '"') {
                at = s_skip(at, end);
                continue;
            }
            if (*at == '{' || *at == '[')
                depth++;
            else if ((*at == '}' || *at == ']') && --depth == 0)
                return at + 1;
            at++;
        }
        return end;
    }
    while (at < end && !strchr(",}] \t\r\n", *at))
        at++;
    return at;
}

//  True when the JSON string token [at, token_end) means `key`.
static bool s_key_is(const char *at, const char *token_end, const char *key)
{
    size_t size = (size_t)(token_end - at) - 2;
    if (!memchr(at + 1, '\\', size))
        return size == strlen(key) && memcmp(at + 1, key, size) == 0;
    json_t *decoded = json_loadb(at, (size_t)(token_end - at), JSON_DECODE_ANY, NULL);
    bool same = json_is_string(decoded) && strcmp(json_string_value(decoded), key) == 0;
    json_decref(decoded);
    return same;
}

//  Finds the values of `key` among the members of the object opening at
//  `open`: fills up to max [start, end) offset pairs, returns how many
//  there are (which may be more than max).
//  *close gets the offset of the object's closing brace.
static size_t s_members(const char *text, size_t size, size_t open, const char *key,
                        size_t (*spans)[2], size_t max, size_t *close)
{
    const char *end = text + size;
    const char *at = s_space(text + open + 1, end);
    size_t found = 0;
    while (at < end && *at == '"') {
        const char *key_end = s_skip(at, end);
        bool match = s_key_is(at, key_end, key);
        const char *value = s_space(key_end, end);
        value = s_space(value + 1, end); //  past the colon
        const char *value_end = s_skip(value, end);
        if (match) {
            if (found < max) {
                spans[found][0] = (size_t)(value - text);
                spans[found][1] = (size_t)(value_end - text);
            }
            found++;
        }
        at = s_space(value_end, end);
        if (at < end && *at == ',')
            at = s_space(at + 1, end);
    }
    *close = (size_t)(at - text);
    return found;
}

static void s_edit(s_edit_t *edits, size_t *count, size_t at, size_t remove, const char *text)
{
    assert(*count < S_EDITS_MAX);
    edits[(*count)++] = (s_edit_t){at, remove, strdup(text)};
}

static int s_edit_order(const void *a, const void *b)
{
    const s_edit_t *x = a, *y = b;
    return x->at < y->at ? -1 : x->at > y->at;
}

//  Applies edits to text. Caller owns return value.
static char *s_apply(const char *text, size_t size, s_edit_t *edits, size_t count, size_t *out_size)
{
    qsort(edits, count, sizeof *edits, s_edit_order);
    size_t total = size;
    for (size_t i = 0; i < count; i++)
        total += strlen(edits[i].insert) - edits[i].remove;
    char *out = malloc(total + 1);
    assert(out);
    size_t from = 0, to = 0;
    for (size_t i = 0; i < count; i++) {
        memcpy(out + to, text + from, edits[i].at - from);
        to += edits[i].at - from;
        size_t length = strlen(edits[i].insert);
        memcpy(out + to, edits[i].insert, length);
        to += length;
        from = edits[i].at + edits[i].remove;
        free(edits[i].insert);
    }
    memcpy(out + to, text + from, size - from);
    to += size - from;
    out[to] = '\0';
    *out_size = to;
    return out;
}

//  --------------------------------------------------------------------------
//  OpenAI Chat Completions to OpenAI Chat Completions: the body goes through
//  untouched but for `model` and, on streams, stream_options.include_usage,
//  which we force on because billing needs the usage.

static int s_openai_request(dispatch_convert_t *conv, const char *body, size_t size,
                            const char *upstream_model, char **out, size_t *out_size)
{
    json_error_t error;
    json_t *root = json_loadb(body, size, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &error);
    if (!root)
        return s_fail(conv, "request body is not valid JSON: %s", error.text);
    int rc = -1;
    s_edit_t edits[S_EDITS_MAX];
    size_t count = 0;
    char *model = NULL;
    if (!json_is_object(root)) {
        s_fail(conv, "request body must be a JSON object%s", NULL);
        goto done;
    }
    conv->stream = json_is_true(json_object_get(root, "stream"));
    json_t *options = json_object_get(root, "stream_options");
    if (conv->stream && options && !json_is_object(options) && !json_is_null(options)) {
        s_fail(conv, "stream_options must be an object%s", NULL);
        goto done;
    }
    conv->client_usage = conv->stream && json_is_true(json_object_get(options, "include_usage"));

    size_t open = (size_t)(s_space(body, body + size) - body);
    size_t spans[S_EDITS_MAX / 2][2], close;
    json_t *name = json_string(upstream_model);
    model = json_dumps(name, JSON_ENCODE_ANY);
    json_decref(name);
    //  Every "model" member, should the client have sent two: the upstream
    //  model is ours to choose, whichever one a parser keeps.
    size_t models = s_members(body, size, open, "model", spans, S_EDITS_MAX / 2, &close);
    if (models > S_EDITS_MAX / 2) {
        s_fail(conv, "request body repeats \"model\" too often%s", NULL);
        goto done;
    }
    for (size_t i = 0; i < models; i++)
        s_edit(edits, &count, spans[i][0], spans[i][1] - spans[i][0], model);
    bool empty = body[s_space(body + open + 1, body + size) - body] == '}';
    char tail[2048] = "";
    if (!models)
        snprintf(tail, sizeof tail, "%s\"model\":%s", empty ? "" : ",", model);
    if (conv->stream) {
        size_t options_found =
            s_members(body, size, open, "stream_options", spans, S_EDITS_MAX / 2, &close);
        if (options_found && body[spans[options_found - 1][0]] == '{') {
            //  The last one is what parsers keep.
            size_t inner = spans[options_found - 1][0], inner_close;
            size_t usage[S_EDITS_MAX / 4][2];
            size_t found =
                s_members(body, size, inner, "include_usage", usage, S_EDITS_MAX / 4, &inner_close);
            if (found > S_EDITS_MAX / 4) {
                s_fail(conv, "stream_options repeats \"include_usage\" too often%s", NULL);
                goto done;
            }
            for (size_t i = 0; i < found; i++)
                s_edit(edits, &count, usage[i][0], usage[i][1] - usage[i][0], "true");
            if (!found) {
                bool inner_empty = body[s_space(body + inner + 1, body + size) - body] == '}';
                s_edit(edits, &count, inner + 1, 0,
                       inner_empty ? "\"include_usage\":true" : "\"include_usage\":true,");
            }
        } else if (options_found)
            s_edit(edits, &count, spans[options_found - 1][0],
                   spans[options_found - 1][1] - spans[options_found - 1][0],
                   "{\"include_usage\":true}");
        else {
            size_t used = strlen(tail);
            snprintf(tail + used, sizeof tail - used,
                     "%s\"stream_options\":{\"include_usage\":true}", empty && !used ? "" : ",");
        }
    }
    if (*tail)
        s_edit(edits, &count, close, 0, tail);
    *out = s_apply(body, size, edits, count, out_size);
    count = 0;
    rc = 0;
done:
    for (size_t i = 0; i < count; i++)
        free(edits[i].insert);
    free(model);
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

    //  Request rewriting: model replaced in place, every other byte kept
    //  (floats, big integers, spacing), usage asked for on streams, the
    //  client's own wish remembered.
    struct {
        const char *in;    //  client body
        const char *out;   //  upstream body
        bool stream;       //  upstream asked to stream
        bool client_usage; //  client asked for usage
    } cases[] = {
        {"{\"model\":\"gpt\",\"messages\":[{\"role\":\"user\",\"content\":\"h\u00e9 \\\"x\\\"\"}],"
         "\"stream\":true,\"temperature\":0.7}",
         "{\"model\":\"up-model\",\"messages\":[{\"role\":\"user\",\"content\":\"h\u00e9 "
         "\\\"x\\\"\"}],\"stream\":true,\"temperature\":0.7,\"stream_options\":{\"include_usage\":"
         "true}}",
         true, false},
        {"{\"stream_options\":{\"include_usage\":true},\"stream\":true,\"model\":\"gpt\"}",
         "{\"stream_options\":{\"include_usage\":true},\"stream\":true,\"model\":\"up-model\"}",
         true, true},
        {" { \"model\" : \"gpt\" , \"stream\" : true , \"stream_options\" : { \"include_usage\" : "
         "false } , \"seed\" : 123456789012345678901234 } ",
         " { \"model\" : \"up-model\" , \"stream\" : true , \"stream_options\" : { "
         "\"include_usage\" "
         ": true } , \"seed\" : 123456789012345678901234 } ",
         true, false},
        {"{\"stream\":true,\"stream_options\":{\"x\":{\"model\":1}},\"model\":\"a\","
         "\"mo\\u0064el\":"
         "\"b\"}",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true,\"x\":{\"model\":1}},"
         "\"model\":"
         "\"up-model\",\"mo\\u0064el\":\"up-model\"}",
         true, false},
        {"{\"stream\":true,\"stream_options\":null,\"model\":\"a\"}",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"model\":\"up-model\"}",
         true, false},
        {"{\"stream\":true,\"stream_options\":{}}",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"model\":\"up-model\"}",
         true, false},
        {"{}", "{\"model\":\"up-model\"}", false, false},
        {"{\"model\":\"gpt\",\"stream\":false}", "{\"model\":\"up-model\",\"stream\":false}", false,
         false},
    };
    char *out;
    size_t out_size;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dispatch_convert_init(&conv, adapter);
        assert(adapter->request(&conv, cases[i].in, strlen(cases[i].in), "up-model", &out,
                                &out_size) == 0);
        if (strcmp(out, cases[i].out) != 0)
            fprintf(stderr, "\ncase %zu: %s\n", i, out);
        assert(strcmp(out, cases[i].out) == 0 && out_size == strlen(out));
        assert(conv.stream == cases[i].stream && conv.client_usage == cases[i].client_usage);
        json_t *valid = json_loadb(out, out_size, JSON_DECODE_INT_AS_REAL, NULL);
        assert(json_is_object(valid));
        json_decref(valid);
        free(out);
    }
    //  A model name that needs escaping is escaped.
    dispatch_convert_init(&conv, adapter);
    assert(adapter->request(&conv, "{\"model\":1}", 11, "a\"b", &out, &out_size) == 0);
    assert(strcmp(out, "{\"model\":\"a\\\"b\"}") == 0);
    free(out);
    //  Client errors, including more "model" members than we would replace.
    char many[256] = "{";
    for (int i = 0; i < 9; i++)
        strcat(many, i ? ",\"model\":\"x\"" : "\"model\":\"x\"");
    strcat(many, "}");
    assert(adapter->request(&conv, many, strlen(many), "m", &out, &out_size) == -1);
    assert(adapter->request(&conv, "[1]", 3, "m", &out, &out_size) == -1);
    assert(strstr(conv.error, "object"));
    assert(adapter->request(&conv, "{\"a\":", 5, "m", &out, &out_size) == -1);
    assert(strstr(conv.error, "not valid JSON"));
    const char *body = "{\"stream\":true,\"stream_options\":3}";
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
