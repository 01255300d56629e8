/*  admin_keys: settings 'client_keys', the prefix of client API keys
    ({"prefix": "tg-"}).

    The prefix marks a key as ours: keys are made with it (s_key_prepare in
    admin_tables reads it in the key's own transaction), ingress prefers a
    credential that carries it when a client sends several, and request
    logs and the audit log mask text shaped like one. A key is looked up by
    its hash whatever its prefix, so a change affects new keys only. Every
    program follows the setting at run time (proto_service reads it with
    the log level, on the settings trigger's notification).
*/
#include "admin_handlers.h"
#include "proto_crypto.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_GET                                                                                      \
    "SELECT json_build_object('prefix', coalesce((SELECT value ->> 'prefix' FROM settings WHERE "  \
    "key = 'client_keys'), '" PROTO_CRYPTO_KEY_PREFIX_DEFAULT "'))"

void admin_client_keys_get(admin_call_t *call)
{
    admin_respond_query(call, 200, S_GET, 0, NULL, "settings");
}

//  PATCH /admin/settings/client-keys {"prefix": "..."}.
void admin_client_keys_patch(admin_call_t *call)
{
    char *before = NULL, *after = NULL;
    PGresult *result = NULL;
    json_t *prefix = json_object_get(call->body, "prefix");
    for (void *field = json_object_iter(call->body); field;
         field = json_object_iter_next(call->body, field))
        if (strcmp(json_object_iter_key(field), "prefix") != 0) {
            admin_invalid(call, "unknown field '%.64s' (only 'prefix')",
                          json_object_iter_key(field));
            goto done;
        }
    if (!prefix) {
        admin_invalid(call, "'prefix' is required");
        goto done;
    }
    if (!proto_crypto_key_prefix_valid(json_string_value(prefix))) {
        admin_invalid(call,
                      "'prefix' must be 1 to %d characters of letters, digits, '-' and '_', not "
                      "only digits, and not an admin token's (tga_, tgs_, tgt_)",
                      PROTO_CRYPTO_KEY_PREFIX_MAX);
        goto done;
    }
    snprintf(call->audit_target, sizeof call->audit_target, "client_keys");
    const char *params[] = {json_string_value(prefix)};
    if (admin_begin(call) == 0 && admin_sql_one(call, S_GET, 0, NULL, &before) == 1 &&
        (result = admin_sql(call,
                            "INSERT INTO settings (key, value) VALUES ('client_keys', "
                            "jsonb_build_object('prefix', $1::text)) ON CONFLICT (key) DO UPDATE "
                            "SET value = settings.value || EXCLUDED.value, updated_at = now()",
                            1, params))) {
        call->audit_before = json_loads(before, 0, NULL);
        if (admin_sql_one(call, S_GET, 0, NULL, &after) == 1 && after) {
            call->audit_after = json_loads(after, 0, NULL);
            if (admin_commit(call) == 0)
                admin_respond_text(call, 200, after);
        }
    }
done:
    PQclear(result);
    free(before);
    free(after);
}
