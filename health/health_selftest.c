//  Runs the health selftests: all, or the classes named on the command line.
#include "health_complete.h"
#include "health_models.h"
#include "health_server.h"
#include "health_state.h"
#include "proto_test.h"

static const proto_test_t s_tests[] = {
    {"health_state", health_state_test},
    {"health_models", health_models_test},
    {"health_complete", health_complete_test},
    {"health_server", health_server_test},
};

PROTO_TEST_MAIN(s_tests)
