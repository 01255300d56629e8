//  proto_malloc: see proto_malloc.h.
#include "proto_malloc.h"
#include "proto_check.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define S_GLIBC_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define S_GLIBC_MALLOC 0
#endif
#endif
#ifndef S_GLIBC_MALLOC
#define S_GLIBC_MALLOC 1
#endif

bool proto_malloc_keep_heap_top(void)
{
#if S_GLIBC_MALLOC
    //  Setting either turns glibc's sliding thresholds off for good, so both
    //  are set, to where that rule would have taken them.
    return mallopt(M_MMAP_THRESHOLD, PROTO_MALLOC_MMAP_THRESHOLD) == 1 &&
           mallopt(M_TRIM_THRESHOLD, PROTO_MALLOC_TRIM_THRESHOLD) == 1;
#else
    return true;
#endif
}

//  --------------------------------------------------------------------------
//  Self test. ctest runs it in a process of its own, so glibc starts from its
//  defaults (128 KiB for both), under which the two heap checks below fail.

void proto_malloc_test(bool verbose)
{
    if (verbose)
        printf(" * proto_malloc: ");
    PROTO_CHECK(proto_malloc_keep_heap_top());
#if S_GLIBC_MALLOC
    //  400 KiB comes from the heap, not a mapping of its own...
    size_t mapped = mallinfo2().hblkhd;
    void *first = malloc(400 * 1024), *second = malloc(400 * 1024);
    PROTO_CHECK(first && second);
    PROTO_CHECK(mallinfo2().hblkhd == mapped);
    //  ...and once freed, the 800 KiB stay at the top of the heap.
    free(second);
    free(first);
    PROTO_CHECK(mallinfo2().keepcost >= 800 * 1024);
    //  A block the heap's top cannot hold and past the threshold gets a
    //  mapping of its own, given back whole when freed.
    void *large = malloc(2 * PROTO_MALLOC_TRIM_THRESHOLD);
    PROTO_CHECK(large && mallinfo2().hblkhd >= mapped + 2 * PROTO_MALLOC_TRIM_THRESHOLD);
    free(large);
    PROTO_CHECK(mallinfo2().hblkhd == mapped);
#endif
    if (verbose)
        printf("OK\n");
}
