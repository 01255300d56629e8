/*  dispatch_taken: see the header. */
#include "dispatch_taken.h"
#include "proto_check.h"

#include <assert.h>
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char request_id[PROTO_MSG_RID_MAX + 1]; //  the key
    uint64_t expires_ms;                    //  forgotten then
    uint8_t *envelope;                      //  the DONE's encoded envelope, or NULL
    size_t envelope_size;                   //  its bytes
    zframe_t *body;                         //  the DONE's body, or NULL
    size_t bytes;                           //  envelope and body, counted in `bytes`
} s_item_t;

struct _dispatch_taken_t {
    uint64_t ttl_ms;  //  how long an id is kept
    size_t max_bytes; //  answers kept in all
    size_t max_ids;   //  ids kept in all
    size_t bytes;     //  answers kept now
    zhashx_t *items;  //  request id -> s_item_t* (owns them)
    zlistx_t *order;  //  the same items, oldest first (ttl is one for all)
};

static void s_item_destroy(void **item_p)
{
    s_item_t *item = *item_p;
    if (!item)
        return;
    free(item->envelope);
    zframe_destroy(&item->body);
    free(item);
    *item_p = NULL;
}

dispatch_taken_t *dispatch_taken_new(uint64_t ttl_ms, size_t max_bytes, size_t max_ids)
{
    dispatch_taken_t *self = calloc(1, sizeof *self);
    assert(self);
    self->ttl_ms = ttl_ms;
    self->max_bytes = max_bytes;
    self->max_ids = max_ids ? max_ids : 1;
    self->items = zhashx_new();
    zhashx_set_destructor(self->items, s_item_destroy);
    self->order = zlistx_new();
    return self;
}

void dispatch_taken_destroy(dispatch_taken_t **self_p)
{
    assert(self_p);
    dispatch_taken_t *self = *self_p;
    if (!self)
        return;
    zlistx_destroy(&self->order);
    zhashx_destroy(&self->items);
    free(self);
    *self_p = NULL;
}

//  Forgets the oldest item.
static void s_drop_oldest(dispatch_taken_t *self)
{
    s_item_t *item = zlistx_first(self->order);
    zlistx_delete(self->order, zlistx_cursor(self->order));
    self->bytes -= item->bytes;
    zhashx_delete(self->items, item->request_id);
}

static void s_expire(dispatch_taken_t *self, uint64_t now_ms)
{
    s_item_t *item;
    while ((item = zlistx_first(self->order)) && item->expires_ms <= now_ms)
        s_drop_oldest(self);
}

//  Keeps a copy of the DONE in the item when it fits, dropping the oldest
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
    size_t bytes = envelope_size + body_size;
    for (s_item_t *old = zlistx_first(self->order); old && self->bytes + bytes > self->max_bytes;
         old = zlistx_next(self->order))
        if (old->bytes) {
            self->bytes -= old->bytes;
            old->bytes = 0;
            free(old->envelope);
            old->envelope = NULL;
            zframe_destroy(&old->body);
        }
    item->envelope = envelope;
    item->envelope_size = envelope_size;
    item->body = body ? zframe_dup(body) : NULL;
    item->bytes = bytes;
    self->bytes += bytes;
}

void dispatch_taken_add(dispatch_taken_t *self, const char *request_id, const proto_msg_t *done,
                        uint64_t now_ms)
{
    s_expire(self, now_ms);
    if (zhashx_lookup(self->items, request_id))
        return; //  finished once already: the first answer stands
    while (zhashx_size(self->items) >= self->max_ids)
        s_drop_oldest(self);
    s_item_t *item = calloc(1, sizeof *item);
    assert(item);
    snprintf(item->request_id, sizeof item->request_id, "%s", request_id);
    item->expires_ms = now_ms + self->ttl_ms;
    if (done)
        s_keep_answer(self, item, done);
    zhashx_insert(self->items, item->request_id, item);
    zlistx_add_end(self->order, item);
}

bool dispatch_taken_find(dispatch_taken_t *self, const char *request_id, uint64_t now_ms,
                         proto_msg_t **done_p)
{
    *done_p = NULL;
    s_expire(self, now_ms);
    s_item_t *item = zhashx_lookup(self->items, request_id);
    if (!item)
        return false;
    if (item->envelope && proto_msg_decode(item->envelope, item->envelope_size, done_p) == 0 &&
        item->body) {
        zframe_t *body = zframe_dup(item->body);
        proto_msg_set_body(*done_p, &body);
    }
    return true;
}

size_t dispatch_taken_size(dispatch_taken_t *self)
{
    return zhashx_size(self->items);
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

void dispatch_taken_test(bool verbose)
{
    if (verbose)
        printf(" * dispatch_taken: ");
    dispatch_taken_t *taken = dispatch_taken_new(1000, 4096, 3);
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
    taken = dispatch_taken_new(1000, 1000, 100);
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
    if (verbose)
        printf("OK\n");
}
