#include "billing_grant.h"
#include "proto_text.h"
#include "proto_check.h"
#include "proto_crypto.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  The derived key's purpose: a new context makes every old grant invalid.
#define S_CONTEXT "tollgate billing grant v1"

struct _billing_grant_t {
    uint8_t key[PROTO_CRYPTO_MAC_KEY_BYTES]; //  MAC key
    bool durable;                            //  derived from secret_key
};

billing_grant_t *billing_grant_new(const char *secret_key)
{
    billing_grant_t *self = calloc(1, sizeof *self);
    assert(self);
    self->durable = proto_crypto_mac_key(secret_key, S_CONTEXT, self->key) == 0;
    if (!self->durable) {
        char random[PROTO_CRYPTO_KEY_HEX + 1];
        proto_crypto_random_hex(random, PROTO_CRYPTO_KEY_HEX / 2);
        int rc = proto_crypto_mac_key(random, S_CONTEXT, self->key);
        assert(rc == 0);
        (void)rc;
    }
    return self;
}

void billing_grant_destroy(billing_grant_t **self_p)
{
    assert(self_p);
    free(*self_p);
    *self_p = NULL;
}

bool billing_grant_durable(billing_grant_t *self)
{
    return self->durable;
}

//  MAC over "KIND|SUBJECT|ACCOUNT|KEY" (the subject never holds '|' in a
//  way that matters: the numbers after it are fixed in number and last).
static void s_mac(billing_grant_t *self, char kind, const char *subject, uint64_t account_id,
                  uint64_t key_id, char *out)
{
    char text[192]; //  a subject of up to 127 bytes (billing_grant_check), two numbers
    size_t subject_length = strlen(subject);
    assert(subject_length + 3 + 2 * PROTO_TEXT_INT_MAX < sizeof text);
    size_t length = 0;
    text[length++] = kind;
    text[length++] = '|';
    memcpy(text + length, subject, subject_length);
    length += subject_length;
    text[length++] = '|';
    length += proto_text_u64(text + length, account_id);
    text[length++] = '|';
    length += proto_text_u64(text + length, key_id);
    proto_crypto_mac_hex(self->key, text, length, out);
}

void billing_grant_admit(billing_grant_t *self, const char *request_id, uint64_t account_id,
                         uint64_t key_id, char *out)
{
    char mac[PROTO_CRYPTO_MAC_HEX + 1];
    s_mac(self, 'a', request_id, account_id, key_id, mac);
    int length = snprintf(out, BILLING_GRANT_MAX + 1, "a1.%s", mac);
    if (strlen(request_id) > BILLING_GRANT_LOSS_PREFIX) {
        //  Dispatch's loss record keeps only the prefix: its own MAC.
        char prefix[BILLING_GRANT_LOSS_PREFIX + 1];
        snprintf(prefix, sizeof prefix, "%.*s", BILLING_GRANT_LOSS_PREFIX, request_id);
        s_mac(self, 'p', prefix, account_id, key_id, mac);
        snprintf(out + length, BILLING_GRANT_MAX + 1 - (size_t)length, ".%s", mac);
    }
}

void billing_grant_lease(billing_grant_t *self, uint64_t lease_id, uint64_t account_id,
                         uint64_t key_id, char *out)
{
    char subject[24], mac[PROTO_CRYPTO_MAC_HEX + 1];
    proto_text_u64(subject, lease_id);
    s_mac(self, 'l', subject, account_id, key_id, mac);
    snprintf(out, BILLING_GRANT_MAX + 1, "l1.%" PRIu64 ".%s", lease_id, mac);
}

bool billing_grant_check(billing_grant_t *self, const char *grant, const char *request_id,
                         bool loss, uint64_t lease_id, uint64_t account_id, uint64_t key_id)
{
    if (!grant || !request_id || strlen(grant) > BILLING_GRANT_MAX)
        return false;
    char expected[BILLING_GRANT_MAX + 1];
    if (strncmp(grant, "a1.", 3) == 0) {
        //  An operator's-loss record carries its request's grant.
        char request[128];
        proto_text_copy(request, sizeof request, request_id);
        char *mark = loss ? strstr(request, BILLING_GRANT_LOSS_MARK) : NULL;
        if (mark)
            *mark = '\0';
        if (mark && strlen(request) == BILLING_GRANT_LOSS_PREFIX) {
            //  Perhaps cut: the prefix's MAC, after the first one.
            char mac[PROTO_CRYPTO_MAC_HEX + 1];
            s_mac(self, 'p', request, account_id, key_id, mac);
            const char *second = strchr(grant + 3, '.');
            if (second && proto_crypto_equal(second + 1, mac))
                return true;
        }
        billing_grant_admit(self, request, account_id, key_id, expected);
    } else if (strncmp(grant, "l1.", 3) == 0) {
        char *end = NULL;
        const char *digits = grant + 3;
        if (*digits < '1' || *digits > '9')
            return false;
        unsigned long long granted = strtoull(digits, &end, 10);
        if (!end || *end != '.' || (lease_id && lease_id != granted))
            return false;
        billing_grant_lease(self, granted, account_id, key_id, expected);
    } else
        return false;
    return proto_crypto_equal(grant, expected);
}

void billing_grant_test(bool verbose)
{
    if (verbose)
        printf(" * billing_grant: ");
    PROTO_CHECK(proto_crypto_init() == 0);
    const char *secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    billing_grant_t *grants = billing_grant_new(secret);
    PROTO_CHECK(billing_grant_durable(grants));
    char admit[BILLING_GRANT_MAX + 1], lease[BILLING_GRANT_MAX + 1];
    billing_grant_admit(grants, "req-1", 7, 70, admit);
    PROTO_CHECK(strncmp(admit, "a1.", 3) == 0 && strlen(admit) == 3 + PROTO_CRYPTO_MAC_HEX);
    PROTO_CHECK(billing_grant_check(grants, admit, "req-1", false, 0, 7, 70));
    //  Its operator's-loss record, and a lease id beside it, pass too.
    PROTO_CHECK(billing_grant_check(grants, admit, "req-1~lost-0000abcd", true, 0, 7, 70));
    PROTO_CHECK(billing_grant_check(grants, admit, "req-1", false, 5, 7, 70));
    //  Another request, account or key: refused.
    PROTO_CHECK(!billing_grant_check(grants, admit, "req-2", false, 0, 7, 70));
    PROTO_CHECK(!billing_grant_check(grants, admit, "req-1", false, 0, 8, 70));
    PROTO_CHECK(!billing_grant_check(grants, admit, "req-1", false, 0, 7, 71));
    PROTO_CHECK(!billing_grant_check(grants, admit, "req-12", false, 0, 7, 70));
    //  Not a loss record: the mark is part of the id.
    PROTO_CHECK(!billing_grant_check(grants, admit, "req-1~lost-0000abcd", false, 0, 7, 70));
    //  A long request id: dispatch's loss record keeps its first 50
    //  characters, and the grant's second MAC vouches for that record alone.
    const char *longid = "client-chosen-request-id-of-forty-characters.0123456789abcdef";
    char lost[128];
    snprintf(lost, sizeof lost, "%.*s~lost-0000abcd", BILLING_GRANT_LOSS_PREFIX, longid);
    char longgrant[BILLING_GRANT_MAX + 1];
    billing_grant_admit(grants, longid, 7, 70, longgrant);
    PROTO_CHECK(strlen(longgrant) == 3 + 2 * PROTO_CRYPTO_MAC_HEX + 1);
    PROTO_CHECK(billing_grant_check(grants, longgrant, longid, false, 0, 7, 70));
    PROTO_CHECK(billing_grant_check(grants, longgrant, lost, true, 0, 7, 70));
    PROTO_CHECK(!billing_grant_check(grants, longgrant, lost, false, 0, 7, 70));
    PROTO_CHECK(!billing_grant_check(grants, longgrant, lost, true, 0, 8, 70));
    //  The prefix's MAC does not vouch for the request itself.
    char cut[BILLING_GRANT_LOSS_PREFIX + 1];
    snprintf(cut, sizeof cut, "%.*s", BILLING_GRANT_LOSS_PREFIX, longid);
    PROTO_CHECK(!billing_grant_check(grants, longgrant, cut, false, 0, 7, 70));
    //  A lease grant covers any request under its lease, account and key.
    billing_grant_lease(grants, 42, 7, 70, lease);
    PROTO_CHECK(strncmp(lease, "l1.42.", 6) == 0);
    PROTO_CHECK(billing_grant_check(grants, lease, "req-3", false, 42, 7, 70));
    PROTO_CHECK(billing_grant_check(grants, lease, "req-4", false, 0, 7, 70));
    PROTO_CHECK(!billing_grant_check(grants, lease, "req-3", false, 43, 7, 70));
    PROTO_CHECK(!billing_grant_check(grants, lease, "req-3", false, 42, 9, 70));
    //  Its lease id changed in the text: the MAC no longer matches.
    char changed[BILLING_GRANT_MAX + 1];
    snprintf(changed, sizeof changed, "l1.43.%s", lease + 6);
    PROTO_CHECK(!billing_grant_check(grants, changed, "req-3", false, 43, 7, 70));
    //  Garbage, nothing, a flipped MAC digit, a truncated one.
    PROTO_CHECK(!billing_grant_check(grants, NULL, "req-1", false, 0, 7, 70));
    PROTO_CHECK(!billing_grant_check(grants, "", "req-1", false, 0, 7, 70));
    PROTO_CHECK(!billing_grant_check(grants, "a1.", "req-1", false, 0, 7, 70));
    PROTO_CHECK(!billing_grant_check(grants, "l1.x.y", "req-1", false, 0, 7, 70));
    PROTO_CHECK(!billing_grant_check(grants, "l1.0.y", "req-1", false, 0, 7, 70));
    snprintf(changed, sizeof changed, "%s", admit);
    changed[5] = changed[5] == '0' ? '1' : '0';
    PROTO_CHECK(!billing_grant_check(grants, changed, "req-1", false, 0, 7, 70));
    changed[5] = '\0';
    PROTO_CHECK(!billing_grant_check(grants, changed, "req-1", false, 0, 7, 70));
    //  The same secret_key (another instance, or this one restarted)
    //  checks the grant; another key does not.
    billing_grant_t *restarted = billing_grant_new(secret);
    PROTO_CHECK(billing_grant_check(restarted, admit, "req-1", false, 0, 7, 70));
    PROTO_CHECK(billing_grant_check(restarted, lease, "req-3", false, 42, 7, 70));
    billing_grant_t *stranger = billing_grant_new("");
    PROTO_CHECK(!billing_grant_durable(stranger));
    PROTO_CHECK(!billing_grant_check(stranger, admit, "req-1", false, 0, 7, 70));
    billing_grant_destroy(&stranger);
    billing_grant_destroy(&restarted);
    billing_grant_destroy(&grants);
    PROTO_CHECK(!grants);
    if (verbose)
        printf("OK\n");
}
