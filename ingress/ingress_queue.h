/*  ingress_queue: requests ordered by deadline, with one loop timer.

    Every entry of a queue has the same timeout, so appending keeps it
    sorted and one timer (for the head) is enough: no per-request timers in
    the loop. The queue is intrusive: the item lives inside the record it
    orders (ingress_request_t), so a push or a removal allocates nothing.
*/
#ifndef INGRESS_QUEUE_H_INCLUDED
#define INGRESS_QUEUE_H_INCLUDED

#include "proto_loop.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct _ingress_queue_t ingress_queue_t;
typedef struct _ingress_queue_item_t ingress_queue_item_t;

//  One record's place in a queue; zeroed, it is in none.
struct _ingress_queue_item_t {
    ingress_queue_t *queue;     //  queue it is in, or NULL
    ingress_queue_item_t *prev; //  earlier deadline
    ingress_queue_item_t *next; //  later deadline
    uint64_t due_ms;            //  its deadline there (monotonic)
};

//  Called for each item whose deadline has passed; the item is out of the
//  queue by then, and may be pushed again.
typedef void(ingress_queue_expire_fn)(ingress_queue_item_t *item, void *arg);

//  A queue whose overdue items go to `expire`. The loop is borrowed.
//  Caller owns return value.
ingress_queue_t *ingress_queue_new(proto_loop_t *loop, ingress_queue_expire_fn *expire, void *arg);

//  Cancels the timer and destroys the queue (items still in it are left
//  pointing at nothing: remove them first); nulls the pointer.
void ingress_queue_destroy(ingress_queue_t **self_p);

//  Appends the item with a deadline timeout_ms from now, taking it out of
//  whatever queue it was in first.
void ingress_queue_push(ingress_queue_t *self, ingress_queue_item_t *item, uint64_t timeout_ms);

//  Takes the item out of its queue, if it is in one.
void ingress_queue_remove(ingress_queue_item_t *item);

//  Makes every item due now: they expire, in their order, on the loop's
//  next turn (never from inside the caller's call).
void ingress_queue_hasten(ingress_queue_t *self);

//  The item with the earliest deadline, or NULL; walk on with item->next.
ingress_queue_item_t *ingress_queue_first(ingress_queue_t *self);

//  Self test.
void ingress_queue_test(bool verbose);

#endif
