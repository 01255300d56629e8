//  Runs the selftest of one ingress class, or of all of them.
#include "ingress_admit.h"
#include "ingress_buffer.h"
#include "ingress_daemon.h"
#include "ingress_http.h"
#include "ingress_images.h"
#include "ingress_lease.h"
#include "ingress_models.h"
#include "ingress_parse.h"
#include "ingress_scan.h"
#include "ingress_queue.h"
#include "ingress_relay.h"
#include "ingress_request.h"
#include "ingress_route.h"
#include "ingress_server.h"
#include "ingress_usage.h"
#include "proto_test.h"

static const proto_test_t s_tests[] = {
    {"ingress_parse", ingress_parse_test},     {"ingress_scan", ingress_scan_test},
    {"ingress_buffer", ingress_buffer_test},   {"ingress_route", ingress_route_test},
    {"ingress_daemon", ingress_daemon_test},   {"ingress_server", ingress_server_test},
    {"ingress_lease", ingress_lease_test},     {"ingress_models", ingress_models_test},
    {"ingress_usage", ingress_usage_test},     {"ingress_queue", ingress_queue_test},
    {"ingress_http", ingress_http_test},       {"ingress_admit", ingress_admit_test},
    {"ingress_relay", ingress_relay_test},     {"ingress_images", ingress_images_test},
    {"ingress_request", ingress_request_test},
};

PROTO_TEST_MAIN(s_tests)
