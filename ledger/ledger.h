/*  ledger: the tollgate-ledger program's state: the only writer of usage
    and money to PostgreSQL.

    A ROUTER on ledger.bind takes ENTRY messages (from billing). Entries are
    queued and written in batches (ledger_store): a batch goes when
    ledger.batch_max entries are queued, or ledger.batch_delay_ms after the
    oldest queued one arrived. After the batch's COMMIT every sender of
    every entry in it gets COMMIT (request id in the envelope), duplicates
    of rows already in the table included; nothing is acknowledged that is
    not committed.

    An ENTRY for a request id already queued is not queued twice: its
    sender's routing id is added to the queued one, so both senders get the
    COMMIT.

    When a batch fails (database down, connection lost, deadlock) it stays
    at the head of the queue and is retried with a backoff from 100 ms to
    5 s, reconnecting as needed; the outage is logged once when it starts
    and once when it ends. The queue holds at most LEDGER_QUEUE_MAX entries;
    beyond that new ENTRY messages are dropped unacknowledged (their senders
    keep them and re-send).

    Drain (SIGTERM): stop reading ENTRY, write what is queued, acknowledge,
    exit. Whatever is left when the drain timeout passes (database down) is
    still held by the senders.
*/
#ifndef LEDGER_H_INCLUDED
#define LEDGER_H_INCLUDED

#include "proto_service.h"

typedef struct _ledger_t ledger_t;

//  Queued entries at most.
#define LEDGER_QUEUE_MAX 1000000

//  Connects to PostgreSQL (proto_db_connect: retrying as configured) and
//  binds. Returns NULL after logging one clear line. Caller owns return value.
ledger_t *ledger_new(proto_service_t *service);

//  Destroys the state; nulls the pointer. Queued entries are dropped (their
//  senders still hold them).
void ledger_destroy(ledger_t **self_p);

//  Stops taking entries, flushes, then calls proto_service_drained.
void ledger_drain(ledger_t *self);

//  JSON object text for PONG's meta. Caller owns return value (free()).
char *ledger_status(ledger_t *self);

#endif
