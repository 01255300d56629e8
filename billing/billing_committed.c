/*  billing_committed: see the header. */
#include "billing_committed.h"
#include "proto_check.h"

#include <assert.h>
#include <malloc.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_DIGEST_BYTES crypto_shorthash_siphashx24_BYTES
//  The end of a bucket's chain.
#define S_NONE UINT32_MAX
//  Slots are never fewer than this (or the capacity, when smaller).
#define S_MIN_SLOTS 1024

//  One committed id: 32 bytes, no allocation of its own. Up to 100,000
//  live at once (15 minutes of commits), so an id costs what it holds; the
//  id's keyed digest stands for it (see the header).
typedef struct {
    uint8_t digest[S_DIGEST_BYTES]; //  keyed SipHash-128 of the request id
    uint64_t at_ms;                 //  when it was committed
    uint32_t chain;                 //  the next slot in the same bucket, or S_NONE
} s_slot_t;

struct _billing_committed_t {
    s_slot_t *slots;     //  a ring in commit order, oldest at head
    size_t slot_count;   //  slots allocated: grows to capacity, shrinks back
    size_t head;         //  index of the oldest slot
    size_t count;        //  slots in use
    size_t capacity;     //  most ids held
    uint64_t max_age_ms; //  ids older than this are forgotten
    uint32_t *buckets;   //  digest -> first slot of its chain, or S_NONE
    size_t bucket_count; //  a power of two, at least slot_count
    uint8_t key[crypto_shorthash_siphashx24_KEYBYTES]; //  the digest's: ids come from clients
};

static void s_digest(billing_committed_t *self, const char *request_id,
                     uint8_t digest[S_DIGEST_BYTES])
{
    crypto_shorthash_siphashx24(digest, (const uint8_t *)request_id, strlen(request_id), self->key);
}

static size_t s_bucket(billing_committed_t *self, const uint8_t *digest)
{
    uint64_t hash;
    memcpy(&hash, digest, sizeof hash);
    return (size_t)(hash & (self->bucket_count - 1));
}

static void s_link(billing_committed_t *self, size_t index)
{
    size_t bucket = s_bucket(self, self->slots[index].digest);
    self->slots[index].chain = self->buckets[bucket];
    self->buckets[bucket] = (uint32_t)index;
}

//  Indexes the ring's ids again, in a table sized to the ring.
static void s_index(billing_committed_t *self)
{
    size_t bucket_count = 1;
    while (bucket_count < self->slot_count)
        bucket_count *= 2;
    if (bucket_count != self->bucket_count) {
        free(self->buckets);
        self->buckets = malloc(bucket_count * sizeof *self->buckets);
        assert(self->buckets);
        self->bucket_count = bucket_count;
    }
    for (size_t i = 0; i < bucket_count; i++)
        self->buckets[i] = S_NONE;
    for (size_t i = 0; i < self->count; i++)
        s_link(self, (self->head + i) % self->slot_count);
}

//  A ring of `slot_count` slots, larger: realloc, which moves a large
//  (mmap'd) ring's pages instead of copying them, so growing to 100,000
//  never holds the old ring and a copy at once (VmHWM would keep that);
//  then the part from head to the old end moves to the new end.
static void s_grow(billing_committed_t *self, size_t slot_count)
{
    assert(slot_count >= self->slot_count);
    s_slot_t *slots = realloc(self->slots, slot_count * sizeof *slots);
    assert(slots);
    size_t tail = self->slot_count - self->head; //  slots from head to the old end
    if (self->count > tail) {                    //  the ring wraps
        memmove(slots + slot_count - tail, slots + self->head, tail * sizeof *slots);
        self->head = slot_count - tail;
    }
    self->slots = slots;
    self->slot_count = slot_count;
    s_index(self);
}

//  A ring of `slot_count` slots, smaller (what is left is a quarter at
//  most): the ids move, oldest first, into a new one.
static void s_shrink(billing_committed_t *self, size_t slot_count)
{
    assert(slot_count >= self->count);
    s_slot_t *slots = malloc(slot_count * sizeof *slots);
    assert(slots);
    for (size_t i = 0; i < self->count; i++)
        slots[i] = self->slots[(self->head + i) % self->slot_count];
    free(self->slots);
    self->slots = slots;
    self->slot_count = slot_count;
    self->head = 0;
    s_index(self);
}

billing_committed_t *billing_committed_new(size_t capacity, uint64_t max_age_ms)
{
    assert(capacity > 0 && capacity < S_NONE);
    billing_committed_t *self = calloc(1, sizeof *self);
    assert(self);
    self->capacity = capacity;
    self->max_age_ms = max_age_ms;
    int rc = sodium_init(); //  once per process; later calls return 1
    assert(rc >= 0);
    (void)rc;
    randombytes_buf(self->key, sizeof self->key);
    s_grow(self, capacity < S_MIN_SLOTS ? capacity : S_MIN_SLOTS);
    return self;
}

void billing_committed_destroy(billing_committed_t **self_p)
{
    assert(self_p);
    billing_committed_t *self = *self_p;
    if (!self)
        return;
    free(self->slots);
    free(self->buckets);
    free(self);
    *self_p = NULL;
}

static size_t s_find(billing_committed_t *self, const uint8_t *digest)
{
    for (uint32_t index = self->buckets[s_bucket(self, digest)]; index != S_NONE;
         index = self->slots[index].chain)
        if (memcmp(self->slots[index].digest, digest, S_DIGEST_BYTES) == 0)
            return index;
    return S_NONE;
}

static void s_evict_oldest(billing_committed_t *self)
{
    assert(self->count > 0);
    uint32_t *link = &self->buckets[s_bucket(self, self->slots[self->head].digest)];
    while (*link != self->head)
        link = &self->slots[*link].chain;
    *link = self->slots[self->head].chain;
    self->head = (self->head + 1) % self->slot_count;
    self->count--;
}

static bool s_expired(billing_committed_t *self, const s_slot_t *slot, uint64_t now_ms)
{
    return now_ms > slot->at_ms && now_ms - slot->at_ms > self->max_age_ms;
}

void billing_committed_expire(billing_committed_t *self, uint64_t now_ms)
{
    //  Commits come in time order, so expired ids are all at the head.
    while (self->count > 0 && s_expired(self, &self->slots[self->head], now_ms))
        s_evict_oldest(self);
    //  After a busy quarter of an hour, the ring shrinks back with what it
    //  holds (halving at a quarter full: no resize back and forth).
    if (self->slot_count > S_MIN_SLOTS && self->count < self->slot_count / 4)
        s_shrink(self, self->slot_count / 2 > S_MIN_SLOTS ? self->slot_count / 2 : S_MIN_SLOTS);
}

void billing_committed_add(billing_committed_t *self, const char *request_id, uint64_t now_ms)
{
    assert(request_id);
    billing_committed_expire(self, now_ms);
    uint8_t digest[S_DIGEST_BYTES];
    s_digest(self, request_id, digest);
    if (s_find(self, digest) != S_NONE)
        return;
    if (self->count == self->capacity)
        s_evict_oldest(self);
    if (self->count == self->slot_count)
        s_grow(self, self->slot_count * 2 < self->capacity ? self->slot_count * 2 : self->capacity);
    size_t index = (self->head + self->count) % self->slot_count;
    s_slot_t *slot = &self->slots[index];
    memcpy(slot->digest, digest, S_DIGEST_BYTES);
    slot->at_ms = now_ms;
    s_link(self, index);
    self->count++;
}

bool billing_committed_has(billing_committed_t *self, const char *request_id, uint64_t now_ms)
{
    uint8_t digest[S_DIGEST_BYTES];
    s_digest(self, request_id, digest);
    size_t index = s_find(self, digest);
    return index != S_NONE && !s_expired(self, &self->slots[index], now_ms);
}

size_t billing_committed_size(billing_committed_t *self)
{
    return self->count;
}

//  --------------------------------------------------------------------------
//  Self test

//  Bytes malloc has handed out and not had back, mmap'd blocks included
//  (the ring is one). Under ASan, whose allocator is its own, always 0.
static size_t s_in_use(void)
{
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}

//  A request id as ingress makes them: 32 hex digits.
static void s_test_id(char *id, size_t size, int i)
{
    snprintf(id, size, "%08x0b1c2d3e4f5a6b7c8d9e0f1a2b3c", (unsigned)i);
}

//  What 15 minutes of commits cost: BILLING_COMMITTED_MAX ids in one set.
//  They were ~133 bytes each (a strdup of the id, a zhashx entry and a
//  ring slot; 1.6 MiB for the empty ring): ~13 MiB of billing's 26-33
//  MiB peak in bench/run.sh. Now a 32-byte slot and a 4-byte bucket.
static void s_test_memory(bool verbose)
{
    size_t before = s_in_use();
    billing_committed_t *set = billing_committed_new(100000, 1000);
    char id[40];
    for (int i = 0; i < 100000; i++) {
        s_test_id(id, sizeof id, i);
        billing_committed_add(set, id, 0);
    }
    size_t grown = s_in_use() - before;
    PROTO_CHECK(billing_committed_size(set) == 100000);
    PROTO_CHECK(grown < (size_t)100000 * 48);
    if (verbose)
        printf("(100000 ids: %zu bytes in use) ", grown);
    //  All found after the ring and its index grew; the oldest go first
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
    PROTO_CHECK(s_in_use() - before < 64 * 1024);
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
    //  Expiry without an add (billing's sweep, while idle).
    billing_committed_expire(set, 1061);
    PROTO_CHECK(billing_committed_size(set) == 1); //  e
    //  Wrap around the ring many times; the index and ring stay in step.
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

    //  The ring grows while it wraps (the oldest expired from its start):
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
