//  Runs the selftest of one dispatch class, or of all of them.
#include "dispatch_adapter.h"
#include "dispatch_audio.h"
#include "dispatch_call.h"
#include "dispatch_passthrough.h"
#include "dispatch_policy.h"
#include "dispatch_request.h"
#include "dispatch_server.h"
#include "dispatch_taken.h"
#include "dispatch_reach.h"
#include "proto_test.h"

static const proto_test_t s_tests[] = {
    {"dispatch_adapter", dispatch_adapter_test},
    {"dispatch_policy", dispatch_policy_test},
    {"dispatch_taken", dispatch_taken_test},
    {"dispatch_request", dispatch_request_test},
    {"dispatch_server", dispatch_server_test},
    {"dispatch_reach", dispatch_reach_test},
    {"dispatch_audio", dispatch_audio_test},
    {"dispatch_call", dispatch_call_test},
    {"dispatch_passthrough", dispatch_passthrough_test},
};

PROTO_TEST_MAIN(s_tests)
