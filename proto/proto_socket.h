/*  proto_socket: every ZeroMQ socket between Tollgate programs.

    Every place that opens a socket towards another program goes through
    here, so that its security and limits are the same everywhere and a new
    socket is one call:

        zsock_t *server = proto_socket_server(ZMQ_ROUTER, "tcp://0.0.0.0:7120");
        zsock_t *client = proto_socket_client(ZMQ_DEALER, "billing", endpoint);

    security = curve (the default): ZeroMQ CURVE (libzmq's own), with
    certificates in CZMQ's zcert format. Every program has one. The folder
    `curve.dir` holds
        public/NAME.cert    the public certificate of program NAME: the
                            cluster's certificates, one per program
        secret/NAME.cert    NAME's certificate with its secret key (only
                            the program itself needs its own)
    (`tollgate cert make` writes them; `tollgate up` makes them in its state
    folder). A server socket is a CURVE server with its program's secret
    key, and a ZAP handler in the process admits only clients whose public
    key is one of the public certificates: anyone else's handshake fails, so their
    messages never reach a handler. A client takes the public key of the
    program it connects to from public/PROGRAM.cert. Traffic is encrypted.
    On ipc:// endpoints (one host) the same certificates are proved over
    ZeroMQ PLAIN instead, without encrypting each message: the user name is
    the client's program, the password proto_socket_ipc_proof.
    The ZAP handler names the client's program as the connection's User-Id
    (proto_socket_peer), so a server can also check which program speaks.
    The handler re-reads public/ when the folder changes, so a certificate
    added or removed takes effect at the next connection.

    security = none: plain sockets, anyone who reaches a port is trusted;
    logged as a warning at start.

    Every socket gets ZMQ_MAXMSGSIZE: a frame larger than the largest legal
    message (a client body up to ingress.max_body_bytes, or a whole upstream
    answer, converted) closes the connection before it is buffered.

    The settings are the process' own, set once at start like the log
    level (proto_service does it for every program). Sockets on inproc://
    endpoints carry no security (they never leave the process).
*/
#ifndef PROTO_SOCKET_H_INCLUDED
#define PROTO_SOCKET_H_INCLUDED

#include "proto_config.h"

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Largest whole upstream answer dispatch relays (non-streamed).
#define PROTO_SOCKET_ANSWER_MAX (64u * 1024u * 1024u)

//  Sets this process' socket security from `security` and `curve.dir`, for
//  program `program` (whose secret certificate it uses), and the message
//  size limit from ingress.max_body_bytes. With curve, starts the ZAP
//  handler. Returns 0, or -1 with a message in error.
int proto_socket_init(proto_config_t *config, const char *program, char *error, size_t error_size);

//  The same from explicit values: security "curve" or "none", the folder,
//  the program and the largest frame accepted. Returns 0 or -1.
int proto_socket_init_with(const char *security, const char *curve_dir, const char *program,
                           int64_t max_message, char *error, size_t error_size);

//  For test tools that have no configuration: TOLLGATE_SECURITY and
//  TOLLGATE_CURVE_DIR from the environment (default curve). Returns 0 or -1.
int proto_socket_init_env(const char *program, char *error, size_t error_size);

//  Stops the ZAP handler and forgets the settings.
void proto_socket_shutdown(void);

//  True when sockets use CURVE.
bool proto_socket_secure(void);

//  The program whose certificate this process uses. Borrowed.
const char *proto_socket_program(void);

//  The largest frame a socket accepts.
int64_t proto_socket_max_message(void);

//  A new socket of `type` with the process' limits, neither bound nor
//  connected. Caller owns return value; NULL when ZeroMQ refused.
zsock_t *proto_socket_new(int type);

//  Binds as a server of this program (CURVE server, admitting only the
//  cluster's certificates). Returns zsock_bind's result: 0, a port for
//  "tcp://...:*", or -1.
int proto_socket_bind(zsock_t *socket, const char *endpoint);

//  Connects to `endpoint`, a server of the program that `component` names
//  ("billing", "dispatch.events", "ingress.control": the part before the
//  first dot). Returns 0, or -1 (logged: no certificate for that program,
//  or a bad endpoint).
int proto_socket_connect(zsock_t *socket, const char *component, const char *endpoint);

//  Connects to every endpoint of `component` (proto_config_endpoints).
//  Returns how many were connected.
int proto_socket_connect_all(zsock_t *socket, proto_config_t *config, const char *component);

//  proto_socket_new + proto_socket_bind. NULL (logged) when either failed.
zsock_t *proto_socket_server(int type, const char *endpoint);

//  proto_socket_new + proto_socket_connect. NULL (logged) when either failed.
zsock_t *proto_socket_client(int type, const char *component, const char *endpoint);

//  The PLAIN password by which the holder of `secret` (the secret key of
//  `client_program`'s certificate) proves itself to the server whose public
//  key is `peer_public` on an ipc:// socket (docs/security.md): a keyed hash
//  of the name under their X25519 shared secret, in hex. 0, or -1 for a
//  low-order key.
#define PROTO_SOCKET_PROOF_SIZE 65
int proto_socket_ipc_proof(const uint8_t secret[32], const uint8_t peer_public[32],
                           const char *client_program, char proof[PROTO_SOCKET_PROOF_SIZE]);

//  The program whose certificate the sender of `frame` proved (the ZAP
//  handler's User-Id), or "" on a socket without security. Borrowed.
const char *proto_socket_peer(zframe_t *frame);

//  Makes certificates for `count` programs in `dir` (public/ and secret/,
//  created as needed; secrets mode 0600). An existing certificate is kept
//  unless `replace`. Returns how many were written, or -1 with error.
int proto_socket_make_certs(const char *dir, const char *const programs[], int count, bool replace,
                            char *error, size_t error_size);

//  Self test: a client with a cluster certificate gets through, one without
//  a certificate or with an unknown one does not; User-Id; size limit.
void proto_socket_test(bool verbose);

#endif
