/*  proto_crypto: the few secrets Tollgate handles, all through libsodium.

    Client API keys are a prefix (`tg-` unless settings 'client_keys' say
    otherwise) + 48 hex characters of randomness; only their SHA-256 (hex)
    is stored, which is safe because the key itself has 192 bits of
    entropy. The prefix only marks a key as ours (for people, for the
    ingress choosing among credentials, for redaction): a key is found by
    its hash whatever its prefix, so keys made before a change keep
    working. Provider secrets are sealed with secretbox under
    the cluster's secret_key (64 hex digits from the environment/config).
*/
#ifndef PROTO_CRYPTO_H_INCLUDED
#define PROTO_CRYPTO_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_CRYPTO_KEY_HEX 64               //  secret_key length in hex digits
#define PROTO_CRYPTO_HASH_HEX 64              //  SHA-256 in hex
#define PROTO_CRYPTO_API_KEY_LEN 51           //  "tg-" + 48 hex digits
#define PROTO_CRYPTO_PREFIX_LEN 10            //  shown in lists: "tg-1a2b3c4"
#define PROTO_CRYPTO_KEY_PREFIX_DEFAULT "tg-" //  client key prefix unless set
#define PROTO_CRYPTO_KEY_PREFIX_MAX 16        //  longest client key prefix
#define PROTO_CRYPTO_API_KEY_MAX (PROTO_CRYPTO_KEY_PREFIX_MAX + 48) //  longest client key
#define PROTO_CRYPTO_SHOWN_HEX 7 //  hex digits after the prefix shown in lists

//  Initialises libsodium; call once at start-up. Returns 0 or -1.
int proto_crypto_init(void);

//  Makes a new client API key into out (at least PROTO_CRYPTO_API_KEY_LEN+1).
void proto_crypto_new_api_key(char *out, size_t out_size);

//  Makes a new client API key with `prefix` (a valid one, see below) into
//  out (at least PROTO_CRYPTO_API_KEY_MAX + 1).
void proto_crypto_new_api_key_with(const char *prefix, char *out, size_t out_size);

//  True when text may prefix client keys: 1 to PROTO_CRYPTO_KEY_PREFIX_MAX
//  characters of [A-Za-z0-9_-], not all digits (a key must not look like
//  an id), and not an admin token's prefix (tga_, tgs_, tgt_).
bool proto_crypto_key_prefix_valid(const char *text);

//  The process' client key prefix (default "tg-"), set from settings
//  'client_keys' by proto_service; an invalid one is ignored. Borrowed.
void proto_crypto_set_key_prefix(const char *prefix);
const char *proto_crypto_key_prefix(void);

//  Makes `bytes` random bytes as hex into out (at least 2*bytes+1).
void proto_crypto_random_hex(char *out, size_t bytes);

//  SHA-256 of text as lowercase hex into out (PROTO_CRYPTO_HASH_HEX+1).
void proto_crypto_hash_hex(const char *text, size_t length, char *out);

//  Constant-time equality of two equal-length strings; false if lengths differ.
bool proto_crypto_equal(const char *a, const char *b);

//  Seals plaintext under a hex key. Writes nonce (24 bytes) and sealed bytes
//  (length + 16) into caller buffers. Returns 0, or -1 on a bad key.
int proto_crypto_seal(const char *key_hex, const void *plain, size_t plain_size, uint8_t *nonce,
                      uint8_t *sealed);

//  Opens sealed bytes. Returns plaintext as a new NUL-terminated string, or
//  NULL when the key is wrong or the bytes were tampered with. Caller owns.
char *proto_crypto_open(const char *key_hex, const uint8_t *nonce, const uint8_t *sealed,
                        size_t sealed_size);

//  A key for MACs of one purpose, derived from the cluster's secret_key
//  (hex) and a context string, so that it reveals nothing of secret_key
//  and differs per purpose. Returns 0, or -1 on a bad secret_key.
#define PROTO_CRYPTO_MAC_KEY_BYTES 32
#define PROTO_CRYPTO_MAC_HEX 32 //  a MAC (128 bits) in hex
int proto_crypto_mac_key(const char *key_hex, const char *context,
                         uint8_t key[PROTO_CRYPTO_MAC_KEY_BYTES]);

//  The keyed BLAKE2b MAC (128 bits) of text under key, as lowercase hex into
//  out (PROTO_CRYPTO_MAC_HEX + 1).
void proto_crypto_mac_hex(const uint8_t key[PROTO_CRYPTO_MAC_KEY_BYTES], const char *text,
                          size_t length, char *out);

//  Size constants for callers' buffers.
size_t proto_crypto_nonce_size(void);
size_t proto_crypto_overhead(void);

//  Self test.
void proto_crypto_test(bool verbose);

#endif
