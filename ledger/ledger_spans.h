/*  ledger_spans: the ledger's store of trace spans.

    SPAN messages (proto_trace) arrive on the ledger's ROUTER with the
    entries; they are queued here and inserted in batches every 200 ms (or
    at 1000 queued) on a connection of their own, so a span batch never
    shares a transaction with money. Spans are not money: a batch that
    fails is dropped and counted, and past LEDGER_SPANS_QUEUE_MAX queued
    spans new ones are dropped.

    DETAILS messages (proto_capture: the request log's halves from ingress
    and dispatch, already redacted) are joined by request id and upserted
    into request_details in the same flush, each column filled once.

    The ledger's own spans (ledger.commit) reach the queue directly: this
    module installs itself as proto_trace's local sink.

    Background pruning, every ledger.prune_interval_ms: spans older than
    ledger.span_retention_days and request_details older than settings
    'request_log'.retention_days are deleted 1000 rows per statement, each
    its own short transaction, so the hot tables are never locked for long
    and inserts carry on between batches.
*/
#ifndef LEDGER_SPANS_H_INCLUDED
#define LEDGER_SPANS_H_INCLUDED

#include "proto_msg.h"
#include "proto_service.h"

#define LEDGER_SPANS_QUEUE_MAX 100000

typedef struct _ledger_spans_t ledger_spans_t;

//  Connects and starts the flush and prune timers. Returns NULL when the
//  database cannot be reached (logged); the ledger then runs without spans.
//  Caller owns return value.
ledger_spans_t *ledger_spans_new(proto_service_t *service);

//  Writes what is queued, stops; nulls the pointer.
void ledger_spans_destroy(ledger_spans_t **self_p);

//  Queues a received SPAN or DETAILS message (self may be NULL: dropped).
//  The message stays the caller's.
void ledger_spans_add(ledger_spans_t *self, proto_msg_t *msg);

//  Records the ledger.commit span of one entry whose batch began at
//  started_us (monotonic, proto_loop_now_us) and committed now; `keep`
//  when the request failed, failed over or was slow (else it is sampled).
void ledger_spans_committed(ledger_spans_t *self, const char *request_id, const char *trace,
                            uint64_t started_us, bool keep);

//  Inserts the queued spans now. Returns the number inserted, -1 on failure.
int ledger_spans_flush(ledger_spans_t *self);

//  Runs one pruning pass now. Returns rows deleted, -1 on failure.
int ledger_spans_prune(ledger_spans_t *self);

#endif
