/*  mock_shape - the mock's answers in each API's own JSON shapes */

#include "mock_shape.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

//  Error body in the API's own shape. An unknown URL is not a missing model, so it carries
//  no OpenAI "model_not_found" code.
static json_t *s_error_json(mock_proto_t proto, int status, const char *message, bool bad_url)
{
    if (proto == P_ANTHROPIC) {
        const char *type = status == 400                    ? "invalid_request_error"
                           : status == 401                  ? "authentication_error"
                           : status == 403                  ? "permission_error"
                           : status == 404                  ? "not_found_error"
                           : status == 413                  ? "request_too_large"
                           : status == 429                  ? "rate_limit_error"
                           : status == 503 || status == 529 ? "overloaded_error"
                           : status >= 500                  ? "api_error"
                                                            : "invalid_request_error";
        return json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type", type, "message",
                         message);
    }
    if (proto == P_GEMINI) {
        const char *state = status == 400                    ? "INVALID_ARGUMENT"
                            : status == 401                  ? "UNAUTHENTICATED"
                            : status == 403                  ? "PERMISSION_DENIED"
                            : status == 404                  ? "NOT_FOUND"
                            : status == 429                  ? "RESOURCE_EXHAUSTED"
                            : status == 502 || status == 503 ? "UNAVAILABLE"
                            : status == 504                  ? "DEADLINE_EXCEEDED"
                            : status >= 500                  ? "INTERNAL"
                                                             : "INVALID_ARGUMENT";
        return json_pack("{s:{s:i, s:s, s:s}}", "error", "code", status, "message", message,
                         "status", state);
    }
    const char *type = status == 429   ? "requests"
                       : status >= 500 ? "server_error"
                                       : "invalid_request_error";
    const char *code = status == 401               ? "invalid_api_key"
                       : status == 403             ? "permission_denied"
                       : status == 404 && !bad_url ? "model_not_found"
                       : status == 413             ? "request_too_large"
                       : status == 429             ? "rate_limit_exceeded"
                                                   : NULL;
    return json_pack("{s:{s:s, s:s, s:n, s:o}}", "error", "message", message, "type", type, "param",
                     "code", code ? json_string(code) : json_null());
}

void mock_shape_json(mock_req_t *req, int status, json_t *object)
{
    free(req->reply);
    req->status = status;
    req->ctype = "application/json";
    //  Embeddings are float32 upstream; nine significant digits round-trip a float.
    req->reply = object ? json_dumps(object, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    req->reply_len = req->reply ? strlen(req->reply) : 0;
    req->stream = false;
    json_decref(object);
}

void mock_shape_error(mock_req_t *req, int status, const char *message)
{
    mock_shape_json(req, status,
                    s_error_json(req->proto, status, message, req->route == R_NOT_FOUND));
}

json_t *mock_shape_chat_usage(mock_req_t *req)
{
    return json_pack("{s:i, s:i, s:i, s:{s:i, s:i}, s:{s:i, s:i}}", "prompt_tokens",
                     req->prompt_tokens, "completion_tokens", req->completion_tokens,
                     "total_tokens", req->prompt_tokens + req->completion_tokens,
                     "prompt_tokens_details", "cached_tokens", req->cached_tokens, "audio_tokens",
                     0, "completion_tokens_details", "reasoning_tokens", 0, "audio_tokens", 0);
}

static json_t *s_resp_usage(mock_req_t *req)
{
    return json_pack("{s:i, s:{s:i}, s:i, s:{s:i}, s:i}", "input_tokens", req->prompt_tokens,
                     "input_tokens_details", "cached_tokens", req->cached_tokens, "output_tokens",
                     req->completion_tokens, "output_tokens_details", "reasoning_tokens", 0,
                     "total_tokens", req->prompt_tokens + req->completion_tokens);
}

//  Anthropic's input_tokens excludes cache reads and writes, which are
//  reported on their own; cache_creation splits the writes by lifetime.
static json_t *s_anth_usage(mock_req_t *req, int output_tokens)
{
    return json_pack("{s:i, s:i, s:i, s:{s:i, s:i}, s:i}", "input_tokens",
                     req->prompt_tokens - req->cached_tokens, "cache_creation_input_tokens",
                     req->cache_write_5m + req->cache_write_1h, "cache_read_input_tokens",
                     req->cached_tokens, "cache_creation", "ephemeral_5m_input_tokens",
                     req->cache_write_5m, "ephemeral_1h_input_tokens", req->cache_write_1h,
                     "output_tokens", output_tokens);
}

static json_t *s_gem_usage(mock_req_t *req, int candidates)
{
    return json_pack("{s:i, s:i, s:i, s:i}", "promptTokenCount", req->prompt_tokens,
                     "candidatesTokenCount", candidates, "totalTokenCount",
                     req->prompt_tokens + candidates, "cachedContentTokenCount",
                     req->cached_tokens);
}

json_t *mock_shape_chat_tool_call(mock_req_t *req, bool with_index, const char *arguments)
{
    json_t *call = json_object();
    //  Streamed tool_calls deltas are addressed by index; the final message has none.
    if (with_index)
        json_object_set_new(call, "index", json_integer(0));
    json_object_set_new(call, "id", json_sprintf("call_mock%lu", req->seq));
    json_object_set_new(call, "type", json_string("function"));
    json_object_set_new(call, "function",
                        json_pack("{s:s, s:s}", "name", req->tool_name, "arguments", arguments));
    return call;
}

json_t *mock_shape_resp_item(mock_req_t *req, bool done)
{
    const char *status = done ? "completed" : "in_progress";
    if (req->tool)
        return json_pack("{s:o, s:s, s:s, s:s, s:o, s:s}", "id",
                         json_sprintf("fc_mock%lu", req->seq), "type", "function_call", "status",
                         status, "arguments", done ? req->full_text : "", "call_id",
                         json_sprintf("call_mock%lu", req->seq), "name", req->tool_name);
    json_t *content = json_array();
    if (done)
        json_array_append_new(content, json_pack("{s:s, s:s, s:[]}", "type", "output_text", "text",
                                                 req->full_text, "annotations"));
    return json_pack("{s:o, s:s, s:s, s:s, s:o}", "id", json_sprintf("msg_mock%lu", req->seq),
                     "type", "message", "status", status, "role", "assistant", "content", content);
}

json_t *mock_shape_resp_object(mock_req_t *req, bool done)
{
    json_t *output = json_array();
    if (done)
        json_array_append_new(output, mock_shape_resp_item(req, true));
    return json_pack("{s:o, s:s, s:I, s:s, s:n, s:n, s:n, s:s, s:o, s:b, s:s, s:[], s:o}", "id",
                     json_sprintf("resp_mock%lu", req->seq), "object", "response", "created_at",
                     (json_int_t)req->created, "status", done ? "completed" : "in_progress",
                     "error", "incomplete_details", "instructions", "model", req->model, "output",
                     output, "parallel_tool_calls", 1, "tool_choice", "auto", "tools", "usage",
                     done ? s_resp_usage(req) : json_null());
}

//  The tool call's arguments as an object (they are JSON text in full_text).
static json_t *s_tool_input(mock_req_t *req)
{
    json_t *input = json_loads(req->full_text ? req->full_text : "", 0, NULL);
    if (!json_is_object(input)) {
        json_decref(input);
        input = json_object();
    }
    return input;
}

json_t *mock_shape_anth_block(mock_req_t *req, bool done)
{
    if (req->tool)
        return json_pack("{s:s, s:o, s:s, s:o}", "type", "tool_use", "id",
                         json_sprintf("toolu_mock%lu", req->seq), "name", req->tool_name, "input",
                         done ? s_tool_input(req) : json_object());
    return json_pack("{s:s, s:s}", "type", "text", "text", done ? req->full_text : "");
}

json_t *mock_shape_anth_message(mock_req_t *req, bool done)
{
    json_t *content = json_array();
    if (done)
        json_array_append_new(content, mock_shape_anth_block(req, true));
    return json_pack(
        "{s:o, s:s, s:s, s:s, s:o, s:o, s:n, s:o}", "id", json_sprintf("msg_mock%lu", req->seq),
        "type", "message", "role", "assistant", "model", req->model, "content", content,
        "stop_reason", done ? json_string(req->tool ? "tool_use" : "end_turn") : json_null(),
        "stop_sequence", "usage", s_anth_usage(req, done ? req->completion_tokens : 1));
}

//  One GenerateContentResponse. parts is stolen; finish is NULL for a non-final chunk.
json_t *mock_shape_gem_response(mock_req_t *req, json_t *parts, const char *finish, int candidates)
{
    json_t *candidate =
        json_pack("{s:{s:o, s:s}, s:i}", "content", "parts", parts, "role", "model", "index", 0);
    if (finish)
        json_object_set_new(candidate, "finishReason", json_string(finish));
    return json_pack("{s:[o], s:o, s:s, s:o}", "candidates", candidate, "usageMetadata",
                     s_gem_usage(req, candidates), "modelVersion", req->model, "responseId",
                     json_sprintf("mock-%lu", req->seq));
}

json_t *mock_shape_gem_tool_parts(mock_req_t *req)
{
    return json_pack("[{s:{s:s, s:o}}]", "functionCall", "name", req->tool_name, "args",
                     s_tool_input(req));
}

//  Whole non-streamed answer for a generation route.
json_t *mock_shape_full_answer(mock_req_t *req)
{
    switch (req->route) {
    case R_CHAT: {
        json_t *message = json_pack("{s:s, s:s?, s:n}", "role", "assistant", "content",
                                    req->tool ? NULL : req->full_text, "refusal");
        if (req->tool)
            json_object_set_new(
                message, "tool_calls",
                json_pack("[o]", mock_shape_chat_tool_call(req, false, req->full_text)));
        return json_pack("{s:o, s:s, s:I, s:s, s:s, s:[{s:i, s:o, s:n, s:s}], s:o}", "id",
                         json_sprintf("chatcmpl-mock%lu", req->seq), "object", "chat.completion",
                         "created", (json_int_t)req->created, "model", req->model,
                         "system_fingerprint", "fp_mock", "choices", "index", 0, "message", message,
                         "logprobs", "finish_reason", req->tool ? "tool_calls" : "stop", "usage",
                         mock_shape_chat_usage(req));
    }
    case R_RESPONSES:
        return mock_shape_resp_object(req, true);
    case R_MESSAGES:
        return mock_shape_anth_message(req, true);
    default:
        return mock_shape_gem_response(req,
                                       req->tool ? mock_shape_gem_tool_parts(req)
                                                 : json_pack("[{s:s}]", "text", req->full_text),
                                       "STOP", req->completion_tokens);
    }
}

json_t *mock_shape_chat_chunk(mock_req_t *req, json_t *delta, const char *finish)
{
    json_t *chunk =
        json_pack("{s:o, s:s, s:I, s:s, s:s, s:[{s:i, s:o, s:n, s:o}]}", "id",
                  json_sprintf("chatcmpl-mock%lu", req->seq), "object", "chat.completion.chunk",
                  "created", (json_int_t)req->created, "model", req->model, "system_fingerprint",
                  "fp_mock", "choices", "index", 0, "delta", delta, "logprobs", "finish_reason",
                  finish ? json_string(finish) : json_null());
    //  With include_usage every chunk carries "usage": null until the final usage chunk.
    if (req->include_usage)
        json_object_set_new(chunk, "usage", json_null());
    return chunk;
}

json_t *mock_shape_models(mock_upstream_t *self, mock_req_t *req, const char *only)
{
    json_t *list = json_array();
    for (size_t index = 0; index < self->n_models; index++) {
        const char *id = self->models[index];
        if (only && strcmp(only, id))
            continue;
        json_t *model;
        if (req->proto == P_GEMINI)
            model = json_pack("{s:o, s:s, s:s, s:s, s:s, s:i, s:i, s:[s, s, s]}", "name",
                              json_sprintf("models/%s", id), "baseModelId", id, "version", "001",
                              "displayName", id, "description", "Tollgate mock model",
                              "inputTokenLimit", 1048576, "outputTokenLimit", 8192,
                              "supportedGenerationMethods", "generateContent",
                              "streamGenerateContent", "countTokens");
        else if (req->proto == P_ANTHROPIC)
            model = json_pack("{s:s, s:s, s:s, s:s}", "type", "model", "id", id, "display_name", id,
                              "created_at", "2024-10-22T00:00:00Z");
        else
            model = json_pack("{s:s, s:s, s:i, s:s}", "id", id, "object", "model", "created",
                              1700000000, "owned_by", "tollgate-mock");
        if (only)
            return model;
        json_array_append_new(list, model);
    }
    if (only) {
        json_decref(list);
        return NULL;
    }
    if (req->proto == P_GEMINI)
        return json_pack("{s:o}", "models", list);
    if (req->proto == P_ANTHROPIC) {
        size_t size = json_array_size(list);
        return json_pack(
            "{s:o, s:b, s:o, s:o}", "data", list, "has_more", 0, "first_id",
            size ? json_deep_copy(json_object_get(json_array_get(list, 0), "id")) : json_null(),
            "last_id",
            size ? json_deep_copy(json_object_get(json_array_get(list, size - 1), "id"))
                 : json_null());
    }
    return json_pack("{s:s, s:o}", "object", "list", "data", list);
}

json_t *mock_shape_images(mock_req_t *req, json_t *body)
{
    (void)req;
    //  A transparent 1x1 PNG.
    static const char png[] = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYP"
                              "hfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
    json_t *wanted = json_object_get(body, "n");
    json_int_t n = json_is_integer(wanted) ? json_integer_value(wanted) : 1;
    n = n < 1 ? 1 : n > 10 ? 10 : n;
    const char *format = json_string_value(json_object_get(body, "response_format"));
    bool url = format && !strcmp(format, "url");
    json_t *data = json_array();
    for (json_int_t i = 0; i < n; i++) {
        char link[64];
        snprintf(link, sizeof link, "https://mock.test/images/%d.png", (int)i);
        json_array_append_new(data, url ? json_pack("{s:s}", "url", link)
                                        : json_pack("{s:s}", "b64_json", png));
    }
    json_t *answer = json_pack("{s:I, s:o}", "created", (json_int_t)time(NULL), "data", data);
    const char *model = json_string_value(json_object_get(body, "model"));
    if (model && !strncmp(model, "gpt-image", 9)) {
        const char *prompt = json_string_value(json_object_get(body, "prompt"));
        json_int_t in = prompt ? (json_int_t)(strlen(prompt) + 3) / 4 : 0;
        json_object_set_new(answer, "usage",
                            json_pack("{s:I, s:I, s:I, s:{s:I, s:i}}", "input_tokens", in,
                                      "output_tokens", 272 * n, "total_tokens", in + 272 * n,
                                      "input_tokens_details", "text_tokens", in, "image_tokens",
                                      0));
    }
    return answer;
}

//  Deterministic small unit vectors: seeded from the input's text, so equal inputs embed
//  equally across runs.
json_t *mock_shape_embeddings(mock_req_t *req, json_t *body)
{
    json_t *input = json_object_get(body, "input");
    json_t *inputs = json_array();
    if (json_is_array(input) && json_array_size(input) &&
        !json_is_integer(json_array_get(input, 0)))
        json_array_extend(inputs, input);
    else
        json_array_append(inputs, input);
    int dims = 8;
    json_t *wanted = json_object_get(body, "dimensions");
    if (json_is_integer(wanted) && json_integer_value(wanted) > 0 &&
        json_integer_value(wanted) <= 4096)
        dims = (int)json_integer_value(wanted);
    const char *format = json_string_value(json_object_get(body, "encoding_format"));
    bool base64 = format && !strcmp(format, "base64");
    float *vector = calloc((size_t)dims, sizeof(*vector));
    json_t *data = json_array();
    size_t index;
    json_t *item;
    json_array_foreach(inputs, index, item)
    {
        char *text = json_dumps(item, JSON_COMPACT | JSON_ENCODE_ANY);
        uint64_t state = 1469598103934665603ull; //  FNV-1a
        for (const char *cursor = text ? text : ""; *cursor; cursor++)
            state = (state ^ (uint8_t)*cursor) * 1099511628211ull;
        free(text);
        double norm = 0;
        for (int dim = 0; dim < dims; dim++) {
            state ^= state << 13; //  xorshift64
            state ^= state >> 7;
            state ^= state << 17;
            vector[dim] = (float)((double)(state >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
            norm += (double)vector[dim] * vector[dim];
        }
        json_t *embedding;
        if (base64) {
            //  encoding_format=base64: little-endian float32 array, base64-encoded
            static const char alphabet[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            size_t size = (size_t)dims * 4;
            uint8_t *raw = malloc(size);
            char *encoded = malloc((size + 2) / 3 * 4 + 1);
            if (!raw || !encoded) {
                free(raw);
                free(encoded);
                continue;
            }
            for (int dim = 0; dim < dims; dim++) {
                float value = (float)(vector[dim] / sqrt(norm));
                uint32_t bits;
                memcpy(&bits, &value, 4);
                for (int byte = 0; byte < 4; byte++)
                    raw[dim * 4 + byte] = (uint8_t)(bits >> (8 * byte));
            }
            size_t out = 0;
            for (size_t at = 0; at < size; at += 3) {
                uint32_t triple = (uint32_t)raw[at] << 16;
                if (at + 1 < size)
                    triple |= (uint32_t)raw[at + 1] << 8;
                if (at + 2 < size)
                    triple |= raw[at + 2];
                encoded[out++] = alphabet[(triple >> 18) & 63];
                encoded[out++] = alphabet[(triple >> 12) & 63];
                encoded[out++] = at + 1 < size ? alphabet[(triple >> 6) & 63] : '=';
                encoded[out++] = at + 2 < size ? alphabet[triple & 63] : '=';
            }
            encoded[out] = 0;
            embedding = json_string(encoded);
            free(raw);
            free(encoded);
        } else {
            embedding = json_array();
            for (int dim = 0; dim < dims; dim++)
                json_array_append_new(embedding, json_real(vector[dim] / sqrt(norm)));
        }
        json_array_append_new(data, json_pack("{s:s, s:i, s:o}", "object", "embedding", "index",
                                              (int)index, "embedding", embedding));
    }
    free(vector);
    json_decref(inputs);
    return json_pack("{s:s, s:o, s:s, s:{s:i, s:i}}", "object", "list", "data", data, "model",
                     req->model, "usage", "prompt_tokens", req->prompt_tokens, "total_tokens",
                     req->prompt_tokens);
}
