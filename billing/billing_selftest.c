//  Runs the selftest of one billing class, or of all of them.
#include "billing.h"
#include "billing_balance.h"
#include "billing_book.h"
#include "billing_committed.h"
#include "billing_grant.h"
#include "billing_lease.h"
#include "billing_limit.h"
#include "proto_test.h"

static const proto_test_t s_tests[] = {
    {"billing_limit", billing_limit_test},
    {"billing_committed", billing_committed_test},
    {"billing_book", billing_book_test},
    {"billing_lease", billing_lease_test},
    {"billing_balance", billing_balance_test},
    {"billing_grant", billing_grant_test},
    {"billing", billing_test},
};

PROTO_TEST_MAIN(s_tests)
