/*  ops_reset: `tollgate admin reset-password USER`, for the operator who
    lost the last owner's password: it needs the database alone, no
    running tollgate-admin and no admin session.

        tollgate admin reset-password USERNAME [--password PASSWORD|-]
                 [--database-url URL] [--dir DIR] [--json]

    The password comes from --password (- reads one line of standard
    input), else from a prompt without echo on a terminal, else from one
    line of standard input. It must pass the admin API's own rule (12
    characters or more, at most 1024 bytes) and is stored as the admin
    server stores it: argon2id (libsodium crypto_pwhash_str, the same
    limits). In one transaction: the hash, the end of the user's sessions,
    the user's login lockouts lifted, and an audit row (actor
    "cli:reset-password", action admin_user.reset_password, no secret in
    it). The user's role and status are left as they are.

    The database: --database-url URL, else TOLLGATE_DATABASE_URL, else
    database_url in $TOLLGATE_CONFIG, else in DIR/tollgate.conf (--dir
    DIR, $TOLLGATE_DIR, ./var), as `tollgate migrate` finds it. Exit codes:
    0 done, 1 no such user or the database refused, 2 bad usage or a
    password the rule refuses (nothing is changed then).
*/
#ifndef OPS_RESET_H_INCLUDED
#define OPS_RESET_H_INCLUDED

#include <stdbool.h>

//  Runs `tollgate admin reset-password ...`: argv[0] is "reset-password".
//  Returns the process exit code.
int ops_reset_main(int argc, char **argv);

//  Self test (no database).
void ops_reset_test(bool verbose);

#endif
