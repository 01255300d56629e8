/*  admin_handlers: the routes with handlers of their own (internal to
    ops/admin). The generic resource path is in admin_resource.h; the route
    table that names them all is in admin_api.c.
*/
#ifndef ADMIN_HANDLERS_H_INCLUDED
#define ADMIN_HANDLERS_H_INCLUDED

#include "admin_call.h"

//  admin_auth.c: who is calling, logins, sessions, users, the bootstrap token.
//  Proves who is calling (bearer token or the console's cookie). Returns 0
//  with call->who set, or -1 after answering.
int admin_authenticate(admin_call_t *call);
void admin_login(admin_call_t *call);
void admin_logout(admin_call_t *call);
void admin_me(admin_call_t *call);
void admin_session_probe(admin_call_t *call);
void admin_session_list(admin_call_t *call);
void admin_user_change(admin_call_t *call);
void admin_bootstrap_rotate(admin_call_t *call);
//  The session token in a Cookie header (tollgate_session=tgs_…), or NULL.
//  Borrowed from the header, not NUL-terminated at its end.
const char *admin_cookie_token(const char *cookie);
void admin_auth_test(bool verbose);

//  admin_actions.c: money moved by hand, keys revoked by their text.
//  Writes a journal entry moving `amount` into the account from a system
//  account (funding for top-ups, adjustments otherwise) inside the caller's
//  transaction; entry gets its id (24 bytes). Returns 0 or -1 (answered).
int admin_journal(admin_call_t *call, const char *account, const char *amount, const char *kind,
                  const char *reason, char *entry);
void admin_account_topup(admin_call_t *call);
void admin_key_revoke(admin_call_t *call);
void admin_key_revoke_body(admin_call_t *call);

//  admin_reads.c: reports, request logs, the audit log, settings.
void admin_status(admin_call_t *call);
void admin_usage(admin_call_t *call);
void admin_usage_csv(admin_call_t *call);
void admin_spend_report(admin_call_t *call);
void admin_balances_report(admin_call_t *call);
void admin_usage_report(admin_call_t *call);
void admin_ledger_check(admin_call_t *call);
void admin_request_list(admin_call_t *call);
void admin_request_get(admin_call_t *call);
void admin_request_log_get(admin_call_t *call);
void admin_request_log_patch(admin_call_t *call);
//  settings 'client_keys': the client key prefix (admin_keys.c).
void admin_client_keys_get(admin_call_t *call);
void admin_client_keys_patch(admin_call_t *call);
void admin_log_level_get(admin_call_t *call);
void admin_log_level_patch(admin_call_t *call);
void admin_audit_list(admin_call_t *call);

//  admin_self.c: the console's figures, and the account holder's own routes.
void admin_stats(admin_call_t *call);
void admin_self(admin_call_t *call);
void admin_self_usage(admin_call_t *call);
void admin_self_keys(admin_call_t *call);
void admin_self_key_create(admin_call_t *call);
void admin_self_key_revoke(admin_call_t *call);

//  admin_routing.c: questions to the routers, and provider health.
admin_routers_t *admin_routers_new(proto_config_t *config);
void admin_routers_destroy(admin_routers_t **self_p);
void admin_routing_decide(admin_call_t *call);
void admin_breakers_list(admin_call_t *call);
void admin_breakers_reset(admin_call_t *call);
void admin_sticky_list(admin_call_t *call);
void admin_sticky_delete(admin_call_t *call);
void admin_health(admin_call_t *call);
void admin_provider_models(admin_call_t *call);
void admin_provider_models_refresh(admin_call_t *call);
//  admin_reach.c: completion probes on demand, and their last results.
void admin_provider_probe(admin_call_t *call);
void admin_provider_probes(admin_call_t *call);
void admin_model_mappings(admin_call_t *call);
void admin_routing_test(bool verbose);

#endif
