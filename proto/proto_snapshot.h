/*  proto_snapshot: which PostgreSQL transactions a read saw.

    A catalog is read in one REPEATABLE READ transaction whose first
    statement takes pg_current_snapshot(): every balance in it includes
    exactly the transactions that snapshot counts as committed. A ledger
    batch names its transaction (pg_current_xact_id()) in its COMMITs, so
    billing can tell whether a catalog it loaded already holds a charge
    (billing_book_commit) instead of subtracting it a second time.
*/
#ifndef PROTO_SNAPSHOT_H_INCLUDED
#define PROTO_SNAPSHOT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  PostgreSQL's pg_snapshot. Committed transactions below xmin were seen;
//  from xmax on they were not; in between, all but those in_progress were.
typedef struct {
    bool known;               //  false: none was read (a catalog from JSON without one)
    uint64_t xmin;            //  oldest transaction still running
    uint64_t xmax;            //  first transaction not yet started
    uint64_t *in_progress;    //  running ones between (owned)
    size_t in_progress_count; //  entries
} proto_snapshot_t;

//  Parses pg_snapshot's text ("xmin:xmax:xip,..."), replacing *snapshot
//  (freeing its list). Returns 0, or -1 leaving it as it was.
int proto_snapshot_parse(proto_snapshot_t *snapshot, const char *text);

//  Frees the list; the snapshot is then unknown.
void proto_snapshot_clear(proto_snapshot_t *snapshot);

//  True when the committed transaction txid was seen by the read. False
//  when it was not, when the snapshot is unknown, or txid is 0.
bool proto_snapshot_saw(const proto_snapshot_t *snapshot, uint64_t txid);

//  Self test: parsing, visibility, and a catalog from JSON with one.
void proto_snapshot_test(bool verbose);

#endif
