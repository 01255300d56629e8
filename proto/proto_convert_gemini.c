/*  proto_convert_gemini: Gemini generateContent / streamGenerateContent to
    and from the neutral form.

    Gemini differs from the others in three ways that shape this file:
      - function calls carry whole `args` objects, never argument deltas, so
        a Gemini client's call is sent when the upstream's tool block ends;
      - a function response is addressed by function name (the id is
        optional), so names are looked up from the calls earlier in the
        conversation, and calls without ids get generated ones;
      - STOP is also the finish reason after function calls; a turn that
        called functions is a tool turn for the other protocols.
*/
#include "proto_convert_ir.h"

#include <string.h>

#define S_NAME "Gemini"

//  Gemini 3 rejects a history whose function calls lack the thought
//  signature it issued; calls made by another provider have none. Google
//  documents this value for histories that did not come from Gemini.
#define S_FOREIGN_SIGNATURE "skip_thought_signature_validator"

static pc_stop_t s_stop_read(const char *reason)
{
    if (!reason)
        return PC_STOP_NONE;
    if (strcmp(reason, "MAX_TOKENS") == 0)
        return PC_STOP_LENGTH;
    const char *filtered[] = {"SAFETY", "RECITATION",   "BLOCKLIST", "PROHIBITED_CONTENT",
                              "SPII",   "IMAGE_SAFETY", "LANGUAGE",  NULL};
    for (const char **word = filtered; *word; word++)
        if (strcmp(reason, *word) == 0)
            return PC_STOP_FILTER;
    //  STOP, OTHER, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED: the
    //  turn ended without a more precise word on the other side.
    return PC_STOP_END;
}

static const char *s_stop_write(pc_stop_t stop)
{
    switch (stop) {
    case PC_STOP_LENGTH:
        return "MAX_TOKENS";
    case PC_STOP_FILTER:
    case PC_STOP_REFUSAL:
        return "SAFETY";
    default:
        return "STOP";
    }
}

//  ---------------------------------------------------------------------------
//  Request: client -> neutral

//  A function response object as text for protocols that carry tool results
//  as text: a lone string result is the text itself, anything else its JSON.
static char *s_response_text(const json_t *response)
{
    if (json_is_object(response) && json_object_size(response) == 1) {
        const char *keys[] = {"result", "output", "content", NULL};
        for (const char **key = keys; *key; key++) {
            const char *text = json_string_value(json_object_get(response, *key));
            if (text)
                return strdup(text);
        }
    }
    return pc_dump(response);
}

static json_t *s_parts_read(const json_t *parts, bool model, json_t *pending, int *calls,
                            pc_ctx_t *ctx, char *error, size_t size)
{
    json_t *out = json_array();
    size_t index;
    json_t *part;
    json_array_foreach(parts, index, part)
    {
        json_t *value;
        if (json_is_string(value = json_object_get(part, "text"))) {
            if (json_is_true(json_object_get(part, "thought"))) {
                if (json_string_length(value))
                    json_array_append_new(
                        out, json_pack("{s:s, s:O}", "type", "thinking", "text", value));
            } else
                pc_add_text(out, json_string_value(value));
        } else if ((value = json_object_get(part, "inlineData"))) {
            const char *mime = json_string_value(json_object_get(value, "mimeType"));
            const char *data = json_string_value(json_object_get(value, "data"));
            if (!mime || !data)
                goto bad;
            json_array_append_new(
                out, json_pack("{s:s, s:s, s:s}", "type", "media", "mime", mime, "data", data));
        } else if ((value = json_object_get(part, "fileData"))) {
            const char *uri = json_string_value(json_object_get(value, "fileUri"));
            const char *mime = json_string_value(json_object_get(value, "mimeType"));
            if (!uri)
                goto bad;
            json_t *media = json_pack("{s:s, s:s}", "type", "media", "url", uri);
            if (mime)
                json_object_set_new(media, "mime", json_string(mime));
            json_array_append_new(out, media);
        } else if ((value = json_object_get(part, "functionCall"))) {
            const char *name = json_string_value(json_object_get(value, "name"));
            const char *id = json_string_value(json_object_get(value, "id"));
            if (!name || !model)
                goto bad;
            char made[64];
            if (!id) {
                snprintf(made, sizeof made, "call_%d", (*calls)++);
                id = made;
            }
            char *arguments = pc_dump(json_object_get(value, "args"));
            json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:s}", "type", "tool_call", "id",
                                                 id, "name", name, "arguments",
                                                 arguments ? arguments : "{}"));
            free(arguments);
            json_array_append_new(pending, json_pack("{s:s, s:s}", "id", id, "name", name));
        } else if ((value = json_object_get(part, "functionResponse"))) {
            const char *name = json_string_value(json_object_get(value, "name"));
            const char *id = json_string_value(json_object_get(value, "id"));
            if (!name)
                goto bad;
            //  Without an id, the response answers the oldest open call of
            //  that name.
            size_t call_index;
            json_t *call;
            char found[128] = "";
            json_array_foreach(pending, call_index, call)
            {
                const char *call_id = json_string_value(json_object_get(call, "id"));
                if (id ? strcmp(call_id, id) == 0
                       : strcmp(json_string_value(json_object_get(call, "name")), name) == 0) {
                    snprintf(found, sizeof found, "%s", call_id);
                    json_array_remove(pending, call_index);
                    break;
                }
            }
            if (!*found)
                snprintf(found, sizeof found, "%s", id ? id : name);
            json_t *response = json_object_get(value, "response");
            char *text = s_response_text(response);
            json_t *result =
                json_pack("{s:s, s:s, s:s, s:[], s:b}", "type", "tool_result", "id", found, "name",
                          name, "content", "is_error", json_object_get(response, "error") != NULL);
            pc_add_text(json_object_get(result, "content"), text);
            free(text);
            json_array_append_new(out, result);
        } else if (json_object_get(part, "thoughtSignature") && json_object_size(part) == 1)
            ; //  a bare signature belongs to Gemini alone
        else if (json_object_get(part, "executableCode") ||
                 json_object_get(part, "codeExecutionResult"))
            //  The trace of Gemini's own code execution: the answer that
            //  used it is kept.
            pc_drop(ctx, "contents[].parts[].",
                    json_object_get(part, "executableCode") ? "executableCode"
                                                            : "codeExecutionResult");
        else
            goto bad;
    }
    return out;
bad:
    json_decref(out);
    return pc_fail(error, size, "a Gemini part of this kind cannot be converted");
}

//  safetySettings and labels have no counterpart elsewhere: unknown here,
//  so dropped and named.
static const char *const s_request_keys[] = {
    "contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "model", NULL};
static const char *const s_config_keys[] = {"temperature",
                                            "topP",
                                            "topK",
                                            "maxOutputTokens",
                                            "stopSequences",
                                            "candidateCount",
                                            "responseMimeType",
                                            "responseSchema",
                                            "responseJsonSchema",
                                            "thinkingConfig",
                                            "seed",
                                            "presencePenalty",
                                            "frequencyPenalty",
                                            "responseModalities",
                                            NULL};

//  Tools: function declarations become neutral tools; Gemini's built-in
//  tools (googleSearch, codeExecution, urlContext, ...) cannot be forced
//  (allowedFunctionNames names functions only), so they are dropped.
static int s_tools_read(const json_t *request, json_t *ir, pc_ctx_t *ctx, char *error, size_t size)
{
    static const char *const known[] = {"name", "description", "parameters", "parametersJsonSchema",
                                        NULL};
    json_t *tools = json_object_get(request, "tools");
    if (!tools)
        return 0;
    json_t *list = json_array();
    json_object_set_new(ir, "tools", list);
    size_t index;
    json_t *item;
    json_array_foreach(tools, index, item)
    {
        const char *key;
        json_t *declarations;
        json_object_foreach(item, key, declarations)
        {
            if (strcmp(key, "functionDeclarations")) {
                pc_drop(ctx, "tools[].", key);
                continue;
            }
            size_t declaration_index;
            json_t *declaration;
            json_array_foreach(declarations, declaration_index, declaration)
            {
                const char *name = json_string_value(json_object_get(declaration, "name"));
                if (!name) {
                    pc_fail(error, size, "a function declaration needs a name");
                    return -1;
                }
                pc_drop_unknown(declaration, known, "tools[].functionDeclarations[].", ctx);
                json_t *tool = json_pack("{s:s}", "name", name);
                if (json_is_string(json_object_get(declaration, "description")))
                    json_object_set(tool, "description",
                                    json_object_get(declaration, "description"));
                json_t *schema = json_object_get(declaration, "parametersJsonSchema");
                if (json_is_object(schema))
                    json_object_set(tool, "parameters", schema);
                else if (json_is_object(schema = json_object_get(declaration, "parameters")))
                    json_object_set_new(tool, "parameters", pc_schema_lower_types(schema));
                json_array_append_new(list, tool);
            }
        }
    }
    return 0;
}

//  generationConfig: what changes the answer's shape (several candidates,
//  audio or images, log probabilities) is refused; unknown keys only tune.
static int s_config_check(const json_t *config, pc_ctx_t *ctx, char *error, size_t size)
{
    size_t index;
    json_t *item;
    pc_drop_unknown(config, s_config_keys, "generationConfig.", ctx);
    json_t *count = json_object_get(config, "candidateCount");
    if (count && json_integer_value(count) != 1) {
        pc_fail(error, size, "candidateCount other than 1 cannot be converted");
        return -1;
    }
    if (json_is_true(json_object_get(config, "responseLogprobs"))) {
        pc_fail(error, size, "responseLogprobs cannot be converted to another protocol");
        return -1;
    }
    json_t *modalities = json_object_get(config, "responseModalities");
    json_array_foreach(modalities, index, item)
    {
        if (!json_is_string(item) || strcmp(json_string_value(item), "TEXT")) {
            pc_fail(error, size, "response modalities other than TEXT cannot be converted");
            return -1;
        }
    }
    return 0;
}

static json_t *s_request_read(const json_t *request, bool stream, pc_ctx_t *ctx, char *error,
                              size_t size)
{
    (void)stream;
    json_t *cached = json_object_get(request, "cachedContent");
    if (cached && !json_is_null(cached))
        return pc_fail(error, size,
                       "cachedContent refers to content stored at Google and cannot be converted "
                       "(send the content itself)");
    pc_drop_unknown(request, s_request_keys, "", ctx);
    json_t *contents = json_object_get(request, "contents");
    if (!json_is_array(contents) || !json_array_size(contents))
        return pc_fail(error, size, "contents must be a non-empty array");
    json_t *ir = json_pack("{s:[], s:[]}", "system", "messages");
    json_t *pending = json_array();
    int calls = 0;
    size_t index;
    json_t *item;
    json_array_foreach(json_object_get(json_object_get(request, "systemInstruction"), "parts"),
                       index, item)
    {
        const char *text = json_string_value(json_object_get(item, "text"));
        if (!text) {
            pc_fail(error, size, "systemInstruction parts must be text");
            goto fail;
        }
        if (*text)
            json_array_append_new(json_object_get(ir, "system"), json_string(text));
    }
    json_array_foreach(contents, index, item)
    {
        const char *role = json_string_value(json_object_get(item, "role"));
        bool model = role && strcmp(role, "model") == 0;
        json_t *parts =
            s_parts_read(json_object_get(item, "parts"), model, pending, &calls, ctx, error, size);
        if (!parts)
            goto fail;
        pc_push_message(json_object_get(ir, "messages"), model ? "assistant" : "user", parts);
    }
    if (s_tools_read(request, ir, ctx, error, size))
        goto fail;
    json_t *calling =
        json_object_get(json_object_get(request, "toolConfig"), "functionCallingConfig");
    const char *mode = json_string_value(json_object_get(calling, "mode"));
    json_t *allowed = json_object_get(calling, "allowedFunctionNames");
    if (mode && strcmp(mode, "NONE") == 0)
        json_object_set_new(ir, "tool_choice", json_string("none"));
    else if (mode && strcmp(mode, "ANY") == 0) {
        if (json_array_size(allowed) == 1)
            json_object_set_new(ir, "tool_choice",
                                json_pack("{s:O}", "name", json_array_get(allowed, 0)));
        else if (json_array_size(allowed) > 1) {
            pc_fail(error, size, "allowedFunctionNames with several names cannot be converted");
            goto fail;
        } else
            json_object_set_new(ir, "tool_choice", json_string("required"));
    } else if (mode && strcmp(mode, "AUTO") == 0)
        json_object_set_new(ir, "tool_choice", json_string("auto"));
    else if (mode) {
        pc_fail(error, size, "function calling mode %s cannot be converted", mode);
        goto fail;
    }

    json_t *config = json_object_get(request, "generationConfig");
    if (config && s_config_check(config, ctx, error, size))
        goto fail;
    const char *map[][2] = {{"temperature", "temperature"},
                            {"topP", "top_p"},
                            {"topK", "top_k"},
                            {"maxOutputTokens", "max_tokens"},
                            {"seed", "seed"},
                            {"presencePenalty", "presence_penalty"},
                            {"frequencyPenalty", "frequency_penalty"}};
    for (size_t at = 0; at < sizeof map / sizeof map[0]; at++) {
        json_t *value = json_object_get(config, map[at][0]);
        if (json_is_number(value) &&
            !(strstr(map[at][1], "penalty") && json_number_value(value) == 0))
            json_object_set(ir, map[at][1], value);
    }
    json_t *stop = json_object_get(config, "stopSequences");
    if (json_array_size(stop))
        json_object_set(ir, "stop", stop);
    const char *mime = json_string_value(json_object_get(config, "responseMimeType"));
    json_t *schema = json_object_get(config, "responseJsonSchema");
    if (mime && strcmp(mime, "application/json") == 0) {
        if (json_is_object(schema))
            json_object_set_new(ir, "response_format",
                                json_pack("{s:s, s:s, s:O}", "type", "json_schema", "name",
                                          "response", "schema", schema));
        else if (json_is_object(schema = json_object_get(config, "responseSchema")))
            json_object_set_new(ir, "response_format",
                                json_pack("{s:s, s:s, s:o}", "type", "json_schema", "name",
                                          "response", "schema", pc_schema_lower_types(schema)));
        else
            json_object_set_new(ir, "response_format", json_pack("{s:s}", "type", "json_object"));
    } else if (mime && strcmp(mime, "text/plain")) {
        pc_fail(error, size, "responseMimeType %s cannot be converted", mime);
        goto fail;
    }
    json_t *thinking = json_object_get(config, "thinkingConfig");
    if (thinking) {
        json_t *budget = json_object_get(thinking, "thinkingBudget");
        const char *level = json_string_value(json_object_get(thinking, "thinkingLevel"));
        json_t *reasoning = json_object();
        //  0 turns thinking off and -1 leaves it to the model: neither is a
        //  budget for the other side.
        if (json_is_integer(budget) && json_integer_value(budget) > 0)
            json_object_set(reasoning, "budget", budget);
        if (level)
            json_object_set_new(reasoning, "effort",
                                json_string(strcmp(level, "HIGH") == 0 || strcmp(level, "high") == 0
                                                ? "high"
                                                : "low"));
        bool include = json_is_true(json_object_get(thinking, "includeThoughts"));
        json_object_set_new(reasoning, "include_thoughts", json_boolean(include));
        static const char *const known[] = {"thinkingBudget", "thinkingLevel", "includeThoughts",
                                            NULL};
        pc_drop_unknown(thinking, known, "generationConfig.thinkingConfig.", ctx);
        //  Thoughts asked with no depth leave the depth to the model.
        if (json_object_get(reasoning, "budget") || json_object_get(reasoning, "effort") || include)
            json_object_set_new(ir, "reasoning", reasoning);
        else
            json_decref(reasoning);
    }
    json_decref(pending);
    return ir;
fail:
    json_decref(pending);
    json_decref(ir);
    return NULL;
}

//  ---------------------------------------------------------------------------
//  Request: neutral -> upstream

static json_t *s_parts_write(const json_t *content, bool model, pc_ctx_t *ctx, char *error,
                             size_t size)
{
    json_t *parts = json_array();
    bool signed_call = false;
    size_t index;
    json_t *part;
    json_array_foreach(content, index, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        if (strcmp(type, "text") == 0)
            json_array_append_new(parts, json_pack("{s:O}", "text", json_object_get(part, "text")));
        else if (strcmp(type, "media") == 0) {
            const char *mime = json_string_value(json_object_get(part, "mime"));
            const char *data = json_string_value(json_object_get(part, "data"));
            const char *url = json_string_value(json_object_get(part, "url"));
            if (data)
                json_array_append_new(parts, json_pack("{s:{s:s, s:s}}", "inlineData", "mimeType",
                                                       mime ? mime : "application/octet-stream",
                                                       "data", data));
            else {
                json_t *file = json_pack("{s:s}", "fileUri", url ? url : "");
                if (mime)
                    json_object_set_new(file, "mimeType", json_string(mime));
                json_array_append_new(parts, json_pack("{s:o}", "fileData", file));
            }
        } else if (strcmp(type, "tool_call") == 0) {
            const char *arguments = json_string_value(json_object_get(part, "arguments"));
            json_t *args =
                pc_parse_arguments(arguments ? arguments : "", arguments ? strlen(arguments) : 0);
            if (!args) {
                json_decref(parts);
                return pc_fail(error, size, "tool call arguments must be a JSON object");
            }
            json_t *item =
                json_pack("{s:{s:O, s:O, s:o}}", "functionCall", "id", json_object_get(part, "id"),
                          "name", json_object_get(part, "name"), "args", args);
            if (model && !signed_call) {
                json_object_set_new(item, "thoughtSignature", json_string(S_FOREIGN_SIGNATURE));
                signed_call = true;
            }
            json_array_append_new(parts, item);
        } else if (strcmp(type, "tool_result") == 0) {
            const char *name = json_string_value(json_object_get(part, "name"));
            if (!name) {
                json_decref(parts);
                return pc_fail(error, size,
                               "tool result %s answers no tool call in the conversation; a Gemini "
                               "upstream needs the function name",
                               json_string_value(json_object_get(part, "id")));
            }
            char *text = strdup("");
            size_t inner_index;
            json_t *inner;
            json_array_foreach(json_object_get(part, "content"), inner_index, inner)
            {
                const char *piece = json_string_value(json_object_get(inner, "text"));
                char *joined = NULL;
                if (!piece || asprintf(&joined, "%s%s%s", text, *text ? "\n" : "", piece) < 0) {
                    free(text);
                    json_decref(parts);
                    return pc_fail(error, size,
                                   "tool results with images cannot be expressed for a %s upstream",
                                   S_NAME);
                }
                free(text);
                text = joined;
            }
            //  A result that is a JSON object goes as that object; text goes
            //  under "result" (or "error"), the keys Gemini's docs use.
            json_t *response = json_loads(text, 0, NULL);
            if (!json_is_object(response)) {
                json_decref(response);
                response = json_pack(
                    "{s:s}", json_is_true(json_object_get(part, "is_error")) ? "error" : "result",
                    text);
            }
            free(text);
            json_array_append_new(parts, json_pack("{s:{s:O, s:s, s:o}}", "functionResponse", "id",
                                                   json_object_get(part, "id"), "name", name,
                                                   "response", response));
        } else if (strcmp(type, "thinking") == 0)
            //  Thinking of earlier turns is not sent (docs/conversion.md).
            pc_drop_ir(ctx, "thinking");
    }
    return parts;
}

static json_t *s_request_write(const json_t *ir, const char *model, pc_ctx_t *ctx, char *error,
                               size_t size)
{
    (void)model;
    //  Gemini can be asked for neither: several calls at once only tune how
    //  the turn goes, and the end user's id only annotates.
    if (json_is_false(json_object_get(ir, "parallel_tool_calls")) &&
        json_array_size(json_object_get(ir, "tools")))
        pc_drop_ir(ctx, "parallel_tool_calls");
    if (json_object_get(ir, "user"))
        pc_drop_ir(ctx, "user");
    json_t *body = json_pack("{s:[]}", "contents");
    size_t index;
    json_t *item;
    json_array_foreach(json_object_get(ir, "messages"), index, item)
    {
        bool assistant = strcmp(json_string_value(json_object_get(item, "role")), "assistant") == 0;
        json_t *parts =
            s_parts_write(json_object_get(item, "content"), assistant, ctx, error, size);
        if (!parts) {
            json_decref(body);
            return NULL;
        }
        if (json_array_size(parts))
            json_array_append_new(
                json_object_get(body, "contents"),
                json_pack("{s:s, s:o}", "role", assistant ? "model" : "user", "parts", parts));
        else
            json_decref(parts);
    }
    json_t *system = json_array();
    json_array_foreach(json_object_get(ir, "system"), index, item)
        json_array_append_new(system, json_pack("{s:O}", "text", item));
    if (json_array_size(system))
        json_object_set_new(body, "systemInstruction", json_pack("{s:o}", "parts", system));
    else
        json_decref(system);
    json_t *tools = json_object_get(ir, "tools");
    if (json_array_size(tools)) {
        json_t *declarations = json_array();
        json_array_foreach(tools, index, item)
        {
            json_t *declaration = json_pack("{s:O}", "name", json_object_get(item, "name"));
            if (json_object_get(item, "description"))
                json_object_set(declaration, "description", json_object_get(item, "description"));
            //  parametersJsonSchema takes the JSON Schema as the client wrote
            //  it; `parameters` would need it narrowed to Gemini's subset.
            if (json_object_get(item, "parameters"))
                json_object_set(declaration, "parametersJsonSchema",
                                json_object_get(item, "parameters"));
            json_array_append_new(declarations, declaration);
        }
        json_object_set_new(body, "tools",
                            json_pack("[{s:o}]", "functionDeclarations", declarations));
        json_t *choice = json_object_get(ir, "tool_choice");
        json_t *calling = NULL;
        if (json_is_string(choice)) {
            const char *word = json_string_value(choice);
            calling = json_pack("{s:s}", "mode",
                                strcmp(word, "required") == 0 ? "ANY"
                                : strcmp(word, "none") == 0   ? "NONE"
                                                              : "AUTO");
        } else if (choice)
            calling = json_pack("{s:s, s:[O]}", "mode", "ANY", "allowedFunctionNames",
                                json_object_get(choice, "name"));
        if (calling)
            json_object_set_new(body, "toolConfig",
                                json_pack("{s:o}", "functionCallingConfig", calling));
    }
    json_t *config = json_object();
    const char *map[][2] = {{"temperature", "temperature"},
                            {"top_p", "topP"},
                            {"top_k", "topK"},
                            {"max_tokens", "maxOutputTokens"},
                            {"seed", "seed"},
                            {"presence_penalty", "presencePenalty"},
                            {"frequency_penalty", "frequencyPenalty"},
                            {"stop", "stopSequences"}};
    for (size_t at = 0; at < sizeof map / sizeof map[0]; at++)
        if (json_object_get(ir, map[at][0]))
            json_object_set(config, map[at][1], json_object_get(ir, map[at][0]));
    json_t *format = json_object_get(ir, "response_format");
    if (format) {
        json_object_set_new(config, "responseMimeType", json_string("application/json"));
        if (json_object_get(format, "schema"))
            json_object_set(config, "responseJsonSchema", json_object_get(format, "schema"));
    }
    json_t *reasoning = json_object_get(ir, "reasoning");
    if (reasoning) {
        json_int_t budget = json_integer_value(json_object_get(reasoning, "budget"));
        if (budget <= 0)
            budget = pc_effort_to_budget(json_string_value(json_object_get(reasoning, "effort")));
        json_t *include = json_object_get(reasoning, "include_thoughts");
        json_t *thinking =
            json_pack("{s:b}", "includeThoughts", include ? json_is_true(include) : 1);
        if (budget > 0)
            json_object_set_new(thinking, "thinkingBudget", json_integer(budget));
        json_object_set_new(config, "thinkingConfig", thinking);
    }
    if (json_object_size(config))
        json_object_set_new(body, "generationConfig", config);
    else
        json_decref(config);
    return body;
}

//  ---------------------------------------------------------------------------
//  Answers

static json_t *s_response_read(const json_t *response, proto_usage_t *usage, char *error,
                               size_t size)
{
    (void)usage;
    json_t *candidates = json_object_get(response, "candidates");
    json_t *candidate = json_array_get(candidates, 0);
    const char *blocked = json_string_value(
        json_object_get(json_object_get(response, "promptFeedback"), "blockReason"));
    if (!candidate && !blocked)
        return pc_fail(error, size, "the upstream answer has no candidates");
    json_t *ir = json_pack("{s:[]}", "content");
    json_t *content = json_object_get(ir, "content");
    const char *id = json_string_value(json_object_get(response, "responseId"));
    if (id)
        json_object_set_new(ir, "id", json_string(id));
    bool tools = false;
    size_t index;
    json_t *part;
    json_array_foreach(json_object_get(json_object_get(candidate, "content"), "parts"), index, part)
    {
        json_t *value;
        if (json_is_string(value = json_object_get(part, "text"))) {
            if (!json_string_length(value))
                continue;
            if (json_is_true(json_object_get(part, "thought")))
                json_array_append_new(content,
                                      json_pack("{s:s, s:O}", "type", "thinking", "text", value));
            else
                pc_add_text(content, json_string_value(value));
        } else if ((value = json_object_get(part, "functionCall"))) {
            const char *name = json_string_value(json_object_get(value, "name"));
            const char *call_id = json_string_value(json_object_get(value, "id"));
            if (!name) {
                json_decref(ir);
                return pc_fail(error, size, "the upstream function call has no name");
            }
            char made[160];
            if (!call_id) {
                pc_make_id(made, sizeof made, "call_", id, (int)index);
                call_id = made;
            }
            char *arguments = pc_dump(json_object_get(value, "args"));
            json_array_append_new(content, json_pack("{s:s, s:s, s:s, s:s}", "type", "tool_call",
                                                     "id", call_id, "name", name, "arguments",
                                                     arguments ? arguments : "{}"));
            free(arguments);
            tools = true;
        }
    }
    pc_stop_t stop =
        blocked && !candidate
            ? PC_STOP_FILTER
            : s_stop_read(json_string_value(json_object_get(candidate, "finishReason")));
    if (tools && (stop == PC_STOP_END || stop == PC_STOP_NONE))
        stop = PC_STOP_TOOL;
    json_object_set_new(ir, "stop", json_integer(stop));
    json_t *thoughts =
        json_object_get(json_object_get(response, "usageMetadata"), "thoughtsTokenCount");
    if (json_is_integer(thoughts))
        json_object_set(ir, "reasoning_tokens", thoughts);
    return ir;
}

//  Neutral part -> Gemini answer part; NULL for parts Gemini does not show.
static json_t *s_answer_part(const json_t *part)
{
    const char *type = json_string_value(json_object_get(part, "type"));
    if (strcmp(type, "text") == 0)
        return json_pack("{s:O}", "text", json_object_get(part, "text"));
    if (strcmp(type, "thinking") == 0)
        return json_pack("{s:O, s:b}", "text", json_object_get(part, "text"), "thought", 1);
    if (strcmp(type, "tool_call") == 0) {
        const char *arguments = json_string_value(json_object_get(part, "arguments"));
        json_t *args =
            pc_parse_arguments(arguments ? arguments : "", arguments ? strlen(arguments) : 0);
        if (!args)
            args = json_pack("{s:s}", "_raw_arguments", arguments ? arguments : "");
        return json_pack("{s:{s:O, s:O, s:o}}", "functionCall", "id", json_object_get(part, "id"),
                         "name", json_object_get(part, "name"), "args", args);
    }
    return NULL;
}

static json_t *s_response_write(const json_t *ir, const char *model, const proto_usage_t *usage)
{
    json_t *parts = json_array();
    size_t index;
    json_t *part;
    json_array_foreach(json_object_get(ir, "content"), index, part)
    {
        json_t *item = s_answer_part(part);
        if (item)
            json_array_append_new(parts, item);
    }
    char id[160];
    pc_make_id(id, sizeof id, "", json_string_value(json_object_get(ir, "id")), -1);
    pc_stop_t stop = (pc_stop_t)json_integer_value(json_object_get(ir, "stop"));
    uint64_t reasoning = (uint64_t)json_integer_value(json_object_get(ir, "reasoning_tokens"));
    return json_pack("{s:[{s:{s:o, s:s}, s:s, s:i}], s:o, s:s, s:s}", "candidates", "content",
                     "parts", parts, "role", "model", "finishReason", s_stop_write(stop), "index",
                     0, "usageMetadata", pc_usage_gemini(usage, reasoning), "modelVersion", model,
                     "responseId", id);
}

//  ---------------------------------------------------------------------------
//  Streams

static int s_stream_read(proto_convert_stream_t *self, const char *name, json_t *data)
{
    (void)name;
    if (!data)
        return pc_stream_fail(self, "the upstream sent an event that is not JSON");
    json_t *error = json_object_get(data, "error");
    if (error) {
        const char *message = json_string_value(json_object_get(error, "message"));
        return pc_stream_fail(self, "upstream error: %s", message ? message : "unknown");
    }
    json_t *candidate = json_array_get(json_object_get(data, "candidates"), 0);
    const char *blocked =
        json_string_value(json_object_get(json_object_get(data, "promptFeedback"), "blockReason"));
    if (!candidate && !blocked && !json_object_get(data, "usageMetadata"))
        return pc_stream_fail(self, "the upstream chunk has no candidates");
    if (pc_start(self, json_string_value(json_object_get(data, "responseId"))))
        return -1;
    json_t *thoughts =
        json_object_get(json_object_get(data, "usageMetadata"), "thoughtsTokenCount");
    if (json_is_integer(thoughts))
        self->reasoning = (uint64_t)json_integer_value(thoughts);
    size_t index;
    json_t *part;
    json_array_foreach(json_object_get(json_object_get(candidate, "content"), "parts"), index, part)
    {
        json_t *value;
        if (json_is_string(value = json_object_get(part, "text"))) {
            pc_block_t kind =
                json_is_true(json_object_get(part, "thought")) ? PC_BLOCK_THINKING : PC_BLOCK_TEXT;
            if (pc_delta(self, kind, json_string_value(value), json_string_length(value)))
                return -1;
        } else if ((value = json_object_get(part, "functionCall"))) {
            char *arguments = pc_dump(json_object_get(value, "args"));
            int rc = pc_tool(self, json_string_value(json_object_get(value, "id")),
                             json_string_value(json_object_get(value, "name"))) ||
                     pc_tool_args(self, arguments ? arguments : "{}",
                                  arguments ? strlen(arguments) : 2) ||
                     pc_close(self);
            free(arguments);
            if (rc)
                return -1;
            json_object_set_new(self->up, "tools", json_true());
        }
    }
    const char *finish = json_string_value(json_object_get(candidate, "finishReason"));
    if (finish || (blocked && !candidate)) {
        pc_stop_t stop = finish ? s_stop_read(finish) : PC_STOP_FILTER;
        if (json_is_true(json_object_get(self->up, "tools")) && stop == PC_STOP_END)
            stop = PC_STOP_TOOL;
        pc_finish(self, stop, NULL);
        //  Gemini has no end event: the chunk with finishReason is the last.
        return pc_end(self);
    }
    return 0;
}

static int s_emit(proto_convert_stream_t *self, json_t *parts, const char *finish)
{
    char id[160];
    pc_make_id(id, sizeof id, "", self->id, -1);
    json_t *candidate =
        json_pack("{s:{s:o, s:s}, s:i}", "content", "parts", parts, "role", "model", "index", 0);
    if (finish)
        json_object_set_new(candidate, "finishReason", json_string(finish));
    json_t *chunk = json_pack("{s:[o], s:o, s:s, s:s}", "candidates", candidate, "usageMetadata",
                              pc_usage_gemini(&self->usage, self->reasoning), "modelVersion",
                              self->model, "responseId", id);
    if (!self->json_array)
        return pc_sse(self->out, NULL, chunk);
    char *text = json_dumps(chunk, JSON_COMPACT);
    json_decref(chunk);
    if (!text)
        return -1;
    if (!json_is_true(json_object_get(self->cl, "array_open")))
        pc_append(self->out, "[");
    else if (json_is_true(json_object_get(self->cl, "array_items")))
        pc_append(self->out, ",\r\n");
    json_object_set_new(self->cl, "array_open", json_true());
    json_object_set_new(self->cl, "array_items", json_true());
    pc_append(self->out, text);
    free(text);
    return 0;
}

static int s_stream_write(proto_convert_stream_t *self, const pc_event_t *event)
{
    switch (event->kind) {
    case PC_EV_START:
        //  Gemini has no start event, and an empty chunk would make a
        //  client's chunk.text undefined; an array stream can open at once.
        if (self->json_array) {
            pc_append(self->out, "[");
            json_object_set_new(self->cl, "array_open", json_true());
        }
        return 0;
    case PC_EV_BLOCK_START:
        if (event->block == PC_BLOCK_TOOL) {
            json_object_set_new(self->cl, "tool_id", json_string(event->id));
            json_object_set_new(self->cl, "tool_name", json_string(event->name));
            json_object_set_new(self->cl, "tool_args", json_string(""));
        }
        return 0;
    case PC_EV_DELTA: {
        if (event->block == PC_BLOCK_TOOL) {
            //  Gemini carries arguments whole: gather them until the block ends.
            json_t *args = json_object_get(self->cl, "tool_args");
            size_t length = json_string_length(args);
            char *joined = malloc(length + event->size + 1);
            if (!joined)
                return -1;
            memcpy(joined, json_string_value(args), length);
            memcpy(joined + length, event->text, event->size);
            json_object_set_new(self->cl, "tool_args", json_stringn(joined, length + event->size));
            free(joined);
            return 0;
        }
        json_t *part = json_pack("{s:s%}", "text", event->text, event->size);
        if (event->block == PC_BLOCK_THINKING)
            json_object_set_new(part, "thought", json_true());
        return s_emit(self, json_pack("[o]", part), NULL);
    }
    case PC_EV_BLOCK_STOP: {
        if (event->block != PC_BLOCK_TOOL)
            return 0;
        json_t *args = json_object_get(self->cl, "tool_args");
        json_t *parsed = pc_parse_arguments(json_string_value(args), json_string_length(args));
        if (!parsed) {
            snprintf(self->error, sizeof self->error,
                     "the upstream's tool call arguments are not a JSON object");
            return -1;
        }
        return s_emit(self,
                      json_pack("[{s:{s:O, s:O, s:o}}]", "functionCall", "id",
                                json_object_get(self->cl, "tool_id"), "name",
                                json_object_get(self->cl, "tool_name"), "args", parsed),
                      NULL);
    }
    case PC_EV_END:
        //  Like Gemini's own last chunk: an empty text part beside the finish
        //  reason and the final usage, so chunk.text stays a string.
        if (s_emit(self, json_pack("[{s:s}]", "text", ""), s_stop_write(self->stop)))
            return -1;
        if (self->json_array)
            pc_append(self->out, "]");
        return 0;
    }
    return 0;
}

static const char *s_error_message(const json_t *body)
{
    if (json_is_array(body))
        body = json_array_get(body, 0);
    return json_string_value(json_object_get(json_object_get(body, "error"), "message"));
}

//  Neutral names -> a Gemini client's names for them.
static const char *const s_names[][2] = {
    {"top_k", "generationConfig.topK"},
    {"top_p", "generationConfig.topP"},
    {"temperature", "generationConfig.temperature"},
    {"seed", "generationConfig.seed"},
    {"presence_penalty", "generationConfig.presencePenalty"},
    {"frequency_penalty", "generationConfig.frequencyPenalty"},
    {"thinking", "contents[].parts[].thought"},
    {"reasoning", "generationConfig.thinkingConfig"},
    {"include_thoughts", "generationConfig.thinkingConfig.includeThoughts"},
    {NULL, NULL},
};

const pc_codec_t pc_gemini_codec = {
    .protocol = PROTO_PROTOCOL_GEMINI,
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
