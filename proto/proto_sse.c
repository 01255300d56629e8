#include "proto_sse.h"
#include "proto_check.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  A growable byte buffer, always NUL-terminated so text can be handed out.
typedef struct {
    char *data;      //  bytes, NUL after the last
    size_t size;     //  bytes held
    size_t capacity; //  bytes allocated
} s_buffer_t;

struct _proto_sse_t {
    size_t max_event; //  largest block accepted
    s_buffer_t raw;   //  bytes of the block under way (and unscanned bytes after it)
    size_t scan;      //  raw[0 .. scan) has been split into lines already
    size_t searched;  //  raw[scan .. scan + searched) holds no line end
    s_buffer_t data;  //  data lines of the block so far, each followed by \n
    s_buffer_t name;  //  event name of the block so far
    s_buffer_t id;    //  last event id, kept across blocks as the standard says
    bool has_data;    //  the block has had a data line
    bool failed;      //  over the limit or stopped by a callback
};

#define S_IDLE_CAPACITY 32 //  what an empty buffer keeps between two slices

static void s_buffer_reserve(s_buffer_t *buffer, size_t extra)
{
    size_t needed = buffer->size + extra + 1;
    if (needed <= buffer->capacity)
        return;
    //  Small to start: a reader lives as long as its stream, thousands at
    //  once, and its event name and id stay empty in most protocols.
    size_t capacity = buffer->capacity ? buffer->capacity : S_IDLE_CAPACITY;
    while (capacity < needed)
        capacity *= 2;
    buffer->data = realloc(buffer->data, capacity);
    assert(buffer->data);
    buffer->capacity = capacity;
}

static void s_buffer_append(s_buffer_t *buffer, const void *bytes, size_t size)
{
    s_buffer_reserve(buffer, size);
    if (size)
        memcpy(buffer->data + buffer->size, bytes, size);
    buffer->size += size;
    buffer->data[buffer->size] = '\0';
}

static void s_buffer_set(s_buffer_t *buffer, const void *bytes, size_t size)
{
    buffer->size = 0;
    s_buffer_append(buffer, bytes, size);
}

//  An empty buffer gives back what its last block grew it to: a stream
//  waits between events far longer than it parses one, and 10,000 waiting
//  readers kept ~1 KiB each (raw and data at 512 bytes) for nothing.
static void s_buffer_relax(s_buffer_t *buffer)
{
    if (buffer->size || buffer->capacity <= S_IDLE_CAPACITY)
        return;
    char *data = realloc(buffer->data, S_IDLE_CAPACITY);
    if (!data)
        return; //  the bigger one is still there
    buffer->data = data;
    buffer->capacity = S_IDLE_CAPACITY;
    buffer->data[0] = '\0';
}

//  After a slice: the buffers a finished block leaves empty shrink.
static void s_relax(proto_sse_t *self)
{
    s_buffer_relax(&self->raw);
    s_buffer_relax(&self->data);
    s_buffer_relax(&self->name);
}

proto_sse_t *proto_sse_new(size_t max_event)
{
    proto_sse_t *self = calloc(1, sizeof *self);
    assert(self);
    self->max_event = max_event ? max_event : PROTO_SSE_MAX_EVENT;
    s_buffer_set(&self->raw, "", 0);
    s_buffer_set(&self->data, "", 0);
    s_buffer_set(&self->name, "", 0);
    s_buffer_set(&self->id, "", 0);
    return self;
}

void proto_sse_destroy(proto_sse_t **self_p)
{
    assert(self_p);
    proto_sse_t *self = *self_p;
    if (!self)
        return;
    free(self->raw.data);
    free(self->data.data);
    free(self->name.data);
    free(self->id.data);
    free(self);
    *self_p = NULL;
}

//  Applies one non-empty line to the block under way.
static void s_line(proto_sse_t *self, const char *line, size_t size)
{
    if (line[0] == ':')
        return; //  a comment
    const char *colon = memchr(line, ':', size);
    size_t field_size = colon ? (size_t)(colon - line) : size;
    const char *value = colon ? colon + 1 : line + size;
    size_t value_size = (size_t)(line + size - value);
    if (value_size && *value == ' ') {
        value++;
        value_size--;
    }
    if (field_size == 4 && memcmp(line, "data", 4) == 0) {
        s_buffer_append(&self->data, value, value_size);
        s_buffer_append(&self->data, "\n", 1);
        self->has_data = true;
    } else if (field_size == 5 && memcmp(line, "event", 5) == 0)
        s_buffer_set(&self->name, value, value_size);
    else if (field_size == 2 && memcmp(line, "id", 2) == 0 && !memchr(value, '\0', value_size))
        s_buffer_set(&self->id, value, value_size);
    //  retry and unknown fields are ignored, as the standard says.
}

//  Hands the block raw[0 .. end) to fn and starts the next one.
static int s_dispatch(proto_sse_t *self, size_t end, proto_sse_fn *fn, void *arg)
{
    if (end > self->max_event)
        return -1;
    //  The last data line's \n is not part of the data.
    size_t data_size = self->data.size ? self->data.size - 1 : 0;
    char saved = self->data.data[data_size];
    self->data.data[data_size] = '\0';
    proto_sse_event_t event = {
        .name = self->name.data,
        .data = self->data.data,
        .data_size = data_size,
        .id = self->id.data,
        .has_data = self->has_data,
        .raw = self->raw.data,
        .raw_size = end,
    };
    int rc = fn ? fn(&event, arg) : 0;
    self->data.data[data_size] = saved;
    s_buffer_set(&self->data, "", 0);
    s_buffer_set(&self->name, "", 0);
    self->has_data = false;
    memmove(self->raw.data, self->raw.data + end, self->raw.size - end + 1);
    self->raw.size -= end;
    self->scan -= end;
    return rc;
}

//  The first \n or \r in [from, end), or NULL. raw ends with a NUL, so
//  strcspn (SIMD in glibc, where a loop took ~10 instructions a byte) stops
//  at a line end, a NUL inside the data (stepped over) or the end.
static char *s_line_end(char *from, char *end)
{
    for (char *at = from; at < end; at++) {
        at += strcspn(at, "\r\n");
        if (at < end && *at)
            return at;
    }
    return NULL;
}

//  Splits complete lines from raw[scan ..]. With at_end a final \r counts.
static int s_scan(proto_sse_t *self, bool at_end, proto_sse_fn *fn, void *arg)
{
    while (self->scan < self->raw.size) {
        char *start = self->raw.data + self->scan;
        size_t left = self->raw.size - self->scan;
        //  Bytes already searched are not searched again, so a long line
        //  arriving in many slices costs linear time.
        char *eol = s_line_end(start + self->searched, start + left);
        if (!eol) {
            self->searched = left;
            break;
        }
        self->searched = (size_t)(eol - start);
        size_t line_size = (size_t)(eol - start);
        size_t terminator = 1;
        if (*eol == '\r') {
            if (line_size + 1 == left && !at_end)
                break; //  wait: is it \r\n or a lone \r?
            if (line_size + 1 < left && eol[1] == '\n')
                terminator = 2;
        }
        self->scan += line_size + terminator;
        self->searched = 0;
        if (line_size == 0) {
            if (s_dispatch(self, self->scan, fn, arg) != 0)
                return -1;
        } else
            s_line(self, start, line_size);
    }
    //  What is left is one unfinished block: it may not outgrow the limit.
    return self->raw.size > self->max_event ? -1 : 0;
}

int proto_sse_feed(proto_sse_t *self, const void *data, size_t size, proto_sse_fn *fn, void *arg)
{
    if (self->failed)
        return -1;
    s_buffer_append(&self->raw, data, size);
    if (s_scan(self, false, fn, arg) != 0) {
        self->failed = true;
        return -1;
    }
    s_relax(self);
    return 0;
}

int proto_sse_finish(proto_sse_t *self, proto_sse_fn *fn, void *arg)
{
    if (self->failed)
        return -1;
    if (s_scan(self, true, fn, arg) != 0) {
        self->failed = true;
        return -1;
    }
    return 0;
}

size_t proto_sse_pending(proto_sse_t *self)
{
    return self->raw.size;
}

bool proto_sse_failed(proto_sse_t *self)
{
    return self->failed;
}

char *proto_sse_format(const char *name, const char *data, size_t data_size, size_t *size)
{
    s_buffer_t out = {0};
    s_buffer_set(&out, "", 0);
    if (name && *name) {
        s_buffer_append(&out, "event: ", 7);
        s_buffer_append(&out, name, strlen(name));
        s_buffer_append(&out, "\n", 1);
    }
    //  Every line of data, including an empty last one, is its own data line.
    const char *line = data ? data : "";
    const char *end = line + (data ? data_size : 0);
    while (true) {
        const char *eol = line;
        while (eol < end && *eol != '\n' && *eol != '\r')
            eol++;
        s_buffer_append(&out, "data: ", 6);
        s_buffer_append(&out, line, (size_t)(eol - line));
        s_buffer_append(&out, "\n", 1);
        if (eol == end)
            break;
        line = eol + (eol + 1 < end && eol[0] == '\r' && eol[1] == '\n' ? 2 : 1);
    }
    s_buffer_append(&out, "\n", 1);
    if (size)
        *size = out.size;
    return out.data;
}

//  --------------------------------------------------------------------------
//  Self test

typedef struct {
    s_buffer_t log; //  every block seen, rendered as text
    int events;     //  blocks with data
    int blocks;     //  all blocks
    int stop_after; //  stop the reader after this many blocks, 0 = never
} s_test_t;

static int s_test_collect(const proto_sse_event_t *event, void *arg)
{
    s_test_t *test = arg;
    char head[64];
    snprintf(head, sizeof head, "[%d|%zu|%zu]", event->has_data, event->data_size, event->raw_size);
    s_buffer_append(&test->log, head, strlen(head));
    s_buffer_append(&test->log, event->name, strlen(event->name));
    s_buffer_append(&test->log, "|", 1);
    s_buffer_append(&test->log, event->data, event->data_size);
    s_buffer_append(&test->log, "|", 1);
    s_buffer_append(&test->log, event->id, strlen(event->id));
    s_buffer_append(&test->log, "|", 1);
    s_buffer_append(&test->log, event->raw, event->raw_size);
    s_buffer_append(&test->log, "\n", 1);
    test->events += event->has_data;
    test->blocks++;
    return test->stop_after && test->blocks >= test->stop_after ? -1 : 0;
}

static void s_test_reset(s_test_t *test)
{
    s_buffer_set(&test->log, "", 0);
    test->events = test->blocks = 0;
}

//  Feeds text in slices chosen by `cut` (0 = whole, 1 = byte by byte, else
//  random with that seed) and returns the log; caller frees.
static char *s_test_run(const char *text, size_t size, unsigned cut, size_t *pending)
{
    s_test_t test = {0};
    s_test_reset(&test);
    proto_sse_t *sse = proto_sse_new(0);
    size_t at = 0;
    unsigned seed = cut;
    while (at < size) {
        size_t slice = size - at;
        if (cut == 1)
            slice = 1;
        else if (cut > 1) {
            seed = seed * 1103515245u + 12345u;
            slice = 1 + (seed >> 16) % 17;
            if (slice > size - at)
                slice = size - at;
        }
        PROTO_CHECK(proto_sse_feed(sse, text + at, slice, s_test_collect, &test) == 0);
        at += slice;
    }
    PROTO_CHECK(proto_sse_finish(sse, s_test_collect, &test) == 0);
    *pending = proto_sse_pending(sse);
    proto_sse_destroy(&sse);
    return test.log.data;
}

//  A NUL inside a line is data, not its end: the line search steps over
//  it, whole or in slices.
static int s_test_sizes(const proto_sse_event_t *event, void *arg)
{
    size_t *sizes = arg;
    sizes[sizes[0] + 1] = event->data_size;
    sizes[0]++;
    return 0;
}

static void s_test_nul_inside(void)
{
    static const char stream[] = "data: a\0b\r\n\ndata: \0\0\n\n";
    for (size_t slice = 1; slice <= sizeof stream - 1; slice++) {
        size_t sizes[4] = {0};
        proto_sse_t *sse = proto_sse_new(0);
        for (size_t at = 0; at < sizeof stream - 1; at += slice) {
            size_t size = sizeof stream - 1 - at < slice ? sizeof stream - 1 - at : slice;
            PROTO_CHECK(proto_sse_feed(sse, stream + at, size, s_test_sizes, sizes) == 0);
        }
        PROTO_CHECK(sizes[0] == 2 && sizes[1] == 3 && sizes[2] == 2);
        PROTO_CHECK(proto_sse_pending(sse) == 0);
        proto_sse_destroy(&sse);
    }
}

void proto_sse_test(bool verbose)
{
    if (verbose)
        printf(" * proto_sse: ");
    //  Every line ending, comments, multi-line data, ids, an empty data
    //  line, an unknown field, a block of only a comment, and a tail that
    //  never gets its blank line.
    static const char stream[] = "data: {\"a\":1}\n\n"
                                 ": keep-alive\n\n"
                                 "event: message_start\r\ndata: line one\r\ndata: line two\r\n\r\n"
                                 "id: 7\rdata:no space\r\r"
                                 "event: ping\ndata\n\n"
                                 "retry: 100\nfoo: bar\ndata: x\n\n"
                                 "data: [DONE]\n\n"
                                 "data: unfinished";
    size_t size = sizeof stream - 1;
    size_t pending_whole, pending;
    char *whole = s_test_run(stream, size, 0, &pending_whole);
    PROTO_CHECK(pending_whole == strlen("data: unfinished"));
    PROTO_CHECK(strstr(whole, "[1|7|15]|{\"a\":1}||data: {\"a\":1}\n\n"));
    PROTO_CHECK(strstr(whole, "[0|0|14]|||: keep-alive\n\n"));
    PROTO_CHECK(strstr(whole, "[1|17|"));
    PROTO_CHECK(strstr(whole, "message_start|line one\nline two|"));
    PROTO_CHECK(strstr(whole, "|no space|7|id: 7\rdata:no space\r\r"));
    PROTO_CHECK(strstr(whole, "[1|0|18]ping||7|"));
    PROTO_CHECK(strstr(whole, "|[DONE]|7|"));
    PROTO_CHECK(!strstr(whole, "unfinished|"));
    char *bytes = s_test_run(stream, size, 1, &pending);
    PROTO_CHECK(strcmp(whole, bytes) == 0 && pending == pending_whole);
    free(bytes);
    for (unsigned seed = 2; seed < 200; seed++) {
        char *random = s_test_run(stream, size, seed, &pending);
        PROTO_CHECK(strcmp(whole, random) == 0 && pending == pending_whole);
        free(random);
    }
    free(whole);

    s_test_nul_inside();

    //  A lone \r at the very end is a line end once the stream finishes.
    s_test_t test = {0};
    s_test_reset(&test);
    proto_sse_t *sse = proto_sse_new(0);
    PROTO_CHECK(proto_sse_feed(sse, "data: z\r\r", 9, s_test_collect, &test) == 0);
    PROTO_CHECK(test.events == 0); //  the last \r might still be followed by \n
    PROTO_CHECK(proto_sse_finish(sse, s_test_collect, &test) == 0);
    PROTO_CHECK(test.events == 1 && proto_sse_pending(sse) == 0);
    proto_sse_destroy(&sse);

    //  Oversized: one block past the limit fails, whether or not it is
    //  complete, and the reader refuses more input afterwards.
    char big[300];
    memset(big, 'x', sizeof big);
    memcpy(big, "data: ", 6);
    sse = proto_sse_new(100);
    s_test_reset(&test);
    PROTO_CHECK(proto_sse_feed(sse, "data: ok\n\n", 10, s_test_collect, &test) == 0);
    PROTO_CHECK(proto_sse_feed(sse, big, 90, s_test_collect, &test) == 0);
    PROTO_CHECK(proto_sse_feed(sse, big + 90, 20, s_test_collect, &test) == -1);
    PROTO_CHECK(proto_sse_failed(sse));
    PROTO_CHECK(proto_sse_feed(sse, "\n\n", 2, s_test_collect, &test) == -1);
    PROTO_CHECK(test.events == 1);
    proto_sse_destroy(&sse);
    sse = proto_sse_new(100);
    char many[400];
    size_t at = 0;
    for (int i = 0; i < 30; i++) {
        memcpy(many + at, "data: 12345\n", 12);
        at += 12;
    }
    PROTO_CHECK(proto_sse_feed(sse, many, at, s_test_collect, &test) == -1);
    proto_sse_destroy(&sse);
    //  Many small blocks in one slice are fine under the same limit.
    sse = proto_sse_new(100);
    s_test_reset(&test);
    at = 0;
    for (int i = 0; i < 30; i++) {
        memcpy(many + at, "data: 1234\n\n", 12);
        at += 12;
    }
    PROTO_CHECK(proto_sse_feed(sse, many, at, s_test_collect, &test) == 0);
    PROTO_CHECK(test.events == 30);
    proto_sse_destroy(&sse);

    //  Between blocks a reader holds only small buffers, whatever the last
    //  block grew them to; a block under way keeps its bytes.
    sse = proto_sse_new(0);
    s_test_reset(&test);
    char large[1200] = "event: content_block_delta\ndata: ";
    size_t large_size = strlen(large);
    memset(large + large_size, 'x', 1000);
    large_size += 1000;
    PROTO_CHECK(proto_sse_feed(sse, large, large_size, s_test_collect, &test) == 0);
    PROTO_CHECK(sse->raw.capacity > 1000 && sse->raw.size == large_size);
    PROTO_CHECK(proto_sse_feed(sse, "\n\n", 2, s_test_collect, &test) == 0);
    PROTO_CHECK(test.events == 1 && strstr(test.log.data, "]content_block_delta|xxxx"));
    PROTO_CHECK(sse->raw.capacity == S_IDLE_CAPACITY && sse->data.capacity == S_IDLE_CAPACITY);
    PROTO_CHECK(sse->name.capacity == S_IDLE_CAPACITY && sse->raw.size == 0);
    PROTO_CHECK(proto_sse_feed(sse, "data: 2\n\n", 9, s_test_collect, &test) == 0);
    PROTO_CHECK(test.events == 2 && strstr(test.log.data, "|2|"));
    proto_sse_destroy(&sse);

    //  A callback can stop the reader.
    sse = proto_sse_new(0);
    s_test_reset(&test);
    test.stop_after = 1;
    PROTO_CHECK(proto_sse_feed(sse, "data: 1\n\ndata: 2\n\n", 18, s_test_collect, &test) == -1);
    PROTO_CHECK(test.blocks == 1);
    proto_sse_destroy(&sse);
    free(test.log.data);

    //  The writer splits lines, and its output reads back the same.
    size_t out_size;
    char *out = proto_sse_format("error", "a\nb", 3, &out_size);
    PROTO_CHECK(strcmp(out, "event: error\ndata: a\ndata: b\n\n") == 0 && out_size == strlen(out));
    char *back = s_test_run(out, out_size, 1, &pending);
    PROTO_CHECK(strstr(back, "error|a\nb|"));
    free(back);
    free(out);
    out = proto_sse_format(NULL, "{}", 2, NULL);
    PROTO_CHECK(strcmp(out, "data: {}\n\n") == 0);
    free(out);
    if (verbose)
        printf("OK\n");
}
