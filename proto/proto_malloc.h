/*  proto_malloc: glibc's malloc set for a program whose thread frees the
    messages libzmq's I/O thread allocated.

    libzmq allocates each received message in its I/O thread's malloc arena,
    and the program's thread frees it there. With glibc's defaults, each time
    that arena's free top grows past 128 KiB, a free hands the pages back to
    the kernel (madvise, which flushes the TLB of every CPU the process runs
    on), and the next messages fault them in again. In ingress, during 32
    streams of 50 chunks: ~97 madvise and ~1,570 page faults a second, 8.9 %
    of its main thread's samples, and ~11 % more ingress CPU per stream than
    without (docs/benchmarks.md).

    proto_malloc_keep_heap_top fixes the two thresholds where glibc's own
    sliding rule would put them once a 512 KiB block had been freed: blocks
    of 512 KiB and more get a mapping of their own, and an arena keeps up to
    1 MiB free at its top before giving it back. Under the sanitizers, whose
    allocator replaces glibc's, there is nothing to set.
*/
#ifndef PROTO_MALLOC_H_INCLUDED
#define PROTO_MALLOC_H_INCLUDED

#include <stdbool.h>

//  Blocks this large or larger are mapped on their own.
#define PROTO_MALLOC_MMAP_THRESHOLD (512 * 1024)
//  Free space an arena keeps at its top.
#define PROTO_MALLOC_TRIM_THRESHOLD (1024 * 1024)

//  Call once at start, before any thread. False if glibc refused a setting.
bool proto_malloc_keep_heap_top(void);

void proto_malloc_test(bool verbose);

#endif
