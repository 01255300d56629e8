/*  proto_convert: the pair table, shared helpers, and the stream layer
    that keeps every client stream well formed whatever the upstream sends.
    The protocols' own readers and writers are in proto_convert_openai.c,
    proto_convert_anthropic.c, proto_convert_gemini.c and
    proto_convert_responses.c; the self test is in proto_convert_test.c.
*/
#include "proto_convert_ir.h"
#include "proto_error.h"

#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const pc_codec_t *s_codec(int protocol)
{
    switch (protocol) {
    case PROTO_PROTOCOL_OPENAI:
        return &pc_openai_codec;
    case PROTO_PROTOCOL_OPENAI_RESPONSES:
        return &pc_responses_codec;
    case PROTO_PROTOCOL_ANTHROPIC:
        return &pc_anthropic_codec;
    case PROTO_PROTOCOL_GEMINI:
        return &pc_gemini_codec;
    default:
        return NULL;
    }
}

bool proto_convert_supported(int client_protocol, int upstream_protocol)
{
    return s_codec(client_protocol) && s_codec(upstream_protocol);
}

//  ---------------------------------------------------------------------------
//  Shared helpers

void *pc_fail(char *error, size_t size, const char *format, ...)
{
    if (error && size) {
        va_list args;
        va_start(args, format);
        vsnprintf(error, size, format, args);
        va_end(args);
    }
    return NULL;
}

void pc_drop(pc_ctx_t *ctx, const char *prefix, const char *name)
{
    char full[160];
    snprintf(full, sizeof full, "%s%s", prefix ? prefix : "", name);
    size_t index;
    json_t *item;
    json_array_foreach(ctx->dropped, index,
                       item) if (strcmp(json_string_value(item), full) == 0) return;
    json_array_append_new(ctx->dropped, json_string(full));
}

void pc_drop_ir(pc_ctx_t *ctx, const char *ir_name)
{
    const char *const(*names)[2] = ctx->client ? ctx->client->names : NULL;
    for (size_t at = 0; names && names[at][0]; at++)
        if (strcmp(names[at][0], ir_name) == 0) {
            pc_drop(ctx, "", names[at][1]);
            return;
        }
    pc_drop(ctx, "", ir_name);
}

void pc_drop_unknown(const json_t *object, const char *const *known, const char *prefix,
                     pc_ctx_t *ctx)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)object, key, value)
    {
        bool found = false;
        for (const char *const *name = known; *name && !found; name++)
            found = strcmp(*name, key) == 0;
        if (!found)
            pc_drop(ctx, prefix, key);
    }
}

int pc_fields_run(pc_field_fn *const *fields, const json_t *in, json_t *out, pc_ctx_t *ctx,
                  char *error, size_t size)
{
    for (pc_field_fn *const *field = fields; *field; field++)
        if ((*field)(in, out, ctx, error, size))
            return -1;
    return 0;
}

void pc_add_text(json_t *parts, const char *text)
{
    if (text && *text)
        json_array_append_new(parts, json_pack("{s:s, s:s}", "type", "text", "text", text));
}

void pc_push_message(json_t *messages, const char *role, json_t *parts)
{
    json_t *last = json_array_get(messages, json_array_size(messages) - 1);
    if (!json_array_size(parts)) {
        json_decref(parts);
        return;
    }
    if (last && strcmp(json_string_value(json_object_get(last, "role")), role) == 0)
        json_array_extend(json_object_get(last, "content"), parts);
    else
        json_array_append_new(messages, json_pack("{s:s, s:O}", "role", role, "content", parts));
    json_decref(parts);
}

json_t *pc_media_from_url(const char *url)
{
    if (!url || !*url)
        return NULL;
    if (strncmp(url, "data:", 5) == 0) {
        const char *comma = strchr(url, ',');
        const char *base64 = comma ? strstr(url, ";base64") : NULL;
        if (comma && base64 && base64 < comma && base64 > url + 5)
            return json_pack("{s:s, s:s%, s:s}", "type", "media", "mime", url + 5,
                             (size_t)(base64 - url - 5), "data", comma + 1);
    }
    return json_pack("{s:s, s:s}", "type", "media", "url", url);
}

char *pc_media_to_url(const json_t *part)
{
    const char *data = json_string_value(json_object_get(part, "data"));
    const char *mime = json_string_value(json_object_get(part, "mime"));
    if (data) {
        char *url = NULL;
        if (asprintf(&url, "data:%s;base64,%s", mime ? mime : "application/octet-stream", data) < 0)
            return NULL;
        return url;
    }
    const char *url = json_string_value(json_object_get(part, "url"));
    return url ? strdup(url) : NULL;
}

char *pc_dump(const json_t *value)
{
    if (!value)
        return strdup("{}");
    return json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
}

json_t *pc_parse_arguments(const char *text, size_t size)
{
    size_t start = 0;
    while (start < size && isspace((unsigned char)text[start]))
        start++;
    if (start == size)
        return json_object();
    json_t *value = json_loadb(text + start, size - start, 0, NULL);
    if (!json_is_object(value)) {
        json_decref(value);
        return NULL;
    }
    return value;
}

json_t *pc_schema_lower_types(const json_t *schema)
{
    if (json_is_object(schema)) {
        json_t *copy = json_object();
        const char *key;
        json_t *value;
        json_object_foreach((json_t *)schema, key, value)
        {
            if (strcmp(key, "type") == 0 && json_is_string(value)) {
                char lower[32];
                snprintf(lower, sizeof lower, "%s", json_string_value(value));
                for (char *c = lower; *c; c++)
                    *c = (char)tolower((unsigned char)*c);
                json_object_set_new(copy, key, json_string(lower));
            } else
                json_object_set_new(copy, key, pc_schema_lower_types(value));
        }
        return copy;
    }
    if (json_is_array(schema)) {
        json_t *copy = json_array();
        size_t index;
        json_t *value;
        json_array_foreach(schema, index, value)
            json_array_append_new(copy, pc_schema_lower_types(value));
        return copy;
    }
    return json_deep_copy(schema);
}

//  Budgets chosen inside every provider's documented range (Anthropic's
//  minimum is 1024; Gemini 2.5 Flash's maximum 24576).
int64_t pc_effort_to_budget(const char *effort)
{
    if (!effort)
        return 0;
    if (strcmp(effort, "minimal") == 0 || strcmp(effort, "low") == 0)
        return 1024;
    if (strcmp(effort, "medium") == 0)
        return 8192;
    if (strcmp(effort, "high") == 0)
        return 24576;
    return 0;
}

const char *pc_budget_to_effort(int64_t budget)
{
    if (budget <= 0)
        return NULL;
    if (budget <= 2048)
        return "low";
    if (budget <= 12288)
        return "medium";
    return "high";
}

void pc_append(zchunk_t *out, const char *text)
{
    zchunk_extend(out, text, strlen(text));
}

int pc_sse(zchunk_t *out, const char *name, json_t *data)
{
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (!text)
        return -1;
    if (name) {
        pc_append(out, "event: ");
        pc_append(out, name);
        pc_append(out, "\n");
    }
    pc_append(out, "data: ");
    pc_append(out, text);
    pc_append(out, "\n\n");
    free(text);
    return 0;
}

static uint64_t s_prompt(const proto_usage_t *usage)
{
    return usage->tokens_in + usage->tokens_cache_read + usage->tokens_cache_write;
}

json_t *pc_usage_openai(const proto_usage_t *usage, uint64_t reasoning)
{
    uint64_t prompt = s_prompt(usage);
    return json_pack("{s:I, s:I, s:I, s:{s:I}, s:{s:I}}", "prompt_tokens", (json_int_t)prompt,
                     "completion_tokens", (json_int_t)usage->tokens_out, "total_tokens",
                     (json_int_t)(prompt + usage->tokens_out), "prompt_tokens_details",
                     "cached_tokens", (json_int_t)usage->tokens_cache_read,
                     "completion_tokens_details", "reasoning_tokens", (json_int_t)reasoning);
}

json_t *pc_usage_responses(const proto_usage_t *usage, uint64_t reasoning)
{
    uint64_t prompt = s_prompt(usage);
    return json_pack("{s:I, s:{s:I}, s:I, s:{s:I}, s:I}", "input_tokens", (json_int_t)prompt,
                     "input_tokens_details", "cached_tokens", (json_int_t)usage->tokens_cache_read,
                     "output_tokens", (json_int_t)usage->tokens_out, "output_tokens_details",
                     "reasoning_tokens", (json_int_t)reasoning, "total_tokens",
                     (json_int_t)(prompt + usage->tokens_out));
}

json_t *pc_usage_anthropic(const proto_usage_t *usage)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "input_tokens", (json_int_t)usage->tokens_in,
                     "cache_creation_input_tokens", (json_int_t)usage->tokens_cache_write,
                     "cache_read_input_tokens", (json_int_t)usage->tokens_cache_read,
                     "output_tokens", (json_int_t)usage->tokens_out);
}

json_t *pc_usage_gemini(const proto_usage_t *usage, uint64_t reasoning)
{
    uint64_t prompt = s_prompt(usage);
    uint64_t thoughts = reasoning <= usage->tokens_out ? reasoning : 0;
    json_t *meta = json_pack("{s:I, s:I, s:I}", "promptTokenCount", (json_int_t)prompt,
                             "candidatesTokenCount", (json_int_t)(usage->tokens_out - thoughts),
                             "totalTokenCount", (json_int_t)(prompt + usage->tokens_out));
    //  Gemini leaves these out when they are zero.
    if (usage->tokens_cache_read)
        json_object_set_new(meta, "cachedContentTokenCount",
                            json_integer((json_int_t)usage->tokens_cache_read));
    if (thoughts)
        json_object_set_new(meta, "thoughtsTokenCount", json_integer((json_int_t)thoughts));
    return meta;
}

void pc_make_id(char *id, size_t size, const char *prefix, const char *seed, int number)
{
    static unsigned long counter;
    char tail[96];
    size_t used = 0;
    //  Only characters every protocol accepts in ids (Anthropic tool ids
    //  must match ^[a-zA-Z0-9_-]+$).
    //  An upstream id that already has the prefix is not prefixed twice.
    if (seed && *prefix && strncmp(seed, prefix, strlen(prefix)) == 0)
        seed += strlen(prefix);
    for (const char *c = seed ? seed : ""; *c && used + 1 < sizeof tail; c++)
        if (isalnum((unsigned char)*c) || *c == '_' || *c == '-')
            tail[used++] = *c;
    tail[used] = 0;
    if (!used)
        snprintf(tail, sizeof tail, "%lx%lx", (unsigned long)time(NULL), ++counter);
    if (number >= 0)
        snprintf(id, size, "%s%s_%d", prefix, tail, number);
    else
        snprintf(id, size, "%s%s", prefix, tail);
}

//  ---------------------------------------------------------------------------
//  Requests, answers, errors

json_t *proto_convert_request(int client_protocol, int upstream_protocol, const json_t *request,
                              const char *upstream_model, bool stream, char *error,
                              size_t error_size)
{
    return proto_convert_request_policy(client_protocol, upstream_protocol, request, upstream_model,
                                        stream, false, NULL, error, error_size);
}

//  Joins the names of an array of strings with ", " into text.
static void s_join(const json_t *names, char *text, size_t size)
{
    size_t used = 0;
    size_t index;
    json_t *item;
    *text = 0;
    json_array_foreach(names, index, item)
    {
        int wrote =
            snprintf(text + used, size - used, "%s%s", index ? ", " : "", json_string_value(item));
        if (wrote < 0 || (size_t)wrote >= size - used)
            break;
        used += (size_t)wrote;
    }
}

json_t *proto_convert_request_policy(int client_protocol, int upstream_protocol,
                                     const json_t *request, const char *upstream_model, bool stream,
                                     bool strict, json_t *dropped, char *error, size_t error_size)
{
    const pc_codec_t *client = s_codec(client_protocol);
    const pc_codec_t *upstream = s_codec(upstream_protocol);
    if (!client || !upstream)
        return pc_fail(error, error_size, "this API pair is not supported");
    if (!json_is_object(request))
        return pc_fail(error, error_size, "the request body must be a JSON object");
    pc_ctx_t ctx = {client, json_array()};
    json_t *body = NULL;
    json_t *ir = client->request_read(request, stream, &ctx, error, error_size);
    if (ir) {
        json_object_set_new(ir, "stream", json_boolean(stream));
        body = upstream->request_write(ir, upstream_model ? upstream_model : "", &ctx, error,
                                       error_size);
        json_decref(ir);
    }
    if (body && strict && json_array_size(ctx.dropped)) {
        //  A strict provider or model takes nothing less than the whole
        //  request: what would be dropped is refused instead.
        char names[512];
        s_join(ctx.dropped, names, sizeof names);
        json_decref(body);
        body = pc_fail(error, error_size,
                       "%s field(s) %s cannot be expressed for %s %s upstream; the provider or "
                       "model is strict, so they are refused instead of dropped",
                       client->name, names,
                       upstream->protocol == PROTO_PROTOCOL_OPENAI ||
                               upstream->protocol == PROTO_PROTOCOL_OPENAI_RESPONSES ||
                               upstream->protocol == PROTO_PROTOCOL_ANTHROPIC
                           ? "an"
                           : "a",
                       upstream->name);
    }
    if (body && dropped)
        json_array_extend(dropped, ctx.dropped);
    json_decref(ctx.dropped);
    return body;
}

bool proto_convert_client_wants_usage(int client_protocol, const json_t *request)
{
    if (client_protocol != PROTO_PROTOCOL_OPENAI)
        return true;
    return json_is_true(
        json_object_get(json_object_get(request, "stream_options"), "include_usage"));
}

int proto_convert_upstream_path(int upstream_protocol, const char *model, bool stream, char *path,
                                size_t path_size)
{
    int size;
    switch (upstream_protocol) {
    case PROTO_PROTOCOL_OPENAI:
        size = snprintf(path, path_size, "/v1/chat/completions");
        break;
    case PROTO_PROTOCOL_OPENAI_RESPONSES:
        size = snprintf(path, path_size, "/v1/responses");
        break;
    case PROTO_PROTOCOL_ANTHROPIC:
        size = snprintf(path, path_size, "/v1/messages");
        break;
    case PROTO_PROTOCOL_GEMINI:
        //  Model names are ids ([a-z0-9.-]); anything that would need
        //  escaping in a path is refused rather than sent.
        for (const char *c = model ? model : ""; *c; c++)
            if (!isalnum((unsigned char)*c) && !strchr("-._", *c))
                return -1;
        if (!model || !*model)
            return -1;
        size = snprintf(path, path_size, "/v1beta/models/%s:%s", model,
                        stream ? "streamGenerateContent?alt=sse" : "generateContent");
        break;
    default:
        return -1;
    }
    return size < 0 || (size_t)size >= path_size ? -1 : 0;
}

json_t *proto_convert_response(int upstream_protocol, int client_protocol, const json_t *response,
                               const char *client_model, proto_usage_t *usage_out, char *error,
                               size_t error_size)
{
    const pc_codec_t *client = s_codec(client_protocol);
    const pc_codec_t *upstream = s_codec(upstream_protocol);
    if (!client || !upstream)
        return pc_fail(error, error_size, "this API pair is not supported");
    if (!json_is_object(response))
        return pc_fail(error, error_size, "the upstream answer is not a JSON object");
    proto_usage_t usage;
    memset(&usage, 0, sizeof usage);
    proto_usage_from_json(upstream_protocol, response, NULL, false, &usage);
    json_t *ir = upstream->response_read(response, &usage, error, error_size);
    if (!ir)
        return NULL;
    json_t *body = client->response_write(ir, client_model ? client_model : "", &usage);
    json_decref(ir);
    if (usage_out)
        *usage_out = usage;
    return body;
}

char *proto_convert_error_body(int upstream_protocol, int client_protocol, int status,
                               const char *body, size_t size)
{
    const pc_codec_t *upstream = s_codec(upstream_protocol);
    json_t *json = body && size ? json_loadb(body, size, 0, NULL) : NULL;
    const char *message = upstream && json ? upstream->error_message(json) : NULL;
    char fallback[96];
    if (!message || !*message) {
        snprintf(fallback, sizeof fallback, "the upstream answered HTTP %d", status);
        message = fallback;
    }
    char *result = proto_error_body(client_protocol, status, NULL, message);
    json_decref(json);
    return result;
}

//  ---------------------------------------------------------------------------
//  Streams

proto_convert_stream_t *proto_convert_stream_new(int upstream_protocol, int client_protocol,
                                                 const char *client_model, bool client_wants_usage)
{
    if (!proto_convert_supported(client_protocol, upstream_protocol))
        return NULL;
    proto_convert_stream_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->up_protocol = upstream_protocol;
    self->cl_protocol = client_protocol;
    self->model = strdup(client_model ? client_model : "");
    self->client_usage = client_wants_usage;
    self->created = (int64_t)time(NULL);
    self->up = json_object();
    self->cl = json_object();
    return self;
}

void proto_convert_stream_destroy(proto_convert_stream_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    proto_convert_stream_t *self = *self_p;
    free(self->model);
    free(self->stop_sequence);
    json_decref(self->up);
    json_decref(self->cl);
    free(self);
    *self_p = NULL;
}

void proto_convert_stream_set_json_array(proto_convert_stream_t *self, bool json_array)
{
    self->json_array = json_array;
}

int pc_stream_fail(proto_convert_stream_t *self, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(self->error, sizeof self->error, format, args);
    va_end(args);
    self->failed = true;
    return -1;
}

static int s_write(proto_convert_stream_t *self, pc_event_t *event)
{
    if (self->failed)
        return -1;
    const pc_codec_t *client = s_codec(self->cl_protocol);
    if (client->stream_write(self, event))
        return pc_stream_fail(self, "%s", *self->error ? self->error : "conversion failed");
    return 0;
}

int pc_start(proto_convert_stream_t *self, const char *id)
{
    if (id && *id && !*self->id)
        snprintf(self->id, sizeof self->id, "%s", id);
    if (self->started)
        return 0;
    self->started = true;
    pc_event_t event = {.kind = PC_EV_START};
    return s_write(self, &event);
}

int pc_close(proto_convert_stream_t *self)
{
    self->open_pending = false;
    if (self->open == PC_BLOCK_NONE)
        return 0;
    pc_event_t event = {.kind = PC_EV_BLOCK_STOP, .block = self->open, .index = self->open_index};
    self->open = PC_BLOCK_NONE;
    return s_write(self, &event);
}

int pc_block(proto_convert_stream_t *self, pc_block_t kind)
{
    if (pc_close(self))
        return -1;
    self->open_pending = true;
    self->pending_kind = kind;
    return 0;
}

static int s_open(proto_convert_stream_t *self, pc_block_t kind, const char *id, const char *name)
{
    if (pc_start(self, NULL) || pc_close(self))
        return -1;
    self->open = kind;
    self->open_index = self->blocks++;
    pc_event_t event = {.kind = PC_EV_BLOCK_START,
                        .block = kind,
                        .index = self->open_index,
                        .tool_index = kind == PC_BLOCK_TOOL ? self->tools++ : -1,
                        .id = id,
                        .name = name};
    return s_write(self, &event);
}

int pc_delta(proto_convert_stream_t *self, pc_block_t kind, const char *text, size_t size)
{
    if (!size || self->ended)
        return 0;
    if (self->open != kind && s_open(self, kind, NULL, NULL))
        return -1;
    self->open_pending = false;
    self->content_bytes += size;
    pc_event_t event = {.kind = PC_EV_DELTA,
                        .block = kind,
                        .index = self->open_index,
                        .tool_index = -1,
                        .text = text,
                        .size = size};
    return s_write(self, &event);
}

int pc_tool(proto_convert_stream_t *self, const char *id, const char *name)
{
    if (self->ended)
        return 0;
    if (!name || !*name)
        return pc_stream_fail(self, "the upstream started a tool call without a name");
    char made[64];
    if (!id || !*id) {
        pc_make_id(made, sizeof made, "call_", self->id, self->tools);
        id = made;
    }
    return s_open(self, PC_BLOCK_TOOL, id, name);
}

int pc_tool_args(proto_convert_stream_t *self, const char *text, size_t size)
{
    if (self->ended)
        return 0;
    if (self->open != PC_BLOCK_TOOL)
        return pc_stream_fail(self, "the upstream sent tool arguments outside a tool call");
    if (!size)
        return 0;
    self->content_bytes += size;
    pc_event_t event = {.kind = PC_EV_DELTA,
                        .block = PC_BLOCK_TOOL,
                        .index = self->open_index,
                        .tool_index = self->tools - 1,
                        .text = text,
                        .size = size};
    return s_write(self, &event);
}

void pc_finish(proto_convert_stream_t *self, pc_stop_t stop, const char *sequence)
{
    if (stop == PC_STOP_NONE)
        return;
    //  A turn that called tools stays a tool turn even when the upstream
    //  calls it a plain stop (Gemini says STOP after function calls).
    if (!(self->stop == PC_STOP_TOOL && stop == PC_STOP_END))
        self->stop = stop;
    if (sequence) {
        free(self->stop_sequence);
        self->stop_sequence = strdup(sequence);
    }
}

int pc_end(proto_convert_stream_t *self)
{
    self->upstream_done = true;
    if (self->ended)
        return 0;
    if (pc_start(self, NULL) || pc_close(self))
        return -1;
    if (self->stop == PC_STOP_NONE)
        self->stop = self->tools ? PC_STOP_TOOL : PC_STOP_END;
    self->ended = true;
    pc_event_t event = {.kind = PC_EV_END};
    return s_write(self, &event);
}

int proto_convert_stream_event(proto_convert_stream_t *self, const char *event_name,
                               const char *data, size_t size, zchunk_t *out)
{
    assert(self);
    if (self->failed)
        return -1;
    const char *name = event_name ? event_name : "";
    size_t start = 0;
    while (start < size && isspace((unsigned char)data[start]))
        start++;
    if (start == size)
        return 0; //  keep-alive without content
    json_t *json = json_loadb(data + start, size - start, 0, NULL);
    if (!json) {
        bool done = self->up_protocol == PROTO_PROTOCOL_OPENAI && size - start >= 6 &&
                    memcmp(data + start, "[DONE]", 6) == 0;
        if (!done)
            return pc_stream_fail(self, "the upstream sent an event that is not JSON");
    } else if (!json_is_object(json)) {
        json_decref(json);
        return pc_stream_fail(self, "the upstream sent an event that is not a JSON object");
    } else
        proto_usage_from_json(self->up_protocol, json, name, true, &self->usage);
    self->out = out;
    *self->error = 0;
    int rc = s_codec(self->up_protocol)->stream_read(self, name, json);
    self->out = NULL;
    json_decref(json);
    if (rc) {
        self->failed = true;
        if (!*self->error)
            snprintf(self->error, sizeof self->error, "the upstream stream broke its protocol");
    }
    return rc ? -1 : 0;
}

int proto_convert_stream_finish(proto_convert_stream_t *self, bool upstream_completed,
                                zchunk_t *out)
{
    assert(self);
    self->out = out;
    int rc = 0;
    if (!self->failed && self->upstream_done && upstream_completed)
        rc = pc_end(self);
    else {
        if (!self->failed)
            snprintf(self->error, sizeof self->error, "the upstream stream ended early");
        rc = -1;
    }
    if (rc && !json_is_true(json_object_get(self->cl, "error_sent"))) {
        json_object_set_new(self->cl, "error_sent", json_true());
        char *event = proto_error_event(self->cl_protocol, 502, NULL, self->error);
        if (self->cl_protocol == PROTO_PROTOCOL_GEMINI && self->json_array && event) {
            //  An array stream carries the error as its last element.
            char *body = proto_error_body(self->cl_protocol, 502, NULL, self->error);
            if (!json_is_true(json_object_get(self->cl, "array_open")))
                pc_append(out, "[");
            else if (json_is_true(json_object_get(self->cl, "array_items")))
                pc_append(out, ",\r\n");
            pc_append(out, body ? body : "{}");
            pc_append(out, "]");
            free(body);
        } else if (event)
            pc_append(out, event);
        free(event);
    }
    self->out = NULL;
    return rc ? -1 : 0;
}

void proto_convert_stream_usage(proto_convert_stream_t *self, proto_usage_t *usage)
{
    *usage = self->usage;
}

bool proto_convert_stream_complete(proto_convert_stream_t *self)
{
    return self->upstream_done;
}

size_t proto_convert_stream_content_bytes(proto_convert_stream_t *self)
{
    return self->content_bytes;
}

const char *proto_convert_stream_error(proto_convert_stream_t *self)
{
    return self->error;
}
