/*  ledger_grants: recurring credit grants, granted once per period.

    An account may have grants (credit_grants, migrations 0009 and 0011:
    tollgate account grant ACCOUNT --amount A --every day|week|month). Every
    ledger.grant_interval_ms, and once soon after start, every ledger
    instance runs one transaction on a connection of its own:

      1. the customers' ledger_accounts rows are created if missing;
      2. one statement finds, for each grant not removed, the UTC periods
         (day, ISO week from Monday, month) from the one after its last
         granted period (or the one containing starts_at) to the current
         one, and for each inserts (grant_id, period_start) into
         credit_grant_periods ON CONFLICT DO NOTHING; for the rows that
         were new it writes a journal entry (kind 'grant': +amount on the
         customer, -amount on the system account 'grants') and moves
         accounts.balance_micros;
      3. when anything was granted, pg_notify('tollgate_config',
         'accounts'), so billing rebases its balances (as after a top-up).

    Exactly once per (grant, period), with any number of ledger instances:
    the primary key of credit_grant_periods is the one place a period can
    be taken. A second instance racing for the same period blocks on the
    first one's uncommitted row and, once it commits, does nothing (and
    writes no entry, since its entry rows come only from the rows it
    inserted); if the first rolls back, the second takes it. A period
    missed while no ledger ran is granted at the next run, once.
*/
#ifndef LEDGER_GRANTS_H_INCLUDED
#define LEDGER_GRANTS_H_INCLUDED

#include "proto_service.h"

#include <stdbool.h>

typedef struct _ledger_grants_t ledger_grants_t;

//  Starts the timers (connects when they first fire). Caller owns return value.
ledger_grants_t *ledger_grants_new(proto_service_t *service);

//  Stops the timers and closes the connection; nulls the pointer.
void ledger_grants_destroy(ledger_grants_t **self_p);

//  Grants what is due now. Returns the number of periods granted, or -1
//  when the database could not be reached or the transaction failed
//  (logged; the next run tries again).
int ledger_grants_run(ledger_grants_t *self);

#endif
