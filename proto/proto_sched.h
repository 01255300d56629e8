/*  proto_sched: the scheduling policy of a data-plane program's threads,
    chosen by how many requests it has in flight.

    Ingress and dispatch hand every message between their loop and ZeroMQ's
    I/O thread, each waking the other several times a request. A thread
    woken as SCHED_OTHER preempts the one that woke it, so under load each
    hand-over is a context switch: a third of ingress's CPU at 32
    connections (docs/benchmarks.md). As SCHED_BATCH a woken thread takes a
    free CPU, or waits until the running thread sleeps or its slice ends:
    far fewer switches, more work each. But at one request at a time every
    wake-up is on that request's path, and waiting out another task's
    slice costs the tail (one-connection p99 +1 ms).

    So the process runs SCHED_OTHER while few requests are in flight and
    SCHED_BATCH while many are: at 4 or more it switches to batch, and
    back once at most 1 has been in flight for 100 ms. Every thread
    of the process switches (ZeroMQ's, MHD's, the metrics listener's), by
    its id from /proc/self/task; a switch is a handful of system calls, at
    most two in 100 ms.
*/
#ifndef PROTO_SCHED_H_INCLUDED
#define PROTO_SCHED_H_INCLUDED

#include "proto_metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _proto_sched_t proto_sched_t;

//  Creates the chooser; the threads keep their policy until load says
//  otherwise. With metrics (may be NULL) it keeps tollgate_PROGRAM_sched_batch
//  (1 while SCHED_BATCH) and tollgate_PROGRAM_sched_switches_total there.
//  Caller owns return value.
proto_sched_t *proto_sched_new(proto_metrics_t *metrics, const char *program);

//  Destroys it (the threads keep the policy they have); nulls the pointer.
void proto_sched_destroy(proto_sched_t **self_p);

//  Tells it how many requests are in flight now (at each start and end),
//  at now_ms. Switches every thread of the process when the count says so.
void proto_sched_load(proto_sched_t *self, size_t in_flight, uint64_t now_ms);

//  True while the threads run SCHED_BATCH.
bool proto_sched_batch(proto_sched_t *self);

//  Times the threads switched either way, and switches that failed (a
//  sandbox that refuses SCHED_BATCH: the process stays as it is).
uint64_t proto_sched_switches(proto_sched_t *self);
uint64_t proto_sched_failures(proto_sched_t *self);

void proto_sched_test(bool verbose);

#endif
