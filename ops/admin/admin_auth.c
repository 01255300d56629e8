/*  admin_auth: who is calling, logins and sessions, admin users' changes,
    and the bootstrap token.

    Every secret that proves who someone is (session and API tokens, the
    bootstrap token) is found by its SHA-256, which is all the database
    holds. Passwords are argon2id, verified and hashed on a worker thread,
    never on a loop that serves traffic.

    Lockout: a failed login is recorded in login_attempts. When the
    failures of one (user, client address) pair, or of one address whoever
    it names, reach admin.lockout_attempts within admin.lockout_ms, that
    subject is refused for admin.lockout_ms, doubled on each lock within a
    day (a back-off, at most a day). A user is never locked as such: someone
    guessing elsewhere cannot lock the owner out of their own address.
    Refusals while locked are not counted, so a lock ends on time however
    hard someone keeps trying. Wrong bootstrap tokens are counted the same
    way per address and refused beyond admin.bootstrap_attempts.

    The console's session: login with {"cookie": true} sets the token in an
    HttpOnly, SameSite=Strict cookie and answers a CSRF token instead, which
    is the SHA-256 of "csrf:" and the session token, so it needs no storage
    and cannot be made without the cookie. A request proved by the cookie
    must send it in X-CSRF-Token unless it is a GET.
*/
#include "admin_handlers.h"
#include "proto_check.h"
#include "admin_resource.h"
#include "proto_crypto.h"
#include "proto_log.h"

#include <assert.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_PASSWORD_MAX 1024 //  bytes in a password, at most
#define S_COOKIE "tollgate_session"
#define S_BOOTSTRAP_NAME "(bootstrap)" //  login_attempts.username of bootstrap guesses
#define S_OWNERS "SELECT count(*) FROM admin_users WHERE role = 'owner' AND status = 'active'"
#define S_WRONG_TOKEN "missing or wrong admin token (Authorization: Bearer <token>)"

// ---------------------------------------------------------------------------
//  Admin users: PATCH (role, status, password) and DELETE (disable)

//  A change that would leave no active owner is refused: nobody could
//  manage users any more, and the bootstrap token would come back to life.
//  Disabling a user or setting their password ends their sessions.
void admin_user_change(admin_call_t *call)
{
    char id[24], user_sql[8192];
    admin_value_t v[ADMIN_MAX_FIELDS] = {{0}};
    const admin_field_t *f = admin_users.fields;
    char hash[crypto_pwhash_STRBYTES] = "";
    char *owners_before = NULL, *owners_after = NULL;
    if (call->route->op == ADMIN_OP_DELETE) {
        json_decref(call->body);
        call->body = json_pack("{s:s}", "status", "disabled");
    }
    admin_resource_by_id(&admin_users, user_sql, sizeof user_sql);
    if (admin_resolve(call, &admin_users, call->params[0], id) != 0 ||
        admin_read(call, f, v, ADMIN_PATCH) != 0)
        goto done;
    if (admin_present(f, v) == 0) {
        admin_invalid(call, "nothing to change");
        goto done;
    }
    const admin_value_t *password = ADMIN_VALUE(f, v, "password");
    const admin_value_t *status = ADMIN_VALUE(f, v, "status");
    if (password->present && admin_password_hash(call, "password", password->json, hash) != 0)
        goto done;
    if (admin_begin(call) != 0)
        goto done;
    //  Owner changes take turns, so two owners demoting each other at once
    //  cannot both see the other one still there.
    PGresult *lock = admin_sql(call, "LOCK TABLE admin_users IN SHARE ROW EXCLUSIVE MODE", 0, NULL);
    if (!lock)
        goto done;
    PQclear(lock);
    snprintf(call->audit_target, sizeof call->audit_target, "%s", id);
    if (admin_sql_one(call, S_OWNERS, 0, NULL, &owners_before) != 1 ||
        admin_before(call, user_sql, id) != 0 ||
        admin_patch(call, "admin_users", true, f, v, id) < 0)
        goto done;
    if (password->present) {
        PGresult *result = admin_sql(call,
                                     "UPDATE admin_users SET password_hash = $2, updated_at = "
                                     "now() WHERE id = $1::bigint",
                                     2, (const char *[]){id, hash});
        if (!result)
            goto done;
        PQclear(result);
    }
    if (password->present || (status->present && strcmp(status->text, "active") != 0)) {
        PGresult *result = admin_sql(call,
                                     "UPDATE admin_sessions SET revoked_at = now() WHERE user_id "
                                     "= $1::bigint AND revoked_at IS NULL",
                                     1, (const char *[]){id});
        if (!result)
            goto done;
        PQclear(result);
    }
    if (admin_sql_one(call, S_OWNERS, 0, NULL, &owners_after) != 1)
        goto done;
    if (atoi(owners_before) > 0 && atoi(owners_after) == 0) {
        admin_conflict(call, "this would leave no active owner; make another user owner first");
        goto done;
    }
    if (admin_after(call, user_sql, id) == 0 && admin_commit(call) == 0) {
        log_info(call->request->request_id, "admin: admin user %s changed by %s", id,
                 call->who.actor);
        admin_respond_query(call, 200, user_sql, 1, (const char *[]){id}, "admin user");
    }
done:
    sodium_memzero(hash, sizeof hash);
    free(owners_before);
    free(owners_after);
    admin_values_free(v, ADMIN_MAX_FIELDS);
}

// ---------------------------------------------------------------------------
//  Lockout

//  The two subjects a failed login counts against.
static void s_subjects(const char *username, const char *ip, char *pair, size_t pair_size,
                       char *address, size_t address_size)
{
    snprintf(pair, pair_size, "user:%s ip:%s", username, ip);
    snprintf(address, address_size, "ip:%s", ip);
}

//  Seconds the longest lock on these subjects still lasts (0: none), and
//  that lock's whole length in *lock_ms. Returns -1 after answering.
static long s_locked_for(admin_call_t *call, const char *pair, const char *address,
                         int64_t *lock_ms)
{
    PGresult *result =
        admin_sql(call,
                  "SELECT ceil(extract(epoch FROM locked_until - clock_timestamp()))::bigint, "
                  "lock_ms FROM login_lockouts WHERE subject IN ($1, $2) AND locked_until > "
                  "clock_timestamp() ORDER BY locked_until DESC LIMIT 1",
                  2, (const char *[]){pair, address});
    if (!result)
        return -1;
    long seconds = 0;
    *lock_ms = 0;
    if (PQntuples(result) == 1) {
        seconds = strtol(PQgetvalue(result, 0, 0), NULL, 10);
        *lock_ms = strtoll(PQgetvalue(result, 0, 1), NULL, 10);
        if (seconds < 1)
            seconds = 1;
    }
    PQclear(result);
    return seconds;
}

//  Locks a subject, for longer each time it is locked again within a day.
static int s_lock(admin_call_t *call, const char *subject, const char *window)
{
    static const char *const sql =
        "WITH prior AS (SELECT CASE WHEN locked_until > clock_timestamp() - interval '1 day' "
        "THEN least(strikes, 15) ELSE 0 END AS n FROM login_lockouts WHERE subject = $1), "
        "len AS (SELECT least($2::bigint << coalesce((SELECT n FROM prior), 0), 86400000) AS ms) "
        "INSERT INTO login_lockouts AS l (subject, locked_until, strikes, lock_ms) SELECT $1, "
        "clock_timestamp() + len.ms * interval '1 millisecond', coalesce((SELECT n FROM prior), "
        "0) + 1, len.ms FROM len ON CONFLICT (subject) DO UPDATE SET locked_until = "
        "EXCLUDED.locked_until, strikes = EXCLUDED.strikes, lock_ms = EXCLUDED.lock_ms "
        "RETURNING lock_ms, strikes";
    PGresult *result = admin_sql(call, sql, 2, (const char *[]){subject, window});
    if (!result)
        return -1;
    //  The decision is made here, so the warning is written here.
    log_warn(call->request->request_id,
             "admin: %s locked out of admin login for %s ms (lock %s in a row)", subject,
             PQgetvalue(result, 0, 0), PQgetvalue(result, 0, 1));
    PQclear(result);
    return 0;
}

//  After a failed login (already recorded), locks the pair and the address
//  whose recent failures reach the limit. A pair's failures count after its
//  last success; an address's are not reset by a success (one valid account
//  must not let an address guess at the others). Returns 0, or -1.
static int s_lock_if_needed(admin_call_t *call, const char *username, const char *ip,
                            const char *pair, const char *address)
{
    static const char *const counts[] = {
        "SELECT count(*) FROM login_attempts a WHERE a.username = $1 AND a.client_ip = $2 AND "
        "NOT a.succeeded AND a.attempted_at > now() - $3::bigint * interval '1 millisecond' "
        "AND a.attempted_at > coalesce((SELECT locked_until FROM login_lockouts WHERE subject "
        "= $4), '-infinity') AND a.attempted_at > coalesce((SELECT max(attempted_at) FROM "
        "login_attempts WHERE username = $1 AND client_ip = $2 AND succeeded), '-infinity')",
        "SELECT count(*) FROM login_attempts a WHERE a.client_ip = $2 AND a.username <> "
        "'" S_BOOTSTRAP_NAME "' AND NOT a.succeeded AND $1::text IS NOT NULL AND "
        "a.attempted_at > now() - $3::bigint * interval '1 millisecond' AND a.attempted_at > "
        "coalesce((SELECT locked_until FROM login_lockouts WHERE subject = $4), '-infinity')"};
    const char *subjects[] = {pair, address};
    char window[24];
    snprintf(window, sizeof window, "%" PRId64, proto_config_int(call->config, "admin.lockout_ms"));
    int64_t limit = proto_config_int(call->config, "admin.lockout_attempts");
    for (int i = 0; i < 2; i++) {
        char *count = NULL;
        if (admin_sql_one(call, counts[i], 4, (const char *[]){username, ip, window, subjects[i]},
                          &count) != 1) {
            free(count);
            return -1;
        }
        bool lock = count && strtoll(count, NULL, 10) >= limit;
        free(count);
        if (lock && s_lock(call, subjects[i], window) != 0)
            return -1;
    }
    return 0;
}

static void s_locked_out(admin_call_t *call, const char *type, const char *message, long seconds,
                         int64_t lock_ms)
{
    admin_respond_json(call, 429,
                       json_pack("{s:{s:s,s:s,s:I,s:I}}", "error", "message", message, "type", type,
                                 "retry_after_s", (json_int_t)seconds, "lock_ms",
                                 (json_int_t)lock_ms));
}

// ---------------------------------------------------------------------------
//  Login, logout, me

static const admin_field_t s_login_fields[] = {
    {.field = "username", .kind = ADMIN_F_TEXT, .min = 1, .max = 200, .required = true},
    {.field = "password", .kind = ADMIN_F_ANY, .required = true},
    {.field = "expires_in_s", .kind = ADMIN_F_INT, .min = 1, .max = 2592000},
    {.field = "cookie", .kind = ADMIN_F_ANY},
    {.field = NULL}};

//  Verifies a password against a stored hash, or against a dummy hash when
//  there is no user, so that both take the same time.
static bool s_password_ok(admin_call_t *call, const char *stored, const char *password)
{
    if (!*call->dummy_hash) {
        char random[33];
        proto_crypto_random_hex(random, 16);
        char hash[crypto_pwhash_STRBYTES];
        if (admin_argon2_hash(hash, random) == 0)
            *call->dummy_hash = strdup(hash);
    }
    const char *hash = stored ? stored : *call->dummy_hash;
    bool ok = hash && admin_argon2_verify(hash, password);
    return ok && stored;
}

//  The console's CSRF token for a session token (hex SHA-256 of "csrf:" token).
static void s_csrf(const char *token, char *out)
{
    char text[ADMIN_TOKEN_SIZE + 8];
    snprintf(text, sizeof text, "csrf:%s", token);
    proto_crypto_hash_hex(text, strlen(text), out);
    sodium_memzero(text, sizeof text);
}

//  Rehashes a stored hash made with weaker settings while we hold the password.
static void s_rehash(admin_call_t *call, const char *id, const char *stored, const char *password)
{
    if (crypto_pwhash_str_needs_rehash(stored, ADMIN_PW_OPSLIMIT, ADMIN_PW_MEMLIMIT) == 0)
        return;
    char fresh[crypto_pwhash_STRBYTES];
    if (admin_argon2_hash(fresh, password) == 0) {
        PGresult *result =
            admin_sql(call, "UPDATE admin_users SET password_hash = $2 WHERE id = $1::bigint", 2,
                      (const char *[]){id, fresh});
        PQclear(result);
    }
}

//  The session made for a login: its row, and the answer (token in the
//  body, or in the cookie with a CSRF token in the body).
static int s_session_start(admin_call_t *call, PGresult *user, const char *password, int64_t wanted,
                           bool cookie, const char *pair)
{
    admin_who_t *who = &call->who;
    const char *ip = call->request->client_ip ? call->request->client_ip : "unknown";
    char token[ADMIN_TOKEN_SIZE], hash[PROTO_CRYPTO_HASH_HEX + 1], ttl[24], sql[8192];
    char *session = NULL;
    int rc = -1;
    admin_new_token("tgs_", token, sizeof token);
    proto_crypto_hash_hex(token, strlen(token), hash);
    int64_t longest = proto_config_int(call->config, "admin.session_ttl_s");
    int64_t seconds = wanted > 0 && wanted < longest ? wanted : longest;
    snprintf(ttl, sizeof ttl, "%" PRId64, seconds);
    admin_resource_by_id(&admin_sessions, sql, sizeof sql);
    PGresult *touched = NULL, *cleared = NULL;
    if (admin_sql_one(call,
                      "INSERT INTO admin_sessions (token_hash, user_id, expires_at, client_ip) "
                      "VALUES ($1, $2::bigint, now() + $3::bigint * interval '1 second', $4) "
                      "RETURNING id",
                      4, (const char *[]){hash, who->id, ttl, ip}, &session) != 1 ||
        !(touched = admin_sql(call,
                              "UPDATE admin_users SET last_login_at = now() WHERE id = "
                              "$1::bigint",
                              1, (const char *[]){who->id})) ||
        !(cleared = admin_sql(call, "DELETE FROM login_lockouts WHERE subject = $1", 1,
                              (const char *[]){pair})))
        goto done;
    s_rehash(call, who->id, PQgetvalue(user, 0, 1), password);
    snprintf(who->session, sizeof who->session, "%s", session);
    if (admin_after(call, sql, session) != 0 || admin_commit(call) != 0)
        goto done;
    json_t *answer = json_pack("{s:O,s:{s:I,s:s,s:s}}", "expires_at",
                               json_object_get(call->audit_after, "expires_at"), "user", "id",
                               (json_int_t)strtoll(who->id, NULL, 10), "username", who->name,
                               "role", admin_role_name(who->role));
    if (who->account_id[0])
        json_object_set_new(json_object_get(answer, "user"), "account_id",
                            json_integer(strtoll(who->account_id, NULL, 10)));
    if (cookie) {
        char csrf[PROTO_CRYPTO_HASH_HEX + 1], header[512];
        s_csrf(token, csrf);
        json_object_set_new(answer, "csrf", json_string(csrf));
        snprintf(header, sizeof header,
                 S_COOKIE "=%s; Path=/; Max-Age=%" PRId64 "; HttpOnly; SameSite=Strict", token,
                 seconds);
        free(call->set_cookie);
        call->set_cookie = strdup(header);
        sodium_memzero(header, sizeof header);
    } else
        json_object_set_new(answer, "token", json_string(token));
    admin_respond_json(call, 200, answer);
    log_info(call->request->request_id, "admin: %s logged in from %s (session %s%s)", who->name, ip,
             session, cookie ? ", console" : "");
    rc = 0;
done:
    sodium_memzero(token, sizeof token);
    PQclear(touched);
    PQclear(cleared);
    free(session);
    return rc;
}

//  POST /admin/login {username, password, expires_in_s?, cookie?}: a session
//  token, shown once. Locked-out pairs and addresses are refused before the
//  password is looked at.
void admin_login(admin_call_t *call)
{
    const admin_field_t *f = s_login_fields;
    admin_value_t v[ADMIN_MAX_FIELDS] = {{0}};
    PGresult *user = NULL;
    const char *rid = call->request->request_id;
    const char *ip = call->request->client_ip ? call->request->client_ip : "unknown";
    char pair[400], address[100];
    int64_t lock_ms = 0;
    if (admin_read(call, f, v, ADMIN_CREATE) != 0)
        goto done;
    const char *username = ADMIN_VALUE(f, v, "username")->text;
    json_t *password = ADMIN_VALUE(f, v, "password")->json;
    json_t *cookie = ADMIN_VALUE(f, v, "cookie")->json;
    if (!json_is_string(password) || json_string_length(password) > S_PASSWORD_MAX ||
        strlen(json_string_value(password)) != json_string_length(password)) {
        admin_invalid(call, "'password' must be a string of at most 1024 bytes");
        goto done;
    }
    if (cookie && !json_is_boolean(cookie)) {
        admin_invalid(call, "'cookie' must be true or false");
        goto done;
    }
    s_subjects(username, ip, pair, sizeof pair, address, sizeof address);
    long locked = s_locked_for(call, pair, address, &lock_ms);
    if (locked < 0)
        goto done;
    if (locked > 0) {
        s_locked_out(call, "locked_out", "too many failed logins; try again later", locked,
                     lock_ms);
        goto done;
    }
    user = admin_sql(call,
                     "SELECT id, password_hash, role, status, username, account_id FROM "
                     "admin_users WHERE username = $1",
                     1, (const char *[]){username});
    if (!user)
        goto done;
    bool exists = PQntuples(user) == 1;
    bool ok =
        s_password_ok(call, exists ? PQgetvalue(user, 0, 1) : NULL, json_string_value(password)) &&
        strcmp(PQgetvalue(user, 0, 3), "active") == 0;
    if (admin_begin(call) != 0)
        goto done;
    PGresult *attempt = admin_sql(
        call, "INSERT INTO login_attempts (username, client_ip, succeeded) VALUES ($1, $2, $3)", 3,
        (const char *[]){username, ip, ok ? "true" : "false"});
    if (!attempt)
        goto done;
    PQclear(attempt);
    if (!ok) {
        call->audit_action = "login.failed";
        snprintf(call->audit_target, sizeof call->audit_target, "%s", username);
        if (s_lock_if_needed(call, username, ip, pair, address) == 0 && admin_commit(call) == 0) {
            log_info(rid, "admin: failed login for '%s' from %s", username, ip);
            admin_error(call, 401, "authentication_error", "wrong username or password");
        }
        goto done;
    }
    //  From here on the caller is this user, for the audit row too.
    admin_who_t *who = &call->who;
    who->kind = ADMIN_WHO_USER;
    who->role = admin_role_parse(PQgetvalue(user, 0, 2));
    snprintf(who->id, sizeof who->id, "%s", PQgetvalue(user, 0, 0));
    snprintf(who->name, sizeof who->name, "%s", PQgetvalue(user, 0, 4));
    snprintf(who->actor, sizeof who->actor, "user:%s", who->name);
    snprintf(who->account_id, sizeof who->account_id, "%s", PQgetvalue(user, 0, 5));
    const admin_value_t *wanted = ADMIN_VALUE(f, v, "expires_in_s");
    s_session_start(call, user, json_string_value(password),
                    wanted->present ? strtoll(wanted->text, NULL, 10) : 0, json_is_true(cookie),
                    pair);
done:
    PQclear(user);
    admin_values_free(v, ADMIN_MAX_FIELDS);
}

//  Ends the caller's own session (and the console's cookie).
void admin_logout(admin_call_t *call)
{
    if (call->who.kind != ADMIN_WHO_USER) {
        admin_invalid(call, "only a login session can log out; API tokens are revoked with "
                            "DELETE /admin/tokens/{id}");
        return;
    }
    const char *session = call->who.session;
    char sql[8192];
    admin_resource_by_id(&admin_sessions, sql, sizeof sql);
    PGresult *result = NULL;
    if (admin_begin(call) == 0 && admin_before(call, sql, session) == 0 &&
        (result =
             admin_sql(call, "UPDATE admin_sessions SET revoked_at = now() WHERE id = $1::bigint",
                       1, (const char *[]){session})) &&
        admin_after(call, sql, session) == 0 && admin_commit(call) == 0) {
        admin_respond_json(call, 200, json_pack("{s:b,s:s}", "logged_out", 1, "session", session));
        if (call->who.cookie)
            call->set_cookie = strdup(S_COOKIE "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
    }
    PQclear(result);
}

//  GET /admin/me: who the token (or cookie) says the caller is.
void admin_me(admin_call_t *call)
{
    static const char *const kinds[] = {[ADMIN_WHO_NONE] = "none",
                                        [ADMIN_WHO_BOOTSTRAP] = "bootstrap",
                                        [ADMIN_WHO_USER] = "session",
                                        [ADMIN_WHO_TOKEN] = "token"};
    const admin_who_t *who = &call->who;
    json_t *me = json_pack("{s:s,s:s,s:s,s:s}", "kind", kinds[who->kind], "name", who->name, "role",
                           admin_role_name(who->role), "actor", who->actor);
    json_object_set_new(me, "id",
                        who->id[0] ? json_integer(strtoll(who->id, NULL, 10)) : json_null());
    json_object_set_new(me, "expires_at",
                        who->expires_at[0] ? json_string(who->expires_at) : json_null());
    json_object_set_new(me, "account_id",
                        who->account_id[0] ? json_integer(strtoll(who->account_id, NULL, 10))
                                           : json_null());
    //  The console reloads without the CSRF token it was given at login; the
    //  cookie that proves this call is what the token is made from.
    const char *token = admin_cookie_token(call->request->cookie);
    if (who->cookie && token) {
        char csrf[PROTO_CRYPTO_HASH_HEX + 1];
        s_csrf(token, csrf);
        json_object_set_new(me, "csrf", json_string(csrf));
    }
    admin_respond_json(call, 200, me);
}

//  GET /admin/session: who the caller is, or {"authenticated": false}, with
//  200 either way: the console asks it before it knows whether it holds a
//  session, and a page's first question should not be an error.
void admin_session_probe(admin_call_t *call)
{
    if (call->who.kind == ADMIN_WHO_NONE &&
        (!call->request->authorization && !admin_cookie_token(call->request->cookie))) {
        admin_respond_json(call, 200, json_pack("{s:b}", "authenticated", 0));
        return;
    }
    if (call->who.kind == ADMIN_WHO_NONE && admin_authenticate(call) != 0) {
        if (call->status != 401)
            return; //  a database failure or a rate limit says so itself
        admin_respond_json(call, 200, json_pack("{s:b}", "authenticated", 0));
        return;
    }
    admin_me(call);
    json_t *me = json_loads(call->response, 0, NULL);
    if (me) {
        json_object_set_new(me, "authenticated", json_true());
        admin_respond_json(call, 200, me);
    }
}

// ---------------------------------------------------------------------------
//  Sessions and the bootstrap token

//  GET /admin/sessions?user=&all=1: live sessions (all=1: also ended ones).
void admin_session_list(admin_call_t *call)
{
    char ident[256], all[8], id[24], object[8192], sql[9000];
    bool has_user = false, has_all = false;
    if (admin_query_opt(call, "user", ident, sizeof ident, &has_user) != 0 ||
        admin_query_opt(call, "all", all, sizeof all, &has_all) != 0)
        return;
    if (has_user && admin_resolve(call, &admin_users, ident, id) != 0)
        return;
    bool everything = has_all && (strcmp(all, "1") == 0 || strcmp(all, "true") == 0);
    admin_resource_object(&admin_sessions, object, sizeof object);
    snprintf(sql, sizeof sql,
             "SELECT json_build_object('data', coalesce(json_agg(%s ORDER BY s.id DESC), "
             "'[]'::json)) FROM %s WHERE ($1::bigint IS NULL OR s.user_id = $1::bigint) AND "
             "($2::bool OR (s.revoked_at IS NULL AND s.expires_at > now()))",
             object, admin_sessions.from);
    admin_respond_query(call, 200, sql, 2,
                        (const char *[]){has_user ? id : NULL, everything ? "true" : "false"},
                        "sessions");
}

//  POST /admin/bootstrap/rotate: a new bootstrap token, shown once; the one
//  in admin.token stops working on every instance. Its hash goes to
//  settings, where every instance looks first. It is still retired as soon
//  as an owner exists.
void admin_bootstrap_rotate(admin_call_t *call)
{
    char token[ADMIN_TOKEN_SIZE], hash[PROTO_CRYPTO_HASH_HEX + 1];
    char *owners = NULL;
    admin_new_token("tga_", token, sizeof token);
    proto_crypto_hash_hex(token, strlen(token), hash);
    PGresult *result = NULL;
    snprintf(call->audit_target, sizeof call->audit_target, "bootstrap");
    if (admin_begin(call) == 0 &&
        (result = admin_sql(call,
                            "INSERT INTO settings (key, value) VALUES ('admin.bootstrap', "
                            "json_build_object('token_hash', $1::text, 'rotated_at', now(), "
                            "'rotated_by', $2::text)) ON CONFLICT (key) DO UPDATE SET value = "
                            "EXCLUDED.value, updated_at = now()",
                            2, (const char *[]){hash, call->who.actor})) &&
        admin_sql_one(call, S_OWNERS, 0, NULL, &owners) == 1) {
        call->audit_after = json_pack("{s:b}", "rotated", 1);
        if (admin_commit(call) == 0) {
            admin_respond_json(call, 200,
                               json_pack("{s:s,s:b}", "token", token, "usable", atoi(owners) == 0));
            log_info(call->request->request_id, "admin: bootstrap token rotated by %s",
                     call->who.actor);
        }
    }
    PQclear(result);
    free(owners);
    sodium_memzero(token, sizeof token);
}

// ---------------------------------------------------------------------------
//  Authentication

static void s_unauthorized(admin_call_t *call, const char *message)
{
    admin_error(call, 401, "authentication_error", "%s", message);
}

//  Fills who from one row of (id, name, role, expires_at[, session, account]).
static void s_who_from(admin_who_t *who, admin_who_kind_t kind, PGresult *result)
{
    who->kind = kind;
    snprintf(who->id, sizeof who->id, "%s", PQgetvalue(result, 0, 0));
    snprintf(who->name, sizeof who->name, "%s", PQgetvalue(result, 0, 1));
    who->role = admin_role_parse(PQgetvalue(result, 0, 2));
    snprintf(who->expires_at, sizeof who->expires_at, "%s",
             PQgetisnull(result, 0, 3) ? "" : PQgetvalue(result, 0, 3));
    if (kind == ADMIN_WHO_USER) {
        snprintf(who->session, sizeof who->session, "%s", PQgetvalue(result, 0, 4));
        snprintf(who->account_id, sizeof who->account_id, "%s", PQgetvalue(result, 0, 5));
    }
    snprintf(who->actor, sizeof who->actor, "%s:%s", kind == ADMIN_WHO_USER ? "user" : "token",
             who->name);
    //  A role the schema does not allow, or an account holder without an
    //  account: trust nothing.
    if (who->role == ADMIN_ANY || (who->role == ADMIN_ACCOUNT) != (who->account_id[0] != '\0'))
        who->kind = ADMIN_WHO_NONE;
}

//  Wrong bootstrap tokens from this address within the lockout window.
//  Returns the count, or -1 after answering.
static long s_bootstrap_failures(admin_call_t *call, const char *ip)
{
    char window[24], *count = NULL;
    snprintf(window, sizeof window, "%" PRId64, proto_config_int(call->config, "admin.lockout_ms"));
    if (admin_sql_one(call,
                      "SELECT count(*) FROM login_attempts WHERE username = '" S_BOOTSTRAP_NAME
                      "' AND client_ip = $1 AND NOT succeeded AND attempted_at > now() - "
                      "$2::bigint * interval '1 millisecond'",
                      2, (const char *[]){ip, window}, &count) != 1) {
        free(count);
        return -1;
    }
    long failures = count ? strtol(count, NULL, 10) : 0;
    free(count);
    return failures;
}

//  The bootstrap token: the rotated one when settings hold one, else
//  admin.token; an owner while no active owner exists. Hashes are compared
//  in constant time, so not even the length leaks. Guesses are counted
//  per address; past admin.bootstrap_attempts within admin.lockout_ms the
//  address gets 429 before any comparison, right token or not.
static int s_authenticate_bootstrap(admin_call_t *call, const char *hash)
{
    const char *ip = call->request->client_ip ? call->request->client_ip : "unknown";
    long failures = s_bootstrap_failures(call, ip);
    if (failures < 0)
        return -1;
    if (failures >= proto_config_int(call->config, "admin.bootstrap_attempts")) {
        log_warn(call->request->request_id,
                 "admin: bootstrap token refused to %s: %ld wrong "
                 "tokens",
                 ip, failures);
        s_locked_out(call, "rate_limited",
                     "too many wrong admin tokens from this address; try "
                     "again later",
                     proto_config_int(call->config, "admin.lockout_ms") / 1000 + 1,
                     proto_config_int(call->config, "admin.lockout_ms"));
        return -1;
    }
    PGresult *result =
        admin_sql(call,
                  "SELECT (SELECT value ->> 'token_hash' FROM settings WHERE key = "
                  "'admin.bootstrap'), EXISTS (SELECT 1 FROM admin_users WHERE role = 'owner' AND "
                  "status = 'active')",
                  0, NULL);
    if (!result)
        return -1;
    char want[PROTO_CRYPTO_HASH_HEX + 1] = "";
    const char *configured = proto_config_str(call->config, "admin.token");
    if (!PQgetisnull(result, 0, 0))
        snprintf(want, sizeof want, "%s", PQgetvalue(result, 0, 0));
    else if (configured && *configured)
        proto_crypto_hash_hex(configured, strlen(configured), want);
    bool owner_exists = PQgetvalue(result, 0, 1)[0] == 't';
    PQclear(result);
    if (!*want || !proto_crypto_equal(want, hash)) {
        PGresult *noted = admin_sql(call,
                                    "INSERT INTO login_attempts (username, client_ip, succeeded) "
                                    "VALUES ('" S_BOOTSTRAP_NAME "', $1, false)",
                                    1, (const char *[]){ip});
        if (!noted)
            return -1;
        PQclear(noted);
        s_unauthorized(call, S_WRONG_TOKEN);
        return -1;
    }
    if (owner_exists) {
        s_unauthorized(call, "the bootstrap token is retired now that an owner exists; log in "
                             "(tollgate login) or use an API token");
        return -1;
    }
    admin_who_t *who = &call->who;
    who->kind = ADMIN_WHO_BOOTSTRAP;
    who->role = ADMIN_OWNER;
    snprintf(who->name, sizeof who->name, "bootstrap");
    snprintf(who->actor, sizeof who->actor, "bootstrap");
    return 0;
}

const char *admin_cookie_token(const char *cookie)
{
    static const char name[] = S_COOKIE "=";
    for (const char *c = cookie; c && *c;) {
        while (*c == ' ' || *c == ';')
            c++;
        if (strncmp(c, name, sizeof name - 1) == 0) {
            const char *token = c + sizeof name - 1;
            size_t length = strcspn(token, "; ");
            //  Only a whole session token: tgs_ and 64 hex digits.
            if (length == ADMIN_TOKEN_SIZE - 2 && strncmp(token, "tgs_", 4) == 0 &&
                strspn(token + 4, "0123456789abcdef") == length - 4)
                return token;
            return NULL;
        }
        c += strcspn(c, ";");
    }
    return NULL;
}

//  The console's request: its CSRF token must match unless it only reads.
static int s_check_csrf(admin_call_t *call, const char *token)
{
    const char *method = call->request->method ? call->request->method : "";
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
        return 0;
    char want[PROTO_CRYPTO_HASH_HEX + 1];
    s_csrf(token, want);
    const char *given = call->request->csrf;
    if (given && strlen(given) == PROTO_CRYPTO_HASH_HEX && proto_crypto_equal(want, given))
        return 0;
    admin_error(call, 403, "csrf_error",
                "a change from the console needs its CSRF token in X-CSRF-Token");
    return -1;
}

int admin_authenticate(admin_call_t *call)
{
    const char *token = admin_bearer(call->request->authorization);
    bool cookie = false;
    if (!token && !call->request->authorization &&
        (token = admin_cookie_token(call->request->cookie)))
        cookie = true;
    if (!token) {
        s_unauthorized(call, S_WRONG_TOKEN);
        return -1;
    }
    char hash[PROTO_CRYPTO_HASH_HEX + 1];
    proto_crypto_hash_hex(token, strlen(token), hash);
    bool session = strncmp(token, "tgs_", 4) == 0;
    if (!session && strncmp(token, "tgt_", 4) != 0)
        return s_authenticate_bootstrap(call, hash);
    //  One statement both checks and touches, so a token in use shows when
    //  it was last used.
    PGresult *result =
        admin_sql(call,
                  session ? "UPDATE admin_sessions s SET last_used_at = now() FROM admin_users u "
                            "WHERE s.token_hash = $1 AND u.id = s.user_id AND s.revoked_at IS "
                            "NULL AND s.expires_at > now() AND u.status = 'active' RETURNING "
                            "u.id, u.username, u.role, to_json(s.expires_at) #>> '{}', s.id, "
                            "u.account_id"
                          : "UPDATE admin_api_tokens SET last_used_at = now() WHERE token_hash = "
                            "$1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > "
                            "now()) RETURNING id, name, role, to_json(expires_at) #>> '{}'",
                  1, (const char *[]){hash});
    if (!result)
        return -1;
    if (PQntuples(result) == 1)
        s_who_from(&call->who, session ? ADMIN_WHO_USER : ADMIN_WHO_TOKEN, result);
    PQclear(result);
    if (call->who.kind == ADMIN_WHO_NONE) {
        s_unauthorized(call, session ? "the session has expired, was revoked or is unknown; log "
                                       "in again (tollgate login)"
                                     : "the API token has expired, was revoked or is unknown");
        return -1;
    }
    call->who.cookie = cookie;
    if (cookie && s_check_csrf(call, token) != 0)
        return -1;
    return 0;
}

// ---------------------------------------------------------------------------
//  Self test

void admin_auth_test(bool verbose)
{
    if (verbose)
        printf(" * admin_auth: ");
    char token[ADMIN_TOKEN_SIZE], cookie[256];
    admin_new_token("tgs_", token, sizeof token);
    snprintf(cookie, sizeof cookie, "theme=dark; " S_COOKIE "=%s; other=1", token);
    const char *found = admin_cookie_token(cookie);
    PROTO_CHECK(found && strncmp(found, token, strlen(token)) == 0);
    PROTO_CHECK(!admin_cookie_token(S_COOKIE "=tgs_short"));
    PROTO_CHECK(!admin_cookie_token(S_COOKIE "=tgt_0000"));
    PROTO_CHECK(!admin_cookie_token(NULL) && !admin_cookie_token("x=1"));
    char a[PROTO_CRYPTO_HASH_HEX + 1], b[PROTO_CRYPTO_HASH_HEX + 1];
    s_csrf(token, a);
    s_csrf(token, b);
    PROTO_CHECK(strcmp(a, b) == 0 && strlen(a) == PROTO_CRYPTO_HASH_HEX);
    token[10] ^= 1;
    s_csrf(token, b);
    PROTO_CHECK(strcmp(a, b) != 0);
    char pair[400], address[100];
    s_subjects("owner", "127.0.0.2", pair, sizeof pair, address, sizeof address);
    PROTO_CHECK(strcmp(pair, "user:owner ip:127.0.0.2") == 0 &&
                strcmp(address, "ip:127.0.0.2") == 0);
    if (verbose)
        printf("OK\n");
}
