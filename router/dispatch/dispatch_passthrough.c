#include "dispatch_passthrough.h"
#include "proto_error.h"
#include "proto_jscan.h"
#include "proto_msg.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  --------------------------------------------------------------------------
//  Editing a JSON body in place. A body that jansson re-encodes comes out
//  changed: 0.7 becomes 0.69999999999999996 and integers past int64 do not
//  load at all. So the body is only validated and read (proto_jscan, or
//  jansson as the reference); the edits are made on the client's own
//  bytes, which stay as they were everywhere else.

typedef struct {
    size_t at;     //  offset in the original text
    size_t remove; //  bytes replaced there
    char *insert;  //  text put in their place (owned)
} s_edit_t;

#define S_EDITS_MAX 16

//  Finds the values of `key` among the members of the object opening at
//  `open`: fills up to max [start, end) offset pairs, returns how many
//  there are (which may be more than max).
//  *close gets the offset of the object's closing brace.
static size_t s_members(const char *text, size_t size, size_t open, const char *key,
                        size_t (*spans)[2], size_t max, size_t *close)
{
    const char *end = text + size;
    const char *at = proto_jscan_space(text + open + 1, end);
    size_t found = 0;
    while (at < end && *at == '"') {
        const char *key_end = proto_jscan_skip(at, end);
        bool match = proto_jscan_key_is(at, key_end, key);
        const char *value = proto_jscan_space(key_end, end);
        value = proto_jscan_space(value + 1, end); //  past the colon
        const char *value_end = proto_jscan_skip(value, end);
        if (match) {
            if (found < max) {
                spans[found][0] = (size_t)(value - text);
                spans[found][1] = (size_t)(value_end - text);
            }
            found++;
        }
        at = proto_jscan_space(value_end, end);
        if (at < end && *at == ',')
            at = proto_jscan_space(at + 1, end);
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

//  What the request's handling reads of the client's body.
typedef struct {
    bool object;                //  the body is an object
    bool stream;                //  its `stream` is true
    proto_jscan_type_t options; //  the kind of its `stream_options` (NONE: absent)
    bool include_usage;         //  stream_options.include_usage is true
} s_request_facts_t;

//  The facts by the scanner; false when it refuses the body.
static bool s_facts_scan(const char *body, size_t size, s_request_facts_t *facts)
{
    if (!proto_jscan_valid(body, size, PROTO_JSCAN_ALLOW_NUL | PROTO_JSCAN_INT_AS_REAL))
        return false;
    const char *end = body + size, *root = proto_jscan_space(body, end);
    facts->object = proto_jscan_type(root) == PROTO_JSCAN_OBJECT;
    facts->stream = proto_jscan_type(proto_jscan_member(root, end, "stream")) == PROTO_JSCAN_TRUE;
    const char *options = proto_jscan_member(root, end, "stream_options");
    facts->options = proto_jscan_type(options);
    facts->include_usage =
        proto_jscan_type(proto_jscan_member(options, end, "include_usage")) == PROTO_JSCAN_TRUE;
    return true;
}

//  The facts by jansson; false, with jansson's reason, when not JSON.
static bool s_facts_jansson(const char *body, size_t size, s_request_facts_t *facts,
                            json_error_t *error)
{
    json_t *root = json_loadb(body, size, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, error);
    if (!root)
        return false;
    facts->object = json_is_object(root);
    facts->stream = json_is_true(json_object_get(root, "stream"));
    json_t *options = json_object_get(root, "stream_options");
    facts->options = !options                  ? PROTO_JSCAN_NONE
                     : json_is_object(options) ? PROTO_JSCAN_OBJECT
                     : json_is_null(options)   ? PROTO_JSCAN_NULL
                                               : PROTO_JSCAN_NUMBER; //  any other kind
    facts->include_usage = json_is_true(json_object_get(options, "include_usage"));
    json_decref(root);
    return true;
}

static int s_request(dispatch_convert_t *conv, const char *body, size_t size,
                     const char *upstream_model, char **out, size_t *out_size, bool scan)
{
    int protocol = conv->adapter->endpoint_protocol;
    s_request_facts_t facts;
    json_error_t error;
    //  jansson runs only when the scanner refuses: for its words on why, or
    //  to load what only jansson loads (proto_jscan.h).
    if (!(scan && s_facts_scan(body, size, &facts)) && !s_facts_jansson(body, size, &facts, &error))
        return dispatch_convert_fail(conv, "request body is not valid JSON: %s", error.text);
    int rc = -1;
    s_edit_t edits[S_EDITS_MAX];
    size_t count = 0;
    char *model = NULL;
    if (!facts.object) {
        dispatch_convert_fail(conv, "request body must be a JSON object%s", NULL);
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
                   protocol != PROTO_PROTOCOL_OPENAI_IMAGES && facts.stream;
    bool usage_options = protocol == PROTO_PROTOCOL_OPENAI && conv->stream;
    if (usage_options && facts.options != PROTO_JSCAN_NONE && facts.options != PROTO_JSCAN_OBJECT &&
        facts.options != PROTO_JSCAN_NULL) {
        dispatch_convert_fail(conv, "stream_options must be an object%s", NULL);
        goto done;
    }
    //  Only OpenAI Chat makes usage in a stream optional; the others always
    //  carry it.
    conv->client_usage = protocol != PROTO_PROTOCOL_OPENAI || (conv->stream && facts.include_usage);

    size_t open = (size_t)(proto_jscan_space(body, body + size) - body);
    size_t spans[S_EDITS_MAX / 2][2], close;
    json_t *name = json_string(upstream_model);
    model = json_dumps(name, JSON_ENCODE_ANY);
    json_decref(name);
    //  Every "model" member, should the client have sent two: the upstream
    //  model is ours to choose, whichever one a parser keeps.
    size_t models = s_members(body, size, open, "model", spans, S_EDITS_MAX / 2, &close);
    if (models > S_EDITS_MAX / 2) {
        dispatch_convert_fail(conv, "request body repeats \"model\" too often%s", NULL);
        goto done;
    }
    for (size_t i = 0; i < models; i++)
        s_edit(edits, &count, spans[i][0], spans[i][1] - spans[i][0], model);
    bool empty = body[proto_jscan_space(body + open + 1, body + size) - body] == '}';
    char tail[2048] = "";
    if (!models)
        snprintf(tail, sizeof tail, "%s\"model\":%s", empty ? "" : ",", model);
    if (usage_options) {
        size_t options_found =
            s_members(body, size, open, "stream_options", spans, S_EDITS_MAX / 2, &close);
        //  s_members counts past what `spans` holds: the last one must be in it.
        if (options_found > S_EDITS_MAX / 2) {
            dispatch_convert_fail(conv, "request body repeats \"stream_options\" too often%s",
                                  NULL);
            goto done;
        }
        if (options_found && body[spans[options_found - 1][0]] == '{') {
            //  The last one is what parsers keep.
            size_t inner = spans[options_found - 1][0], inner_close;
            size_t usage[S_EDITS_MAX / 4][2];
            size_t found =
                s_members(body, size, inner, "include_usage", usage, S_EDITS_MAX / 4, &inner_close);
            if (found > S_EDITS_MAX / 4) {
                dispatch_convert_fail(conv, "stream_options repeats \"include_usage\" too often%s",
                                      NULL);
                goto done;
            }
            for (size_t i = 0; i < found; i++)
                s_edit(edits, &count, usage[i][0], usage[i][1] - usage[i][0], "true");
            if (!found) {
                bool inner_empty =
                    body[proto_jscan_space(body + inner + 1, body + size) - body] == '}';
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
    return rc;
}

int dispatch_passthrough_request(dispatch_convert_t *conv, const char *body, size_t size,
                                 const char *upstream_model, char **out, size_t *out_size)
{
    return s_request(conv, body, size, upstream_model, out, out_size, true);
}

int dispatch_passthrough_request_jansson(dispatch_convert_t *conv, const char *body, size_t size,
                                         const char *upstream_model, char **out, size_t *out_size)
{
    return s_request(conv, body, size, upstream_model, out, out_size, false);
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

//  The event as it goes to the client: as it came, or an element of the
//  JSON array; OpenAI's usage-only chunk only to a client that asked.
static void s_event_out(dispatch_convert_t *conv, const proto_sse_event_t *event, bool usage_only,
                        zchunk_t *out)
{
    if (conv->json_array) {
        //  A Gemini client without alt=sse reads the same chunks as the
        //  elements of one JSON array, as Gemini itself sends them.
        dispatch_convert_append(out, conv->items ? ",\r\n" : "[", conv->items ? 3 : 1);
        dispatch_convert_append(out, event->data, event->data_size);
        conv->items++;
    } else if (!usage_only || conv->client_usage)
        dispatch_convert_append(out, event->raw, event->raw_size);
}

//  The event's type as s_pass_read reads it, into buffer when it comes
//  from the data; false when it does not fit.
static bool s_scan_type(const char *name, const proto_jscan_object_t *top, char buffer[64],
                        const char **type)
{
    *type = name && *name ? name : "";
    if (**type)
        return true;
    const char *member = proto_jscan_get(top, "type");
    if (proto_jscan_type(member) != PROTO_JSCAN_STRING)
        return true;
    *type = buffer;
    return proto_jscan_string_copy(member, top->end, buffer, 64);
}

//  s_pass_read on text: sets *complete; false when the event reports an
//  error (or might: every error takes the jansson path, which words it) or
//  its type does not fit our buffer.
static bool s_pass_scan(int protocol, const char *name, const proto_jscan_object_t *top,
                        bool *complete)
{
    char buffer[64];
    const char *type, *end = top->end;
    *complete = false;
    switch (protocol) {
    case PROTO_PROTOCOL_ANTHROPIC:
        if (!s_scan_type(name, top, buffer, &type))
            return false;
        *complete = strcmp(type, "message_stop") == 0;
        return strcmp(type, "error") != 0;
    case PROTO_PROTOCOL_OPENAI_RESPONSES:
        if (!s_scan_type(name, top, buffer, &type))
            return false;
        *complete =
            strcmp(type, "response.completed") == 0 || strcmp(type, "response.incomplete") == 0;
        return strcmp(type, "error") != 0 && strcmp(type, "response.failed") != 0;
    case PROTO_PROTOCOL_GEMINI: {
        const char *candidate = proto_jscan_first(proto_jscan_get(top, "candidates"), end);
        *complete = proto_jscan_member(candidate, end, "finishReason") ||
                    proto_jscan_member(proto_jscan_get(top, "promptFeedback"), end, "blockReason");
        return !proto_jscan_get(top, "error");
    }
    default:
        return !proto_jscan_get(top, "error");
    }
}

//  The common events read by proto_jscan with exactly the results of the
//  jansson path below. False, having changed nothing, for any event that
//  path must judge: not valid to the scanner, not an object, an error,
//  tool arguments given as JSON.
static bool s_event_scan(dispatch_convert_t *conv, int protocol, const proto_sse_event_t *event,
                         zchunk_t *out)
{
    const char *end = event->data + event->data_size;
    proto_jscan_object_t top;
    if (!proto_jscan_valid_indexed(event->data, event->data_size, PROTO_JSCAN_ALLOW_NUL, &top) ||
        !top.object)
        return false;
    bool complete;
    if (!s_pass_scan(protocol, event->name, &top, &complete))
        return false;
    size_t bytes;
    int has_usage = proto_usage_scan(protocol, &top, event->name, true, &conv->usage, &bytes);
    if (has_usage < 0)
        return false;
    if (complete)
        conv->complete = true;
    conv->content_bytes += bytes;
    bool usage_only = false;
    if (protocol == PROTO_PROTOCOL_OPENAI && has_usage) {
        const char *choices = proto_jscan_get(&top, "choices");
        usage_only =
            proto_jscan_type(choices) == PROTO_JSCAN_ARRAY && !proto_jscan_first(choices, end);
    }
    s_event_out(conv, event, usage_only, out);
    return true;
}

static int s_event(dispatch_convert_t *conv, const proto_sse_event_t *event, zchunk_t *out,
                   bool scan)
{
    int protocol = conv->adapter->endpoint_protocol;
    //  Comments and blocks without data (keep-alives) pass as they came,
    //  except into a JSON array, which has no place for them.
    if (!event->has_data) {
        if (!conv->json_array)
            dispatch_convert_append(out, event->raw, event->raw_size);
        return 0;
    }
    if (protocol == PROTO_PROTOCOL_OPENAI && strcmp(event->data, "[DONE]") == 0) {
        conv->complete = true;
        dispatch_convert_append(out, event->raw, event->raw_size);
        return 0;
    }
    if (scan && s_event_scan(conv, protocol, event, out))
        return 0;
    json_t *chunk = json_loadb(event->data, event->data_size, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(chunk)) {
        json_decref(chunk);
        return dispatch_convert_fail(
            conv, "upstream sent a stream event that is not a JSON object%s", NULL);
    }
    json_t *error = s_pass_read(conv, protocol, event->name, chunk);
    if (error) {
        dispatch_convert_fail(conv, "upstream reported an error in the stream: %.200s",
                              s_error_message(error));
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
    s_event_out(conv, event, usage_only, out);
    json_decref(chunk);
    return 0;
}

int dispatch_passthrough_event(dispatch_convert_t *conv, const proto_sse_event_t *event,
                               zchunk_t *out)
{
    return s_event(conv, event, out, true);
}

int dispatch_passthrough_event_jansson(dispatch_convert_t *conv, const proto_sse_event_t *event,
                                       zchunk_t *out)
{
    return s_event(conv, event, out, false);
}

static int s_body(dispatch_convert_t *conv, const char *body, size_t size, zchunk_t *out, bool scan)
{
    int protocol = conv->adapter->endpoint_protocol;
    //  The scanner first; jansson for what it refuses or cannot count.
    proto_jscan_object_t top;
    if (scan && proto_jscan_valid_indexed(body, size, PROTO_JSCAN_ALLOW_NUL, &top) && top.object) {
        proto_usage_t usage = {0};
        size_t bytes;
        if (proto_usage_scan(protocol, &top, NULL, false, &usage, &bytes) >= 0) {
            conv->usage = usage;
            conv->content_bytes += bytes;
            dispatch_convert_append(out, body, size);
            return 0;
        }
    }
    json_t *answer = json_loadb(body, size, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(answer)) {
        json_decref(answer);
        return dispatch_convert_fail(conv, "upstream answer is not a JSON object%s", NULL);
    }
    memset(&conv->usage, 0, sizeof conv->usage);
    proto_usage_from_json(protocol, answer, NULL, false, &conv->usage);
    conv->content_bytes += proto_usage_content_bytes(protocol, answer, false);
    json_decref(answer);
    dispatch_convert_append(out, body, size);
    return 0;
}

int dispatch_passthrough_body(dispatch_convert_t *conv, const char *body, size_t size,
                              zchunk_t *out)
{
    return s_body(conv, body, size, out, true);
}

int dispatch_passthrough_body_jansson(dispatch_convert_t *conv, const char *body, size_t size,
                                      zchunk_t *out)
{
    return s_body(conv, body, size, out, false);
}

//  Same protocol: the upstream's own error body is already in the client's
//  shape. Anything that is not a JSON object (a proxy's HTML page) is
//  replaced by our own error body, so the client always gets its format.
void dispatch_passthrough_error(dispatch_convert_t *conv, int status, const char *body, size_t size,
                                zchunk_t *out)
{
    json_t *parsed = size ? json_loadb(body, size, JSON_ALLOW_NUL, NULL) : NULL;
    if (json_is_object(parsed))
        dispatch_convert_append(out, body, size);
    else {
        char message[96];
        snprintf(message, sizeof message, "upstream answered HTTP %d", status);
        char *own =
            proto_error_body(conv->adapter->client_protocol, status, "upstream_error", message);
        dispatch_convert_append(out, own, strlen(own));
        free(own);
    }
    json_decref(parsed);
}

void dispatch_passthrough_finish(dispatch_convert_t *conv, bool completed, int status,
                                 const char *code, const char *message, zchunk_t *out)
{
    int client = conv->adapter->client_protocol;
    if (conv->json_array) {
        //  The error is the array's last element, and the array is closed
        //  either way so that the client's JSON parser sees the end.
        if (!completed) {
            char *body = proto_error_body(client, status, code, message);
            dispatch_convert_append(out, conv->items ? ",\r\n" : "[", conv->items ? 3 : 1);
            dispatch_convert_append(out, body, strlen(body));
            free(body);
            conv->items++;
        } else if (!conv->items)
            dispatch_convert_append(out, "[", 1);
        dispatch_convert_append(out, "]", 1);
        return;
    }
    if (completed)
        return; //  the upstream's own end marker went out with its event
    char *event = proto_error_event(client, status, code, message);
    dispatch_convert_append(out, event, strlen(event));
    free(event);
}
