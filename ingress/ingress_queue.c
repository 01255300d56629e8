#include "ingress_queue.h"
#include "proto_check.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

struct _ingress_queue_t {
    proto_loop_t *loop;              //  process loop (borrowed)
    ingress_queue_item_t *head;      //  earliest deadline
    ingress_queue_item_t *tail;      //  latest deadline
    int timer;                       //  loop timer for the head, 0 = none
    uint64_t timer_due_ms;           //  when that timer fires
    ingress_queue_expire_fn *expire; //  called for each overdue item
    void *arg;                       //  its argument
};

ingress_queue_t *ingress_queue_new(proto_loop_t *loop, ingress_queue_expire_fn *expire, void *arg)
{
    ingress_queue_t *self = calloc(1, sizeof *self);
    assert(self);
    self->loop = loop;
    self->expire = expire;
    self->arg = arg;
    return self;
}

void ingress_queue_destroy(ingress_queue_t **self_p)
{
    assert(self_p);
    ingress_queue_t *self = *self_p;
    if (!self)
        return;
    if (self->timer)
        proto_loop_cancel_timer(self->loop, self->timer);
    free(self);
    *self_p = NULL;
}

static void s_fire(proto_loop_t *loop, int id, void *arg);

static void s_arm(ingress_queue_t *self)
{
    if (!self->head)
        return; //  an armed timer finds nothing and stays quiet
    if (self->timer && self->timer_due_ms <= self->head->due_ms)
        return;
    if (self->timer)
        proto_loop_cancel_timer(self->loop, self->timer);
    uint64_t now = proto_loop_now_ms();
    uint64_t due = self->head->due_ms;
    self->timer = proto_loop_add_timer(self->loop, due > now ? due - now : 0, false, s_fire, self);
    self->timer_due_ms = due;
}

void ingress_queue_remove(ingress_queue_item_t *item)
{
    ingress_queue_t *self = item->queue;
    if (!self)
        return;
    if (item->prev)
        item->prev->next = item->next;
    else
        self->head = item->next;
    if (item->next)
        item->next->prev = item->prev;
    else
        self->tail = item->prev;
    item->queue = NULL;
    item->prev = item->next = NULL;
}

void ingress_queue_push(ingress_queue_t *self, ingress_queue_item_t *item, uint64_t timeout_ms)
{
    ingress_queue_remove(item);
    item->due_ms = proto_loop_now_ms() + timeout_ms;
    item->queue = self;
    item->prev = self->tail;
    if (self->tail)
        self->tail->next = item;
    else
        self->head = item;
    self->tail = item;
    s_arm(self);
}

void ingress_queue_hasten(ingress_queue_t *self)
{
    uint64_t now = proto_loop_now_ms();
    for (ingress_queue_item_t *item = self->head; item; item = item->next)
        item->due_ms = now;
    s_arm(self);
}

ingress_queue_item_t *ingress_queue_first(ingress_queue_t *self)
{
    return self->head;
}

static void s_fire(proto_loop_t *loop, int id, void *arg)
{
    ingress_queue_t *self = arg;
    self->timer = 0;
    uint64_t now = proto_loop_now_ms();
    while (self->head && self->head->due_ms <= now) {
        ingress_queue_item_t *item = self->head;
        ingress_queue_remove(item);
        self->expire(item, self->arg);
    }
    s_arm(self);
}

//  --------------------------------------------------------------------------
//  Self test

typedef struct {
    ingress_queue_item_t items[3]; //  what is queued
    int order[4];                  //  indexes in the order they expired
    int expired;                   //  how many did
    proto_loop_t *loop;            //  stopped after the last
} s_test_t;

static void s_test_expire(ingress_queue_item_t *item, void *arg)
{
    s_test_t *test = arg;
    PROTO_CHECK(item->queue == NULL && test->expired < 4);
    test->order[test->expired++] = (int)(item - test->items);
    if (test->expired == 2)
        proto_loop_stop(test->loop);
}

void ingress_queue_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_queue: ");
    s_test_t test = {.expired = 0};
    test.loop = proto_loop_new();
    ingress_queue_t *queue = ingress_queue_new(test.loop, s_test_expire, &test);
    PROTO_CHECK(ingress_queue_first(queue) == NULL);
    ingress_queue_push(queue, &test.items[0], 1);
    ingress_queue_push(queue, &test.items[1], 1);
    ingress_queue_push(queue, &test.items[2], 1);
    PROTO_CHECK(ingress_queue_first(queue) == &test.items[0]);
    //  A removed item never expires; a pushed-again one goes last.
    ingress_queue_remove(&test.items[1]);
    ingress_queue_remove(&test.items[1]);
    ingress_queue_push(queue, &test.items[0], 1);
    PROTO_CHECK(ingress_queue_first(queue) == &test.items[2]);
    PROTO_CHECK(test.items[2].next == &test.items[0] && test.items[0].next == NULL);
    proto_loop_run(test.loop);
    PROTO_CHECK(test.expired == 2 && test.order[0] == 2 && test.order[1] == 0);
    PROTO_CHECK(ingress_queue_first(queue) == NULL);
    //  Hastened, items due in 10 s expire on the next turn, in their order.
    ingress_queue_push(queue, &test.items[1], 10000);
    ingress_queue_push(queue, &test.items[0], 10000);
    test.expired = 0;
    ingress_queue_hasten(queue);
    uint64_t started = proto_loop_now_ms();
    proto_loop_run(test.loop);
    PROTO_CHECK(test.expired == 2 && test.order[0] == 1 && test.order[1] == 0);
    PROTO_CHECK(proto_loop_now_ms() - started < 5000);
    //  A timer left armed for an emptied queue stays quiet.
    ingress_queue_push(queue, &test.items[1], 10000);
    ingress_queue_remove(&test.items[1]);
    ingress_queue_destroy(&queue);
    PROTO_CHECK(queue == NULL);
    proto_loop_destroy(&test.loop);
    if (verbose)
        printf("OK\n");
}
