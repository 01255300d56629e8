//  Runs the router's selftests: all, or the classes named on the command line.
#include "router_breaker.h"
#include "router_limit.h"
#include "router_map.h"
#include "router_stats.h"
#include "router_sticky.h"
#include "router_select.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;   //  class name, as ctest calls it
    void (*test)(bool); //  its selftest
} s_class_t;

static const s_class_t s_classes[] = {
    {"router_breaker", router_breaker_test}, {"router_map", router_map_test},
    {"router_sticky", router_sticky_test},   {"router_stats", router_stats_test},
    {"router_limit", router_limit_test},     {"router_select", router_select_test},
};
#define S_CLASS_COUNT (sizeof s_classes / sizeof s_classes[0])

int main(int argc, char **argv)
{
    for (size_t i = 0; i < S_CLASS_COUNT; i++) {
        bool wanted = argc < 2;
        for (int a = 1; a < argc; a++)
            wanted = wanted || strcmp(argv[a], s_classes[i].name) == 0;
        if (wanted)
            s_classes[i].test(true);
    }
    return 0;
}
