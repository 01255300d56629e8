/*  proto_text: the two things the request path did with snprintf most,
    copying a string into a fixed field and writing an integer, without
    its format parser.

    snprintf(dest, size, "%s", src) costs ~600 instructions and "%llu"
    ~700 under callgrind, whatever the length: per request that was ~24,000
    instructions in dispatch (31 calls), 12,000 in billing, 10,000 in
    ingress and 14,000 in the ledger (its batch statement writes 16 integers
    a row as text). These do the same in tens.
*/
#ifndef PROTO_TEXT_H_INCLUDED
#define PROTO_TEXT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Room for any 64-bit integer in decimal: 20 digits, a sign, the NUL.
#define PROTO_TEXT_INT_MAX 22

//  Copies src into dest, a field of `size` bytes, cut to size - 1 bytes and
//  NUL-terminated, as snprintf(dest, size, "%s", src) does (NULL copies "",
//  size 0 writes nothing). Returns strlen(src): size or more means it was cut.
size_t proto_text_copy(char *dest, size_t size, const char *src);

//  Writes value in decimal, NUL-terminated, into dest (PROTO_TEXT_INT_MAX
//  bytes); returns the digits' length.
size_t proto_text_u64(char *dest, uint64_t value);
size_t proto_text_i64(char *dest, int64_t value);

//  Appends to the text being built in dest (a field of `size` bytes, its
//  length in *used): cut at the end and NUL-terminated, as a run of
//  snprintf calls at dest + *used would leave it (size must be > 0).
void proto_text_add(char *dest, size_t size, size_t *used, const char *text);
void proto_text_add_u64(char *dest, size_t size, size_t *used, uint64_t value);
void proto_text_add_i64(char *dest, size_t size, size_t *used, int64_t value);

void proto_text_test(bool verbose);

#endif
