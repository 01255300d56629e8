/*  proto_convert_openai: OpenAI Chat Completions to and from the neutral
    form. Reasoning text travels in `reasoning_content` (message and delta),
    the field OpenAI-compatible servers (DeepSeek, vLLM) use, since the
    official API sends no reasoning text on this endpoint.
*/
#include "proto_convert_ir.h"

#include <string.h>
#include <time.h>

#define S_NAME "OpenAI Chat Completions"

//  ---------------------------------------------------------------------------
//  Stop reasons

static pc_stop_t s_stop_read(const char *reason)
{
    if (!reason)
        return PC_STOP_NONE;
    if (strcmp(reason, "stop") == 0)
        return PC_STOP_END;
    if (strcmp(reason, "length") == 0)
        return PC_STOP_LENGTH;
    if (strcmp(reason, "tool_calls") == 0 || strcmp(reason, "function_call") == 0)
        return PC_STOP_TOOL;
    if (strcmp(reason, "content_filter") == 0)
        return PC_STOP_FILTER;
    return PC_STOP_END;
}

static const char *s_stop_write(pc_stop_t stop)
{
    switch (stop) {
    case PC_STOP_LENGTH:
        return "length";
    case PC_STOP_TOOL:
        return "tool_calls";
    case PC_STOP_FILTER:
    case PC_STOP_REFUSAL:
        return "content_filter";
    default:
        return "stop";
    }
}

//  ---------------------------------------------------------------------------
//  Request: client -> neutral

//  Text of a content that is a string or an array of text parts; NULL when
//  a part is not text.
static char *s_text_of(const json_t *content)
{
    if (json_is_string(content))
        return strdup(json_string_value(content));
    if (json_is_null(content) || !content)
        return strdup("");
    if (!json_is_array(content))
        return NULL;
    size_t index;
    json_t *part;
    char *text = strdup("");
    json_array_foreach(content, index, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        const char *piece = json_string_value(json_object_get(part, "text"));
        if (!type || (strcmp(type, "text") && strcmp(type, "refusal")) ||
            (!piece && strcmp(type, "refusal"))) {
            free(text);
            return NULL;
        }
        if (!piece)
            piece = json_string_value(json_object_get(part, "refusal"));
        char *joined = NULL;
        if (asprintf(&joined, "%s%s", text, piece ? piece : "") < 0)
            joined = NULL;
        free(text);
        text = joined;
        if (!text)
            return NULL;
    }
    return text;
}

//  User content: string or parts (text, image_url, file) -> neutral parts.
static json_t *s_user_parts(const json_t *content, char *error, size_t size)
{
    json_t *parts = json_array();
    if (json_is_string(content)) {
        pc_add_text(parts, json_string_value(content));
        return parts;
    }
    if (!json_is_array(content)) {
        json_decref(parts);
        return pc_fail(error, size, "message content must be a string or an array of parts");
    }
    size_t index;
    json_t *part;
    json_array_foreach(content, index, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *media = NULL;
        if (type && strcmp(type, "text") == 0 && json_is_string(json_object_get(part, "text")))
            pc_add_text(parts, json_string_value(json_object_get(part, "text")));
        else if (type && strcmp(type, "image_url") == 0)
            media = pc_media_from_url(
                json_string_value(json_object_get(json_object_get(part, "image_url"), "url")));
        else if (type && strcmp(type, "file") == 0)
            media = pc_media_from_url(
                json_string_value(json_object_get(json_object_get(part, "file"), "file_data")));
        else {
            json_decref(parts);
            return pc_fail(error, size, "content part type '%s' cannot be converted",
                           type ? type : "?");
        }
        if (media)
            json_array_append_new(parts, media);
        else if (type && strcmp(type, "text")) {
            json_decref(parts);
            return pc_fail(error, size, "a %s part needs a URL or base64 data", type);
        }
    }
    return parts;
}

static const char *const s_request_keys[] = {"model",
                                             "messages",
                                             "stream",
                                             "stream_options",
                                             "max_tokens",
                                             "max_completion_tokens",
                                             "temperature",
                                             "top_p",
                                             "stop",
                                             "tools",
                                             "tool_choice",
                                             "parallel_tool_calls",
                                             "response_format",
                                             "reasoning_effort",
                                             "user",
                                             "n",
                                             "seed",
                                             "presence_penalty",
                                             "frequency_penalty",
                                             "logprobs",
                                             "top_logprobs",
                                             NULL};

//  Fields whose loss would change what the client gets back: several
//  choices, log probabilities, audio, the legacy functions (tools that
//  would vanish), a predicted output is only a hint and is not here.
static json_t *s_refuse(const json_t *request, char *error, size_t size)
{
    json_t *n = json_object_get(request, "n");
    if (n && !(json_is_integer(n) && json_integer_value(n) == 1))
        return pc_fail(error, size, "n other than 1 cannot be converted");
    if (json_is_true(json_object_get(request, "logprobs")))
        return pc_fail(error, size, "logprobs cannot be converted to another protocol");
    const char *refused[] = {"audio", "modalities", "functions", "function_call", NULL};
    for (const char **key = refused; *key; key++) {
        json_t *value = json_object_get(request, *key);
        if (!value || json_is_null(value))
            continue;
        const char *only = json_string_value(json_array_get(value, 0));
        if (strcmp(*key, "modalities") == 0 && json_array_size(value) == 1 && only &&
            strcmp(only, "text") == 0)
            continue;
        return pc_fail(error, size, "%s field '%s' cannot be converted to another protocol", S_NAME,
                       *key);
    }
    return (json_t *)request;
}

//  Client fields -> neutral: one handler per field, run in the order
//  of s_read_fields (a refusal names the first field that cannot be converted).

//  A message's handler, by its role. names maps tool call ids to tool names
//  (Gemini's function responses name their function).
typedef int(s_role_fn)(const json_t *message, json_t *ir, json_t *names, char *error, size_t size);

//  Anthropic and Gemini have one system prompt: every system message joins
//  it, in order (docs/conversion.md).
static int s_read_system(const json_t *message, json_t *ir, json_t *names, char *error, size_t size)
{
    (void)names;
    char *text = s_text_of(json_object_get(message, "content"));
    if (!text) {
        pc_fail(error, size, "system message content must be text");
        return -1;
    }
    if (*text)
        json_array_append_new(json_object_get(ir, "system"), json_string(text));
    free(text);
    return 0;
}

static int s_read_user(const json_t *message, json_t *ir, json_t *names, char *error, size_t size)
{
    (void)names;
    json_t *parts = s_user_parts(json_object_get(message, "content"), error, size);
    if (!parts)
        return -1;
    pc_push_message(json_object_get(ir, "messages"), "user", parts);
    return 0;
}

static int s_read_assistant(const json_t *message, json_t *ir, json_t *names, char *error,
                            size_t size)
{
    json_t *parts = json_array();
    const char *reasoning = json_string_value(json_object_get(message, "reasoning_content"));
    if (reasoning && *reasoning)
        json_array_append_new(parts,
                              json_pack("{s:s, s:s}", "type", "thinking", "text", reasoning));
    char *text = s_text_of(json_object_get(message, "content"));
    if (!text) {
        json_decref(parts);
        pc_fail(error, size, "assistant message content must be text");
        return -1;
    }
    pc_add_text(parts, text);
    free(text);
    size_t index;
    json_t *call;
    json_array_foreach(json_object_get(message, "tool_calls"), index, call)
    {
        json_t *function = json_object_get(call, "function");
        const char *id = json_string_value(json_object_get(call, "id"));
        const char *name = json_string_value(json_object_get(function, "name"));
        const char *arguments = json_string_value(json_object_get(function, "arguments"));
        if (!id || !name) {
            json_decref(parts);
            pc_fail(error, size, "a tool call needs an id and a function name");
            return -1;
        }
        json_object_set_new(names, id, json_string(name));
        json_array_append_new(parts,
                              json_pack("{s:s, s:s, s:s, s:s}", "type", "tool_call", "id", id,
                                        "name", name, "arguments", arguments ? arguments : "{}"));
    }
    pc_push_message(json_object_get(ir, "messages"), "assistant", parts);
    return 0;
}

//  A tool message becomes a tool_result part of a user message.
static int s_read_tool(const json_t *message, json_t *ir, json_t *names, char *error, size_t size)
{
    const char *id = json_string_value(json_object_get(message, "tool_call_id"));
    char *text = s_text_of(json_object_get(message, "content"));
    if (!id || !text) {
        free(text);
        pc_fail(error, size, "a tool message needs tool_call_id and text content");
        return -1;
    }
    json_t *result = json_pack("{s:s, s:s, s:[], s:b}", "type", "tool_result", "id", id, "content",
                               "is_error", 0);
    pc_add_text(json_object_get(result, "content"), text);
    free(text);
    json_t *name = json_object_get(names, id);
    if (name)
        json_object_set(result, "name", name);
    pc_push_message(json_object_get(ir, "messages"), "user", json_pack("[o]", result));
    return 0;
}

static const struct {
    const char *role;
    s_role_fn *read;
} s_roles[] = {{"system", s_read_system},
               {"developer", s_read_system},
               {"user", s_read_user},
               {"assistant", s_read_assistant},
               {"tool", s_read_tool}};

static int s_read_messages(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error,
                           size_t size)
{
    json_t *messages = json_object_get(request, "messages");
    if (!json_is_array(messages) || !json_array_size(messages)) {
        pc_fail(error, size, "messages must be a non-empty array");
        return -1;
    }
    json_t *names = json_object(); //  tool call id -> name, for Gemini
    int rc = 0;
    size_t index;
    json_t *message;
    json_array_foreach(messages, index, message)
    {
        const char *role = json_string_value(json_object_get(message, "role"));
        s_role_fn *read = NULL;
        if (role && json_object_get(message, "name"))
            pc_drop(ctx, "", "messages[].name");
        for (size_t at = 0; role && !read && at < sizeof(s_roles) / sizeof(s_roles[0]); at++)
            if (strcmp(role, s_roles[at].role) == 0)
                read = s_roles[at].read;
        if (!read) {
            pc_fail(error, size, "message role '%s' cannot be converted", role ? role : "?");
            rc = -1;
        } else
            rc = read(message, ir, names, error, size);
        if (rc)
            break;
    }
    json_decref(names);
    return rc;
}

static int s_read_tools(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error, size_t size)
{
    json_t *tools = json_object_get(request, "tools");
    if (!tools)
        return 0;
    json_t *list = json_array();
    json_object_set_new(ir, "tools", list);
    size_t index;
    json_t *tool;
    json_array_foreach(tools, index, tool)
    {
        json_t *function = json_object_get(tool, "function");
        const char *type = json_string_value(json_object_get(tool, "type"));
        const char *name = json_string_value(json_object_get(function, "name"));
        if (!type || strcmp(type, "function") || !name) {
            pc_fail(error, size, "only function tools can be converted");
            return -1;
        }
        if (json_object_get(function, "strict"))
            pc_drop(ctx, "", "tools[].function.strict");
        json_t *item = json_pack("{s:s}", "name", name);
        json_t *description = json_object_get(function, "description");
        json_t *parameters = json_object_get(function, "parameters");
        if (json_is_string(description))
            json_object_set(item, "description", description);
        if (json_is_object(parameters))
            json_object_set(item, "parameters", parameters);
        json_array_append_new(list, item);
    }
    return 0;
}

static int s_read_tool_choice(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error,
                              size_t size)
{
    (void)ctx;
    json_t *choice = json_object_get(request, "tool_choice");
    if (json_is_string(choice))
        json_object_set(ir, "tool_choice", choice);
    else if (json_is_object(choice)) {
        const char *name =
            json_string_value(json_object_get(json_object_get(choice, "function"), "name"));
        if (!name) {
            pc_fail(error, size, "tool_choice must name a function");
            return -1;
        }
        json_object_set_new(ir, "tool_choice", json_pack("{s:s}", "name", name));
    }
    json_t *parallel = json_object_get(request, "parallel_tool_calls");
    if (json_is_boolean(parallel))
        json_object_set(ir, "parallel_tool_calls", parallel);
    return 0;
}

//  max_completion_tokens (or the older max_tokens), the sampling numbers and
//  stop sequences.
static int s_read_sampling(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error,
                           size_t size)
{
    (void)ctx, (void)error, (void)size;
    json_t *max = json_object_get(request, "max_completion_tokens");
    if (!json_is_integer(max))
        max = json_object_get(request, "max_tokens");
    if (json_is_integer(max))
        json_object_set(ir, "max_tokens", max);
    const char *copied[] = {"temperature", "top_p", "seed", NULL};
    for (const char **key = copied; *key; key++) {
        json_t *value = json_object_get(request, *key);
        if (json_is_number(value))
            json_object_set(ir, *key, value);
    }
    //  Zero penalties are the default everywhere; only others must be expressed.
    const char *penalties[] = {"presence_penalty", "frequency_penalty", NULL};
    for (const char **key = penalties; *key; key++) {
        json_t *value = json_object_get(request, *key);
        if (json_is_number(value) && json_number_value(value) != 0)
            json_object_set(ir, *key, value);
    }
    json_t *stop = json_object_get(request, "stop");
    if (json_is_string(stop))
        json_object_set_new(ir, "stop", json_pack("[O]", stop));
    else if (json_is_array(stop) && json_array_size(stop))
        json_object_set(ir, "stop", stop);
    return 0;
}

static int s_read_response_format(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error,
                                  size_t size)
{
    (void)ctx;
    json_t *format = json_object_get(request, "response_format");
    const char *format_type = json_string_value(json_object_get(format, "type"));
    if (format_type && strcmp(format_type, "json_object") == 0)
        json_object_set_new(ir, "response_format", json_pack("{s:s}", "type", "json_object"));
    else if (format_type && strcmp(format_type, "json_schema") == 0) {
        json_t *schema = json_object_get(format, "json_schema");
        json_t *item = json_pack("{s:s}", "type", "json_schema");
        json_t *value;
        if ((value = json_object_get(schema, "name")))
            json_object_set(item, "name", value);
        if ((value = json_object_get(schema, "schema")))
            json_object_set(item, "schema", value);
        if ((value = json_object_get(schema, "strict")))
            json_object_set(item, "strict", value);
        json_object_set_new(ir, "response_format", item);
    } else if (format_type && strcmp(format_type, "text")) {
        pc_fail(error, size, "response_format type '%s' cannot be converted", format_type);
        return -1;
    }
    return 0;
}

//  reasoning_effort and the end-user id.
static int s_read_reasoning(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error,
                            size_t size)
{
    (void)ctx, (void)error, (void)size;
    const char *effort = json_string_value(json_object_get(request, "reasoning_effort"));
    if (effort)
        json_object_set_new(ir, "reasoning", json_pack("{s:s}", "effort", effort));
    json_t *user = json_object_get(request, "user");
    if (json_is_string(user))
        json_object_set(ir, "user", user);
    return 0;
}

static pc_field_fn *const s_read_fields[] = {
    s_read_messages,  s_read_tools, s_read_tool_choice, s_read_sampling, s_read_response_format,
    s_read_reasoning, NULL};

static json_t *s_request_read(const json_t *request, bool stream, pc_ctx_t *ctx, char *error,
                              size_t size)
{
    (void)stream;
    if (!s_refuse(request, error, size))
        return NULL;
    pc_drop_unknown(request, s_request_keys, "", ctx);
    json_t *ir = json_pack("{s:[], s:[]}", "system", "messages");
    if (pc_fields_run(s_read_fields, request, ir, ctx, error, size)) {
        json_decref(ir);
        return NULL;
    }
    return ir;
}

//  ---------------------------------------------------------------------------
//  Request: neutral -> upstream

//  Joins the text parts of a tool result; NULL when it holds media, which
//  OpenAI tool messages cannot carry.
static char *s_result_text(const json_t *result)
{
    size_t index;
    json_t *part;
    char *text = strdup("");
    json_array_foreach(json_object_get(result, "content"), index, part)
    {
        const char *piece = json_string_value(json_object_get(part, "text"));
        char *joined = NULL;
        if (!piece || asprintf(&joined, "%s%s%s", text, *text ? "\n" : "", piece) < 0) {
            free(text);
            return NULL;
        }
        free(text);
        text = joined;
    }
    return text;
}

//  Neutral fields -> upstream: one handler per field, run in the
//  order of s_write_fields (which is also the order dropped fields are named).

//  One neutral message on its way out, its parts sorted by where Chat
//  Completions wants them.
typedef struct {
    bool assistant;   //  The assistant's message: calls allowed, media not
    json_t *content;  //  User content parts (text, image_url, file)
    json_t *calls;    //  Assistant tool_calls
    char *text;       //  The text parts joined (a plain string when nothing else)
    json_t *messages; //  The body's messages: a tool result is a message of its own
    pc_ctx_t *ctx;    //  Where dropped fields are named
} s_message_t;

//  A neutral part's handler, by its type.
typedef int(s_part_fn)(s_message_t *self, const json_t *part, char *error, size_t size);

static int s_write_text(s_message_t *self, const json_t *part, char *error, size_t size)
{
    (void)error, (void)size;
    const char *piece = json_string_value(json_object_get(part, "text"));
    json_array_append_new(self->content, json_pack("{s:s, s:s}", "type", "text", "text", piece));
    char *joined = NULL;
    if (asprintf(&joined, "%s%s", self->text, piece) >= 0) {
        free(self->text);
        self->text = joined;
    }
    return 0;
}

static int s_write_media(s_message_t *self, const json_t *part, char *error, size_t size)
{
    const char *mime = json_string_value(json_object_get(part, "mime"));
    char *url = pc_media_to_url(part);
    if (self->assistant || !url) {
        free(url);
        pc_fail(error, size, "%s",
                self->assistant ? "assistant images cannot be expressed for an OpenAI Chat "
                                  "Completions upstream"
                                : "media without data or URL");
        return -1;
    }
    if (mime && strncmp(mime, "image/", 6))
        json_array_append_new(self->content,
                              json_pack("{s:s, s:{s:s, s:s}}", "type", "file", "file", "file_data",
                                        url, "filename", "document"));
    else
        json_array_append_new(self->content, json_pack("{s:s, s:{s:s}}", "type", "image_url",
                                                       "image_url", "url", url));
    free(url);
    return 0;
}

static int s_write_tool_call(s_message_t *self, const json_t *part, char *error, size_t size)
{
    (void)error, (void)size;
    json_array_append_new(self->calls, json_pack("{s:O, s:s, s:{s:O, s:O}}", "id",
                                                 json_object_get(part, "id"), "type", "function",
                                                 "function", "name", json_object_get(part, "name"),
                                                 "arguments", json_object_get(part, "arguments")));
    return 0;
}

static int s_write_tool_result(s_message_t *self, const json_t *part, char *error, size_t size)
{
    char *result = s_result_text(part);
    if (!result) {
        pc_fail(error, size, "tool results with images cannot be expressed for an %s upstream",
                S_NAME);
        return -1;
    }
    json_array_append_new(self->messages,
                          json_pack("{s:s, s:O, s:s}", "role", "tool", "tool_call_id",
                                    json_object_get(part, "id"), "content", result));
    free(result);
    return 0;
}

//  Thinking from earlier turns has no field here; the provider would ignore
//  it anyway (docs/conversion.md).
static int s_write_thinking(s_message_t *self, const json_t *part, char *error, size_t size)
{
    (void)part, (void)error, (void)size;
    pc_drop_ir(self->ctx, "thinking");
    return 0;
}

static const struct {
    const char *type;
    s_part_fn *write;
} s_parts[] = {{"text", s_write_text},
               {"media", s_write_media},
               {"tool_call", s_write_tool_call},
               {"tool_result", s_write_tool_result},
               {"thinking", s_write_thinking}};

//  One neutral message: the assistant's text and calls as one assistant
//  message; a user's parts as a user message (a plain string when all are
//  text), after a tool message for each tool result among them.
static int s_write_message(const json_t *message, json_t *messages, pc_ctx_t *ctx, char *error,
                           size_t size)
{
    const char *role = json_string_value(json_object_get(message, "role"));
    s_message_t self = {.assistant = strcmp(role, "assistant") == 0,
                        .content = json_array(),
                        .calls = json_array(),
                        .text = strdup(""),
                        .messages = messages,
                        .ctx = ctx};
    int rc = 0;
    size_t index;
    json_t *part;
    json_array_foreach(json_object_get(message, "content"), index, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        for (size_t at = 0; type && at < sizeof(s_parts) / sizeof(s_parts[0]); at++)
            if (strcmp(type, s_parts[at].type) == 0) {
                rc = s_parts[at].write(&self, part, error, size);
                break;
            }
        if (rc)
            break;
    }
    if (rc == 0 && self.assistant) {
        json_t *item = json_pack("{s:s}", "role", "assistant");
        json_object_set_new(item, "content", *self.text ? json_string(self.text) : json_null());
        if (json_array_size(self.calls))
            json_object_set(item, "tool_calls", self.calls);
        if (*self.text || json_array_size(self.calls))
            json_array_append_new(messages, item);
        else
            json_decref(item);
    } else if (rc == 0 && json_array_size(self.content)) {
        bool plain = true;
        json_array_foreach(self.content, index, part) plain &=
            strcmp(json_string_value(json_object_get(part, "type")), "text") == 0;
        json_array_append_new(
            messages, json_pack("{s:s, s:o}", "role", "user", "content",
                                plain ? json_string(self.text) : json_incref(self.content)));
    }
    free(self.text);
    json_decref(self.content);
    json_decref(self.calls);
    return rc;
}

//  top_k has no field in Chat Completions.
static int s_write_top_k(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error, size_t size)
{
    (void)body, (void)error, (void)size;
    if (json_object_get(ir, "top_k"))
        pc_drop_ir(ctx, "top_k");
    return 0;
}

//  System text as system messages first, then the conversation.
static int s_write_messages(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error, size_t size)
{
    json_t *messages = json_object_get(body, "messages");
    size_t index;
    json_t *value;
    json_array_foreach(json_object_get(ir, "system"), index, value) json_array_append_new(
        messages, json_pack("{s:s, s:O}", "role", "system", "content", value));
    json_array_foreach(json_object_get(ir, "messages"), index, value)
    {
        if (s_write_message(value, messages, ctx, error, size))
            return -1;
    }
    return 0;
}

//  Tools, the choice among them, and parallel_tool_calls when there are tools.
static int s_write_tools(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error, size_t size)
{
    (void)ctx, (void)error, (void)size;
    json_t *tools = json_object_get(ir, "tools");
    size_t index;
    json_t *tool;
    if (json_array_size(tools)) {
        json_t *list = json_array();
        json_array_foreach(tools, index, tool)
        {
            json_t *function = json_pack("{s:O}", "name", json_object_get(tool, "name"));
            if (json_object_get(tool, "description"))
                json_object_set(function, "description", json_object_get(tool, "description"));
            json_t *parameters = json_object_get(tool, "parameters");
            json_object_set_new(function, "parameters",
                                parameters
                                    ? json_incref(parameters)
                                    : json_pack("{s:s, s:{}}", "type", "object", "properties"));
            json_array_append_new(
                list, json_pack("{s:s, s:o}", "type", "function", "function", function));
        }
        json_object_set_new(body, "tools", list);
    }
    json_t *choice = json_object_get(ir, "tool_choice");
    if (json_is_string(choice))
        json_object_set(body, "tool_choice", choice);
    else if (choice)
        json_object_set_new(body, "tool_choice",
                            json_pack("{s:s, s:{s:O}}", "type", "function", "function", "name",
                                      json_object_get(choice, "name")));
    json_t *parallel = json_object_get(ir, "parallel_tool_calls");
    if (parallel && json_array_size(tools))
        json_object_set(body, "parallel_tool_calls", parallel);
    return 0;
}

//  max_completion_tokens (the field reasoning models accept; they refuse
//  max_tokens), the sampling numbers, the end-user id and stop sequences.
static int s_write_sampling(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error, size_t size)
{
    (void)ctx, (void)error, (void)size;
    json_t *value;
    if ((value = json_object_get(ir, "max_tokens")))
        json_object_set(body, "max_completion_tokens", value);
    const char *copied[] = {"temperature",       "top_p", "seed", "presence_penalty",
                            "frequency_penalty", "user",  NULL};
    for (const char **key = copied; *key; key++)
        if ((value = json_object_get(ir, *key)))
            json_object_set(body, *key, value);
    if ((value = json_object_get(ir, "stop")))
        json_object_set(body, "stop", value);
    return 0;
}

static int s_write_response_format(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error,
                                   size_t size)
{
    (void)ctx, (void)error, (void)size;
    json_t *format = json_object_get(ir, "response_format");
    const char *format_type = json_string_value(json_object_get(format, "type"));
    if (format_type && strcmp(format_type, "json_object") == 0)
        json_object_set_new(body, "response_format", json_pack("{s:s}", "type", "json_object"));
    else if (format_type) {
        json_t *name = json_object_get(format, "name");
        json_t *schema =
            json_pack("{s:s}", "name", json_is_string(name) ? json_string_value(name) : "response");
        if (json_object_get(format, "schema"))
            json_object_set(schema, "schema", json_object_get(format, "schema"));
        if (json_object_get(format, "strict"))
            json_object_set(schema, "strict", json_object_get(format, "strict"));
        json_object_set_new(body, "response_format",
                            json_pack("{s:s, s:o}", "type", "json_schema", "json_schema", schema));
    }
    return 0;
}

static int s_write_reasoning(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error,
                             size_t size)
{
    (void)error, (void)size;
    json_t *reasoning = json_object_get(ir, "reasoning");
    const char *effort = json_string_value(json_object_get(reasoning, "effort"));
    if (!effort)
        effort = pc_budget_to_effort(json_integer_value(json_object_get(reasoning, "budget")));
    if (effort)
        json_object_set_new(body, "reasoning_effort", json_string(effort));
    //  Chat Completions has no switch for reasoning text: a server that
    //  sends it does so unasked (reasoning_content).
    if (json_is_true(json_object_get(reasoning, "include_thoughts")))
        pc_drop_ir(ctx, "include_thoughts");
    return 0;
}

static int s_write_stream(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error, size_t size)
{
    (void)ctx, (void)error, (void)size;
    if (json_is_true(json_object_get(ir, "stream"))) {
        json_object_set_new(body, "stream", json_true());
        //  Always asked: usage is what billing settles on.
        json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    return 0;
}

static pc_field_fn *const s_write_fields[] = {
    s_write_top_k,           s_write_messages,  s_write_tools,  s_write_sampling,
    s_write_response_format, s_write_reasoning, s_write_stream, NULL};

static json_t *s_request_write(const json_t *ir, const char *model, pc_ctx_t *ctx, char *error,
                               size_t size)
{
    json_t *body = json_pack("{s:s, s:[]}", "model", model, "messages");
    if (pc_fields_run(s_write_fields, ir, body, ctx, error, size)) {
        json_decref(body);
        return NULL;
    }
    return body;
}

//  ---------------------------------------------------------------------------
//  Answers

static json_t *s_response_read(const json_t *response, proto_usage_t *usage, char *error,
                               size_t size)
{
    (void)usage;
    json_t *choice = json_array_get(json_object_get(response, "choices"), 0);
    json_t *message = json_object_get(choice, "message");
    if (!json_is_object(message))
        return pc_fail(error, size, "the upstream answer has no choices[0].message");
    json_t *ir = json_pack("{s:[]}", "content");
    json_t *content = json_object_get(ir, "content");
    json_t *value;
    if ((value = json_object_get(response, "id")) && json_is_string(value))
        json_object_set(ir, "id", value);
    const char *reasoning = json_string_value(json_object_get(message, "reasoning_content"));
    if (reasoning && *reasoning)
        json_array_append_new(content,
                              json_pack("{s:s, s:s}", "type", "thinking", "text", reasoning));
    pc_add_text(content, json_string_value(json_object_get(message, "content")));
    const char *refusal = json_string_value(json_object_get(message, "refusal"));
    pc_add_text(content, refusal);
    size_t index;
    json_t *call;
    json_array_foreach(json_object_get(message, "tool_calls"), index, call)
    {
        json_t *function = json_object_get(call, "function");
        const char *name = json_string_value(json_object_get(function, "name"));
        const char *arguments = json_string_value(json_object_get(function, "arguments"));
        const char *id = json_string_value(json_object_get(call, "id"));
        if (!name) {
            json_decref(ir);
            return pc_fail(error, size, "the upstream answer has a tool call without a name");
        }
        char made[64];
        if (!id) {
            pc_make_id(made, sizeof made, "call_", NULL, (int)index);
            id = made;
        }
        json_array_append_new(content,
                              json_pack("{s:s, s:s, s:s, s:s}", "type", "tool_call", "id", id,
                                        "name", name, "arguments", arguments ? arguments : "{}"));
    }
    pc_stop_t stop = s_stop_read(json_string_value(json_object_get(choice, "finish_reason")));
    if (refusal && *refusal)
        stop = PC_STOP_REFUSAL;
    json_object_set_new(ir, "stop", json_integer(stop));
    json_t *details =
        json_object_get(json_object_get(response, "usage"), "completion_tokens_details");
    if (json_is_integer(json_object_get(details, "reasoning_tokens")))
        json_object_set(ir, "reasoning_tokens", json_object_get(details, "reasoning_tokens"));
    return ir;
}

static json_t *s_response_write(const json_t *ir, const char *model, const proto_usage_t *usage)
{
    char id[160];
    pc_make_id(id, sizeof id, "chatcmpl-", json_string_value(json_object_get(ir, "id")), -1);
    json_t *message = json_pack("{s:s, s:n}", "role", "assistant", "refusal");
    json_t *calls = json_array();
    char *text = strdup("");
    char *thinking = strdup("");
    size_t index;
    json_t *part;
    json_array_foreach(json_object_get(ir, "content"), index, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        const char *piece = json_string_value(json_object_get(part, "text"));
        char **target = strcmp(type, "text") == 0       ? &text
                        : strcmp(type, "thinking") == 0 ? &thinking
                                                        : NULL;
        if (target && piece) {
            char *joined = NULL;
            if (asprintf(&joined, "%s%s", *target, piece) >= 0) {
                free(*target);
                *target = joined;
            }
        } else if (strcmp(type, "tool_call") == 0)
            json_array_append_new(calls,
                                  json_pack("{s:O, s:s, s:{s:O, s:O}}", "id",
                                            json_object_get(part, "id"), "type", "function",
                                            "function", "name", json_object_get(part, "name"),
                                            "arguments", json_object_get(part, "arguments")));
    }
    json_object_set_new(message, "content", *text ? json_string(text) : json_null());
    if (*thinking)
        json_object_set_new(message, "reasoning_content", json_string(thinking));
    if (json_array_size(calls))
        json_object_set(message, "tool_calls", calls);
    free(text);
    free(thinking);
    json_decref(calls);
    pc_stop_t stop = (pc_stop_t)json_integer_value(json_object_get(ir, "stop"));
    uint64_t reasoning = (uint64_t)json_integer_value(json_object_get(ir, "reasoning_tokens"));
    return json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s}], s:o}", "id", id, "object",
                     "chat.completion", "created", (json_int_t)time(NULL), "model", model,
                     "choices", "index", 0, "message", message, "logprobs", "finish_reason",
                     s_stop_write(stop), "usage", pc_usage_openai(usage, reasoning));
}

//  ---------------------------------------------------------------------------
//  Streams

static int s_stream_read(proto_convert_stream_t *self, const char *name, json_t *data)
{
    (void)name;
    if (!data)
        return pc_end(self); //  data: [DONE]
    json_t *error = json_object_get(data, "error");
    if (error) {
        const char *message = json_string_value(json_object_get(error, "message"));
        return pc_stream_fail(self, "upstream error: %s", message ? message : "unknown");
    }
    if (pc_start(self, json_string_value(json_object_get(data, "id"))))
        return -1;
    json_t *details = json_object_get(json_object_get(data, "usage"), "completion_tokens_details");
    if (json_is_integer(json_object_get(details, "reasoning_tokens")))
        self->reasoning =
            (uint64_t)json_integer_value(json_object_get(details, "reasoning_tokens"));
    json_t *choice = json_array_get(json_object_get(data, "choices"), 0);
    if (!choice)
        return 0; //  the usage chunk
    json_t *delta = json_object_get(choice, "delta");
    json_t *value = json_object_get(delta, "reasoning_content");
    if (!json_is_string(value))
        value = json_object_get(delta, "reasoning");
    if (json_is_string(value) &&
        pc_delta(self, PC_BLOCK_THINKING, json_string_value(value), json_string_length(value)))
        return -1;
    value = json_object_get(delta, "content");
    if (json_is_string(value) &&
        pc_delta(self, PC_BLOCK_TEXT, json_string_value(value), json_string_length(value)))
        return -1;
    size_t index;
    json_t *call;
    json_array_foreach(json_object_get(delta, "tool_calls"), index, call)
    {
        json_t *position = json_object_get(call, "index");
        json_t *function = json_object_get(call, "function");
        const char *id = json_string_value(json_object_get(call, "id"));
        const char *tool_name = json_string_value(json_object_get(function, "name"));
        json_int_t at = json_is_integer(position) ? json_integer_value(position) : -1;
        json_t *current = json_object_get(self->up, "tool");
        if (id || tool_name) {
            //  A new call; OpenAI sends calls one after the other, each
            //  opening with its id and name.
            if (pc_tool(self, id, tool_name))
                return -1;
            json_object_set_new(self->up, "tool", json_integer(at));
        } else if (!current || json_integer_value(current) != at || self->open != PC_BLOCK_TOOL)
            return pc_stream_fail(
                self, "the upstream sent arguments for tool call %lld out of order", (long long)at);
        json_t *arguments = json_object_get(function, "arguments");
        if (json_is_string(arguments) &&
            pc_tool_args(self, json_string_value(arguments), json_string_length(arguments)))
            return -1;
    }
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    if (finish) {
        //  Nothing follows the finish chunk but usage: the block can close now.
        pc_finish(self, s_stop_read(finish), NULL);
        return pc_close(self);
    }
    return 0;
}

static json_t *s_chunk(proto_convert_stream_t *self, json_t *delta, const char *finish)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:o}]}", "id",
                     json_string_value(json_object_get(self->cl, "id")), "object",
                     "chat.completion.chunk", "created", (json_int_t)self->created, "model",
                     self->model, "choices", "index", 0, "delta", delta, "logprobs",
                     "finish_reason", finish ? json_string(finish) : json_null());
}

static int s_stream_write(proto_convert_stream_t *self, const pc_event_t *event)
{
    switch (event->kind) {
    case PC_EV_START: {
        char id[160];
        pc_make_id(id, sizeof id, "chatcmpl-", self->id, -1);
        json_object_set_new(self->cl, "id", json_string(id));
        return pc_sse(
            self->out, NULL,
            s_chunk(self, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL));
    }
    case PC_EV_BLOCK_START:
        if (event->block != PC_BLOCK_TOOL)
            return 0;
        return pc_sse(
            self->out, NULL,
            s_chunk(self,
                    json_pack("{s:[{s:i, s:s, s:s, s:{s:s, s:s}}]}", "tool_calls", "index",
                              event->tool_index, "id", event->id, "type", "function", "function",
                              "name", event->name, "arguments", ""),
                    NULL));
    case PC_EV_DELTA:
        if (event->block == PC_BLOCK_TOOL)
            return pc_sse(
                self->out, NULL,
                s_chunk(self,
                        json_pack("{s:[{s:i, s:{s:s%}}]}", "tool_calls", "index", event->tool_index,
                                  "function", "arguments", event->text, event->size),
                        NULL));
        return pc_sse(
            self->out, NULL,
            s_chunk(self,
                    json_pack("{s:s%}",
                              event->block == PC_BLOCK_THINKING ? "reasoning_content" : "content",
                              event->text, event->size),
                    NULL));
    case PC_EV_BLOCK_STOP:
        return 0;
    case PC_EV_END:
        if (pc_sse(self->out, NULL, s_chunk(self, json_object(), s_stop_write(self->stop))))
            return -1;
        if (self->client_usage) {
            json_t *chunk = s_chunk(self, json_object(), NULL);
            json_object_set_new(chunk, "choices", json_array());
            json_object_set_new(chunk, "usage", pc_usage_openai(&self->usage, self->reasoning));
            if (pc_sse(self->out, NULL, chunk))
                return -1;
        }
        pc_append(self->out, "data: [DONE]\n\n");
        return 0;
    }
    return 0;
}

static const char *s_error_message(const json_t *body)
{
    json_t *error = json_object_get(body, "error");
    if (json_is_string(error))
        return json_string_value(error);
    const char *message = json_string_value(json_object_get(error, "message"));
    return message ? message : json_string_value(json_object_get(body, "message"));
}

//  Neutral names -> an OpenAI Chat client's names for them.
static const char *const s_names[][2] = {
    {"thinking", "messages[].reasoning_content"},
    {"reasoning", "reasoning_effort"},
    {NULL, NULL},
};

const pc_codec_t pc_openai_codec = {
    .protocol = PROTO_PROTOCOL_OPENAI,
    .name = S_NAME,
    .names = s_names,
    .request_read = s_request_read,
    .request_write = s_request_write,
    .response_read = s_response_read,
    .response_write = s_response_write,
    .stream_read = s_stream_read,
    .stream_write = s_stream_write,
    .error_message = s_error_message,
};
