#include "dispatch_held.h"

#include <assert.h>
#include <stdlib.h>

#define S_HELD_MAX 1000     //  DISPATCHes held at once; beyond, refused at once
#define S_HELD_WAIT_MS 3000 //  how long one may wait for our catalog
#define S_HELD_TICK_MS 100  //  how often the waits are looked at

typedef struct {
    proto_msg_t *msg;     //  the DISPATCH
    uint64_t deadline_ms; //  refused after this
} s_held_t;

struct _dispatch_held_t {
    proto_loop_t *loop;                //  the program's loop
    zlistx_t *held;                    //  s_held_t, oldest first
    int timer;                         //  looks at the waits, 0 = none (nothing held)
    dispatch_held_known_fn *known;     //  asks the catalog
    dispatch_held_release_fn *release; //  ends a wait
    void *arg;                         //  their argument
};

dispatch_held_t *dispatch_held_new(proto_loop_t *loop, dispatch_held_known_fn *known,
                                   dispatch_held_release_fn *release, void *arg)
{
    assert(known && release);
    dispatch_held_t *self = calloc(1, sizeof *self);
    assert(self);
    self->loop = loop;
    self->held = zlistx_new();
    self->known = known;
    self->release = release;
    self->arg = arg;
    return self;
}

void dispatch_held_destroy(dispatch_held_t **self_p)
{
    assert(self_p);
    dispatch_held_t *self = *self_p;
    if (!self)
        return;
    if (self->timer)
        proto_loop_cancel_timer(self->loop, self->timer);
    for (s_held_t *held = zlistx_first(self->held); held; held = zlistx_next(self->held)) {
        proto_msg_destroy(&held->msg);
        free(held);
    }
    zlistx_destroy(&self->held);
    free(self);
    *self_p = NULL;
}

//  Releases what the catalog knows now, and with `expire` what waited too
//  long; the timer stops once nothing waits.
static void s_check(dispatch_held_t *self, bool expire)
{
    uint64_t now = proto_loop_now_ms();
    s_held_t *held = zlistx_first(self->held);
    while (held) {
        void *handle = zlistx_cursor(self->held);
        s_held_t *next = zlistx_next(self->held);
        bool known = self->known(held->msg, self->arg);
        if (known || (expire && now >= held->deadline_ms)) {
            proto_msg_t *msg = held->msg;
            zlistx_delete(self->held, handle);
            free(held);
            self->release(&msg, known, self->arg);
            proto_msg_destroy(&msg);
        }
        held = next;
    }
    if (zlistx_size(self->held) == 0 && self->timer) {
        proto_loop_cancel_timer(self->loop, self->timer);
        self->timer = 0;
    }
}

static void s_tick(proto_loop_t *loop, int id, void *arg)
{
    s_check(arg, true);
}

int dispatch_held_add(dispatch_held_t *self, proto_msg_t **msg_p)
{
    if (zlistx_size(self->held) >= S_HELD_MAX)
        return -1;
    s_held_t *held = malloc(sizeof *held);
    assert(held);
    *held = (s_held_t){*msg_p, proto_loop_now_ms() + S_HELD_WAIT_MS};
    *msg_p = NULL;
    bool first = zlistx_size(self->held) == 0;
    if (first)
        self->timer = proto_loop_add_timer(self->loop, S_HELD_TICK_MS, true, s_tick, self);
    zlistx_add_end(self->held, held);
    return first ? 1 : 0;
}

void dispatch_held_check(dispatch_held_t *self)
{
    s_check(self, false);
}
