/*  proto_idset: see the header. */
#include "proto_idset.h"
#include "proto_check.h"
#include "proto_msg.h"
#include "proto_test.h"

#include <assert.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Ids a block holds: 32 KiB, so an idle set keeps little and a busy one
//  frees a block every 1,024 ids.
#define S_BLOCK 1024
//  The end of a bucket's chain. Ids are numbered in the order they came,
//  counting modulo S_NONE, so no id has this number.
#define S_NONE UINT32_MAX
//  Buckets are never fewer than this, and at most one per id otherwise.
#define S_MIN_BUCKETS 1024

typedef struct {
    uint64_t digest[2]; //  keyed SipHash-128 of the id; digest[0] picks the bucket
    uint64_t at_ms;     //  when it came
    uint32_t tag;       //  the owner's
    uint32_t chain;     //  the number of the next id in the same bucket, or S_NONE
} s_entry_t;

static_assert(sizeof(s_entry_t) == 32, "an id is a 32-byte entry");

struct _proto_idset_t {
    s_entry_t **blocks;  //  blocks[0] holds the oldest id, at `first`
    size_t block_count;  //  blocks held
    size_t block_room;   //  room of `blocks`
    size_t first;        //  the oldest id's entry in blocks[0]
    size_t count;        //  ids held
    uint32_t head;       //  the oldest id's number
    uint32_t *buckets;   //  digest -> number of the youngest id of its chain, or S_NONE
    size_t bucket_count; //  a power of two
    uint8_t key[crypto_shorthash_siphashx24_KEYBYTES]; //  the digest's: ids come from clients
};

static void s_digest(proto_idset_t *self, const char *id, uint64_t digest[2])
{
    uint8_t out[crypto_shorthash_siphashx24_BYTES];
    crypto_shorthash_siphashx24(out, (const uint8_t *)id, strnlen(id, PROTO_MSG_RID_MAX),
                                self->key);
    memcpy(digest, out, sizeof out);
}

//  The entry of the id `offset` places younger than the oldest.
static s_entry_t *s_entry(proto_idset_t *self, size_t offset)
{
    size_t place = self->first + offset;
    return &self->blocks[place / S_BLOCK][place % S_BLOCK];
}

//  The number of the id `offset` places younger than the oldest.
static uint32_t s_number(proto_idset_t *self, size_t offset)
{
    return (uint32_t)(((uint64_t)self->head + offset) % S_NONE);
}

//  The entry of the id numbered `number` (a held one).
static s_entry_t *s_numbered(proto_idset_t *self, uint32_t number)
{
    return s_entry(self, (size_t)(((uint64_t)number + S_NONE - self->head) % S_NONE));
}

static uint32_t *s_bucket(proto_idset_t *self, const uint64_t digest[2])
{
    return &self->buckets[digest[0] & (self->bucket_count - 1)];
}

//  Indexes every id again, in `bucket_count` buckets.
static void s_rehash(proto_idset_t *self, size_t bucket_count)
{
    uint32_t *buckets = malloc(bucket_count * sizeof *buckets);
    assert(buckets);
    free(self->buckets);
    self->buckets = buckets;
    self->bucket_count = bucket_count;
    for (size_t i = 0; i < bucket_count; i++)
        buckets[i] = S_NONE;
    for (size_t offset = 0; offset < self->count; offset++) {
        s_entry_t *entry = s_entry(self, offset);
        uint32_t *bucket = s_bucket(self, entry->digest);
        entry->chain = *bucket;
        *bucket = s_number(self, offset);
    }
}

proto_idset_t *proto_idset_new(void)
{
    proto_idset_t *self = calloc(1, sizeof *self);
    assert(self);
    int rc = sodium_init(); //  once per process; later calls return 1
    assert(rc >= 0);
    (void)rc;
    randombytes_buf(self->key, sizeof self->key);
    s_rehash(self, S_MIN_BUCKETS);
    return self;
}

static void s_free_blocks(proto_idset_t *self)
{
    for (size_t i = 0; i < self->block_count; i++)
        free(self->blocks[i]);
    self->block_count = 0;
    self->first = 0;
}

void proto_idset_destroy(proto_idset_t **self_p)
{
    assert(self_p);
    proto_idset_t *self = *self_p;
    if (!self)
        return;
    s_free_blocks(self);
    free(self->blocks);
    free(self->buckets);
    free(self);
    *self_p = NULL;
}

static s_entry_t *s_find(proto_idset_t *self, const uint64_t digest[2])
{
    for (uint32_t number = *s_bucket(self, digest); number != S_NONE;) {
        s_entry_t *entry = s_numbered(self, number);
        if (entry->digest[0] == digest[0] && entry->digest[1] == digest[1])
            return entry;
        number = entry->chain;
    }
    return NULL;
}

//  Room for one more id at the young end.
static void s_make_room(proto_idset_t *self)
{
    if (self->first + self->count < self->block_count * S_BLOCK)
        return;
    if (self->block_count == self->block_room) {
        size_t room = self->block_room ? 2 * self->block_room : 8;
        s_entry_t **blocks = realloc(self->blocks, room * sizeof *blocks);
        assert(blocks);
        self->blocks = blocks;
        self->block_room = room;
    }
    self->blocks[self->block_count] = malloc(S_BLOCK * sizeof(s_entry_t));
    assert(self->blocks[self->block_count]);
    self->block_count++;
}

bool proto_idset_add(proto_idset_t *self, const char *id, uint64_t at_ms, uint32_t tag)
{
    assert(id);
    uint64_t digest[2];
    s_digest(self, id, digest);
    if (s_find(self, digest))
        return false;
    assert(self->count < S_NONE - 1);
    s_make_room(self);
    s_entry_t *entry = s_entry(self, self->count);
    uint32_t *bucket = s_bucket(self, digest);
    *entry = (s_entry_t){{digest[0], digest[1]}, at_ms, tag, *bucket};
    *bucket = s_number(self, self->count);
    self->count++;
    if (self->count > self->bucket_count)
        s_rehash(self, 2 * self->bucket_count);
    return true;
}

bool proto_idset_find(proto_idset_t *self, const char *id, uint64_t *at_ms_p, uint32_t *tag_p)
{
    assert(id);
    uint64_t digest[2];
    s_digest(self, id, digest);
    s_entry_t *entry = s_find(self, digest);
    if (entry && at_ms_p)
        *at_ms_p = entry->at_ms;
    if (entry && tag_p)
        *tag_p = entry->tag;
    return entry != NULL;
}

void proto_idset_set_youngest_tag(proto_idset_t *self, uint32_t tag)
{
    assert(self->count);
    s_entry(self, self->count - 1)->tag = tag;
}

bool proto_idset_oldest(proto_idset_t *self, uint64_t *at_ms_p, uint32_t *tag_p)
{
    if (!self->count)
        return false;
    s_entry_t *entry = s_entry(self, 0);
    if (at_ms_p)
        *at_ms_p = entry->at_ms;
    if (tag_p)
        *tag_p = entry->tag;
    return true;
}

void proto_idset_drop_oldest(proto_idset_t *self)
{
    assert(self->count);
    s_entry_t *oldest = s_entry(self, 0);
    uint32_t *link = s_bucket(self, oldest->digest);
    while (*link != self->head)
        link = &s_numbered(self, *link)->chain;
    *link = oldest->chain;
    self->head = s_number(self, 1);
    self->first++;
    self->count--;
    if (!self->count)
        s_free_blocks(self);
    else if (self->first == S_BLOCK) {
        free(self->blocks[0]);
        self->block_count--;
        memmove(self->blocks, self->blocks + 1, self->block_count * sizeof *self->blocks);
        self->first = 0;
    }
    //  After a burst, the index shrinks back with what it holds (a quarter
    //  at an eighth full: no resize back and forth).
    if (self->bucket_count > S_MIN_BUCKETS && self->count < self->bucket_count / 8)
        s_rehash(self,
                 self->bucket_count / 4 > S_MIN_BUCKETS ? self->bucket_count / 4 : S_MIN_BUCKETS);
}

size_t proto_idset_size(proto_idset_t *self)
{
    return self->count;
}

//  --------------------------------------------------------------------------
//  Self test

//  A request id as ingress makes them: 32 hex digits.
static void s_test_id(char *id, size_t size, unsigned i)
{
    snprintf(id, size, "%08x0b1c2d3e4f5a6b7c8d9e0f1a2b3c", i);
}

//  Ids held and ids dropped across many blocks and a grown index; each is
//  found with its time and tag while held, and only then.
static void s_test_blocks(proto_idset_t *set, unsigned from, unsigned to)
{
    char id[40];
    size_t held_before = proto_idset_size(set);
    for (unsigned i = from; i < to; i++) {
        s_test_id(id, sizeof id, i);
        PROTO_CHECK(proto_idset_add(set, id, i, i * 7));
    }
    PROTO_CHECK(proto_idset_size(set) == held_before + (to - from));
    while (proto_idset_size(set) > to - from)
        proto_idset_drop_oldest(set); //  what an earlier call left
    for (unsigned i = from; i < to + 100; i++) {
        s_test_id(id, sizeof id, i);
        uint64_t at = 0;
        uint32_t tag = 0;
        bool held = proto_idset_find(set, id, &at, &tag);
        PROTO_CHECK(held == (i < to) && (!held || (at == i && tag == i * 7)));
    }
    //  The oldest go first, whichever bucket chain they sit in.
    unsigned half = from + (to - from) / 2;
    for (unsigned i = from; i < half; i++) {
        uint64_t at = 0;
        PROTO_CHECK(proto_idset_oldest(set, &at, NULL) && at == i);
        proto_idset_drop_oldest(set);
    }
    for (unsigned i = from; i < to; i++) {
        s_test_id(id, sizeof id, i);
        PROTO_CHECK(proto_idset_find(set, id, NULL, NULL) == (i >= half));
    }
}

//  What 100,000 ids cost, and that the set gives it back.
static void s_test_memory(bool verbose)
{
    size_t before = proto_test_heap_in_use();
    proto_idset_t *set = proto_idset_new();
    char id[40];
    for (unsigned i = 0; i < 100000; i++) {
        s_test_id(id, sizeof id, i);
        proto_idset_add(set, id, 0, 0);
    }
    size_t grown = proto_test_heap_in_use() - before;
    //  32 bytes an entry and 4 a bucket (131,072 of them): ~36.5 a id.
    PROTO_CHECK(grown < (size_t)100000 * 38);
    if (verbose)
        printf("(100000 ids: %zu bytes in use) ", grown);
    while (proto_idset_size(set) > 10)
        proto_idset_drop_oldest(set);
    PROTO_CHECK(proto_test_heap_in_use() - before < 48 * 1024);
    proto_idset_destroy(&set);
}

void proto_idset_test(bool verbose)
{
    if (verbose)
        printf(" * proto_idset: ");
    proto_idset_t *set = proto_idset_new();
    PROTO_CHECK(!proto_idset_oldest(set, NULL, NULL));
    PROTO_CHECK(!proto_idset_find(set, "a", NULL, NULL));
    PROTO_CHECK(proto_idset_add(set, "a", 10, 1));
    PROTO_CHECK(proto_idset_add(set, "b", 20, 2));
    PROTO_CHECK(!proto_idset_add(set, "a", 30, 3)); //  held: the first stands
    uint64_t at = 0;
    uint32_t tag = 0;
    PROTO_CHECK(proto_idset_find(set, "a", &at, &tag) && at == 10 && tag == 1);
    PROTO_CHECK(proto_idset_oldest(set, &at, &tag) && at == 10 && tag == 1);
    //  Only the youngest takes a new tag.
    proto_idset_set_youngest_tag(set, 9);
    PROTO_CHECK(proto_idset_find(set, "b", &at, &tag) && at == 20 && tag == 9);
    PROTO_CHECK(proto_idset_find(set, "a", NULL, &tag) && tag == 1);
    proto_idset_drop_oldest(set);
    PROTO_CHECK(!proto_idset_find(set, "a", NULL, NULL) && proto_idset_find(set, "b", NULL, NULL));
    //  Ids that differ only past a prefix, or in their last byte, are
    //  different ids; one longer than a message keeps is its cut.
    PROTO_CHECK(proto_idset_add(set, "client-id.0123456789abcdef", 40, 0));
    PROTO_CHECK(!proto_idset_find(set, "client-id.0123456789abcdee", NULL, NULL));
    PROTO_CHECK(!proto_idset_find(set, "client-id.0123456789abcde", NULL, NULL));
    PROTO_CHECK(!proto_idset_find(set, "", NULL, NULL));
    char long_id[PROTO_MSG_RID_MAX + 8];
    memset(long_id, 'q', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    PROTO_CHECK(proto_idset_add(set, long_id, 50, 0));
    long_id[PROTO_MSG_RID_MAX] = '\0';
    PROTO_CHECK(proto_idset_find(set, long_id, NULL, NULL));
    long_id[PROTO_MSG_RID_MAX - 1] = '\0';
    PROTO_CHECK(!proto_idset_find(set, long_id, NULL, NULL));
    while (proto_idset_size(set))
        proto_idset_drop_oldest(set);
    PROTO_CHECK(!proto_idset_find(set, "b", NULL, NULL));

    //  Across blocks and a grown index, from empty and then from a set
    //  whose oldest sits inside a block.
    s_test_blocks(set, 0, 5000);
    s_test_blocks(set, 5000, 9000);
    proto_idset_destroy(&set);
    PROTO_CHECK(set == NULL);

    //  Numbers wrap past S_NONE with ids held on both sides.
    set = proto_idset_new();
    set->head = S_NONE - 700;
    s_test_blocks(set, 0, 3000);
    proto_idset_destroy(&set);

    s_test_memory(verbose);
    if (verbose)
        printf("OK\n");
}
