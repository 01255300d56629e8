#include "proto_socket.h"
#include "proto_check.h"
#include "proto_log.h"
#include "proto_msg.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define S_ZAP_DOMAIN "tollgate"
//  A draft option of libzmq 4.3 (Debian's build has it; zmq.h shows it
//  only with ZMQ_BUILD_DRAFT_API): with it a CURVE server whose ZAP handler
//  is gone refuses every client instead of admitting any (libzmq's legacy
//  "Stonehouse" default).
#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93
#endif
#define S_PROGRAM_MAX 64
#define S_PROOF_CONTEXT "tollgate ipc proof 1"
#define S_PEERS_MAX 32 //  server keys remembered (one per program)

//  The process' settings, like proto_log's: set once at start-up.
static struct {
    bool initialised;                           //  proto_socket_init ran
    bool curve;                                 //  security = curve
    char dir[PATH_MAX];                         //  curve.dir
    char program[S_PROGRAM_MAX];                //  whose certificate we use
    zcert_t *cert;                              //  ours, with its secret key
    zactor_t *zap;                              //  ZAP handler, NULL until the first bind
    int64_t max_message;                        //  ZMQ_MAXMSGSIZE of every socket
    char peer_name[S_PEERS_MAX][S_PROGRAM_MAX]; //  programs whose key we read
    char peer_key[S_PEERS_MAX][41];             //  their public keys, Z85
    int peer_count;                             //  how many
} s_socket = {.max_message = -1};

//  --------------------------------------------------------------------------
//  ZAP handler: an actor answering libzmq's authentication requests for
//  every CURVE server socket of the process. It admits a client whose
//  public key is one of DIR/public/*.cert and names its program as the
//  connection's User-Id.

typedef struct {
    char dir[PATH_MAX + 16]; //  the public certificates
    uint8_t secret[32];      //  the process' own secret key (PLAIN proofs)
    zhashx_t *keys;          //  Z85 public key -> program name
    zhashx_t *programs;      //  program name -> its public key (32 bytes)
    struct timespec mtime;   //  the folder's when last read
    bool loaded;             //  read at least once
} s_zap_t;

//  What the actor starts from; copied before its first signal.
typedef struct {
    char dir[PATH_MAX + 16];
    uint8_t secret[32];
} s_zap_args_t;

//  ipc:// sockets authenticate with PLAIN, not CURVE: they never leave the
//  host, and CURVE's encryption of every message there guarded against no
//  one (only root, or the cluster's own user, who can read the keys anyway,
//  can see a unix socket's traffic) while costing the request path ~4 us.
//  The proof is still the certificate: user name the client's program,
//  password a keyed hash of it under the X25519 secret that the client's
//  key pair shares with the server's (crypto_scalarmult of one's secret and
//  the other's public key). Only a holder of one of the two secret keys can
//  make it, and ZAP checks it as it checks a CURVE key.
int proto_socket_ipc_proof(const uint8_t secret[32], const uint8_t peer_public[32],
                           const char *client_program, char proof[PROTO_SOCKET_PROOF_SIZE])
{
    uint8_t shared[crypto_scalarmult_BYTES];
    if (crypto_scalarmult(shared, secret, peer_public) != 0)
        return -1; //  a low-order public key
    uint8_t mac[32];
    crypto_generichash_state state;
    crypto_generichash_init(&state, shared, sizeof shared, sizeof mac);
    crypto_generichash_update(&state, (const uint8_t *)S_PROOF_CONTEXT, sizeof S_PROOF_CONTEXT);
    crypto_generichash_update(&state, (const uint8_t *)client_program, strlen(client_program));
    crypto_generichash_final(&state, mac, sizeof mac);
    sodium_memzero(shared, sizeof shared);
    sodium_bin2hex(proof, PROTO_SOCKET_PROOF_SIZE, mac, sizeof mac);
    return 0;
}

//  True when `name` is "X.cert" with a non-empty X not starting with '.';
//  fills the program name.
static bool s_cert_name(const char *name, char *program, size_t size)
{
    size_t length = strlen(name);
    if (name[0] == '.' || length <= 5 || strcmp(name + length - 5, ".cert") != 0 ||
        length - 5 >= size)
        return false;
    memcpy(program, name, length - 5);
    program[length - 5] = '\0';
    return true;
}

//  Re-reads the folder when it changed since the last read.
static void s_zap_refresh(s_zap_t *self)
{
    struct stat info;
    if (stat(self->dir, &info) != 0) {
        zhashx_purge(self->keys);
        zhashx_purge(self->programs);
        self->loaded = false;
        return;
    }
    if (self->loaded && info.st_mtim.tv_sec == self->mtime.tv_sec &&
        info.st_mtim.tv_nsec == self->mtime.tv_nsec)
        return;
    zhashx_purge(self->keys);
    zhashx_purge(self->programs);
    self->mtime = info.st_mtim;
    self->loaded = true;
    DIR *folder = opendir(self->dir);
    if (!folder)
        return;
    struct dirent *entry;
    while ((entry = readdir(folder))) {
        char program[S_PROGRAM_MAX], path[PATH_MAX * 2];
        if (!s_cert_name(entry->d_name, program, sizeof program))
            continue;
        snprintf(path, sizeof path, "%s/%s", self->dir, entry->d_name);
        zcert_t *cert = zcert_load(path);
        if (cert) {
            zhashx_update(self->keys, zcert_public_txt(cert), strdup(program));
            uint8_t *key = malloc(32);
            assert(key);
            memcpy(key, zcert_public_key(cert), 32);
            zhashx_update(self->programs, program, key);
            zcert_destroy(&cert);
        }
    }
    closedir(folder);
}

//  A PLAIN client's program when its password is the proof of that
//  program's certificate (proto_socket_ipc_proof), else NULL. Fills claimed.
static const char *s_zap_plain(s_zap_t *self, zframe_t *user, zframe_t *password,
                               char claimed[S_PROGRAM_MAX])
{
    if (zframe_size(user) == 0 || zframe_size(user) >= S_PROGRAM_MAX ||
        zframe_size(password) != PROTO_SOCKET_PROOF_SIZE - 1)
        return NULL;
    memcpy(claimed, zframe_data(user), zframe_size(user));
    claimed[zframe_size(user)] = '\0';
    const uint8_t *client_public = zhashx_lookup(self->programs, claimed);
    char expected[PROTO_SOCKET_PROOF_SIZE];
    if (!client_public || strlen(claimed) != zframe_size(user) ||
        proto_socket_ipc_proof(self->secret, client_public, claimed, expected) != 0)
        return NULL;
    return sodium_memcmp(expected, zframe_data(password), PROTO_SOCKET_PROOF_SIZE - 1) == 0
               ? claimed
               : NULL;
}

//  Answers one ZAP request (RFC 27): version, sequence, domain, address,
//  identity, mechanism, credentials.
static void s_zap_answer(s_zap_t *self, zsock_t *handler)
{
    zmsg_t *request = zmsg_recv(handler);
    if (!request)
        return;
    char *version = zmsg_popstr(request);
    char *sequence = zmsg_popstr(request);
    char *domain = zmsg_popstr(request);
    char *address = zmsg_popstr(request);
    char *identity = zmsg_popstr(request);
    char *mechanism = zmsg_popstr(request);
    zframe_t *key = zmsg_pop(request);      //  CURVE: the public key; PLAIN: the user
    zframe_t *password = zmsg_pop(request); //  PLAIN only
    const char *program = NULL;
    char claimed[S_PROGRAM_MAX] = "";
    if (mechanism && strcmp(mechanism, "CURVE") == 0 && key && zframe_size(key) == 32) {
        char text[41];
        zmq_z85_encode(text, zframe_data(key), 32);
        s_zap_refresh(self);
        program = zhashx_lookup(self->keys, text);
    } else if (mechanism && strcmp(mechanism, "PLAIN") == 0 && key && password) {
        s_zap_refresh(self);
        program = s_zap_plain(self, key, password, claimed);
    }
    if (!program)
        log_warn(NULL, "refused a %s connection from %s: not a certificate of the cluster",
                 mechanism ? mechanism : "?", address ? address : "?");
    zstr_sendx(handler, "1.0", sequence ? sequence : "", program ? "200" : "400",
               program ? "OK" : "No access", program ? program : "", "", NULL);
    zframe_destroy(&password);
    zframe_destroy(&key);
    free(version);
    free(sequence);
    free(domain);
    free(address);
    free(identity);
    free(mechanism);
    zmsg_destroy(&request);
}

static void s_name_free(void **item)
{
    free(*item);
    *item = NULL;
}

static void s_zap_actor(zsock_t *pipe, void *args)
{
    const s_zap_args_t *given = args;
    s_zap_t self = {.keys = zhashx_new(), .programs = zhashx_new()};
    snprintf(self.dir, sizeof self.dir, "%s", given->dir);
    memcpy(self.secret, given->secret, sizeof self.secret);
    zhashx_set_destructor(self.keys, s_name_free);
    zhashx_set_destructor(self.programs, s_name_free);
    //  zactor_new takes the first signal; the second says whether we run.
    zsock_signal(pipe, 0);
    zsock_t *handler = zsock_new(ZMQ_REP);
    if (!handler || zsock_bind(handler, S_ZAP_ENDPOINT) != 0) {
        zsock_destroy(&handler);
        zhashx_destroy(&self.keys);
        zhashx_destroy(&self.programs);
        sodium_memzero(self.secret, sizeof self.secret);
        zsock_signal(pipe, 1);
        return;
    }
    s_zap_refresh(&self);
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, handler, NULL);
    while (true) {
        void *which = zpoller_wait(poller, -1);
        if (which == handler)
            s_zap_answer(&self, handler);
        else if (which == pipe) {
            char *command = zstr_recv(pipe);
            bool stop = !command || strcmp(command, "$TERM") == 0;
            free(command);
            if (stop)
                break;
        } else
            break; //  interrupted
    }
    zpoller_destroy(&poller);
    zsock_destroy(&handler);
    zhashx_destroy(&self.keys);
    zhashx_destroy(&self.programs);
    sodium_memzero(self.secret, sizeof self.secret);
}

//  --------------------------------------------------------------------------
//  Settings

static int s_load_own(const char *dir, const char *program, char *error, size_t error_size)
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/secret/%s.cert", dir, program);
    zcert_t *cert = access(path, R_OK) == 0 ? zcert_load(path) : NULL;
    static const uint8_t zero[32] = {0};
    if (!cert || memcmp(zcert_secret_key(cert), zero, 32) == 0) {
        snprintf(error, error_size,
                 "security=curve: no secret certificate %s (make them with `tollgate cert "
                 "make --dir %s`, or set security=none to run without authentication)",
                 path, dir);
        zcert_destroy(&cert);
        return -1;
    }
    s_socket.cert = cert;
    return 0;
}

int proto_socket_init_with(const char *security, const char *curve_dir, const char *program,
                           int64_t max_message, char *error, size_t error_size)
{
    proto_socket_shutdown();
    bool curve = strcmp(security, "curve") == 0;
    if (!curve && strcmp(security, "none") != 0) {
        snprintf(error, error_size, "security must be curve or none, not '%s'", security);
        return -1;
    }
    if (curve && !*curve_dir) {
        snprintf(error, error_size,
                 "security=curve needs curve.dir, the folder of the cluster's certificates "
                 "(`tollgate cert make --dir DIR`), or security=none to run without "
                 "authentication");
        return -1;
    }
    if (strlen(curve_dir) >= sizeof s_socket.dir || strlen(program) >= sizeof s_socket.program) {
        snprintf(error, error_size, "curve.dir or program name too long");
        return -1;
    }
    if (curve && s_load_own(curve_dir, program, error, error_size) != 0)
        return -1;
    s_socket.curve = curve;
    snprintf(s_socket.dir, sizeof s_socket.dir, "%s", curve_dir);
    snprintf(s_socket.program, sizeof s_socket.program, "%s", program);
    s_socket.max_message = max_message;
    s_socket.initialised = true;
    return 0;
}

int proto_socket_init(proto_config_t *config, const char *program, char *error, size_t error_size)
{
    int64_t body = proto_config_int(config, "ingress.max_body_bytes");
    //  The largest frame: a client's body (DISPATCH), or a whole upstream
    //  answer after conversion (DONE), which can grow it; plus an envelope.
    int64_t answer = 2 * (int64_t)PROTO_SOCKET_ANSWER_MAX;
    int64_t largest = (body > answer ? body : answer) + PROTO_MSG_ENVELOPE_MAX;
    return proto_socket_init_with(proto_config_str(config, "security"),
                                  proto_config_str(config, "curve.dir"), program, largest, error,
                                  error_size);
}

int proto_socket_init_env(const char *program, char *error, size_t error_size)
{
    const char *security = getenv("TOLLGATE_SECURITY");
    const char *dir = getenv("TOLLGATE_CURVE_DIR");
    return proto_socket_init_with(security && *security ? security : "curve", dir ? dir : "",
                                  program, -1, error, error_size);
}

void proto_socket_shutdown(void)
{
    zactor_destroy(&s_socket.zap);
    zcert_destroy(&s_socket.cert);
    s_socket.initialised = false;
    s_socket.curve = false;
    s_socket.peer_count = 0;
    s_socket.max_message = -1;
}

bool proto_socket_secure(void)
{
    return s_socket.curve;
}

const char *proto_socket_program(void)
{
    return s_socket.program;
}

int64_t proto_socket_max_message(void)
{
    return s_socket.max_message;
}

//  --------------------------------------------------------------------------
//  Sockets

zsock_t *proto_socket_new(int type)
{
    assert(s_socket.initialised); //  proto_service (or the tool) sets security first
    zsock_t *socket = zsock_new(type);
    if (!socket)
        return NULL;
    int64_t max = s_socket.max_message;
    zmq_setsockopt(zsock_resolve(socket), ZMQ_MAXMSGSIZE, &max, sizeof max);
    return socket;
}

static bool s_inproc(const char *endpoint)
{
    return strncmp(endpoint, "inproc://", 9) == 0;
}

static bool s_ipc(const char *endpoint)
{
    return strncmp(endpoint, "ipc://", 6) == 0;
}

//  Starts the ZAP handler before the first server socket can take a
//  connection: without one, libzmq would admit any CURVE client.
static int s_zap_start(void)
{
    if (s_socket.zap)
        return 0;
    s_zap_args_t args;
    snprintf(args.dir, sizeof args.dir, "%s/public", s_socket.dir);
    memcpy(args.secret, zcert_secret_key(s_socket.cert), sizeof args.secret);
    //  The actor copies its arguments before its first signal, which
    //  zactor_new waits for; the second one says whether the handler is bound.
    s_socket.zap = zactor_new(s_zap_actor, &args);
    sodium_memzero(args.secret, sizeof args.secret);
    if (s_socket.zap && zsock_wait(s_socket.zap) != 0)
        zactor_destroy(&s_socket.zap);
    if (!s_socket.zap)
        log_error(NULL, "cannot start the ZAP handler (is another one bound in this process?)");
    return s_socket.zap ? 0 : -1;
}

int proto_socket_bind(zsock_t *socket, const char *endpoint)
{
    if (s_socket.curve && !s_inproc(endpoint)) {
        if (s_zap_start() != 0)
            return -1;
        if (s_ipc(endpoint))
            zsock_set_plain_server(socket, 1);
        else {
            zcert_apply(s_socket.cert, socket);
            zsock_set_curve_server(socket, 1);
        }
        zsock_set_zap_domain(socket, S_ZAP_DOMAIN);
        //  Fail closed: should the handler ever go (proto_socket_shutdown
        //  while another service of the process still serves), nobody is
        //  admitted unchecked.
        int enforce = 1;
        if (zmq_setsockopt(zsock_resolve(socket), ZMQ_ZAP_ENFORCE_DOMAIN, &enforce,
                           sizeof enforce) != 0) {
            log_error(NULL, "cannot make ZAP mandatory on %s: %s", endpoint, zmq_strerror(errno));
            return -1;
        }
    }
    return zsock_bind(socket, "%s", endpoint);
}

//  The public key of `program`'s servers, read once. Borrowed; NULL when
//  there is no certificate for it.
static const char *s_server_key(const char *program)
{
    for (int i = 0; i < s_socket.peer_count; i++)
        if (strcmp(s_socket.peer_name[i], program) == 0)
            return s_socket.peer_key[i];
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/public/%s.cert", s_socket.dir, program);
    zcert_t *cert = access(path, R_OK) == 0 ? zcert_load(path) : NULL;
    if (!cert)
        return NULL;
    const char *key = NULL;
    if (s_socket.peer_count < S_PEERS_MAX) {
        int slot = s_socket.peer_count++;
        snprintf(s_socket.peer_name[slot], S_PROGRAM_MAX, "%s", program);
        snprintf(s_socket.peer_key[slot], 41, "%s", zcert_public_txt(cert));
        key = s_socket.peer_key[slot];
    }
    zcert_destroy(&cert);
    return key;
}

int proto_socket_connect(zsock_t *socket, const char *component, const char *endpoint)
{
    if (s_socket.curve && !s_inproc(endpoint)) {
        char program[S_PROGRAM_MAX];
        snprintf(program, sizeof program, "%.*s", (int)strcspn(component, "."), component);
        const char *key = s_server_key(program);
        if (!key) {
            log_error(NULL, "cannot connect to %s %s: no certificate %s/public/%s.cert", program,
                      endpoint, s_socket.dir, program);
            return -1;
        }
        if (s_ipc(endpoint)) {
            uint8_t server_public[32];
            char proof[PROTO_SOCKET_PROOF_SIZE];
            if (!zmq_z85_decode(server_public, key) ||
                proto_socket_ipc_proof(zcert_secret_key(s_socket.cert), server_public,
                                       s_socket.program, proof) != 0) {
                log_error(NULL, "cannot connect to %s %s: unusable key in %s/public/%s.cert",
                          program, endpoint, s_socket.dir, program);
                return -1;
            }
            zsock_set_plain_username(socket, s_socket.program);
            zsock_set_plain_password(socket, proof);
            sodium_memzero(proof, sizeof proof);
        } else {
            zcert_apply(s_socket.cert, socket);
            zsock_set_curve_serverkey(socket, key);
        }
    }
    if (zsock_connect(socket, "%s", endpoint) != 0) {
        log_error(NULL, "cannot connect to %s %s: %s", component, endpoint,
                  zmq_strerror(zmq_errno()));
        return -1;
    }
    return 0;
}

int proto_socket_connect_all(zsock_t *socket, proto_config_t *config, const char *component)
{
    const char *endpoints[64];
    int count = proto_config_endpoints(config, component, endpoints, 64);
    int connected = 0;
    for (int i = 0; i < count; i++)
        if (proto_socket_connect(socket, component, endpoints[i]) == 0)
            connected++;
    return connected;
}

zsock_t *proto_socket_server(int type, const char *endpoint)
{
    zsock_t *socket = proto_socket_new(type);
    if (socket && proto_socket_bind(socket, endpoint) < 0) {
        log_error(NULL, "cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&socket);
    }
    return socket;
}

zsock_t *proto_socket_client(int type, const char *component, const char *endpoint)
{
    zsock_t *socket = proto_socket_new(type);
    if (socket && proto_socket_connect(socket, component, endpoint) != 0)
        zsock_destroy(&socket);
    return socket;
}

const char *proto_socket_peer(zframe_t *frame)
{
    const char *user = frame ? zframe_meta(frame, "User-Id") : NULL;
    return user ? user : "";
}

//  --------------------------------------------------------------------------
//  Certificates

//  Writes one certificate's two files. Returns 0 or -1 with error.
static int s_write_cert(const char *dir, const char *program, char *error, size_t error_size)
{
    zcert_t *cert = zcert_new();
    if (!cert) {
        snprintf(error, error_size, "cannot make a key pair (libzmq without CURVE?)");
        return -1;
    }
    zcert_set_meta(cert, "program", "%s", program);
    zcert_set_meta(cert, "cluster", "tollgate");
    char public_path[PATH_MAX * 2], secret_path[PATH_MAX * 2];
    snprintf(public_path, sizeof public_path, "%s/public/%s.cert", dir, program);
    snprintf(secret_path, sizeof secret_path, "%s/secret/%s.cert", dir, program);
    //  The secret file is created unreadable by others, never chmod-ed after.
    mode_t before = umask(077);
    int rc = zcert_save_secret(cert, secret_path);
    umask(before);
    if (rc == 0)
        rc = zcert_save_public(cert, public_path);
    if (rc == 0)
        chmod(public_path, 0644);
    else
        snprintf(error, error_size, "cannot write %s: %s", rc ? secret_path : public_path,
                 strerror(errno));
    zcert_destroy(&cert);
    return rc == 0 ? 0 : -1;
}

int proto_socket_make_certs(const char *dir, const char *const programs[], int count, bool replace,
                            char *error, size_t error_size)
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof path, "%s/public", dir);
    if (zsys_dir_create("%s", path) != 0) {
        snprintf(error, error_size, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof path, "%s/secret", dir);
    if (zsys_dir_create("%s", path) != 0 || chmod(path, 0700) != 0) {
        snprintf(error, error_size, "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    int written = 0;
    for (int i = 0; i < count; i++) {
        char program[S_PROGRAM_MAX];
        if (!s_cert_name(programs[i], program, sizeof program) &&
            (strlen(programs[i]) == 0 || strlen(programs[i]) >= S_PROGRAM_MAX ||
             strpbrk(programs[i], "/. ") != NULL)) {
            snprintf(error, error_size, "'%s' is not a program name", programs[i]);
            return -1;
        }
        snprintf(path, sizeof path, "%s/secret/%s.cert", dir, programs[i]);
        if (!replace && access(path, F_OK) == 0)
            continue;
        if (s_write_cert(dir, programs[i], error, error_size) != 0)
            return -1;
        written++;
    }
    return written;
}

//  --------------------------------------------------------------------------
//  Self test

//  Waits on a monitor socket for a handshake event in `wanted`, and
//  asserts no handshake succeeded meanwhile unless that is wanted.
static void s_handshake_wait(void *monitor, int wanted)
{
    while (true) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        int rc = zmq_msg_recv(&msg, monitor, 0);
        assert(rc >= 6);
        uint16_t event;
        memcpy(&event, zmq_msg_data(&msg), sizeof event);
        zmq_msg_close(&msg);
        zmq_msg_init(&msg); //  second frame: the endpoint
        zmq_msg_recv(&msg, monitor, 0);
        zmq_msg_close(&msg);
        if (event & wanted)
            return;
        assert(!(event & ZMQ_EVENT_HANDSHAKE_SUCCEEDED));
    }
}

//  A PLAIN client of `endpoint` with the given user and password.
static zsock_t *s_plain_client(const char *endpoint, const char *user, const char *password)
{
    zsock_t *client = zsock_new(ZMQ_DEALER);
    zsock_set_plain_username(client, user);
    zsock_set_plain_password(client, password);
    PROTO_CHECK(zsock_connect(client, "%s", endpoint) == 0);
    zstr_send(client, "forged");
    return client;
}

//  ipc:// servers take PLAIN with a certificate's proof (proto_socket_ipc_proof): the
//  process plays billing's server and dispatch's client (proto_socket_test).
static void s_test_ipc(const char *dir)
{
    char endpoint[PATH_MAX];
    snprintf(endpoint, sizeof endpoint, "ipc://%s/billing.sock", dir);
    zsock_t *server = proto_socket_new(ZMQ_ROUTER);
    PROTO_CHECK(proto_socket_bind(server, endpoint) == 0);
    PROTO_CHECK(zmq_socket_monitor(zsock_resolve(server), "inproc://proto_socket_monitor_ipc",
                                   ZMQ_EVENT_ALL) == 0);
    void *monitor = zmq_socket(zsys_init(), ZMQ_PAIR);
    PROTO_CHECK(zmq_connect(monitor, "inproc://proto_socket_monitor_ipc") == 0);

    zsock_t *client = proto_socket_client(ZMQ_DEALER, "billing", endpoint);
    PROTO_CHECK(client);
    s_handshake_wait(monitor, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
    zstr_send(client, "over ipc");
    zmsg_t *received = zmsg_recv(server);
    PROTO_CHECK(received && zframe_streq(zmsg_last(received), "over ipc"));
    PROTO_CHECK(strcmp(proto_socket_peer(zmsg_last(received)), "dispatch") == 0);
    zmsg_destroy(&received);

    //  No mechanism, and CURVE with dispatch's own keys: the wrong mechanism.
    zsock_t *plain = zsock_new_dealer(endpoint);
    zstr_send(plain, "forged");
    s_handshake_wait(monitor, ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL);
    zsock_t *curve = zsock_new(ZMQ_DEALER);
    zcert_apply(s_socket.cert, curve);
    zsock_set_curve_serverkey(curve, s_server_key("billing"));
    PROTO_CHECK(zsock_connect(curve, "%s", endpoint) == 0);
    zstr_send(curve, "forged");
    s_handshake_wait(monitor, ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL);
    //  A guessed password, dispatch's proof under another program's name or
    //  a name without a certificate: ZAP refuses.
    char zeros[PROTO_SOCKET_PROOF_SIZE];
    memset(zeros, '0', PROTO_SOCKET_PROOF_SIZE - 1);
    zeros[PROTO_SOCKET_PROOF_SIZE - 1] = '\0';
    uint8_t billing_public[32];
    PROTO_CHECK(zmq_z85_decode(billing_public, s_server_key("billing")));
    char proof[PROTO_SOCKET_PROOF_SIZE];
    PROTO_CHECK(proto_socket_ipc_proof(zcert_secret_key(s_socket.cert), billing_public, "dispatch",
                                       proof) == 0);
    zsock_t *forged[] = {s_plain_client(endpoint, "dispatch", zeros),
                         s_plain_client(endpoint, "billing", proof),
                         s_plain_client(endpoint, "ledger", proof)};
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++)
        s_handshake_wait(monitor, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
    //  The real proof gets through, and only real clients' messages arrive.
    zsock_t *second = s_plain_client(endpoint, "dispatch", proof);
    s_handshake_wait(monitor, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
    zstr_send(client, "last");
    for (int seen = 0; seen < 2;) {
        received = zmsg_recv(server);
        PROTO_CHECK(received && strcmp(proto_socket_peer(zmsg_last(received)), "dispatch") == 0);
        seen += zframe_streq(zmsg_last(received), "last") ||
                zframe_streq(zmsg_last(received), "forged");
        zmsg_destroy(&received);
    }

    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++)
        zsock_destroy(&forged[i]);
    zsock_destroy(&second);
    zsock_destroy(&curve);
    zsock_destroy(&plain);
    zsock_destroy(&client);
    zmq_socket_monitor(zsock_resolve(server), NULL, 0);
    zmq_close(monitor);
    zsock_destroy(&server);
}

void proto_socket_test(bool verbose)
{
    if (verbose)
        printf(" * proto_socket: ");
    char dir[] = "/tmp/proto_socket_test.XXXXXX";
    PROTO_CHECK(mkdtemp(dir));
    char error[512];
    const char *programs[] = {"billing", "dispatch"};
    PROTO_CHECK(proto_socket_make_certs(dir, programs, 2, false, error, sizeof error) == 2);
    PROTO_CHECK(proto_socket_make_certs(dir, programs, 2, false, error, sizeof error) == 0);
    const char *bad[] = {"../x"};
    PROTO_CHECK(proto_socket_make_certs(dir, bad, 1, false, error, sizeof error) == -1);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/secret/billing.cert", dir);
    struct stat info;
    PROTO_CHECK(stat(path, &info) == 0 && (info.st_mode & 077) == 0);

    //  A server of billing; dispatch's certificate gets through, and the
    //  server learns who it is.
    PROTO_CHECK(proto_socket_init_with("curve", dir, "billing", 4096, error, sizeof error) == 0);
    zsock_t *server = proto_socket_new(ZMQ_ROUTER);
    int port = proto_socket_bind(server, "tcp://127.0.0.1:*");
    PROTO_CHECK(port > 0);
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    PROTO_CHECK(zmq_socket_monitor(zsock_resolve(server), "inproc://proto_socket_monitor",
                                   ZMQ_EVENT_ALL) == 0);
    void *monitor = zmq_socket(zsys_init(), ZMQ_PAIR);
    PROTO_CHECK(zmq_connect(monitor, "inproc://proto_socket_monitor") == 0);

    zcert_t *own = s_socket.cert;
    s_socket.cert = NULL; //  the client plays dispatch
    PROTO_CHECK(s_load_own(dir, "dispatch", error, sizeof error) == 0);
    snprintf(s_socket.program, sizeof s_socket.program, "dispatch");
    zsock_t *client = proto_socket_client(ZMQ_DEALER, "billing", endpoint);
    PROTO_CHECK(client);
    s_handshake_wait(monitor, ZMQ_EVENT_HANDSHAKE_SUCCEEDED);
    zstr_send(client, "hello");
    zmsg_t *received = zmsg_recv(server);
    PROTO_CHECK(received && zmsg_size(received) == 2);
    zframe_t *routing = zmsg_first(received);
    zframe_t *payload = zmsg_next(received);
    PROTO_CHECK(zframe_streq(payload, "hello"));
    PROTO_CHECK(strcmp(proto_socket_peer(payload), "dispatch") == 0);
    (void)routing;
    zmsg_destroy(&received);

    //  A plain client: the handshake fails, nothing arrives.
    zsock_t *plain = zsock_new_dealer(endpoint);
    PROTO_CHECK(plain);
    zstr_send(plain, "forged");
    s_handshake_wait(monitor, ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL);
    zsock_destroy(&plain);

    //  A CURVE client with a certificate of its own: it knows billing's
    //  public key (that is public), but ZAP refuses it.
    zsock_t *outsider = zsock_new(ZMQ_DEALER);
    zcert_t *stranger = zcert_new();
    zcert_apply(stranger, outsider);
    zsock_set_curve_serverkey(outsider, s_server_key("billing"));
    PROTO_CHECK(zsock_connect(outsider, "%s", endpoint) == 0);
    zstr_send(outsider, "forged");
    s_handshake_wait(monitor, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);

    //  Only the cluster's client's next message arrives.
    zstr_send(client, "second");
    received = zmsg_recv(server);
    PROTO_CHECK(received && zframe_streq(zmsg_last(received), "second"));
    zmsg_destroy(&received);

    //  A frame over ZMQ_MAXMSGSIZE closes that connection; it never arrives.
    char *big = calloc(1, 8192);
    zframe_t *frame = zframe_new(big, 8192);
    free(big);
    zframe_send(&frame, client, 0);
    zstr_send(client, "after");
    zsock_t *second = proto_socket_client(ZMQ_DEALER, "billing", endpoint);
    zstr_send(second, "third");
    received = zmsg_recv(server);
    PROTO_CHECK(received && zmsg_size(received) == 2 && zframe_size(zmsg_last(received)) < 8192);
    zmsg_destroy(&received);

    s_test_ipc(dir);

    //  The ZAP handler gone (another service of the process shut down):
    //  even the cluster's own client is refused, never admitted unchecked.
    //  (Earlier clients may still reconnect and say so on the monitor: only
    //  what the new one sends is looked for.)
    zactor_destroy(&s_socket.zap);
    zsock_t *unchecked = proto_socket_client(ZMQ_DEALER, "billing", endpoint);
    zstr_send(unchecked, "unchecked");
    zsock_set_rcvtimeo(server, 500);
    while ((received = zmsg_recv(server))) {
        PROTO_CHECK(!zframe_streq(zmsg_last(received), "unchecked"));
        zmsg_destroy(&received);
    }
    zsock_destroy(&unchecked);

    zsock_destroy(&second);
    zcert_destroy(&stranger);
    zsock_destroy(&outsider);
    zsock_destroy(&client);
    zmq_socket_monitor(zsock_resolve(server), NULL, 0);
    zmq_close(monitor);
    zsock_destroy(&server);
    zcert_destroy(&s_socket.cert);
    s_socket.cert = own;
    snprintf(s_socket.program, sizeof s_socket.program, "billing");
    proto_socket_shutdown();

    //  Configuration errors say what to do.
    PROTO_CHECK(proto_socket_init_with("curve", "", "billing", -1, error, sizeof error) == -1);
    PROTO_CHECK(strstr(error, "curve.dir"));
    PROTO_CHECK(proto_socket_init_with("curve", dir, "ledger", -1, error, sizeof error) == -1);
    PROTO_CHECK(strstr(error, "ledger.cert"));
    PROTO_CHECK(proto_socket_init_with("tls", dir, "billing", -1, error, sizeof error) == -1);
    PROTO_CHECK(proto_socket_init_with("none", "", "billing", -1, error, sizeof error) == 0);
    PROTO_CHECK(!proto_socket_secure());
    proto_socket_shutdown();

    char command[PATH_MAX + 16];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    PROTO_CHECK(system(command) == 0);
    if (verbose)
        printf("OK\n");
}
