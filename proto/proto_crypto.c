#include "proto_crypto.h"
#include "proto_check.h"

#include <assert.h>
#include <stdbool.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int proto_crypto_init(void)
{
    //  libsodium's own ChaCha20 generator, seeded once from the kernel, is
    //  as good for our ids and keys as asking the kernel each time, without
    //  a getrandom() system call for every request id and span id.
    static bool chosen;
    if (!chosen) {
        randombytes_set_implementation(&randombytes_internal_implementation);
        chosen = true;
    }
    return sodium_init() < 0 ? -1 : 0;
}

void proto_crypto_random_hex(char *out, size_t bytes)
{
    uint8_t buffer[64];
    assert(bytes <= sizeof buffer);
    randombytes_buf(buffer, bytes);
    sodium_bin2hex(out, bytes * 2 + 1, buffer, bytes);
    sodium_memzero(buffer, sizeof buffer);
}

void proto_crypto_new_api_key(char *out, size_t out_size)
{
    assert(out_size > PROTO_CRYPTO_API_KEY_LEN);
    memcpy(out, "tg-", 3);
    proto_crypto_random_hex(out + 3, 24);
}

void proto_crypto_new_api_key_with(const char *prefix, char *out, size_t out_size)
{
    assert(proto_crypto_key_prefix_valid(prefix));
    size_t length = strlen(prefix);
    assert(out_size > length + 48);
    memcpy(out, prefix, length);
    proto_crypto_random_hex(out + length, 24);
}

bool proto_crypto_key_prefix_valid(const char *text)
{
    size_t length = text ? strlen(text) : 0;
    if (length == 0 || length > PROTO_CRYPTO_KEY_PREFIX_MAX)
        return false;
    if (strspn(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != length)
        return false;
    if (strspn(text, "0123456789") == length)
        return false;
    static const char *const admin[] = {"tga_", "tgs_", "tgt_"};
    for (size_t i = 0; i < sizeof admin / sizeof admin[0]; i++)
        if (strncmp(text, admin[i], strlen(admin[i])) == 0)
            return false;
    return true;
}

//  Process-wide, like proto_log's level: written by the loop's thread when
//  settings change, read by the same thread.
static char s_key_prefix[PROTO_CRYPTO_KEY_PREFIX_MAX + 1] = PROTO_CRYPTO_KEY_PREFIX_DEFAULT;

void proto_crypto_set_key_prefix(const char *prefix)
{
    if (proto_crypto_key_prefix_valid(prefix))
        snprintf(s_key_prefix, sizeof s_key_prefix, "%s", prefix);
}

const char *proto_crypto_key_prefix(void)
{
    return s_key_prefix;
}

void proto_crypto_hash_hex(const char *text, size_t length, char *out)
{
    uint8_t digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const uint8_t *)text, length);
    sodium_bin2hex(out, PROTO_CRYPTO_HASH_HEX + 1, digest, sizeof digest);
}

bool proto_crypto_equal(const char *a, const char *b)
{
    size_t length = strlen(a);
    if (length != strlen(b))
        return false;
    return sodium_memcmp(a, b, length) == 0;
}

static int s_key(const char *key_hex, uint8_t *key)
{
    size_t length = 0;
    if (!key_hex || strlen(key_hex) != PROTO_CRYPTO_KEY_HEX)
        return -1;
    if (sodium_hex2bin(key, crypto_secretbox_KEYBYTES, key_hex, PROTO_CRYPTO_KEY_HEX, NULL, &length,
                       NULL) != 0 ||
        length != crypto_secretbox_KEYBYTES)
        return -1;
    return 0;
}

int proto_crypto_mac_key(const char *key_hex, const char *context,
                         uint8_t key[PROTO_CRYPTO_MAC_KEY_BYTES])
{
    uint8_t secret[crypto_secretbox_KEYBYTES];
    if (s_key(key_hex, secret) != 0)
        return -1;
    crypto_generichash(key, PROTO_CRYPTO_MAC_KEY_BYTES, (const uint8_t *)context, strlen(context),
                       secret, sizeof secret);
    sodium_memzero(secret, sizeof secret);
    return 0;
}

void proto_crypto_mac_hex(const uint8_t key[PROTO_CRYPTO_MAC_KEY_BYTES], const char *text,
                          size_t length, char *out)
{
    uint8_t mac[PROTO_CRYPTO_MAC_HEX / 2];
    crypto_generichash(mac, sizeof mac, (const uint8_t *)text, length, key,
                       PROTO_CRYPTO_MAC_KEY_BYTES);
    sodium_bin2hex(out, PROTO_CRYPTO_MAC_HEX + 1, mac, sizeof mac);
}

size_t proto_crypto_nonce_size(void)
{
    return crypto_secretbox_NONCEBYTES;
}

size_t proto_crypto_overhead(void)
{
    return crypto_secretbox_MACBYTES;
}

int proto_crypto_seal(const char *key_hex, const void *plain, size_t plain_size, uint8_t *nonce,
                      uint8_t *sealed)
{
    uint8_t key[crypto_secretbox_KEYBYTES];
    if (s_key(key_hex, key) != 0)
        return -1;
    randombytes_buf(nonce, crypto_secretbox_NONCEBYTES);
    crypto_secretbox_easy(sealed, plain, plain_size, nonce, key);
    sodium_memzero(key, sizeof key);
    return 0;
}

char *proto_crypto_open(const char *key_hex, const uint8_t *nonce, const uint8_t *sealed,
                        size_t sealed_size)
{
    uint8_t key[crypto_secretbox_KEYBYTES];
    if (sealed_size < crypto_secretbox_MACBYTES || s_key(key_hex, key) != 0)
        return NULL;
    size_t plain_size = sealed_size - crypto_secretbox_MACBYTES;
    char *plain = malloc(plain_size + 1);
    assert(plain);
    int rc = crypto_secretbox_open_easy((uint8_t *)plain, sealed, sealed_size, nonce, key);
    sodium_memzero(key, sizeof key);
    if (rc != 0) {
        free(plain);
        return NULL;
    }
    plain[plain_size] = '\0';
    return plain;
}

void proto_crypto_test(bool verbose)
{
    if (verbose)
        printf(" * proto_crypto: ");
    PROTO_CHECK(proto_crypto_init() == 0);
    char key[PROTO_CRYPTO_API_KEY_LEN + 1];
    proto_crypto_new_api_key(key, sizeof key);
    PROTO_CHECK(strlen(key) == PROTO_CRYPTO_API_KEY_LEN);
    {
        char custom[PROTO_CRYPTO_API_KEY_MAX + 1];
        proto_crypto_new_api_key_with("sk-acme-", custom, sizeof custom);
        PROTO_CHECK(strlen(custom) == 8 + 48 && strncmp(custom, "sk-acme-", 8) == 0);
        PROTO_CHECK(proto_crypto_key_prefix_valid("tg-") &&
                    proto_crypto_key_prefix_valid("sk_A-1"));
        PROTO_CHECK(!proto_crypto_key_prefix_valid("") && !proto_crypto_key_prefix_valid(NULL));
        PROTO_CHECK(!proto_crypto_key_prefix_valid("12345") &&
                    !proto_crypto_key_prefix_valid("a b"));
        PROTO_CHECK(!proto_crypto_key_prefix_valid("tgt_x") &&
                    !proto_crypto_key_prefix_valid("a/b"));
        PROTO_CHECK(!proto_crypto_key_prefix_valid("abcdefghijklmnopq"));
        PROTO_CHECK(strcmp(proto_crypto_key_prefix(), "tg-") == 0);
        proto_crypto_set_key_prefix("bad prefix");
        PROTO_CHECK(strcmp(proto_crypto_key_prefix(), "tg-") == 0);
        proto_crypto_set_key_prefix("sk-acme-");
        PROTO_CHECK(strcmp(proto_crypto_key_prefix(), "sk-acme-") == 0);
        proto_crypto_set_key_prefix(PROTO_CRYPTO_KEY_PREFIX_DEFAULT);
    }
    PROTO_CHECK(strncmp(key, "tg-", 3) == 0);
    char hash[PROTO_CRYPTO_HASH_HEX + 1];
    proto_crypto_hash_hex("abc", 3, hash);
    PROTO_CHECK(strcmp(hash, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") ==
                0);
    PROTO_CHECK(proto_crypto_equal("abc", "abc"));
    PROTO_CHECK(!proto_crypto_equal("abc", "abd"));
    PROTO_CHECK(!proto_crypto_equal("abc", "abcd"));

    char secret_key[PROTO_CRYPTO_KEY_HEX + 1];
    proto_crypto_random_hex(secret_key, 32);
    const char *plain = "sk-live-provider-secret";
    uint8_t nonce[64], sealed[128];
    PROTO_CHECK(proto_crypto_seal(secret_key, plain, strlen(plain), nonce, sealed) == 0);
    size_t sealed_size = strlen(plain) + proto_crypto_overhead();
    char *opened = proto_crypto_open(secret_key, nonce, sealed, sealed_size);
    PROTO_CHECK(opened && strcmp(opened, plain) == 0);
    free(opened);
    sealed[0] ^= 1;
    PROTO_CHECK(proto_crypto_open(secret_key, nonce, sealed, sealed_size) == NULL);
    PROTO_CHECK(proto_crypto_seal("short", plain, 3, nonce, sealed) == -1);

    //  MACs: one key per context, the same text and key give the same MAC,
    //  any change another.
    uint8_t mac_key[PROTO_CRYPTO_MAC_KEY_BYTES], other_key[PROTO_CRYPTO_MAC_KEY_BYTES];
    PROTO_CHECK(proto_crypto_mac_key(secret_key, "a", mac_key) == 0);
    PROTO_CHECK(proto_crypto_mac_key(secret_key, "b", other_key) == 0);
    PROTO_CHECK(memcmp(mac_key, other_key, sizeof mac_key) != 0);
    PROTO_CHECK(proto_crypto_mac_key("short", "a", other_key) == -1);
    char mac[PROTO_CRYPTO_MAC_HEX + 1], again[PROTO_CRYPTO_MAC_HEX + 1];
    proto_crypto_mac_hex(mac_key, "text", 4, mac);
    PROTO_CHECK(strlen(mac) == PROTO_CRYPTO_MAC_HEX);
    proto_crypto_mac_hex(mac_key, "text", 4, again);
    PROTO_CHECK(strcmp(mac, again) == 0);
    proto_crypto_mac_hex(mac_key, "texT", 4, again);
    PROTO_CHECK(strcmp(mac, again) != 0);
    proto_crypto_mac_key(secret_key, "b", mac_key);
    proto_crypto_mac_hex(mac_key, "text", 4, again);
    PROTO_CHECK(strcmp(mac, again) != 0);
    if (verbose)
        printf("OK\n");
}
