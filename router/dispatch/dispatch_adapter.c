#include "dispatch_adapter.h"
#include "proto_check.h"
#include "proto_convert.h"
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
//  Passthrough: client and upstream speak the same protocol. The body goes
//  through untouched but for `model` (Gemini names it in the path, so its
//  body is not touched at all) and, on OpenAI Chat streams,
//  stream_options.include_usage, which we force on because billing needs
//  the usage.

static int s_pass_request(dispatch_convert_t *conv, const char *body, size_t size,
                          const char *upstream_model, char **out, size_t *out_size)
{
    int protocol = conv->adapter->endpoint_protocol;
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
    conv->content_type = conv->json_array ? "application/json" : "text/event-stream";
    if (protocol == PROTO_PROTOCOL_GEMINI) {
        //  The stream flag is the path's (streamGenerateContent) and the
        //  model is in the URL: nothing in the body to change.
        conv->stream = conv->client_stream && !conv->count_tokens;
        conv->client_usage = true;
        *out = malloc(size + 1);
        assert(*out);
        memcpy(*out, body, size);
        (*out)[size] = '\0';
        *out_size = size;
        rc = 0;
        goto done;
    }
    conv->stream = !conv->count_tokens && protocol != PROTO_PROTOCOL_OPENAI_EMBEDDINGS &&
                   json_is_true(json_object_get(root, "stream"));
    bool usage_options = protocol == PROTO_PROTOCOL_OPENAI && conv->stream;
    json_t *options = json_object_get(root, "stream_options");
    if (usage_options && options && !json_is_object(options) && !json_is_null(options)) {
        s_fail(conv, "stream_options must be an object%s", NULL);
        goto done;
    }
    //  Only OpenAI Chat makes usage in a stream optional; the others always
    //  carry it.
    conv->client_usage = protocol != PROTO_PROTOCOL_OPENAI ||
                         (conv->stream && json_is_true(json_object_get(options, "include_usage")));

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
    if (usage_options) {
        size_t options_found =
            s_members(body, size, open, "stream_options", spans, S_EDITS_MAX / 2, &close);
        //  s_members counts past what `spans` holds: the last one must be in it.
        if (options_found > S_EDITS_MAX / 2) {
            s_fail(conv, "request body repeats \"stream_options\" too often%s", NULL);
            goto done;
        }
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

//  Reads one passed-through event: its end marker, an error it reports
//  (returned, borrowed from event), for Gemini a finish reason.
static json_t *s_pass_read(dispatch_convert_t *conv, int protocol, const char *name, json_t *event)
{
    const char *type = name && *name ? name : json_string_value(json_object_get(event, "type"));
    type = type ? type : "";
    switch (protocol) {
    case PROTO_PROTOCOL_ANTHROPIC:
        if (strcmp(type, "message_stop") == 0)
            conv->complete = true;
        if (strcmp(type, "error") == 0) {
            json_t *error = json_object_get(event, "error");
            return error ? error : event;
        }
        return NULL;
    case PROTO_PROTOCOL_OPENAI_RESPONSES:
        if (strcmp(type, "response.completed") == 0 || strcmp(type, "response.incomplete") == 0)
            conv->complete = true;
        if (strcmp(type, "error") == 0)
            return event;
        if (strcmp(type, "response.failed") == 0) {
            json_t *error = json_object_get(json_object_get(event, "response"), "error");
            return json_is_object(error) ? error : event;
        }
        return NULL;
    case PROTO_PROTOCOL_GEMINI: {
        //  Gemini has no end event: the chunk with a finish reason (or a
        //  blocked prompt's feedback) is the last.
        json_t *candidate = json_array_get(json_object_get(event, "candidates"), 0);
        if (json_object_get(candidate, "finishReason") ||
            json_object_get(json_object_get(event, "promptFeedback"), "blockReason"))
            conv->complete = true;
        return json_object_get(event, "error");
    }
    default:
        return json_object_get(event, "error");
    }
}

static int s_pass_event(dispatch_convert_t *conv, const proto_sse_event_t *event, zchunk_t *out)
{
    int protocol = conv->adapter->endpoint_protocol;
    //  Comments and blocks without data (keep-alives) pass as they came,
    //  except into a JSON array, which has no place for them.
    if (!event->has_data) {
        if (!conv->json_array)
            s_append(out, event->raw, event->raw_size);
        return 0;
    }
    if (protocol == PROTO_PROTOCOL_OPENAI && strcmp(event->data, "[DONE]") == 0) {
        conv->complete = true;
        s_append(out, event->raw, event->raw_size);
        return 0;
    }
    json_t *chunk = json_loadb(event->data, event->data_size, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(chunk)) {
        json_decref(chunk);
        return s_fail(conv, "upstream sent a stream event that is not a JSON object%s", NULL);
    }
    json_t *error = s_pass_read(conv, protocol, event->name, chunk);
    if (error) {
        s_fail(conv, "upstream reported an error in the stream: %.200s", s_error_message(error));
        json_decref(chunk);
        return -1;
    }
    int has_usage = proto_usage_from_json(protocol, chunk, event->name, true, &conv->usage);
    conv->content_bytes += proto_usage_content_bytes(protocol, chunk, true);
    json_t *choices = json_object_get(chunk, "choices");
    //  OpenAI's usage-only chunk exists because we asked for it; a client
    //  that did not ask must not see it (strict SDKs index choices[0]).
    bool usage_only = protocol == PROTO_PROTOCOL_OPENAI && has_usage && json_is_array(choices) &&
                      json_array_size(choices) == 0;
    if (conv->json_array) {
        //  A Gemini client without alt=sse reads the same chunks as the
        //  elements of one JSON array, as Gemini itself sends them.
        s_append(out, conv->items ? ",\r\n" : "[", conv->items ? 3 : 1);
        s_append(out, event->data, event->data_size);
        conv->items++;
    } else if (!usage_only || conv->client_usage)
        s_append(out, event->raw, event->raw_size);
    json_decref(chunk);
    return 0;
}

static int s_pass_body(dispatch_convert_t *conv, const char *body, size_t size, zchunk_t *out)
{
    int protocol = conv->adapter->endpoint_protocol;
    json_t *answer = json_loadb(body, size, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(answer)) {
        json_decref(answer);
        return s_fail(conv, "upstream answer is not a JSON object%s", NULL);
    }
    memset(&conv->usage, 0, sizeof conv->usage);
    proto_usage_from_json(protocol, answer, NULL, false, &conv->usage);
    conv->content_bytes += proto_usage_content_bytes(protocol, answer, false);
    json_decref(answer);
    s_append(out, body, size);
    return 0;
}

//  Same protocol: the upstream's own error body is already in the client's
//  shape. Anything that is not a JSON object (a proxy's HTML page) is
//  replaced by our own error body, so the client always gets its format.
static void s_pass_error(dispatch_convert_t *conv, int status, const char *body, size_t size,
                         zchunk_t *out)
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

static void s_pass_finish(dispatch_convert_t *conv, bool completed, int status, const char *code,
                          const char *message, zchunk_t *out)
{
    int client = conv->adapter->client_protocol;
    if (conv->json_array) {
        //  The error is the array's last element, and the array is closed
        //  either way so that the client's JSON parser sees the end.
        if (!completed) {
            char *body = proto_error_body(client, status, code, message);
            s_append(out, conv->items ? ",\r\n" : "[", conv->items ? 3 : 1);
            s_append(out, body, strlen(body));
            free(body);
            conv->items++;
        } else if (!conv->items)
            s_append(out, "[", 1);
        s_append(out, "]", 1);
        return;
    }
    if (completed)
        return; //  the upstream's own end marker went out with its event
    char *event = proto_error_event(client, status, code, message);
    s_append(out, event, strlen(event));
    free(event);
}

//  --------------------------------------------------------------------------
//  Conversion between two of the four generative protocols, through
//  proto_convert. conv->extra holds the stream converter of a streamed
//  attempt.

//  Names joined with "," as the x-tollgate-dropped-fields header carries
//  them; a list too long for the buffer ends with "..." .
static void s_join_names(const json_t *names, char *text, size_t size)
{
    size_t used = 0;
    size_t index;
    json_t *item;
    *text = 0;
    json_array_foreach(names, index, item)
    {
        const char *name = json_string_value(item);
        size_t need = strlen(name) + (index ? 1 : 0);
        if (used + need + 4 >= size) {
            snprintf(text + used, size - used, "%s...", index ? "," : "");
            return;
        }
        used += (size_t)snprintf(text + used, size - used, "%s%s", index ? "," : "", name);
    }
}

static int s_conv_request(dispatch_convert_t *conv, const char *body, size_t size,
                          const char *upstream_model, char **out, size_t *out_size)
{
    int client = conv->adapter->client_protocol;
    int upstream = conv->adapter->upstream_protocol;
    json_error_t error;
    json_t *root = json_loadb(body, size, 0, &error);
    if (!root)
        return s_fail(conv, "request body is not valid JSON: %s", error.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return s_fail(conv, "request body must be a JSON object%s", NULL);
    }
    bool stream = client == PROTO_PROTOCOL_GEMINI ? conv->client_stream
                                                  : json_is_true(json_object_get(root, "stream"));
    json_t *dropped = json_array();
    json_t *converted =
        proto_convert_request_policy(client, upstream, root, upstream_model, stream, conv->strict,
                                     dropped, conv->error, sizeof conv->error);
    s_join_names(dropped, conv->dropped, sizeof conv->dropped);
    json_decref(dropped);
    if (!converted) {
        json_decref(root);
        return -1;
    }
    conv->stream = stream;
    conv->client_usage = proto_convert_client_wants_usage(client, root);
    conv->content_type = conv->json_array ? "application/json" : "text/event-stream";
    json_decref(root);
    *out = json_dumps(converted, JSON_COMPACT);
    json_decref(converted);
    if (!*out)
        return s_fail(conv, "the converted request could not be written%s", NULL);
    *out_size = strlen(*out);
    if (stream) {
        proto_convert_stream_t *converter = proto_convert_stream_new(
            upstream, client, conv->client_model ? conv->client_model : upstream_model,
            conv->client_usage);
        assert(converter); //  every row of the table is a supported pair
        proto_convert_stream_set_json_array(converter, conv->json_array);
        conv->extra = converter;
    }
    return 0;
}

static int s_conv_event(dispatch_convert_t *conv, const proto_sse_event_t *event, zchunk_t *out)
{
    //  Keep-alive comments have no place in a converted stream (nor in a
    //  JSON array); the client's stream has its own shape.
    if (!event->has_data)
        return 0;
    proto_convert_stream_t *converter = conv->extra;
    if (!converter)
        return s_fail(conv, "upstream streamed an answer that was not asked for%s", NULL);
    int rc = proto_convert_stream_event(converter, event->name, event->data, event->data_size, out);
    proto_convert_stream_usage(converter, &conv->usage);
    conv->content_bytes = proto_convert_stream_content_bytes(converter);
    conv->complete = proto_convert_stream_complete(converter);
    if (rc != 0)
        return s_fail(conv, "%s", proto_convert_stream_error(converter));
    return 0;
}

static int s_conv_body(dispatch_convert_t *conv, const char *body, size_t size, zchunk_t *out)
{
    int client = conv->adapter->client_protocol;
    int upstream = conv->adapter->upstream_protocol;
    json_t *answer = json_loadb(body, size, 0, NULL);
    if (!json_is_object(answer)) {
        json_decref(answer);
        return s_fail(conv, "upstream answer is not a JSON object%s", NULL);
    }
    proto_usage_t usage = {0};
    json_t *converted = proto_convert_response(upstream, client, answer,
                                               conv->client_model ? conv->client_model : "", &usage,
                                               conv->error, sizeof conv->error);
    conv->content_bytes += proto_usage_content_bytes(upstream, answer, false);
    json_decref(answer);
    if (!converted)
        return -1;
    conv->usage = usage;
    char *text = json_dumps(converted, JSON_COMPACT);
    json_decref(converted);
    if (!text)
        return s_fail(conv, "the converted answer could not be written%s", NULL);
    s_append(out, text, strlen(text));
    free(text);
    return 0;
}

static void s_conv_error(dispatch_convert_t *conv, int status, const char *body, size_t size,
                         zchunk_t *out)
{
    char *text = proto_convert_error_body(conv->adapter->upstream_protocol,
                                          conv->adapter->client_protocol, status, body, size);
    if (text)
        s_append(out, text, strlen(text));
    free(text);
}

static void s_conv_finish(dispatch_convert_t *conv, bool completed, int status, const char *code,
                          const char *message, zchunk_t *out)
{
    if (conv->extra) {
        //  Closes the client's stream, or ends it with the converter's
        //  error event (the converter knows which blocks are open).
        proto_convert_stream_finish(conv->extra, completed, out);
        return;
    }
    if (!completed) {
        char *event = proto_error_event(conv->adapter->client_protocol, status, code, message);
        s_append(out, event, strlen(event));
        free(event);
    }
}

static void s_conv_free(void *extra)
{
    proto_convert_stream_t *converter = extra;
    proto_convert_stream_destroy(&converter);
}

//  --------------------------------------------------------------------------
//  The table.

#define S_PASS(client, upstream, endpoint, name)                                                   \
    {                                                                                              \
        client, upstream, endpoint, false, name, s_pass_request, s_pass_event, s_pass_body,        \
            s_pass_error, s_pass_finish, NULL                                                      \
    }
#define S_CONV(client, upstream, name)                                                             \
    {                                                                                              \
        client, upstream, upstream, true, name, s_conv_request, s_conv_event, s_conv_body,         \
            s_conv_error, s_conv_finish, s_conv_free                                               \
    }

enum {
    S_CHAT = PROTO_PROTOCOL_OPENAI,
    S_RESPONSES = PROTO_PROTOCOL_OPENAI_RESPONSES,
    S_ANTHROPIC = PROTO_PROTOCOL_ANTHROPIC,
    S_GEMINI = PROTO_PROTOCOL_GEMINI,
    S_EMBEDDINGS = PROTO_PROTOCOL_OPENAI_EMBEDDINGS,
};

static const dispatch_adapter_t s_adapters[] = {
    S_PASS(S_CHAT, S_CHAT, S_CHAT, "openai>openai"),
    S_PASS(S_RESPONSES, S_RESPONSES, S_RESPONSES, "responses>responses"),
    S_PASS(S_ANTHROPIC, S_ANTHROPIC, S_ANTHROPIC, "anthropic>anthropic"),
    S_PASS(S_GEMINI, S_GEMINI, S_GEMINI, "gemini>gemini"),
    S_PASS(S_EMBEDDINGS, S_CHAT, S_EMBEDDINGS, "embeddings>openai"),
    //  A Responses client on an OpenAI provider is converted to Chat
    //  Completions: every OpenAI-compatible server (vLLM, Ollama, relays)
    //  has that endpoint, few have /v1/responses. Responses passthrough is
    //  the row above, for a provider that speaks Responses.
    S_CONV(S_RESPONSES, S_CHAT, "responses>openai"),
    S_CONV(S_CHAT, S_RESPONSES, "openai>responses"),
    S_CONV(S_CHAT, S_ANTHROPIC, "openai>anthropic"),
    S_CONV(S_CHAT, S_GEMINI, "openai>gemini"),
    S_CONV(S_RESPONSES, S_ANTHROPIC, "responses>anthropic"),
    S_CONV(S_RESPONSES, S_GEMINI, "responses>gemini"),
    S_CONV(S_ANTHROPIC, S_CHAT, "anthropic>openai"),
    S_CONV(S_ANTHROPIC, S_RESPONSES, "anthropic>responses"),
    S_CONV(S_ANTHROPIC, S_GEMINI, "anthropic>gemini"),
    S_CONV(S_GEMINI, S_CHAT, "gemini>openai"),
    S_CONV(S_GEMINI, S_RESPONSES, "gemini>responses"),
    S_CONV(S_GEMINI, S_ANTHROPIC, "gemini>anthropic"),
};

const dispatch_adapter_t *dispatch_adapter_find(int client_protocol, int upstream_protocol)
{
    for (size_t i = 0; i < sizeof s_adapters / sizeof s_adapters[0]; i++)
        if (s_adapters[i].client_protocol == client_protocol &&
            s_adapters[i].upstream_protocol == upstream_protocol)
            return &s_adapters[i];
    return NULL;
}

char *dispatch_adapter_count_answer(int client_protocol, size_t request_bytes)
{
    char *text = NULL;
    unsigned long long tokens = (unsigned long long)proto_usage_estimate_tokens(request_bytes);
    if (asprintf(&text,
                 client_protocol == PROTO_PROTOCOL_GEMINI ? "{\"totalTokens\":%llu}"
                                                          : "{\"input_tokens\":%llu}",
                 tokens) < 0)
        return NULL;
    return text;
}

void dispatch_convert_init(dispatch_convert_t *conv, const dispatch_adapter_t *adapter)
{
    memset(conv, 0, sizeof *conv);
    conv->adapter = adapter;
    conv->content_type = "text/event-stream";
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
    //  zchunk_strdup copies exactly the chunk's bytes (strndup would scan past them).
    return zchunk_strdup(chunk);
}

//  Runs a whole upstream stream through the adapter and returns the client's bytes.
static char *s_test_stream(dispatch_convert_t *conv, const char *stream, int *failures)
{
    s_test_t test = {conv, zchunk_new(NULL, 0), 0};
    proto_sse_t *sse = proto_sse_new(0);
    PROTO_CHECK(proto_sse_feed(sse, stream, strlen(stream), s_test_event, &test) == 0);
    PROTO_CHECK(proto_sse_finish(sse, s_test_event, &test) == 0);
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

//  Anthropic, Gemini (SSE and JSON array) and Embeddings passthrough.
static void s_test_passthrough(void)
{
    dispatch_convert_t conv;
    char *out;
    size_t out_size;
    int failures;
    //  Anthropic: model replaced, nothing else; stream from the body; end
    //  marker and usage (cache reads included) read, bytes untouched.
    const dispatch_adapter_t *adapter =
        dispatch_adapter_find(PROTO_PROTOCOL_ANTHROPIC, PROTO_PROTOCOL_ANTHROPIC);
    dispatch_convert_init(&conv, adapter);
    const char *body = "{\"model\":\"claude\",\"max_tokens\":10,\"stream\":true,\"messages\":[]}";
    PROTO_CHECK(adapter->request(&conv, body, strlen(body), "up", &out, &out_size) == 0);
    PROTO_CHECK(
        strcmp(out, "{\"model\":\"up\",\"max_tokens\":10,\"stream\":true,\"messages\":[]}") == 0);
    PROTO_CHECK(conv.stream && conv.client_usage);
    free(out);
    const char *stream =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":"
        "{\"input_tokens\":5,\"cache_read_input_tokens\":7,\"output_tokens\":1}}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"hey\"}}\n\n"
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
        "\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n"
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    char *client = s_test_stream(&conv, stream, &failures);
    PROTO_CHECK(failures == 0 && conv.complete && strcmp(client, stream) == 0);
    PROTO_CHECK(conv.usage.tokens_in == 5 && conv.usage.tokens_cache_read == 7);
    PROTO_CHECK(conv.usage.tokens_out == 3 && conv.content_bytes == 3);
    free(client);
    dispatch_convert_init(&conv, adapter);
    client = s_test_stream(&conv,
                           "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":"
                           "\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
                           &failures);
    PROTO_CHECK(failures == 1 && strstr(conv.error, "Overloaded"));
    free(client);
    zchunk_t *chunk = zchunk_new(NULL, 0);
    adapter->finish(&conv, false, 502, "upstream_error", "cut", chunk);
    client = s_test_text(chunk);
    PROTO_CHECK(strncmp(client, "event: error\n", 13) == 0 && strstr(client, "cut"));
    free(client);
    zchunk_destroy(&chunk);

    //  Gemini: the body is not touched (the model is in the path), the
    //  stream flag is the path's; a client without alt=sse gets a JSON array.
    adapter = dispatch_adapter_find(PROTO_PROTOCOL_GEMINI, PROTO_PROTOCOL_GEMINI);
    dispatch_convert_init(&conv, adapter);
    conv.client_stream = true;
    conv.json_array = true;
    body = "{\"contents\":[{\"parts\":[{\"text\":\"hi\"}]}], \"x\": 0.7}";
    PROTO_CHECK(adapter->request(&conv, body, strlen(body), "up", &out, &out_size) == 0);
    PROTO_CHECK(strcmp(out, body) == 0 && conv.stream &&
                strcmp(conv.content_type, "application/json") == 0);
    free(out);
    stream = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\n\n"
             "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},"
             "\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":9,"
             "\"cachedContentTokenCount\":4,\"candidatesTokenCount\":2}}\n\n";
    client = s_test_stream(&conv, stream, &failures);
    chunk = zchunk_new(client, strlen(client));
    free(client);
    adapter->finish(&conv, true, 200, NULL, NULL, chunk);
    client = s_test_text(chunk);
    json_t *array = json_loads(client, 0, NULL);
    PROTO_CHECK(json_is_array(array) && json_array_size(array) == 2 && conv.complete);
    PROTO_CHECK(conv.usage.tokens_in == 5 && conv.usage.tokens_cache_read == 4);
    json_decref(array);
    free(client);
    zchunk_destroy(&chunk);
    //  Cut before anything: still one valid array, its element the error.
    dispatch_convert_init(&conv, adapter);
    conv.json_array = true;
    chunk = zchunk_new(NULL, 0);
    adapter->finish(&conv, false, 502, "upstream_error", "cut", chunk);
    client = s_test_text(chunk);
    array = json_loads(client, 0, NULL);
    PROTO_CHECK(json_is_array(array) && json_object_get(json_array_get(array, 0), "error"));
    json_decref(array);
    free(client);
    zchunk_destroy(&chunk);

    //  Embeddings: model replaced, never a stream, usage read.
    adapter = dispatch_adapter_find(PROTO_PROTOCOL_OPENAI_EMBEDDINGS, PROTO_PROTOCOL_OPENAI);
    PROTO_CHECK(adapter->endpoint_protocol == PROTO_PROTOCOL_OPENAI_EMBEDDINGS);
    dispatch_convert_init(&conv, adapter);
    body = "{\"model\":\"e\",\"input\":\"x\",\"stream\":true}";
    PROTO_CHECK(adapter->request(&conv, body, strlen(body), "up", &out, &out_size) == 0);
    PROTO_CHECK(!conv.stream && strstr(out, "\"up\""));
    free(out);
    chunk = zchunk_new(NULL, 0);
    body = "{\"object\":\"list\",\"data\":[],\"usage\":{\"prompt_tokens\":4,\"total_tokens\":4}}";
    PROTO_CHECK(adapter->body(&conv, body, strlen(body), chunk) == 0);
    PROTO_CHECK(conv.usage.tokens_in == 4 && zchunk_size(chunk) == strlen(body));
    zchunk_destroy(&chunk);

    //  Count answers made here.
    out = dispatch_adapter_count_answer(PROTO_PROTOCOL_ANTHROPIC, 41);
    PROTO_CHECK(strcmp(out, "{\"input_tokens\":11}") == 0);
    free(out);
    out = dispatch_adapter_count_answer(PROTO_PROTOCOL_GEMINI, 8);
    PROTO_CHECK(strcmp(out, "{\"totalTokens\":2}") == 0);
    free(out);
}

//  Conversion rows: an OpenAI client on an Anthropic upstream, streamed
//  with a tool call, whole, and in error; a request the target cannot
//  express refused.
static void s_test_conversion(void)
{
    dispatch_convert_t conv;
    char *out;
    size_t out_size;
    int failures;
    const dispatch_adapter_t *adapter =
        dispatch_adapter_find(PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_ANTHROPIC);
    dispatch_convert_init(&conv, adapter);
    conv.client_model = "gpt-x";
    const char *body = "{\"model\":\"gpt-x\",\"stream\":true,\"messages\":[{\"role\":\"user\","
                       "\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\",\"function\":"
                       "{\"name\":\"get\",\"parameters\":{\"type\":\"object\"}}}]}";
    PROTO_CHECK(adapter->request(&conv, body, strlen(body), "claude-up", &out, &out_size) == 0);
    json_t *upstream = json_loads(out, 0, NULL);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(upstream, "model")), "claude-up") == 0);
    PROTO_CHECK(json_is_true(json_object_get(upstream, "stream")));
    PROTO_CHECK(json_integer_value(json_object_get(upstream, "max_tokens")) == 4096);
    json_decref(upstream);
    free(out);
    PROTO_CHECK(conv.stream && conv.extra && !conv.client_usage);
    const char *stream =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m1\","
        "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"c\","
        "\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":7,\"output_tokens\":1}}}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
        "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"get\",\"input\":{}}}"
        "\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n"
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
        "\"tool_use\"},\"usage\":{\"output_tokens\":3}}\n\n"
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    char *client = s_test_stream(&conv, stream, &failures);
    PROTO_CHECK(failures == 0 && conv.complete);
    PROTO_CHECK(conv.usage.tokens_in == 5 && conv.usage.tokens_cache_read == 7);
    PROTO_CHECK(conv.usage.tokens_out == 3);
    //  Arguments streamed in both pieces, each with the call's index.
    PROTO_CHECK(strstr(client, "{\\\"a\\\":") && strstr(client, "1}"));
    PROTO_CHECK(strstr(client, "\"index\":0") && strstr(client, "\"tool_calls\""));
    PROTO_CHECK(strstr(client, "\"finish_reason\":\"tool_calls\"") && strstr(client, "\"gpt-x\""));
    zchunk_t *chunk = zchunk_new(NULL, 0);
    adapter->finish(&conv, true, 200, NULL, NULL, chunk);
    char *rest = s_test_text(chunk);
    PROTO_CHECK(strstr(client, "data: [DONE]") || strstr(rest, "data: [DONE]"));
    free(rest);
    free(client);
    zchunk_destroy(&chunk);
    dispatch_convert_clear(&conv);

    //  Cut mid-stream: an OpenAI error event, no [DONE].
    dispatch_convert_init(&conv, adapter);
    PROTO_CHECK(adapter->request(&conv, body, strlen(body), "claude-up", &out, &out_size) == 0);
    free(out);
    client = s_test_stream(&conv,
                           "event: message_start\ndata: {\"type\":\"message_start\",\"message\":"
                           "{\"id\":\"m1\",\"usage\":{\"input_tokens\":5}}}\n\n",
                           &failures);
    PROTO_CHECK(!conv.complete);
    chunk = zchunk_new(NULL, 0);
    adapter->finish(&conv, false, 502, "upstream_error", "cut", chunk);
    rest = s_test_text(chunk);
    PROTO_CHECK(strstr(rest, "\"error\"") && !strstr(rest, "[DONE]"));
    free(rest);
    free(client);
    zchunk_destroy(&chunk);
    dispatch_convert_clear(&conv);

    //  Whole answer, named for the client, usage out; error bodies in the
    //  client's shape with the upstream's message.
    dispatch_convert_init(&conv, adapter);
    conv.client_model = "gpt-x";
    const char *answer =
        "{\"id\":\"m1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"c\","
        "\"content\":[{\"type\":\"text\",\"text\":\"hey\"}],\"stop_reason\":\"max_tokens\","
        "\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":7,\"output_tokens\":2}}";
    chunk = zchunk_new(NULL, 0);
    PROTO_CHECK(adapter->body(&conv, answer, strlen(answer), chunk) == 0);
    client = s_test_text(chunk);
    json_t *parsed = json_loads(client, 0, NULL);
    json_t *choice = json_array_get(json_object_get(parsed, "choices"), 0);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(choice, "finish_reason")), "length") == 0);
    PROTO_CHECK(json_integer_value(json_object_get(
                    json_object_get(json_object_get(parsed, "usage"), "prompt_tokens_details"),
                    "cached_tokens")) == 7);
    PROTO_CHECK(conv.usage.tokens_cache_read == 7 && conv.usage.tokens_out == 2);
    json_decref(parsed);
    free(client);
    zchunk_destroy(&chunk);
    chunk = zchunk_new(NULL, 0);
    const char *error = "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\","
                        "\"message\":\"slow down\"}}";
    adapter->error_body(&conv, 429, error, strlen(error), chunk);
    client = s_test_text(chunk);
    parsed = json_loads(client, 0, NULL);
    PROTO_CHECK(
        strcmp(json_string_value(json_object_get(json_object_get(parsed, "error"), "message")),
               "slow down") == 0);
    json_decref(parsed);
    free(client);
    zchunk_destroy(&chunk);
    //  Refused: audio goes nowhere but OpenAI. Dropped and named: what only
    //  tunes; refused instead when the provider or model is strict.
    body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
           "\"modalities\":[\"text\",\"audio\"]}";
    PROTO_CHECK(adapter->request(&conv, body, strlen(body), "up", &out, &out_size) == -1);
    PROTO_CHECK(strstr(conv.error, "modalities"));
    body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
           "\"seed\":7,\"store\":true,\"metadata\":{\"a\":\"b\"}}";
    PROTO_CHECK(adapter->request(&conv, body, strlen(body), "up", &out, &out_size) == 0);
    PROTO_CHECK(strcmp(conv.dropped, "store,metadata,seed") == 0 && !strstr(out, "seed"));
    free(out);
    conv.strict = true;
    PROTO_CHECK(adapter->request(&conv, body, strlen(body), "up", &out, &out_size) == -1);
    PROTO_CHECK(strstr(conv.error, "store, metadata, seed") && strstr(conv.error, "strict"));
    conv.strict = false;

    //  A Gemini client's model and stream come from the path.
    adapter = dispatch_adapter_find(PROTO_PROTOCOL_GEMINI, PROTO_PROTOCOL_OPENAI);
    dispatch_convert_init(&conv, adapter);
    conv.client_stream = true;
    conv.json_array = true;
    body = "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"hi\"}]}]}";
    PROTO_CHECK(adapter->request(&conv, body, strlen(body), "gpt-up", &out, &out_size) == 0);
    PROTO_CHECK(strstr(out, "\"stream\":true") && strstr(out, "\"gpt-up\""));
    PROTO_CHECK(strcmp(conv.content_type, "application/json") == 0);
    free(out);
    dispatch_convert_clear(&conv);
}

//  Request bodies: rewritten in place, escaped, or refused with a reason.
static void s_test_requests(const dispatch_adapter_t *adapter)
{
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
        PROTO_CHECK(adapter->request(&conv, cases[i].in, strlen(cases[i].in), "up-model", &out,
                                     &out_size) == 0);
        if (strcmp(out, cases[i].out) != 0)
            fprintf(stderr, "\ncase %zu: %s\n", i, out);
        PROTO_CHECK(strcmp(out, cases[i].out) == 0 && out_size == strlen(out));
        PROTO_CHECK(conv.stream == cases[i].stream && conv.client_usage == cases[i].client_usage);
        json_t *valid = json_loadb(out, out_size, JSON_DECODE_INT_AS_REAL, NULL);
        PROTO_CHECK(json_is_object(valid));
        json_decref(valid);
        free(out);
    }
    //  A model name that needs escaping is escaped.
    dispatch_convert_init(&conv, adapter);
    PROTO_CHECK(adapter->request(&conv, "{\"model\":1}", 11, "a\"b", &out, &out_size) == 0);
    PROTO_CHECK(strcmp(out, "{\"model\":\"a\\\"b\"}") == 0);
    free(out);
    //  Client errors, including more "model" members than we would replace.
    char many[256] = "{";
    for (int i = 0; i < 9; i++)
        strcat(many, i ? ",\"model\":\"x\"" : "\"model\":\"x\"");
    strcat(many, "}");
    PROTO_CHECK(adapter->request(&conv, many, strlen(many), "m", &out, &out_size) == -1);
    //  The same for stream_options, which only a forged DISPATCH carries
    //  (ingress refuses duplicate keys): it once read past the spans.
    char options[512] = "{\"model\":\"x\",\"stream\":true";
    for (int i = 0; i < 9; i++)
        strcat(options, ",\"stream_options\":{\"include_usage\":false}");
    strcat(options, "}");
    dispatch_convert_init(&conv, adapter);
    PROTO_CHECK(adapter->request(&conv, options, strlen(options), "m", &out, &out_size) == -1);
    PROTO_CHECK(strstr(conv.error, "stream_options"));
    PROTO_CHECK(adapter->request(&conv, "[1]", 3, "m", &out, &out_size) == -1);
    PROTO_CHECK(strstr(conv.error, "object"));
    PROTO_CHECK(adapter->request(&conv, "{\"a\":", 5, "m", &out, &out_size) == -1);
    PROTO_CHECK(strstr(conv.error, "not valid JSON"));
    const char *body = "{\"stream\":true,\"stream_options\":3}";
    PROTO_CHECK(adapter->request(&conv, body, strlen(body), "m", &out, &out_size) == -1);
}

//  Streamed answers: the usage chunk kept or dropped, cut and broken streams refused.
static void s_test_streams(const dispatch_adapter_t *adapter)
{
    dispatch_convert_t conv;
    //  Streams: the usage-only chunk is dropped for a client that did not
    //  ask, kept for one that did; usage is read either way.
    const char *stream = ": keep-alive\n\n" S_CHUNK("Hel") S_CHUNK("lo") S_USAGE "data: [DONE]\n\n";
    int failures;
    dispatch_convert_init(&conv, adapter);
    char *client = s_test_stream(&conv, stream, &failures);
    PROTO_CHECK(failures == 0 && conv.complete);
    PROTO_CHECK(
        strcmp(client, ": keep-alive\n\n" S_CHUNK("Hel") S_CHUNK("lo") "data: [DONE]\n\n") == 0);
    PROTO_CHECK(conv.usage.tokens_in == 10 && conv.usage.tokens_cache_read == 2);
    PROTO_CHECK(conv.usage.tokens_out == 3 && conv.usage.seen_out);
    PROTO_CHECK(conv.content_bytes == 5);
    free(client);
    dispatch_convert_init(&conv, adapter);
    conv.client_usage = true;
    client = s_test_stream(&conv, stream, &failures);
    PROTO_CHECK(strcmp(client, stream) == 0);
    free(client);

    //  A cut stream is not complete; a broken or error event is refused.
    dispatch_convert_init(&conv, adapter);
    client = s_test_stream(&conv, S_CHUNK("a") "data: {\"id\":", &failures);
    PROTO_CHECK(!conv.complete && failures == 0 && strcmp(client, S_CHUNK("a")) == 0);
    free(client);
    dispatch_convert_init(&conv, adapter);
    client = s_test_stream(&conv, "data: {\"choices\":[{\"delta\n\n", &failures);
    PROTO_CHECK(failures == 1 && strstr(conv.error, "not a JSON object"));
    free(client);
    dispatch_convert_init(&conv, adapter);
    client = s_test_stream(&conv, "data: {\"error\":{\"message\":\"overloaded\"}}\n\n", &failures);
    PROTO_CHECK(failures == 1 && strstr(conv.error, "overloaded") && !*client);
    free(client);
}

void dispatch_adapter_test(bool verbose)
{
    if (verbose)
        printf(" * dispatch_adapter: ");
    PROTO_CHECK(dispatch_adapter_find(PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI));
    //  Every pair of the four generative protocols has a row; Embeddings
    //  only to OpenAI.
    for (int client = PROTO_PROTOCOL_OPENAI; client <= PROTO_PROTOCOL_GEMINI; client++)
        for (int upstream = PROTO_PROTOCOL_OPENAI; upstream <= PROTO_PROTOCOL_GEMINI; upstream++) {
            const dispatch_adapter_t *row = dispatch_adapter_find(client, upstream);
            PROTO_CHECK(row && row->convert == (client != upstream));
        }
    PROTO_CHECK(dispatch_adapter_find(PROTO_PROTOCOL_OPENAI_EMBEDDINGS, PROTO_PROTOCOL_OPENAI));
    PROTO_CHECK(!dispatch_adapter_find(PROTO_PROTOCOL_OPENAI_EMBEDDINGS, PROTO_PROTOCOL_ANTHROPIC));
    PROTO_CHECK(!dispatch_adapter_find(PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI_EMBEDDINGS));
    const dispatch_adapter_t *adapter =
        dispatch_adapter_find(PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI);
    s_test_requests(adapter);
    s_test_streams(adapter);

    dispatch_convert_t conv;
    //  Whole answers: usage read, body untouched.
    dispatch_convert_init(&conv, adapter);
    zchunk_t *chunk = zchunk_new(NULL, 0);
    const char *answer = "{\"choices\":[{\"message\":{\"content\":\"abcdefgh\"}}],"
                         "\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}";
    PROTO_CHECK(adapter->body(&conv, answer, strlen(answer), chunk) == 0);
    PROTO_CHECK(zchunk_size(chunk) == strlen(answer) && conv.usage.tokens_in == 7);
    PROTO_CHECK(conv.content_bytes == 8);
    PROTO_CHECK(adapter->body(&conv, "<html>", 6, chunk) == -1);
    zchunk_destroy(&chunk);

    //  Error bodies: JSON passes, anything else becomes ours.
    chunk = zchunk_new(NULL, 0);
    adapter->error_body(&conv, 400, "{\"error\":{\"message\":\"bad\"}}", 27, chunk);
    PROTO_CHECK(zchunk_size(chunk) == 27);
    zchunk_destroy(&chunk);
    chunk = zchunk_new(NULL, 0);
    adapter->error_body(&conv, 502, "<html>bad gateway</html>", 24, chunk);
    char *text = s_test_text(chunk);
    PROTO_CHECK(strstr(text, "\"upstream answered HTTP 502\"") && strstr(text, "server_error"));
    free(text);
    zchunk_destroy(&chunk);
    dispatch_convert_clear(&conv);

    s_test_passthrough();
    s_test_conversion();
    if (verbose)
        printf("OK\n");
}
