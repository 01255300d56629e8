/*  admin_actions: changes that are not a resource's create, PATCH or
    DELETE: money moved by hand (top-ups and adjustments, by journal entry)
    and client keys revoked by the key itself.
*/
#include "admin_handlers.h"
#include "admin_resource.h"
#include "proto_crypto.h"
#include "proto_log.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_SQL_MAX 8192

static const admin_field_t s_topup_fields[] = {
    {.field = "amount",
     .column = NULL,
     .kind = ADMIN_F_MICROS,
     .min = -ADMIN_MONEY_MAX,
     .max = ADMIN_MONEY_MAX,
     .micros = "amount_micros",
     .required = true},
    {.field = "reason", .column = NULL, .kind = ADMIN_F_TEXT, .min = 0, .max = 1000},
    {.field = NULL}};

//  Writes a journal entry moving `amount` into the customer's ledger account
//  from a system account (funding for top-ups, adjustments otherwise) and
//  moves accounts.balance_micros the same way, inside the caller's
//  transaction, so `balance = sum of lines` holds at every commit. The
//  balance column does not wake the programs (it is the ledger's), so this
//  notifies explicitly: billing rebases its balances on a catalog reload.
//  Writes the entry id into entry (24 bytes). Returns 0 or -1 (answer set).
int admin_journal(admin_call_t *call, const char *account, const char *amount, const char *kind,
                  const char *reason, char *entry)
{
    char *ledger = NULL, *entry_id = NULL;
    int rc = -1;
    if (admin_sql_one(call,
                      "WITH fresh AS (INSERT INTO ledger_accounts (account_id) VALUES ($1::bigint) "
                      "ON CONFLICT (account_id) DO NOTHING RETURNING id) "
                      "SELECT id FROM fresh UNION ALL "
                      "SELECT id FROM ledger_accounts WHERE account_id = $1::bigint",
                      1, (const char *[]){account}, &ledger) != 1 ||
        !ledger)
        goto done;
    const char *system = strcmp(kind, "topup") == 0 ? "funding" : "adjustments";
    const char *params[] = {kind, reason, ledger, amount, system};
    if (admin_sql_one(
            call,
            "WITH e AS (INSERT INTO journal_entries (kind, reason, created_by) "
            "VALUES ($1, $2, 'admin-api') RETURNING id), "
            "l AS (INSERT INTO journal_lines (entry_id, ledger_account_id, amount_micros) "
            "SELECT e.id, v.ledger, v.amount FROM e, (VALUES ($3::bigint, $4::bigint), "
            "((SELECT id FROM ledger_accounts WHERE system_name = $5), -($4::bigint))) "
            "AS v(ledger, amount)) SELECT id FROM e",
            5, params, &entry_id) != 1 ||
        !entry_id)
        goto done;
    PGresult *result =
        admin_sql(call,
                  "UPDATE accounts SET balance_micros = balance_micros + $2::bigint, "
                  "updated_at = now() WHERE id = $1::bigint",
                  2, (const char *[]){account, amount});
    if (!result)
        goto done;
    PQclear(result);
    result = admin_sql(call, "SELECT pg_notify('tollgate_config', 'accounts')", 0, NULL);
    if (!result)
        goto done;
    PQclear(result);
    snprintf(entry, 24, "%s", entry_id);
    rc = 0;
done:
    free(ledger);
    free(entry_id);
    return rc;
}

//  Answers with the account's JSON plus one more field.
static void s_respond_account_with(admin_call_t *call, int status, const char *id, const char *key,
                                   json_t *extra)
{
    char *text = NULL, account_sql[S_SQL_MAX];
    admin_resource_by_id(&admin_accounts, account_sql, sizeof account_sql);
    if (admin_sql_one(call, account_sql, 1, (const char *[]){id}, &text) == 1 && text) {
        json_t *account = json_loads(text, 0, NULL);
        assert(account);
        json_object_set_new(account, key, extra);
        admin_respond_json(call, status, account);
    } else
        json_decref(extra);
    free(text);
}

void admin_account_topup(admin_call_t *call)
{
    const admin_field_t *f = s_topup_fields;
    admin_value_t v[ADMIN_MAX_FIELDS] = {{0}};
    char id[24], entry[24], account_sql[S_SQL_MAX];
    admin_resource_by_id(&admin_accounts, account_sql, sizeof account_sql);
    if (admin_resolve(call, &admin_accounts, call->params[0], id) != 0 ||
        admin_read(call, f, v, ADMIN_CREATE) != 0)
        goto done;
    const char *amount = ADMIN_VALUE(f, v, "amount")->text;
    if (strcmp(amount, "0") == 0) {
        admin_invalid(call, "'amount' must not be zero");
        goto done;
    }
    const char *kind = amount[0] == '-' ? "adjustment" : "topup";
    const char *reason = ADMIN_VALUE(f, v, "reason")->text;
    if (admin_begin(call) == 0 && admin_before(call, account_sql, id) == 0 &&
        admin_journal(call, id, amount, kind, reason ? reason : "", entry) == 0 &&
        admin_after(call, account_sql, id) == 0) {
        json_object_set_new(call->audit_after, "journal_entry",
                            json_pack("{s:I,s:s,s:I}", "id", (json_int_t)strtoll(entry, NULL, 10),
                                      "kind", kind, "amount_micros",
                                      (json_int_t)strtoll(amount, NULL, 10)));
    }
    if (call->audit_after && admin_commit(call) == 0) {
        log_info(NULL, "admin: account %s %s of %s micros, journal entry %s", id, kind, amount,
                 entry);
        json_t *extra =
            json_pack("{s:I,s:s,s:I}", "id", (json_int_t)strtoll(entry, NULL, 10), "kind", kind,
                      "amount_micros", (json_int_t)strtoll(amount, NULL, 10));
        s_respond_account_with(call, 200, id, "journal_entry", extra);
    }
done:
    admin_values_free(v, ADMIN_MAX_FIELDS);
}

// ---------------------------------------------------------------------------
//  Client API keys

static const admin_field_t s_revoke_fields[] = {
    {.field = "key", .column = NULL, .kind = ADMIN_F_TEXT, .min = 1, .max = 200}, {.field = NULL}};

//  Sets a key's status to revoked, by id or by the key itself (looked up by
//  its hash). Revoking twice is not an error.
static void s_key_revoke_ident(admin_call_t *call, const char *ident)
{
    char hash[PROTO_CRYPTO_HASH_HEX + 1];
    const char *params[2] = {NULL, NULL};
    //  Anything but an id is a key, whatever its prefix (settings
    //  'client_keys' may have changed it since the key was made).
    if (admin_is_id(ident))
        params[0] = ident;
    else if (*ident) {
        proto_crypto_hash_hex(ident, strlen(ident), hash);
        params[1] = hash;
    } else {
        admin_not_found(call, "key not found");
        return;
    }
    char *id = NULL, key_sql[S_SQL_MAX];
    admin_resource_by_id(&admin_keys, key_sql, sizeof key_sql);
    if (admin_begin(call) != 0)
        return;
    int found = admin_sql_one(call,
                              "UPDATE api_keys SET status = 'revoked', updated_at = now() "
                              "WHERE id = $1::bigint OR key_hash = $2 RETURNING id",
                              2, params, &id);
    if (found == 0)
        admin_not_found(call, "key not found");
    else if (found == 1 && admin_after(call, key_sql, id) == 0 && admin_commit(call) == 0) {
        log_info(NULL, "admin: api key %s revoked", id);
        admin_respond_query(call, 200, key_sql, 1, (const char *[]){id}, "key");
    }
    free(id);
}

void admin_key_revoke(admin_call_t *call)
{
    s_key_revoke_ident(call, call->params[0]);
}

//  POST /admin/keys/revoke {"key": "tg-…"}: keeps the key out of URLs, and
//  so out of access logs.
void admin_key_revoke_body(admin_call_t *call)
{
    admin_value_t v[ADMIN_MAX_FIELDS] = {{0}};
    if (admin_read(call, s_revoke_fields, v, ADMIN_CREATE) == 0) {
        if (!v[0].present)
            admin_invalid(call, "'key' is required");
        else
            s_key_revoke_ident(call, v[0].text);
    }
    admin_values_free(v, ADMIN_MAX_FIELDS);
}
