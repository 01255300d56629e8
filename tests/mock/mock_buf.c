/*  mock_buf - the mock upstream's growable byte buffer, and its monotonic clock */

#include "mock_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int s_reserve(mock_buf_t *self, size_t extra)
{
    if (self->len + extra + 1 <= self->cap)
        return 0;
    size_t cap = self->cap ? self->cap : 256;
    while (cap < self->len + extra + 1)
        cap *= 2;
    char *data = realloc(self->data, cap);
    if (!data)
        return -1;
    self->data = data;
    self->cap = cap;
    return 0;
}

int mock_buf_append(mock_buf_t *self, const char *bytes, size_t size)
{
    if (s_reserve(self, size))
        return -1;
    memcpy(self->data + self->len, bytes, size);
    self->len += size;
    self->data[self->len] = 0;
    return 0;
}

int mock_buf_appendf(mock_buf_t *self, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    int size = vsnprintf(NULL, 0, format, args);
    va_end(args);
    if (size < 0 || s_reserve(self, (size_t)size))
        return -1;
    va_start(args, format);
    vsnprintf(self->data + self->len, (size_t)size + 1, format, args);
    va_end(args);
    self->len += (size_t)size;
    return 0;
}

void mock_buf_reset(mock_buf_t *self)
{
    free(self->data);
    memset(self, 0, sizeof(*self));
}

uint64_t mock_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
