/*  proto_text: see the header. */
#include "proto_text.h"
#include "proto_check.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

size_t proto_text_copy(char *dest, size_t size, const char *src)
{
    if (!src)
        src = "";
    size_t length = strlen(src);
    if (size) {
        size_t kept = length < size ? length : size - 1;
        memcpy(dest, src, kept);
        dest[kept] = '\0';
    }
    return length;
}

size_t proto_text_u64(char *dest, uint64_t value)
{
    char digits[PROTO_TEXT_INT_MAX];
    size_t count = 0;
    do {
        digits[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    for (size_t i = 0; i < count; i++)
        dest[i] = digits[count - 1 - i];
    dest[count] = '\0';
    return count;
}

size_t proto_text_i64(char *dest, int64_t value)
{
    if (value >= 0)
        return proto_text_u64(dest, (uint64_t)value);
    //  -(value + 1) + 1 stays in range for INT64_MIN.
    dest[0] = '-';
    return 1 + proto_text_u64(dest + 1, (uint64_t)(-(value + 1)) + 1);
}

void proto_text_add(char *dest, size_t size, size_t *used, const char *text)
{
    size_t room = size - 1 - *used;
    size_t length = strlen(text);
    size_t kept = length < room ? length : room;
    memcpy(dest + *used, text, kept);
    *used += kept;
    dest[*used] = '\0';
}

void proto_text_add_u64(char *dest, size_t size, size_t *used, uint64_t value)
{
    char text[PROTO_TEXT_INT_MAX];
    proto_text_u64(text, value);
    proto_text_add(dest, size, used, text);
}

void proto_text_add_i64(char *dest, size_t size, size_t *used, int64_t value)
{
    char text[PROTO_TEXT_INT_MAX];
    proto_text_i64(text, value);
    proto_text_add(dest, size, used, text);
}

//  --------------------------------------------------------------------------
//  Self test: each against what snprintf writes and returns.

static void s_check_copy(size_t size, const char *src)
{
    char ours[16], theirs[16];
    memset(ours, 'x', sizeof ours);
    memset(theirs, 'x', sizeof theirs);
    size_t length = proto_text_copy(ours, size, src);
    int expected = snprintf(theirs, size, "%s", src ? src : "");
    PROTO_CHECK(length == (size_t)expected);
    PROTO_CHECK(memcmp(ours, theirs, sizeof ours) == 0);
}

void proto_text_test(bool verbose)
{
    if (verbose)
        printf(" * proto_text: ");
    s_check_copy(8, "abc");
    s_check_copy(4, "abc"); //  just fits
    s_check_copy(3, "abc"); //  cut
    s_check_copy(1, "abc");
    s_check_copy(0, "abc"); //  nothing written
    s_check_copy(8, "");
    s_check_copy(8, NULL);
    s_check_copy(16, "a longer text, cut");

    const int64_t signed_values[] = {0, 1, -1, 9, 10, -10, 1234567890123, INT64_MAX, INT64_MIN};
    for (size_t i = 0; i < sizeof signed_values / sizeof *signed_values; i++) {
        char ours[PROTO_TEXT_INT_MAX], theirs[PROTO_TEXT_INT_MAX];
        size_t length = proto_text_i64(ours, signed_values[i]);
        int expected = snprintf(theirs, sizeof theirs, "%" PRId64, signed_values[i]);
        PROTO_CHECK(length == (size_t)expected && strcmp(ours, theirs) == 0);
    }
    const uint64_t unsigned_values[] = {0, 7, 100, 18446744073709551615u};
    for (size_t i = 0; i < sizeof unsigned_values / sizeof *unsigned_values; i++) {
        char ours[PROTO_TEXT_INT_MAX], theirs[PROTO_TEXT_INT_MAX];
        size_t length = proto_text_u64(ours, unsigned_values[i]);
        int expected = snprintf(theirs, sizeof theirs, "%" PRIu64, unsigned_values[i]);
        PROTO_CHECK(length == (size_t)expected && strcmp(ours, theirs) == 0);
    }
    //  Built in pieces, cut where snprintf would have cut.
    for (size_t size = 1; size <= 20; size++) {
        char ours[20], theirs[20];
        size_t used = 0;
        proto_text_add(ours, size, &used, "m:");
        proto_text_add_u64(ours, size, &used, 12345);
        proto_text_add(ours, size, &used, ":");
        proto_text_add_i64(ours, size, &used, -42);
        proto_text_add(ours, size, &used, "-model");
        const char *whole = "m:12345:-42-model";
        int whole_length = snprintf(theirs, size, "%s", whole);
        PROTO_CHECK(whole_length == 17);
        PROTO_CHECK(strcmp(ours, theirs) == 0 && used == strlen(theirs));
    }
    if (verbose)
        printf("OK\n");
}
