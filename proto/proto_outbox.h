/*  proto_outbox: messages kept until their receiver confirms them.

    DESIGN: "The usage record of a finished request is kept by its sender
    until the ledger acknowledges a PostgreSQL commit." The outbox is that
    keeping. A message is encoded once and stored by request id; it is sent
    at once and re-sent every `resend_ms` until proto_outbox_ack(request id)
    is called (on COMMIT). The receiver side is idempotent by request id, so a
    re-send that crosses an ack is harmless. Over a DEALER connected to
    several instances a re-send may reach another instance: that is wanted,
    the first one may be gone.

    Messages leave in batches (proto_batch): up to 256, or 2 ms after the
    first, per socket; receivers open them with proto_batch_recv.
    Sharded sending: an outbox may hold several sockets (one DEALER per
    receiver instance); a message sent with a key goes to sockets[key %
    count], every time, so all messages of one key (an account) meet the
    same receiver.

    Journal: with proto_outbox_journal the outbox also survives SIGKILL of
    its process. Every kept message and every ack is appended to a file
    (records with a length and a CRC-32, so a torn last write is found and
    cut off at replay); proto_outbox_sync makes what was appended durable
    (fdatasync) and the caller calls it before it tells anyone the message
    is safe. At start the file is replayed: what was kept and not acked is
    held and sent again, each to the socket its key picks now. The file is
    rewritten with only the live records at replay and whenever acks have
    made it mostly garbage, so it stays proportional to what is pending.
    The file is locked (flock): a second process cannot take it over.
    A message may also be kept without being sent (proto_outbox_keep_keyed):
    the journal holds it, and only a replay sends it.
*/
#ifndef PROTO_OUTBOX_H_INCLUDED
#define PROTO_OUTBOX_H_INCLUDED

#include "proto_loop.h"
#include "proto_msg.h"

typedef struct _proto_outbox_t proto_outbox_t;

//  Creates an outbox sending on `socket` (borrowed, usually a DEALER).
//  Caller owns return value.
proto_outbox_t *proto_outbox_new(proto_loop_t *loop, zsock_t *socket, uint64_t resend_ms);

//  Creates an outbox over `count` sockets (borrowed; the array is copied),
//  one per receiver: proto_outbox_send_keyed picks one by key. Caller owns
//  return value.
proto_outbox_t *proto_outbox_new_sharded(proto_loop_t *loop, zsock_t **sockets, size_t count,
                                         uint64_t resend_ms);

//  Destroys the outbox and what it still holds (the journal file stays,
//  with what was not acked); nulls the pointer.
void proto_outbox_destroy(proto_outbox_t **self_p);

//  Whether rewriting the journal (its compaction, every time acks made it
//  mostly garbage) flushes the new file and its directory to disk. True by
//  default. An owner that never syncs its appends (proto_outbox_sync) and
//  so promises only survival of a SIGKILL, not of the host, sets false:
//  the rewrite then costs no disk flush on the loop's thread.
void proto_outbox_set_synced(proto_outbox_t *self, bool synced);

//  Disk flushes made so far (fdatasync and directory fsync).
size_t proto_outbox_flushes(proto_outbox_t *self);

//  Keeps the outbox in a journal file at `path` (created if absent), and
//  replays what the file holds: those messages are held and sent now.
//  Call once, before the first send. Returns the number of messages
//  replayed, or -1 with a reason in error (file unusable or locked by
//  another process).
int proto_outbox_journal(proto_outbox_t *self, const char *path, char *error, size_t error_size);

//  Keeps and sends a message (taking ownership). A second message with the
//  same request id replaces the first. Returns 0, or -1 when the outbox is
//  full or the journal cannot be written (message destroyed; the caller
//  decides what that means).
int proto_outbox_send(proto_outbox_t *self, proto_msg_t **msg_p);

//  Same, sending to the socket `key` picks (sockets[key % count]).
int proto_outbox_send_keyed(proto_outbox_t *self, proto_msg_t **msg_p, uint64_t key);

//  Keeps a message (taking ownership) without sending it: it is journaled
//  like a sent one and held until a send with the same request id replaces
//  it or proto_outbox_ack forgets it. Only a replay after a crash sends it.
//  A provisional record of work in progress ("if I die now, this happened")
//  is kept this way. Returns as proto_outbox_send_keyed.
int proto_outbox_keep_keyed(proto_outbox_t *self, proto_msg_t **msg_p, uint64_t key);

//  Replayed provisional records (kept with proto_outbox_keep_keyed before a
//  crash) wait hold_ms before they are sent, instead of leaving at once: the
//  request they describe may come back to this process (a sender that saw
//  none of its replies sends it again), and its final record, sent under the
//  same request id, then replaces the provisional one, which must not reach
//  the receiver first (it keeps the first record of a request id). Call
//  before proto_outbox_journal; 0 (the default) sends them at once.
void proto_outbox_set_replay_hold(proto_outbox_t *self, uint64_t hold_ms);

//  Keeps a replayed provisional record that waits for its hold from leaving
//  at all: the request it describes runs here again, and that run's own
//  records replace it. Returns true when such a record was waiting.
bool proto_outbox_hold(proto_outbox_t *self, const char *request_id);

//  Forgets the message with this request id. Returns true if it was held.
bool proto_outbox_ack(proto_outbox_t *self, const char *request_id);

//  Sends what waits in the batches now (they leave by themselves within a
//  couple of milliseconds; proto_batch). Returns 0, or -1 when a socket
//  would not take a batch (it is re-sent with the next period).
int proto_outbox_flush(proto_outbox_t *self);

//  Writes the journal records appended since the last write, with one
//  system call (appends are kept in memory until then, so a busy turn costs
//  one write, not one per message). What a SIGKILL must not lose is
//  written before anyone is told it is safe: the caller writes before it
//  answers. Returns 0 (also with no journal), or -1 when the write failed.
int proto_outbox_write(proto_outbox_t *self);

//  True when appended records wait for proto_outbox_write.
bool proto_outbox_unwritten(proto_outbox_t *self);

//  Makes every journal append so far durable (writes first). Returns 0 (also when there is
//  no journal or nothing to sync) or -1 when the disk refused.
int proto_outbox_sync(proto_outbox_t *self);

//  True when appends are waiting for proto_outbox_sync.
bool proto_outbox_dirty(proto_outbox_t *self);

//  Messages not yet acknowledged.
size_t proto_outbox_pending(proto_outbox_t *self);

//  Upper bound on held messages.
#define PROTO_OUTBOX_MAX 1000000

//  Self test.
void proto_outbox_test(bool verbose);

#endif
