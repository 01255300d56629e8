/*  dispatch_taken: the requests this dispatch instance has finished, and for
    a while the answers it gave, so that a DISPATCH sent again never reaches
    an upstream twice.

    Ingress sends a request again when its connection to us dropped before
    the answer arrived: often a network blip, with us alive and the request
    running or already done. A request still running is in the server's own
    table (its replies move to the new connection); a finished one is found
    here and its DONE goes out again instead of a second upstream call.
    Answers are kept for `answer_ttl_ms` while they fit `max_bytes` in all,
    ids for `ttl_ms` whether or not their answer is still kept; an id whose
    answer is gone is answered with an error (served and billed once, lost
    in transit), never run again. An answer ingress says it received goes
    at once: DONEs are numbered on each connection, and each DISPATCH names
    the last one that arrived.
*/
#ifndef DISPATCH_TAKEN_H_INCLUDED
#define DISPATCH_TAKEN_H_INCLUDED

#include "proto_msg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _dispatch_taken_t dispatch_taken_t;

//  Creates the memory: ids for ttl_ms (at most max_ids of them), answers
//  for answer_ttl_ms (at most ttl_ms) while they fit max_bytes in all.
//  Caller owns return value.
dispatch_taken_t *dispatch_taken_new(uint64_t ttl_ms, uint64_t answer_ttl_ms, size_t max_bytes,
                                     size_t max_ids);

//  Destroys it; nulls the pointer.
void dispatch_taken_destroy(dispatch_taken_t **self_p);

//  Remembers a finished request, with a copy of `done` (borrowed; NULL when
//  the DONE alone is not the whole answer, as after streamed CHUNKs). When
//  the copy is kept, `done` gets its link and link_sequence: its number on
//  the connection its routing id names.
void dispatch_taken_add(dispatch_taken_t *self, const char *request_id, proto_msg_t *done,
                        uint64_t now_ms);

//  Ingress received the DONE numbered `sequence` on link `link` (a
//  DISPATCH's link and link_sequence), and so every one before it there:
//  their answers are dropped. Unknown links and 0 are ignored.
void dispatch_taken_delivered(dispatch_taken_t *self, uint64_t link, uint64_t sequence);

//  True when the request was finished here within ttl_ms; then *done_p is a
//  copy of its DONE (caller owns) or NULL when the answer was not kept.
bool dispatch_taken_find(dispatch_taken_t *self, const char *request_id, uint64_t now_ms,
                         proto_msg_t **done_p);

//  Forgets what is older than ttl_ms (add and find do too; a timer calls
//  this so that an idle instance gives its memory back).
void dispatch_taken_expire(dispatch_taken_t *self, uint64_t now_ms);

//  Ids remembered now.
size_t dispatch_taken_size(dispatch_taken_t *self);

//  Bytes of answers kept now (envelopes and bodies).
size_t dispatch_taken_bytes(dispatch_taken_t *self);

//  Self test.
void dispatch_taken_test(bool verbose);

#endif
