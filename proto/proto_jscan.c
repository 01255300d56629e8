#include "proto_jscan.h"
#include "proto_check.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  --------------------------------------------------------------------------
//  Validation: the grammar jansson's lexer and parser (load.c, 2.14) accept.

static bool s_is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

//  Four hex digits at p, or -1.
static long s_hex4(const unsigned char *p, const unsigned char *end)
{
    if (end - p < 4)
        return -1;
    long value = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        value <<= 4;
        if (c >= '0' && c <= '9')
            value += c - '0';
        else if (c >= 'a' && c <= 'f')
            value += c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            value += c - 'A' + 10;
        else
            return -1;
    }
    return value;
}

//  Length of the well-formed UTF-8 sequence at p (jansson's utf8_check_first
//  and utf8_check_full: no overlong forms, no surrogates, nothing past
//  U+10FFFF), or 0.
static size_t s_utf8(const unsigned char *p, const unsigned char *end)
{
    unsigned char first = p[0];
    size_t size;
    uint32_t value;
    if (first >= 0xC2 && first <= 0xDF) {
        size = 2;
        value = first & 0x1F;
    } else if (first >= 0xE0 && first <= 0xEF) {
        size = 3;
        value = first & 0x0F;
    } else if (first >= 0xF0 && first <= 0xF4) {
        size = 4;
        value = first & 0x07;
    } else
        return 0;
    if ((size_t)(end - p) < size)
        return 0;
    for (size_t i = 1; i < size; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        value = value << 6 | (p[i] & 0x3F);
    }
    if (value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF) || (size == 3 && value < 0x800) ||
        (size == 4 && value < 0x10000))
        return 0;
    return size;
}

//  ASCII bytes a string holds as they are: not controls, quotes or backslashes.
static inline bool s_plain(unsigned char c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

//  Validates the string token opening at `at`; returns what follows it, or
//  NULL. jansson refuses \u0000 in keys always, in values without
//  JSON_ALLOW_NUL; a high surrogate must be followed by a low one.
static const char *s_valid_string(const char *at, const char *end, bool nul_ok)
{
    const unsigned char *p = (const unsigned char *)at + 1, *e = (const unsigned char *)end;
    while (p < e) {
        while (p < e && s_plain(*p))
            p++;
        if (p >= e)
            break;
        unsigned char c = *p;
        if (c == '"')
            return (const char *)p + 1;
        if (c < 0x20)
            return NULL;
        if (c >= 0x80) {
            size_t size = s_utf8(p, e);
            if (!size)
                return NULL;
            p += size;
            continue;
        }
        if (c != '\\') {
            p++;
            continue;
        }
        if (e - p < 2)
            return NULL;
        c = p[1];
        if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
            c == 't') {
            p += 2;
            continue;
        }
        if (c != 'u')
            return NULL;
        long value = s_hex4(p + 2, e);
        if (value < 0 || (value == 0 && !nul_ok))
            return NULL;
        p += 6;
        if (value >= 0xDC00 && value <= 0xDFFF)
            return NULL;
        if (value >= 0xD800 && value <= 0xDBFF) {
            if (e - p < 2 || p[0] != '\\' || p[1] != 'u')
                return NULL;
            long low = s_hex4(p + 2, e);
            if (low < 0xDC00 || low > 0xDFFF)
                return NULL;
            p += 6;
        }
    }
    return NULL;
}

static bool s_digit(const char *p, const char *end)
{
    return p < end && *p >= '0' && *p <= '9';
}

//  Validates the number token at `at`; returns what follows it, or NULL.
//  One digit or more from p: where they end, or NULL when there is none.
static const char *s_digits(const char *p, const char *end)
{
    if (!s_digit(p, end))
        return NULL;
    while (s_digit(p, end))
        p++;
    return p;
}

//  Integers must fit int64 (strtoll), reals and, with INT_AS_REAL,
//  integers must not overflow a double (strtod), as jansson checks.
static const char *s_valid_number(const char *at, const char *end, int flags)
{
    const char *p = at;
    bool negative = *p == '-';
    if (negative)
        p++;
    const char *digits = p;
    if (!s_digit(p, end))
        return NULL;
    if (*p == '0')
        p++;
    else
        while (s_digit(p, end))
            p++;
    size_t integer_digits = (size_t)(p - digits);
    bool integer = true;
    if (p < end && *p == '.') {
        if (!(p = s_digits(p + 1, end)))
            return NULL;
        integer = false;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (!(p = s_digits(p, end)))
            return NULL;
        integer = false;
    }
    //  A number ends before the container does, so strtod below stops
    //  inside the text.
    if (p >= end || !(s_is_space((unsigned char)*p) || *p == ',' || *p == ']' || *p == '}'))
        return NULL;
    if (integer && !(flags & PROTO_JSCAN_INT_AS_REAL)) {
        const char *limit = negative ? "9223372036854775808" : "9223372036854775807";
        if (integer_digits > 19 || (integer_digits == 19 && memcmp(digits, limit, 19) > 0))
            return NULL;
        return p;
    }
    errno = 0;
    double value = strtod(at, NULL);
    if ((value == HUGE_VAL || value == -HUGE_VAL) && errno == ERANGE)
        return NULL;
    return p;
}

static const char *s_valid_scalar(const char *p, const char *end, int flags)
{
    switch (*p) {
    case '"':
        return s_valid_string(p, end, flags & PROTO_JSCAN_ALLOW_NUL);
    case 't':
        return end - p >= 4 && memcmp(p, "true", 4) == 0 ? p + 4 : NULL;
    case 'f':
        return end - p >= 5 && memcmp(p, "false", 5) == 0 ? p + 5 : NULL;
    case 'n':
        return end - p >= 4 && memcmp(p, "null", 4) == 0 ? p + 4 : NULL;
    default:
        return *p == '-' || (*p >= '0' && *p <= '9') ? s_valid_number(p, end, flags) : NULL;
    }
}

//  Records the top object's members as s_valid meets them (what
//  proto_jscan_object finds on valid text), when `top` is given.
static void s_index_open(proto_jscan_object_t *top, const char *object)
{
    if (top)
        top->object = object;
}

static void s_index_key(proto_jscan_object_t *top, const char *key, const char *key_end)
{
    if (!top || !top->complete)
        return;
    if (top->count == PROTO_JSCAN_OBJECT_MAX) {
        top->complete = false; //  and, as proto_jscan_object leaves it, no `after`
        return;
    }
    top->members[top->count].key = key;
    top->members[top->count].key_end = key_end;
}

//  In the top object every value at depth 1 follows the key just recorded.
static void s_index_value(proto_jscan_object_t *top, const char *value)
{
    if (top && top->complete)
        top->members[top->count++].value = value;
}

static void s_index_close(proto_jscan_object_t *top, const char *after)
{
    if (top && top->object && top->complete)
        top->after = after;
}

//  proto_jscan_valid, and with `top` the index of the top object.
static bool s_valid(const char *text, size_t size, int flags, proto_jscan_object_t *top)
{
    const char *end = text + size;
    if (top) {
        //  Field by field: the members are written as they are met.
        top->object = top->after = NULL;
        top->end = end;
        top->count = 0;
        top->complete = true;
    }
    const char *p = proto_jscan_space(text, end);
    if (p >= end || (*p != '{' && *p != '['))
        return false;
    if (*p == '{')
        s_index_open(top, p);
    else
        top = NULL; //  an array: nothing to index
    //  The open containers, innermost last; jansson counts the top value
    //  as depth 1 and refuses any value deeper than its maximum.
    char open[PROTO_JSCAN_MAX_DEPTH + 1];
    size_t depth = 0;
    for (;;) {
        //  A value is expected at p (depth + 1).
        p = proto_jscan_space(p, end);
        if (p >= end || depth + 1 > PROTO_JSCAN_MAX_DEPTH)
            return false;
        if (depth == 1)
            s_index_value(top, p);
        if (*p == '{' || *p == '[') {
            open[depth++] = *p;
            p = proto_jscan_space(p + 1, end);
            if (p < end && *p == (open[depth - 1] == '{' ? '}' : ']')) {
                p++;
                depth--;
                if (!depth)
                    s_index_close(top, p);
            } else if (open[depth - 1] == '[')
                continue;
            else
                goto key;
        } else if (!(p = s_valid_scalar(p, end, flags)))
            return false;
        //  After a value: a comma, the end of containers, or of the text.
        for (;;) {
            p = proto_jscan_space(p, end);
            if (!depth)
                return p == end;
            if (p >= end)
                return false;
            if (*p == ',') {
                p++;
                break;
            }
            if (*p != (open[depth - 1] == '{' ? '}' : ']'))
                return false;
            p++;
            depth--;
            if (!depth)
                s_index_close(top, p);
        }
        if (open[depth - 1] == '[')
            continue;
    key:
        p = proto_jscan_space(p, end);
        const char *key = p;
        if (p >= end || *p != '"' || !(p = s_valid_string(p, end, false)))
            return false;
        if (depth == 1)
            s_index_key(top, key, p);
        p = proto_jscan_space(p, end);
        if (p >= end || *p != ':')
            return false;
        p++;
    }
}

bool proto_jscan_valid(const char *text, size_t size, int flags)
{
    return s_valid(text, size, flags, NULL);
}

bool proto_jscan_valid_indexed(const char *text, size_t size, int flags, proto_jscan_object_t *top)
{
    return s_valid(text, size, flags, top);
}

//  --------------------------------------------------------------------------
//  Reading valid text.

const char *proto_jscan_space(const char *at, const char *end)
{
    while (at < end && s_is_space((unsigned char)*at))
        at++;
    return at;
}

//  Past the closing quote of the string token at `at` (a byte loop: most
//  strings are short, where memchr's setup costs more than it saves).
static const char *s_skip_string(const char *at, const char *end)
{
    for (at++; at < end; at++) {
        if (*at == '"')
            return at + 1;
        if (*at == '\\')
            at++;
    }
    return end;
}

//  Bytes that matter when skipping: 1 inside containers, 2 after scalars.
static const unsigned char s_class[256] = {
    ['"'] = 1, ['{'] = 1, ['['] = 1,  ['}'] = 3,  [']'] = 3,
    [','] = 2, [' '] = 2, ['\t'] = 2, ['\r'] = 2, ['\n'] = 2,
};

const char *proto_jscan_skip(const char *at, const char *end)
{
    if (at >= end)
        return end;
    if (*at == '"')
        return s_skip_string(at, end);
    if (*at == '{' || *at == '[') {
        size_t depth = 0;
        while (at < end) {
            while (at < end && !(s_class[(unsigned char)*at] & 1))
                at++;
            if (at >= end)
                break;
            char c = *at;
            if (c == '"') {
                at = s_skip_string(at, end);
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if (--depth == 0)
                return at + 1;
            at++;
        }
        return end;
    }
    //  A number or literal, up to what ends it (a NUL byte too, which no
    //  valid text holds there).
    while (at < end && *at && !(s_class[(unsigned char)*at] & 2))
        at++;
    return at;
}

//  UTF-8 of one code point into out; returns its length.
static size_t s_encode(uint32_t value, char out[4])
{
    if (value < 0x80) {
        out[0] = (char)value;
        return 1;
    }
    if (value < 0x800) {
        out[0] = (char)(0xC0 | value >> 6);
        out[1] = (char)(0x80 | (value & 0x3F));
        return 2;
    }
    if (value < 0x10000) {
        out[0] = (char)(0xE0 | value >> 12);
        out[1] = (char)(0x80 | (value >> 6 & 0x3F));
        out[2] = (char)(0x80 | (value & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | value >> 18);
    out[1] = (char)(0x80 | (value >> 12 & 0x3F));
    out[2] = (char)(0x80 | (value >> 6 & 0x3F));
    out[3] = (char)(0x80 | (value & 0x3F));
    return 4;
}

//  Decodes the next piece of a valid string's contents at *at into out:
//  one byte, or one escape's UTF-8. Returns its length, 0 at the closing
//  quote.
static size_t s_decode(const char **at, char out[4])
{
    const unsigned char *p = (const unsigned char *)*at;
    if (*p == '"')
        return 0;
    if (*p != '\\') {
        out[0] = (char)*p;
        (*at)++;
        return 1;
    }
    static const char plain[] = "\"\"\\\\//b\bf\fn\nr\rt\t";
    if (p[1] == 'u') {
        uint32_t value = (uint32_t)s_hex4(p + 2, p + 6);
        *at += 6;
        if (value >= 0xD800 && value <= 0xDBFF) {
            value = 0x10000 + ((value - 0xD800) << 10) + ((uint32_t)s_hex4(p + 8, p + 12) - 0xDC00);
            *at += 6;
        }
        return s_encode(value, out);
    }
    const char *match = strchr(plain, p[1]);
    //  Pairs (escape, byte): the escape letter sits at an even offset.
    if ((match - plain) % 2)
        match--;
    out[0] = match[1];
    *at += 2;
    return 1;
}

bool proto_jscan_key_is(const char *at, const char *token_end, const char *key)
{
    size_t size = (size_t)(token_end - at) - 2;
    if (!memchr(at + 1, '\\', size))
        return size == strlen(key) && memcmp(at + 1, key, size) == 0;
    const char *p = at + 1;
    size_t used = 0, length = strlen(key);
    char piece[4];
    size_t n;
    while ((n = s_decode(&p, piece))) {
        if (used + n > length || memcmp(key + used, piece, n) != 0)
            return false;
        used += n;
    }
    return used == length;
}

proto_jscan_type_t proto_jscan_type(const char *value)
{
    if (!value)
        return PROTO_JSCAN_NONE;
    switch (*value) {
    case '{':
        return PROTO_JSCAN_OBJECT;
    case '[':
        return PROTO_JSCAN_ARRAY;
    case '"':
        return PROTO_JSCAN_STRING;
    case 't':
        return PROTO_JSCAN_TRUE;
    case 'f':
        return PROTO_JSCAN_FALSE;
    case 'n':
        return PROTO_JSCAN_NULL;
    default:
        return PROTO_JSCAN_NUMBER;
    }
}

const char *proto_jscan_member(const char *object, const char *end, const char *key)
{
    if (!object || object >= end || *object != '{')
        return NULL;
    const char *at = proto_jscan_space(object + 1, end), *found = NULL;
    while (at < end && *at == '"') {
        const char *key_end = s_skip_string(at, end);
        bool match = proto_jscan_key_is(at, key_end, key);
        const char *value = proto_jscan_space(key_end, end);
        value = proto_jscan_space(value + 1, end); //  past the colon
        if (match)
            found = value;
        at = proto_jscan_space(proto_jscan_skip(value, end), end);
        if (at < end && *at == ',')
            at = proto_jscan_space(at + 1, end);
    }
    return found;
}

void proto_jscan_object(proto_jscan_object_t *self, const char *object, const char *end)
{
    self->object = object;
    self->end = end;
    self->count = 0;
    self->complete = true;
    self->after = NULL;
    if (!object || object >= end || *object != '{')
        return;
    const char *at = proto_jscan_space(object + 1, end);
    while (at < end && *at == '"') {
        if (self->count == PROTO_JSCAN_OBJECT_MAX) {
            self->complete = false;
            return;
        }
        const char *key_end = s_skip_string(at, end);
        const char *value = proto_jscan_space(key_end, end);
        value = proto_jscan_space(value + 1, end); //  past the colon
        self->members[self->count].key = at;
        self->members[self->count].key_end = key_end;
        self->members[self->count].value = value;
        self->count++;
        at = proto_jscan_space(proto_jscan_skip(value, end), end);
        if (at < end && *at == ',')
            at = proto_jscan_space(at + 1, end);
    }
    self->after = at < end ? at + 1 : end; //  past the closing brace
}

const char *proto_jscan_get(const proto_jscan_object_t *self, const char *key)
{
    if (!self->complete)
        return proto_jscan_member(self->object, self->end, key);
    for (size_t i = self->count; i-- > 0;)
        if (proto_jscan_key_is(self->members[i].key, self->members[i].key_end, key))
            return self->members[i].value;
    return NULL;
}

const char *proto_jscan_first(const char *array, const char *end)
{
    if (!array || array >= end || *array != '[')
        return NULL;
    const char *at = proto_jscan_space(array + 1, end);
    return at < end && *at != ']' ? at : NULL;
}

const char *proto_jscan_next(const char *element, const char *end)
{
    return proto_jscan_next_after(proto_jscan_skip(element, end), end);
}

const char *proto_jscan_next_after(const char *element_end, const char *end)
{
    const char *at = proto_jscan_space(element_end, end);
    return at < end && *at == ',' ? proto_jscan_space(at + 1, end) : NULL;
}

size_t proto_jscan_count(const char *array, const char *end)
{
    size_t count = 0;
    for (const char *at = proto_jscan_first(array, end); at; at = proto_jscan_next(at, end))
        count++;
    return count;
}

size_t proto_jscan_string_bytes(const char *string, const char *end)
{
    if (!string || string >= end || *string != '"')
        return 0;
    const char *p = string + 1;
    size_t bytes = 0;
    for (;;) {
        //  Runs of plain bytes first: most content has no escapes.
        while (p < end && *p != '"' && *p != '\\') {
            p++;
            bytes++;
        }
        char piece[4];
        size_t n = p < end ? s_decode(&p, piece) : 0;
        if (!n)
            return bytes;
        bytes += n;
    }
}

bool proto_jscan_string_copy(const char *string, const char *end, char *out, size_t capacity)
{
    if (!string || string >= end || *string != '"' || !capacity)
        return false;
    const char *p = string + 1;
    size_t used = 0;
    char piece[4];
    size_t n;
    while ((n = s_decode(&p, piece))) {
        size_t keep = strnlen(piece, n);
        if (used + keep >= capacity)
            return false;
        memcpy(out + used, piece, keep);
        used += keep;
        if (keep < n)
            break; //  a NUL ends the C string
    }
    out[used] = '\0';
    return true;
}

//  --------------------------------------------------------------------------
//  Self test. Every case is also put to jansson: the scanner must agree
//  with json_loadb on both flag sets dispatch uses.

static bool s_jansson_valid(const char *text, size_t size, int flags)
{
    size_t jansson = (flags & PROTO_JSCAN_ALLOW_NUL ? JSON_ALLOW_NUL : 0) |
                     (flags & PROTO_JSCAN_INT_AS_REAL ? JSON_DECODE_INT_AS_REAL : 0);
    json_t *json = json_loadb(text, size, jansson, NULL);
    json_decref(json);
    return json != NULL;
}

//  proto_jscan_valid_indexed gives proto_jscan_valid's verdict and, on a valid
//  object, proto_jscan_object's index of it, field for field.
static void s_check_indexed(const char *text, size_t size, int flags, bool valid)
{
    proto_jscan_object_t indexed, walked;
    PROTO_CHECK(proto_jscan_valid_indexed(text, size, flags, &indexed) == valid);
    if (!valid)
        return;
    const char *end = text + size, *root = proto_jscan_space(text, end);
    if (*root != '{') {
        PROTO_CHECK(indexed.object == NULL);
        return;
    }
    proto_jscan_object(&walked, root, end);
    PROTO_CHECK(indexed.object == walked.object && indexed.end == walked.end);
    PROTO_CHECK(indexed.after == walked.after && indexed.count == walked.count);
    PROTO_CHECK(indexed.complete == walked.complete);
    for (size_t i = 0; i < walked.count; i++) {
        PROTO_CHECK(indexed.members[i].key == walked.members[i].key);
        PROTO_CHECK(indexed.members[i].key_end == walked.members[i].key_end);
        PROTO_CHECK(indexed.members[i].value == walked.members[i].value);
    }
}

//  Checks the scanner against jansson on text under all four flag sets (and
//  its index against proto_jscan_object's); returns the verdict with `flags`.
static bool s_agree(const char *text, size_t size, int flags)
{
    for (int each = 0; each < 4; each++) {
        bool ours = proto_jscan_valid(text, size, each);
        s_check_indexed(text, size, each, ours);
        //  The one known difference: jansson loses a NUL byte right after
        //  a number or literal (proto_jscan.h); the scanner refuses it.
        bool quirk = !ours && memchr(text, '\0', size);
        if (ours != s_jansson_valid(text, size, each) && !quirk) {
            fprintf(stderr, "proto_jscan: flags %d disagree with jansson on [%.*s]\n", each,
                    (int)(size < 200 ? size : 200), text);
            PROTO_CHECK(false);
        }
    }
    return proto_jscan_valid(text, size, flags);
}

#define S_VALID(text) PROTO_CHECK(s_agree(text, sizeof text - 1, PROTO_JSCAN_ALLOW_NUL))
#define S_INVALID(text) PROTO_CHECK(!s_agree(text, sizeof text - 1, PROTO_JSCAN_ALLOW_NUL))

//  Nested arrays `levels` deep, `inner` in the innermost.
static bool s_nested(size_t levels, const char *inner)
{
    size_t size = 2 * levels + strlen(inner);
    char *text = malloc(size);
    PROTO_CHECK(text);
    memset(text, '[', levels);
    memcpy(text + levels, inner, strlen(inner));
    memset(text + levels + strlen(inner), ']', levels);
    bool valid = s_agree(text, size, 0);
    free(text);
    return valid;
}

static const char *s_seeds[] = {
    "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\\u00e9\\ud83d\\ude00\\n\"}"
    ","
    "\"finish_reason\":null}],\"usage\":null,\"x\":[1,-0,2.5e-3,true,false,{}]}",
    "{\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":"
    "\"\xc3\xa9\xe2\x82"
    "\xac\xf0\x9f\x98\x80\\\"\\\\\\/\\b\\f\\r\\t\"}}",
    "[{\"a\":[[],{},\"\",0,1E5,-1e-5]}, \"\\u0000\", 9223372036854775807]",
};

//  Each seed cut at every length and with each byte replaced by a few
//  others: the scanner and jansson agree on every one.
static void s_mutations(void)
{
    static const char replace[] = {'"',    '\\',   '{',    '}',    '[',    ']',   ',',
                                   ':',    '0',    'e',    '-',    'u',    ' ',   '\0',
                                   '\x1f', '\x80', '\xc3', '\xed', '\xf4', '\xff'};
    for (size_t i = 0; i < sizeof s_seeds / sizeof s_seeds[0]; i++) {
        size_t size = strlen(s_seeds[i]);
        char *copy = malloc(size + 1);
        PROTO_CHECK(copy);
        for (size_t cut = 0; cut <= size; cut++)
            s_agree(s_seeds[i], cut, 0);
        for (size_t at = 0; at < size; at++)
            for (size_t r = 0; r < sizeof replace; r++) {
                memcpy(copy, s_seeds[i], size);
                copy[at] = replace[r];
                s_agree(copy, size, 0);
            }
        free(copy);
    }
}

static void s_test_lookups(void)
{
    const char *text = " {\"a\":1, \"b\" : {\"c\":[1,{\"d\":\"x\"}]}, \"a\":\"last\", "
                       "\"\\u0061b\":true, \"s\":\"h\\u00e9\\ud83d\\ude00\\n\\u0000z\"}";
    const char *end = text + strlen(text);
    PROTO_CHECK(proto_jscan_valid(text, strlen(text), PROTO_JSCAN_ALLOW_NUL));
    const char *root = proto_jscan_space(text, end);
    PROTO_CHECK(proto_jscan_type(root) == PROTO_JSCAN_OBJECT);
    //  The last duplicate wins, as in jansson.
    const char *a = proto_jscan_member(root, end, "a");
    PROTO_CHECK(proto_jscan_type(a) == PROTO_JSCAN_STRING && strncmp(a, "\"last\"", 6) == 0);
    json_t *json = json_loadb(text, strlen(text), JSON_ALLOW_NUL, NULL);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(json, "a")), "last") == 0);
    //  Keys compare decoded.
    PROTO_CHECK(proto_jscan_type(proto_jscan_member(root, end, "ab")) == PROTO_JSCAN_TRUE);
    PROTO_CHECK(!proto_jscan_member(root, end, "c"));
    PROTO_CHECK(!proto_jscan_member(a, end, "a"));
    const char *c = proto_jscan_member(proto_jscan_member(root, end, "b"), end, "c");
    PROTO_CHECK(proto_jscan_count(c, end) == 2 && proto_jscan_count(a, end) == 0);
    const char *second = proto_jscan_next(proto_jscan_first(c, end), end);
    PROTO_CHECK(proto_jscan_type(second) == PROTO_JSCAN_OBJECT && !proto_jscan_next(second, end));
    PROTO_CHECK(proto_jscan_string_bytes(proto_jscan_member(second, end, "d"), end) == 1);
    //  Decoded length: é 2, the emoji 4, \n 1, NUL 1, z 1, h 1.
    const char *s = proto_jscan_member(root, end, "s");
    PROTO_CHECK(proto_jscan_string_bytes(s, end) == 10);
    PROTO_CHECK(json_string_length(json_object_get(json, "s")) == 10);
    char copy[16];
    PROTO_CHECK(proto_jscan_string_copy(s, end, copy, sizeof copy));
    PROTO_CHECK(strcmp(copy, json_string_value(json_object_get(json, "s"))) == 0);
    PROTO_CHECK(!proto_jscan_string_copy(s, end, copy, 4));
    PROTO_CHECK(!proto_jscan_string_copy(root, end, copy, sizeof copy));
    PROTO_CHECK(proto_jscan_string_bytes(root, end) == 0);
    json_decref(json);
    //  The index finds what member finds, also past its capacity.
    proto_jscan_object_t index;
    proto_jscan_object(&index, root, end);
    PROTO_CHECK(index.complete && index.count == 5);
    PROTO_CHECK(proto_jscan_get(&index, "a") == a && !proto_jscan_get(&index, "c"));
    PROTO_CHECK(proto_jscan_get(&index, "ab") == proto_jscan_member(root, end, "ab"));
    char wide[1024] = "{";
    for (int i = 0; i < PROTO_JSCAN_OBJECT_MAX + 5; i++)
        sprintf(wide + strlen(wide), "%s\"k%d\":%d", i ? "," : "", i % (PROTO_JSCAN_OBJECT_MAX + 2),
                i);
    strcat(wide, "}");
    const char *wide_end = wide + strlen(wide);
    PROTO_CHECK(proto_jscan_valid(wide, strlen(wide), 0));
    s_check_indexed(wide, strlen(wide), 0, true);
    proto_jscan_object(&index, wide, wide_end);
    PROTO_CHECK(!index.complete);
    PROTO_CHECK(proto_jscan_get(&index, "k1") == proto_jscan_member(wide, wide_end, "k1"));
    PROTO_CHECK(strncmp(proto_jscan_get(&index, "k1"), "35", 2) == 0);
    proto_jscan_object(&index, a, end);
    PROTO_CHECK(index.count == 0 && !proto_jscan_get(&index, "a"));
    PROTO_CHECK(proto_jscan_type(NULL) == PROTO_JSCAN_NONE);
    PROTO_CHECK(proto_jscan_type("-1") == PROTO_JSCAN_NUMBER);
    PROTO_CHECK(proto_jscan_type("null") == PROTO_JSCAN_NULL);
    PROTO_CHECK(proto_jscan_type("false") == PROTO_JSCAN_FALSE);
}

void proto_jscan_test(bool verbose)
{
    if (verbose)
        printf(" * proto_jscan: ");
    S_VALID("{}");
    S_VALID(" [ ] ");
    S_VALID("{\"a\":[1,2,{\"b\":null}],\"c\":\"\\u00e9\\uD83D\\uDE00\\\"\\\\\\/\\b\\f\\n\\r\\t\"}");
    S_VALID("[-0, 0, 1.5, -1.5e10, 1E+2, 1e-400, 9223372036854775807, -9223372036854775808]");
    S_VALID("[\"\\u0000\"]"); //  with JSON_ALLOW_NUL only
    S_VALID("[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\x7f\"]");
    S_VALID("{\"a\":1,\"a\":2}");
    S_INVALID("");
    S_INVALID("   ");
    S_INVALID("1");
    S_INVALID("\"s\"");
    S_INVALID("null");
    S_INVALID("{} x");
    S_INVALID("{}{}");
    S_INVALID("{,}");
    S_INVALID("{\"a\"}");
    S_INVALID("{\"a\":1,}");
    S_INVALID("[1,]");
    S_INVALID("[1 2]");
    S_INVALID("{\"a\" 1}");
    S_INVALID("{'a':1}");
    S_INVALID("[01]");
    S_INVALID("[-01]");
    S_INVALID("[1.]");
    S_INVALID("[.5]");
    S_INVALID("[1e]");
    S_INVALID("[1e+]");
    S_INVALID("[-]");
    S_INVALID("[+1]");
    S_INVALID("[0x10]");
    S_INVALID("[1e400]");
    S_INVALID("[-1e400]");
    S_INVALID("[9223372036854775808]");
    S_INVALID("[-9223372036854775809]");
    S_INVALID("[tru]");
    S_INVALID("[truex]");
    S_INVALID("[True]");
    S_INVALID("[nan]");
    S_INVALID("[\"a\nb\"]");
    S_INVALID("[\"a\tb\"]");
    S_INVALID("[\"\\x\"]");
    S_INVALID("[\"\\u12\"]");
    S_INVALID("[\"\\u12G4\"]");
    S_INVALID("[\"\\uD800\"]");
    S_INVALID("[\"\\uDC00\"]");
    S_INVALID("[\"\\uD800\\u0041\"]");
    S_INVALID("[\"\\uD800\\\\u0041\"]");
    S_INVALID("[\"\\uD800\\uD800\"]");
    S_INVALID("{\"\\u0000\":1}"); //  NUL in a key: never
    S_INVALID("[\"\xc0\xaf\"]");  //  overlong
    S_INVALID("[\"\xe0\x80\xaf\"]");
    S_INVALID("[\"\xed\xa0\x80\"]"); //  a surrogate in UTF-8
    S_INVALID("[\"\xf4\x90\x80\x80\"]");
    S_INVALID("[\"\xf5\x80\x80\x80\"]");
    S_INVALID("[\"\x80\"]");
    S_INVALID("[\"\xc3\"]");
    S_INVALID("[\"\xc3\"");
    S_INVALID("[\"abc");
    S_INVALID("[\"\xc3\xa9\"]\xc3\xa9");
    S_INVALID("{\"a\":1}\x00");
    S_INVALID("[\"a\x00\"]");
    PROTO_CHECK(!proto_jscan_valid("[1\0]", 4, 0) && s_jansson_valid("[1\0]", 4, 0));
    S_INVALID("\xef\xbb\xbf{}"); //  a byte order mark is not whitespace
    //  Flags: \u0000 in values and integers past int64.
    PROTO_CHECK(!s_agree("[\"\\u0000\"]", 10, 0));
    PROTO_CHECK(s_agree("[123456789012345678901234]", 26, PROTO_JSCAN_INT_AS_REAL));
    PROTO_CHECK(!s_agree("[123456789012345678901234]", 26, 0));
    char huge[420] = "[1";
    memset(huge + 2, '0', 400);
    strcpy(huge + 402, "]");
    PROTO_CHECK(!s_agree(huge, strlen(huge), PROTO_JSCAN_INT_AS_REAL));
    //  Depth: the top value is 1, nothing deeper than 2048.
    PROTO_CHECK(s_nested(PROTO_JSCAN_MAX_DEPTH, ""));
    PROTO_CHECK(!s_nested(PROTO_JSCAN_MAX_DEPTH, "1"));
    PROTO_CHECK(s_nested(PROTO_JSCAN_MAX_DEPTH - 1, "1"));
    PROTO_CHECK(!s_nested(PROTO_JSCAN_MAX_DEPTH + 1, ""));
    PROTO_CHECK(!s_nested(PROTO_JSCAN_MAX_DEPTH - 1, "{\"a\":1}"));
    PROTO_CHECK(s_nested(PROTO_JSCAN_MAX_DEPTH - 1, "{}"));
    s_mutations();
    s_test_lookups();
    if (verbose)
        printf("OK\n");
}
