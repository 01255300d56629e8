/*  proto_test: the runner every component's selftest program shares.

    Each component builds one selftest program from a table of its classes'
    selftests; ctest runs it once per class (`billing_selftest billing_price`),
    and with no argument it runs them all.
*/
#ifndef PROTO_TEST_H_INCLUDED
#define PROTO_TEST_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *name;   //  class name, as ctest calls it
    void (*test)(bool); //  its selftest
} proto_test_t;

//  Runs the tests named on the command line, or all of them. Returns the
//  exit code: 0, or 2 when a name matches no test.
int proto_test_main(int argc, char **argv, const proto_test_t *tests, size_t count);

//  Bytes glibc's malloc has handed out and not had back, mmap'd blocks
//  included: what a self test measures a structure's memory by. Under
//  ASan, whose allocator is its own, always 0.
size_t proto_test_heap_in_use(void);

//  Defines main() over a table of tests.
#define PROTO_TEST_MAIN(table)                                                                     \
    int main(int argc, char **argv)                                                                \
    {                                                                                              \
        return proto_test_main(argc, argv, table, sizeof table / sizeof table[0]);                 \
    }

#endif
