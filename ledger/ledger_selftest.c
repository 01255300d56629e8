//  Runs the selftest of one ledger class, or of all of them.
#include "ledger_report.h"
#include "ledger_store.h"
#include "proto_test.h"

static const proto_test_t s_tests[] = {
    {"ledger_store", ledger_store_test},
    {"ledger_report", ledger_report_test},
};

PROTO_TEST_MAIN(s_tests)
