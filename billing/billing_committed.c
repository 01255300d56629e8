#include "billing_committed.h"
#include "proto_check.h"

#include <assert.h>
#include <czmq.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *request_id; //  owned copy; NULL when the slot is free
    uint64_t at_ms;   //  when it was committed
} s_slot_t;

struct _billing_committed_t {
    s_slot_t *ring;      //  slots in commit order, oldest at head
    size_t capacity;     //  slots in ring
    size_t head;         //  index of the oldest slot
    size_t count;        //  slots in use
    uint64_t max_age_ms; //  ids older than this are forgotten
    zhashx_t *index;     //  request id -> s_slot_t* (keys borrowed from the slots)
};

billing_committed_t *billing_committed_new(size_t capacity, uint64_t max_age_ms)
{
    assert(capacity > 0);
    billing_committed_t *self = calloc(1, sizeof *self);
    assert(self);
    self->ring = calloc(capacity, sizeof *self->ring);
    assert(self->ring);
    self->capacity = capacity;
    self->max_age_ms = max_age_ms;
    self->index = zhashx_new();
    //  The slot owns the string; the index points at it, so each id is
    //  stored once.
    zhashx_set_key_duplicator(self->index, NULL);
    zhashx_set_key_destructor(self->index, NULL);
    return self;
}

void billing_committed_destroy(billing_committed_t **self_p)
{
    assert(self_p);
    billing_committed_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy(&self->index);
    for (size_t i = 0; i < self->capacity; i++)
        free(self->ring[i].request_id);
    free(self->ring);
    free(self);
    *self_p = NULL;
}

static void s_evict_oldest(billing_committed_t *self)
{
    assert(self->count > 0);
    s_slot_t *slot = &self->ring[self->head];
    zhashx_delete(self->index, slot->request_id);
    free(slot->request_id);
    slot->request_id = NULL;
    self->head = (self->head + 1) % self->capacity;
    self->count--;
}

static bool s_expired(billing_committed_t *self, const s_slot_t *slot, uint64_t now_ms)
{
    return now_ms > slot->at_ms && now_ms - slot->at_ms > self->max_age_ms;
}

void billing_committed_add(billing_committed_t *self, const char *request_id, uint64_t now_ms)
{
    assert(request_id);
    //  Commits come in time order, so expired ids are all at the head.
    while (self->count > 0 && s_expired(self, &self->ring[self->head], now_ms))
        s_evict_oldest(self);
    if (zhashx_lookup(self->index, request_id))
        return;
    if (self->count == self->capacity)
        s_evict_oldest(self);
    s_slot_t *slot = &self->ring[(self->head + self->count) % self->capacity];
    slot->request_id = strdup(request_id);
    assert(slot->request_id);
    slot->at_ms = now_ms;
    self->count++;
    zhashx_insert(self->index, slot->request_id, slot);
}

bool billing_committed_has(billing_committed_t *self, const char *request_id, uint64_t now_ms)
{
    s_slot_t *slot = zhashx_lookup(self->index, request_id);
    return slot && !s_expired(self, slot, now_ms);
}

size_t billing_committed_size(billing_committed_t *self)
{
    return self->count;
}

//  --------------------------------------------------------------------------
//  Self test

void billing_committed_test(bool verbose)
{
    if (verbose)
        printf(" * billing_committed: ");
    billing_committed_t *set = billing_committed_new(3, 1000);
    PROTO_CHECK(!billing_committed_has(set, "a", 0));
    billing_committed_add(set, "a", 10);
    billing_committed_add(set, "b", 20);
    billing_committed_add(set, "a", 30); //  already held: no second slot
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
    //  Wrap around the ring many times; the index and ring stay in step.
    char id[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "r%d", i);
        billing_committed_add(set, id, 2000 + (uint64_t)i);
    }
    PROTO_CHECK(billing_committed_size(set) == 3);
    PROTO_CHECK(billing_committed_has(set, "r999", 3000));
    PROTO_CHECK(billing_committed_has(set, "r997", 3000));
    PROTO_CHECK(!billing_committed_has(set, "r996", 3000));
    billing_committed_destroy(&set);
    PROTO_CHECK(set == NULL);
    if (verbose)
        printf("OK\n");
}
