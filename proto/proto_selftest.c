//  Runs the selftest of one proto class, or of all of them.
#include "proto_batch.h"
#include "proto_snapshot.h"
#include "proto_price.h"
#include "proto_reach.h"
#include "proto_capture.h"
#include "proto_config.h"
#include "proto_convert.h"
#include "proto_crypto.h"
#include "proto_error.h"
#include "proto_expose.h"
#include "proto_outbox.h"
#include "proto_loop.h"
#include "proto_metrics.h"
#include "proto_msg.h"
#include "proto_observe.h"
#include "proto_service.h"
#include "proto_socket.h"
#include "proto_sse.h"
#include "proto_trace.h"
#include "proto_usage.h"
#include "proto_jscan.h"
#include "proto_malloc.h"
#include "proto_pid.h"
#include "proto_sched.h"
#include "proto_idset.h"
#include "proto_text.h"
#include "proto_peer.h"
#include "proto_test.h"
#include "proto_tls.h"
#include "proto_upstream.h"
#include "proto_map.h"

static const proto_test_t s_tests[] = {
    {"proto_config", proto_config_test},     {"proto_msg", proto_msg_test},
    {"proto_loop", proto_loop_test},         {"proto_metrics", proto_metrics_test},
    {"proto_service", proto_service_test},   {"proto_crypto", proto_crypto_test},
    {"proto_outbox", proto_outbox_test},     {"proto_error", proto_error_test},
    {"proto_sse", proto_sse_test},           {"proto_usage", proto_usage_test},
    {"proto_convert", proto_convert_test},   {"proto_expose", proto_expose_test},
    {"proto_trace", proto_trace_test},       {"proto_observe", proto_observe_test},
    {"proto_capture", proto_capture_test},   {"proto_batch", proto_batch_test},
    {"proto_price", proto_price_test},       {"proto_socket", proto_socket_test},
    {"proto_tls", proto_tls_test},           {"proto_peer", proto_peer_test},
    {"proto_upstream", proto_upstream_test}, {"proto_map", proto_map_test},
    {"proto_reach", proto_reach_test},       {"proto_jscan", proto_jscan_test},
    {"proto_malloc", proto_malloc_test},     {"proto_pid", proto_pid_test},
    {"proto_sched", proto_sched_test},       {"proto_idset", proto_idset_test},
    {"proto_text", proto_text_test},         {"proto_snapshot", proto_snapshot_test},
};

PROTO_TEST_MAIN(s_tests)
