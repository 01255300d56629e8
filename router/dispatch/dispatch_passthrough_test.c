/*  dispatch_passthrough_test: the scanning paths of dispatch_passthrough
    (proto_jscan) held to the jansson path they replace.

    For a corpus of real-shaped events, answers and requests of every
    protocol (the events and answers of the converter fixtures and of the
    fuzz corpora, sub-objects of each, and hand-written common and odd
    shapes) and for systematic mutations of them (cut at every offset,
    bytes replaced, escapes, whitespace and UTF-8 inserted), every
    passthrough row must give the same return, usage, content bytes,
    complete flag, error text, stream flags and output bytes either way.
*/
#include "dispatch_passthrough.h"
#include "proto_check.h"
#include "proto_jscan.h"
#include "proto_msg.h"
#include "proto_sse.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef DISPATCH_SOURCE_TREE
#define DISPATCH_SOURCE_TREE "."
#endif

typedef struct {
    char *data;
    size_t size;
    char name[64]; //  SSE event name, "" when none
    bool mutate;   //  also put through the mutations
} s_item_t;

typedef struct {
    s_item_t *items;
    size_t count, allocated;
    size_t compared; //  comparisons made
} s_corpus_t;

static void s_add(s_corpus_t *corpus, const char *data, size_t size, const char *name, bool mutate)
{
    if (corpus->count == corpus->allocated) {
        corpus->allocated = corpus->allocated ? corpus->allocated * 2 : 256;
        corpus->items = realloc(corpus->items, corpus->allocated * sizeof *corpus->items);
        PROTO_CHECK(corpus->items);
    }
    s_item_t *item = &corpus->items[corpus->count++];
    item->data = malloc(size + 1);
    PROTO_CHECK(item->data);
    memcpy(item->data, data, size);
    item->data[size] = '\0';
    item->size = size;
    snprintf(item->name, sizeof item->name, "%s", name ? name : "");
    item->mutate = mutate;
}

//  Every object inside text that is valid JSON on its own, as an item.
static void s_add_objects(s_corpus_t *corpus, const char *text, size_t size)
{
    const char *end = text + size;
    for (const char *at = memchr(text, '{', size); at; at = memchr(at + 1, '{', end - at - 1)) {
        const char *object_end = proto_jscan_skip(at, end);
        if (proto_jscan_valid(at, (size_t)(object_end - at), PROTO_JSCAN_ALLOW_NUL))
            s_add(corpus, at, (size_t)(object_end - at), "", false);
        if (at + 1 >= end)
            break;
    }
}

static int s_add_event(const proto_sse_event_t *event, void *arg)
{
    if (event->has_data)
        s_add(arg, event->data, event->data_size, event->name, true);
    return 0;
}

//  Every file of a folder: its SSE events when it is a stream, and its
//  objects either way.
static void s_add_folder(s_corpus_t *corpus, const char *folder)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", DISPATCH_SOURCE_TREE, folder);
    DIR *dir = opendir(path);
    PROTO_CHECK(dir);
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        if (entry->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s/%s", DISPATCH_SOURCE_TREE, folder, entry->d_name);
        FILE *file = fopen(path, "rb");
        PROTO_CHECK(file);
        char *text = malloc(1 << 20);
        PROTO_CHECK(text);
        size_t size = fread(text, 1, 1 << 20, file);
        fclose(file);
        if (strstr(entry->d_name, ".sse")) {
            proto_sse_t *sse = proto_sse_new(0);
            proto_sse_feed(sse, text, size, s_add_event, corpus);
            proto_sse_finish(sse, s_add_event, corpus);
            proto_sse_destroy(&sse);
        }
        s_add_objects(corpus, text, size);
        free(text);
    }
    closedir(dir);
}

#define S_ESCAPES                                                                                  \
    "a\\b\\f\\n\\r\\t\\/"                                                                          \
    "\\\\\\\"\\u0041\\u00e9\\u20ac\\ud83d\\ude00\\u007f\\u0000z\xc3\xa9\xe2\x82\xac"

//  Common and odd shapes of every protocol, written out.
static const char *s_shapes[] = {
    //  OpenAI Chat, as the mock and the providers send it.
    "{\"id\":\"chatcmpl-mock1\",\"object\":\"chat.completion.chunk\",\"created\":1733300000,"
    "\"model\":\"mock-50\",\"system_fingerprint\":\"fp_mock\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"word \"},\"logprobs\":null,\"finish_reason\":null}]}",
    "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\","
    "\"refusal\":null},\"finish_reason\":null}],\"usage\":null}",
    "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"th\\u00e9\","
    "\"content\":\"\\ud83d\\ude00\\n\\\"q\\\"\",\"refusal\":\"no\"}}]}",
    "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}",
    "{\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,"
    "\"total_tokens\":15,\"prompt_tokens_details\":{\"cached_tokens\":2}}}",
    "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":"
    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}}]}}]}",
    "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":{\"a\":1.50}}}]}}]}",
    "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":null}}]}}]}",
    "{\"choices\":[{\"delta\":{\"content\":\"a\",\"content\":\"bcd\"}},{\"delta\":null},3]}",
    "{\"choices\":{\"delta\":{\"content\":\"a\"}},\"usage\":{\"prompt_tokens\":-1}}",
    "{\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}",
    "{\"error\":null}",
    "{\"error\":\"plain\"}",
    "{\"choices\":[],\"usage\":{\"prompt_tokens\":1.0,\"completion_tokens\":2}}",
    "{\"choices\":[],\"usage\":{\"prompt_tokens\":-0,\"completion_tokens\":1E2,\"prompt_tokens\":"
    "9223372036854775807,\"prompt_tokens_details\":{\"cached_tokens\":-0,\"cached_tokens\":3}}}",
    "{\"usage\":{\"input_tokens\":0,\"output_tokens\":-2,\"input_tokens_details\":[7],"
    "\"prompt_tokens\":\"9\"}}",
    "{\"object\":\"list\",\"data\":[{\"embedding\":[0.1,-2e-3]}],\"usage\":{\"prompt_tokens\":4,"
    "\"total_tokens\":4}}",
    "{\"created\":1,\"data\":[{\"b64_json\":\"QQ==\"},{\"url\":\"u\"}],\"usage\":{\"input_tokens\":"
    "50,\"output_tokens\":5}}",
    "{\"choices\":[{\"message\":{\"content\":\"abc\",\"tool_calls\":[{\"function\":{"
    "\"arguments\":\"{}\"}}]}}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}",
    //  Anthropic.
    "{\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":5,"
    "\"cache_read_input_tokens\":7,\"output_tokens\":1,\"cache_creation\":{"
    "\"ephemeral_1h_input_tokens\":3}}}}",
    "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}",
    "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"hey \\u00e9\"}}",
    "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"thinking_delta\","
    "\"thinking\":\"hmm\"}}",
    "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"{\\\"lo\"}}",
    "{\"type\":\"content_block_stop\",\"index\":0}",
    "{\"type\": \"ping\"}",
    "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{"
    "\"output_tokens\":3}}",
    "{\"type\":\"message_stop\"}",
    "{\"type\":\"message_st\\u006fp\"}",
    "{\"type\":\"message_stop\\u0000x\"}",
    "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
    "{\"type\":\"a_type_name_longer_than_sixty_four_bytes_so_the_scanner_leaves_it_to_jansson\"}",
    "{\"type\":7,\"delta\":{\"text\":7}}",
    "{\"content\":[{\"type\":\"text\",\"text\":\"Hi\"},{\"type\":\"tool_use\",\"input\":{\"a\":"
    "[1,2]}}],\"usage\":{\"input_tokens\":2095,\"output_tokens\":503}}",
    "{\"content\":[{\"type\":\"thinking\",\"thinking\":\"x\"},{\"type\":\"tool_use\",\"input\":"
    "\"s\"}],\"usage\":{\"input_tokens\":1}}",
    //  OpenAI Responses.
    "{\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"status\":\"in_progress\","
    "\"usage\":null}}",
    "{\"type\":\"response.output_text.delta\",\"item_id\":\"m\",\"output_index\":0,"
    "\"content_index\":0,\"delta\":\"Hel\",\"sequence_number\":4}",
    "{\"type\":\"response.function_call_arguments.delta\",\"delta\":\"{\\\"a\"}",
    "{\"type\":\"response.reasoning_summary_text.delta\",\"delta\":\"why\"}",
    "{\"type\":\"response.completed\",\"response\":{\"output\":[],\"usage\":{\"input_tokens\":37,"
    "\"output_tokens\":11,\"input_tokens_details\":{\"cached_tokens\":7}}}}",
    "{\"type\":\"response.incomplete\",\"response\":{\"usage\":{\"input_tokens\":1}}}",
    "{\"type\":\"response.failed\",\"response\":{\"error\":{\"message\":\"bad\"}}}",
    "{\"type\":\"response.failed\",\"response\":{\"error\":null}}",
    "{\"type\":\"error\",\"message\":\"rate\"}",
    "{\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"hi\"}]},"
    "{\"type\":\"function_call\",\"arguments\":\"{}\"}],\"usage\":{\"input_tokens\":3,"
    "\"output_tokens\":2}}",
    //  Gemini.
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}],\"role\":\"model\"}}],"
    "\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":1}}",
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"},{\"functionCall\":{\"name\":\"f\","
    "\"args\":{\"x\":1}}}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":9,"
    "\"cachedContentTokenCount\":4,\"candidatesTokenCount\":2,\"thoughtsTokenCount\":1}}",
    "{\"candidates\":[{\"finishReason\":null}]}",
    "{\"candidates\":[7,{\"finishReason\":\"STOP\"}]}",
    "{\"promptFeedback\":{\"blockReason\":\"SAFETY\"}}",
    "{\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":10,\"cachedContentTokenCount\":"
    "12,\"candidatesTokenCount\":-0,\"thoughtsTokenCount\":3.5}}",
    "{\"type\":\"message_delta\",\"usage\":{\"cache_creation_input_tokens\":5,\"cache_creation\":"
    "{\"ephemeral_5m_input_tokens\":4,\"ephemeral_1h_input_tokens\":3},\"cache_read_input_tokens\":"
    "1e0}}",
    "{\"error\":{\"code\":429,\"message\":\"quota\"}}",
    //  Every escape in content, for each protocol's reading of it.
    "{\"choices\":[{\"delta\":{\"content\":\"" S_ESCAPES "\",\"refusal\":\"" S_ESCAPES "\"}}]}",
    "{\"type\":\"content_block_delta\",\"delta\":{\"text\":\"" S_ESCAPES "\"}}",
    "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"" S_ESCAPES "\"}]}}]}",
    "{\"type\":\"response.output_text.delta\",\"delta\":\"" S_ESCAPES "\"}",
    "{\"t\\u0079pe\":\"response.output_text.delta\",\"d\\u0065lta\":\"" S_ESCAPES "\"}",
    //  Requests.
    "{\"model\":\"gpt\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}",
    "{\"model\":\"gpt\",\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
    "{\"model\":\"gpt\",\"stream\":true,\"stream_options\":{\"include_usage\":false},"
    "\"stream_options\":null}",
    "{\"model\":\"gpt\",\"stream\":true,\"stream_options\":[],\"seed\":123456789012345678901234}",
    "{\"model\":\"gpt\",\"stream\":\"true\",\"mo\\u0064el\":1,\"stream\":1}",
    "{\"model\":\"gpt\",\"stream\":true,\"stream\":false}",
};

//  The passthrough rows: each protocol to itself, Embeddings and Images to OpenAI.
static const dispatch_adapter_t *s_rows[6];

static void s_rows_find(void)
{
    for (int protocol = PROTO_PROTOCOL_OPENAI; protocol <= PROTO_PROTOCOL_OPENAI_IMAGES;
         protocol++) {
        int upstream = protocol <= PROTO_PROTOCOL_GEMINI ? protocol : PROTO_PROTOCOL_OPENAI;
        s_rows[protocol - 1] = dispatch_adapter_find(protocol, upstream);
        PROTO_CHECK(s_rows[protocol - 1] && !s_rows[protocol - 1]->convert);
    }
}

//  Stops with the case in hand when the two runs differ.
static void s_same(bool same, const char *what, const dispatch_adapter_t *row, const char *data,
                   size_t size, const char *name)
{
    if (same)
        return;
    fprintf(stderr, "\ndispatch_passthrough: %s differs, protocol %d, name '%s', %zu bytes:\n",
            what, row->endpoint_protocol, name, size);
    for (size_t i = 0; i < size; i++)
        fprintf(stderr,
                (unsigned char)data[i] < 0x20 || (unsigned char)data[i] >= 0x7f ? "\\x%02x" : "%c",
                (unsigned char)data[i]);
    fprintf(stderr, "\n");
    PROTO_CHECK(false);
}

static bool s_same_chunk(zchunk_t *a, zchunk_t *b)
{
    return zchunk_size(a) == zchunk_size(b) &&
           (!zchunk_size(a) || memcmp(zchunk_data(a), zchunk_data(b), zchunk_size(a)) == 0);
}

//  A conversation already under way: usage, bytes and items to fold into.
static void s_conv(dispatch_convert_t *conv, const dispatch_adapter_t *row, int variant)
{
    dispatch_convert_init(conv, row);
    conv->json_array = variant & 1;
    conv->client_usage = variant & 2;
    conv->client_stream = true;
    conv->usage.tokens_in = 5;
    conv->usage.tokens_cache_write = 9;
    conv->usage.seen_in = true;
    conv->content_bytes = 11;
    conv->items = variant & 1;
}

static void s_compare_event(const dispatch_adapter_t *row, const char *data, size_t size,
                            const char *name, int variant)
{
    proto_sse_event_t event = {name, data, size, "", true, data, size};
    dispatch_convert_t a, b;
    s_conv(&a, row, variant);
    s_conv(&b, row, variant);
    zchunk_t *out_a = zchunk_new(NULL, 0), *out_b = zchunk_new(NULL, 0);
    int rc_a = dispatch_passthrough_event(&a, &event, out_a);
    int rc_b = dispatch_passthrough_event_jansson(&b, &event, out_b);
    s_same(rc_a == rc_b && dispatch_convert_same(&a, &b) && s_same_chunk(out_a, out_b), "event",
           row, data, size, name);
    zchunk_destroy(&out_a);
    zchunk_destroy(&out_b);
    dispatch_convert_clear(&a);
    dispatch_convert_clear(&b);
}

static void s_compare_body(const dispatch_adapter_t *row, const char *data, size_t size)
{
    dispatch_convert_t a, b;
    s_conv(&a, row, 0);
    s_conv(&b, row, 0);
    zchunk_t *out_a = zchunk_new(NULL, 0), *out_b = zchunk_new(NULL, 0);
    int rc_a = dispatch_passthrough_body(&a, data, size, out_a);
    int rc_b = dispatch_passthrough_body_jansson(&b, data, size, out_b);
    s_same(rc_a == rc_b && dispatch_convert_same(&a, &b) && s_same_chunk(out_a, out_b), "body", row,
           data, size, "");
    zchunk_destroy(&out_a);
    zchunk_destroy(&out_b);
    dispatch_convert_clear(&a);
    dispatch_convert_clear(&b);
}

static void s_compare_request(const dispatch_adapter_t *row, const char *data, size_t size)
{
    dispatch_convert_t a, b;
    dispatch_convert_init(&a, row);
    dispatch_convert_init(&b, row);
    a.client_stream = b.client_stream = true;
    char *out_a = NULL, *out_b = NULL;
    size_t size_a = 0, size_b = 0;
    int rc_a = dispatch_passthrough_request(&a, data, size, "up-model", &out_a, &size_a);
    int rc_b = dispatch_passthrough_request_jansson(&b, data, size, "up-model", &out_b, &size_b);
    bool same = rc_a == rc_b && dispatch_convert_same(&a, &b) && size_a == size_b &&
                (!out_a || memcmp(out_a, out_b, size_a) == 0);
    s_same(same, "request", row, data, size, "");
    free(out_a);
    free(out_b);
    dispatch_convert_clear(&a);
    dispatch_convert_clear(&b);
}

//  One text through every row: as an event (with its name and without),
//  an answer and a request. `data` must have a byte to spare after size.
static void s_compare(s_corpus_t *corpus, char *data, size_t size, const char *name, bool all)
{
    char saved = data[size];
    data[size] = '\0'; //  events' data are C strings ([DONE] is compared so)
    for (size_t i = 0; i < sizeof s_rows / sizeof s_rows[0]; i++) {
        for (int variant = 0; variant < (all ? 4 : 1); variant += 3) {
            s_compare_event(s_rows[i], data, size, name, variant);
            if (*name && all)
                s_compare_event(s_rows[i], data, size, "", variant);
        }
        s_compare_body(s_rows[i], data, size);
        s_compare_request(s_rows[i], data, size);
        corpus->compared++;
    }
    data[size] = saved;
}

//  The item cut, with bytes replaced and with text inserted, at up to
//  `positions` offsets spread over it.
//  The item cut at every offset (at `positions` ones unless `every`), with
//  bytes replaced and with text inserted at up to `positions` offsets.
static void s_mutate(s_corpus_t *corpus, const s_item_t *item, size_t positions, bool every)
{
    static const char replace[] = {'"', '\\', '}', ']',  ',',    ':',
                                   '0', 'e',  'u', '\0', '\x80', '\xc3'};
    static const char *insert[] = {" ",       "\\\"", "\\u00e9", "\\ud83d\\ude00", "\\u0000",
                                   "\\uD800", "\"",   "[1e400]", "\xc3\xa9"};
    size_t size = item->size, stride = size / positions + 1;
    char *copy = malloc(size + 32);
    PROTO_CHECK(copy);
    for (size_t cut = 0; cut < size; cut += every ? 1 : stride) {
        memcpy(copy, item->data, cut);
        s_compare(corpus, copy, cut, item->name, false);
    }
    for (size_t at = 0; at < size; at += stride)
        for (size_t r = 0; r < sizeof replace; r++) {
            memcpy(copy, item->data, size);
            copy[at] = replace[r];
            s_compare(corpus, copy, size, item->name, false);
        }
    for (size_t at = 0; at <= size; at += stride)
        for (size_t i = 0; i < sizeof insert / sizeof insert[0]; i++) {
            size_t length = strlen(insert[i]);
            memcpy(copy, item->data, at);
            memcpy(copy + at, insert[i], length);
            memcpy(copy + at + length, item->data + at, size - at);
            s_compare(corpus, copy, size + length, item->name, false);
        }
    free(copy);
}

//  A whole stream through both paths, event after event on one
//  conversation: usage folds, the end marker and errors stop alike.
static void s_compare_stream(const s_corpus_t *corpus)
{
    for (size_t i = 0; i < sizeof s_rows / sizeof s_rows[0]; i++) {
        dispatch_convert_t a, b;
        s_conv(&a, s_rows[i], 0);
        s_conv(&b, s_rows[i], 0);
        zchunk_t *out_a = zchunk_new(NULL, 0), *out_b = zchunk_new(NULL, 0);
        for (size_t n = 0; n < corpus->count; n++) {
            const s_item_t *item = &corpus->items[n];
            proto_sse_event_t event = {item->name, item->data, item->size, "",
                                       true,       item->data, item->size};
            int rc_a = dispatch_passthrough_event(&a, &event, out_a);
            int rc_b = dispatch_passthrough_event_jansson(&b, &event, out_b);
            s_same(rc_a == rc_b && dispatch_convert_same(&a, &b) && s_same_chunk(out_a, out_b),
                   "stream", s_rows[i], item->data, item->size, item->name);
        }
        zchunk_destroy(&out_a);
        zchunk_destroy(&out_b);
        dispatch_convert_clear(&a);
        dispatch_convert_clear(&b);
    }
}

void dispatch_passthrough_test(bool verbose)
{
    if (verbose)
        printf(" * dispatch_passthrough: ");
    s_rows_find();
    s_corpus_t corpus = {0};
    for (size_t i = 0; i < sizeof s_shapes / sizeof s_shapes[0]; i++)
        s_add(&corpus, s_shapes[i], strlen(s_shapes[i]), "", true);
    const char *names[] = {"message_start", "message_delta",      "message_stop",   "error",
                           "ping",          "response.completed", "response.failed"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        s_add(&corpus, s_shapes[17], strlen(s_shapes[17]), names[i], false);
    size_t shapes = corpus.count;
    s_add_folder(&corpus, "tests/fuzz/corpus/fuzz_sse");
    s_add_folder(&corpus, "tests/fuzz/corpus/fuzz_convert_stream");
    s_add_folder(&corpus, "tests/fuzz/corpus/fuzz_dispatch");
    s_add_folder(&corpus, "tests/fixtures/convert");
    PROTO_CHECK(corpus.count > 1000);
    s_compare_stream(&corpus);
    for (size_t i = 0; i < corpus.count; i++) {
        s_item_t *item = &corpus.items[i];
        char *copy = malloc(item->size + 1);
        PROTO_CHECK(copy);
        memcpy(copy, item->data, item->size);
        s_compare(&corpus, copy, item->size, item->name, true);
        free(copy);
        //  The written shapes cut everywhere, the recorded events at a few
        //  places (fuzz_passthrough goes further).
        if (item->mutate)
            s_mutate(&corpus, item, i < shapes ? 24 : 2, i < shapes);
    }
    if (verbose)
        printf("OK (%zu items, %zu texts x rows)\n", corpus.count, corpus.compared);
    for (size_t i = 0; i < corpus.count; i++)
        free(corpus.items[i].data);
    free(corpus.items);
}
