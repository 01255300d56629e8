#include "proto_crypto.h"
#include "proto_check.h"

#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

//  Random bytes for ids are taken from libsodium a block at a time: its
//  generator calls getpid() on every call (to notice a fork), a system call
//  per request id and span id, and a block costs one. The block is the
//  calling thread's own (threads never share it, so it needs no lock), bytes
//  handed out are wiped from it, and a forked child starts with none
//  (s_pool_forget runs in the child), so parent and child never share ids
//  (libsodium's generator then refuses to run in the child: it must exec).
#define S_POOL_SIZE 512
static _Thread_local struct {
    uint8_t bytes[S_POOL_SIZE]; //  random bytes not handed out yet at the end
    size_t left;                //  how many
} s_pool;

static void s_pool_forget(void)
{
    sodium_memzero(&s_pool, sizeof s_pool);
}

static void s_random(uint8_t *out, size_t size)
{
    if (size > S_POOL_SIZE) {
        randombytes_buf(out, size);
        return;
    }
    if (s_pool.left < size) {
        randombytes_buf(s_pool.bytes, S_POOL_SIZE);
        s_pool.left = S_POOL_SIZE;
    }
    uint8_t *from = s_pool.bytes + S_POOL_SIZE - s_pool.left;
    memcpy(out, from, size);
    sodium_memzero(from, size);
    s_pool.left -= size;
}

int proto_crypto_init(void)
{
    //  libsodium's own ChaCha20 generator, seeded once from the kernel, is
    //  as good for our ids and keys as asking the kernel each time, without
    //  a getrandom() system call for every request id and span id.
    static bool chosen;
    if (!chosen) {
        randombytes_set_implementation(&randombytes_internal_implementation);
        pthread_atfork(NULL, NULL, s_pool_forget);
        chosen = true;
    }
    return sodium_init() < 0 ? -1 : 0;
}

void proto_crypto_random_hex(char *out, size_t bytes)
{
    uint8_t buffer[64];
    assert(bytes <= sizeof buffer);
    s_random(buffer, bytes);
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

static int s_compare_ids(const void *a, const void *b)
{
    return memcmp(a, b, 33);
}

//  Ids from the pooled generator: all different across many pool refills,
//  and a forked child never hands out the parent's next bytes.
static void s_test_random_pool(void)
{
    enum { COUNT = 2000 };
    char(*ids)[33] = calloc(COUNT, sizeof *ids);
    PROTO_CHECK(ids);
    for (int i = 0; i < COUNT; i++) {
        proto_crypto_random_hex(ids[i], 16);
        PROTO_CHECK(strlen(ids[i]) == 32 && strspn(ids[i], "0123456789abcdef") == 32);
    }
    qsort(ids, COUNT, sizeof *ids, s_compare_ids);
    for (int i = 1; i < COUNT; i++)
        PROTO_CHECK(strcmp(ids[i - 1], ids[i]) != 0);
    free(ids);
    //  Bytes left in the pool before the fork: the child must not reuse them.
    char parent[33], child[33] = "";
    proto_crypto_random_hex(parent, 16);
    int pipe_fds[2];
    PROTO_CHECK(pipe(pipe_fds) == 0);
    pid_t pid = fork();
    PROTO_CHECK(pid >= 0);
    if (pid == 0) {
        char mine[33];
        proto_crypto_random_hex(mine, 16);
        _exit(write(pipe_fds[1], mine, 33) == 33 ? 0 : 1);
    }
    close(pipe_fds[1]);
    proto_crypto_random_hex(parent, 16);
    ssize_t got = read(pipe_fds[0], child, 33);
    int status = 0;
    PROTO_CHECK(waitpid(pid, &status, 0) == pid);
    //  libsodium's generator refuses to run in a forked child (it aborts:
    //  a child must exec first, as ours do); what the child must never do
    //  is hand out the parent's next id from the pool.
    PROTO_CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && got == 0) ||
                (got == 33 && strcmp(parent, child) != 0));
    close(pipe_fds[0]);
}

void proto_crypto_test(bool verbose)
{
    if (verbose)
        printf(" * proto_crypto: ");
    PROTO_CHECK(proto_crypto_init() == 0);
    s_test_random_pool();
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
