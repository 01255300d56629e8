/*  mock_buf - the mock upstream's growable byte buffer, and its monotonic clock

    A zeroed mock_buf_t is an empty buffer; its data stays NUL-terminated once anything has
    been appended, so it can be handed to string functions as it is.
*/

#ifndef MOCK_BUF_H_INCLUDED
#define MOCK_BUF_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data; //  NUL-terminated contents, or NULL when empty
    size_t len; //  Bytes used, excluding the terminator
    size_t cap; //  Bytes allocated
} mock_buf_t;

//  Appends size bytes. Returns 0, or -1 when out of memory (the buffer is unchanged).
int mock_buf_append(mock_buf_t *self, const char *bytes, size_t size);

//  Appends printf-formatted text. Returns 0, or -1 when out of memory.
int mock_buf_appendf(mock_buf_t *self, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

//  Frees the contents and leaves an empty buffer.
void mock_buf_reset(mock_buf_t *self);

//  Milliseconds of CLOCK_MONOTONIC: the unit of every deadline in the mock.
uint64_t mock_now_ms(void);

#endif
