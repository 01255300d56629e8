#include "ingress_parse.h"
#include "ingress_scan.h"
#include "proto_text.h"
#include "proto_check.h"
#include "proto_crypto.h"
#include "proto_loop.h"
#include "proto_msg.h"

#include <assert.h>
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool s_present(const char *text)
{
    return text && *text;
}

//  Strips the scheme from an Authorization value. Only Bearer carries a
//  client key; Basic and friends are someone else's business.
static const char *s_bearer(const char *authorization, size_t *length)
{
    if (strncasecmp(authorization, "Bearer", 6) != 0 ||
        (authorization[6] != ' ' && authorization[6] != '\t'))
        return NULL;
    const char *key = authorization + 6;
    while (*key == ' ' || *key == '\t')
        key++;
    size_t size = strlen(key);
    while (size && (key[size - 1] == ' ' || key[size - 1] == '\t'))
        size--;
    if (!size)
        return NULL;
    *length = size;
    return key;
}

//  True when a credential starts with the client key prefix in force or
//  the default one (keys made before a change of prefix keep theirs).
static bool s_ours(const char *key, size_t length, const char *prefix)
{
    const char *prefixes[] = {prefix, PROTO_CRYPTO_KEY_PREFIX_DEFAULT};
    for (int i = 0; i < 2; i++) {
        size_t size = prefixes[i] ? strlen(prefixes[i]) : 0;
        if (size && length > size && strncmp(key, prefixes[i], size) == 0)
            return true;
    }
    return false;
}

const char *ingress_parse_key(const char *authorization, const char *x_api_key,
                              const char *goog_api_key, const char *query_key, const char *prefix,
                              size_t *length, ingress_key_source_t *source)
{
    *source = INGRESS_KEY_NONE;
    *length = 0;
    const char *found[4] = {NULL};
    size_t lengths[4] = {0};
    if (s_present(authorization))
        found[0] = s_bearer(authorization, &lengths[0]);
    const char *plain[] = {x_api_key, goog_api_key, query_key};
    for (int i = 0; i < 3; i++)
        if (s_present(plain[i])) {
            found[i + 1] = plain[i];
            lengths[i + 1] = strlen(plain[i]);
        }
    const ingress_key_source_t sources[] = {INGRESS_KEY_BEARER, INGRESS_KEY_X_API_KEY,
                                            INGRESS_KEY_GOOG, INGRESS_KEY_QUERY};
    //  A client may carry someone else's credential beside ours (a proxy's
    //  bearer token, an SDK's placeholder): one with our prefix wins, then
    //  the first in the order above.
    int chosen = -1;
    for (int i = 0; i < 4 && chosen < 0; i++)
        if (found[i] && s_ours(found[i], lengths[i], prefix))
            chosen = i;
    for (int i = 0; i < 4 && chosen < 0; i++)
        if (found[i])
            chosen = i;
    if (chosen < 0)
        return NULL;
    *length = lengths[chosen];
    *source = sources[chosen];
    return found[chosen];
}

bool ingress_parse_request_id_valid(const char *text)
{
    if (!text)
        return false;
    size_t length = 0;
    for (const char *c = text; *c; c++, length++) {
        if (length == PROTO_MSG_RID_MAX)
            return false;
        if (!isalnum((unsigned char)*c) && *c != '.' && *c != '_' && *c != '-')
            return false;
    }
    return length > 0;
}

//  Microseconds since the epoch in the first 13 digits (good until 2112),
//  76 random bits after them. Time first because the id is the leading key
//  of usage and journal_requests: ids that grow put each batch's index
//  entries on the right-hand pages PostgreSQL already has in memory, where
//  random ones touch a page anywhere in the index, and once the index
//  outgrows memory that is a read per row. The random part alone keeps ids
//  unique across ingress instances and clock steps.
void ingress_parse_new_request_id(char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned long long wall_us = (unsigned long long)proto_loop_wall_us();
    for (int i = INGRESS_REQUEST_ID_TIME_HEX - 1; i >= 0; i--, wall_us >>= 4)
        out[i] = hex[wall_us & 0xf];
    char random[INGRESS_REQUEST_ID_RANDOM_HEX + 2];
    proto_crypto_random_hex(random, (INGRESS_REQUEST_ID_RANDOM_HEX + 1) / 2);
    memcpy(out + INGRESS_REQUEST_ID_TIME_HEX, random, INGRESS_REQUEST_ID_RANDOM_HEX);
    out[INGRESS_REQUEST_ID_HEX] = '\0';
}

void ingress_parse_client_request_id(const char *client_id, char *out)
{
    int prefix = (int)strnlen(client_id, INGRESS_CLIENT_ID_KEPT);
    memcpy(out, client_id, (size_t)prefix);
    out[prefix] = '.';
    proto_crypto_random_hex(out + prefix + 1, 8);
}

static bool s_lower_hex(const char *text, size_t length)
{
    bool nonzero = false;
    for (size_t i = 0; i < length; i++) {
        char c = text[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        nonzero |= c != '0';
    }
    return nonzero;
}

bool ingress_parse_traceparent_valid(const char *text)
{
    //  00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>; all-zero ids are invalid.
    if (!text || strlen(text) != 55 || strncmp(text, "00-", 3) != 0 || text[35] != '-' ||
        text[52] != '-')
        return false;
    if (!s_lower_hex(text + 3, 32) || !s_lower_hex(text + 36, 16))
        return false;
    return isxdigit((unsigned char)text[53]) && isxdigit((unsigned char)text[54]) &&
           !isupper((unsigned char)text[53]) && !isupper((unsigned char)text[54]);
}

void ingress_parse_traceparent(const char *incoming, char *out)
{
    //  00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>
    memcpy(out, "00-", 3);
    if (ingress_parse_traceparent_valid(incoming)) {
        //  We are a hop in the client's trace: keep its trace id and flags,
        //  and name ourselves as the parent of what follows.
        memcpy(out + 3, incoming + 3, 32);
        memcpy(out + 53, incoming + 53, 2);
    } else {
        proto_crypto_random_hex(out + 3, 16);
        memcpy(out + 53, "01", 2);
    }
    out[35] = '-';
    proto_crypto_random_hex(out + 36, 8);
    out[52] = '-';
    out[55] = '\0';
}

const char *ingress_parse_conversation_field(int protocol)
{
    switch (protocol) {
    case PROTO_PROTOCOL_OPENAI_RESPONSES:
    case PROTO_PROTOCOL_OPENAI_EMBEDDINGS:
        return "input";
    case PROTO_PROTOCOL_GEMINI:
        return "contents";
    case PROTO_PROTOCOL_OPENAI_IMAGES:
        return "prompt";
    default:
        return "messages";
    }
}

//  An image generation (OpenAI Images): a non-empty text prompt, n from 1 to
//  INGRESS_IMAGES_MAX (absent: 1), and no stream (partial images are not
//  relayed). Returns false with a message in error.
static bool s_images_ok(json_t *root, char *error, size_t error_size)
{
    json_t *prompt = json_object_get(root, "prompt");
    json_t *n = json_object_get(root, "n");
    if (!json_is_string(prompt) || json_string_length(prompt) == 0)
        snprintf(error, error_size, "Invalid 'prompt': expected a non-empty string");
    else if (n && !json_is_null(n) &&
             (!json_is_integer(n) || json_integer_value(n) < 1 ||
              json_integer_value(n) > INGRESS_IMAGES_MAX))
        snprintf(error, error_size, "Invalid 'n': expected an integer from 1 to %d",
                 INGRESS_IMAGES_MAX);
    else if (json_is_true(json_object_get(root, "stream")))
        snprintf(error, error_size,
                 "Invalid 'stream': streamed image generation is not supported; omit 'stream'");
    else
        return true;
    return false;
}

//  Checks the conversation field; returns false with a message in error.
static bool s_conversation_ok(int protocol, bool count_tokens, json_t *root, char *error,
                              size_t error_size)
{
    const char *field = ingress_parse_conversation_field(protocol);
    json_t *value = json_object_get(root, field);
    //  Gemini's countTokens takes either contents or a whole
    //  generateContentRequest.
    if (protocol == PROTO_PROTOCOL_GEMINI && count_tokens && !value &&
        json_is_object(json_object_get(root, "generateContentRequest")))
        return true;
    bool text_allowed =
        protocol == PROTO_PROTOCOL_OPENAI_RESPONSES || protocol == PROTO_PROTOCOL_OPENAI_EMBEDDINGS;
    if (!value)
        snprintf(error, error_size, "Missing required parameter: '%s'", field);
    else if (protocol == PROTO_PROTOCOL_OPENAI_IMAGES)
        return s_images_ok(root, error, error_size);
    else if (!json_is_array(value) && !(text_allowed && json_is_string(value)))
        snprintf(error, error_size, "Invalid '%s': expected an array%s", field,
                 text_allowed ? " or a string" : "");
    else
        return true;
    return false;
}

//  Every protocol's body is a JSON object holding the model (but Gemini's,
//  whose model is in the path), the conversation, and for OpenAI Chat,
//  Responses and Anthropic the stream flag.
//  What a request needs from its upstream, found anywhere in the body (the
//  shapes differ by protocol, the markers do not collide): image parts need
//  "vision", a 1-hour cache_control needs "prompt-cache-1h". Bounded depth:
//  the body was parsed already, this only looks.
static void s_scan_needs(json_t *node, int depth, bool *vision, bool *cache_1h)
{
    if (depth > 64 || (*vision && *cache_1h))
        return;
    if (json_is_array(node)) {
        size_t index;
        json_t *item;
        json_array_foreach(node, index, item) s_scan_needs(item, depth + 1, vision, cache_1h);
        return;
    }
    if (!json_is_object(node))
        return;
    const char *type = json_string_value(json_object_get(node, "type"));
    if (type && (strcmp(type, "image_url") == 0 || strcmp(type, "image") == 0 ||
                 strcmp(type, "input_image") == 0))
        *vision = true;
    json_t *inline_data = json_object_get(node, "inlineData");
    if (!inline_data)
        inline_data = json_object_get(node, "inline_data");
    if (!inline_data)
        inline_data = json_object_get(node, "fileData");
    const char *mime = json_string_value(json_object_get(inline_data, "mimeType"));
    if (!mime)
        mime = json_string_value(json_object_get(inline_data, "mime_type"));
    if (mime && strncmp(mime, "image/", 6) == 0)
        *vision = true;
    json_t *cache = json_object_get(node, "cache_control");
    const char *ttl = json_string_value(json_object_get(cache, "ttl"));
    if (ttl && strcmp(ttl, "1h") == 0)
        *cache_1h = true;
    const char *key;
    json_t *value;
    json_object_foreach(node, key, value) s_scan_needs(value, depth + 1, vision, cache_1h);
}

void ingress_parse_add_capability(char *list, const char *name)
{
    size_t length = strlen(name);
    for (const char *at = list; (at = strstr(at, name)); at += length)
        if ((at == list || at[-1] == ',') && (at[length] == ',' || at[length] == '\0'))
            return;
    size_t used = strlen(list);
    snprintf(list + used, INGRESS_CAPABILITIES_MAX + 1 - used, "%s%s", used ? "," : "", name);
}

//  Routing hints from the body: the session that binds a conversation to
//  one upstream (so prompt caches keep hitting) and the capabilities the
//  request needs (into a list of INGRESS_CAPABILITIES_MAX + 1 bytes).
//  The session is borrowed from root; "" when none.
static const char *s_route_hints(json_t *root, char *capabilities)
{
    const char *session =
        json_string_value(json_object_get(json_object_get(root, "metadata"), "user_id"));
    if (!session)
        session = json_string_value(json_object_get(root, "user"));
    if (!session || strlen(session) > INGRESS_SESSION_MAX)
        session = "";
    json_t *tools = json_object_get(root, "tools");
    if (json_is_array(tools) && json_array_size(tools) > 0)
        ingress_parse_add_capability(capabilities, "tools");
    bool vision = false, cache_1h = false;
    s_scan_needs(json_object_get(root, "messages"), 0, &vision, &cache_1h);
    s_scan_needs(json_object_get(root, "contents"), 0, &vision, &cache_1h);
    s_scan_needs(json_object_get(root, "input"), 0, &vision, &cache_1h);
    s_scan_needs(json_object_get(root, "system"), 0, &vision, &cache_1h);
    s_scan_needs(tools, 0, &vision, &cache_1h);
    if (vision)
        ingress_parse_add_capability(capabilities, "vision");
    if (cache_1h)
        ingress_parse_add_capability(capabilities, "prompt-cache-1h");
    return session;
}

void ingress_body_set_texts(ingress_body_t *self, const char *model, const char *session,
                            const char *capabilities)
{
    size_t model_size = strlen(model) + 1;
    size_t session_size = strlen(session) + 1;
    size_t capabilities_size = strlen(capabilities) + 1;
    char *texts = malloc(model_size + session_size + capabilities_size);
    assert(texts);
    memcpy(texts, model, model_size);
    memcpy(texts + model_size, session, session_size);
    memcpy(texts + model_size + session_size, capabilities, capabilities_size);
    free(self->texts);
    self->texts = texts;
    self->model = texts;
    self->session = texts + model_size;
    self->capabilities = texts + model_size + session_size;
}

void ingress_body_release(ingress_body_t *self)
{
    free(self->texts);
    self->texts = NULL;
    self->model = self->session = self->capabilities = "";
}

bool ingress_body_same(const ingress_body_t *a, const ingress_body_t *b)
{
    return strcmp(a->model, b->model) == 0 && strcmp(a->session, b->session) == 0 &&
           strcmp(a->capabilities, b->capabilities) == 0 && a->stream == b->stream &&
           a->stream_given == b->stream_given && a->include_usage == b->include_usage &&
           a->tokens_estimate == b->tokens_estimate && a->max_output == b->max_output &&
           a->images == b->images;
}

void ingress_body_set_session(ingress_body_t *self, const char *session)
{
    assert(strlen(session) <= INGRESS_SESSION_MAX);
    ingress_body_set_texts(self, self->model, session, self->capabilities);
}

void ingress_body_need_capability(ingress_body_t *self, const char *name)
{
    char list[INGRESS_CAPABILITIES_MAX + 1];
    snprintf(list, sizeof list, "%s", self->capabilities);
    ingress_parse_add_capability(list, name);
    if (strcmp(list, self->capabilities) != 0)
        ingress_body_set_texts(self, self->model, self->session, list);
}

//  The output limit the request sets itself, in each protocol's words
//  (max_tokens; OpenAI's newer max_completion_tokens; Responses'
//  max_output_tokens; Gemini's generationConfig.maxOutputTokens): what
//  admission reserves for the answer. 0 when it sets none.
static uint64_t s_max_output(json_t *root)
{
    const char *names[] = {"max_completion_tokens", "max_tokens", "max_output_tokens"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        json_t *value = json_object_get(root, names[i]);
        if (json_is_integer(value) && json_integer_value(value) > 0)
            return (uint64_t)json_integer_value(value);
    }
    json_t *gemini = json_object_get(json_object_get(root, "generationConfig"), "maxOutputTokens");
    if (json_is_integer(gemini) && json_integer_value(gemini) > 0)
        return (uint64_t)json_integer_value(gemini);
    return 0;
}

size_t ingress_parse_json_elements(const char *data, size_t size, size_t max)
{
    //  Every value but the first follows a ',' or a ':' or opens inside a
    //  '[' or '{'; counting those outside strings bounds the values jansson
    //  would build, at a byte's cost each.
    size_t count = 1;
    bool in_string = false;
    for (size_t i = 0; i < size && count <= max; i++) {
        char c = data[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"')
            in_string = true;
        else if (c == ',' || c == ':' || c == '[' || c == '{')
            count++;
    }
    return count;
}

int ingress_parse_body(int protocol, bool count_tokens, const char *path_model, const char *data,
                       size_t size, ingress_body_t *out, char *error, size_t error_size)
{
    if (ingress_scan_body(protocol, count_tokens, path_model, data, size, out))
        return 0;
    return ingress_parse_body_tree(protocol, count_tokens, path_model, data, size, out, error,
                                   error_size);
}

int ingress_parse_body_tree(int protocol, bool count_tokens, const char *path_model,
                            const char *data, size_t size, ingress_body_t *out, char *error,
                            size_t error_size)
{
    *out = INGRESS_BODY_EMPTY;
    json_error_t problem;
    json_t *root = json_loadb(data, size, JSON_REJECT_DUPLICATES, &problem);
    if (!root) {
        snprintf(error, error_size, "The request body is not valid JSON: %s (line %d, column %d)",
                 problem.text, problem.line, problem.column);
        return -1;
    }
    int rc = -1;
    json_t *model =
        path_model ? json_string(path_model) : json_incref(json_object_get(root, "model"));
    json_t *stream = json_object_get(root, "stream");
    if (!json_is_object(root))
        snprintf(error, error_size, "The request body must be a JSON object");
    else if (!model)
        snprintf(error, error_size, "Missing required parameter: 'model'");
    else if (!json_is_string(model) || json_string_length(model) == 0)
        snprintf(error, error_size, "Invalid 'model': expected a non-empty string");
    else if (json_string_length(model) > INGRESS_MODEL_MAX ||
             strlen(json_string_value(model)) != json_string_length(model))
        snprintf(error, error_size, "Invalid 'model': longer than %d characters",
                 INGRESS_MODEL_MAX);
    else if (!s_conversation_ok(protocol, count_tokens, root, error, error_size))
        ; //  error written
    else if (protocol != PROTO_PROTOCOL_GEMINI && stream && !json_is_boolean(stream) &&
             !json_is_null(stream))
        snprintf(error, error_size, "Invalid 'stream': expected a boolean");
    else {
        out->stream_given = stream && !json_is_null(stream);
        out->stream = protocol != PROTO_PROTOCOL_GEMINI &&
                      protocol != PROTO_PROTOCOL_OPENAI_EMBEDDINGS && !count_tokens &&
                      json_is_true(stream);
        json_t *options = json_object_get(root, "stream_options");
        out->include_usage = protocol == PROTO_PROTOCOL_OPENAI &&
                             json_is_true(json_object_get(options, "include_usage"));
        //  Four bytes a token is the usual rule of thumb; admission only
        //  needs an order of magnitude, and settlement uses real counts.
        out->tokens_estimate = size / 4 + 1;
        out->max_output = count_tokens ? 0 : s_max_output(root);
        if (protocol == PROTO_PROTOCOL_OPENAI_IMAGES) {
            json_t *n = json_object_get(root, "n");
            out->images = json_is_integer(n) ? (uint64_t)json_integer_value(n) : 1;
        }
        char capabilities[INGRESS_CAPABILITIES_MAX + 1] = "";
        const char *session = s_route_hints(root, capabilities);
        ingress_body_set_texts(out, json_string_value(model), session, capabilities);
        rc = 0;
    }
    json_decref(model);
    json_decref(root);
    return rc;
}

bool ingress_parse_accepts_sse(const char *accept)
{
    static const char type[] = "text/event-stream";
    for (const char *range = accept; range && *range;) {
        range += strspn(range, " \t,");
        size_t length = strcspn(range, ",");
        size_t name = strcspn(range, ";, \t");
        if (name == sizeof type - 1 && strncasecmp(range, type, name) == 0) {
            //  A parameter q=0 (or 0.0...) means "not this one".
            bool refused = false;
            for (const char *p = range + name; p < range + length; p++) {
                if (*p != ';')
                    continue;
                const char *q = p + 1 + strspn(p + 1, " \t");
                if ((q[0] == 'q' || q[0] == 'Q') && q[1] == '=') {
                    char *end;
                    double value = strtod(q + 2, &end);
                    refused = end != q + 2 && value <= 0;
                }
            }
            if (!refused)
                return true;
        }
        range += length;
    }
    return false;
}

int ingress_parse_add_stream(char **body, size_t *size)
{
    static const char member[] = "\"stream\":true,";
    size_t at = 0;
    while (at < *size && strchr(" \t\r\n", (*body)[at]))
        at++;
    if (at == *size || (*body)[at] != '{')
        return -1;
    at++;
    char *grown = realloc(*body, *size + sizeof member);
    assert(grown);
    memmove(grown + at + sizeof member - 1, grown + at, *size - at);
    memcpy(grown + at, member, sizeof member - 1);
    *size += sizeof member - 1;
    grown[*size] = '\0';
    *body = grown;
    return 0;
}

uint64_t ingress_parse_overhead_us(uint64_t received_us, uint64_t headers_us, uint64_t upstream_us)
{
    if (headers_us <= received_us)
        return 0;
    uint64_t elapsed = headers_us - received_us;
    return elapsed > upstream_us ? elapsed - upstream_us : 0;
}

void ingress_parse_ms_text(uint64_t microseconds, char *out, size_t out_size)
{
    char text[PROTO_TEXT_INT_MAX + 4];
    size_t length = proto_text_u64(text, microseconds / 1000);
    unsigned fraction = (unsigned)(microseconds % 1000);
    text[length++] = '.';
    text[length++] = (char)('0' + fraction / 100);
    text[length++] = (char)('0' + fraction / 10 % 10);
    text[length++] = (char)('0' + fraction % 10);
    text[length] = '\0';
    proto_text_copy(out, out_size, text);
}

//  --------------------------------------------------------------------------
//  Self test

static void s_test_body_error(const char *body, const char *expect)
{
    ingress_body_t parsed;
    char error[256];
    int rc = ingress_parse_body(PROTO_PROTOCOL_OPENAI, false, NULL, body, strlen(body), &parsed,
                                error, sizeof error);
    PROTO_CHECK(rc == -1);
    PROTO_CHECK(strstr(error, expect));
    //  Refused, it holds nothing and reads as empty.
    PROTO_CHECK(!parsed.texts && !*parsed.model && !*parsed.session && !*parsed.capabilities);
}

//  Where the client's key is found, and which one wins.
static void s_test_keys(void)
{
    //  Keys: Bearer wins, then x-api-key, x-goog-api-key, ?key=.
    size_t length;
    ingress_key_source_t source;
    const char *key =
        ingress_parse_key("Bearer  tg-abc  ", "x", NULL, NULL, NULL, &length, &source);
    PROTO_CHECK(key && length == 6 && memcmp(key, "tg-abc", 6) == 0);
    PROTO_CHECK(source == INGRESS_KEY_BEARER);
    key = ingress_parse_key("bearer\ttg-x", NULL, NULL, NULL, NULL, &length, &source);
    PROTO_CHECK(key && length == 4 && source == INGRESS_KEY_BEARER);
    key = ingress_parse_key("Basic dXNlcjpwYXNz", "sk-ant", NULL, NULL, NULL, &length, &source);
    PROTO_CHECK(key && strcmp(key, "sk-ant") == 0 && source == INGRESS_KEY_X_API_KEY);
    key = ingress_parse_key("Bearer ", NULL, "goog", NULL, NULL, &length, &source);
    PROTO_CHECK(key && length == 4 && source == INGRESS_KEY_GOOG);
    key = ingress_parse_key("", "", "", "q", NULL, &length, &source);
    PROTO_CHECK(key && length == 1 && source == INGRESS_KEY_QUERY);
    key = ingress_parse_key("BearerX abc", NULL, NULL, NULL, NULL, &length, &source);
    PROTO_CHECK(!key && source == INGRESS_KEY_NONE && length == 0);
    PROTO_CHECK(!ingress_parse_key(NULL, NULL, NULL, NULL, NULL, &length, &source));
    //  A credential with our prefix wins over another in an earlier place;
    //  the default prefix too, for keys made before a change.
    key = ingress_parse_key("Bearer proxy-token", "acme_k1", NULL, NULL, "acme_", &length, &source);
    PROTO_CHECK(source == INGRESS_KEY_X_API_KEY && length == 7 && memcmp(key, "acme_k1", 7) == 0);
    key = ingress_parse_key("Bearer proxy-token", NULL, "tg-old", NULL, "acme_", &length, &source);
    PROTO_CHECK(source == INGRESS_KEY_GOOG && memcmp(key, "tg-old", 6) == 0);
    key = ingress_parse_key("Bearer proxy-token", "other", NULL, NULL, "acme_", &length, &source);
    PROTO_CHECK(source == INGRESS_KEY_BEARER && length == 11);
    key = ingress_parse_key(NULL, "acme_", NULL, NULL, "acme_", &length, &source);
    PROTO_CHECK(source == INGRESS_KEY_X_API_KEY);
}

//  Request ids and the W3C trace context.
static void s_test_ids(void)
{
    //  Request ids.
    PROTO_CHECK(ingress_parse_request_id_valid("a"));
    PROTO_CHECK(ingress_parse_request_id_valid("req-1.2_3"));
    char long_id[70];
    memset(long_id, 'a', 64);
    long_id[64] = '\0';
    PROTO_CHECK(ingress_parse_request_id_valid(long_id));
    long_id[64] = 'a';
    long_id[65] = '\0';
    PROTO_CHECK(!ingress_parse_request_id_valid(long_id));
    PROTO_CHECK(!ingress_parse_request_id_valid(""));
    PROTO_CHECK(!ingress_parse_request_id_valid(NULL));
    char mine[PROTO_MSG_RID_MAX + 1], again[PROTO_MSG_RID_MAX + 1];
    ingress_parse_client_request_id("my-id.1", mine);
    ingress_parse_client_request_id("my-id.1", again);
    PROTO_CHECK(strncmp(mine, "my-id.1.", 8) == 0 && strlen(mine) == 8 + 16);
    PROTO_CHECK(strcmp(mine, again) != 0); //  a reused client id never repeats ours
    ingress_parse_client_request_id(long_id, mine);
    PROTO_CHECK(strlen(mine) == INGRESS_CLIENT_ID_KEPT + 1 + 16 &&
                ingress_parse_request_id_valid(mine));
    //  Whole in dispatch's operator's-loss record id (ID~lost-NONCE, 64 bytes
    //  at most): two such records never share an id.
    PROTO_CHECK(strlen(mine) + strlen("~lost-") + 8 <= PROTO_MSG_RID_MAX);
    PROTO_CHECK(!ingress_parse_request_id_valid("a b"));
    PROTO_CHECK(!ingress_parse_request_id_valid("a\"b"));
    PROTO_CHECK(!ingress_parse_request_id_valid("a/b"));
    char id[INGRESS_REQUEST_ID_HEX + 1], other[INGRESS_REQUEST_ID_HEX + 1];
    uint64_t before = proto_loop_wall_us();
    ingress_parse_new_request_id(id);
    uint64_t after = proto_loop_wall_us();
    ingress_parse_new_request_id(other);
    uint64_t made_both = proto_loop_wall_us();
    PROTO_CHECK(strlen(id) == 32 && strlen(other) == 32 && strcmp(id, other) != 0);
    for (int i = 0; i < 32; i++)
        PROTO_CHECK(isdigit((unsigned char)id[i]) || (id[i] >= 'a' && id[i] <= 'f'));
    //  Time first, so that ids sort as they were made (the ledger's index
    //  pages): the leading digits are the clock when it was made.
    char stamp[INGRESS_REQUEST_ID_TIME_HEX + 1];
    memcpy(stamp, id, INGRESS_REQUEST_ID_TIME_HEX);
    stamp[INGRESS_REQUEST_ID_TIME_HEX] = '\0';
    uint64_t made = strtoull(stamp, NULL, 16);
    PROTO_CHECK(made >= before && made <= after);
    char later[INGRESS_REQUEST_ID_HEX + 1];
    while (proto_loop_wall_us() <= made_both)
        ;
    ingress_parse_new_request_id(later);
    PROTO_CHECK(strcmp(id, later) < 0 && strcmp(other, later) < 0);
    //  ...and the random rest differs between ids made in one microsecond.
    PROTO_CHECK(strcmp(id + INGRESS_REQUEST_ID_TIME_HEX, other + INGRESS_REQUEST_ID_TIME_HEX) != 0);

    //  Trace context: kept trace id, new span; made up when absent or bad.
    const char *incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    PROTO_CHECK(ingress_parse_traceparent_valid(incoming));
    char trace[INGRESS_TRACE_SIZE];
    ingress_parse_traceparent(incoming, trace);
    PROTO_CHECK(strlen(trace) == 55 && ingress_parse_traceparent_valid(trace));
    PROTO_CHECK(strncmp(trace, incoming, 36) == 0);
    PROTO_CHECK(strncmp(trace + 36, incoming + 36, 16) != 0);
    PROTO_CHECK(strcmp(trace + 52, "-01") == 0);
    PROTO_CHECK(!ingress_parse_traceparent_valid(
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
    PROTO_CHECK(!ingress_parse_traceparent_valid(
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
    PROTO_CHECK(!ingress_parse_traceparent_valid("garbage"));
    ingress_parse_traceparent("garbage", trace);
    PROTO_CHECK(ingress_parse_traceparent_valid(trace) && strcmp(trace + 52, "-01") == 0);
    ingress_parse_traceparent(NULL, trace);
    PROTO_CHECK(ingress_parse_traceparent_valid(trace));
}

//  Routing hints: sessions and needed capabilities, in each protocol's
//  shape, and as the headers complete them.
static void s_test_route_hints(void)
{
    ingress_body_t parsed;
    char error[256];
    const char *openai = "{\"model\":\"m\",\"user\":\"u-1\",\"tools\":[{\"type\":\"function\"}],"
                         "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
                         "\"image_url\":{\"url\":\"data:image/png;base64,AA\"}}]}]}";
    PROTO_CHECK(ingress_parse_body(PROTO_PROTOCOL_OPENAI, false, NULL, openai, strlen(openai),
                                   &parsed, error, sizeof error) == 0);
    PROTO_CHECK(strcmp(parsed.session, "u-1") == 0);
    PROTO_CHECK(strcmp(parsed.capabilities, "tools,vision") == 0);
    //  The headers' hints (ingress_http) complete the body's.
    ingress_body_set_session(&parsed, "h-3");
    ingress_body_need_capability(&parsed, "vision");
    ingress_body_need_capability(&parsed, "tool");
    PROTO_CHECK(strcmp(parsed.model, "m") == 0 && strcmp(parsed.session, "h-3") == 0);
    PROTO_CHECK(strcmp(parsed.capabilities, "tools,vision,tool") == 0);
    ingress_body_release(&parsed);
    PROTO_CHECK(!parsed.texts && !*parsed.model && !*parsed.session && !*parsed.capabilities);
    {
        //  The list keeps INGRESS_CAPABILITIES_MAX characters, as it did in
        //  its fixed array.
        ingress_body_t empty = INGRESS_BODY_EMPTY;
        char name[40];
        for (int i = 0; i < 20; i++) {
            snprintf(name, sizeof name, "capability-%02d", i);
            ingress_body_need_capability(&empty, name);
        }
        PROTO_CHECK(strlen(empty.capabilities) == INGRESS_CAPABILITIES_MAX);
        PROTO_CHECK(strncmp(empty.capabilities, "capability-00,capability-01,", 28) == 0);
        PROTO_CHECK(!*empty.model && !*empty.session);
        ingress_body_release(&empty);
    }
    const char *anthropic = "{\"model\":\"m\",\"max_tokens\":5,\"metadata\":{\"user_id\":\"a-2\"},"
                            "\"system\":[{\"type\":\"text\",\"text\":\"s\",\"cache_control\":"
                            "{\"type\":\"ephemeral\",\"ttl\":\"1h\"}}],"
                            "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    PROTO_CHECK(ingress_parse_body(PROTO_PROTOCOL_ANTHROPIC, false, NULL, anthropic,
                                   strlen(anthropic), &parsed, error, sizeof error) == 0);
    PROTO_CHECK(strcmp(parsed.session, "a-2") == 0);
    PROTO_CHECK(strcmp(parsed.capabilities, "prompt-cache-1h") == 0);
    ingress_body_release(&parsed);
    const char *gemini = "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"inlineData\":"
                         "{\"mimeType\":\"image/jpeg\",\"data\":\"AA\"}}]}]}";
    PROTO_CHECK(ingress_parse_body(PROTO_PROTOCOL_GEMINI, false, "gemini-x", gemini, strlen(gemini),
                                   &parsed, error, sizeof error) == 0);
    PROTO_CHECK(strcmp(parsed.capabilities, "vision") == 0);
    PROTO_CHECK(strcmp(parsed.model, "gemini-x") == 0);
    ingress_body_release(&parsed);
}

//  Bodies of each protocol: model, stream, routing hints, refusals.
static void s_test_bodies(void)
{
    //  Bodies.
    ingress_body_t parsed;
    char error[256];
    const char *good = "{\"model\":\"gpt-x\",\"messages\":[],\"stream\":true,"
                       "\"stream_options\":{\"include_usage\":true}}";
    PROTO_CHECK(ingress_parse_body(PROTO_PROTOCOL_OPENAI, false, NULL, good, strlen(good), &parsed,
                                   error, sizeof error) == 0);
    PROTO_CHECK(strcmp(parsed.model, "gpt-x") == 0 && parsed.stream && parsed.include_usage);
    PROTO_CHECK(parsed.stream_given);
    PROTO_CHECK(parsed.tokens_estimate > 0);
    ingress_body_release(&parsed);
    {
        ingress_body_t limits;
        const char *cases[][2] = {
            {"{\"model\":\"m\",\"max_tokens\":77,\"messages\":[{\"role\":\"user\",\"content\":"
             "\"x\"}]}",
             "77"},
            {"{\"model\":\"m\",\"max_completion_tokens\":9,\"max_tokens\":77,\"messages\":[{"
             "\"role\":"
             "\"user\",\"content\":\"x\"}]}",
             "9"},
            {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "0"},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            PROTO_CHECK(ingress_parse_body(PROTO_PROTOCOL_OPENAI, false, NULL, cases[i][0],
                                           strlen(cases[i][0]), &limits, error, sizeof error) == 0);
            PROTO_CHECK(limits.max_output == strtoull(cases[i][1], NULL, 10));
            ingress_body_release(&limits);
        }
    }
    const char *plain = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    PROTO_CHECK(ingress_parse_body(PROTO_PROTOCOL_OPENAI, false, NULL, plain, strlen(plain),
                                   &parsed, error, sizeof error) == 0);
    PROTO_CHECK(!parsed.stream && !parsed.include_usage && !parsed.stream_given);
    PROTO_CHECK(parsed.session[0] == '\0' && parsed.capabilities[0] == '\0');
    ingress_body_release(&parsed);

    s_test_body_error("{\"model\":", "not valid JSON");
    s_test_body_error("", "not valid JSON");
    s_test_body_error("[1]", "JSON object");
    s_test_body_error("{\"messages\":[]}", "'model'");
    s_test_body_error("{\"model\":3,\"messages\":[]}", "'model'");
    s_test_body_error("{\"model\":\"\",\"messages\":[]}", "'model'");
    s_test_body_error("{\"model\":\"m\"}", "'messages'");
    s_test_body_error("{\"model\":\"m\",\"messages\":{}}", "'messages'");
    s_test_body_error("{\"model\":\"m\",\"messages\":[],\"stream\":\"yes\"}", "'stream'");
    s_test_body_error("{\"model\":\"m\",\"model\":\"n\",\"messages\":[]}", "not valid JSON");
    s_test_body_error("{\"model\":\"m\\u0000x\",\"messages\":[]}", "not valid JSON");
    char big[400];
    snprintf(big, sizeof big, "{\"model\":\"%0250d\",\"messages\":[]}", 7);
    s_test_body_error(big, "'model'");

    //  The other protocols' bodies.
    struct {
        int protocol;       //  client protocol
        bool count;         //  a token count
        const char *model;  //  from the path, or NULL
        const char *body;   //  request body
        const char *expect; //  NULL: accepted; else part of the error
        bool stream;        //  when accepted: streamed
    } bodies[] = {
        {PROTO_PROTOCOL_OPENAI_RESPONSES, false, NULL,
         "{\"model\":\"m\",\"input\":\"hi\",\"stream\":true}", NULL, true},
        {PROTO_PROTOCOL_OPENAI_RESPONSES, false, NULL, "{\"model\":\"m\",\"input\":[]}", NULL,
         false},
        {PROTO_PROTOCOL_OPENAI_RESPONSES, false, NULL, "{\"model\":\"m\"}", "'input'", false},
        {PROTO_PROTOCOL_OPENAI_RESPONSES, false, NULL, "{\"model\":\"m\",\"input\":3}", "'input'",
         false},
        {PROTO_PROTOCOL_OPENAI_EMBEDDINGS, false, NULL,
         "{\"model\":\"e\",\"input\":[\"a\"],\"stream\":true}", NULL, false},
        {PROTO_PROTOCOL_OPENAI_IMAGES, false, NULL,
         "{\"model\":\"i\",\"prompt\":\"a cat\",\"n\":3}", NULL, false},
        {PROTO_PROTOCOL_OPENAI_IMAGES, false, NULL, "{\"model\":\"i\"}", "'prompt'", false},
        {PROTO_PROTOCOL_OPENAI_IMAGES, false, NULL, "{\"model\":\"i\",\"prompt\":\"\"}", "'prompt'",
         false},
        {PROTO_PROTOCOL_OPENAI_IMAGES, false, NULL, "{\"model\":\"i\",\"prompt\":\"x\",\"n\":0}",
         "'n'", false},
        {PROTO_PROTOCOL_OPENAI_IMAGES, false, NULL, "{\"model\":\"i\",\"prompt\":\"x\",\"n\":11}",
         "'n'", false},
        {PROTO_PROTOCOL_OPENAI_IMAGES, false, NULL,
         "{\"model\":\"i\",\"prompt\":\"x\",\"n\":\"2\"}", "'n'", false},
        {PROTO_PROTOCOL_OPENAI_IMAGES, false, NULL,
         "{\"model\":\"i\",\"prompt\":\"x\",\"stream\":true}", "'stream'", false},
        {PROTO_PROTOCOL_ANTHROPIC, false, NULL,
         "{\"model\":\"c\",\"max_tokens\":5,\"messages\":[],\"stream\":true}", NULL, true},
        {PROTO_PROTOCOL_ANTHROPIC, true, NULL, "{\"model\":\"c\",\"messages\":[],\"stream\":true}",
         NULL, false},
        {PROTO_PROTOCOL_ANTHROPIC, false, NULL, "{\"model\":\"c\",\"messages\":\"x\"}",
         "'messages'", false},
        {PROTO_PROTOCOL_GEMINI, false, "gem", "{\"contents\":[]}", NULL, false},
        {PROTO_PROTOCOL_GEMINI, false, "gem", "{}", "'contents'", false},
        {PROTO_PROTOCOL_GEMINI, true, "gem", "{\"generateContentRequest\":{\"contents\":[]}}", NULL,
         false},
        {PROTO_PROTOCOL_GEMINI, false, "", "{\"contents\":[]}", "'model'", false},
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        int rc =
            ingress_parse_body(bodies[i].protocol, bodies[i].count, bodies[i].model, bodies[i].body,
                               strlen(bodies[i].body), &parsed, error, sizeof error);
        if (bodies[i].expect)
            PROTO_CHECK(rc == -1 && strstr(error, bodies[i].expect));
        else
            PROTO_CHECK(rc == 0 && parsed.stream == bodies[i].stream && *parsed.model);
        ingress_body_release(&parsed);
    }
}

void ingress_parse_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_parse: ");
    //  Accept: text/event-stream among other ranges, not with q=0.
    PROTO_CHECK(ingress_parse_accepts_sse("text/event-stream"));
    PROTO_CHECK(ingress_parse_accepts_sse("application/json, Text/Event-Stream;q=0.9"));
    PROTO_CHECK(!ingress_parse_accepts_sse("application/json"));
    PROTO_CHECK(!ingress_parse_accepts_sse("text/event-stream;q=0"));
    PROTO_CHECK(!ingress_parse_accepts_sse("text/event-streams"));
    PROTO_CHECK(!ingress_parse_accepts_sse("*/*"));
    PROTO_CHECK(!ingress_parse_accepts_sse(NULL));
    {
        char *body = strdup("  {\"model\":\"m\"}");
        size_t size = strlen(body);
        PROTO_CHECK(ingress_parse_add_stream(&body, &size) == 0);
        PROTO_CHECK(size == strlen(body) &&
                    strcmp(body, "  {\"stream\":true,\"model\":\"m\"}") == 0);
        free(body);
        body = strdup("[1]");
        size = 3;
        PROTO_CHECK(ingress_parse_add_stream(&body, &size) == -1);
        free(body);
    }
    //  Values a body would make: a 16 MiB array of zeros is counted in
    //  one pass, no allocation, and stops at the limit.
    const char *nested = "{\"a\":[1,2,{\"b\":\"x,:[{\\\"\"}]}";
    PROTO_CHECK(ingress_parse_json_elements(nested, strlen(nested), 100) == 8);
    PROTO_CHECK(ingress_parse_json_elements("0", 1, 100) == 1);
    size_t zeros_size = 16u * 1024 * 1024;
    char *zeros = malloc(zeros_size);
    PROTO_CHECK(zeros);
    zeros[0] = '[';
    for (size_t i = 1; i + 1 < zeros_size; i += 2) {
        zeros[i] = '0';
        zeros[i + 1] = ',';
    }
    zeros[zeros_size - 1] = ']';
    PROTO_CHECK(ingress_parse_json_elements(zeros, zeros_size, 1000000) > 1000000);
    free(zeros);
    PROTO_CHECK(proto_crypto_init() == 0);

    s_test_keys();

    s_test_ids();

    s_test_bodies();
    s_test_route_hints();

    //  Overhead: elapsed less upstream, never negative, three decimals.
    PROTO_CHECK(ingress_parse_overhead_us(1000, 6000, 4000) == 1000);
    PROTO_CHECK(ingress_parse_overhead_us(1000, 6000, 9000) == 0);
    PROTO_CHECK(ingress_parse_overhead_us(6000, 1000, 0) == 0);
    PROTO_CHECK(ingress_parse_overhead_us(0, 250, 0) == 250);
    char text[32];
    ingress_parse_ms_text(1234, text, sizeof text);
    PROTO_CHECK(strcmp(text, "1.234") == 0);
    ingress_parse_ms_text(5, text, sizeof text);
    PROTO_CHECK(strcmp(text, "0.005") == 0);
    ingress_parse_ms_text(0, text, sizeof text);
    PROTO_CHECK(strcmp(text, "0.000") == 0);
    if (verbose)
        printf("OK\n");
}
