/*  dispatch_taken: see the header. */
#include "dispatch_taken.h"
#include "proto_check.h"

#include <assert.h>
#include <czmq.h>
#include <malloc.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  A kept answer: the DONE's envelope, then its body, in one allocation of
//  what they hold.
typedef struct _s_answer_t s_answer_t;
typedef struct _s_item_t s_item_t;
struct _s_answer_t {
    s_item_t *next;       //  the next younger item with an answer
    size_t envelope_size; //  the envelope's bytes
    size_t body_size;     //  the body's bytes
    bool body;            //  the DONE had a body frame
    uint8_t data[];       //  envelope, then body
};

//  One finished request. Items are linked twice, oldest first: all of them
//  (ids expire in the order they came, the ttl being one for all) and those
//  whose answer is still kept (answers are dropped oldest first); and once
//  more in their hash bucket. Up to S_TAKEN_IDS of them live at once (30 s
//  of requests: 300,000 at 10,000 requests/s), so an item is one allocation
//  of 48 bytes that holds a keyed 128-bit digest of its id, not the id: a
//  32-character id with its NUL made the item 80 bytes (jemalloc's class
//  above 73), 10 MiB of dispatch's peak at that rate. Two different ids
//  share a digest with a chance of 2^-128 per pair, and a client who picks
//  ids cannot aim at one without the key, made at start and never shown.
struct _s_item_t {
    s_item_t *next;      //  the next younger item
    s_item_t *chain;     //  the next item in the same bucket
    s_answer_t *answer;  //  the answer kept, or NULL
    uint64_t expires_ms; //  forgotten then
    uint64_t digest[2];  //  of request_id, keyed; digest[0] picks the bucket
};

static_assert(sizeof(s_item_t) == 48 || sizeof(void *) != 8, "an item is a 48-byte allocation");

//  Buckets are never fewer than this, and at most one per item otherwise.
#define S_MIN_BUCKETS 1024

struct _dispatch_taken_t {
    uint64_t ttl_ms;                                   //  how long an id is kept
    uint64_t answer_ttl_ms;                            //  and its answer, at most
    size_t max_bytes;                                  //  answers kept in all
    size_t max_ids;                                    //  ids kept in all
    size_t bytes;                                      //  answers kept now
    size_t count;                                      //  ids kept now
    s_item_t **buckets;                                //  request id hash -> items
    size_t bucket_count;                               //  a power of two
    uint8_t key[crypto_shorthash_siphashx24_KEYBYTES]; //  the digest's: ids come from clients
    s_item_t *oldest;                                  //  the list of all items, oldest first
    s_item_t *youngest;                                //  its end, where items join
    s_item_t *oldest_answer;   //  the list of items with an answer, oldest first
    s_item_t *youngest_answer; //  its end
};

//  An id is what a request keeps of it: at most PROTO_MSG_RID_MAX bytes.
static void s_digest(dispatch_taken_t *self, const char *request_id, uint64_t digest[2])
{
    uint8_t out[crypto_shorthash_siphashx24_BYTES];
    crypto_shorthash_siphashx24(out, (const uint8_t *)request_id,
                                strnlen(request_id, PROTO_MSG_RID_MAX), self->key);
    memcpy(digest, out, sizeof out);
}

//  Puts every item in a table of `count` buckets.
static void s_rehash(dispatch_taken_t *self, size_t count)
{
    s_item_t **buckets = calloc(count, sizeof *buckets);
    assert(buckets);
    for (s_item_t *item = self->oldest; item; item = item->next) {
        size_t index = item->digest[0] & (count - 1);
        item->chain = buckets[index];
        buckets[index] = item;
    }
    free(self->buckets);
    self->buckets = buckets;
    self->bucket_count = count;
}

static s_item_t *s_lookup(dispatch_taken_t *self, const uint64_t digest[2])
{
    for (s_item_t *item = self->buckets[digest[0] & (self->bucket_count - 1)]; item;
         item = item->chain)
        if (item->digest[0] == digest[0] && item->digest[1] == digest[1])
            return item;
    return NULL;
}

dispatch_taken_t *dispatch_taken_new(uint64_t ttl_ms, uint64_t answer_ttl_ms, size_t max_bytes,
                                     size_t max_ids)
{
    dispatch_taken_t *self = calloc(1, sizeof *self);
    assert(self);
    self->ttl_ms = ttl_ms;
    self->answer_ttl_ms = answer_ttl_ms < ttl_ms ? answer_ttl_ms : ttl_ms;
    self->max_bytes = max_bytes;
    self->max_ids = max_ids ? max_ids : 1;
    int rc = sodium_init(); //  once per process; later calls return 1
    assert(rc >= 0);
    (void)rc;
    randombytes_buf(self->key, sizeof self->key);
    s_rehash(self, S_MIN_BUCKETS);
    return self;
}

void dispatch_taken_destroy(dispatch_taken_t **self_p)
{
    assert(self_p);
    dispatch_taken_t *self = *self_p;
    if (!self)
        return;
    while (self->oldest) {
        s_item_t *item = self->oldest;
        self->oldest = item->next;
        free(item->answer);
        free(item);
    }
    free(self->buckets);
    free(self);
    *self_p = NULL;
}

//  Drops the oldest kept answer (its id stays).
static void s_drop_oldest_answer(dispatch_taken_t *self)
{
    s_item_t *item = self->oldest_answer;
    s_answer_t *answer = item->answer;
    self->oldest_answer = answer->next;
    if (!self->oldest_answer)
        self->youngest_answer = NULL;
    self->bytes -= answer->envelope_size + answer->body_size;
    free(answer);
    item->answer = NULL;
}

//  Forgets the oldest item. When it still has its answer, that answer is
//  the oldest kept one (both lists are in the order items came).
static void s_drop_oldest(dispatch_taken_t *self)
{
    s_item_t *item = self->oldest;
    if (item->answer) {
        assert(self->oldest_answer == item);
        s_drop_oldest_answer(self);
    }
    self->oldest = item->next;
    if (!self->oldest)
        self->youngest = NULL;
    s_item_t **link = &self->buckets[item->digest[0] & (self->bucket_count - 1)];
    while (*link != item)
        link = &(*link)->chain;
    *link = item->chain;
    self->count--;
    free(item);
}

static void s_expire(dispatch_taken_t *self, uint64_t now_ms)
{
    while (self->oldest && self->oldest->expires_ms <= now_ms)
        s_drop_oldest(self);
    //  An item came at expires_ms - ttl_ms; answers are in that order too.
    uint64_t came_before = now_ms + self->ttl_ms - self->answer_ttl_ms;
    while (self->oldest_answer && self->oldest_answer->expires_ms <= came_before)
        s_drop_oldest_answer(self);
    //  After a burst, the table shrinks back with what it holds.
    if (self->bucket_count > S_MIN_BUCKETS && self->count < self->bucket_count / 8)
        s_rehash(self,
                 self->bucket_count / 4 > S_MIN_BUCKETS ? self->bucket_count / 4 : S_MIN_BUCKETS);
}

//  Keeps a copy of the DONE with the item when it fits, dropping the oldest
//  answers (not their ids) to make room.
static void s_keep_answer(dispatch_taken_t *self, s_item_t *item, const proto_msg_t *done)
{
    zframe_t *body = proto_msg_body(done);
    size_t body_size = body ? zframe_size(body) : 0;
    if (body_size > self->max_bytes / 4)
        return; //  one answer may not push out most of the others
    uint8_t *envelope;
    size_t envelope_size;
    if (proto_msg_encode(done, &envelope, &envelope_size) != 0)
        return;
    //  One allocation of exactly what is kept: the encoder's buffer has
    //  room to grow (8 KiB for an envelope of a few hundred bytes) and a
    //  zframe copy of the body costs its own headers, so keeping those
    //  made an answer cost ten to twenty times what `bytes` counted.
    s_answer_t *answer = malloc(sizeof *answer + envelope_size + body_size);
    assert(answer);
    *answer = (s_answer_t){NULL, envelope_size, body_size, body != NULL};
    memcpy(answer->data, envelope, envelope_size);
    free(envelope);
    if (body_size)
        memcpy(answer->data + envelope_size, zframe_data(body), body_size);
    while (self->oldest_answer && self->bytes + envelope_size + body_size > self->max_bytes)
        s_drop_oldest_answer(self);
    item->answer = answer;
    self->bytes += envelope_size + body_size;
    if (self->youngest_answer)
        self->youngest_answer->answer->next = item;
    else
        self->oldest_answer = item;
    self->youngest_answer = item;
}

void dispatch_taken_add(dispatch_taken_t *self, const char *request_id, const proto_msg_t *done,
                        uint64_t now_ms)
{
    s_expire(self, now_ms);
    uint64_t digest[2];
    s_digest(self, request_id, digest);
    if (s_lookup(self, digest))
        return; //  finished once already: the first answer stands
    while (self->count >= self->max_ids)
        s_drop_oldest(self);
    s_item_t *item = calloc(1, sizeof *item);
    assert(item);
    item->digest[0] = digest[0];
    item->digest[1] = digest[1];
    item->expires_ms = now_ms + self->ttl_ms;
    if (done)
        s_keep_answer(self, item, done);
    if (self->youngest)
        self->youngest->next = item;
    else
        self->oldest = item;
    self->youngest = item;
    self->count++;
    if (self->count > self->bucket_count)
        s_rehash(self, self->bucket_count * 2);
    else {
        size_t index = item->digest[0] & (self->bucket_count - 1);
        item->chain = self->buckets[index];
        self->buckets[index] = item;
    }
}

bool dispatch_taken_find(dispatch_taken_t *self, const char *request_id, uint64_t now_ms,
                         proto_msg_t **done_p)
{
    *done_p = NULL;
    s_expire(self, now_ms);
    uint64_t digest[2];
    s_digest(self, request_id, digest);
    s_item_t *item = s_lookup(self, digest);
    if (!item)
        return false;
    s_answer_t *answer = item->answer;
    if (answer && proto_msg_decode(answer->data, answer->envelope_size, done_p) == 0 &&
        answer->body)
        proto_msg_set_body_bytes(*done_p, answer->data + answer->envelope_size, answer->body_size);
    return true;
}

void dispatch_taken_expire(dispatch_taken_t *self, uint64_t now_ms)
{
    s_expire(self, now_ms);
}

size_t dispatch_taken_size(dispatch_taken_t *self)
{
    return self->count;
}

size_t dispatch_taken_bytes(dispatch_taken_t *self)
{
    return self->bytes;
}

//  --------------------------------------------------------------------------
//  Self test

static proto_msg_t *s_test_done(const char *rid, size_t body_size)
{
    proto_msg_t *done = proto_msg_new(PROTO_MSG_DONE);
    proto_msg_set_request_id(done, rid);
    proto_msg_set_status(done, 200);
    char *body = malloc(body_size);
    PROTO_CHECK(body);
    memset(body, 'x', body_size);
    proto_msg_set_body_bytes(done, body, body_size);
    free(body);
    return done;
}

//  What an id without an answer costs, and which ids are the same.
static void s_test_ids_alone(bool verbose)
{
    proto_msg_t *found = NULL;
    //  An id alone (a stream's, or one whose answer did not fit) costs its
    //  item, not a copy of the id: 10,000 ids of 32 characters, the form
    //  ingress makes, took a 96-byte chunk each from glibc's malloc when the
    //  item held the id (over 960,000 bytes), a 64-byte one now.
    dispatch_taken_t *taken = dispatch_taken_new(1000, 1000, 0, 20000);
    size_t in_use = mallinfo2().uordblks;
    for (int i = 0; i < 10000; i++) {
        char rid[40];
        snprintf(rid, sizeof rid, "%013llx%019x", 0x18c0ffee0000ULL + (unsigned)i, (unsigned)i);
        dispatch_taken_add(taken, rid, NULL, 0);
    }
    size_t grown = mallinfo2().uordblks - in_use;
    PROTO_CHECK(dispatch_taken_size(taken) == 10000);
    PROTO_CHECK(grown < 10000 * 88);
    if (verbose)
        printf("(10000 ids: %zu bytes in use) ", grown);
    bool known = dispatch_taken_find(taken, "18c0ffee0002a000000000000000000002a", 1, &found);
    PROTO_CHECK(!known); //  a near miss is no match
    char rid[40];
    snprintf(rid, sizeof rid, "%013llx%019x", 0x18c0ffee0000ULL + 42, 42u);
    known = dispatch_taken_find(taken, rid, 1, &found);
    PROTO_CHECK(known && !found);
    dispatch_taken_destroy(&taken);

    //  An id longer than a request keeps is the same id as its cut.
    taken = dispatch_taken_new(1000, 1000, 4096, 10);
    char long_id[PROTO_MSG_RID_MAX + 8];
    memset(long_id, 'q', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    dispatch_taken_add(taken, long_id, NULL, 0);
    long_id[PROTO_MSG_RID_MAX] = '\0';
    known = dispatch_taken_find(taken, long_id, 1, &found);
    PROTO_CHECK(known && !found);
    long_id[PROTO_MSG_RID_MAX - 1] = '\0';
    known = dispatch_taken_find(taken, long_id, 1, &found);
    PROTO_CHECK(!known);
    dispatch_taken_destroy(&taken);
}

//  Answers go after answer_ttl_ms, oldest first, and their ids stay for
//  ttl_ms: a late re-send is known, never run again.
static void s_test_answer_ttl(void)
{
    proto_msg_t *found = NULL;
    dispatch_taken_t *taken = dispatch_taken_new(1000, 100, 8u * 1024 * 1024, 100);
    proto_msg_t *done = s_test_done("early", 100);
    dispatch_taken_add(taken, "early", done, 0);
    proto_msg_destroy(&done);
    done = s_test_done("later", 100);
    dispatch_taken_add(taken, "later", done, 50);
    proto_msg_destroy(&done);
    bool known = dispatch_taken_find(taken, "early", 99, &found);
    PROTO_CHECK(known && found);
    proto_msg_destroy(&found);
    known = dispatch_taken_find(taken, "early", 100, &found);
    PROTO_CHECK(known && !found);
    known = dispatch_taken_find(taken, "later", 100, &found);
    PROTO_CHECK(known && found);
    proto_msg_destroy(&found);
    dispatch_taken_expire(taken, 150);
    PROTO_CHECK(dispatch_taken_bytes(taken) == 0 && dispatch_taken_size(taken) == 2);
    known = dispatch_taken_find(taken, "later", 999, &found);
    PROTO_CHECK(known && !found);
    dispatch_taken_destroy(&taken);
}

void dispatch_taken_test(bool verbose)
{
    if (verbose)
        printf(" * dispatch_taken: ");
    dispatch_taken_t *taken = dispatch_taken_new(1000, 1000, 4096, 3);
    proto_msg_t *found = NULL;
    bool known = dispatch_taken_find(taken, "a", 0, &found);
    PROTO_CHECK(!known && !found);

    //  A finished request's DONE comes back, body and all.
    proto_msg_t *done = s_test_done("a", 100);
    dispatch_taken_add(taken, "a", done, 0);
    proto_msg_destroy(&done);
    known = dispatch_taken_find(taken, "a", 10, &found);
    PROTO_CHECK(known && found && proto_msg_status(found) == 200);
    PROTO_CHECK(proto_msg_body(found) && zframe_size(proto_msg_body(found)) == 100);
    PROTO_CHECK(strcmp(proto_msg_request_id(found), "a") == 0);
    proto_msg_destroy(&found);

    //  Without an answer (a stream): known, nothing to send again.
    dispatch_taken_add(taken, "s", NULL, 0);
    known = dispatch_taken_find(taken, "s", 10, &found);
    PROTO_CHECK(known && !found);

    //  Answers too large for a quarter of the room keep only their id; the
    //  oldest answers make room for new ones and keep their ids.
    done = s_test_done("big", 2000);
    dispatch_taken_add(taken, "big", done, 0);
    proto_msg_destroy(&done);
    known = dispatch_taken_find(taken, "big", 10, &found);
    PROTO_CHECK(known && !found);
    PROTO_CHECK(dispatch_taken_size(taken) == 3);

    //  At most max_ids: the oldest goes; after ttl_ms all go.
    dispatch_taken_add(taken, "d", NULL, 5);
    PROTO_CHECK(dispatch_taken_size(taken) == 3);
    known = dispatch_taken_find(taken, "a", 10, &found);
    PROTO_CHECK(!known);
    known = dispatch_taken_find(taken, "d", 1004, &found);
    PROTO_CHECK(known);
    known = dispatch_taken_find(taken, "d", 1005, &found);
    PROTO_CHECK(!known && dispatch_taken_size(taken) == 0);
    dispatch_taken_destroy(&taken);
    PROTO_CHECK(taken == NULL);

    //  Room for answers: the oldest answer is dropped, its id kept.
    taken = dispatch_taken_new(1000, 1000, 1000, 100);
    for (int i = 0; i < 5; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "r%d", i);
        done = s_test_done(rid, 240);
        dispatch_taken_add(taken, rid, done, 0);
        proto_msg_destroy(&done);
    }
    known = dispatch_taken_find(taken, "r0", 1, &found);
    PROTO_CHECK(known && !found);
    known = dispatch_taken_find(taken, "r4", 1, &found);
    PROTO_CHECK(known && found);
    proto_msg_destroy(&found);
    dispatch_taken_destroy(&taken);

    //  Ids with and without answers interleaved: answers go oldest first
    //  whichever ids lie between them, an id dropped for max_ids takes its
    //  answer along, and once all expired nothing is counted.
    taken = dispatch_taken_new(1000, 1000, 3000, 6);
    for (int i = 0; i < 6; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "m%d", i);
        done = i % 2 ? NULL : s_test_done(rid, 500);
        dispatch_taken_add(taken, rid, done, (uint64_t)i);
        proto_msg_destroy(&done);
    }
    PROTO_CHECK(dispatch_taken_size(taken) == 6 && dispatch_taken_bytes(taken) > 1500);
    done = s_test_done("m6", 500); //  a 7th id pushes out m0 and its answer
    dispatch_taken_add(taken, "m6", done, 6);
    proto_msg_destroy(&done);
    known = dispatch_taken_find(taken, "m0", 7, &found);
    PROTO_CHECK(!known && !found);
    for (int i = 0; i < 4; i++) { //  four answers of ~600 bytes fill 3000
        char rid[16];
        snprintf(rid, sizeof rid, "n%d", i);
        done = s_test_done(rid, 500);
        dispatch_taken_add(taken, rid, done, 7);
        proto_msg_destroy(&done);
    }
    known = dispatch_taken_find(taken, "n3", 8, &found);
    PROTO_CHECK(known && found && zframe_size(proto_msg_body(found)) == 500);
    proto_msg_destroy(&found);
    PROTO_CHECK(dispatch_taken_bytes(taken) <= 3000);
    dispatch_taken_expire(taken, 1007);
    PROTO_CHECK(dispatch_taken_size(taken) == 0 && dispatch_taken_bytes(taken) == 0);
    dispatch_taken_destroy(&taken);

    //  What an answer costs is what `bytes` counts, not the encoder's
    //  buffer: 2,000 small answers kept (8 KiB each when the encoder's
    //  8 KiB buffer was kept whole: 400 MiB in dispatch under load).
    taken = dispatch_taken_new(1000, 1000, 8u * 1024 * 1024, 10000);
    size_t in_use = mallinfo2().uordblks;
    for (int i = 0; i < 2000; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "k%d", i);
        done = s_test_done(rid, 100);
        dispatch_taken_add(taken, rid, done, 0);
        proto_msg_destroy(&done);
    }
    size_t grown = mallinfo2().uordblks - in_use;
    PROTO_CHECK(dispatch_taken_size(taken) == 2000);
    //  ~120 bytes counted per answer, ~220 more for the id and its links
    //  (mallinfo2 counts nothing under ASan, whose allocator is its own).
    PROTO_CHECK(grown < 2000 * 512);
    if (verbose)
        printf("(2000 answers: %zu bytes counted, %zu in use) ", dispatch_taken_bytes(taken),
               grown);
    //  Every one is found after the table grew past its first 1,024
    //  buckets; what is left after they expire, after it shrank back.
    for (int i = 0; i < 2000; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "k%d", i);
        known = dispatch_taken_find(taken, rid, 1, &found);
        PROTO_CHECK(known && found && zframe_size(proto_msg_body(found)) == 100);
        proto_msg_destroy(&found);
    }
    dispatch_taken_add(taken, "late", NULL, 500);
    dispatch_taken_expire(taken, 1000);
    PROTO_CHECK(dispatch_taken_size(taken) == 1 && dispatch_taken_bytes(taken) == 0);
    known = dispatch_taken_find(taken, "late", 1001, &found);
    PROTO_CHECK(known && !found);
    known = dispatch_taken_find(taken, "k7", 1001, &found);
    PROTO_CHECK(!known);
    dispatch_taken_destroy(&taken);

    s_test_answer_ttl();
    s_test_ids_alone(verbose);
    if (verbose)
        printf("OK\n");
}
