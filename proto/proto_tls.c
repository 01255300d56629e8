#include "proto_tls.h"
#include "proto_check.h"
#include "proto_log.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define S_CHAIN_MAX 16           //  certificates in one chain file
#define S_FILE_MAX (1024 * 1024) //  a certificate or key file
#define S_LISTENERS_MAX 8        //  TLS listeners in one process
#define S_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

//  One successful load of the two files.
typedef struct s_creds_t {
    gnutls_pcert_st pcerts[S_CHAIN_MAX]; //  the chain, leaf first
    unsigned count;                      //  certificates in pcerts
    gnutls_privkey_t key;                //  the leaf's private key
    char fingerprint[65];                //  SHA-256 of the leaf, hex
    time_t expires;                      //  the leaf's notAfter
    struct s_creds_t *older;             //  the generation this one replaced
} s_creds_t;

struct _proto_tls_t {
    char name[32];                    //  config prefix, for messages
    char *cert_path;                  //  certificate chain file
    char *key_path;                   //  private key file
    pthread_mutex_t mutex;            //  guards current (callback thread vs reload)
    s_creds_t *current;               //  handed to new handshakes; older ones chained
    unsigned generation;              //  successful loads
    struct MHD_OptionItem options[3]; //  proto_tls_mhd_options
};

//  Listeners by local port: the retrieve callback's only way back to us.
typedef struct {
    int port;         //  local port of the listening socket, 0 = free
    proto_tls_t *tls; //  its credentials
} s_listener_t;

static pthread_mutex_t s_listeners_mutex = PTHREAD_MUTEX_INITIALIZER;
static s_listener_t s_listeners[S_LISTENERS_MAX];

//  Reads a whole file into a gnutls datum (gnutls_free'd by the caller).
static int s_read(const char *path, gnutls_datum_t *out, char *error, size_t error_size)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        snprintf(error, error_size, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat info;
    if (fstat(fileno(file), &info) != 0 || !S_ISREG(info.st_mode) || info.st_size <= 0 ||
        info.st_size > S_FILE_MAX) {
        snprintf(error, error_size, "%s is not a regular file of 1 byte to 1 MiB", path);
        fclose(file);
        return -1;
    }
    out->size = (unsigned)info.st_size;
    out->data = gnutls_malloc(out->size + 1);
    assert(out->data);
    size_t got = fread(out->data, 1, out->size, file);
    fclose(file);
    if (got != out->size) {
        snprintf(error, error_size, "cannot read %s: short read", path);
        gnutls_free(out->data);
        out->data = NULL;
        return -1;
    }
    out->data[out->size] = '\0';
    return 0;
}

static void s_creds_free(s_creds_t *creds)
{
    while (creds) {
        s_creds_t *older = creds->older;
        for (unsigned i = 0; i < creds->count; i++)
            gnutls_pcert_deinit(&creds->pcerts[i]);
        if (creds->key)
            gnutls_privkey_deinit(creds->key);
        free(creds);
        creds = older;
    }
}

//  The key id of the public half of `key`, to match against the leaf's.
static int s_key_id(gnutls_privkey_t key, unsigned char *id, size_t *size)
{
    gnutls_pubkey_t pub;
    if (gnutls_pubkey_init(&pub) < 0)
        return -1;
    int rc = gnutls_pubkey_import_privkey(pub, key, 0, 0);
    if (rc >= 0)
        rc = gnutls_pubkey_get_key_id(pub, GNUTLS_KEYID_USE_SHA256, id, size);
    gnutls_pubkey_deinit(pub);
    return rc < 0 ? -1 : 0;
}

//  Loads and checks both files. Returns NULL with a reason.
static s_creds_t *s_load(proto_tls_t *self, char *error, size_t error_size)
{
    char reason[512];
    gnutls_datum_t cert_data = {NULL, 0}, key_data = {NULL, 0};
    if (s_read(self->cert_path, &cert_data, reason, sizeof reason) != 0) {
        snprintf(error, error_size, "%s.tls_cert: %s", self->name, reason);
        return NULL;
    }
    if (s_read(self->key_path, &key_data, reason, sizeof reason) != 0) {
        snprintf(error, error_size, "%s.tls_key: %s", self->name, reason);
        gnutls_free(cert_data.data);
        return NULL;
    }
    s_creds_t *creds = calloc(1, sizeof *creds);
    assert(creds);
    creds->count = S_CHAIN_MAX;
    int rc = gnutls_pcert_list_import_x509_raw(creds->pcerts, &creds->count, &cert_data,
                                               GNUTLS_X509_FMT_PEM,
                                               GNUTLS_X509_CRT_LIST_FAIL_IF_UNSORTED);
    if (rc < 0 || creds->count == 0) {
        snprintf(error, error_size, "%s.tls_cert: %s holds no usable PEM certificate chain (%s)",
                 self->name, self->cert_path, rc < 0 ? gnutls_strerror(rc) : "no certificate");
        creds->count = 0;
        goto failed;
    }
    if (gnutls_privkey_init(&creds->key) < 0) {
        snprintf(error, error_size, "%s.tls_key: out of memory", self->name);
        goto failed;
    }
    rc = gnutls_privkey_import_x509_raw(creds->key, &key_data, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (rc < 0) {
        snprintf(error, error_size,
                 "%s.tls_key: %s holds no usable unencrypted PEM private key (%s)", self->name,
                 self->key_path, gnutls_strerror(rc));
        goto failed;
    }
    unsigned char key_id[64], cert_id[64];
    size_t key_id_size = sizeof key_id, cert_id_size = sizeof cert_id;
    if (s_key_id(creds->key, key_id, &key_id_size) != 0 ||
        gnutls_pubkey_get_key_id(creds->pcerts[0].pubkey, GNUTLS_KEYID_USE_SHA256, cert_id,
                                 &cert_id_size) < 0 ||
        key_id_size != cert_id_size || memcmp(key_id, cert_id, key_id_size) != 0) {
        snprintf(error, error_size, "%s.tls_key: %s is not the key of the certificate in %s",
                 self->name, self->key_path, self->cert_path);
        goto failed;
    }
    unsigned char digest[32];
    size_t digest_size = sizeof digest;
    gnutls_x509_crt_t leaf;
    if (gnutls_fingerprint(GNUTLS_DIG_SHA256, &creds->pcerts[0].cert, digest, &digest_size) < 0 ||
        gnutls_x509_crt_init(&leaf) < 0) {
        snprintf(error, error_size, "%s.tls_cert: cannot read the certificate", self->name);
        goto failed;
    }
    for (size_t i = 0; i < digest_size; i++)
        snprintf(creds->fingerprint + 2 * i, 3, "%02x", digest[i]);
    creds->expires = -1;
    if (gnutls_x509_crt_import(leaf, &creds->pcerts[0].cert, GNUTLS_X509_FMT_DER) >= 0)
        creds->expires = gnutls_x509_crt_get_expiration_time(leaf);
    gnutls_x509_crt_deinit(leaf);
    gnutls_free(cert_data.data);
    gnutls_free(key_data.data);
    return creds;

failed:
    gnutls_free(cert_data.data);
    gnutls_free(key_data.data);
    s_creds_free(creds);
    return NULL;
}

//  "sha256 ab12..., expires 2027-01-01" for logs; warns of an expired leaf.
static void s_describe(proto_tls_t *self, s_creds_t *creds, const char *what)
{
    char expires[32] = "unknown";
    struct tm tm;
    if (creds->expires != (time_t)-1 && gmtime_r(&creds->expires, &tm))
        strftime(expires, sizeof expires, "%Y-%m-%d %H:%M UTC", &tm);
    log_info(NULL, "%s TLS: %s %s (%u in chain, sha256 %s, expires %s)", self->name, what,
             self->cert_path, creds->count, creds->fingerprint, expires);
    if (creds->expires != (time_t)-1 && creds->expires < time(NULL))
        log_warn(NULL, "%s TLS: the certificate in %s has expired; clients will refuse it",
                 self->name, self->cert_path);
}

proto_tls_t *proto_tls_new(const char *name, const char *cert_path, const char *key_path,
                           char *error, size_t error_size)
{
    if (!cert_path || !*cert_path || !key_path || !*key_path) {
        snprintf(error, error_size, "%s.tls_cert and %s.tls_key go together: set both or neither",
                 name, name);
        return NULL;
    }
    proto_tls_t *self = calloc(1, sizeof *self);
    assert(self);
    snprintf(self->name, sizeof self->name, "%s", name);
    self->cert_path = strdup(cert_path);
    self->key_path = strdup(key_path);
    assert(self->cert_path && self->key_path);
    pthread_mutex_init(&self->mutex, NULL);
    self->current = s_load(self, error, error_size);
    if (!self->current) {
        proto_tls_destroy(&self);
        return NULL;
    }
    self->generation = 1;
    return self;
}

int proto_tls_from_config(proto_config_t *config, const char *prefix, proto_tls_t **tls_p,
                          char *error, size_t error_size)
{
    char cert_key[64], key_key[64];
    snprintf(cert_key, sizeof cert_key, "%s.tls_cert", prefix);
    snprintf(key_key, sizeof key_key, "%s.tls_key", prefix);
    const char *cert = proto_config_str(config, cert_key);
    const char *key = proto_config_str(config, key_key);
    *tls_p = NULL;
    if ((!cert || !*cert) && (!key || !*key))
        return 0;
    *tls_p = proto_tls_new(prefix, cert, key, error, error_size);
    return *tls_p ? 0 : -1;
}

void proto_tls_destroy(proto_tls_t **self_p)
{
    assert(self_p);
    proto_tls_t *self = *self_p;
    if (!self)
        return;
    pthread_mutex_lock(&s_listeners_mutex);
    for (int i = 0; i < S_LISTENERS_MAX; i++)
        if (s_listeners[i].tls == self)
            s_listeners[i] = (s_listener_t){0, NULL};
    pthread_mutex_unlock(&s_listeners_mutex);
    s_creds_free(self->current);
    pthread_mutex_destroy(&self->mutex);
    free(self->cert_path);
    free(self->key_path);
    free(self);
    *self_p = NULL;
}

int proto_tls_reload(proto_tls_t *self)
{
    char error[1024];
    s_creds_t *creds = s_load(self, error, sizeof error);
    pthread_mutex_lock(&self->mutex);
    s_creds_t *current = self->current;
    if (creds) {
        creds->older = current;
        self->current = creds;
        self->generation++;
    }
    pthread_mutex_unlock(&self->mutex);
    if (!creds) {
        log_error(NULL, "%s TLS: reload failed, still serving sha256 %s: %s", self->name,
                  current->fingerprint, error);
        return -1;
    }
    if (strcmp(creds->fingerprint, current->fingerprint) == 0)
        s_describe(self, creds, "reloaded (same certificate)");
    else
        s_describe(self, creds, "reloaded, now serving");
    return 0;
}

void proto_tls_reload_hook(void *self)
{
    proto_tls_reload(self);
}

static int s_local_port(int fd)
{
    struct sockaddr_storage bound;
    socklen_t size = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &size) != 0)
        return 0;
    if (bound.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    if (bound.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&bound)->sin_port);
    return 0;
}

int proto_tls_serve(proto_tls_t *self, int listen_fd)
{
    int port = s_local_port(listen_fd);
    if (port <= 0)
        return -1;
    int rc = -1;
    pthread_mutex_lock(&s_listeners_mutex);
    int free_slot = -1;
    for (int i = 0; i < S_LISTENERS_MAX; i++) {
        if (s_listeners[i].port == port) {
            free_slot = s_listeners[i].tls == self ? i : -2;
            break;
        }
        if (free_slot == -1 && !s_listeners[i].tls)
            free_slot = i;
    }
    if (free_slot >= 0) {
        s_listeners[free_slot] = (s_listener_t){port, self};
        rc = 0;
    }
    pthread_mutex_unlock(&s_listeners_mutex);
    if (rc == 0)
        s_describe(self, self->current, "serving");
    return rc;
}

//  GnuTLS asks for our certificate during a handshake. MHD set the
//  session's pointer to its connection; the connection's socket gives the
//  local port, the port our credentials.
static int s_retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
                      const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                      gnutls_pcert_st **pcert, unsigned int *pcert_length,
                      gnutls_privkey_t *privkey)
{
    struct MHD_Connection *connection = gnutls_session_get_ptr(session);
    const union MHD_ConnectionInfo *info =
        connection ? MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD) : NULL;
    int port = info ? s_local_port(info->connect_fd) : 0;
    proto_tls_t *self = NULL;
    pthread_mutex_lock(&s_listeners_mutex);
    for (int i = 0; port > 0 && i < S_LISTENERS_MAX; i++)
        if (s_listeners[i].port == port)
            self = s_listeners[i].tls;
    if (!self) {
        pthread_mutex_unlock(&s_listeners_mutex);
        return -1;
    }
    //  Taken under both locks: destroy (which clears the listener first)
    //  cannot free self while we read it.
    pthread_mutex_lock(&self->mutex);
    s_creds_t *creds = self->current;
    *pcert = creds->pcerts;
    *pcert_length = creds->count;
    *privkey = creds->key;
    pthread_mutex_unlock(&self->mutex);
    pthread_mutex_unlock(&s_listeners_mutex);
    return 0;
}

const struct MHD_OptionItem *proto_tls_mhd_options(proto_tls_t *self)
{
    static const struct MHD_OptionItem none[] = {{MHD_OPTION_END, 0, NULL}};
    if (!self)
        return none;
    //  A function pointer travels as MHD's void * (MHD casts it back).
    union {
        gnutls_certificate_retrieve_function2 *fn;
        void *ptr;
    } callback = {.fn = s_retrieve};
    self->options[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0, callback.ptr};
    self->options[1] =
        (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)S_PRIORITIES};
    self->options[2] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    return self->options;
}

void proto_tls_fingerprint(proto_tls_t *self, char *out, size_t size)
{
    pthread_mutex_lock(&self->mutex);
    snprintf(out, size, "%s", self->current->fingerprint);
    pthread_mutex_unlock(&self->mutex);
}

unsigned proto_tls_generation(proto_tls_t *self)
{
    pthread_mutex_lock(&self->mutex);
    unsigned generation = self->generation;
    pthread_mutex_unlock(&self->mutex);
    return generation;
}

//  --------------------------------------------------------------------------
//  Self test

//  Writes a self-signed ECDSA certificate for localhost and its key.
static void s_test_make(const char *cert_path, const char *key_path, const char *common_name)
{
    gnutls_x509_privkey_t key;
    PROTO_CHECK(gnutls_x509_privkey_init(&key) == 0);
    PROTO_CHECK(gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                             GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1),
                                             0) == 0);
    gnutls_x509_crt_t crt;
    PROTO_CHECK(gnutls_x509_crt_init(&crt) == 0);
    PROTO_CHECK(gnutls_x509_crt_set_version(crt, 3) == 0);
    unsigned char serial[8];
    gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof serial);
    serial[0] &= 0x7f;
    PROTO_CHECK(gnutls_x509_crt_set_serial(crt, serial, sizeof serial) == 0);
    PROTO_CHECK(gnutls_x509_crt_set_activation_time(crt, time(NULL) - 60) == 0);
    PROTO_CHECK(gnutls_x509_crt_set_expiration_time(crt, time(NULL) + 3600) == 0);
    PROTO_CHECK(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, common_name,
                                              (unsigned)strlen(common_name)) == 0);
    PROTO_CHECK(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "localhost", 9,
                                                     GNUTLS_FSAN_SET) == 0);
    PROTO_CHECK(gnutls_x509_crt_set_key(crt, key) == 0);
    PROTO_CHECK(gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0) == 0);
    gnutls_datum_t pem;
    FILE *file = fopen(cert_path, "w");
    PROTO_CHECK(file && gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &pem) == 0);
    PROTO_CHECK(fwrite(pem.data, 1, pem.size, file) == pem.size);
    fclose(file);
    gnutls_free(pem.data);
    file = fopen(key_path, "w");
    PROTO_CHECK(file && gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &pem) == 0);
    PROTO_CHECK(fwrite(pem.data, 1, pem.size, file) == pem.size);
    fclose(file);
    gnutls_free(pem.data);
    gnutls_x509_crt_deinit(crt);
    gnutls_x509_privkey_deinit(key);
}

static void s_test_copy(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    PROTO_CHECK(in && out);
    char buffer[4096];
    size_t got;
    while ((got = fread(buffer, 1, sizeof buffer, in)) > 0)
        PROTO_CHECK(fwrite(buffer, 1, got, out) == got);
    fclose(in);
    fclose(out);
}

static void s_test_write(const char *path, const char *text)
{
    FILE *file = fopen(path, "w");
    PROTO_CHECK(file);
    fputs(text, file);
    fclose(file);
}

static enum MHD_Result s_test_access(void *arg, struct MHD_Connection *connection, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **request_p)
{
    static const char body[] = "hello";
    struct MHD_Response *response =
        MHD_create_response_from_buffer(5, (void *)body, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result rc = MHD_queue_response(connection, 200, response);
    MHD_destroy_response(response);
    return rc;
}

static int s_test_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    PROTO_CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&to, sizeof to) == 0);
    return fd;
}

//  One GET over TLS; returns the served leaf's fingerprint in out, and
//  checks the answer. Returns 0, or -1 when the handshake failed.
static int s_test_get(int port, char *out, size_t size)
{
    int fd = s_test_connect(port);
    gnutls_certificate_credentials_t cred;
    gnutls_session_t session;
    PROTO_CHECK(gnutls_certificate_allocate_credentials(&cred) == 0);
    PROTO_CHECK(gnutls_init(&session, GNUTLS_CLIENT) == 0);
    PROTO_CHECK(gnutls_set_default_priority(session) == 0);
    PROTO_CHECK(gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, cred) == 0);
    gnutls_transport_set_int(session, fd);
    gnutls_handshake_set_timeout(session, 5000);
    int rc;
    do
        rc = gnutls_handshake(session);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    if (rc == 0) {
        unsigned count = 0;
        const gnutls_datum_t *peers = gnutls_certificate_get_peers(session, &count);
        PROTO_CHECK(peers && count >= 1);
        unsigned char digest[32];
        size_t digest_size = sizeof digest;
        PROTO_CHECK(gnutls_fingerprint(GNUTLS_DIG_SHA256, &peers[0], digest, &digest_size) == 0);
        for (size_t i = 0; i < digest_size && 2 * i + 2 < size; i++)
            snprintf(out + 2 * i, 3, "%02x", digest[i]);
        const char request[] = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        PROTO_CHECK(gnutls_record_send(session, request, sizeof request - 1) ==
                    (ssize_t)sizeof request - 1);
        char reply[1024];
        size_t have = 0;
        ssize_t got;
        while ((got = gnutls_record_recv(session, reply + have, sizeof reply - 1 - have)) > 0)
            have += (size_t)got;
        reply[have] = '\0';
        PROTO_CHECK(strncmp(reply, "HTTP/1.1 200", 12) == 0 && strstr(reply, "\r\n\r\nhello"));
        gnutls_bye(session, GNUTLS_SHUT_WR);
    }
    gnutls_deinit(session);
    gnutls_certificate_free_credentials(cred);
    close(fd);
    return rc == 0 ? 0 : -1;
}

void proto_tls_test(bool verbose)
{
    if (verbose)
        printf(" * proto_tls: ");
    char dir[] = "/tmp/tollgate-tls-XXXXXX";
    PROTO_CHECK(mkdtemp(dir));
    char cert[256], key[256], cert2[256], key2[256], garbage[256];
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    snprintf(cert2, sizeof cert2, "%s/cert2.pem", dir);
    snprintf(key2, sizeof key2, "%s/key2.pem", dir);
    snprintf(garbage, sizeof garbage, "%s/garbage.pem", dir);
    s_test_make(cert, key, "first");
    s_test_make(cert2, key2, "second");
    s_test_write(garbage, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");

    //  Every way the files can be wrong is a clear error naming the key.
    char error[1024];
    PROTO_CHECK(!proto_tls_new("ingress", cert, "", error, sizeof error));
    PROTO_CHECK(strstr(error, "ingress.tls_cert and ingress.tls_key go together"));
    PROTO_CHECK(!proto_tls_new("ingress", "/nonexistent/c.pem", key, error, sizeof error));
    PROTO_CHECK(strstr(error, "ingress.tls_cert: cannot read /nonexistent/c.pem: No such file"));
    PROTO_CHECK(!proto_tls_new("admin", cert, "/nonexistent/k.pem", error, sizeof error));
    PROTO_CHECK(strstr(error, "admin.tls_key: cannot read /nonexistent/k.pem"));
    PROTO_CHECK(!proto_tls_new("ingress", garbage, key, error, sizeof error));
    PROTO_CHECK(strstr(error, "ingress.tls_cert:") && strstr(error, "no usable PEM certificate"));
    PROTO_CHECK(!proto_tls_new("ingress", cert, cert, error, sizeof error));
    PROTO_CHECK(strstr(error, "ingress.tls_key:") && strstr(error, "no usable unencrypted PEM"));
    PROTO_CHECK(!proto_tls_new("ingress", cert, key2, error, sizeof error));
    PROTO_CHECK(strstr(error, "is not the key of the certificate"));
    PROTO_CHECK(!proto_tls_new("ingress", dir, key, error, sizeof error));
    PROTO_CHECK(strstr(error, "not a regular file"));

    //  The files the listener serves: first, then second after a reload.
    char live_cert[256], live_key[256];
    snprintf(live_cert, sizeof live_cert, "%s/live.crt", dir);
    snprintf(live_key, sizeof live_key, "%s/live.key", dir);
    s_test_copy(cert, live_cert);
    s_test_copy(key, live_key);
    proto_tls_t *tls = proto_tls_new("test", live_cert, live_key, error, sizeof error);
    PROTO_CHECK(tls);
    PROTO_CHECK(proto_tls_generation(tls) == 1);
    char first[65], second[65], seen[65];
    proto_tls_fingerprint(tls, first, sizeof first);
    PROTO_CHECK(strlen(first) == 64);

    int listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in any = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &any.sin_addr);
    PROTO_CHECK(bind(listen_fd, (struct sockaddr *)&any, sizeof any) == 0);
    PROTO_CHECK(listen(listen_fd, 16) == 0);
    int port = s_local_port(listen_fd);
    PROTO_CHECK(proto_tls_serve(tls, listen_fd) == 0);
    PROTO_CHECK(proto_tls_serve(tls, listen_fd) == 0);
    struct MHD_Daemon *mhd =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TLS, 0, NULL, NULL,
                         s_test_access, NULL, MHD_OPTION_LISTEN_SOCKET, listen_fd, MHD_OPTION_ARRAY,
                         proto_tls_mhd_options(tls), MHD_OPTION_END);
    PROTO_CHECK(mhd);
    PROTO_CHECK(s_test_get(port, seen, sizeof seen) == 0);
    PROTO_CHECK(strcmp(seen, first) == 0);

    //  Plain HTTP on the TLS port gets no HTTP answer.
    int plain = s_test_connect(port);
    const char request[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    PROTO_CHECK(write(plain, request, sizeof request - 1) == (ssize_t)sizeof request - 1);
    char reply[256];
    ssize_t got = read(plain, reply, sizeof reply - 1);
    PROTO_CHECK(got <= 0 || strncmp(reply, "HTTP/", 5) != 0);
    close(plain);

    //  A bad file at reload keeps the old certificate.
    s_test_write(live_cert, "not a certificate\n");
    PROTO_CHECK(proto_tls_reload(tls) == -1);
    PROTO_CHECK(proto_tls_generation(tls) == 1);
    PROTO_CHECK(s_test_get(port, seen, sizeof seen) == 0 && strcmp(seen, first) == 0);
    //  A key that does not match the new certificate too.
    s_test_copy(cert2, live_cert);
    PROTO_CHECK(proto_tls_reload(tls) == -1);
    PROTO_CHECK(s_test_get(port, seen, sizeof seen) == 0 && strcmp(seen, first) == 0);

    //  Both files replaced: new handshakes see the second certificate.
    s_test_copy(key2, live_key);
    PROTO_CHECK(proto_tls_reload(tls) == 0);
    PROTO_CHECK(proto_tls_generation(tls) == 2);
    proto_tls_fingerprint(tls, second, sizeof second);
    PROTO_CHECK(strcmp(first, second) != 0);
    PROTO_CHECK(s_test_get(port, seen, sizeof seen) == 0 && strcmp(seen, second) == 0);
    proto_tls_reload_hook(tls);
    PROTO_CHECK(proto_tls_generation(tls) == 3);

    //  Another proto_tls_t cannot take the port.
    proto_tls_t *other = proto_tls_new("other", cert, key, error, sizeof error);
    PROTO_CHECK(other && proto_tls_serve(other, listen_fd) == -1);
    proto_tls_destroy(&other);
    PROTO_CHECK(proto_tls_mhd_options(NULL)[0].option == MHD_OPTION_END);

    MHD_stop_daemon(mhd);
    proto_tls_destroy(&tls);
    PROTO_CHECK(tls == NULL);
    const char *files[] = {cert, key, cert2, key2, garbage, live_cert, live_key};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        unlink(files[i]);
    rmdir(dir);
    if (verbose)
        printf("OK\n");
}
