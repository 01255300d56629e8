/*  proto_idset: request ids remembered in the order they came, for as long
    as their owner keeps them, at ~36 bytes an id.

    Dispatch remembers the requests it finished (30 s of them: 300,000 at
    10,000 requests/s) and billing the settlements the ledger committed (15
    minutes, up to 100,000). Both forget oldest first, so the ids live in
    fixed blocks of 1,024 entries, a new block at the young end and the
    oldest freed when its last id goes: memory follows the count with no
    ring to double and copy (a ring of a power of two holds up to twice what
    it needs, and VmHWM keeps the moment of the copy).

    An entry is 32 bytes: the id's keyed 128-bit SipHash (not the id), the
    time it came, a caller's 32-bit tag and the link of its hash chain; the
    index adds 4 to 8 bytes an id. Two ids share a digest with a chance of
    2^-128 a pair under a key drawn at start that no sender sees, and the
    key also keeps ids chosen by clients (x-request-id) from piling into one
    bucket. Ids are cut at PROTO_MSG_RID_MAX bytes, as every message cuts
    them.
*/
#ifndef PROTO_IDSET_H_INCLUDED
#define PROTO_IDSET_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _proto_idset_t proto_idset_t;

//  Creates an empty set. Caller owns return value.
proto_idset_t *proto_idset_new(void);

//  Destroys the set; nulls the pointer.
void proto_idset_destroy(proto_idset_t **self_p);

//  Remembers `id` as the youngest, come at `at_ms` (never before the
//  youngest's), with `tag`. False, and nothing changes, when it is held.
bool proto_idset_add(proto_idset_t *self, const char *id, uint64_t at_ms, uint32_t tag);

//  Gives the youngest id (the set must hold one) another tag: what its
//  owner made of it after the add said it was new.
void proto_idset_set_youngest_tag(proto_idset_t *self, uint32_t tag);

//  True when `id` is held; then *at_ms_p and *tag_p (either may be NULL)
//  are its time and its tag.
bool proto_idset_find(proto_idset_t *self, const char *id, uint64_t *at_ms_p, uint32_t *tag_p);

//  True when the set holds an id; then *at_ms_p and *tag_p (either may be
//  NULL) are the oldest one's.
bool proto_idset_oldest(proto_idset_t *self, uint64_t *at_ms_p, uint32_t *tag_p);

//  Forgets the oldest id (the set must hold one), giving back its block
//  when it was that block's last and the index's room after a burst.
void proto_idset_drop_oldest(proto_idset_t *self);

//  Ids held.
size_t proto_idset_size(proto_idset_t *self);

//  Self test.
void proto_idset_test(bool verbose);

#endif
