#include "dispatch_adapter.h"
#include "dispatch_conversion.h"
#include "dispatch_passthrough.h"
#include "proto_check.h"
#include "proto_convert.h"
#include "proto_error.h"
#include "proto_msg.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

//  --------------------------------------------------------------------------
//  The table.

#define S_PASS(client, upstream, endpoint, name)                                                   \
    {                                                                                              \
        client, upstream, endpoint, false, name, dispatch_passthrough_request,                     \
            dispatch_passthrough_event, dispatch_passthrough_body, dispatch_passthrough_error,     \
            dispatch_passthrough_finish, NULL                                                      \
    }
#define S_CONV(client, upstream, name)                                                             \
    {                                                                                              \
        client, upstream, upstream, true, name, dispatch_conversion_request,                       \
            dispatch_conversion_event, dispatch_conversion_body, dispatch_conversion_error,        \
            dispatch_conversion_finish, dispatch_conversion_free                                   \
    }

enum {
    S_CHAT = PROTO_PROTOCOL_OPENAI,
    S_RESPONSES = PROTO_PROTOCOL_OPENAI_RESPONSES,
    S_ANTHROPIC = PROTO_PROTOCOL_ANTHROPIC,
    S_GEMINI = PROTO_PROTOCOL_GEMINI,
    S_EMBEDDINGS = PROTO_PROTOCOL_OPENAI_EMBEDDINGS,
    S_IMAGES = PROTO_PROTOCOL_OPENAI_IMAGES,
};

static const dispatch_adapter_t s_adapters[] = {
    S_PASS(S_CHAT, S_CHAT, S_CHAT, "openai>openai"),
    S_PASS(S_RESPONSES, S_RESPONSES, S_RESPONSES, "responses>responses"),
    S_PASS(S_ANTHROPIC, S_ANTHROPIC, S_ANTHROPIC, "anthropic>anthropic"),
    S_PASS(S_GEMINI, S_GEMINI, S_GEMINI, "gemini>gemini"),
    S_PASS(S_EMBEDDINGS, S_CHAT, S_EMBEDDINGS, "embeddings>openai"),
    S_PASS(S_IMAGES, S_CHAT, S_IMAGES, "images>openai"),
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

bool dispatch_convert_same(const dispatch_convert_t *a, const dispatch_convert_t *b)
{
    return memcmp(&a->usage, &b->usage, sizeof a->usage) == 0 &&
           a->content_bytes == b->content_bytes && a->complete == b->complete &&
           a->items == b->items && a->stream == b->stream && a->client_usage == b->client_usage &&
           a->content_type == b->content_type && strcmp(a->error, b->error) == 0;
}

void dispatch_convert_clear(dispatch_convert_t *conv)
{
    if (conv->extra && conv->adapter && conv->adapter->free_extra)
        conv->adapter->free_extra(conv->extra);
    conv->extra = NULL;
    free(conv->dropped);
    conv->dropped = NULL;
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
    PROTO_CHECK(dispatch_adapter_find(PROTO_PROTOCOL_OPENAI_IMAGES, PROTO_PROTOCOL_OPENAI));
    PROTO_CHECK(!dispatch_adapter_find(PROTO_PROTOCOL_OPENAI_IMAGES, PROTO_PROTOCOL_GEMINI));
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
