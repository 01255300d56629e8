/*  proto_convert_responses: OpenAI Responses to and from the neutral form.

    Each neutral block is one output item (message, reasoning or
    function_call), so output_index is the block index. Reasoning text
    travels as reasoning summaries, the only reasoning text the Responses
    API shows. Requests to a Responses upstream are sent with store false:
    the gateway is stateless, and previous_response_id is refused.
*/
#include "proto_convert_ir.h"

#include <string.h>
#include <time.h>

#define S_NAME "OpenAI Responses"

//  ---------------------------------------------------------------------------
//  Request: client -> neutral

//  Content of a message item: a string or input/output parts.
static json_t *s_content_read(const json_t *content, char *error, size_t size)
{
    json_t *parts = json_array();
    if (json_is_string(content)) {
        pc_add_text(parts, json_string_value(content));
        return parts;
    }
    size_t index;
    json_t *part;
    json_array_foreach(content, index, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *media = NULL;
        if (!type)
            type = "?";
        if (strcmp(type, "input_text") == 0 || strcmp(type, "output_text") == 0 ||
            strcmp(type, "text") == 0)
            pc_add_text(parts, json_string_value(json_object_get(part, "text")));
        else if (strcmp(type, "refusal") == 0)
            pc_add_text(parts, json_string_value(json_object_get(part, "refusal")));
        else if (strcmp(type, "input_image") == 0) {
            if (!(media = pc_media_from_url(json_string_value(json_object_get(part, "image_url")))))
                goto bad;
        } else if (strcmp(type, "input_file") == 0) {
            if (!(media = pc_media_from_url(json_string_value(json_object_get(part, "file_data")))))
                goto bad;
        } else
            goto bad;
        if (media)
            json_array_append_new(parts, media);
        continue;
    bad:
        json_decref(parts);
        return pc_fail(error, size,
                       "input part '%s' cannot be converted (images and files need a "
                       "URL or inline data)",
                       type);
    }
    return parts;
}

static const char *const s_request_keys[] = {"model",
                                             "input",
                                             "instructions",
                                             "tools",
                                             "tool_choice",
                                             "parallel_tool_calls",
                                             "max_output_tokens",
                                             "temperature",
                                             "top_p",
                                             "text",
                                             "reasoning",
                                             "stream",
                                             "user",
                                             NULL};

//  Fields that point at state kept by OpenAI (an earlier response, a
//  conversation, a stored prompt) or ask for what other providers do not
//  give (background runs, log probabilities): without them the answer
//  would be another one.
static int s_refuse(const json_t *request, char *error, size_t size)
{
    const char *stateful[] = {"previous_response_id", "conversation", "prompt", NULL};
    for (const char **key = stateful; *key; key++) {
        json_t *value = json_object_get(request, *key);
        if (value && !json_is_null(value)) {
            pc_fail(error, size,
                    "%s field '%s' refers to state kept at OpenAI and cannot be converted (the "
                    "gateway is stateless: send the whole conversation)",
                    S_NAME, *key);
            return -1;
        }
    }
    if (json_is_true(json_object_get(request, "background")) ||
        json_integer_value(json_object_get(request, "top_logprobs")) > 0) {
        pc_fail(error, size, "%s field '%s' cannot be converted to another protocol", S_NAME,
                json_is_true(json_object_get(request, "background")) ? "background"
                                                                     : "top_logprobs");
        return -1;
    }
    return 0;
}

//  Function tools become neutral tools; built-in tools (web search, file
//  search, code interpreter, ...) and namespaces are dropped unless
//  tool_choice forces one, which is refused: the upstream cannot run it.
static int s_tools_read(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error, size_t size)
{
    json_t *tools = json_object_get(request, "tools");
    json_t *choice = json_object_get(request, "tool_choice");
    const char *forced = json_string_value(json_object_get(choice, "type"));
    if (!tools)
        return 0;
    json_t *list = json_array();
    json_object_set_new(ir, "tools", list);
    size_t index;
    json_t *item;
    json_array_foreach(tools, index, item)
    {
        const char *type = json_string_value(json_object_get(item, "type"));
        const char *name = json_string_value(json_object_get(item, "name"));
        if (!type || strcmp(type, "function") || !name) {
            if (forced && type && strcmp(forced, type) == 0) {
                pc_fail(error, size,
                        "tool type '%s' is run by OpenAI, and tool_choice requires it: it cannot "
                        "be converted",
                        type);
                return -1;
            }
            pc_drop(ctx, "tools[].", type ? type : "?");
            continue;
        }
        if (json_is_true(json_object_get(item, "strict")))
            pc_drop(ctx, "", "tools[].strict");
        json_t *tool = json_pack("{s:s}", "name", name);
        if (json_is_string(json_object_get(item, "description")))
            json_object_set(tool, "description", json_object_get(item, "description"));
        if (json_is_object(json_object_get(item, "parameters")))
            json_object_set(tool, "parameters", json_object_get(item, "parameters"));
        json_array_append_new(list, tool);
    }
    return 0;
}

//  Client fields -> neutral: one handler per field, run in the order
//  of s_read_fields (a refusal names the first field that cannot be converted).

static int s_read_instructions(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error,
                               size_t size)
{
    (void)ctx, (void)error, (void)size;
    const char *instructions = json_string_value(json_object_get(request, "instructions"));
    if (instructions && *instructions)
        json_array_append_new(json_object_get(ir, "system"), json_string(instructions));
    return 0;
}

//  An input item's handler, by its type. names maps call ids to function
//  names (Gemini's function responses name their function).
typedef int(s_item_fn)(const json_t *item, json_t *ir, json_t *names, pc_ctx_t *ctx, char *error,
                       size_t size);

//  A message: system and developer text joins the system prompt, user and
//  assistant messages join the conversation.
static int s_read_message(const json_t *item, json_t *ir, json_t *names, pc_ctx_t *ctx, char *error,
                          size_t size)
{
    (void)names, (void)ctx;
    const char *role = json_string_value(json_object_get(item, "role"));
    json_t *parts = s_content_read(json_object_get(item, "content"), error, size);
    if (!parts)
        return -1;
    if (role && (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0)) {
        json_t *part;
        size_t index;
        json_array_foreach(parts, index, part)
        {
            if (!json_object_get(part, "text")) {
                json_decref(parts);
                pc_fail(error, size, "system messages must be text");
                return -1;
            }
            json_array_append(json_object_get(ir, "system"), json_object_get(part, "text"));
        }
        json_decref(parts);
    } else if (role && (strcmp(role, "user") == 0 || strcmp(role, "assistant") == 0))
        pc_push_message(json_object_get(ir, "messages"), role, parts);
    else {
        json_decref(parts);
        pc_fail(error, size, "message role '%s' cannot be converted", role ? role : "?");
        return -1;
    }
    return 0;
}

static int s_read_function_call(const json_t *item, json_t *ir, json_t *names, pc_ctx_t *ctx,
                                char *error, size_t size)
{
    (void)ctx;
    const char *id = json_string_value(json_object_get(item, "call_id"));
    const char *name = json_string_value(json_object_get(item, "name"));
    const char *arguments = json_string_value(json_object_get(item, "arguments"));
    if (!id || !name) {
        pc_fail(error, size, "a function_call item needs call_id and name");
        return -1;
    }
    json_object_set_new(names, id, json_string(name));
    pc_push_message(json_object_get(ir, "messages"), "assistant",
                    json_pack("[{s:s, s:s, s:s, s:s}]", "type", "tool_call", "id", id, "name", name,
                              "arguments", arguments ? arguments : "{}"));
    return 0;
}

static int s_read_function_output(const json_t *item, json_t *ir, json_t *names, pc_ctx_t *ctx,
                                  char *error, size_t size)
{
    (void)ctx;
    const char *id = json_string_value(json_object_get(item, "call_id"));
    json_t *output = json_object_get(item, "output");
    json_t *content = id ? s_content_read(output, error, size) : NULL;
    if (!content) {
        if (!id)
            pc_fail(error, size, "a function_call_output item needs call_id");
        return -1;
    }
    json_t *result = json_pack("{s:s, s:s, s:o, s:b}", "type", "tool_result", "id", id, "content",
                               content, "is_error", 0);
    if (json_object_get(names, id))
        json_object_set(result, "name", json_object_get(names, id));
    pc_push_message(json_object_get(ir, "messages"), "user", json_pack("[o]", result));
    return 0;
}

//  The trace of a built-in tool's earlier run (web search, file search, code
//  interpreter): the answer that used it is kept, the trace has no form
//  elsewhere.
static int s_read_builtin_call(const json_t *item, json_t *ir, json_t *names, pc_ctx_t *ctx,
                               char *error, size_t size)
{
    (void)ir, (void)names, (void)error, (void)size;
    pc_drop(ctx, "input[].", json_string_value(json_object_get(item, "type")));
    return 0;
}

//  Summaries of earlier reasoning; the encrypted content is OpenAI's alone.
static int s_read_reasoning_item(const json_t *item, json_t *ir, json_t *names, pc_ctx_t *ctx,
                                 char *error, size_t size)
{
    (void)names, (void)error, (void)size;
    json_t *parts = json_array();
    size_t index;
    json_t *summary;
    json_array_foreach(json_object_get(item, "summary"), index, summary)
    {
        const char *text = json_string_value(json_object_get(summary, "text"));
        if (text && *text)
            json_array_append_new(parts, json_pack("{s:s, s:s}", "type", "thinking", "text", text));
    }
    if (!json_array_size(parts))
        pc_drop(ctx, "input[].", "reasoning"); //  encrypted content only
    pc_push_message(json_object_get(ir, "messages"), "assistant", parts);
    return 0;
}

static const struct {
    const char *type;
    s_item_fn *read;
} s_items[] = {{"message", s_read_message},
               {"function_call", s_read_function_call},
               {"function_call_output", s_read_function_output},
               {"reasoning", s_read_reasoning_item}};

//  The handler for an item of type (a missing type is a message when the item has a role).
static s_item_fn *s_item_reader(const char *type)
{
    for (size_t at = 0; at < sizeof(s_items) / sizeof(s_items[0]); at++)
        if (strcmp(type, s_items[at].type) == 0)
            return s_items[at].read;
    if (strstr(type, "_call") && strcmp(type, "item_reference"))
        return s_read_builtin_call;
    return NULL;
}

static int s_read_input(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error, size_t size)
{
    json_t *input = json_object_get(request, "input");
    if (json_is_string(input)) {
        pc_push_message(json_object_get(ir, "messages"), "user",
                        json_pack("[{s:s, s:O}]", "type", "text", "text", input));
        return 0;
    }
    if (!json_is_array(input) || !json_array_size(input)) {
        pc_fail(error, size, "input must be a string or a non-empty array");
        return -1;
    }
    json_t *names = json_object();
    int rc = 0;
    size_t index;
    json_t *item;
    json_array_foreach(input, index, item)
    {
        const char *type = json_string_value(json_object_get(item, "type"));
        if (!type)
            type = json_string_value(json_object_get(item, "role")) ? "message" : "?";
        s_item_fn *read = s_item_reader(type);
        if (!read) {
            pc_fail(error, size, "input item type '%s' cannot be converted", type);
            rc = -1;
        } else
            rc = read(item, ir, names, ctx, error, size);
        if (rc)
            break;
    }
    json_decref(names);
    return rc;
}

static int s_read_tool_choice(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error,
                              size_t size)
{
    (void)ctx;
    json_t *choice = json_object_get(request, "tool_choice");
    if (json_is_string(choice))
        json_object_set(ir, "tool_choice", choice);
    else if (choice) {
        const char *name = json_string_value(json_object_get(choice, "name"));
        if (!name) {
            pc_fail(error, size, "tool_choice must name a function");
            return -1;
        }
        json_object_set_new(ir, "tool_choice", json_pack("{s:s}", "name", name));
    }
    if (json_is_boolean(json_object_get(request, "parallel_tool_calls")))
        json_object_set(ir, "parallel_tool_calls", json_object_get(request, "parallel_tool_calls"));
    return 0;
}

//  max_output_tokens, temperature and top_p.
static int s_read_sampling(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error,
                           size_t size)
{
    (void)ctx, (void)error, (void)size;
    if (json_is_integer(json_object_get(request, "max_output_tokens")))
        json_object_set(ir, "max_tokens", json_object_get(request, "max_output_tokens"));
    const char *copied[] = {"temperature", "top_p", NULL};
    for (const char **key = copied; *key; key++)
        if (json_is_number(json_object_get(request, *key)))
            json_object_set(ir, *key, json_object_get(request, *key));
    return 0;
}

//  text.format is the answer's format; the rest of text only tunes it.
static int s_read_text(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error, size_t size)
{
    const char *text_key;
    json_t *text_value;
    json_object_foreach(json_object_get(request, "text"), text_key, text_value)
    {
        if (strcmp(text_key, "format"))
            pc_drop(ctx, "text.", text_key);
    }
    json_t *format = json_object_get(json_object_get(request, "text"), "format");
    const char *format_type = json_string_value(json_object_get(format, "type"));
    if (format_type && strcmp(format_type, "json_object") == 0)
        json_object_set_new(ir, "response_format", json_pack("{s:s}", "type", "json_object"));
    else if (format_type && strcmp(format_type, "json_schema") == 0) {
        json_t *schema = json_pack("{s:s}", "type", "json_schema");
        const char *keys[] = {"name", "schema", "strict", NULL};
        for (const char **key = keys; *key; key++)
            if (json_object_get(format, *key))
                json_object_set(schema, *key, json_object_get(format, *key));
        json_object_set_new(ir, "response_format", schema);
    } else if (format_type && strcmp(format_type, "text")) {
        pc_fail(error, size, "text format '%s' cannot be converted", format_type);
        return -1;
    }
    return 0;
}

static int s_read_reasoning(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error,
                            size_t size)
{
    (void)ctx, (void)error, (void)size;
    json_t *reasoning = json_object_get(request, "reasoning");
    const char *effort = json_string_value(json_object_get(reasoning, "effort"));
    json_t *summary = json_object_get(reasoning, "summary");
    if (!json_is_string(summary))
        summary = json_object_get(reasoning, "generate_summary");
    if (effort && strcmp(effort, "none"))
        json_object_set_new(
            ir, "reasoning",
            json_pack("{s:s, s:b}", "effort", effort, "include_thoughts", json_is_string(summary)));
    else if (json_is_string(summary))
        //  Summaries asked, the effort left to the model.
        json_object_set_new(ir, "reasoning", json_pack("{s:b}", "include_thoughts", 1));
    return 0;
}

//  The end-user id.
static int s_read_user(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error, size_t size)
{
    (void)ctx, (void)error, (void)size;
    if (json_is_string(json_object_get(request, "user")))
        json_object_set(ir, "user", json_object_get(request, "user"));
    return 0;
}

static pc_field_fn *const s_read_fields[] = {s_read_instructions, s_read_input,    s_tools_read,
                                             s_read_tool_choice,  s_read_sampling, s_read_text,
                                             s_read_reasoning,    s_read_user,     NULL};

static json_t *s_request_read(const json_t *request, bool stream, pc_ctx_t *ctx, char *error,
                              size_t size)
{
    (void)stream;
    if (s_refuse(request, error, size))
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

//  Neutral fields -> upstream: one handler per field, run in the
//  order of s_write_fields (which is also the order dropped fields are named).

//  Stop sequences end the answer where the client wants it: without them it
//  would be another answer.
static int s_write_stop(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error, size_t size)
{
    (void)body, (void)ctx;
    if (json_object_get(ir, "stop")) {
        pc_fail(error, size, "stop sequences cannot be expressed for an %s upstream", S_NAME);
        return -1;
    }
    return 0;
}

//  Tuning numbers Responses has no field for.
static int s_write_tuning(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error, size_t size)
{
    (void)body, (void)error, (void)size;
    const char *tuning[] = {"top_k", "seed", "presence_penalty", "frequency_penalty", NULL};
    for (const char **key = tuning; *key; key++)
        if (json_object_get(ir, *key))
            pc_drop_ir(ctx, *key);
    return 0;
}

//  The system text, joined, as instructions.
static int s_write_instructions(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error,
                                size_t size)
{
    (void)ctx, (void)error, (void)size;
    size_t index;
    json_t *item;
    char *instructions = strdup("");
    json_array_foreach(json_object_get(ir, "system"), index, item)
    {
        char *joined = NULL;
        if (asprintf(&joined, "%s%s%s", instructions, *instructions ? "\n\n" : "",
                     json_string_value(item)) >= 0) {
            free(instructions);
            instructions = joined;
        }
    }
    if (*instructions)
        json_object_set_new(body, "instructions", json_string(instructions));
    free(instructions);
    return 0;
}

//  One neutral message on its way out as input items. Items keep the
//  conversation's order: a message's text before and after a call stays
//  where it was, so content is flushed as a message item before each call.
typedef struct {
    const char *role; //  The neutral message's role
    bool assistant;   //  The assistant's message: output_text, no media
    json_t *content;  //  Parts of the message item being gathered
    json_t *input;    //  The body's input items
    pc_ctx_t *ctx;    //  Where dropped fields are named
} s_item_t;

//  A neutral part's handler, by its type.
typedef int(s_part_fn)(s_item_t *self, const json_t *part, char *error, size_t size);

//  Ends the message item gathered so far, if it has content.
static void s_flush(s_item_t *self)
{
    if (json_array_size(self->content))
        json_array_append_new(self->input,
                              json_pack("{s:s, s:s, s:o}", "type", "message", "role", self->role,
                                        "content", json_copy(self->content)));
    json_array_clear(self->content);
}

static int s_write_text(s_item_t *self, const json_t *part, char *error, size_t size)
{
    (void)error, (void)size;
    json_array_append_new(self->content, json_pack("{s:s, s:O}", "type",
                                                   self->assistant ? "output_text" : "input_text",
                                                   "text", json_object_get(part, "text")));
    return 0;
}

static int s_write_media(s_item_t *self, const json_t *part, char *error, size_t size)
{
    const char *mime = json_string_value(json_object_get(part, "mime"));
    char *url = pc_media_to_url(part);
    if (self->assistant || !url) {
        free(url);
        pc_fail(error, size, "assistant media cannot be expressed for an %s upstream", S_NAME);
        return -1;
    }
    if (mime && strncmp(mime, "image/", 6))
        json_array_append_new(self->content, json_pack("{s:s, s:s, s:s}", "type", "input_file",
                                                       "file_data", url, "filename", "document"));
    else
        json_array_append_new(self->content,
                              json_pack("{s:s, s:s}", "type", "input_image", "image_url", url));
    free(url);
    return 0;
}

static int s_write_tool_call(s_item_t *self, const json_t *part, char *error, size_t size)
{
    (void)error, (void)size;
    s_flush(self);
    json_array_append_new(self->input, json_pack("{s:s, s:O, s:O, s:O}", "type", "function_call",
                                                 "call_id", json_object_get(part, "id"), "name",
                                                 json_object_get(part, "name"), "arguments",
                                                 json_object_get(part, "arguments")));
    return 0;
}

//  A tool result's text parts, joined, as a function_call_output item.
static int s_write_tool_result(s_item_t *self, const json_t *part, char *error, size_t size)
{
    char *text = strdup("");
    size_t index;
    json_t *inner;
    json_array_foreach(json_object_get(part, "content"), index, inner)
    {
        const char *piece = json_string_value(json_object_get(inner, "text"));
        char *joined = NULL;
        if (!piece || asprintf(&joined, "%s%s%s", text, *text ? "\n" : "", piece) < 0) {
            free(text);
            pc_fail(error, size, "tool results with images cannot be expressed for an %s upstream",
                    S_NAME);
            return -1;
        }
        free(text);
        text = joined;
    }
    s_flush(self);
    json_array_append_new(self->input,
                          json_pack("{s:s, s:O, s:s}", "type", "function_call_output", "call_id",
                                    json_object_get(part, "id"), "output", text));
    free(text);
    return 0;
}

//  Earlier reasoning is not sent: Responses takes its own encrypted items
//  only (docs/conversion.md).
static int s_write_thinking(s_item_t *self, const json_t *part, char *error, size_t size)
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

static int s_write_input(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error, size_t size)
{
    size_t index;
    json_t *message;
    json_array_foreach(json_object_get(ir, "messages"), index, message)
    {
        const char *role = json_string_value(json_object_get(message, "role"));
        s_item_t self = {.role = role,
                         .assistant = strcmp(role, "assistant") == 0,
                         .content = json_array(),
                         .input = json_object_get(body, "input"),
                         .ctx = ctx};
        int rc = 0;
        size_t part_index;
        json_t *part;
        json_array_foreach(json_object_get(message, "content"), part_index, part)
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
        if (rc == 0)
            s_flush(&self);
        json_decref(self.content);
        if (rc)
            return -1;
    }
    return 0;
}

//  Tools, and with them the choice among them and parallel_tool_calls.
static int s_write_tools(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error, size_t size)
{
    (void)ctx, (void)error, (void)size;
    json_t *tools = json_object_get(ir, "tools");
    if (!json_array_size(tools))
        return 0;
    json_t *list = json_array();
    size_t index;
    json_t *item;
    json_array_foreach(tools, index, item)
    {
        json_t *parameters = json_object_get(item, "parameters");
        //  strict false: Responses defaults function tools to strict,
        //  which refuses schemas written for other providers.
        json_t *tool =
            json_pack("{s:s, s:O, s:o, s:b}", "type", "function", "name",
                      json_object_get(item, "name"), "parameters",
                      parameters ? json_incref(parameters)
                                 : json_pack("{s:s, s:{}}", "type", "object", "properties"),
                      "strict", 0);
        if (json_object_get(item, "description"))
            json_object_set(tool, "description", json_object_get(item, "description"));
        json_array_append_new(list, tool);
    }
    json_object_set_new(body, "tools", list);
    json_t *choice = json_object_get(ir, "tool_choice");
    if (json_is_string(choice))
        json_object_set(body, "tool_choice", choice);
    else if (choice)
        json_object_set_new(
            body, "tool_choice",
            json_pack("{s:s, s:O}", "type", "function", "name", json_object_get(choice, "name")));
    if (json_object_get(ir, "parallel_tool_calls"))
        json_object_set(body, "parallel_tool_calls", json_object_get(ir, "parallel_tool_calls"));
    return 0;
}

//  max_output_tokens, temperature, top_p and the end-user id.
static int s_write_sampling(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error, size_t size)
{
    (void)ctx, (void)error, (void)size;
    if (json_object_get(ir, "max_tokens"))
        json_object_set(body, "max_output_tokens", json_object_get(ir, "max_tokens"));
    const char *copied[] = {"temperature", "top_p", "user", NULL};
    for (const char **key = copied; *key; key++)
        if (json_object_get(ir, *key))
            json_object_set(body, *key, json_object_get(ir, *key));
    return 0;
}

//  The answer's format as text.format.
static int s_write_text_format(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error,
                               size_t size)
{
    (void)ctx, (void)error, (void)size;
    json_t *format = json_object_get(ir, "response_format");
    const char *format_type = json_string_value(json_object_get(format, "type"));
    if (format_type && strcmp(format_type, "json_object") == 0)
        json_object_set_new(body, "text", json_pack("{s:{s:s}}", "format", "type", "json_object"));
    else if (format_type) {
        json_t *schema = json_pack("{s:s, s:s}", "type", "json_schema", "name",
                                   json_is_string(json_object_get(format, "name"))
                                       ? json_string_value(json_object_get(format, "name"))
                                       : "response");
        if (json_object_get(format, "schema"))
            json_object_set(schema, "schema", json_object_get(format, "schema"));
        if (json_object_get(format, "strict"))
            json_object_set(schema, "strict", json_object_get(format, "strict"));
        json_object_set_new(body, "text", json_pack("{s:o}", "format", schema));
    }
    return 0;
}

static int s_write_reasoning(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error,
                             size_t size)
{
    (void)ctx, (void)error, (void)size;
    json_t *reasoning = json_object_get(ir, "reasoning");
    if (!reasoning)
        return 0;
    const char *effort = json_string_value(json_object_get(reasoning, "effort"));
    if (!effort)
        effort = pc_budget_to_effort(json_integer_value(json_object_get(reasoning, "budget")));
    json_t *config = json_object();
    if (effort)
        json_object_set_new(config, "effort", json_string(effort));
    if (json_is_true(json_object_get(reasoning, "include_thoughts")))
        json_object_set_new(config, "summary", json_string("auto"));
    if (json_object_size(config))
        json_object_set_new(body, "reasoning", config);
    else
        json_decref(config);
    return 0;
}

static int s_write_stream(const json_t *ir, json_t *body, pc_ctx_t *ctx, char *error, size_t size)
{
    (void)ctx, (void)error, (void)size;
    if (json_is_true(json_object_get(ir, "stream")))
        json_object_set_new(body, "stream", json_true());
    return 0;
}

static pc_field_fn *const s_write_fields[] = {
    s_write_stop,     s_write_tuning,      s_write_instructions, s_write_input,  s_write_tools,
    s_write_sampling, s_write_text_format, s_write_reasoning,    s_write_stream, NULL};

static json_t *s_request_write(const json_t *ir, const char *model, pc_ctx_t *ctx, char *error,
                               size_t size)
{
    //  store false: the gateway keeps no state at the provider.
    json_t *body = json_pack("{s:s, s:[], s:b}", "model", model, "input", "store", 0);
    if (pc_fields_run(s_write_fields, ir, body, ctx, error, size)) {
        json_decref(body);
        return NULL;
    }
    return body;
}

//  ---------------------------------------------------------------------------
//  Answers

static pc_stop_t s_stop_read(const json_t *response, bool tools)
{
    const char *status = json_string_value(json_object_get(response, "status"));
    const char *reason = json_string_value(
        json_object_get(json_object_get(response, "incomplete_details"), "reason"));
    if (status && strcmp(status, "incomplete") == 0)
        return reason && strcmp(reason, "content_filter") == 0 ? PC_STOP_FILTER : PC_STOP_LENGTH;
    return tools ? PC_STOP_TOOL : PC_STOP_END;
}

//  One output item -> neutral parts appended to content; sets *tools.
static int s_item_read(const json_t *item, json_t *content, bool *tools, bool *refusal)
{
    const char *type = json_string_value(json_object_get(item, "type"));
    size_t index;
    json_t *part;
    if (!type)
        return -1;
    if (strcmp(type, "message") == 0) {
        json_array_foreach(json_object_get(item, "content"), index, part)
        {
            const char *part_type = json_string_value(json_object_get(part, "type"));
            if (part_type && strcmp(part_type, "output_text") == 0)
                pc_add_text(content, json_string_value(json_object_get(part, "text")));
            else if (part_type && strcmp(part_type, "refusal") == 0) {
                pc_add_text(content, json_string_value(json_object_get(part, "refusal")));
                *refusal = true;
            }
        }
    } else if (strcmp(type, "reasoning") == 0) {
        json_array_foreach(json_object_get(item, "summary"), index, part)
        {
            const char *text = json_string_value(json_object_get(part, "text"));
            if (text && *text)
                json_array_append_new(content,
                                      json_pack("{s:s, s:s}", "type", "thinking", "text", text));
        }
    } else if (strcmp(type, "function_call") == 0) {
        const char *id = json_string_value(json_object_get(item, "call_id"));
        const char *name = json_string_value(json_object_get(item, "name"));
        const char *arguments = json_string_value(json_object_get(item, "arguments"));
        if (!id || !name)
            return -1;
        json_array_append_new(content,
                              json_pack("{s:s, s:s, s:s, s:s}", "type", "tool_call", "id", id,
                                        "name", name, "arguments", arguments ? arguments : "{}"));
        *tools = true;
    }
    return 0;
}

static json_t *s_response_read(const json_t *response, proto_usage_t *usage, char *error,
                               size_t size)
{
    (void)usage;
    json_t *output = json_object_get(response, "output");
    const char *status = json_string_value(json_object_get(response, "status"));
    if (!json_is_array(output))
        return pc_fail(error, size, "the upstream answer has no output array");
    if (status && strcmp(status, "failed") == 0)
        return pc_fail(error, size, "the upstream response failed");
    json_t *ir = json_pack("{s:[]}", "content");
    if (json_is_string(json_object_get(response, "id")))
        json_object_set(ir, "id", json_object_get(response, "id"));
    bool tools = false, refusal = false;
    size_t index;
    json_t *item;
    json_array_foreach(output, index, item) if (s_item_read(item, json_object_get(ir, "content"),
                                                            &tools, &refusal))
    {
        json_decref(ir);
        return pc_fail(error, size, "the upstream answer has a malformed output item");
    }
    pc_stop_t stop = s_stop_read(response, tools);
    json_object_set_new(ir, "stop", json_integer(refusal ? PC_STOP_REFUSAL : stop));
    json_t *details = json_object_get(json_object_get(response, "usage"), "output_tokens_details");
    if (json_is_integer(json_object_get(details, "reasoning_tokens")))
        json_object_set(ir, "reasoning_tokens", json_object_get(details, "reasoning_tokens"));
    return ir;
}

//  One finished item for a neutral part; ids made from the response id.
static json_t *s_item_write(const json_t *part, const char *id, int index)
{
    const char *type = json_string_value(json_object_get(part, "type"));
    char item_id[200];
    if (strcmp(type, "text") == 0) {
        snprintf(item_id, sizeof item_id, "msg_%s_%d", id, index);
        return json_pack("{s:s, s:s, s:s, s:s, s:[{s:s, s:O, s:[]}]}", "id", item_id, "type",
                         "message", "status", "completed", "role", "assistant", "content", "type",
                         "output_text", "text", json_object_get(part, "text"), "annotations");
    }
    if (strcmp(type, "thinking") == 0) {
        snprintf(item_id, sizeof item_id, "rs_%s_%d", id, index);
        return json_pack("{s:s, s:s, s:[{s:s, s:O}]}", "id", item_id, "type", "reasoning",
                         "summary", "type", "summary_text", "text", json_object_get(part, "text"));
    }
    if (strcmp(type, "tool_call") == 0) {
        snprintf(item_id, sizeof item_id, "fc_%s_%d", id, index);
        return json_pack("{s:s, s:s, s:s, s:O, s:O, s:O}", "id", item_id, "type", "function_call",
                         "status", "completed", "call_id", json_object_get(part, "id"), "name",
                         json_object_get(part, "name"), "arguments",
                         json_object_get(part, "arguments"));
    }
    return NULL;
}

//  The response object around an output list (stolen).
static json_t *s_response_object(const char *id, int64_t created, const char *model, pc_stop_t stop,
                                 bool done, json_t *output, json_t *usage)
{
    const char *status =
        !done ? "in_progress"
        : stop == PC_STOP_LENGTH || stop == PC_STOP_FILTER || stop == PC_STOP_REFUSAL ? "incomplete"
                                                                                      : "completed";
    json_t *incomplete = json_null();
    if (done && strcmp(status, "incomplete") == 0)
        incomplete = json_pack("{s:s}", "reason",
                               stop == PC_STOP_LENGTH ? "max_output_tokens" : "content_filter");
    return json_pack("{s:s, s:s, s:I, s:s, s:n, s:o, s:n, s:s, s:o, s:b, s:s, s:[], s:o}", "id", id,
                     "object", "response", "created_at", (json_int_t)created, "status", status,
                     "error", "incomplete_details", incomplete, "instructions", "model", model,
                     "output", output, "parallel_tool_calls", 1, "tool_choice", "auto", "tools",
                     "usage", usage ? usage : json_null());
}

static json_t *s_response_write(const json_t *ir, const char *model, const proto_usage_t *usage)
{
    char id[160];
    pc_make_id(id, sizeof id, "resp_", json_string_value(json_object_get(ir, "id")), -1);
    json_t *output = json_array();
    size_t index;
    json_t *part;
    json_array_foreach(json_object_get(ir, "content"), index, part)
    {
        json_t *item = s_item_write(part, id + 5, (int)index);
        if (item)
            json_array_append_new(output, item);
    }
    pc_stop_t stop = (pc_stop_t)json_integer_value(json_object_get(ir, "stop"));
    uint64_t reasoning = (uint64_t)json_integer_value(json_object_get(ir, "reasoning_tokens"));
    return s_response_object(id, (int64_t)time(NULL), model, stop, true, output,
                             pc_usage_responses(usage, reasoning));
}

//  ---------------------------------------------------------------------------
//  Streams

static int s_stream_read(proto_convert_stream_t *self, const char *name, json_t *data)
{
    if (!data)
        return pc_stream_fail(self, "the upstream sent an event that is not JSON");
    const char *type = json_string_value(json_object_get(data, "type"));
    if (!type)
        type = name;
    json_t *response = json_object_get(data, "response");
    json_t *item = json_object_get(data, "item");
    json_t *delta = json_object_get(data, "delta");
    if (strcmp(type, "response.created") == 0 || strcmp(type, "response.in_progress") == 0)
        return pc_start(self, json_string_value(json_object_get(response, "id")));
    if (strcmp(type, "response.output_item.added") == 0) {
        const char *kind = json_string_value(json_object_get(item, "type"));
        if (!kind)
            return pc_stream_fail(self, "output_item.added without an item type");
        if (strcmp(kind, "function_call") == 0) {
            json_object_set_new(self->up, "args_seen", json_false());
            return pc_tool(self, json_string_value(json_object_get(item, "call_id")),
                           json_string_value(json_object_get(item, "name")));
        }
        if (strcmp(kind, "reasoning") == 0)
            return pc_block(self, PC_BLOCK_THINKING);
        if (strcmp(kind, "message") == 0)
            return pc_block(self, PC_BLOCK_TEXT);
        return pc_close(self); //  built-in tool calls have no counterpart
    }
    if (strcmp(type, "response.output_text.delta") == 0 ||
        strcmp(type, "response.refusal.delta") == 0) {
        if (!json_is_string(delta))
            return pc_stream_fail(self, "%s without a delta", type);
        if (type[9] == 'r')
            json_object_set_new(self->up, "refusal", json_true());
        return pc_delta(self, PC_BLOCK_TEXT, json_string_value(delta), json_string_length(delta));
    }
    if (strcmp(type, "response.reasoning_summary_text.delta") == 0 ||
        strcmp(type, "response.reasoning_text.delta") == 0) {
        if (!json_is_string(delta))
            return pc_stream_fail(self, "%s without a delta", type);
        return pc_delta(self, PC_BLOCK_THINKING, json_string_value(delta),
                        json_string_length(delta));
    }
    if (strcmp(type, "response.function_call_arguments.delta") == 0) {
        if (!json_is_string(delta))
            return pc_stream_fail(self, "%s without a delta", type);
        json_object_set_new(self->up, "args_seen", json_true());
        return pc_tool_args(self, json_string_value(delta), json_string_length(delta));
    }
    if (strcmp(type, "response.output_item.done") == 0) {
        const char *kind = json_string_value(json_object_get(item, "type"));
        //  A call whose arguments came only whole, in the done item.
        if (kind && strcmp(kind, "function_call") == 0 && self->open == PC_BLOCK_TOOL &&
            !json_is_true(json_object_get(self->up, "args_seen"))) {
            json_t *arguments = json_object_get(item, "arguments");
            if (json_is_string(arguments) &&
                pc_tool_args(self, json_string_value(arguments), json_string_length(arguments)))
                return -1;
        }
        return pc_close(self);
    }
    if (strcmp(type, "response.completed") == 0 || strcmp(type, "response.incomplete") == 0) {
        json_t *details =
            json_object_get(json_object_get(response, "usage"), "output_tokens_details");
        if (json_is_integer(json_object_get(details, "reasoning_tokens")))
            self->reasoning =
                (uint64_t)json_integer_value(json_object_get(details, "reasoning_tokens"));
        pc_stop_t stop = s_stop_read(response, self->tools > 0);
        if (json_is_true(json_object_get(self->up, "refusal")))
            stop = PC_STOP_REFUSAL;
        pc_finish(self, stop, NULL);
        return pc_end(self);
    }
    if (strcmp(type, "response.failed") == 0 || strcmp(type, "error") == 0) {
        json_t *error = response ? json_object_get(response, "error") : data;
        const char *message = json_string_value(json_object_get(error, "message"));
        return pc_stream_fail(self, "upstream error: %s", message ? message : "unknown");
    }
    return 0; //  .done events repeat what the deltas said; others are not converted
}

//  Appends one event with the next sequence number.
static int s_event(proto_convert_stream_t *self, const char *type, json_t *data)
{
    json_int_t seq = json_integer_value(json_object_get(self->cl, "seq"));
    json_object_set_new(self->cl, "seq", json_integer(seq + 1));
    json_object_set_new(data, "type", json_string(type));
    json_object_set_new(data, "sequence_number", json_integer(seq));
    return pc_sse(self->out, type, data);
}

static const char *s_item_prefix(pc_block_t block)
{
    return block == PC_BLOCK_TOOL ? "fc" : block == PC_BLOCK_THINKING ? "rs" : "msg";
}

static int s_stream_write(proto_convert_stream_t *self, const pc_event_t *event)
{
    const char *id = json_string_value(json_object_get(self->cl, "id"));
    char item_id[200];
    if (event->kind != PC_EV_START && event->kind != PC_EV_END)
        snprintf(item_id, sizeof item_id, "%s_%s_%d", s_item_prefix(event->block), id + 5,
                 event->index);
    switch (event->kind) {
    case PC_EV_START: {
        char made[160];
        pc_make_id(made, sizeof made, "resp_", self->id, -1);
        json_object_set_new(self->cl, "id", json_string(made));
        json_object_set_new(self->cl, "output", json_array());
        if (s_event(self, "response.created",
                    json_pack("{s:o}", "response",
                              s_response_object(made, self->created, self->model, PC_STOP_NONE,
                                                false, json_array(), NULL))))
            return -1;
        return s_event(self, "response.in_progress",
                       json_pack("{s:o}", "response",
                                 s_response_object(made, self->created, self->model, PC_STOP_NONE,
                                                   false, json_array(), NULL)));
    }
    case PC_EV_BLOCK_START: {
        json_object_set_new(self->cl, "text", json_string(""));
        json_t *item;
        if (event->block == PC_BLOCK_TOOL) {
            json_object_set_new(self->cl, "call_id", json_string(event->id));
            json_object_set_new(self->cl, "name", json_string(event->name));
            item = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "id", item_id, "type",
                             "function_call", "status", "in_progress", "arguments", "", "call_id",
                             event->id, "name", event->name);
        } else if (event->block == PC_BLOCK_THINKING)
            item = json_pack("{s:s, s:s, s:[]}", "id", item_id, "type", "reasoning", "summary");
        else
            item = json_pack("{s:s, s:s, s:s, s:s, s:[]}", "id", item_id, "type", "message",
                             "status", "in_progress", "role", "assistant", "content");
        if (s_event(self, "response.output_item.added",
                    json_pack("{s:i, s:o}", "output_index", event->index, "item", item)))
            return -1;
        if (event->block == PC_BLOCK_TEXT)
            return s_event(self, "response.content_part.added",
                           json_pack("{s:s, s:i, s:i, s:{s:s, s:s, s:[]}}", "item_id", item_id,
                                     "output_index", event->index, "content_index", 0, "part",
                                     "type", "output_text", "text", "", "annotations"));
        if (event->block == PC_BLOCK_THINKING)
            return s_event(self, "response.reasoning_summary_part.added",
                           json_pack("{s:s, s:i, s:i, s:{s:s, s:s}}", "item_id", item_id,
                                     "output_index", event->index, "summary_index", 0, "part",
                                     "type", "summary_text", "text", ""));
        return 0;
    }
    case PC_EV_DELTA: {
        json_t *text = json_object_get(self->cl, "text");
        size_t length = json_string_length(text);
        char *joined = malloc(length + event->size + 1);
        if (!joined)
            return -1;
        memcpy(joined, json_string_value(text), length);
        memcpy(joined + length, event->text, event->size);
        json_object_set_new(self->cl, "text", json_stringn(joined, length + event->size));
        free(joined);
        if (event->block == PC_BLOCK_TOOL)
            return s_event(self, "response.function_call_arguments.delta",
                           json_pack("{s:s, s:i, s:s%}", "item_id", item_id, "output_index",
                                     event->index, "delta", event->text, event->size));
        if (event->block == PC_BLOCK_THINKING)
            return s_event(self, "response.reasoning_summary_text.delta",
                           json_pack("{s:s, s:i, s:i, s:s%}", "item_id", item_id, "output_index",
                                     event->index, "summary_index", 0, "delta", event->text,
                                     event->size));
        return s_event(self, "response.output_text.delta",
                       json_pack("{s:s, s:i, s:i, s:s%, s:[]}", "item_id", item_id, "output_index",
                                 event->index, "content_index", 0, "delta", event->text,
                                 event->size, "logprobs"));
    }
    case PC_EV_BLOCK_STOP: {
        json_t *text = json_object_get(self->cl, "text");
        json_t *part;
        if (event->block == PC_BLOCK_TOOL) {
            if (s_event(self, "response.function_call_arguments.done",
                        json_pack("{s:s, s:i, s:O}", "item_id", item_id, "output_index",
                                  event->index, "arguments", text)))
                return -1;
            part = json_pack("{s:s, s:O, s:O, s:O}", "type", "tool_call", "id",
                             json_object_get(self->cl, "call_id"), "name",
                             json_object_get(self->cl, "name"), "arguments", text);
        } else if (event->block == PC_BLOCK_THINKING) {
            if (s_event(self, "response.reasoning_summary_text.done",
                        json_pack("{s:s, s:i, s:i, s:O}", "item_id", item_id, "output_index",
                                  event->index, "summary_index", 0, "text", text)) ||
                s_event(self, "response.reasoning_summary_part.done",
                        json_pack("{s:s, s:i, s:i, s:{s:s, s:O}}", "item_id", item_id,
                                  "output_index", event->index, "summary_index", 0, "part", "type",
                                  "summary_text", "text", text)))
                return -1;
            part = json_pack("{s:s, s:O}", "type", "thinking", "text", text);
        } else {
            if (s_event(self, "response.output_text.done",
                        json_pack("{s:s, s:i, s:i, s:O, s:[]}", "item_id", item_id, "output_index",
                                  event->index, "content_index", 0, "text", text, "logprobs")) ||
                s_event(self, "response.content_part.done",
                        json_pack("{s:s, s:i, s:i, s:{s:s, s:O, s:[]}}", "item_id", item_id,
                                  "output_index", event->index, "content_index", 0, "part", "type",
                                  "output_text", "text", text, "annotations")))
                return -1;
            part = json_pack("{s:s, s:O}", "type", "text", "text", text);
        }
        json_t *item = s_item_write(part, id + 5, event->index);
        json_decref(part);
        json_array_append(json_object_get(self->cl, "output"), item);
        return s_event(self, "response.output_item.done",
                       json_pack("{s:i, s:o}", "output_index", event->index, "item", item));
    }
    case PC_EV_END: {
        json_t *body = s_response_object(id, self->created, self->model, self->stop, true,
                                         json_incref(json_object_get(self->cl, "output")),
                                         pc_usage_responses(&self->usage, self->reasoning));
        const char *status = json_string_value(json_object_get(body, "status"));
        return s_event(
            self, strcmp(status, "completed") == 0 ? "response.completed" : "response.incomplete",
            json_pack("{s:o}", "response", body));
    }
    }
    return 0;
}

static const char *s_error_message(const json_t *body)
{
    json_t *error = json_object_get(body, "error");
    if (json_is_string(error))
        return json_string_value(error);
    return json_string_value(json_object_get(error, "message"));
}

//  Neutral names -> a Responses client's names for them.
static const char *const s_names[][2] = {
    {"thinking", "input[].reasoning"},
    {"reasoning", "reasoning.effort"},
    {"include_thoughts", "reasoning.summary"},
    {NULL, NULL},
};

const pc_codec_t pc_responses_codec = {
    .protocol = PROTO_PROTOCOL_OPENAI_RESPONSES,
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
