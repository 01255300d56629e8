//  Runs the router's selftests: all, or the classes named on the command line.
#include "router_breaker.h"
#include "router_limit.h"
#include "router_stats.h"
#include "router_sticky.h"
#include "router_select.h"
#include "router_server.h"
#include "proto_test.h"

static const proto_test_t s_tests[] = {
    {"router_breaker", router_breaker_test}, {"router_sticky", router_sticky_test},
    {"router_stats", router_stats_test},     {"router_limit", router_limit_test},
    {"router_select", router_select_test},   {"router_server", router_server_test},
};

PROTO_TEST_MAIN(s_tests)
