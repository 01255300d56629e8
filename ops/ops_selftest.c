/*  ops_selftest CLASS: runs one class' self test (ctest runs each on its own). */
#include "ops_admin.h"
#include "ops_ledger.h"
#include "ops_migrate.h"
#include "ops_reset.h"
#include "ops_tz.h"
#include "ops_state.h"
#include "ops_supervisor.h"
#include "ops_top.h"
#include "proto_test.h"

static const proto_test_t s_tests[] = {
    {"ops_migrate", ops_migrate_test}, {"ops_admin", ops_admin_test},
    {"ops_state", ops_state_test},     {"ops_supervisor", ops_supervisor_test},
    {"ops_top", ops_top_test},         {"ops_ledger", ops_ledger_test},
    {"ops_reset", ops_reset_test},     {"ops_tz", ops_tz_test},
};

PROTO_TEST_MAIN(s_tests)
