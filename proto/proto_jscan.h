/*  proto_jscan: a strict JSON scanner that validates and reads JSON text in
    place, allocating nothing.

    Why not jansson here: dispatch reads a handful of members of every
    stream event and answer it relays (usage, content bytes, end markers,
    errors). Parsing each whole event into a jansson tree only for that was
    a third of dispatch's CPU on streamed completions (perf, issue 11), most
    of it jansson's lexer. This scanner decides validity exactly as
    json_loadb does with the flags below (RFC 8259, strict UTF-8, escapes
    and surrogate pairs, integers that fit int64, reals that do not
    overflow, depth 2048, nothing after the value, no NUL in keys), and then
    finds a member's value, walks arrays and measures strings on the text.
    The equivalence with jansson is tested by proto_jscan_test and by
    dispatch_passthrough_test / fuzz_passthrough against the jansson path.

    One quirk of jansson is not copied: its lexer loses a NUL byte that
    directly follows a number or true/false/null (an unget of byte 0 is
    dropped), so json_loadb loads "[1\0]"; the scanner refuses every raw
    NUL. Callers take the jansson path whenever the scanner refuses, so a
    scanner stricter than jansson changes no result.

    A value is named by the pointer to its first byte; `end` is the end of
    the whole text. The lookups expect text proto_jscan_valid accepted (the
    skip helpers also serve dispatch's in-place edits of such text).
    Plain functions, no state.
*/
#ifndef PROTO_JSCAN_H_INCLUDED
#define PROTO_JSCAN_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

//  Flags of proto_jscan_valid, each meaning what jansson's flag of the same
//  name means for json_loadb (without JSON_DECODE_ANY: the text must be
//  an object or an array).
#define PROTO_JSCAN_ALLOW_NUL 0x1   //  JSON_ALLOW_NUL: \u0000 in string values
#define PROTO_JSCAN_INT_AS_REAL 0x2 //  JSON_DECODE_INT_AS_REAL: integers need only fit a double

//  jansson's JSON_PARSER_MAX_DEPTH: the top value is at depth 1.
#define PROTO_JSCAN_MAX_DEPTH 2048

typedef enum {
    PROTO_JSCAN_NONE = 0, //  no value (NULL pointer)
    PROTO_JSCAN_OBJECT,
    PROTO_JSCAN_ARRAY,
    PROTO_JSCAN_STRING,
    PROTO_JSCAN_NUMBER,
    PROTO_JSCAN_TRUE,
    PROTO_JSCAN_FALSE,
    PROTO_JSCAN_NULL
} proto_jscan_type_t;

//  True when json_loadb(text, size, flags) would load the text.
bool proto_jscan_valid(const char *text, size_t size, int flags);

//  Past JSON whitespace.
const char *proto_jscan_space(const char *at, const char *end);

//  Past one value of valid text (a string token too).
const char *proto_jscan_skip(const char *at, const char *end);

//  True when the string token [at, token_end) decodes to exactly `key`.
bool proto_jscan_key_is(const char *at, const char *token_end, const char *key);

//  The kind of the value at `value` (NONE for NULL).
proto_jscan_type_t proto_jscan_type(const char *value);

//  The value of member `key` of the object at `object`: the last one when
//  the key repeats (jansson keeps the last). NULL when `object` is not an
//  object (or NULL) or has no such member.
const char *proto_jscan_member(const char *object, const char *end, const char *key);

//  The members of one object, found in one pass, for reading several of
//  them without walking the object again for each.
#define PROTO_JSCAN_OBJECT_MAX 32
typedef struct {
    const char *object, *end;
    const char *after; //  past the object's closing brace (NULL when no object)
    size_t count;      //  members indexed
    bool complete;     //  all of them (else lookups fall back to proto_jscan_member)
    struct {
        const char *key, *key_end; //  the key's string token
        const char *value;
    } members[PROTO_JSCAN_OBJECT_MAX];
} proto_jscan_object_t;

//  Indexes the object at `object` (none when it is not an object or NULL).
void proto_jscan_object(proto_jscan_object_t *self, const char *object, const char *end);

//  proto_jscan_valid that also indexes the top object on its way through the
//  text, as proto_jscan_object would after it, so the text is walked once.
//  *top is that index when the text is valid and its top value an object;
//  top->object is NULL when it is an array.
bool proto_jscan_valid_indexed(const char *text, size_t size, int flags, proto_jscan_object_t *top);

//  proto_jscan_member through the index: the last member named key, or NULL.
const char *proto_jscan_get(const proto_jscan_object_t *self, const char *key);

//  The first element of the array at `array`, NULL when it is empty or not
//  an array; then the element after `element`, NULL after the last.
const char *proto_jscan_first(const char *array, const char *end);
const char *proto_jscan_next(const char *element, const char *end);

//  The element after the one that ends at element_end (an index's `after`).
const char *proto_jscan_next_after(const char *element_end, const char *end);

//  Elements of the array at `array` (0 when not an array).
size_t proto_jscan_count(const char *array, const char *end);

//  Bytes of the decoded UTF-8 of the string at `string` (what
//  json_string_length gives), 0 when it is not a string.
size_t proto_jscan_string_bytes(const char *string, const char *end);

//  The string at `string` decoded into out as a C string, up to its first
//  NUL (what json_string_value shows to strcmp). False when it is not a
//  string or does not fit in `capacity` bytes.
bool proto_jscan_string_copy(const char *string, const char *end, char *out, size_t capacity);

//  Self test: a valid and invalid corpus, each also checked against jansson.
void proto_jscan_test(bool verbose);

#endif
