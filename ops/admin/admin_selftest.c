/*  admin_selftest CLASS: runs one admin class' self test (ctest runs each on its own). */
#include "admin_api.h"
#include "admin_call.h"
#include "admin_handlers.h"
#include "admin_report.h"
#include "admin_resource.h"
#include "admin_server.h"
#include "proto_test.h"

static const proto_test_t s_tests[] = {
    {"admin_call", admin_call_test},       {"admin_resource", admin_resource_test},
    {"admin_api", admin_api_test},         {"admin_auth", admin_auth_test},
    {"admin_routing", admin_routing_test}, {"admin_report", admin_report_test},
    {"admin_server", admin_server_test},
};

PROTO_TEST_MAIN(s_tests)
