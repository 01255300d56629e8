/*  proto_tls: a certificate and key for an HTTPS listener, reloadable.

    libmicrohttpd (built with GnuTLS) asks for the server's certificate at
    each handshake through a gnutls_certificate_retrieve_function2
    (MHD_OPTION_HTTPS_CERT_CALLBACK); ours hands out the credentials that
    are current at that moment, so a reload (SIGHUP) changes what new
    handshakes see without closing the listener or any open connection.

    GnuTLS gives that callback no argument of ours: it finds the listener's
    proto_tls_t from the local port of the connection (one TLS listener per
    port in a process), registered by proto_tls_serve before MHD starts.

    A reload reads both files and checks that the key matches the first
    certificate before anything changes; a bad file keeps the old
    credentials (logged). Superseded credentials stay allocated until the
    proto_tls_t is destroyed: a session keeps the pointers GnuTLS was given
    (for a renegotiation or gnutls_certificate_get_ours), and reloads are
    rare (a few KB each).

    Thread-safety: the callback may run on MHD's own thread (tollgate-admin)
    while the loop's thread reloads; the current credentials are swapped
    under a mutex.
*/
#ifndef PROTO_TLS_H_INCLUDED
#define PROTO_TLS_H_INCLUDED

#include "proto_config.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct _proto_tls_t proto_tls_t;

//  Loads a PEM certificate chain (leaf first) and its PEM private key
//  (unencrypted). `name` is the config prefix ("ingress", "admin") used in
//  messages: "ingress.tls_key: cannot read /x: No such file or directory".
//  Returns NULL with one line of reason in error. Caller owns return value.
proto_tls_t *proto_tls_new(const char *name, const char *cert_path, const char *key_path,
                           char *error, size_t error_size);

//  From PREFIX.tls_cert and PREFIX.tls_key: *tls_p is NULL when both are
//  empty (plain HTTP), else the loaded credentials. Returns 0, or -1 with
//  a reason in error (one set without the other, a file that will not do).
int proto_tls_from_config(proto_config_t *config, const char *prefix, proto_tls_t **tls_p,
                          char *error, size_t error_size);

//  Stops serving (proto_tls_serve) and frees every generation; nulls the
//  pointer. The listener must be stopped first.
void proto_tls_destroy(proto_tls_t **self_p);

//  Reads the two files again. On success new handshakes get the new
//  credentials; on failure the current ones stay. Logs either way (the
//  decision is made here). Returns 0 or -1.
int proto_tls_reload(proto_tls_t *self);

//  proto_tls_reload as a void(void *) hook (proto_service_on_reload).
void proto_tls_reload_hook(void *self);

//  Hands these credentials to handshakes on connections accepted on the
//  socket `listen_fd` (its local port), and logs what is served. Returns 0, or -1 when the table of
//  listeners is full or the port is taken by another proto_tls_t.
int proto_tls_serve(proto_tls_t *self, int listen_fd);

//  MHD options that make a daemon speak TLS with these credentials
//  (MHD_OPTION_HTTPS_CERT_CALLBACK, TLS 1.2 and 1.3 only), ended by
//  MHD_OPTION_END, for MHD_OPTION_ARRAY. With self NULL, only the end.
//  Borrowed (static).
const struct MHD_OptionItem *proto_tls_mhd_options(proto_tls_t *self);

//  SHA-256 fingerprint of the current leaf certificate, 64 lowercase hex
//  digits, into out (at least 65 bytes).
void proto_tls_fingerprint(proto_tls_t *self, char *out, size_t size);

//  Successful loads so far (1 after new).
unsigned proto_tls_generation(proto_tls_t *self);

//  Self test: load, mismatch, bad files, reload, and handshakes through a
//  libmicrohttpd daemon seeing the new certificate after a reload.
void proto_tls_test(bool verbose);

#endif
