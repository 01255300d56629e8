//  Runs the selftest of one ledger class, or of all of them.
#include "ledger_report.h"
#include "ledger_store.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;   //  class name as ctest calls it
    void (*test)(bool); //  its selftest
} s_test_t;

static const s_test_t s_tests[] = {
    {"ledger_store", ledger_store_test},
    {"ledger_report", ledger_report_test},
};

int main(int argc, char **argv)
{
    bool any = false;
    for (size_t i = 0; i < sizeof s_tests / sizeof s_tests[0]; i++)
        if (argc < 2 || strcmp(argv[1], s_tests[i].name) == 0) {
            s_tests[i].test(true);
            any = true;
        }
    if (!any) {
        fprintf(stderr, "no test named %s\n", argv[1]);
        return 1;
    }
    return 0;
}
