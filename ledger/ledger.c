#include "ledger.h"
#include "ledger_grants.h"
#include "ledger_spans.h"
#include "proto_batch.h"
#include "ledger_store.h"
#include "proto_db.h"
#include "proto_log.h"
#include "proto_socket.h"
#include "proto_msg.h"
#include "proto_trace.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_RETRY_MIN_MS 100
#define S_RETRY_MAX_MS 5000
//  Distinct senders remembered for one queued entry (billing instances that
//  both sent it); beyond this the latest replaces the last.
#define S_SENDERS_MAX 4
#define S_HWM 100000  //  COMMITs queued to a sender
#define S_RCVHWM 2000 //  messages queued unread per sender
//  The ledger is busy for S_BUSY_HOLD_MS after a quarter of a second in
//  which its transactions took ledger.batch_busy_db_pct (30 %) of the time (~38 % at 32 connections
//  in bench/, ~23 % at one with the idle delay), or in which its host's CPUs were idle less than
//  ledger.batch_busy_idle_pct of the time (PostgreSQL beside it: at 32 streams of 50 chunks the
//  transactions take ~11 % but the host is 6 % idle; at one connection 47 %). Busy, a batch waits
//  ledger.batch_delay_ms to spread each transaction's fixed cost over more
//  entries; otherwise ledger.batch_idle_delay_ms, so that while there is
//  CPU to spare PostgreSQL runs short statements often, not long ones that
//  hold a CPU for milliseconds (docs/benchmarks.md, "The one-connection
//  tail").
#define S_BUSY_WINDOW_MS 250
#define S_BUSY_HOLD_MS 1000

//  One queued entry and who is waiting for its COMMIT.
typedef struct {
    ledger_entry_t *entry;               //  the record
    zframe_t *senders[S_SENDERS_MAX];    //  routing ids to answer
    int sender_count;                    //  used slots in senders
    char trace[PROTO_MSG_TRACE_MAX + 1]; //  traceparent of the first ENTRY
    uint64_t arrived_ms;                 //  when it was queued (monotonic)
} s_item_t;

struct _ledger_t {
    proto_service_t *service;     //  the program skeleton (borrowed)
    proto_loop_t *loop;           //  its loop (borrowed)
    zsock_t *router;              //  ledger.bind
    proto_batch_t *commits;       //  COMMITs of a batch, one BATCH per sender
    ledger_store_t *store;        //  PostgreSQL
    zlistx_t *queue;              //  s_item_t*, oldest first
    zhashx_t *queued;             //  request id -> s_item_t* in queue
    size_t batch_max;             //  ledger.batch_max
    uint64_t batch_delay_ms;      //  ledger.batch_delay_ms: the wait while busy
    uint64_t idle_delay_ms;       //  ledger.batch_idle_delay_ms: the wait otherwise
    uint64_t window_db_us;        //  transaction time in this window
    uint64_t busy_until_ms;       //  see S_BUSY_WINDOW_MS
    uint64_t busy_db_us;          //  ledger.batch_busy_db_pct of a window
    int busy_idle_pct;            //  ledger.batch_busy_idle_pct
    uint64_t host_idle;           //  /proc/stat's idle ticks at the last window's end
    uint64_t host_total;          //  and all its ticks
    int window_timer;             //  ends a window every S_BUSY_WINDOW_MS
    int flush_timer;              //  pending flush, 0 when none
    uint64_t flush_due_ms;        //  when it fires
    uint64_t retry_ms;            //  next backoff while down, 0 when up
    uint64_t outage_started_ms;   //  first failure of this outage
    uint64_t outage_failures;     //  failed attempts in this outage
    bool overflowing;             //  dropping entries: queue full
    bool draining;                //  SIGTERM seen
    proto_metric_t *m_received;   //  ENTRY messages taken
    proto_metric_t *m_inserted;   //  usage rows inserted
    proto_metric_t *m_duplicates; //  entries already in the table or queue
    proto_metric_t *m_batches;    //  batches committed
    proto_metric_t *m_failures;   //  batches that failed
    proto_metric_t *m_dropped;    //  ENTRY dropped (queue full or unusable)
    proto_metric_t *m_latency;    //  histogram: seconds per batch
    proto_metric_t *m_depth;      //  gauge: queued entries
    proto_metric_t *m_busy_db;    //  windows busy by the transactions' share
    proto_metric_t *m_busy_host;  //  windows busy by the host's idle share
    ledger_spans_t *spans;        //  trace spans (ledger_spans), NULL without
    ledger_grants_t *grants;      //  recurring credit grants (ledger_grants)
};

static void s_item_destroy(void **item_p)
{
    s_item_t *item = *item_p;
    if (!item)
        return;
    ledger_entry_destroy(&item->entry);
    for (int i = 0; i < item->sender_count; i++)
        zframe_destroy(&item->senders[i]);
    free(item);
    *item_p = NULL;
}

static void s_flush(ledger_t *self);

static void s_flush_due(proto_loop_t *loop, int id, void *arg)
{
    ledger_t *self = arg;
    self->flush_timer = 0;
    s_flush(self);
}

//  Adds a transaction's time to the window's; busy once it passes the share.
static void s_note_db_time(ledger_t *self, uint64_t took_us)
{
    self->window_db_us += took_us;
    if (self->window_db_us >= self->busy_db_us)
        self->busy_until_ms = proto_loop_now_ms() + S_BUSY_HOLD_MS;
}

//  The host's CPU ticks, idle (and waiting for I/O) and in all, from
//  /proc/stat. False where it cannot be read.
static bool s_host_ticks(uint64_t *idle, uint64_t *total)
{
    FILE *file = fopen("/proc/stat", "r");
    if (!file)
        return false;
    unsigned long long user, nice, system, idle_ticks, iowait, irq, softirq, steal;
    int fields = fscanf(file, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &system,
                        &idle_ticks, &iowait, &irq, &softirq, &steal);
    fclose(file);
    if (fields != 8)
        return false;
    *idle = idle_ticks + iowait;
    *total = user + nice + system + idle_ticks + iowait + irq + softirq + steal;
    return true;
}

static void s_window_ends(proto_loop_t *loop, int id, void *arg)
{
    (void)loop;
    (void)id;
    ledger_t *self = arg;
    if (self->window_db_us >= self->busy_db_us) {
        self->busy_until_ms = proto_loop_now_ms() + S_BUSY_HOLD_MS;
        proto_metric_add(self->m_busy_db, 1);
    }
    self->window_db_us = 0;
    uint64_t idle, total;
    if (!s_host_ticks(&idle, &total))
        return;
    if (self->host_total && total > self->host_total &&
        (idle - self->host_idle) * 100 <
            (uint64_t)self->busy_idle_pct * (total - self->host_total)) {
        self->busy_until_ms = proto_loop_now_ms() + S_BUSY_HOLD_MS;
        proto_metric_add(self->m_busy_host, 1);
    }
    self->host_idle = idle;
    self->host_total = total;
}

//  Arranges a flush in delay_ms unless one is due sooner.
static void s_schedule(ledger_t *self, uint64_t delay_ms)
{
    uint64_t due = proto_loop_now_ms() + delay_ms;
    if (self->flush_timer) {
        if (self->flush_due_ms <= due)
            return;
        proto_loop_cancel_timer(self->loop, self->flush_timer);
    }
    self->flush_due_ms = due;
    self->flush_timer = proto_loop_add_timer(self->loop, delay_ms, false, s_flush_due, self);
}

//  When the next batch should go, given what is queued now.
static void s_schedule_next(ledger_t *self)
{
    s_item_t *oldest = zlistx_first(self->queue);
    if (self->retry_ms)
        return;
    if (!oldest) {
        //  Emptied by a full batch: a timer set for the batch that was
        //  filling would cut the next one's wait short.
        if (self->flush_timer)
            proto_loop_cancel_timer(self->loop, self->flush_timer);
        self->flush_timer = 0;
        return;
    }
    if (zlistx_size(self->queue) >= self->batch_max || self->draining) {
        s_schedule(self, 0);
        return;
    }
    uint64_t now = proto_loop_now_ms();
    uint64_t delay = now < self->busy_until_ms ? self->batch_delay_ms : self->idle_delay_ms;
    uint64_t due = oldest->arrived_ms + delay;
    s_schedule(self, due > now ? due - now : 0);
}

static void s_update_depth(ledger_t *self)
{
    size_t depth = zlistx_size(self->queue);
    proto_metric_set(self->m_depth, (double)depth);
    if (self->overflowing && depth < LEDGER_QUEUE_MAX / 2) {
        self->overflowing = false;
        log_info(NULL, "queue below half full again (%zu); taking entries", depth);
    }
}

//  txid: the batch's transaction, for billing to tell whether a catalog it
//  loaded already holds the charge. An entry written by an earlier
//  transaction (re-sent after a lost COMMIT) carries this one's: billing may
//  then count its charge twice until the next catalog, as before txids.
static void s_acknowledge(ledger_t *self, s_item_t *item, uint64_t txid)
{
    for (int i = 0; i < item->sender_count; i++) {
        proto_msg_t *commit = proto_msg_new(PROTO_MSG_COMMIT);
        proto_msg_set_request_id(commit, item->entry->request_id);
        proto_msg_set_trace(commit, item->trace);
        proto_msg_set_txid(commit, txid);
        proto_msg_set_routing_id(commit, item->senders[i]);
        //  A sender that is gone re-sends to someone; the row is there.
        proto_batch_add(self->commits, &commit);
    }
}

static void s_outage(ledger_t *self, size_t count, const char *error)
{
    proto_metric_add(self->m_failures, 1);
    if (self->outage_failures++ == 0) {
        self->outage_started_ms = proto_loop_now_ms();
        log_error(NULL, "cannot commit a batch of %zu entries, keeping them and retrying: %s",
                  count, error);
    } else
        log_debug(NULL, "retry %" PRIu64 " failed: %s", self->outage_failures, error);
    self->retry_ms = self->retry_ms ? self->retry_ms * 2 : S_RETRY_MIN_MS;
    if (self->retry_ms > S_RETRY_MAX_MS)
        self->retry_ms = S_RETRY_MAX_MS;
    s_schedule(self, self->retry_ms);
}

//  Writes the oldest batch. Runs on the loop's thread: a batch of 2000 is a
//  few milliseconds of PostgreSQL time, during which ZeroMQ queues arrivals.
static void s_flush(ledger_t *self)
{
    size_t count = zlistx_size(self->queue);
    if (count > self->batch_max)
        count = self->batch_max;
    if (count == 0)
        return;
    ledger_entry_t **entries = calloc(count, sizeof *entries);
    assert(entries);
    s_item_t *item = zlistx_first(self->queue);
    for (size_t i = 0; i < count; i++, item = zlistx_next(self->queue))
        entries[i] = item->entry;
    ledger_store_result_t result;
    char error[512];
    uint64_t started = proto_loop_now_us();
    int rc = ledger_store_write(self->store, entries, count, &result, error, sizeof error);
    free(entries);
    if (rc != 0) {
        s_outage(self, count, error);
        return;
    }
    uint64_t took_us = proto_loop_now_us() - started;
    proto_metric_observe(self->m_latency, (double)took_us / 1e6);
    s_note_db_time(self, took_us);
    if (self->outage_failures) {
        log_info(NULL, "database back after %" PRIu64 " failed attempts over %" PRIu64 " ms",
                 self->outage_failures, proto_loop_now_ms() - self->outage_started_ms);
        self->outage_failures = 0;
    }
    self->retry_ms = 0;
    if (result.orphans)
        log_warn(NULL, "%zu usage rows name accounts that do not exist: recorded, not journaled",
                 result.orphans);
    if (result.charged_before)
        log_warn(NULL,
                 "%zu usage rows of requests already charged (sent again with another start "
                 "time): recorded, not charged again",
                 result.charged_before);
    proto_metric_add(self->m_batches, 1);
    proto_metric_add(self->m_inserted, (double)result.inserted);
    proto_metric_add(self->m_duplicates, (double)(count - result.inserted));
    for (size_t i = 0; i < count; i++) {
        item = zlistx_first(self->queue);
        s_acknowledge(self, item, result.txid);
        const ledger_entry_t *entry = item->entry;
        bool interesting =
            entry->status >= 400 || entry->attempts > 1 ||
            proto_trace_is_slow(proto_service_trace(self->service), entry->waited_us);
        ledger_spans_committed(self->spans, entry->request_id, item->trace, started, interesting);
        zhashx_delete(self->queued, item->entry->request_id);
        s_item_t *taken = zlistx_detach(self->queue, NULL);
        s_item_destroy((void **)&taken);
    }
    //  One answer per sender for the whole transaction.
    proto_batch_flush(self->commits);
    log_debug(NULL, "batch of %zu committed: %zu new, %zu journaled", count, result.inserted,
              result.journaled);
    s_update_depth(self);
    if (self->draining && zlistx_size(self->queue) == 0)
        proto_service_drained(self->service);
    else
        s_schedule_next(self);
}

static void s_add_sender(s_item_t *item, zframe_t *routing_id)
{
    for (int i = 0; i < item->sender_count; i++)
        if (zframe_eq(item->senders[i], routing_id))
            return;
    if (item->sender_count == S_SENDERS_MAX)
        zframe_destroy(&item->senders[--item->sender_count]);
    item->senders[item->sender_count++] = zframe_dup(routing_id);
}

static void s_entry(ledger_t *self, proto_msg_t *msg)
{
    const char *rid = proto_msg_request_id(msg);
    proto_metric_add(self->m_received, 1);
    s_item_t *item = zhashx_lookup(self->queued, rid);
    if (item) {
        s_add_sender(item, proto_msg_routing_id(msg));
        proto_metric_add(self->m_duplicates, 1);
        return;
    }
    if (zlistx_size(self->queue) >= LEDGER_QUEUE_MAX) {
        proto_metric_add(self->m_dropped, 1);
        if (!self->overflowing)
            log_error(rid, "queue full (%d entries): dropping new entries unacknowledged",
                      LEDGER_QUEUE_MAX);
        self->overflowing = true;
        return;
    }
    char why[256];
    ledger_entry_t *entry = ledger_entry_new(msg, why, sizeof why);
    if (!entry) {
        //  Not acknowledged: the sender keeps it, and its re-sends come
        //  back here. That is the honest answer to a record we cannot store.
        proto_metric_add(self->m_dropped, 1);
        log_error(rid, "cannot record this entry: %s", why);
        return;
    }
    item = calloc(1, sizeof *item);
    assert(item);
    item->entry = entry;
    snprintf(item->trace, sizeof item->trace, "%s", proto_msg_trace(msg));
    item->arrived_ms = proto_loop_now_ms();
    s_add_sender(item, proto_msg_routing_id(msg));
    zlistx_add_end(self->queue, item);
    zhashx_insert(self->queued, entry->request_id, item);
    if (zlistx_size(self->queue) % 1024 == 0)
        s_update_depth(self);
    if (self->retry_ms)
        return; //  down: the retry timer flushes
    if (zlistx_size(self->queue) >= self->batch_max)
        s_flush(self);
    else
        s_schedule_next(self);
}

//  The loop computes how long to sleep from its timers before it runs the
//  socket handlers, so the batch timer that s_entry starts would not shorten
//  that sleep: without this hook the last entries of a burst wait for the
//  next message to arrive. The turn hook runs after the handlers.
static int s_turn(proto_loop_t *loop, void *arg)
{
    ledger_t *self = arg;
    if (!self->flush_timer)
        return -1;
    uint64_t now = proto_loop_now_ms();
    return self->flush_due_ms > now ? (int)(self->flush_due_ms - now) : 0;
}

static void s_message(proto_msg_t **msg_p, void *arg)
{
    ledger_t *self = arg;
    proto_msg_t *msg = *msg_p;
    if (proto_msg_type(msg) == PROTO_MSG_ENTRY && !proto_msg_peer_is(msg, "billing")) {
        //  Money is written only as billing priced it: another program of
        //  the cluster (a stolen certificate of any of them) cannot.
        proto_metric_add(self->m_dropped, 1);
        log_warn(proto_msg_request_id(msg), "dropped an ENTRY from %s: only billing sends them",
                 proto_msg_peer(msg));
    } else if (proto_msg_type(msg) == PROTO_MSG_ENTRY)
        s_entry(self, msg);
    else if (proto_msg_type(msg) == PROTO_MSG_SPAN || proto_msg_type(msg) == PROTO_MSG_DETAILS)
        ledger_spans_add(self->spans, msg);
    else
        log_warn(proto_msg_request_id(msg), "ignored %s on the ledger socket",
                 proto_msg_type_name(proto_msg_type(msg)));
}

static void s_router_ready(proto_loop_t *loop, zsock_t *socket, void *arg)
{
    ledger_t *self = arg;
    if (proto_batch_recv(socket, s_message, self) == -2) {
        proto_metric_add(self->m_dropped, 1);
        log_warn(NULL, "dropped a malformed message");
    }
}

//  Ledger lag for /metrics: how long the oldest queued entry has waited.
static void s_collect(proto_metrics_t *metrics, void *arg)
{
    ledger_t *self = arg;
    s_item_t *oldest = zlistx_first(self->queue);
    proto_metric_set(proto_metrics_gauge(metrics, "tollgate_ledger_lag_seconds",
                                         "Age of the oldest entry not yet committed.", NULL),
                     oldest ? (double)(proto_loop_now_ms() - oldest->arrived_ms) / 1000.0 : 0);
    s_update_depth(self);
}

ledger_t *ledger_new(proto_service_t *service)
{
    proto_config_t *config = proto_service_config(service);
    proto_metrics_t *metrics = proto_service_metrics(service);
    char error[1024];
    PGconn *db = proto_db_connect(config, error, sizeof error);
    if (!db) {
        log_error(NULL, "%s", error);
        return NULL;
    }
    ledger_t *self = calloc(1, sizeof *self);
    assert(self);
    self->service = service;
    self->loop = proto_service_loop(service);
    self->store = ledger_store_new(proto_config_str(config, "database_url"), &db);
    //  Entries that ledgers older than migration 0020 journaled per request
    //  (still running while it ran) become journal_requests rows before our
    //  first batch (docs/cluster.md, "Upgrading"). On failure the first
    //  batch tries again.
    size_t carried;
    if (ledger_store_carry_over(self->store, &carried, error, sizeof error) != 0)
        log_warn(NULL, "cannot carry per-request journal entries over yet: %s", error);
    else if (carried)
        log_info(NULL,
                 "carried %zu per-request journal entries of older ledgers into "
                 "journal_requests",
                 carried);
    self->queue = zlistx_new();
    self->queued = zhashx_new();
    self->batch_max = (size_t)proto_config_int(config, "ledger.batch_max");
    self->batch_delay_ms = (uint64_t)proto_config_int(config, "ledger.batch_delay_ms");
    self->idle_delay_ms = (uint64_t)proto_config_int(config, "ledger.batch_idle_delay_ms");
    self->busy_idle_pct = (int)proto_config_int(config, "ledger.batch_busy_idle_pct");
    self->busy_db_us =
        (uint64_t)proto_config_int(config, "ledger.batch_busy_db_pct") * S_BUSY_WINDOW_MS * 10;
    self->window_timer =
        proto_loop_add_timer(self->loop, S_BUSY_WINDOW_MS, true, s_window_ends, self);
    self->m_received = proto_metrics_counter(metrics, "tollgate_ledger_entries_received_total",
                                             "ENTRY messages received", NULL);
    self->m_inserted = proto_metrics_counter(metrics, "tollgate_ledger_rows_inserted_total",
                                             "usage rows inserted", NULL);
    self->m_duplicates =
        proto_metrics_counter(metrics, "tollgate_ledger_duplicates_total",
                              "entries whose request id was already recorded", NULL);
    self->m_batches =
        proto_metrics_counter(metrics, "tollgate_ledger_batches_total", "batches committed", NULL);
    self->m_failures = proto_metrics_counter(metrics, "tollgate_ledger_batch_failures_total",
                                             "batch transactions that failed", NULL);
    self->m_dropped = proto_metrics_counter(metrics, "tollgate_ledger_dropped_total",
                                            "messages dropped unacknowledged", NULL);
    self->m_latency = proto_metrics_histogram(metrics, "tollgate_ledger_batch_seconds",
                                              "time to write and commit one batch", NULL);
    self->m_busy_db =
        proto_metrics_counter(metrics, "tollgate_ledger_busy_windows_total",
                              "quarter seconds that made the ledger busy", "reason=\"database\"");
    self->m_busy_host =
        proto_metrics_counter(metrics, "tollgate_ledger_busy_windows_total",
                              "quarter seconds that made the ledger busy", "reason=\"host\"");
    self->m_depth = proto_metrics_gauge(metrics, "tollgate_ledger_queue_depth",
                                        "entries waiting to be written", NULL);
    const char *bind = proto_config_str(config, "ledger.bind");
    self->router = proto_socket_new(ZMQ_ROUTER);
    if (self->router) {
        //  What waits unread is bounded: ENTRY senders keep their records
        //  and re-send, and trace spans may be dropped, so a burst this
        //  loop cannot keep up with waits at the senders (or is shed),
        //  not in this process' memory.
        zsock_set_rcvhwm(self->router, S_RCVHWM);
        zsock_set_sndhwm(self->router, S_HWM);
    }
    if (!self->router || proto_socket_bind(self->router, bind) < 0) {
        log_error(NULL, "cannot bind ledger.bind %s: %s", bind, zmq_strerror(zmq_errno()));
        ledger_destroy(&self);
        return NULL;
    }
    //  COMMITs leave when their transaction is done (s_flush); the delay
    //  only bounds a batch that flush somehow missed.
    self->commits =
        proto_batch_new(self->loop, self->router, PROTO_BATCH_ITEMS_MAX, PROTO_BATCH_BYTES_MAX, 5);
    proto_loop_add_socket(self->loop, self->router, s_router_ready, self);
    proto_loop_set_turn(self->loop, s_turn, self);
    self->spans = ledger_spans_new(service);
    self->grants = ledger_grants_new(service);
    proto_service_on_collect(service, s_collect, self);
    log_info(NULL,
             "ledger on %s, batches of up to %zu or after %" PRIu64 " ms (%" PRIu64
             " ms while busy)",
             bind, self->batch_max, self->idle_delay_ms, self->batch_delay_ms);
    return self;
}

void ledger_destroy(ledger_t **self_p)
{
    assert(self_p);
    ledger_t *self = *self_p;
    if (!self)
        return;
    if (self->flush_timer)
        proto_loop_cancel_timer(self->loop, self->flush_timer);
    if (self->window_timer)
        proto_loop_cancel_timer(self->loop, self->window_timer);
    if (self->router) {
        proto_loop_remove_socket(self->loop, self->router);
        proto_loop_set_turn(self->loop, NULL, NULL);
    }
    if (self->queue && zlistx_size(self->queue))
        log_warn(NULL, "exiting with %zu entries not written; their senders still hold them",
                 zlistx_size(self->queue));
    zhashx_destroy(&self->queued);
    if (self->queue) {
        for (s_item_t *item = zlistx_first(self->queue); item; item = zlistx_next(self->queue))
            s_item_destroy((void **)&item);
        zlistx_destroy(&self->queue);
    }
    proto_batch_destroy(&self->commits);
    zsock_destroy(&self->router);
    ledger_spans_destroy(&self->spans);
    ledger_grants_destroy(&self->grants);
    ledger_store_destroy(&self->store);
    free(self);
    *self_p = NULL;
}

void ledger_drain(ledger_t *self)
{
    self->draining = true;
    //  Stop reading: what ZeroMQ still buffers is lost with the process and
    //  re-sent by its senders, never acknowledged by us.
    proto_loop_remove_socket(self->loop, self->router);
    log_info(NULL, "draining: %zu entries to write", zlistx_size(self->queue));
    if (zlistx_size(self->queue) == 0)
        proto_service_drained(self->service);
    else if (!self->retry_ms)
        s_schedule(self, 0);
}

char *ledger_status(ledger_t *self)
{
    char status[256];
    snprintf(status, sizeof status,
             "{\"queued\":%zu,\"database\":\"%s\",\"failed_attempts\":%" PRIu64 "}",
             zlistx_size(self->queue), self->retry_ms ? "down" : "up", self->outage_failures);
    return strdup(status);
}
