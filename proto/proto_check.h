/*  proto_check: the one check macro of every self test and probe.

    PROTO_CHECK(expression) evaluates expression once, always (it is never
    compiled out, whatever NDEBUG says), and on false prints where and what
    failed and aborts. Self tests use it for everything they verify, so the
    expression may do the work under test (a parse, a send, a decode);
    assert() stays for our own invariants in library code, where it has no
    side effects (STYLE.md).
*/
#ifndef PROTO_CHECK_H_INCLUDED
#define PROTO_CHECK_H_INCLUDED

#include <stdio.h>
#include <stdlib.h>

#define PROTO_CHECK(expression)                                                                    \
    do {                                                                                           \
        if (!(expression)) {                                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #expression);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
