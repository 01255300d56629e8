//  Runs the selftest of one ingress class, or of all of them.
#include "ingress_admin.h"
#include "ingress_buffer.h"
#include "ingress_daemon.h"
#include "ingress_parse.h"
#include "ingress_route.h"
#include "ingress_server.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;   //  class name as ctest calls it
    void (*test)(bool); //  its selftest
} s_test_t;

static const s_test_t s_tests[] = {
    {"ingress_parse", ingress_parse_test},   {"ingress_buffer", ingress_buffer_test},
    {"ingress_route", ingress_route_test},   {"ingress_daemon", ingress_daemon_test},
    {"ingress_server", ingress_server_test}, {"ingress_admin", ingress_admin_test},
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
