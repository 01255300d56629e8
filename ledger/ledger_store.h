/*  ledger_store: writes batches of usage entries to PostgreSQL, once.

    Before the batch, the month partitions of usage it needs (and the next
    month's) are created if this store has not seen them yet (migration
    0004's tollgate_usage_partition, its own short transaction), and so are
    the ledger accounts of charged customers it has not seen with one. Then
    one batch is one prepared statement, whatever its size, because every
    column travels as one array parameter and the SQL unnests them:

      - INSERT INTO usage ... SELECT FROM unnest($1..$21)
        ON CONFLICT (request_id, started_at) DO NOTHING RETURNING ...
        -> only the rows that are new come back, and only those are added
        to usage_hourly and usage_daily (upserts in the same statement);
      - for the new rows with cost > 0, one row each in journal_requests
        (request id PRIMARY KEY: ON CONFLICT DO NOTHING) naming its
        account's journal entry for the batch, and per account one 'usage'
        journal entry with two lines (customer -total, system 'revenue'
        +total) and accounts.balance_micros moved by the same total
        (migration 0020).
    A batch that is written twice (the COMMIT's reply was lost, or a sender
    re-sent entries already committed) therefore inserts nothing the second
    time and moves no money: idempotent by request id.

    Most batches hold only new rows, and the ON CONFLICT checks cost each row
    a second look into both unique indexes. So a batch first goes as the
    same statement without them; if a row of it was there already, the
    unique index refuses the whole statement (23505, nothing written) and
    the batch goes again with them, as do the next few batches (and the
    first few on a new connection: re-sent rows come in runs).

    Values are made to fit their columns before they reach SQL (texts are
    made valid UTF-8, counters clamped), so one odd entry cannot make a
    whole batch fail forever; what cannot be made to fit (no request id, an
    id beyond bigint) is refused by ledger_entry_new.
*/
#ifndef LEDGER_STORE_H_INCLUDED
#define LEDGER_STORE_H_INCLUDED

#include "proto_msg.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  One usage record, already fitted to the usage table's columns.
typedef struct {
    char request_id[PROTO_MSG_RID_MAX + 1]; //  usage.request_id, never empty
    int64_t started_us;                     //  epoch microseconds, 0 .. year 9999
    int64_t account_id;                     //  accounts.id
    int64_t key_id;                         //  api_keys.id
    char *model;                            //  logical model, valid UTF-8
    bool has_provider_id;                   //  provider_id present
    int64_t provider_id;                    //  providers.id
    bool has_provider_key_id;               //  provider_key_id present
    int64_t provider_key_id;                //  provider_keys.id
    char *upstream_model;                   //  valid UTF-8, or NULL when absent
    int32_t status;                         //  final HTTP status
    int64_t tokens_in;                      //  input tokens (all)
    int64_t tokens_out;                     //  output tokens
    int64_t tokens_cache_read;              //  cache-read input tokens
    int64_t tokens_cache_write;             //  cache-write input tokens
    int64_t tokens_cache_write_1h;          //  of which written for 1 hour
    int32_t images;                         //  images generated (OpenAI Images)
    int64_t cost_micros;                    //  >= 0
    int32_t latency_ms;                     //  upstream time
    int32_t ttfb_ms;                        //  time to first byte
    int32_t attempts;                       //  upstream attempts
    bool estimated;                         //  tokens or cost estimated
    bool operator_loss;                     //  a lost upstream call, not charged
    uint64_t waited_us;                     //  the client's wait: slow or not (proto_trace)
} ledger_entry_t;

//  Builds an entry from an ENTRY message. Returns NULL with the reason in
//  why when it cannot be recorded as it is. Caller owns return value.
ledger_entry_t *ledger_entry_new(const proto_msg_t *msg, char *why, size_t why_size);

//  Destroys an entry; nulls the pointer.
void ledger_entry_destroy(ledger_entry_t **self_p);

//  What a committed batch did.
typedef struct {
    size_t inserted;       //  usage rows that were new
    size_t journaled;      //  requests journaled (new rows with cost > 0)
    size_t orphans;        //  new costed rows whose account has no ledger account: no journal
    size_t charged_before; //  new costed rows whose request id had money already
    uint64_t txid;         //  the transaction's pg_current_xact_id(): billing asks a
                           //  catalog whether it saw it (proto_catalog_saw_transaction)
} ledger_store_result_t;

typedef struct _ledger_store_t ledger_store_t;

//  Creates a store for database_url, taking ownership of an open connection
//  (*db_p, may be NULL: the first write connects). Caller owns return value.
ledger_store_t *ledger_store_new(const char *database_url, PGconn **db_p);

//  Destroys the store and closes its connection; nulls the pointer.
void ledger_store_destroy(ledger_store_t **self_p);

//  Writes entries in one transaction, connecting first if needed. Returns 0
//  when committed (result filled), -1 when nothing was committed, with a
//  one-line reason in error; a broken connection is closed, so the next
//  write reconnects.
int ledger_store_write(ledger_store_t *self, ledger_entry_t **entries, size_t count,
                       ledger_store_result_t *result, char *error, size_t error_size);

//  Once per store, before its first batch: carries usage entries journaled
//  per request (by ledgers older than migration 0020, possibly still running
//  during an upgrade) into journal_requests, as 0020 did (idempotent).
//  ledger_store_write does it first if it was not done. Returns 0 with the
//  number carried in *carried, -1 with the reason in error.
int ledger_store_carry_over(ledger_store_t *self, size_t *carried, char *error, size_t error_size);

//  True while the store holds a working connection.
bool ledger_store_connected(ledger_store_t *self);

//  Self test: entry fitting and array literals; with
//  TOLLGATE_TEST_DATABASE_URL set (a migrated database), a real write.
void ledger_store_test(bool verbose);

#endif
