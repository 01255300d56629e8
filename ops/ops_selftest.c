/*  ops_selftest CLASS: runs one class' self test (ctest runs each on its own). */
#include "ops_admin.h"
#include "ops_migrate.h"
#include "ops_state.h"
#include "ops_supervisor.h"
#include "ops_top.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;   //  class name, as given to ctest
    void (*test)(bool); //  its self test
} s_class_t;

static const s_class_t s_classes[] = {
    {"ops_migrate", ops_migrate_test},
    {"ops_admin", ops_admin_test},
    {"ops_state", ops_state_test},
    {"ops_supervisor", ops_supervisor_test},
    {"ops_top", ops_top_test},
};

int main(int argc, char **argv)
{
    int ran = 0;
    for (size_t i = 0; i < sizeof s_classes / sizeof s_classes[0]; i++)
        if (argc < 2 || strcmp(argv[1], s_classes[i].name) == 0) {
            s_classes[i].test(true);
            ran++;
        }
    if (ran == 0) {
        fprintf(stderr, "ops_selftest: no class named %s\n", argv[1]);
        return 2;
    }
    return 0;
}
