//  Runs the selftest of one ledger class, or of all of them.
#include "ledger_store.h"
#include "proto_test.h"

static const proto_test_t s_tests[] = {
    {"ledger_store", ledger_store_test},
};

PROTO_TEST_MAIN(s_tests)
