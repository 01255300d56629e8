/*  proto_ledger_check: does the money in PostgreSQL add up?

    Ten invariants of the double-entry journal and the usage it records,
    checked by `tollgate ledger check` and GET /admin/ledger/check (and by
    the ledger's and billing's PostgreSQL probes, which are tests: code of
    several programs, so it lives in proto):
      1. every account's balance_micros equals the sum of its ledger
         account's journal lines (an account created with a balance has a
         'topup' entry for it, written in the same transaction);
      2. every journal entry has at least two lines and they sum to zero;
      3. every usage row with cost_micros > 0 has its journal_requests row
         (one per request id: the primary key) with amount cost_micros, in
         a 'usage' entry that has a line of the row's account;
      4. every 'usage' entry has requests and one customer line, minus
         their sum (usage is journaled per account and batch, migration
         0020; older entries are each one request's);
      5. every 'usage' entry has two lines, one of them on the system
         account 'revenue' (so, with 2 and 4, revenue gets +total);
      6. every journal_requests row is in a 'usage' entry;
      7. every journaled request has its usage row with cost_micros equal
         to its amount (after a prune's cutoff): no money for a free row;
      8. no request id has more than one usage row;
      9. an operator's loss charges nothing;
     10. the daily rollup equals the usage rows, per day and account
         (requests, cost and images).
    Read-only; runs in one REPEATABLE READ transaction so the figures come
    from one snapshot even while the ledger is writing.
*/
#ifndef PROTO_LEDGER_CHECK_H_INCLUDED
#define PROTO_LEDGER_CHECK_H_INCLUDED

#include <libpq-fe.h>

//  Runs the checks. Returns 0 when all hold, 1 when some do not, -1 when a
//  query failed. *report receives a human-readable summary (a few examples
//  of each problem); caller owns it (free()).
int proto_ledger_check_run(PGconn *db, char **report);

#endif
