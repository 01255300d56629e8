/*  ops_ledger: `tollgate ledger ...`, the ledger's reports and upkeep,
    straight against PostgreSQL (read-only except prune and partitions).

        tollgate ledger check                 the six invariants (proto_ledger_check.h);
                                              exit 0 all hold, 1 some do not
        tollgate ledger balances [RANGE] [--account ID] [--json]
        tollgate ledger spend [--by account|key|model|provider|hour|day] [RANGE]
                              [FILTERS] [--json|--csv]
        tollgate ledger usage [RANGE] [FILTERS] [--errors] [--limit N] [--cursor C]
                              [--json|--csv]      (--csv: the whole range, no paging)
        tollgate ledger partitions            creates this and next month's usage
                                              partitions, lists them all
        tollgate ledger prune --before YYYY-MM [--dry-run]
                                              detaches (CONCURRENTLY: writers never
                                              wait) and drops usage partitions of the
                                              months before, and hourly rollups older
    RANGE:   --from T --to T, T = YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)
    FILTERS: --account ID --key ID --model NAME --provider ID

    The database: --database-url URL, else TOLLGATE_DATABASE_URL, else
    database_url in $TOLLGATE_CONFIG, else in DIR/tollgate.conf (--dir DIR,
    $TOLLGATE_DIR, ./var). Exit codes: 0 done, 1 check failed or the
    database refused, 2 bad usage.
*/
#ifndef OPS_LEDGER_H_INCLUDED
#define OPS_LEDGER_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

//  Runs `tollgate ledger ...`: argv[0] is "ledger", argv[1] the
//  subcommand. Returns the process exit code.
int ops_ledger_main(int argc, char **argv);

//  Parses YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[Z] (UTC) into epoch
//  microseconds. Returns 0, or -1 when it is neither.
int ops_ledger_parse_time(const char *text, int64_t *us);

//  Self test (no database).
void ops_ledger_test(bool verbose);

#endif
