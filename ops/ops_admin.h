/*  ops_admin: the admin CLI commands of `tollgate` (provider, model, account,
    key, usage), a thin client of the admin API (docs/admin-api.md). The
    tables of `list` and the fields of `show` for resources are drawn from
    the server's own descriptions (GET /admin/resources), so they show what
    the server holds and validates.

    The admin URL and token come from TOLLGATE_ADMIN_URL / TOLLGATE_ADMIN_TOKEN,
    else from the state folder `tollgate up` wrote (--dir DIR, else
    $TOLLGATE_DIR, else ./var): `admin.listen` in DIR/tollgate.conf
    and the token in DIR/admin_token. Output is human-readable, or the API's
    JSON with --json. Errors go to stderr. Exit codes: 0 done, 1 the server
    refused or could not be reached (its message is printed), 2 bad usage.

    The command lines are a contract scripts depend on (README.md):
        tollgate provider add NAME --protocol P --base-url URL [--priority N] [--weight N]
        tollgate provider key add PROVIDER --secret SECRET [--priority N] [--weight N]
        tollgate provider list [--json]
        tollgate model add NAME --route PROVIDER[:UPSTREAM_MODEL] [--route ...]
                               [--price-in P] [--price-out P]
        tollgate model list [--json]
        tollgate account add NAME [--balance AMOUNT]
        tollgate account show NAME --json
        tollgate account topup NAME AMOUNT [--reason TEXT]
        tollgate key create ACCOUNT [--name LABEL] [--models M1,M2]   (last line: the key)
        tollgate key revoke KEY_OR_ID
        tollgate key list [--account NAME] [--json]
        tollgate login USERNAME [--password PASSWORD|-] [--ttl SECONDS]
        tollgate logout
        tollgate whoami [--json]
        tollgate admin user add USERNAME --role owner|operator|viewer [--password PASSWORD|-]
        tollgate admin user list|disable|enable|role|password ...
        tollgate admin session list [--user USERNAME] [--all] | revoke ID
        tollgate admin bootstrap rotate
        tollgate token create NAME --role ROLE [--expires-at TIME]   (last line: the token)
        tollgate token list | revoke ID
        tollgate audit [--actor NAME] [--action ACTION] [--limit N] [--before ID] [--json]
        tollgate requests [--account NAME] [--errors] ... | requests show REQUEST_ID
        tollgate request-log [set --level base|headers|full ...]

    The token: TOLLGATE_ADMIN_TOKEN, else DIR/admin_session (a session
    `tollgate login` saved, mode 0600; `tollgate logout` ends and removes
    it), else the bootstrap token in DIR/admin_token. Passwords given as
    "-" (or not given, on a pipe) are read from the first line of stdin,
    on a terminal from a prompt without echo: never from the process list.
*/
#ifndef OPS_ADMIN_H_INCLUDED
#define OPS_ADMIN_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Runs one admin command. argv[0] is the command word (provider, model,
//  account, key, usage, login, logout, whoami, admin, token, audit,
//  requests, request-log); the rest are its words and options. Returns the
//  process exit code.
int ops_admin_main(int argc, char **argv);

//  Writes micro-units as a decimal amount with at least two decimals and no
//  trailing zeros beyond them: 10500000 -> "10.50", 1 -> "0.000001".
void ops_admin_format_micros(int64_t micros, char *out, size_t out_size);

//  Self test of the pure parts (formatting, argument parsing, URL discovery).
void ops_admin_test(bool verbose);

#endif
