/*  billing_committed: see the header. */
#include "billing_committed.h"
#include "proto_check.h"
#include "proto_idset.h"
#include "proto_test.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct _billing_committed_t {
    proto_idset_t *ids;  //  committed ids, oldest first
    size_t capacity;     //  most ids held
    uint64_t max_age_ms; //  ids older than this are forgotten
};

billing_committed_t *billing_committed_new(size_t capacity, uint64_t max_age_ms)
{
    assert(capacity > 0);
    billing_committed_t *self = calloc(1, sizeof *self);
    assert(self);
    self->capacity = capacity;
    self->max_age_ms = max_age_ms;
    self->ids = proto_idset_new();
    return self;
}

void billing_committed_destroy(billing_committed_t **self_p)
{
    assert(self_p);
    billing_committed_t *self = *self_p;
    if (!self)
        return;
    proto_idset_destroy(&self->ids);
    free(self);
    *self_p = NULL;
}

static bool s_expired(billing_committed_t *self, uint64_t at_ms, uint64_t now_ms)
{
    return now_ms > at_ms && now_ms - at_ms > self->max_age_ms;
}

void billing_committed_expire(billing_committed_t *self, uint64_t now_ms)
{
    //  Commits come in time order, so expired ids are all the oldest.
    uint64_t at_ms;
    while (proto_idset_oldest(self->ids, &at_ms, NULL) && s_expired(self, at_ms, now_ms))
        proto_idset_drop_oldest(self->ids);
}

void billing_committed_add(billing_committed_t *self, const char *request_id, uint64_t now_ms)
{
    assert(request_id);
    billing_committed_expire(self, now_ms);
    if (proto_idset_find(self->ids, request_id, NULL, NULL))
        return;
    if (proto_idset_size(self->ids) == self->capacity)
        proto_idset_drop_oldest(self->ids);
    proto_idset_add(self->ids, request_id, now_ms, 0);
}

bool billing_committed_has(billing_committed_t *self, const char *request_id, uint64_t now_ms)
{
    uint64_t at_ms;
    return proto_idset_find(self->ids, request_id, &at_ms, NULL) && !s_expired(self, at_ms, now_ms);
}

size_t billing_committed_size(billing_committed_t *self)
{
    return proto_idset_size(self->ids);
}

//  --------------------------------------------------------------------------
//  Self test

//  A request id as ingress makes them: 32 hex digits.
static void s_test_id(char *id, size_t size, int i)
{
    snprintf(id, size, "%08x0b1c2d3e4f5a6b7c8d9e0f1a2b3c", (unsigned)i);
}

//  What 15 minutes of commits cost: BILLING_COMMITTED_MAX ids in one set.
//  They were ~133 bytes each (a strdup of the id, a zhashx entry and a
//  ring slot; 1.6 MiB for the empty ring): ~13 MiB of billing's 26-33
//  MiB peak in bench/run.sh. Now a 32-byte entry and a 4-byte bucket.
static void s_test_memory(bool verbose)
{
    size_t before = proto_test_heap_in_use();
    billing_committed_t *set = billing_committed_new(100000, 1000);
    char id[40];
    for (int i = 0; i < 100000; i++) {
        s_test_id(id, sizeof id, i);
        billing_committed_add(set, id, 0);
    }
    size_t grown = proto_test_heap_in_use() - before;
    PROTO_CHECK(billing_committed_size(set) == 100000);
    PROTO_CHECK(grown < (size_t)100000 * 48);
    if (verbose)
        printf("(100000 ids: %zu bytes in use) ", grown);
    //  All found after the blocks and the index grew; the oldest go first
    //  when it is full, whichever bucket chain they sit in.
    for (int i = 0; i < 100000; i++) {
        s_test_id(id, sizeof id, i);
        PROTO_CHECK(billing_committed_has(set, id, 1));
    }
    for (int i = 100000; i < 101000; i++) {
        s_test_id(id, sizeof id, i);
        billing_committed_add(set, id, 2);
    }
    PROTO_CHECK(billing_committed_size(set) == 100000);
    for (int i = 0; i < 101000; i += 7) {
        s_test_id(id, sizeof id, i);
        PROTO_CHECK(billing_committed_has(set, id, 3) == (i >= 1000));
    }
    //  Once they expired, the set gives the memory back, keeping the ids
    //  that are left.
    billing_committed_add(set, "late", 500);
    billing_committed_expire(set, 1001);
    PROTO_CHECK(billing_committed_size(set) == 1001); //  those added at 2 and "late"
    billing_committed_expire(set, 1003);
    PROTO_CHECK(billing_committed_size(set) == 1);
    for (int i = 0; i < 20; i++)
        billing_committed_expire(set, 1004);
    PROTO_CHECK(billing_committed_has(set, "late", 1004));
    PROTO_CHECK(!billing_committed_has(set, "late", 1501));
    PROTO_CHECK(proto_test_heap_in_use() - before < 64 * 1024);
    billing_committed_destroy(&set);
}

void billing_committed_test(bool verbose)
{
    if (verbose)
        printf(" * billing_committed: ");
    billing_committed_t *set = billing_committed_new(3, 1000);
    PROTO_CHECK(!billing_committed_has(set, "a", 0));
    billing_committed_add(set, "a", 10);
    billing_committed_add(set, "b", 20);
    billing_committed_add(set, "a", 30); //  already held: no second entry
    PROTO_CHECK(billing_committed_size(set) == 2);
    PROTO_CHECK(billing_committed_has(set, "a", 40));
    PROTO_CHECK(billing_committed_has(set, "b", 40));
    //  Capacity: the fourth id pushes out the oldest.
    billing_committed_add(set, "c", 50);
    billing_committed_add(set, "d", 60);
    PROTO_CHECK(billing_committed_size(set) == 3);
    PROTO_CHECK(!billing_committed_has(set, "a", 70));
    PROTO_CHECK(billing_committed_has(set, "b", 70));
    PROTO_CHECK(billing_committed_has(set, "d", 70));
    //  Age: b (20) is too old at 1021 even before it is evicted.
    PROTO_CHECK(!billing_committed_has(set, "b", 1021));
    PROTO_CHECK(billing_committed_has(set, "c", 1021));
    //  An add evicts what has expired.
    billing_committed_add(set, "e", 1055);
    PROTO_CHECK(billing_committed_size(set) == 2); //  d and e
    PROTO_CHECK(billing_committed_has(set, "d", 1055));
    PROTO_CHECK(!billing_committed_has(set, "c", 1055));
    //  Expiry without an add (billing's sweep, while idle).
    billing_committed_expire(set, 1061);
    PROTO_CHECK(billing_committed_size(set) == 1); //  e
    //  Many more ids than it holds; the index and the blocks stay in step.
    char id[40];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "r%d", i);
        billing_committed_add(set, id, 2000 + (uint64_t)i);
    }
    PROTO_CHECK(billing_committed_size(set) == 3);
    PROTO_CHECK(billing_committed_has(set, "r999", 3000));
    PROTO_CHECK(billing_committed_has(set, "r997", 3000));
    PROTO_CHECK(!billing_committed_has(set, "r996", 3000));
    //  Ids that differ only past a prefix, or in their last byte, are
    //  different ids (the digest covers the whole id).
    billing_committed_add(set, "client-id.0123456789abcdef", 3001);
    PROTO_CHECK(billing_committed_has(set, "client-id.0123456789abcdef", 3002));
    PROTO_CHECK(!billing_committed_has(set, "client-id.0123456789abcdee", 3002));
    PROTO_CHECK(!billing_committed_has(set, "client-id.0123456789abcde", 3002));
    PROTO_CHECK(!billing_committed_has(set, "", 3002));
    billing_committed_destroy(&set);
    PROTO_CHECK(set == NULL);

    //  The set grows while its oldest expire:
    //  every id is still found, and they still go oldest first.
    set = billing_committed_new(5000, 100);
    for (int i = 0; i < 4000; i++) {
        s_test_id(id, sizeof id, i);
        billing_committed_add(set, id, i < 1000 ? 0 : i < 3000 ? 200 : 250);
    }
    PROTO_CHECK(billing_committed_size(set) == 3000);
    for (int i = 0; i < 4000; i++) {
        s_test_id(id, sizeof id, i);
        PROTO_CHECK(billing_committed_has(set, id, 250) == (i >= 1000));
    }
    billing_committed_expire(set, 301);
    PROTO_CHECK(billing_committed_size(set) == 1000);
    for (int i = 2990; i < 4000; i++) {
        s_test_id(id, sizeof id, i);
        PROTO_CHECK(billing_committed_has(set, id, 301) == (i >= 3000));
    }
    billing_committed_destroy(&set);
    s_test_memory(verbose);
    if (verbose)
        printf("OK\n");
}
