/*  ops_test: the check macro the ops self tests use.

    Unlike assert it is never compiled out (a build with -DNDEBUG still
    tests), so the expression may have side effects.
*/
#ifndef OPS_TEST_H_INCLUDED
#define OPS_TEST_H_INCLUDED

#include <stdio.h>
#include <stdlib.h>

#define OPS_CHECK(expression)                                                                      \
    do {                                                                                           \
        if (!(expression)) {                                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #expression);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
