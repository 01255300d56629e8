/*  dispatch_settle: the usage records on their way to billing, and the DONEs
    that wait for them.

    One DEALER per billing instance; a SETTLE goes to the instance picked by
    its account (account_id % count, as ingress picks for ADMIT: the
    instance that admitted a request settles it, docs/billing.md). Records
    are kept in a proto_outbox until billing's COMMIT, journaled in
    state_dir so that a restart re-sends what was not acknowledged.

    The client learns that a request is complete only from DONE, so a DONE
    leaves only once its SETTLE is in the journal's file: the records of a
    loop turn are written with one system call at the end of the turn, and
    the DONEs that waited for them go then. With dispatch.journal_sync they
    also wait for one fdatasync per turn (group commit).
*/
#ifndef DISPATCH_SETTLE_H_INCLUDED
#define DISPATCH_SETTLE_H_INCLUDED

#include "proto_config.h"
#include "proto_loop.h"
#include "proto_msg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _dispatch_settle_t dispatch_settle_t;

//  Called after each COMMIT from billing (an outbox that empties may end a
//  drain).
typedef void(dispatch_settle_commit_fn)(void *arg);

//  Connects to every billing endpoint, opens and replays the journal and
//  takes the loop's end-of-turn hook. DONEs go out on `router` (borrowed,
//  must outlive this). Returns NULL (after logging why) when any of it
//  fails. Caller owns return value.
dispatch_settle_t *dispatch_settle_new(proto_loop_t *loop, proto_config_t *config, zsock_t *router,
                                       dispatch_settle_commit_fn *on_commit, void *arg);

//  Sends the DONEs still waiting (after a last journal write), then
//  destroys the outbox (the journal keeps what was not acknowledged);
//  nulls the pointer.
void dispatch_settle_destroy(dispatch_settle_t **self_p);

//  Keeps and sends a SETTLE (taking ownership) to its account's billing
//  instance; it replaces a provisional record with the same request id.
//  Returns 0, or -1 when the outbox is full or the journal unwritable.
int dispatch_settle_send(dispatch_settle_t *self, proto_msg_t **settle_p, uint64_t account_id);

//  Keeps a provisional record (taking ownership), sent only by a replay
//  after a crash. Returns as dispatch_settle_send.
int dispatch_settle_keep(dispatch_settle_t *self, proto_msg_t **settle_p, uint64_t account_id);

//  Forgets the record kept under this id.
void dispatch_settle_forget(dispatch_settle_t *self, const char *request_id);

//  A request taken again after this process died with it under way (ingress
//  got none of its replies): the provisional record the journal gave back,
//  if it still waits for dispatch.replay_hold_ms, never leaves; this run's
//  own records replace it. Returns true when there was one.
bool dispatch_settle_rerun(dispatch_settle_t *self, const char *request_id);

//  Sends a DONE (taking ownership) once the SETTLEs before it are in the
//  journal: at once when they are, else at the end of this loop turn.
void dispatch_settle_done(dispatch_settle_t *self, proto_msg_t **done_p, const char *request_id);

//  SETTLEs kept until billing's COMMIT.
size_t dispatch_settle_pending(dispatch_settle_t *self);

//  DONEs waiting for the journal.
size_t dispatch_settle_waiting(dispatch_settle_t *self);

//  Billing endpoints connected.
int dispatch_settle_endpoints(dispatch_settle_t *self);

#endif
