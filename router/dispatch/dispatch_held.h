/*  dispatch_held: DISPATCHes held while our catalog does not know their key.

    Only accounts and keys of the catalog are served: a DISPATCH is
    ingress' word that it authenticated the key, and a forged one (CURVE
    aside) must not spend a provider key for an account nobody knows. But
    ingress' catalog can be a few milliseconds ahead of ours after a key is
    made, so a DISPATCH for an unknown key waits here while our catalog
    reloads, and is refused only if its key is still unknown after a few
    seconds. At most a thousand wait; beyond that, one is refused at once.
*/
#ifndef DISPATCH_HELD_H_INCLUDED
#define DISPATCH_HELD_H_INCLUDED

#include "proto_loop.h"
#include "proto_msg.h"

#include <stdbool.h>

typedef struct _dispatch_held_t dispatch_held_t;

//  True when the catalog knows the DISPATCH's key and account now.
typedef bool(dispatch_held_known_fn)(const proto_msg_t *msg, void *arg);

//  A held DISPATCH's wait is over: its key is known now, or it waited too
//  long (known false). Takes the message (nulls the pointer or destroys it).
typedef void(dispatch_held_release_fn)(proto_msg_t **msg_p, bool known, void *arg);

//  Creates the waiting room. Caller owns return value.
dispatch_held_t *dispatch_held_new(proto_loop_t *loop, dispatch_held_known_fn *known,
                                   dispatch_held_release_fn *release, void *arg);

//  Destroys what still waits, unanswered (the program is ending), and the
//  room; nulls the pointer.
void dispatch_held_destroy(dispatch_held_t **self_p);

//  Holds a DISPATCH (taking it). Returns 1 when it is the only one held
//  (the caller asks for a catalog reload), 0 when others already wait, -1
//  when the room is full (not taken: the caller refuses it).
int dispatch_held_add(dispatch_held_t *self, proto_msg_t **msg_p);

//  After a catalog swap: releases the DISPATCHes whose key is known now.
void dispatch_held_check(dispatch_held_t *self);

#endif
