#include "proto_sched.h"
#include "proto_log.h"
#include "proto_check.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

//  Requests in flight at which the threads switch to SCHED_BATCH: with
//  several at once a woken thread finds work queued behind the waker.
#define S_BUSY 4
//  ... and at which they switch back, once no more than that have been in
//  flight for S_HOLD_MS: one at a time, every wake-up is on the request's
//  path.
#define S_IDLE 1
//  How long the load must stay at the idle line before the threads switch
//  back: a closed loop of clients dips to one in flight now and then
//  without being idle. Switching to batch needs no wait: the first
//  requests of a burst after a quiet spell switch back (the quiet was long
//  enough), and the burst must not then run 100 ms as SCHED_OTHER. So the
//  threads switch at most twice in S_HOLD_MS.
#define S_HOLD_MS 100

struct _proto_sched_t {
    bool batch;                  //  the threads run SCHED_BATCH
    bool refused;                //  a switch failed: no more tries
    uint64_t busy_ms;            //  when more than S_IDLE were last in flight
    uint64_t switches;           //  switches made
    uint64_t failures;           //  switches refused
    proto_metric_t *batch_gauge; //  1 while SCHED_BATCH; NULL without metrics
    proto_metric_t *switches_counter;
};

proto_sched_t *proto_sched_new(proto_metrics_t *metrics, const char *program)
{
    proto_sched_t *self = calloc(1, sizeof *self);
    assert(self);
    if (metrics) {
        char name[96];
        snprintf(name, sizeof name, "tollgate_%s_sched_batch", program);
        self->batch_gauge = proto_metrics_gauge(
            metrics, name, "1 while the threads run SCHED_BATCH (4 or more requests in flight).",
            NULL);
        snprintf(name, sizeof name, "tollgate_%s_sched_switches_total", program);
        self->switches_counter = proto_metrics_counter(
            metrics, name, "Times the threads switched between SCHED_OTHER and SCHED_BATCH.", NULL);
    }
    return self;
}

void proto_sched_destroy(proto_sched_t **self_p)
{
    assert(self_p);
    free(*self_p);
    *self_p = NULL;
}

//  Sets policy on every thread of the process. A thread that ended since
//  the folder was read is no failure.
static int s_set_threads(int policy)
{
    DIR *dir = opendir("/proc/self/task");
    if (!dir)
        return -1;
    struct sched_param param = {.sched_priority = 0};
    int rc = 0;
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        if (entry->d_name[0] == '.')
            continue;
        pid_t tid = (pid_t)strtol(entry->d_name, NULL, 10);
        if (sched_setscheduler(tid, policy, &param) != 0 && errno != ESRCH)
            rc = -1;
    }
    closedir(dir);
    return rc;
}

void proto_sched_load(proto_sched_t *self, size_t in_flight, uint64_t now_ms)
{
    if (in_flight > S_IDLE)
        self->busy_ms = now_ms;
    bool want = self->batch ? now_ms - self->busy_ms < S_HOLD_MS : in_flight >= S_BUSY;
    if (want == self->batch || self->refused)
        return;
    if (s_set_threads(want ? SCHED_BATCH : SCHED_OTHER) != 0) {
        int error = errno;
        //  Back to where we were, and stay there.
        s_set_threads(self->batch ? SCHED_BATCH : SCHED_OTHER);
        self->refused = true;
        self->failures++;
        log_warn(NULL, "cannot switch threads to %s (%s): they keep their policy",
                 want ? "SCHED_BATCH" : "SCHED_OTHER", strerror(error));
        return;
    }
    self->batch = want;
    self->switches++;
    if (self->batch_gauge) {
        proto_metric_set(self->batch_gauge, want ? 1 : 0);
        proto_metric_add(self->switches_counter, 1);
    }
}

bool proto_sched_batch(proto_sched_t *self)
{
    return self->batch;
}

uint64_t proto_sched_switches(proto_sched_t *self)
{
    return self->switches;
}

uint64_t proto_sched_failures(proto_sched_t *self)
{
    return self->failures;
}

//  --------------------------------------------------------------------------
//  Self test

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pid_t tid; //  the helper's thread id, once known
    bool done; //  the helper may end
} s_test_helper_t;

static void *s_test_helper(void *arg)
{
    s_test_helper_t *helper = arg;
    pthread_mutex_lock(&helper->lock);
    helper->tid = (pid_t)syscall(SYS_gettid);
    pthread_cond_broadcast(&helper->cond);
    while (!helper->done)
        pthread_cond_wait(&helper->cond, &helper->lock);
    pthread_mutex_unlock(&helper->lock);
    return NULL;
}

static bool s_test_both(pid_t helper, int policy)
{
    return sched_getscheduler(0) == policy && sched_getscheduler(helper) == policy;
}

void proto_sched_test(bool verbose)
{
    printf(" * proto_sched: ");
    //  A second thread, as ZeroMQ's I/O thread: it switches with this one.
    s_test_helper_t helper = {.tid = 0};
    pthread_mutex_init(&helper.lock, NULL);
    pthread_cond_init(&helper.cond, NULL);
    pthread_t thread;
    PROTO_CHECK(pthread_create(&thread, NULL, s_test_helper, &helper) == 0);
    pthread_mutex_lock(&helper.lock);
    while (!helper.tid)
        pthread_cond_wait(&helper.cond, &helper.lock);
    pthread_mutex_unlock(&helper.lock);

    proto_metrics_t *metrics = proto_metrics_new();
    proto_sched_t *sched = proto_sched_new(metrics, "test");
    uint64_t now = 1000;
    //  Below the busy line: as it was.
    for (size_t n = 0; n < S_BUSY; n++)
        proto_sched_load(sched, n, now);
    PROTO_CHECK(!proto_sched_batch(sched) && s_test_both(helper.tid, SCHED_OTHER));
    //  At it: every thread runs SCHED_BATCH.
    proto_sched_load(sched, S_BUSY, now);
    PROTO_CHECK(proto_sched_batch(sched) && s_test_both(helper.tid, SCHED_BATCH));
    PROTO_CHECK(proto_sched_switches(sched) == 1);
    //  Between the lines it stays; at the idle line it switches back once
    //  no more than that have been in flight for the hold.
    proto_sched_load(sched, S_IDLE + 1, now + S_HOLD_MS);
    proto_sched_load(sched, S_IDLE, now + S_HOLD_MS + 1);
    proto_sched_load(sched, S_IDLE, now + 2 * S_HOLD_MS - 1);
    PROTO_CHECK(proto_sched_batch(sched) && s_test_both(helper.tid, SCHED_BATCH));
    now += 2 * S_HOLD_MS;
    proto_sched_load(sched, S_IDLE, now);
    PROTO_CHECK(!proto_sched_batch(sched) && s_test_both(helper.tid, SCHED_OTHER));
    //  And busy again at once: a burst after a quiet spell.
    proto_sched_load(sched, S_BUSY, now + 1);
    PROTO_CHECK(proto_sched_batch(sched) && s_test_both(helper.tid, SCHED_BATCH));
    PROTO_CHECK(proto_sched_switches(sched) == 3 && proto_sched_failures(sched) == 0);
    char *text = proto_metrics_render(metrics);
    PROTO_CHECK(strstr(text, "tollgate_test_sched_batch 1\n"));
    PROTO_CHECK(strstr(text, "tollgate_test_sched_switches_total 3\n"));
    free(text);
    //  A burst that ended leaves the threads as SCHED_BATCH until the next
    //  request: the first of a new burst switches back (the quiet lasted),
    //  the fourth to batch again, with no wait between.
    now += 10 * S_HOLD_MS;
    proto_sched_load(sched, 1, now);
    PROTO_CHECK(!proto_sched_batch(sched));
    proto_sched_load(sched, 2, now + 1);
    proto_sched_load(sched, 3, now + 1);
    PROTO_CHECK(!proto_sched_batch(sched));
    proto_sched_load(sched, 4, now + 2);
    PROTO_CHECK(proto_sched_batch(sched) && s_test_both(helper.tid, SCHED_BATCH));
    PROTO_CHECK(proto_sched_switches(sched) == 5);
    if (verbose)
        printf("(%llu switches) ", (unsigned long long)proto_sched_switches(sched));
    //  The selftest's other threads go on as they were.
    proto_sched_load(sched, 0, now + 3 * S_HOLD_MS);
    PROTO_CHECK(s_test_both(helper.tid, SCHED_OTHER));
    proto_sched_destroy(&sched);
    PROTO_CHECK(sched == NULL);
    proto_metrics_destroy(&metrics);

    pthread_mutex_lock(&helper.lock);
    helper.done = true;
    pthread_cond_broadcast(&helper.cond);
    pthread_mutex_unlock(&helper.lock);
    pthread_join(thread, NULL);
    pthread_cond_destroy(&helper.cond);
    pthread_mutex_destroy(&helper.lock);
    printf("OK\n");
}
