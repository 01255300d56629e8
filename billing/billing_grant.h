/*  billing_grant: the vouchers billing gives with each admission, and the
    check that a SETTLE carries one (docs/billing.md, "Who may settle").

    A grant is text: "a1.MAC" for a request admitted with ADMIT, MAC over
    (request id, account id, key id), followed by ".MAC2" when the request
    id is longer than dispatch keeps of it in an operator's-loss record
    (BILLING_GRANT_LOSS_PREFIX): MAC2, over that prefix, vouches for such
    records only (they are never charged); "l1.LEASE_ID.MAC" for a lease, MAC
    over (lease id, account id, key id). The MAC is keyed BLAKE2b (128
    bits) under a key derived from the cluster's secret_key, so every
    billing instance, and the same one after a restart, checks the grants
    of any other; nothing is stored. Ingress passes the grant on in
    DISPATCH, dispatch copies it into SETTLE (and into its journal), and
    billing charges a SETTLE only when its grant names its request (or its
    lease) with the account and key the SETTLE names.

    Without a valid secret_key the key is random: grants hold until the
    process ends (a restarted billing then drops replays it cannot check).
*/
#ifndef BILLING_GRANT_H_INCLUDED
#define BILLING_GRANT_H_INCLUDED

#include "proto_msg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _billing_grant_t billing_grant_t;

//  Longest grant text, NUL excluded: "a1." + MAC + "." + MAC2.
#define BILLING_GRANT_MAX 80

//  The suffix dispatch adds to a request id for an operator's-loss record
//  (router/dispatch: "%.*s~lost-%08x", the request id cut to
//  BILLING_GRANT_LOSS_PREFIX characters): its grant is its request's.
#define BILLING_GRANT_LOSS_MARK "~lost-"
#define BILLING_GRANT_LOSS_PREFIX (PROTO_MSG_RID_MAX - 14)

//  Creates the signer from secret_key (64 hex digits); a bad or empty one
//  gives a random key (logged by the caller: see billing_grant_durable).
//  Caller owns return value.
billing_grant_t *billing_grant_new(const char *secret_key);

//  Destroys it; nulls the pointer.
void billing_grant_destroy(billing_grant_t **self_p);

//  True when the key comes from secret_key (grants survive restarts).
bool billing_grant_durable(billing_grant_t *self);

//  The grant of a request admitted with ADMIT, into out (BILLING_GRANT_MAX + 1).
void billing_grant_admit(billing_grant_t *self, const char *request_id, uint64_t account_id,
                         uint64_t key_id, char *out);

//  The grant of a lease, into out (BILLING_GRANT_MAX + 1).
void billing_grant_lease(billing_grant_t *self, uint64_t lease_id, uint64_t account_id,
                         uint64_t key_id, char *out);

//  True when grant was made with this key for request_id (or, for an
//  operator's-loss record -- `loss` set -- the request it belongs to) or for
//  a lease, with this account and key; a lease grant only when the SETTLE
//  names that lease or none (lease_id 0). Constant-time in the MAC.
bool billing_grant_check(billing_grant_t *self, const char *grant, const char *request_id,
                         bool loss, uint64_t lease_id, uint64_t account_id, uint64_t key_id);

//  Self test.
void billing_grant_test(bool verbose);

#endif
