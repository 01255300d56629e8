#include "proto_usage.h"
#include "proto_check.h"
#include "proto_jscan.h"
#include "proto_msg.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

//  An object that usage is read from: parsed by jansson, or valid JSON
//  text read in place (proto_jscan, for dispatch's hot path). The readers
//  below take either, so the two paths share every rule.
typedef struct {
    json_t *json;     //  a parsed object, or NULL
    const char *text; //  else the object's first byte in valid text, or NULL
    const char *end;  //  the end of that text
} s_obj_t;

static s_obj_t s_json(json_t *json)
{
    return (s_obj_t){json_is_object(json) ? json : NULL, NULL, NULL};
}

static s_obj_t s_text(const char *value, const char *end)
{
    return (s_obj_t){NULL, proto_jscan_type(value) == PROTO_JSCAN_OBJECT ? value : NULL, end};
}

static bool s_is_object(s_obj_t object)
{
    return object.json || object.text;
}

//  Member `key` when it is an object, else none.
static s_obj_t s_child(s_obj_t object, const char *key)
{
    if (object.json)
        return s_json(json_object_get(object.json, key));
    return s_text(proto_jscan_member(object.text, object.end, key), object.end);
}

//  What jansson's json_integer_value gives for the number at value, when
//  it is an integer (no fraction or exponent) and not negative; else -1.
//  Valid text (without PROTO_JSCAN_INT_AS_REAL) holds only integers that
//  fit int64.
static int64_t s_text_count(const char *value, const char *end)
{
    if (proto_jscan_type(value) != PROTO_JSCAN_NUMBER)
        return -1;
    const char *value_end = proto_jscan_skip(value, end);
    int64_t count = 0;
    for (const char *p = value; p < value_end; p++)
        if (*p == '.' || *p == 'e' || *p == 'E')
            return -1; //  a real
    if (*value == '-') {
        for (const char *p = value + 1; p < value_end; p++)
            if (*p != '0')
                return -1;
        return 0; //  -0 is the integer 0
    }
    for (const char *p = value; p < value_end; p++)
        count = count * 10 + (*p - '0');
    return count;
}

//  A non-negative integer member, or -1 when absent or of another kind.
static int64_t s_count(s_obj_t object, const char *key)
{
    if (!object.json)
        return s_text_count(proto_jscan_member(object.text, object.end, key), object.end);
    json_t *value = json_object_get(object.json, key);
    if (!json_is_integer(value) || json_integer_value(value) < 0)
        return -1;
    return json_integer_value(value);
}

//  total - part, never below zero; a missing part (-1) counts as 0.
static uint64_t s_minus(int64_t total, int64_t part)
{
    if (total <= 0)
        return 0;
    if (part <= 0)
        return (uint64_t)total;
    return part >= total ? 0 : (uint64_t)(total - part);
}

//  OpenAI Chat: {prompt_tokens, completion_tokens, prompt_tokens_details{cached_tokens}}.
//  Responses:  {input_tokens, output_tokens, input_tokens_details{cached_tokens}}.
//  Embeddings: {prompt_tokens, total_tokens}. Cached tokens are part of the prompt count.
static int s_openai(s_obj_t usage, proto_usage_t *out)
{
    if (!s_is_object(usage))
        return 0;
    int64_t prompt = s_count(usage, "prompt_tokens");
    int64_t completion = s_count(usage, "completion_tokens");
    s_obj_t details = s_child(usage, "prompt_tokens_details");
    if (prompt < 0) {
        prompt = s_count(usage, "input_tokens");
        completion = s_count(usage, "output_tokens");
        details = s_child(usage, "input_tokens_details");
    }
    int64_t cached = s_count(details, "cached_tokens");
    if (prompt < 0 && completion < 0)
        return 0;
    if (prompt >= 0) {
        out->tokens_in = s_minus(prompt, cached);
        out->tokens_cache_read = cached > 0 ? (uint64_t)cached : 0;
        out->seen_in = true;
    }
    if (completion >= 0) {
        out->tokens_out = (uint64_t)completion;
        out->seen_out = true;
    }
    return 1;
}

//  Anthropic: {input_tokens, output_tokens, cache_creation_input_tokens,
//  cache_read_input_tokens, cache_creation {ephemeral_5m_input_tokens,
//  ephemeral_1h_input_tokens}}; input_tokens excludes both cache counts,
//  and cache_creation splits cache_creation_input_tokens by how long the
//  entries live. In a stream, message_delta repeats running totals, so
//  present fields override.
static int s_anthropic(s_obj_t usage, proto_usage_t *out)
{
    if (!s_is_object(usage))
        return 0;
    int64_t input = s_count(usage, "input_tokens");
    int64_t output = s_count(usage, "output_tokens");
    int64_t cache_write = s_count(usage, "cache_creation_input_tokens");
    int64_t cache_read = s_count(usage, "cache_read_input_tokens");
    s_obj_t creation = s_child(usage, "cache_creation");
    int64_t write_5m = s_count(creation, "ephemeral_5m_input_tokens");
    int64_t write_1h = s_count(creation, "ephemeral_1h_input_tokens");
    if (input < 0 && output < 0 && cache_write < 0 && cache_read < 0 && write_5m < 0 &&
        write_1h < 0)
        return 0;
    if (input >= 0) {
        out->tokens_in = (uint64_t)input;
        out->seen_in = true;
    }
    if (cache_write >= 0)
        out->tokens_cache_write = (uint64_t)cache_write;
    //  The split, when given, is the truth about the total as well: an
    //  answer with only cache_creation still wrote its tokens.
    if (write_5m >= 0 || write_1h >= 0) {
        uint64_t split =
            (uint64_t)(write_5m > 0 ? write_5m : 0) + (uint64_t)(write_1h > 0 ? write_1h : 0);
        out->tokens_cache_write_1h = write_1h > 0 ? (uint64_t)write_1h : 0;
        if (cache_write < 0 || split > out->tokens_cache_write)
            out->tokens_cache_write = split;
    }
    if (cache_read >= 0)
        out->tokens_cache_read = (uint64_t)cache_read;
    if (output >= 0) {
        out->tokens_out = (uint64_t)output;
        out->seen_out = true;
    }
    return 1;
}

//  Gemini usageMetadata: promptTokenCount includes cachedContentTokenCount;
//  thoughtsTokenCount is output billed like candidates.
static int s_gemini(s_obj_t usage, proto_usage_t *out)
{
    if (!s_is_object(usage))
        return 0;
    int64_t prompt = s_count(usage, "promptTokenCount");
    int64_t candidates = s_count(usage, "candidatesTokenCount");
    int64_t thoughts = s_count(usage, "thoughtsTokenCount");
    int64_t cached = s_count(usage, "cachedContentTokenCount");
    if (prompt < 0 && candidates < 0 && thoughts < 0)
        return 0;
    if (prompt >= 0) {
        out->tokens_in = s_minus(prompt, cached);
        out->tokens_cache_read = cached > 0 ? (uint64_t)cached : 0;
        out->seen_in = true;
    }
    if (candidates >= 0 || thoughts >= 0) {
        out->tokens_out =
            (uint64_t)(candidates > 0 ? candidates : 0) + (uint64_t)(thoughts > 0 ? thoughts : 0);
        out->seen_out = true;
    }
    return 1;
}

//  OpenAI Images: the images are `data`'s items; gpt-image models add token
//  usage {input_tokens, output_tokens}. The count is the answer's usage: its
//  tokens are seen (0 when not given), never estimated from bytes.
static int s_images(json_t *answer, proto_usage_t *out)
{
    json_t *data = json_object_get(answer, "data");
    if (!json_is_array(data))
        return 0;
    s_openai(s_json(json_object_get(answer, "usage")), out);
    out->images = json_array_size(data);
    out->seen_in = out->seen_out = true;
    return 1;
}

int proto_usage_from_json(int protocol, const void *json_p, const char *name, bool is_event,
                          proto_usage_t *usage)
{
    json_t *json = (json_t *)json_p;
    if (!json_is_object(json))
        return 0;
    switch (protocol) {
    case PROTO_PROTOCOL_ANTHROPIC: {
        if (!is_event)
            return s_anthropic(s_json(json_object_get(json, "usage")), usage);
        const char *type = name && *name ? name : json_string_value(json_object_get(json, "type"));
        if (type && strcmp(type, "message_start") == 0)
            return s_anthropic(s_json(json_object_get(json_object_get(json, "message"), "usage")),
                               usage);
        if (type && strcmp(type, "message_delta") == 0)
            return s_anthropic(s_json(json_object_get(json, "usage")), usage);
        return 0;
    }
    case PROTO_PROTOCOL_GEMINI:
        return s_gemini(s_json(json_object_get(json, "usageMetadata")), usage);
    case PROTO_PROTOCOL_OPENAI_IMAGES:
        return is_event ? 0 : s_images(json, usage);
    case PROTO_PROTOCOL_OPENAI_RESPONSES: {
        //  Stream events wrap the response: response.completed {response{usage}}.
        json_t *response = json_object_get(json, "response");
        if (is_event && json_is_object(response))
            return s_openai(s_json(json_object_get(response, "usage")), usage);
        return s_openai(s_json(json_object_get(json, "usage")), usage);
    }
    default:
        return s_openai(s_json(json_object_get(json, "usage")), usage);
    }
}

int proto_usage_from_body(int protocol, const char *body, size_t size, proto_usage_t *usage)
{
    memset(usage, 0, sizeof *usage);
    json_t *json = json_loadb(body, size, 0, NULL);
    int found = proto_usage_from_json(protocol, json, NULL, false, usage);
    json_decref(json);
    return found ? 0 : -1;
}

int proto_usage_from_event(int protocol, const char *name, const char *data, size_t size,
                           proto_usage_t *usage)
{
    //  Cheap test first: most events carry no usage at all.
    if (!memmem(data, size, "sage", 4))
        return 0;
    json_t *json = json_loadb(data, size, 0, NULL);
    int found = proto_usage_from_json(protocol, json, name, true, usage);
    json_decref(json);
    return found;
}

static size_t s_string_bytes(json_t *value)
{
    return json_is_string(value) ? json_string_length(value) : 0;
}

//  Tool-call arguments given as an object are counted as their JSON text.
static size_t s_json_bytes(json_t *value)
{
    if (json_is_string(value))
        return json_string_length(value);
    if (!value || json_is_null(value))
        return 0;
    char *text = json_dumps(value, JSON_COMPACT);
    size_t size = text ? strlen(text) : 0;
    free(text);
    return size;
}

static size_t s_openai_message_bytes(json_t *message)
{
    size_t bytes = s_string_bytes(json_object_get(message, "content")) +
                   s_string_bytes(json_object_get(message, "reasoning_content")) +
                   s_string_bytes(json_object_get(message, "refusal"));
    size_t index;
    json_t *call;
    json_array_foreach(json_object_get(message, "tool_calls"), index, call) bytes +=
        s_json_bytes(json_object_get(json_object_get(call, "function"), "arguments"));
    return bytes;
}

size_t proto_usage_content_bytes(int protocol, const void *json_p, bool is_event)
{
    json_t *json = (json_t *)json_p;
    size_t bytes = 0, index, part_index;
    json_t *item, *part;
    if (!json_is_object(json))
        return 0;
    switch (protocol) {
    case PROTO_PROTOCOL_ANTHROPIC:
        if (is_event) {
            json_t *delta = json_object_get(json, "delta");
            return s_string_bytes(json_object_get(delta, "text")) +
                   s_string_bytes(json_object_get(delta, "partial_json")) +
                   s_string_bytes(json_object_get(delta, "thinking"));
        }
        json_array_foreach(json_object_get(json, "content"), index, item)
        {
            bytes += s_string_bytes(json_object_get(item, "text")) +
                     s_string_bytes(json_object_get(item, "thinking")) +
                     s_json_bytes(json_object_get(item, "input"));
        }
        return bytes;
    case PROTO_PROTOCOL_GEMINI:
        json_array_foreach(json_object_get(json, "candidates"), index, item)
        {
            json_array_foreach(json_object_get(json_object_get(item, "content"), "parts"),
                               part_index, part)
            {
                bytes +=
                    s_string_bytes(json_object_get(part, "text")) +
                    s_json_bytes(json_object_get(json_object_get(part, "functionCall"), "args"));
            }
        }
        return bytes;
    case PROTO_PROTOCOL_OPENAI_RESPONSES:
        if (is_event) {
            const char *type = json_string_value(json_object_get(json, "type"));
            if (type && (strcmp(type, "response.output_text.delta") == 0 ||
                         strcmp(type, "response.function_call_arguments.delta") == 0 ||
                         strcmp(type, "response.reasoning_summary_text.delta") == 0))
                return s_string_bytes(json_object_get(json, "delta"));
            return 0;
        }
        json_array_foreach(json_object_get(json, "output"), index, item)
        {
            bytes += s_string_bytes(json_object_get(item, "arguments"));
            json_array_foreach(json_object_get(item, "content"), part_index, part) bytes +=
                s_string_bytes(json_object_get(part, "text"));
        }
        return bytes;
    default:
        json_array_foreach(json_object_get(json, "choices"), index, item)
        {
            bytes += s_openai_message_bytes(json_object_get(item, is_event ? "delta" : "message"));
        }
        return bytes;
    }
}

//  --------------------------------------------------------------------------
//  The same readings on validated text (proto_jscan), for dispatch's hot
//  path: the very functions above, reading the usage object in place.

typedef int(s_usage_fn)(s_obj_t usage, proto_usage_t *out);

//  fn on the value at `value`, read in place.
static int s_usage_span(s_usage_fn *fn, const char *value, const char *end, proto_usage_t *out)
{
    return fn(s_text(value, end), out);
}

//  The event's type as proto_usage_from_json reads it: the SSE name, else
//  the `type` member's C string. False when that does not fit in type[64].
static bool s_scan_type(const proto_jscan_object_t *top, const char *end, const char *name,
                        char type[64], const char **out)
{
    if (name && *name) {
        *out = name;
        return true;
    }
    const char *member = proto_jscan_get(top, "type");
    *out = NULL;
    if (proto_jscan_type(member) != PROTO_JSCAN_STRING)
        return true;
    *out = type;
    return proto_jscan_string_copy(member, end, type, 64);
}

static int s_usage_scan(int protocol, const proto_jscan_object_t *top, const char *end,
                        const char *name, bool is_event, proto_usage_t *usage)
{
    switch (protocol) {
    case PROTO_PROTOCOL_ANTHROPIC: {
        if (!is_event)
            return s_usage_span(s_anthropic, proto_jscan_get(top, "usage"), end, usage);
        char buffer[64];
        const char *type;
        if (!s_scan_type(top, end, name, buffer, &type))
            return -1;
        if (type && strcmp(type, "message_start") == 0)
            return s_usage_span(s_anthropic,
                                proto_jscan_member(proto_jscan_get(top, "message"), end, "usage"),
                                end, usage);
        if (type && strcmp(type, "message_delta") == 0)
            return s_usage_span(s_anthropic, proto_jscan_get(top, "usage"), end, usage);
        return 0;
    }
    case PROTO_PROTOCOL_GEMINI:
        return s_usage_span(s_gemini, proto_jscan_get(top, "usageMetadata"), end, usage);
    case PROTO_PROTOCOL_OPENAI_IMAGES: {
        const char *data = proto_jscan_get(top, "data");
        if (is_event || proto_jscan_type(data) != PROTO_JSCAN_ARRAY)
            return 0;
        s_usage_span(s_openai, proto_jscan_get(top, "usage"), end, usage);
        usage->images = proto_jscan_count(data, end);
        usage->seen_in = usage->seen_out = true;
        return 1;
    }
    case PROTO_PROTOCOL_OPENAI_RESPONSES: {
        const char *response = proto_jscan_get(top, "response");
        if (is_event && proto_jscan_type(response) == PROTO_JSCAN_OBJECT)
            return s_usage_span(s_openai, proto_jscan_member(response, end, "usage"), end, usage);
        return s_usage_span(s_openai, proto_jscan_get(top, "usage"), end, usage);
    }
    default:
        return s_usage_span(s_openai, proto_jscan_get(top, "usage"), end, usage);
    }
}

//  s_json_bytes on text: a string's length, 0 for none or null, -1 for
//  JSON (jansson's compact dump decides that length: left to it).
static int64_t s_scan_json_bytes(const char *value, const char *end)
{
    proto_jscan_type_t type = proto_jscan_type(value);
    if (type == PROTO_JSCAN_STRING)
        return (int64_t)proto_jscan_string_bytes(value, end);
    return type == PROTO_JSCAN_NONE || type == PROTO_JSCAN_NULL ? 0 : -1;
}

#define S_STRING(object, key) proto_jscan_string_bytes(proto_jscan_member(object, end, key), end)

//  Adds s_json_bytes of value to *bytes; false when only jansson can tell.
static bool s_scan_add_json(const char *value, const char *end, int64_t *bytes)
{
    int64_t more = s_scan_json_bytes(value, end);
    *bytes += more;
    return more >= 0;
}

static int64_t s_scan_openai(const proto_jscan_object_t *top, const char *end, bool is_event)
{
    int64_t bytes = 0;
    const char *item = proto_jscan_first(proto_jscan_get(top, "choices"), end);
    while (item) {
        //  Each choice and its message indexed once: chunks are read whole.
        proto_jscan_object_t choice, message;
        proto_jscan_object(&choice, item, end);
        proto_jscan_object(&message, proto_jscan_get(&choice, is_event ? "delta" : "message"), end);
        bytes += (int64_t)(proto_jscan_string_bytes(proto_jscan_get(&message, "content"), end) +
                           proto_jscan_string_bytes(proto_jscan_get(&message, "reasoning_content"),
                                                    end) +
                           proto_jscan_string_bytes(proto_jscan_get(&message, "refusal"), end));
        for (const char *call = proto_jscan_first(proto_jscan_get(&message, "tool_calls"), end);
             call; call = proto_jscan_next(call, end))
            if (!s_scan_add_json(
                    proto_jscan_member(proto_jscan_member(call, end, "function"), end, "arguments"),
                    end, &bytes))
                return -1;
        item =
            choice.after ? proto_jscan_next_after(choice.after, end) : proto_jscan_next(item, end);
    }
    return bytes;
}

//  proto_usage_content_bytes on text; -1 when only jansson can tell.
static int64_t s_content_scan(int protocol, const proto_jscan_object_t *top, const char *end,
                              bool is_event)
{
    int64_t bytes = 0;
    switch (protocol) {
    case PROTO_PROTOCOL_ANTHROPIC:
        if (is_event) {
            const char *delta = proto_jscan_get(top, "delta");
            return (int64_t)(S_STRING(delta, "text") + S_STRING(delta, "partial_json") +
                             S_STRING(delta, "thinking"));
        }
        for (const char *item = proto_jscan_first(proto_jscan_get(top, "content"), end); item;
             item = proto_jscan_next(item, end)) {
            bytes += (int64_t)(S_STRING(item, "text") + S_STRING(item, "thinking"));
            if (!s_scan_add_json(proto_jscan_member(item, end, "input"), end, &bytes))
                return -1;
        }
        return bytes;
    case PROTO_PROTOCOL_GEMINI:
        for (const char *item = proto_jscan_first(proto_jscan_get(top, "candidates"), end); item;
             item = proto_jscan_next(item, end))
            for (const char *part = proto_jscan_first(
                     proto_jscan_member(proto_jscan_member(item, end, "content"), end, "parts"),
                     end);
                 part; part = proto_jscan_next(part, end)) {
                bytes += (int64_t)S_STRING(part, "text");
                if (!s_scan_add_json(
                        proto_jscan_member(proto_jscan_member(part, end, "functionCall"), end,
                                           "args"),
                        end, &bytes))
                    return -1;
            }
        return bytes;
    case PROTO_PROTOCOL_OPENAI_RESPONSES:
        if (is_event) {
            char type[64];
            const char *member = proto_jscan_get(top, "type");
            if (proto_jscan_type(member) != PROTO_JSCAN_STRING)
                return 0;
            if (!proto_jscan_string_copy(member, end, type, sizeof type))
                return -1;
            if (strcmp(type, "response.output_text.delta") == 0 ||
                strcmp(type, "response.function_call_arguments.delta") == 0 ||
                strcmp(type, "response.reasoning_summary_text.delta") == 0)
                return (int64_t)proto_jscan_string_bytes(proto_jscan_get(top, "delta"), end);
            return 0;
        }
        for (const char *item = proto_jscan_first(proto_jscan_get(top, "output"), end); item;
             item = proto_jscan_next(item, end)) {
            bytes += (int64_t)S_STRING(item, "arguments");
            for (const char *part =
                     proto_jscan_first(proto_jscan_member(item, end, "content"), end);
                 part; part = proto_jscan_next(part, end))
                bytes += (int64_t)S_STRING(part, "text");
        }
        return bytes;
    default:
        return s_scan_openai(top, end, is_event);
    }
}

int proto_usage_scan(int protocol, const proto_jscan_object_t *root, const char *name,
                     bool is_event, proto_usage_t *usage, size_t *content_bytes)
{
    const char *end = root->end;
    if (proto_jscan_type(root->object) != PROTO_JSCAN_OBJECT) {
        *content_bytes = 0;
        return 0;
    }
    int64_t bytes = s_content_scan(protocol, root, end, is_event);
    if (bytes < 0)
        return -1;
    //  The type is read before usage changes, so that -1 changes nothing.
    proto_usage_t read = *usage;
    int found = s_usage_scan(protocol, root, end, name, is_event, &read);
    if (found < 0)
        return -1;
    *usage = read;
    *content_bytes = (size_t)bytes;
    return found;
}

uint64_t proto_usage_estimate_tokens(size_t bytes)
{
    return ((uint64_t)bytes + 3) / 4;
}

void proto_usage_estimate(proto_usage_t *usage, size_t request_bytes, size_t content_bytes)
{
    if (!usage->seen_in) {
        usage->tokens_in = proto_usage_estimate_tokens(request_bytes);
        usage->estimated = true;
    }
    if (!usage->seen_out) {
        usage->tokens_out = proto_usage_estimate_tokens(content_bytes);
        usage->estimated = true;
    }
}

//  --------------------------------------------------------------------------
//  Self test. Fixtures are the examples of each provider's API reference,
//  trimmed of fields that play no part.

static const char s_openai_body[] =
    "{\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion\","
    "\"created\":1741569952,\"model\":\"gpt-4.1-2025-04-14\",\"choices\":[{\"index\":0,"
    "\"message\":{\"role\":\"assistant\",\"content\":\"Hello! How can I assist you today?\","
    "\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29,"
    "\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},"
    "\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,"
    "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}},"
    "\"service_tier\":\"default\"}";

static const char s_openai_cached_chunk[] =
    "{\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,"
    "\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[],"
    "\"usage\":{\"prompt_tokens\":2006,\"completion_tokens\":300,\"total_tokens\":2306,"
    "\"prompt_tokens_details\":{\"cached_tokens\":1920}}}";

static const char s_openai_delta_chunk[] =
    "{\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,"
    "\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":"
    "0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}],"
    "\"usage\":null}";

static const char s_anthropic_body[] =
    "{\"content\":[{\"text\":\"Hi! My name is Claude.\",\"type\":\"text\"}],\"id\":"
    "\"msg_013Zva2CMHLNnXjNJJKqJ2EF\",\"model\":\"claude-3-7-sonnet-20250219\",\"role\":"
    "\"assistant\",\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"type\":\"message\","
    "\"usage\":{\"input_tokens\":2095,\"output_tokens\":503}}";

static const char s_anthropic_start[] =
    "{\"type\": \"message_start\", \"message\": {\"id\": "
    "\"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\","
    " \"type\": \"message\", \"role\": \"assistant\", \"content\": [], \"model\": "
    "\"claude-opus-4-20250514\", \"stop_reason\": null, \"stop_sequence\": null, \"usage\": "
    "{\"input_tokens\": 21, \"cache_creation_input_tokens\": 188086, "
    "\"cache_read_input_tokens\": 0, \"output_tokens\": 1}}}";

static const char s_anthropic_text_delta[] =
    "{\"type\": \"content_block_delta\",\"index\": 0,\"delta\": {\"type\": \"text_delta\", "
    "\"text\": \"Hello\"}}";

static const char s_anthropic_delta[] =
    "{\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\", "
    "\"stop_sequence\":null}, \"usage\": {\"output_tokens\": 393}}";

//  Anthropic's usage with both cache lifetimes (the Messages API reference:
//  cache_creation_input_tokens is the sum of cache_creation's two counts).
static const char s_anthropic_two_ttls[] =
    "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],"
    "\"usage\":{\"input_tokens\":50,\"cache_creation_input_tokens\":2500,"
    "\"cache_read_input_tokens\":0,\"cache_creation\":{\"ephemeral_5m_input_tokens\":500,"
    "\"ephemeral_1h_input_tokens\":2000},\"output_tokens\":10}}";

static const char s_anthropic_start_1h[] =
    "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_02\",\"type\":\"message\","
    "\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":3,"
    "\"cache_creation_input_tokens\":1200,\"cache_read_input_tokens\":0,\"cache_creation\":"
    "{\"ephemeral_5m_input_tokens\":0,\"ephemeral_1h_input_tokens\":1200},"
    "\"output_tokens\":1}}}";

static const char s_gemini_body[] =
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Once upon a time\"}],\"role\":"
    "\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":"
    "4,\"candidatesTokenCount\":19,\"totalTokenCount\":23,\"cachedContentTokenCount\":2,"
    "\"thoughtsTokenCount\":5},\"modelVersion\":\"gemini-2.0-flash\"}";

static const char s_responses_completed[] =
    "{\"type\":\"response.completed\",\"response\":{\"id\":\"resp_123\",\"object\":\"response\","
    "\"status\":\"completed\",\"output\":[],\"usage\":{\"input_tokens\":37,\"output_tokens\":11,"
    "\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":48,"
    "\"input_tokens_details\":{\"cached_tokens\":7}}},\"sequence_number\":9}";

//  proto_usage_scan gives what the jansson functions give, on every
//  fixture read as every protocol, as an event and as an answer.
static void s_test_scan(void)
{
    const char *fixtures[] = {s_openai_body,     s_openai_cached_chunk, s_openai_delta_chunk,
                              s_anthropic_body,  s_anthropic_start,     s_anthropic_text_delta,
                              s_anthropic_delta, s_anthropic_two_ttls,  s_anthropic_start_1h,
                              s_gemini_body,     s_responses_completed};
    const char *names[] = {"", "message_start", "message_delta", "response.completed"};
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        json_t *json = json_loads(fixtures[i], JSON_ALLOW_NUL, NULL);
        PROTO_CHECK(json);
        for (int protocol = PROTO_PROTOCOL_OPENAI; protocol <= PROTO_PROTOCOL_OPENAI_IMAGES;
             protocol++)
            for (size_t n = 0; n < sizeof names / sizeof names[0]; n++)
                for (int is_event = 0; is_event < 2; is_event++) {
                    proto_usage_t parsed = {.tokens_in = 1}, scanned = parsed;
                    int found = proto_usage_from_json(protocol, json, names[n], is_event, &parsed);
                    size_t bytes = proto_usage_content_bytes(protocol, json, is_event), scan_bytes;
                    proto_jscan_object_t root;
                    proto_jscan_object(&root, fixtures[i], fixtures[i] + strlen(fixtures[i]));
                    PROTO_CHECK(proto_usage_scan(protocol, &root, names[n], is_event, &scanned,
                                                 &scan_bytes) == found);
                    PROTO_CHECK(memcmp(&parsed, &scanned, sizeof parsed) == 0);
                    PROTO_CHECK(bytes == scan_bytes);
                }
        json_decref(json);
    }
    //  Tool arguments given as JSON are left to jansson, untouched.
    const char *call = "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":"
                       "{\"a\":1}}}]}}],\"usage\":{\"prompt_tokens\":3}}";
    proto_usage_t usage = {0};
    size_t bytes = 7;
    proto_jscan_object_t root;
    proto_jscan_object(&root, call, call + strlen(call));
    PROTO_CHECK(proto_usage_scan(PROTO_PROTOCOL_OPENAI, &root, "", true, &usage, &bytes) == -1);
    PROTO_CHECK(bytes == 7 && !usage.seen_in);
}

void proto_usage_test(bool verbose)
{
    if (verbose)
        printf(" * proto_usage: ");
    proto_usage_t usage;
    PROTO_CHECK(proto_usage_from_body(PROTO_PROTOCOL_OPENAI, s_openai_body, strlen(s_openai_body),
                                      &usage) == 0);
    PROTO_CHECK(usage.tokens_in == 19 && usage.tokens_out == 10 && usage.tokens_cache_read == 0);
    PROTO_CHECK(usage.seen_in && usage.seen_out && !usage.estimated);
    json_t *json = json_loads(s_openai_body, 0, NULL);
    PROTO_CHECK(proto_usage_content_bytes(PROTO_PROTOCOL_OPENAI, json, false) ==
                strlen("Hello! How can I assist you today?"));
    json_decref(json);

    //  A stream: deltas carry "usage": null; the last chunk has it all.
    memset(&usage, 0, sizeof usage);
    PROTO_CHECK(proto_usage_from_event(PROTO_PROTOCOL_OPENAI, "", s_openai_delta_chunk,
                                       strlen(s_openai_delta_chunk), &usage) == 0);
    PROTO_CHECK(proto_usage_from_event(PROTO_PROTOCOL_OPENAI, "", s_openai_cached_chunk,
                                       strlen(s_openai_cached_chunk), &usage) == 1);
    PROTO_CHECK(usage.tokens_in == 86 && usage.tokens_cache_read == 1920 &&
                usage.tokens_out == 300);
    json = json_loads(s_openai_delta_chunk, 0, NULL);
    PROTO_CHECK(proto_usage_content_bytes(PROTO_PROTOCOL_OPENAI, json, true) == 5);
    json_decref(json);

    //  No usage, or not JSON.
    PROTO_CHECK(proto_usage_from_body(PROTO_PROTOCOL_OPENAI, "{\"choices\":[]}", 14, &usage) == -1);
    PROTO_CHECK(proto_usage_from_body(PROTO_PROTOCOL_OPENAI, "{\"usage", 7, &usage) == -1);
    PROTO_CHECK(proto_usage_from_body(PROTO_PROTOCOL_OPENAI, "{\"usage\":{\"prompt_tokens\":-3}}",
                                      30, &usage) == -1);

    PROTO_CHECK(proto_usage_from_body(PROTO_PROTOCOL_ANTHROPIC, s_anthropic_body,
                                      strlen(s_anthropic_body), &usage) == 0);
    PROTO_CHECK(usage.tokens_in == 2095 && usage.tokens_out == 503);
    memset(&usage, 0, sizeof usage);
    PROTO_CHECK(proto_usage_from_event(PROTO_PROTOCOL_ANTHROPIC, "message_start", s_anthropic_start,
                                       strlen(s_anthropic_start), &usage) == 1);
    PROTO_CHECK(usage.tokens_in == 21 && usage.tokens_cache_write == 188086 &&
                usage.tokens_out == 1);
    PROTO_CHECK(proto_usage_from_event(PROTO_PROTOCOL_ANTHROPIC, "content_block_delta",
                                       s_anthropic_text_delta, strlen(s_anthropic_text_delta),
                                       &usage) == 0);
    PROTO_CHECK(proto_usage_from_event(PROTO_PROTOCOL_ANTHROPIC, "message_delta", s_anthropic_delta,
                                       strlen(s_anthropic_delta), &usage) == 1);
    PROTO_CHECK(usage.tokens_in == 21 && usage.tokens_cache_write == 188086);
    PROTO_CHECK(usage.tokens_out == 393);
    json = json_loads(s_anthropic_text_delta, 0, NULL);
    PROTO_CHECK(proto_usage_content_bytes(PROTO_PROTOCOL_ANTHROPIC, json, true) == 5);
    json_decref(json);

    //  Both cache lifetimes: the total stays cache_creation_input_tokens,
    //  the 1-hour part is apart; a stream keeps it through message_delta.
    PROTO_CHECK(proto_usage_from_body(PROTO_PROTOCOL_ANTHROPIC, s_anthropic_two_ttls,
                                      strlen(s_anthropic_two_ttls), &usage) == 0);
    PROTO_CHECK(usage.tokens_in == 50 && usage.tokens_cache_write == 2500);
    PROTO_CHECK(usage.tokens_cache_write_1h == 2000 && usage.tokens_out == 10);
    memset(&usage, 0, sizeof usage);
    PROTO_CHECK(proto_usage_from_event(PROTO_PROTOCOL_ANTHROPIC, "message_start",
                                       s_anthropic_start_1h, strlen(s_anthropic_start_1h),
                                       &usage) == 1);
    PROTO_CHECK(proto_usage_from_event(PROTO_PROTOCOL_ANTHROPIC, "message_delta", s_anthropic_delta,
                                       strlen(s_anthropic_delta), &usage) == 1);
    PROTO_CHECK(usage.tokens_cache_write == 1200 && usage.tokens_cache_write_1h == 1200);
    PROTO_CHECK(usage.tokens_in == 3 && usage.tokens_out == 393);
    //  Only the split, no total: the split is the total.
    PROTO_CHECK(
        proto_usage_from_body(PROTO_PROTOCOL_ANTHROPIC,
                              "{\"usage\":{\"cache_creation\":{\"ephemeral_5m_input_tokens\":"
                              "7,\"ephemeral_1h_input_tokens\":5}}}",
                              90, &usage) == 0);
    PROTO_CHECK(usage.tokens_cache_write == 12 && usage.tokens_cache_write_1h == 5);

    PROTO_CHECK(proto_usage_from_body(PROTO_PROTOCOL_GEMINI, s_gemini_body, strlen(s_gemini_body),
                                      &usage) == 0);
    PROTO_CHECK(usage.tokens_in == 2 && usage.tokens_cache_read == 2 && usage.tokens_out == 24);
    json = json_loads(s_gemini_body, 0, NULL);
    PROTO_CHECK(proto_usage_content_bytes(PROTO_PROTOCOL_GEMINI, json, true) == 16);
    json_decref(json);

    memset(&usage, 0, sizeof usage);
    PROTO_CHECK(proto_usage_from_event(PROTO_PROTOCOL_OPENAI_RESPONSES, "response.completed",
                                       s_responses_completed, strlen(s_responses_completed),
                                       &usage) == 1);
    PROTO_CHECK(usage.tokens_in == 30 && usage.tokens_cache_read == 7 && usage.tokens_out == 11);

    //  Estimates fill only what is missing.
    PROTO_CHECK(proto_usage_estimate_tokens(0) == 0);
    PROTO_CHECK(proto_usage_estimate_tokens(1) == 1);
    PROTO_CHECK(proto_usage_estimate_tokens(8) == 2);
    PROTO_CHECK(proto_usage_estimate_tokens(9) == 3);
    memset(&usage, 0, sizeof usage);
    proto_usage_estimate(&usage, 101, 0);
    PROTO_CHECK(usage.tokens_in == 26 && usage.tokens_out == 0 && usage.estimated);
    memset(&usage, 0, sizeof usage);
    usage.seen_in = true;
    usage.tokens_in = 5;
    proto_usage_estimate(&usage, 100, 10);
    PROTO_CHECK(usage.tokens_in == 5 && usage.tokens_out == 3 && usage.estimated);

    //  Images: the count of `data`, tokens when a gpt-image model gives them.
    const char *images = "{\"created\":1713833628,\"data\":[{\"b64_json\":\"QQ==\"},"
                         "{\"b64_json\":\"Qg==\"}],\"usage\":{\"total_tokens\":100,"
                         "\"input_tokens\":50,\"output_tokens\":50,"
                         "\"input_tokens_details\":{\"text_tokens\":10,\"image_tokens\":40}}}";
    PROTO_CHECK(
        proto_usage_from_body(PROTO_PROTOCOL_OPENAI_IMAGES, images, strlen(images), &usage) == 0);
    PROTO_CHECK(usage.images == 2 && usage.tokens_in == 50 && usage.tokens_out == 50);
    images = "{\"created\":1,\"data\":[{\"url\":\"https://x.test/a.png\"}]}";
    PROTO_CHECK(
        proto_usage_from_body(PROTO_PROTOCOL_OPENAI_IMAGES, images, strlen(images), &usage) == 0);
    PROTO_CHECK(usage.images == 1 && usage.tokens_in == 0 && usage.seen_in && usage.seen_out);
    proto_usage_estimate(&usage, 100, 0);
    PROTO_CHECK(usage.tokens_in == 0 && !usage.estimated);
    s_test_scan();
    if (verbose)
        printf("OK\n");
}
