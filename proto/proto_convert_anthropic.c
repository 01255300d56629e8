/*  proto_convert_anthropic: Anthropic Messages to and from the neutral form.
 */
#include "proto_convert_ir.h"

#include <ctype.h>
#include <string.h>

#define S_NAME "Anthropic Messages"

//  Anthropic's documented default when the client sent no max_tokens (the
//  field is required by Anthropic, optional everywhere else).
#define S_DEFAULT_MAX_TOKENS 4096

static pc_stop_t s_stop_read(const char *reason)
{
    if (!reason)
        return PC_STOP_NONE;
    if (strcmp(reason, "end_turn") == 0)
        return PC_STOP_END;
    if (strcmp(reason, "max_tokens") == 0 || strcmp(reason, "model_context_window_exceeded") == 0)
        return PC_STOP_LENGTH;
    if (strcmp(reason, "stop_sequence") == 0)
        return PC_STOP_SEQUENCE;
    if (strcmp(reason, "tool_use") == 0)
        return PC_STOP_TOOL;
    if (strcmp(reason, "pause_turn") == 0)
        return PC_STOP_PAUSE;
    if (strcmp(reason, "refusal") == 0)
        return PC_STOP_REFUSAL;
    return PC_STOP_END;
}

static const char *s_stop_write(pc_stop_t stop, const char *sequence)
{
    switch (stop) {
    case PC_STOP_LENGTH:
        return "max_tokens";
    case PC_STOP_TOOL:
        return "tool_use";
    case PC_STOP_SEQUENCE:
        return sequence ? "stop_sequence" : "end_turn";
    case PC_STOP_FILTER:
    case PC_STOP_REFUSAL:
        return "refusal";
    case PC_STOP_PAUSE:
        return "pause_turn";
    default:
        return "end_turn";
    }
}

//  Anthropic tool ids must match ^[a-zA-Z0-9_-]+$; other protocols' ids are
//  mapped the same way in tool_use and tool_result so they still pair up.
static json_t *s_tool_id(const char *id)
{
    char clean[256];
    size_t used = 0;
    for (const char *c = id ? id : ""; *c && used + 1 < sizeof clean; c++)
        clean[used++] = isalnum((unsigned char)*c) || *c == '_' || *c == '-' ? *c : '_';
    clean[used] = 0;
    return json_string(used ? clean : "toolu_empty");
}

//  ---------------------------------------------------------------------------
//  Request: client -> neutral

static json_t *s_media_read(const json_t *block)
{
    json_t *source = json_object_get(block, "source");
    const char *type = json_string_value(json_object_get(source, "type"));
    if (!type)
        return NULL;
    if (strcmp(type, "base64") == 0) {
        const char *mime = json_string_value(json_object_get(source, "media_type"));
        const char *data = json_string_value(json_object_get(source, "data"));
        if (!mime || !data)
            return NULL;
        return json_pack("{s:s, s:s, s:s}", "type", "media", "mime", mime, "data", data);
    }
    if (strcmp(type, "url") == 0) {
        const char *url = json_string_value(json_object_get(source, "url"));
        return url ? json_pack("{s:s, s:s}", "type", "media", "url", url) : NULL;
    }
    if (strcmp(type, "text") == 0) {
        const char *data = json_string_value(json_object_get(source, "data"));
        return data ? json_pack("{s:s, s:s}", "type", "text", "text", data) : NULL;
    }
    return NULL;
}

//  Blocks of one message -> neutral parts; NULL with error.
static json_t *s_blocks_read(const json_t *content, json_t *names, pc_ctx_t *ctx, char *error,
                             size_t size)
{
    json_t *parts = json_array();
    if (json_is_string(content)) {
        pc_add_text(parts, json_string_value(content));
        return parts;
    }
    if (!json_is_array(content)) {
        json_decref(parts);
        return pc_fail(error, size, "message content must be a string or an array of blocks");
    }
    size_t index;
    json_t *block;
    json_array_foreach(content, index, block)
    {
        const char *type = json_string_value(json_object_get(block, "type"));
        if (!type)
            type = "?";
        if (json_object_get(block, "cache_control"))
            pc_drop(ctx, "", "cache_control");
        if (strcmp(type, "text") == 0)
            pc_add_text(parts, json_string_value(json_object_get(block, "text")));
        else if (strcmp(type, "image") == 0 || strcmp(type, "document") == 0) {
            json_t *media = s_media_read(block);
            if (!media) {
                json_decref(parts);
                return pc_fail(error, size, "%s block source cannot be converted", type);
            }
            json_array_append_new(parts, media);
        } else if (strcmp(type, "tool_use") == 0) {
            const char *id = json_string_value(json_object_get(block, "id"));
            const char *name = json_string_value(json_object_get(block, "name"));
            if (!id || !name) {
                json_decref(parts);
                return pc_fail(error, size, "a tool_use block needs an id and a name");
            }
            char *arguments = pc_dump(json_object_get(block, "input"));
            json_object_set_new(names, id, json_string(name));
            json_array_append_new(parts, json_pack("{s:s, s:s, s:s, s:s}", "type", "tool_call",
                                                   "id", id, "name", name, "arguments",
                                                   arguments ? arguments : "{}"));
            free(arguments);
        } else if (strcmp(type, "tool_result") == 0) {
            const char *id = json_string_value(json_object_get(block, "tool_use_id"));
            if (!id) {
                json_decref(parts);
                return pc_fail(error, size, "a tool_result block needs a tool_use_id");
            }
            json_t *raw = json_object_get(block, "content");
            json_t *empty = raw ? NULL : json_string("");
            json_t *inner = s_blocks_read(raw ? raw : empty, names, ctx, error, size);
            json_decref(empty);
            if (!inner) {
                json_decref(parts);
                return NULL;
            }
            json_t *result =
                json_pack("{s:s, s:s, s:o, s:b}", "type", "tool_result", "id", id, "content", inner,
                          "is_error", json_is_true(json_object_get(block, "is_error")));
            json_t *name = json_object_get(names, id);
            if (name)
                json_object_set(result, "name", name);
            json_array_append_new(parts, result);
        } else if (strcmp(type, "thinking") == 0) {
            const char *text = json_string_value(json_object_get(block, "thinking"));
            json_t *part = json_pack("{s:s, s:s}", "type", "thinking", "text", text ? text : "");
            json_t *signature = json_object_get(block, "signature");
            if (json_is_string(signature))
                json_object_set(part, "signature", signature);
            json_array_append_new(parts, part);
        } else if (strcmp(type, "redacted_thinking") == 0)
            //  Encrypted for Anthropic only; no other provider can use it.
            pc_drop(ctx, "messages[].content[].", type);
        else if (strcmp(type, "server_tool_use") == 0 || strstr(type, "_tool_result"))
            //  The trace of a server tool's earlier run (web search, code
            //  execution): the answer that used it is kept, the trace has
            //  no form elsewhere.
            pc_drop(ctx, "messages[].content[].", type);
        else {
            json_decref(parts);
            return pc_fail(error, size, "content block type '%s' cannot be converted", type);
        }
    }
    return parts;
}

static const char *const s_request_keys[] = {"model",    "messages",       "system", "max_tokens",
                                             "metadata", "stop_sequences", "stream", "temperature",
                                             "top_p",    "top_k",          "tools",  "tool_choice",
                                             "thinking", "output_config",  NULL};

//  Tool definitions: custom tools become neutral tools; the keys beyond
//  name, description and schema (cache_control, defer_loading,
//  input_examples, strict) only tune and are dropped; a server tool (web
//  search, code execution, ...) is dropped unless tool_choice forces it,
//  which is refused: the upstream cannot run it.
static int s_tools_read(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error, size_t size)
{
    static const char *const known[] = {"type", "name", "description", "input_schema", NULL};
    json_t *tools = json_object_get(request, "tools");
    const char *forced =
        json_string_value(json_object_get(json_object_get(request, "tool_choice"), "name"));
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
        if ((type && strcmp(type, "custom")) || !name) {
            if (forced && name && strcmp(forced, name) == 0) {
                pc_fail(error, size,
                        "tool '%s' (type %s) is a server tool the upstream cannot run, and "
                        "tool_choice requires it",
                        name, type ? type : "?");
                return -1;
            }
            pc_drop(ctx, "tools[].", type ? type : "?");
            continue;
        }
        pc_drop_unknown(item, known, "tools[].", ctx);
        json_t *tool = json_pack("{s:s}", "name", name);
        if (json_is_string(json_object_get(item, "description")))
            json_object_set(tool, "description", json_object_get(item, "description"));
        if (json_is_object(json_object_get(item, "input_schema")))
            json_object_set(tool, "parameters", json_object_get(item, "input_schema"));
        json_array_append_new(list, tool);
    }
    return 0;
}

//  thinking and output_config: a thinking budget is expressed everywhere;
//  adaptive thinking and effort leave the depth to the model, which is what
//  the other providers do when asked nothing (dropped, named). A JSON
//  schema for the answer changes its meaning and is carried.
static int s_thinking_read(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error,
                           size_t size)
{
    json_t *thinking = json_object_get(request, "thinking");
    const char *thinking_type = json_string_value(json_object_get(thinking, "type"));
    if (thinking_type && strcmp(thinking_type, "enabled") == 0) {
        json_t *budget = json_object_get(thinking, "budget_tokens");
        const char *display = json_string_value(json_object_get(thinking, "display"));
        json_object_set_new(ir, "reasoning",
                            json_pack("{s:I, s:b}", "budget",
                                      json_is_integer(budget) ? json_integer_value(budget) : 1024,
                                      "include_thoughts",
                                      !(display && strcmp(display, "omitted") == 0)));
    } else if (thinking_type && strcmp(thinking_type, "adaptive") == 0)
        pc_drop(ctx, "", "thinking");
    else if (thinking && !(thinking_type && strcmp(thinking_type, "disabled") == 0)) {
        pc_fail(error, size, "thinking type '%s' cannot be converted",
                thinking_type ? thinking_type : "?");
        return -1;
    }
    json_t *output = json_object_get(request, "output_config");
    const char *key;
    json_t *value;
    json_object_foreach(output, key, value)
    {
        const char *format_type = json_string_value(json_object_get(value, "type"));
        if (strcmp(key, "format") == 0 && format_type && strcmp(format_type, "json_schema") == 0 &&
            json_is_object(json_object_get(value, "schema")))
            json_object_set_new(ir, "response_format",
                                json_pack("{s:s, s:s, s:O}", "type", "json_schema", "name",
                                          "response", "schema", json_object_get(value, "schema")));
        else if (strcmp(key, "format") == 0 && !json_is_null(value)) {
            pc_fail(error, size, "output_config.format type '%s' cannot be converted",
                    format_type ? format_type : "?");
            return -1;
        } else
            pc_drop(ctx, "output_config.", key);
    }
    return 0;
}

static json_t *s_request_read(const json_t *request, bool stream, pc_ctx_t *ctx, char *error,
                              size_t size)
{
    (void)stream;
    pc_drop_unknown(request, s_request_keys, "", ctx);
    json_t *messages = json_object_get(request, "messages");
    if (!json_is_array(messages) || !json_array_size(messages))
        return pc_fail(error, size, "messages must be a non-empty array");
    json_t *ir = json_pack("{s:[], s:[]}", "system", "messages");
    json_t *names = json_object();
    json_t *system = json_object_get(request, "system");
    size_t index;
    json_t *item;
    if (json_is_string(system) && json_string_length(system))
        json_array_append(json_object_get(ir, "system"), system);
    else if (json_is_array(system))
        json_array_foreach(system, index, item)
        {
            const char *text = json_string_value(json_object_get(item, "text"));
            if (!text) {
                pc_fail(error, size, "system blocks must be text");
                goto fail;
            }
            if (json_object_get(item, "cache_control"))
                pc_drop(ctx, "", "cache_control");
            if (*text)
                json_array_append_new(json_object_get(ir, "system"), json_string(text));
        }
    json_array_foreach(messages, index, item)
    {
        const char *role = json_string_value(json_object_get(item, "role"));
        if (!role ||
            (strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "system"))) {
            pc_fail(error, size, "message role must be user, assistant or system");
            goto fail;
        }
        json_t *parts = s_blocks_read(json_object_get(item, "content"), names, ctx, error, size);
        if (!parts)
            goto fail;
        if (strcmp(role, "system") == 0) {
            //  A system message inside the conversation (Claude Code sends its
            //  environment so) joins the system prompt, in order: Gemini has
            //  one system instruction, and the others keep theirs first.
            size_t part_index;
            json_t *part;
            json_array_foreach(parts, part_index, part)
            {
                if (!json_is_string(json_object_get(part, "text"))) {
                    json_decref(parts);
                    pc_fail(error, size, "system messages must be text");
                    goto fail;
                }
                json_array_append(json_object_get(ir, "system"), json_object_get(part, "text"));
            }
            json_decref(parts);
            continue;
        }
        pc_push_message(json_object_get(ir, "messages"), role, parts);
    }
    if (s_tools_read(request, ir, ctx, error, size))
        goto fail;
    json_t *choice = json_object_get(request, "tool_choice");
    if (choice) {
        const char *type = json_string_value(json_object_get(choice, "type"));
        const char *name = json_string_value(json_object_get(choice, "name"));
        if (type && strcmp(type, "auto") == 0)
            json_object_set_new(ir, "tool_choice", json_string("auto"));
        else if (type && strcmp(type, "any") == 0)
            json_object_set_new(ir, "tool_choice", json_string("required"));
        else if (type && strcmp(type, "none") == 0)
            json_object_set_new(ir, "tool_choice", json_string("none"));
        else if (type && strcmp(type, "tool") == 0 && name)
            json_object_set_new(ir, "tool_choice", json_pack("{s:s}", "name", name));
        else {
            pc_fail(error, size, "tool_choice type '%s' cannot be converted", type ? type : "?");
            goto fail;
        }
        if (json_is_true(json_object_get(choice, "disable_parallel_tool_use")))
            json_object_set_new(ir, "parallel_tool_calls", json_false());
    }
    const char *copied[] = {"max_tokens", "temperature", "top_p", "top_k", NULL};
    for (const char **key = copied; *key; key++)
        if (json_is_number(json_object_get(request, *key)))
            json_object_set(ir, *key, json_object_get(request, *key));
    json_t *stop = json_object_get(request, "stop_sequences");
    if (json_is_array(stop) && json_array_size(stop))
        json_object_set(ir, "stop", stop);
    if (s_thinking_read(request, ir, ctx, error, size))
        goto fail;
    const char *key;
    json_t *value;
    json_object_foreach(json_object_get(request, "metadata"), key, value)
    {
        if (strcmp(key, "user_id") == 0 && json_is_string(value))
            json_object_set(ir, "user", value);
        else
            pc_drop(ctx, "metadata.", key);
    }
    json_decref(names);
    return ir;
fail:
    json_decref(names);
    json_decref(ir);
    return NULL;
}

//  ---------------------------------------------------------------------------
//  Request: neutral -> upstream

static json_t *s_media_write(const json_t *part, char *error, size_t size)
{
    const char *mime = json_string_value(json_object_get(part, "mime"));
    const char *data = json_string_value(json_object_get(part, "data"));
    const char *url = json_string_value(json_object_get(part, "url"));
    const char *kind = "image";
    if (mime && strcmp(mime, "application/pdf") == 0)
        kind = "document";
    else if (mime && strncmp(mime, "image/", 6))
        return pc_fail(error, size, "media of type %s cannot be expressed for an %s upstream", mime,
                       S_NAME);
    if (data)
        return json_pack("{s:s, s:{s:s, s:s, s:s}}", "type", kind, "source", "type", "base64",
                         "media_type", mime, "data", data);
    return json_pack("{s:s, s:{s:s, s:s}}", "type", kind, "source", "type", "url", "url",
                     url ? url : "");
}

static json_t *s_blocks_write(const json_t *parts, pc_ctx_t *ctx, char *error, size_t size)
{
    json_t *blocks = json_array();
    size_t index;
    json_t *part;
    json_array_foreach(parts, index, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *block = NULL;
        if (strcmp(type, "text") == 0)
            block = json_pack("{s:s, s:O}", "type", "text", "text", json_object_get(part, "text"));
        else if (strcmp(type, "media") == 0) {
            if (!(block = s_media_write(part, error, size)))
                goto fail;
        } else if (strcmp(type, "tool_call") == 0) {
            const char *arguments = json_string_value(json_object_get(part, "arguments"));
            json_t *input =
                pc_parse_arguments(arguments ? arguments : "", arguments ? strlen(arguments) : 0);
            if (!input) {
                pc_fail(error, size, "tool call arguments must be a JSON object");
                goto fail;
            }
            block = json_pack("{s:s, s:o, s:O, s:o}", "type", "tool_use", "id",
                              s_tool_id(json_string_value(json_object_get(part, "id"))), "name",
                              json_object_get(part, "name"), "input", input);
        } else if (strcmp(type, "tool_result") == 0) {
            json_t *inner = s_blocks_write(json_object_get(part, "content"), ctx, error, size);
            if (!inner)
                goto fail;
            block = json_pack("{s:s, s:o, s:o}", "type", "tool_result", "tool_use_id",
                              s_tool_id(json_string_value(json_object_get(part, "id"))), "content",
                              inner);
            if (json_is_true(json_object_get(part, "is_error")))
                json_object_set_new(block, "is_error", json_true());
        } else if (strcmp(type, "thinking") == 0 && json_object_get(part, "signature"))
            //  Only Anthropic's own thinking (it has a signature) can go back.
            block = json_pack("{s:s, s:O, s:O}", "type", "thinking", "thinking",
                              json_object_get(part, "text"), "signature",
                              json_object_get(part, "signature"));
        else if (strcmp(type, "thinking") == 0)
            pc_drop_ir(ctx, "thinking");
        if (block)
            json_array_append_new(blocks, block);
    }
    return blocks;
fail:
    json_decref(blocks);
    return NULL;
}

static json_t *s_request_write(const json_t *ir, const char *model, pc_ctx_t *ctx, char *error,
                               size_t size)
{
    const char *tuning[] = {"seed", "presence_penalty", "frequency_penalty", NULL};
    for (const char **key = tuning; *key; key++)
        if (json_object_get(ir, *key))
            pc_drop_ir(ctx, *key);
    //  Anthropic's range is 0..1; a hotter setting has no equivalent.
    json_t *temperature = json_object_get(ir, "temperature");
    bool hot = temperature && json_number_value(temperature) > 1.0;
    if (hot)
        pc_drop_ir(ctx, "temperature");
    json_t *body = json_pack("{s:s, s:[]}", "model", model, "messages");
    //  A JSON answer is asked with a schema (structured outputs); plain JSON
    //  mode is the schema of any object.
    json_t *format = json_object_get(ir, "response_format");
    if (format) {
        json_t *schema = json_object_get(format, "schema");
        json_object_set_new(
            body, "output_config",
            json_pack("{s:{s:s, s:o}}", "format", "type", "json_schema", "schema",
                      schema ? json_incref(schema) : json_pack("{s:s}", "type", "object")));
    }
    json_t *max = json_object_get(ir, "max_tokens");
    json_int_t max_tokens = json_is_integer(max) ? json_integer_value(max) : S_DEFAULT_MAX_TOKENS;
    json_t *reasoning = json_object_get(ir, "reasoning");
    if (reasoning) {
        json_int_t budget = json_integer_value(json_object_get(reasoning, "budget"));
        if (budget <= 0)
            budget = pc_effort_to_budget(json_string_value(json_object_get(reasoning, "effort")));
        if (budget > 0) {
            if (budget < 1024)
                budget = 1024; //  Anthropic's minimum
            if (max_tokens <= budget) {
                if (json_is_integer(max)) {
                    json_decref(body);
                    return pc_fail(error, size,
                                   "max_tokens (%lld) must be above the thinking budget (%lld) for "
                                   "an %s upstream",
                                   (long long)max_tokens, (long long)budget, S_NAME);
                }
                max_tokens = budget + S_DEFAULT_MAX_TOKENS;
            }
            json_object_set_new(
                body, "thinking",
                json_pack("{s:s, s:I}", "type", "enabled", "budget_tokens", budget));
        } else if (json_is_true(json_object_get(reasoning, "include_thoughts")))
            //  Thoughts asked for without a depth: Anthropic needs a budget.
            pc_drop_ir(ctx, "include_thoughts");
    }
    json_object_set_new(body, "max_tokens", json_integer(max_tokens));
    size_t index;
    json_t *item;
    json_t *system = json_array();
    json_array_foreach(json_object_get(ir, "system"), index, item)
        json_array_append_new(system, json_pack("{s:s, s:O}", "type", "text", "text", item));
    if (json_array_size(system))
        json_object_set(body, "system", system);
    json_decref(system);
    json_array_foreach(json_object_get(ir, "messages"), index, item)
    {
        json_t *blocks = s_blocks_write(json_object_get(item, "content"), ctx, error, size);
        if (!blocks) {
            json_decref(body);
            return NULL;
        }
        if (json_array_size(blocks))
            json_array_append_new(
                json_object_get(body, "messages"),
                json_pack("{s:O, s:o}", "role", json_object_get(item, "role"), "content", blocks));
        else
            json_decref(blocks);
    }
    json_t *tools = json_object_get(ir, "tools");
    if (json_array_size(tools)) {
        json_t *list = json_array();
        json_array_foreach(tools, index, item)
        {
            json_t *tool = json_pack("{s:O}", "name", json_object_get(item, "name"));
            if (json_object_get(item, "description"))
                json_object_set(tool, "description", json_object_get(item, "description"));
            json_t *parameters = json_object_get(item, "parameters");
            json_object_set_new(tool, "input_schema",
                                parameters
                                    ? json_incref(parameters)
                                    : json_pack("{s:s, s:{}}", "type", "object", "properties"));
            json_array_append_new(list, tool);
        }
        json_object_set_new(body, "tools", list);
    }
    json_t *choice = json_object_get(ir, "tool_choice");
    json_t *tool_choice = NULL;
    if (json_is_string(choice)) {
        const char *word = json_string_value(choice);
        tool_choice = json_pack("{s:s}", "type",
                                strcmp(word, "required") == 0 ? "any"
                                : strcmp(word, "none") == 0   ? "none"
                                                              : "auto");
    } else if (choice)
        tool_choice =
            json_pack("{s:s, s:O}", "type", "tool", "name", json_object_get(choice, "name"));
    if (json_is_false(json_object_get(ir, "parallel_tool_calls")) && json_array_size(tools)) {
        if (!tool_choice)
            tool_choice = json_pack("{s:s}", "type", "auto");
        json_object_set_new(tool_choice, "disable_parallel_tool_use", json_true());
    }
    if (tool_choice && json_array_size(tools))
        json_object_set_new(body, "tool_choice", tool_choice);
    else
        json_decref(tool_choice);
    const char *copied[] = {"temperature", "top_p", "top_k", NULL};
    for (const char **key = copied; *key; key++)
        if (json_object_get(ir, *key) && !(hot && strcmp(*key, "temperature") == 0))
            json_object_set(body, *key, json_object_get(ir, *key));
    if (json_object_get(ir, "stop"))
        json_object_set(body, "stop_sequences", json_object_get(ir, "stop"));
    if (json_object_get(ir, "user"))
        json_object_set_new(body, "metadata",
                            json_pack("{s:O}", "user_id", json_object_get(ir, "user")));
    if (json_is_true(json_object_get(ir, "stream")))
        json_object_set_new(body, "stream", json_true());
    return body;
}

//  ---------------------------------------------------------------------------
//  Answers

static json_t *s_response_read(const json_t *response, proto_usage_t *usage, char *error,
                               size_t size)
{
    (void)usage;
    json_t *content = json_object_get(response, "content");
    if (!json_is_array(content))
        return pc_fail(error, size, "the upstream answer has no content array");
    json_t *ir = json_pack("{s:[]}", "content");
    json_t *parts = json_object_get(ir, "content");
    if (json_is_string(json_object_get(response, "id")))
        json_object_set(ir, "id", json_object_get(response, "id"));
    size_t index;
    json_t *block;
    json_array_foreach(content, index, block)
    {
        const char *type = json_string_value(json_object_get(block, "type"));
        if (!type)
            continue;
        if (strcmp(type, "text") == 0)
            pc_add_text(parts, json_string_value(json_object_get(block, "text")));
        else if (strcmp(type, "thinking") == 0) {
            const char *text = json_string_value(json_object_get(block, "thinking"));
            if (text && *text)
                json_array_append_new(parts,
                                      json_pack("{s:s, s:s}", "type", "thinking", "text", text));
        } else if (strcmp(type, "tool_use") == 0) {
            const char *id = json_string_value(json_object_get(block, "id"));
            const char *name = json_string_value(json_object_get(block, "name"));
            if (!id || !name) {
                json_decref(ir);
                return pc_fail(error, size, "the upstream tool_use block has no id or name");
            }
            char *arguments = pc_dump(json_object_get(block, "input"));
            json_array_append_new(parts, json_pack("{s:s, s:s, s:s, s:s}", "type", "tool_call",
                                                   "id", id, "name", name, "arguments",
                                                   arguments ? arguments : "{}"));
            free(arguments);
        }
        //  Other blocks (redacted thinking, server tool traces) have no
        //  counterpart in the other protocols.
    }
    const char *sequence = json_string_value(json_object_get(response, "stop_sequence"));
    json_object_set_new(
        ir, "stop",
        json_integer(s_stop_read(json_string_value(json_object_get(response, "stop_reason")))));
    if (sequence)
        json_object_set_new(ir, "stop_sequence", json_string(sequence));
    return ir;
}

//  Neutral content -> Anthropic blocks for an answer; tool arguments must
//  be JSON objects here (input is an object).
static json_t *s_answer_blocks(const json_t *content)
{
    json_t *blocks = json_array();
    size_t index;
    json_t *part;
    json_array_foreach(content, index, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        if (strcmp(type, "text") == 0)
            json_array_append_new(blocks, json_pack("{s:s, s:O}", "type", "text", "text",
                                                    json_object_get(part, "text")));
        else if (strcmp(type, "thinking") == 0)
            json_array_append_new(blocks,
                                  json_pack("{s:s, s:O, s:s}", "type", "thinking", "thinking",
                                            json_object_get(part, "text"), "signature", ""));
        else if (strcmp(type, "tool_call") == 0) {
            const char *arguments = json_string_value(json_object_get(part, "arguments"));
            json_t *input =
                pc_parse_arguments(arguments ? arguments : "", arguments ? strlen(arguments) : 0);
            //  A truncated call (max tokens) has no object to show; its raw
            //  text is kept so nothing is lost.
            if (!input)
                input = json_pack("{s:s}", "_raw_arguments", arguments ? arguments : "");
            json_array_append_new(
                blocks, json_pack("{s:s, s:o, s:O, s:o}", "type", "tool_use", "id",
                                  s_tool_id(json_string_value(json_object_get(part, "id"))), "name",
                                  json_object_get(part, "name"), "input", input));
        }
    }
    return blocks;
}

static json_t *s_response_write(const json_t *ir, const char *model, const proto_usage_t *usage)
{
    char id[160];
    pc_make_id(id, sizeof id, "msg_", json_string_value(json_object_get(ir, "id")), -1);
    const char *sequence = json_string_value(json_object_get(ir, "stop_sequence"));
    pc_stop_t stop = (pc_stop_t)json_integer_value(json_object_get(ir, "stop"));
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:s, s:o, s:o}", "id", id, "type", "message",
                     "role", "assistant", "model", model, "content",
                     s_answer_blocks(json_object_get(ir, "content")), "stop_reason",
                     s_stop_write(stop, sequence), "stop_sequence",
                     sequence && stop == PC_STOP_SEQUENCE ? json_string(sequence) : json_null(),
                     "usage", pc_usage_anthropic(usage));
}

//  ---------------------------------------------------------------------------
//  Streams

static int s_stream_read(proto_convert_stream_t *self, const char *name, json_t *data)
{
    const char *type = json_string_value(json_object_get(data, "type"));
    if (!type)
        type = name;
    if (strcmp(type, "message_start") == 0)
        return pc_start(self,
                        json_string_value(json_object_get(json_object_get(data, "message"), "id")));
    if (strcmp(type, "content_block_start") == 0) {
        json_t *block = json_object_get(data, "content_block");
        const char *kind = json_string_value(json_object_get(block, "type"));
        json_object_set_new(self->up, "skip", json_false());
        if (!kind)
            return pc_stream_fail(self, "content_block_start without a block type");
        if (strcmp(kind, "text") == 0) {
            const char *text = json_string_value(json_object_get(block, "text"));
            return pc_block(self, PC_BLOCK_TEXT) ||
                   pc_delta(self, PC_BLOCK_TEXT, text ? text : "", text ? strlen(text) : 0);
        }
        if (strcmp(kind, "thinking") == 0)
            return pc_block(self, PC_BLOCK_THINKING);
        if (strcmp(kind, "tool_use") == 0)
            return pc_tool(self, json_string_value(json_object_get(block, "id")),
                           json_string_value(json_object_get(block, "name")));
        //  redacted_thinking and server tool blocks have no counterpart.
        json_object_set_new(self->up, "skip", json_true());
        return pc_close(self);
    }
    if (strcmp(type, "content_block_delta") == 0) {
        if (json_is_true(json_object_get(self->up, "skip")))
            return 0;
        json_t *delta = json_object_get(data, "delta");
        const char *kind = json_string_value(json_object_get(delta, "type"));
        json_t *value;
        if (!kind)
            return pc_stream_fail(self, "content_block_delta without a delta type");
        if (strcmp(kind, "text_delta") == 0 &&
            json_is_string(value = json_object_get(delta, "text")))
            return pc_delta(self, PC_BLOCK_TEXT, json_string_value(value),
                            json_string_length(value));
        if (strcmp(kind, "thinking_delta") == 0 &&
            json_is_string(value = json_object_get(delta, "thinking")))
            return pc_delta(self, PC_BLOCK_THINKING, json_string_value(value),
                            json_string_length(value));
        if (strcmp(kind, "input_json_delta") == 0 &&
            json_is_string(value = json_object_get(delta, "partial_json")))
            return pc_tool_args(self, json_string_value(value), json_string_length(value));
        if (strcmp(kind, "signature_delta") == 0 || strcmp(kind, "citations_delta") == 0)
            return 0; //  Anthropic-only
        return pc_stream_fail(self, "content_block_delta of unknown type %s", kind);
    }
    if (strcmp(type, "content_block_stop") == 0)
        return pc_close(self);
    if (strcmp(type, "message_delta") == 0) {
        json_t *delta = json_object_get(data, "delta");
        pc_finish(self, s_stop_read(json_string_value(json_object_get(delta, "stop_reason"))),
                  json_string_value(json_object_get(delta, "stop_sequence")));
        return 0;
    }
    if (strcmp(type, "message_stop") == 0)
        return pc_end(self);
    if (strcmp(type, "error") == 0) {
        const char *message =
            json_string_value(json_object_get(json_object_get(data, "error"), "message"));
        return pc_stream_fail(self, "upstream error: %s", message ? message : "unknown");
    }
    return 0; //  ping, and event types added later (Anthropic's versioning policy)
}

static int s_stream_write(proto_convert_stream_t *self, const pc_event_t *event)
{
    switch (event->kind) {
    case PC_EV_START: {
        char id[160];
        pc_make_id(id, sizeof id, "msg_", self->id, -1);
        proto_usage_t usage = self->usage;
        usage.tokens_out = 0;
        return pc_sse(self->out, "message_start",
                      json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:[], s:n, s:n, s:o}}", "type",
                                "message_start", "message", "id", id, "type", "message", "role",
                                "assistant", "model", self->model, "content", "stop_reason",
                                "stop_sequence", "usage", pc_usage_anthropic(&usage)));
    }
    case PC_EV_BLOCK_START: {
        json_t *block;
        if (event->block == PC_BLOCK_TOOL)
            block = json_pack("{s:s, s:o, s:s, s:{}}", "type", "tool_use", "id",
                              s_tool_id(event->id), "name", event->name, "input");
        else if (event->block == PC_BLOCK_THINKING)
            block =
                json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking", "", "signature", "");
        else
            block = json_pack("{s:s, s:s}", "type", "text", "text", "");
        return pc_sse(self->out, "content_block_start",
                      json_pack("{s:s, s:i, s:o}", "type", "content_block_start", "index",
                                event->index, "content_block", block));
    }
    case PC_EV_DELTA: {
        json_t *delta;
        if (event->block == PC_BLOCK_TOOL)
            delta = json_pack("{s:s, s:s%}", "type", "input_json_delta", "partial_json",
                              event->text, event->size);
        else if (event->block == PC_BLOCK_THINKING)
            delta = json_pack("{s:s, s:s%}", "type", "thinking_delta", "thinking", event->text,
                              event->size);
        else
            delta =
                json_pack("{s:s, s:s%}", "type", "text_delta", "text", event->text, event->size);
        return pc_sse(self->out, "content_block_delta",
                      json_pack("{s:s, s:i, s:o}", "type", "content_block_delta", "index",
                                event->index, "delta", delta));
    }
    case PC_EV_BLOCK_STOP:
        return pc_sse(self->out, "content_block_stop",
                      json_pack("{s:s, s:i}", "type", "content_block_stop", "index", event->index));
    case PC_EV_END: {
        const char *sequence = self->stop == PC_STOP_SEQUENCE ? self->stop_sequence : NULL;
        if (pc_sse(self->out, "message_delta",
                   json_pack("{s:s, s:{s:s, s:o}, s:o}", "type", "message_delta", "delta",
                             "stop_reason", s_stop_write(self->stop, sequence), "stop_sequence",
                             sequence ? json_string(sequence) : json_null(), "usage",
                             pc_usage_anthropic(&self->usage))))
            return -1;
        return pc_sse(self->out, "message_stop", json_pack("{s:s}", "type", "message_stop"));
    }
    }
    return 0;
}

static const char *s_error_message(const json_t *body)
{
    return json_string_value(json_object_get(json_object_get(body, "error"), "message"));
}

//  Neutral names -> an Anthropic client's names for them.
static const char *const s_names[][2] = {
    {"user", "metadata.user_id"},
    {"parallel_tool_calls", "tool_choice.disable_parallel_tool_use"},
    {"thinking", "messages[].content[].thinking"},
    {"reasoning", "thinking"},
    {"include_thoughts", "thinking.display"},
    {NULL, NULL},
};

const pc_codec_t pc_anthropic_codec = {
    .protocol = PROTO_PROTOCOL_ANTHROPIC,
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
