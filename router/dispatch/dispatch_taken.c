/*  dispatch_taken: see the header. */
#include "dispatch_taken.h"
#include "proto_check.h"
#include "proto_idset.h"

#include <assert.h>
#include <czmq.h>
#include <malloc.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  A kept answer: the DONE's envelope, then its body, in one allocation of
//  what they hold.
typedef struct {
    uint64_t came_ms;     //  when its request finished
    size_t envelope_size; //  the envelope's bytes
    size_t body_size;     //  the body's bytes
    bool body;            //  the DONE had a body frame
    uint8_t data[];       //  envelope, then body
} s_answer_t;

//  Answers are numbered in the order they came, modulo S_ANSWER_MOD; an
//  id's tag is its answer's number plus one, 0 for none. A tag whose answer
//  was dropped points behind the oldest kept, and stays there: it would
//  take 2^32 answers while the id is still held (30 s) to come round.
#define S_ANSWER_MOD UINT32_MAX

//  An answer on a link, not yet known delivered.
typedef struct {
    uint64_t sequence; //  its DONE's on the link
    uint32_t tag;      //  the answer's
} s_pending_t;

//  Links ingress instances are remembered; beyond, the one used longest
//  ago is forgotten (its answers go by age or room, as before acks).
#define S_LINKS_MAX 64
//  The longest routing id ZeroMQ makes (libzmq's are 5 bytes).
#define S_ROUTING_MAX 255

//  One connection from ingress (one routing id of the ROUTER): the DONEs
//  down it are numbered, and ingress says which it received last.
typedef struct {
    uint64_t link;                     //  its number here; 0 = a free slot
    uint8_t routing_size;              //  bytes of routing_id
    uint8_t routing_id[S_ROUTING_MAX]; //  the ROUTER's id of the connection
    uint64_t sent;                     //  the last DONE's number on it
    uint64_t used;                     //  when it was last used (a count of stamps)
    s_pending_t *pending;              //  its answers not known delivered, oldest
    size_t pending_room;               //  first: a ring of a power of two, or 0
    size_t pending_first;              //
    size_t pending_count;              //
} s_link_t;

struct _dispatch_taken_t {
    uint64_t ttl_ms;        //  how long an id is kept
    uint64_t answer_ttl_ms; //  and its answer, at most
    size_t max_bytes;       //  answers kept in all
    size_t max_ids;         //  ids kept in all
    size_t bytes;           //  answers kept now
    //  Up to S_TAKEN_IDS ids live at once (30 s of requests: 300,000 at
    //  10,000 requests/s), ~37 bytes each in a proto_idset (56-64 as
    //  linked items in a table of pointers: ~8 MiB more of dispatch's
    //  peak at that rate). Tags name answers.
    proto_idset_t *ids;
    //  Answers, oldest first: both they and ids go in the order requests
    //  finished, so an id that goes with its answer still kept holds the
    //  oldest answer.
    s_answer_t **answers;   //  a ring of answer_room (a power of two, or 0)
    size_t answer_room;     //
    size_t answer_first;    //  the oldest answer's place in the ring
    size_t answer_count;    //  answers kept
    uint32_t answer_oldest; //  the oldest answer's number
    //  Ingress says, in each DISPATCH, the last DONE it received with a
    //  link: that one and every one before it on the same connection (a
    //  connection keeps order) need not be kept. Under load an answer is
    //  kept for the next DISPATCH's time only; 8 MiB of answers took ~14
    //  MiB of dispatch's RSS (issue 11).
    s_link_t links[S_LINKS_MAX];
    //  The last link's number. The first is random: ingress may still name
    //  a link of this instance's previous run (a restart drops nothing it
    //  holds), and a number of that run must not name one of this.
    uint64_t links_made;
    uint64_t stamps; //  DONEs stamped so far
};

dispatch_taken_t *dispatch_taken_new(uint64_t ttl_ms, uint64_t answer_ttl_ms, size_t max_bytes,
                                     size_t max_ids)
{
    dispatch_taken_t *self = calloc(1, sizeof *self);
    assert(self);
    self->ttl_ms = ttl_ms;
    self->answer_ttl_ms = answer_ttl_ms < ttl_ms ? answer_ttl_ms : ttl_ms;
    self->max_bytes = max_bytes;
    self->max_ids = max_ids ? max_ids : 1;
    self->ids = proto_idset_new(); //  initialises libsodium
    self->links_made = ((uint64_t)randombytes_random() << 31) + randombytes_random();
    return self;
}

void dispatch_taken_destroy(dispatch_taken_t **self_p)
{
    assert(self_p);
    dispatch_taken_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->answer_count; i++)
        free(self->answers[(self->answer_first + i) & (self->answer_room - 1)]);
    free(self->answers);
    for (size_t i = 0; i < S_LINKS_MAX; i++)
        free(self->links[i].pending);
    proto_idset_destroy(&self->ids);
    free(self);
    *self_p = NULL;
}

//  A ring of `size`-byte entries (a power of two of them, or none) twice
//  as large, or of `first_room`; its `count` entries move to its start.
static void *s_ring_grow(void *ring, size_t size, size_t *room_p, size_t *first_p, size_t count,
                         size_t first_room)
{
    size_t room = *room_p ? 2 * *room_p : first_room;
    uint8_t *grown = malloc(room * size);
    assert(grown);
    for (size_t i = 0; i < count; i++)
        memcpy(grown + i * size, (uint8_t *)ring + ((*first_p + i) & (*room_p - 1)) * size, size);
    free(ring);
    *room_p = room;
    *first_p = 0;
    return grown;
}

//  The kept answer an id's tag names, or NULL (none, or dropped); with its
//  place after the oldest in *offset_p.
static s_answer_t *s_answer(dispatch_taken_t *self, uint32_t tag, size_t *offset_p)
{
    if (!tag)
        return NULL;
    size_t offset =
        (size_t)(((uint64_t)tag - 1 + S_ANSWER_MOD - self->answer_oldest) % S_ANSWER_MOD);
    if (offset >= self->answer_count)
        return NULL;
    *offset_p = offset;
    return self->answers[(self->answer_first + offset) & (self->answer_room - 1)];
}

//  Moves past the oldest place of the ring, already freed; an idle
//  instance gives the ring back with the last.
static void s_pop_oldest_answer(dispatch_taken_t *self)
{
    self->answer_first = (self->answer_first + 1) & (self->answer_room - 1);
    self->answer_oldest = (uint32_t)(((uint64_t)self->answer_oldest + 1) % S_ANSWER_MOD);
    if (--self->answer_count == 0) {
        free(self->answers);
        self->answers = NULL;
        self->answer_room = 0;
        self->answer_first = 0;
    }
}

//  Frees an answer; its place in the ring stays, empty, until it is the
//  oldest. The oldest place is never empty.
static void s_free_answer(dispatch_taken_t *self, size_t offset)
{
    s_answer_t **place = &self->answers[(self->answer_first + offset) & (self->answer_room - 1)];
    self->bytes -= (*place)->envelope_size + (*place)->body_size;
    free(*place);
    *place = NULL;
    while (self->answer_count && !self->answers[self->answer_first])
        s_pop_oldest_answer(self);
}

//  Drops the oldest kept answer (its id stays).
static void s_drop_oldest_answer(dispatch_taken_t *self)
{
    s_free_answer(self, 0);
}

//  Forgets the oldest id, and its answer with it when still kept.
static void s_drop_oldest(dispatch_taken_t *self)
{
    uint32_t tag = 0;
    proto_idset_oldest(self->ids, NULL, &tag);
    size_t offset = 0;
    if (s_answer(self, tag, &offset)) {
        assert(offset == 0);
        s_drop_oldest_answer(self);
    }
    proto_idset_drop_oldest(self->ids);
}

//  Forgets the link's pending answers that are gone (by age or room).
static void s_link_prune(dispatch_taken_t *self, s_link_t *link)
{
    size_t offset;
    while (link->pending_count &&
           !s_answer(self, link->pending[link->pending_first].tag, &offset)) {
        link->pending_first = (link->pending_first + 1) & (link->pending_room - 1);
        link->pending_count--;
    }
    if (!link->pending_count && link->pending_room) {
        free(link->pending);
        link->pending = NULL;
        link->pending_room = 0;
        link->pending_first = 0;
    }
}

//  The link of a routing id: the one known, or a new one in a free slot
//  or in place of the one used longest ago.
static s_link_t *s_link_of(dispatch_taken_t *self, const uint8_t *routing_id, size_t size)
{
    s_link_t *oldest = &self->links[0];
    for (size_t i = 0; i < S_LINKS_MAX; i++) {
        s_link_t *link = &self->links[i];
        if (link->link && link->routing_size == size &&
            memcmp(link->routing_id, routing_id, size) == 0)
            return link;
        if (!link->link || (oldest->link && link->used < oldest->used))
            oldest = link;
    }
    free(oldest->pending);
    *oldest = (s_link_t){.link = ++self->links_made, .routing_size = (uint8_t)size};
    memcpy(oldest->routing_id, routing_id, size);
    return oldest;
}

//  Numbers `done` on its connection and notes its answer (tag) as pending
//  there. A DONE with no routing id (a test's) is not numbered.
static void s_stamp(dispatch_taken_t *self, proto_msg_t *done, uint32_t tag)
{
    zframe_t *routing = proto_msg_routing_id(done);
    if (!routing || !zframe_size(routing) || zframe_size(routing) > S_ROUTING_MAX)
        return;
    s_link_t *link = s_link_of(self, zframe_data(routing), zframe_size(routing));
    link->used = ++self->stamps;
    if (link->pending_count == link->pending_room)
        link->pending = s_ring_grow(link->pending, sizeof *link->pending, &link->pending_room,
                                    &link->pending_first, link->pending_count, 16);
    link->sent++;
    link->pending[(link->pending_first + link->pending_count) & (link->pending_room - 1)] =
        (s_pending_t){link->sent, tag};
    link->pending_count++;
    proto_msg_set_link(done, link->link);
    proto_msg_set_link_sequence(done, link->sent);
}

void dispatch_taken_delivered(dispatch_taken_t *self, uint64_t link_number, uint64_t sequence)
{
    for (size_t i = 0; link_number && i < S_LINKS_MAX; i++) {
        s_link_t *link = &self->links[i];
        if (link->link != link_number)
            continue;
        while (link->pending_count && link->pending[link->pending_first].sequence <= sequence) {
            size_t offset;
            if (s_answer(self, link->pending[link->pending_first].tag, &offset))
                s_free_answer(self, offset);
            link->pending_first = (link->pending_first + 1) & (link->pending_room - 1);
            link->pending_count--;
        }
        s_link_prune(self, link);
        return;
    }
}

static void s_expire(dispatch_taken_t *self, uint64_t now_ms)
{
    uint64_t at_ms;
    while (proto_idset_oldest(self->ids, &at_ms, NULL) && at_ms + self->ttl_ms <= now_ms)
        s_drop_oldest(self);
    while (self->answer_count &&
           self->answers[self->answer_first]->came_ms + self->answer_ttl_ms <= now_ms)
        s_drop_oldest_answer(self);
}

//  Appends an answer to the ring; returns its tag.
static uint32_t s_push_answer(dispatch_taken_t *self, s_answer_t *answer)
{
    if (self->answer_count == self->answer_room)
        self->answers = s_ring_grow(self->answers, sizeof *self->answers, &self->answer_room,
                                    &self->answer_first, self->answer_count, 64);
    self->answers[(self->answer_first + self->answer_count) & (self->answer_room - 1)] = answer;
    uint32_t number =
        (uint32_t)(((uint64_t)self->answer_oldest + self->answer_count) % S_ANSWER_MOD);
    self->answer_count++;
    self->bytes += answer->envelope_size + answer->body_size;
    return number + 1;
}

//  Keeps a copy of the DONE when it fits, dropping the oldest answers (not
//  their ids) to make room; returns its tag, 0 when not kept.
static uint32_t s_keep_answer(dispatch_taken_t *self, const proto_msg_t *done, uint64_t now_ms)
{
    zframe_t *body = proto_msg_body(done);
    size_t body_size = body ? zframe_size(body) : 0;
    if (body_size > self->max_bytes / 4)
        return 0; //  one answer may not push out most of the others
    uint8_t *envelope;
    size_t envelope_size;
    if (proto_msg_encode(done, &envelope, &envelope_size) != 0)
        return 0;
    //  One allocation of exactly what is kept: the encoder's buffer has
    //  room to grow (8 KiB for an envelope of a few hundred bytes) and a
    //  zframe copy of the body costs its own headers, so keeping those
    //  made an answer cost ten to twenty times what `bytes` counted.
    s_answer_t *answer = malloc(sizeof *answer + envelope_size + body_size);
    assert(answer);
    *answer = (s_answer_t){now_ms, envelope_size, body_size, body != NULL};
    memcpy(answer->data, envelope, envelope_size);
    free(envelope);
    if (body_size)
        memcpy(answer->data + envelope_size, zframe_data(body), body_size);
    while (self->answer_count && self->bytes + envelope_size + body_size > self->max_bytes)
        s_drop_oldest_answer(self);
    return s_push_answer(self, answer);
}

void dispatch_taken_add(dispatch_taken_t *self, const char *request_id, proto_msg_t *done,
                        uint64_t now_ms)
{
    s_expire(self, now_ms);
    //  Finished once already (ids are looked up once, here): the first
    //  answer stands, and nothing older makes room for this one.
    if (!proto_idset_add(self->ids, request_id, now_ms, 0))
        return;
    while (proto_idset_size(self->ids) > self->max_ids)
        s_drop_oldest(self);
    //  The copy is made before the stamp: sent again, on another
    //  connection, it must not speak for this one.
    uint32_t tag = done ? s_keep_answer(self, done, now_ms) : 0;
    if (tag) {
        proto_idset_set_youngest_tag(self->ids, tag);
        s_stamp(self, done, tag);
    }
}

bool dispatch_taken_find(dispatch_taken_t *self, const char *request_id, uint64_t now_ms,
                         proto_msg_t **done_p)
{
    *done_p = NULL;
    s_expire(self, now_ms);
    uint32_t tag = 0;
    if (!proto_idset_find(self->ids, request_id, NULL, &tag))
        return false;
    size_t offset;
    s_answer_t *answer = s_answer(self, tag, &offset);
    if (answer && proto_msg_decode(answer->data, answer->envelope_size, done_p) == 0 &&
        answer->body)
        proto_msg_set_body_bytes(*done_p, answer->data + answer->envelope_size, answer->body_size);
    return true;
}

void dispatch_taken_expire(dispatch_taken_t *self, uint64_t now_ms)
{
    s_expire(self, now_ms);
    //  A link's notes of answers gone by age or room go with the timer,
    //  not on every request: until then they cost 16 bytes each.
    for (size_t i = 0; i < S_LINKS_MAX; i++)
        if (self->links[i].pending_count)
            s_link_prune(self, &self->links[i]);
}

size_t dispatch_taken_size(dispatch_taken_t *self)
{
    return proto_idset_size(self->ids);
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
    //  entry in blocks of 1,024 and its bucket, not a copy of the id:
    //  10,000 ids of 32 characters, the form ingress makes, took a 96-byte
    //  chunk each from glibc's malloc when an item held the id (over
    //  960,000 bytes), then a 64-byte item and an 8-byte bucket, now ~39
    //  bytes (10 blocks of 32 KiB and 16,384 buckets of 4).
    dispatch_taken_t *taken = dispatch_taken_new(1000, 1000, 0, 20000);
    size_t in_use = mallinfo2().uordblks;
    for (int i = 0; i < 10000; i++) {
        char rid[40];
        snprintf(rid, sizeof rid, "%013llx%019x", 0x18c0ffee0000ULL + (unsigned)i, (unsigned)i);
        dispatch_taken_add(taken, rid, NULL, 0);
    }
    size_t grown = mallinfo2().uordblks - in_use;
    PROTO_CHECK(dispatch_taken_size(taken) == 10000);
    PROTO_CHECK(grown < 10000 * 44);
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

//  Answer numbers wrap past S_ANSWER_MOD with answers kept on both sides:
//  each id still finds its own, a dropped one stays dropped, and an id
//  that goes takes its answer along.
static void s_test_answer_numbers_wrap(void)
{
    dispatch_taken_t *taken = dispatch_taken_new(1000, 1000, 100 * 400, 150);
    taken->answer_oldest = S_ANSWER_MOD - 100; //  the kept ones straddle it
    proto_msg_t *found = NULL;
    for (int i = 0; i < 200; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "w%d", i);
        proto_msg_t *done = s_test_done(rid, 300 + i % 7);
        dispatch_taken_add(taken, rid, done, (uint64_t)i);
        proto_msg_destroy(&done);
    }
    //  ids w50..w199 held (150 at most); the budget keeps the youngest
    //  answers (~320 bytes each: ~125 of them).
    PROTO_CHECK(dispatch_taken_size(taken) == 150);
    size_t kept = taken->answer_count;
    PROTO_CHECK(kept > 100 && kept < 150 && dispatch_taken_bytes(taken) <= 100 * 400);
    for (int i = 0; i < 200; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "w%d", i);
        bool known = dispatch_taken_find(taken, rid, 200, &found);
        PROTO_CHECK(known == (i >= 50));
        PROTO_CHECK((found != NULL) == (i >= 200 - (int)kept)); //  the youngest only
        if (found) {
            PROTO_CHECK(strcmp(proto_msg_request_id(found), rid) == 0);
            PROTO_CHECK(zframe_size(proto_msg_body(found)) == (size_t)(300 + i % 7));
        }
        proto_msg_destroy(&found);
    }
    dispatch_taken_expire(taken, 1198);
    PROTO_CHECK(dispatch_taken_size(taken) == 1 && taken->answer_count == 1);
    dispatch_taken_expire(taken, 1199);
    PROTO_CHECK(dispatch_taken_size(taken) == 0 && dispatch_taken_bytes(taken) == 0);
    PROTO_CHECK(taken->answers == NULL);
    dispatch_taken_destroy(&taken);
}

//  A DONE for `rid` going down connection `conn`.
static proto_msg_t *s_test_done_to(const char *rid, uint8_t conn)
{
    proto_msg_t *done = s_test_done(rid, 200);
    uint8_t routing[5] = {0, 0, 0, 0, conn};
    proto_msg_set_routing_id_bytes(done, routing, sizeof routing);
    return done;
}

//  DONEs kept are numbered on their connection; what ingress says it
//  received goes, on that connection only, and the copies sent again
//  carry no number.
static void s_test_links(void)
{
    dispatch_taken_t *taken = dispatch_taken_new(1000, 1000, 1000000, 1000);
    proto_msg_t *found = NULL;
    uint64_t link_a = 0, link_b = 0;
    for (int i = 0; i < 6; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "l%d", i);
        proto_msg_t *done = s_test_done_to(rid, i % 2 ? 2 : 1);
        dispatch_taken_add(taken, rid, done, (uint64_t)i);
        //  l0, l2, l4 on connection 1 (1, 2, 3); l1, l3, l5 on 2 (1, 2, 3)
        PROTO_CHECK(proto_msg_link_sequence(done) == (uint64_t)(i / 2 + 1));
        if (i % 2)
            link_b = proto_msg_link(done);
        else
            link_a = proto_msg_link(done);
        proto_msg_destroy(&done);
    }
    PROTO_CHECK(link_a && link_b && link_a != link_b);
    //  A streamed request's DONE (no copy) and one without a routing id
    //  are not numbered.
    proto_msg_t *done = s_test_done_to("s", 1);
    dispatch_taken_add(taken, "s", NULL, 6);
    PROTO_CHECK(!proto_msg_link(done));
    proto_msg_destroy(&done);
    size_t all = dispatch_taken_bytes(taken);
    //  Connection 1 received its second: l0 and l2 go, l4 stays; 2's stay.
    dispatch_taken_delivered(taken, link_a, 2);
    dispatch_taken_delivered(taken, link_a + link_b + 7, 99); //  unknown: nothing
    dispatch_taken_delivered(taken, 0, 99);
    PROTO_CHECK(dispatch_taken_bytes(taken) == all / 6 * 4);
    const char *kept[] = {"l1", "l3", "l4", "l5"}, *gone[] = {"l0", "l2"};
    for (size_t i = 0; i < 4; i++) {
        PROTO_CHECK(dispatch_taken_find(taken, kept[i], 7, &found) && found);
        PROTO_CHECK(!proto_msg_link(found)); //  sent again: no number
        proto_msg_destroy(&found);
    }
    for (size_t i = 0; i < 2; i++) {
        PROTO_CHECK(dispatch_taken_find(taken, gone[i], 7, &found) && !found);
    }
    //  The same word again, and a later one, on connection 2.
    dispatch_taken_delivered(taken, link_a, 2);
    dispatch_taken_delivered(taken, link_b, 3);
    PROTO_CHECK(dispatch_taken_bytes(taken) == all / 6);
    PROTO_CHECK(dispatch_taken_find(taken, "l4", 7, &found) && found);
    proto_msg_destroy(&found);
    //  A new DONE on connection 2 continues its numbers.
    done = s_test_done_to("l6", 2);
    dispatch_taken_add(taken, "l6", done, 8);
    PROTO_CHECK(proto_msg_link(done) == link_b && proto_msg_link_sequence(done) == 4);
    proto_msg_destroy(&done);
    dispatch_taken_delivered(taken, link_a, 3);
    dispatch_taken_delivered(taken, link_b, 4);
    PROTO_CHECK(dispatch_taken_bytes(taken) == 0 && taken->answers == NULL);
    PROTO_CHECK(dispatch_taken_size(taken) == 8); //  the ids stay
    //  Many on one connection, said in parts: the rings grow and wrap.
    uint64_t link_c = 0;
    for (int i = 0; i < 70; i++) {
        char rid[3] = {(char)('a' + i / 26), (char)('a' + i % 26), '\0'}; //  as long as "l0"
        done = s_test_done_to(rid, 3);
        dispatch_taken_add(taken, rid, done, 9);
        link_c = proto_msg_link(done);
        proto_msg_destroy(&done);
        if (i == 39)
            dispatch_taken_delivered(taken, link_c, 30);
    }
    PROTO_CHECK(dispatch_taken_bytes(taken) == all / 6 * 40);
    dispatch_taken_delivered(taken, link_c, 69);
    PROTO_CHECK(dispatch_taken_bytes(taken) == all / 6);
    PROTO_CHECK(dispatch_taken_find(taken, "cr", 10, &found) && found); //  the 70th
    proto_msg_destroy(&found);
    PROTO_CHECK(dispatch_taken_find(taken, "cq", 10, &found) && !found);
    dispatch_taken_destroy(&taken);
}

//  Answers gone by age before ingress said anything leave nothing behind
//  on their link; more connections than links are remembered forget the
//  one used longest ago.
static void s_test_links_forget(void)
{
    dispatch_taken_t *taken = dispatch_taken_new(1000, 100, 1000000, 100000);
    proto_msg_t *done = s_test_done_to("f0", 1);
    dispatch_taken_add(taken, "f0", done, 0);
    uint64_t first = proto_msg_link(done);
    proto_msg_destroy(&done);
    dispatch_taken_expire(taken, 100);
    PROTO_CHECK(dispatch_taken_bytes(taken) == 0 && taken->links[0].pending == NULL);
    for (int i = 0; i < S_LINKS_MAX + 1; i++) {
        char rid[16];
        snprintf(rid, sizeof rid, "c%d", i);
        done = s_test_done_to(rid, (uint8_t)(2 + i));
        dispatch_taken_add(taken, rid, done, 200);
        PROTO_CHECK(proto_msg_link(done) == first + 1 + (uint64_t)i);
        proto_msg_destroy(&done);
    }
    //  Connection 1 was forgotten for the last: a word for it does nothing
    //  now, and it is a new link when it comes back.
    dispatch_taken_delivered(taken, first, 1);
    PROTO_CHECK(dispatch_taken_bytes(taken) > 0);
    done = s_test_done_to("f1", 1);
    dispatch_taken_add(taken, "f1", done, 201);
    PROTO_CHECK(proto_msg_link(done) > first + S_LINKS_MAX && proto_msg_link_sequence(done) == 1);
    proto_msg_destroy(&done);
    dispatch_taken_destroy(&taken);
}

//  An id finished twice: the first answer stands, the second is not kept,
//  and nothing older makes room for it.
static void s_test_finished_again(void)
{
    dispatch_taken_t *taken = dispatch_taken_new(1000, 1000, 4096, 3);
    proto_msg_t *done = s_test_done("a", 100);
    dispatch_taken_add(taken, "a", done, 0);
    proto_msg_destroy(&done);
    size_t bytes = dispatch_taken_bytes(taken);
    done = s_test_done("a", 50);
    dispatch_taken_add(taken, "a", done, 5);
    proto_msg_destroy(&done);
    PROTO_CHECK(dispatch_taken_bytes(taken) == bytes && dispatch_taken_size(taken) == 1);
    proto_msg_t *found = NULL;
    bool known = dispatch_taken_find(taken, "a", 10, &found);
    PROTO_CHECK(known && found && zframe_size(proto_msg_body(found)) == 100);
    proto_msg_destroy(&found);
    //  With all three ids held, one finished again pushes none out.
    dispatch_taken_add(taken, "s", NULL, 0);
    dispatch_taken_add(taken, "t", NULL, 0);
    dispatch_taken_add(taken, "s", NULL, 1);
    PROTO_CHECK(dispatch_taken_size(taken) == 3 && dispatch_taken_find(taken, "a", 10, &found));
    PROTO_CHECK(found && zframe_size(proto_msg_body(found)) == 100);
    proto_msg_destroy(&found);
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
    s_test_answer_numbers_wrap();
    s_test_links();
    s_test_links_forget();
    s_test_finished_again();
    s_test_ids_alone(verbose);
    if (verbose)
        printf("OK\n");
}
