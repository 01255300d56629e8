#include "ingress_buffer.h"
#include "proto_check.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

struct _ingress_buffer_t {
    zframe_t **frames; //  ring of frames, oldest at head
    size_t capacity;   //  slots in frames
    size_t head;       //  index of the oldest frame
    size_t count;      //  frames held
    size_t offset;     //  bytes of the oldest frame already read
    size_t size;       //  unread bytes in all frames
    size_t limit;      //  most unread bytes we agree to hold
};

ingress_buffer_t *ingress_buffer_new(size_t limit)
{
    ingress_buffer_t *self = calloc(1, sizeof *self);
    assert(self);
    self->limit = limit;
    return self;
}

void ingress_buffer_destroy(ingress_buffer_t **self_p)
{
    assert(self_p);
    ingress_buffer_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->count; i++)
        zframe_destroy(&self->frames[(self->head + i) % self->capacity]);
    free(self->frames);
    free(self);
    *self_p = NULL;
}

static void s_push(ingress_buffer_t *self, zframe_t *frame)
{
    if (self->count == self->capacity) {
        size_t capacity = self->capacity ? self->capacity * 2 : 4;
        zframe_t **frames = malloc(capacity * sizeof *frames);
        assert(frames);
        for (size_t i = 0; i < self->count; i++)
            frames[i] = self->frames[(self->head + i) % self->capacity];
        free(self->frames);
        self->frames = frames;
        self->capacity = capacity;
        self->head = 0;
    }
    self->frames[(self->head + self->count) % self->capacity] = frame;
    self->count++;
    self->size += zframe_size(frame);
}

int ingress_buffer_append(ingress_buffer_t *self, zframe_t **frame_p)
{
    zframe_t *frame = *frame_p;
    *frame_p = NULL;
    if (!frame)
        return 0;
    size_t size = zframe_size(frame);
    if (size == 0) {
        zframe_destroy(&frame);
        return 0;
    }
    if (self->size + size > self->limit) {
        zframe_destroy(&frame);
        return -1;
    }
    s_push(self, frame);
    return 0;
}

int ingress_buffer_append_bytes(ingress_buffer_t *self, const void *data, size_t size)
{
    if (size)
        s_push(self, zframe_new(data, size));
    return 0;
}

size_t ingress_buffer_read(ingress_buffer_t *self, void *out, size_t max)
{
    size_t done = 0;
    while (done < max && self->count) {
        zframe_t *frame = self->frames[self->head];
        size_t left = zframe_size(frame) - self->offset;
        size_t take = left < max - done ? left : max - done;
        memcpy((char *)out + done, zframe_data(frame) + self->offset, take);
        done += take;
        self->offset += take;
        if (self->offset == zframe_size(frame)) {
            zframe_destroy(&self->frames[self->head]);
            self->head = (self->head + 1) % self->capacity;
            self->count--;
            self->offset = 0;
        }
    }
    self->size -= done;
    return done;
}

size_t ingress_buffer_size(ingress_buffer_t *self)
{
    return self->size;
}

//  --------------------------------------------------------------------------
//  Self test

void ingress_buffer_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_buffer: ");
    ingress_buffer_t *buffer = ingress_buffer_new(10);
    char out[16];
    PROTO_CHECK(ingress_buffer_size(buffer) == 0);
    PROTO_CHECK(ingress_buffer_read(buffer, out, sizeof out) == 0);

    //  Frames come out in order, across reads of any size.
    zframe_t *frame = zframe_new("abcd", 4);
    PROTO_CHECK(ingress_buffer_append(buffer, &frame) == 0 && frame == NULL);
    frame = zframe_new("", 0);
    PROTO_CHECK(ingress_buffer_append(buffer, &frame) == 0 && frame == NULL);
    frame = zframe_new("efg", 3);
    PROTO_CHECK(ingress_buffer_append(buffer, &frame) == 0);
    PROTO_CHECK(ingress_buffer_size(buffer) == 7);
    PROTO_CHECK(ingress_buffer_read(buffer, out, 3) == 3 && memcmp(out, "abc", 3) == 0);
    PROTO_CHECK(ingress_buffer_read(buffer, out, 3) == 3 && memcmp(out, "def", 3) == 0);
    PROTO_CHECK(ingress_buffer_size(buffer) == 1);

    //  The limit counts unread bytes: 1 + 9 fits, one more does not.
    frame = zframe_new("123456789", 9);
    PROTO_CHECK(ingress_buffer_append(buffer, &frame) == 0);
    frame = zframe_new("X", 1);
    PROTO_CHECK(ingress_buffer_append(buffer, &frame) == -1 && frame == NULL);
    PROTO_CHECK(ingress_buffer_size(buffer) == 10);
    //  Closing bytes go in whatever the limit.
    PROTO_CHECK(ingress_buffer_append_bytes(buffer, "!!", 2) == 0);
    PROTO_CHECK(ingress_buffer_read(buffer, out, sizeof out) == 12);
    PROTO_CHECK(memcmp(out, "g123456789!!", 12) == 0);
    PROTO_CHECK(ingress_buffer_size(buffer) == 0);

    //  The ring grows and wraps.
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 9; i++) {
            char byte = (char)('a' + i);
            frame = zframe_new(&byte, 1);
            PROTO_CHECK(ingress_buffer_append(buffer, &frame) == 0);
        }
        PROTO_CHECK(ingress_buffer_read(buffer, out, 4) == 4 && memcmp(out, "abcd", 4) == 0);
        PROTO_CHECK(ingress_buffer_read(buffer, out, 16) == 5 && memcmp(out, "efghi", 5) == 0);
    }
    frame = zframe_new("leftover", 8);
    ingress_buffer_append(buffer, &frame);
    ingress_buffer_destroy(&buffer);
    PROTO_CHECK(buffer == NULL);
    if (verbose)
        printf("OK\n");
}
