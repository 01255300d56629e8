/*  ingress_scan: a request body read in place with proto_jscan, the fast
    path of ingress_parse_body.

    jansson builds a tree of every value of the body (with a hash table per
    object, for JSON_REJECT_DUPLICATES) only for ingress to read a dozen
    members of it: 15.5k of ingress's ~93k instructions a request (callgrind,
    docs/benchmarks.md). The scanner validates the text exactly as json_loadb
    does, then reads those members on the text.

    It decides only bodies it can read entirely and that pass every check:
    valid, no key twice in any object, every rule of ingress_parse_body met.
    Anything else (an error to explain, an image generation, a key written
    with escapes, nesting deeper than 64) is left to the jansson path, so
    errors keep jansson's wording and a body the scanner cannot vouch for
    is never admitted by it. fuzz_ingress_body and ingress_scan_test hold
    the two paths to the same answers.
*/
#ifndef INGRESS_SCAN_H_INCLUDED
#define INGRESS_SCAN_H_INCLUDED

#include "ingress_parse.h"

#include <stdbool.h>
#include <stddef.h>

//  ingress_parse_body's arguments. True when the body was read and found
//  good: *out is filled as the jansson path would fill it (the caller
//  releases it). False when the jansson path must decide; *out is then
//  left as it was.
bool ingress_scan_body(int protocol, bool count_tokens, const char *path_model, const char *data,
                       size_t size, ingress_body_t *out);

//  Self test: bodies of every protocol against the jansson path.
void ingress_scan_test(bool verbose);

#endif
