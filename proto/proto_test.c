#include "proto_test.h"

#include <malloc.h>
#include <stdio.h>
#include <string.h>

int proto_test_main(int argc, char **argv, const proto_test_t *tests, size_t count)
{
    for (int a = 1; a < argc; a++) {
        bool known = false;
        for (size_t i = 0; i < count; i++)
            known = known || strcmp(argv[a], tests[i].name) == 0;
        if (!known) {
            fprintf(stderr, "%s: no test named %s\n", argv[0], argv[a]);
            return 2;
        }
    }
    for (size_t i = 0; i < count; i++) {
        bool wanted = argc < 2;
        for (int a = 1; a < argc; a++)
            wanted = wanted || strcmp(argv[a], tests[i].name) == 0;
        if (wanted)
            tests[i].test(true);
    }
    return 0;
}

size_t proto_test_heap_in_use(void)
{
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}
