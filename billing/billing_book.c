#include "billing_book.h"
#include "proto_text.h"
#include "proto_check.h"

#include <assert.h>
#include <czmq.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t account_id; //  whose money
    uint64_t key_id;     //  which key
    int64_t micros;      //  how much is held
    uint64_t tokens;     //  token estimate taken from the tpm buckets
    uint64_t at_ms;      //  when (monotonic), for expiry
} s_reservation_t;

struct _billing_book_t {
    zhashx_t *accounts;     //  decimal account id -> billing_account_t*
    zhashx_t *keys;         //  decimal key id -> billing_limit_t*
    zhashx_t *reservations; //  request id -> s_reservation_t*
};

static const proto_limits_t s_no_limits = {.daily_micros = -1, .monthly_micros = -1};

static void s_free(void **item)
{
    free(*item);
    *item = NULL;
}

billing_book_t *billing_book_new(void)
{
    billing_book_t *self = calloc(1, sizeof *self);
    assert(self);
    self->accounts = zhashx_new();
    zhashx_set_destructor(self->accounts, s_free);
    self->keys = zhashx_new();
    zhashx_set_destructor(self->keys, s_free);
    self->reservations = zhashx_new();
    zhashx_set_destructor(self->reservations, s_free);
    return self;
}

void billing_book_destroy(billing_book_t **self_p)
{
    assert(self_p);
    billing_book_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy(&self->accounts);
    zhashx_destroy(&self->keys);
    zhashx_destroy(&self->reservations);
    free(self);
    *self_p = NULL;
}

billing_account_t *billing_book_find(billing_book_t *self, uint64_t account_id)
{
    char key[24];
    proto_text_u64(key, account_id);
    return zhashx_lookup(self->accounts, key);
}

billing_account_t *billing_book_account(billing_book_t *self, uint64_t account_id,
                                        int64_t catalog_balance)
{
    billing_account_t *account = billing_book_find(self, account_id);
    if (account)
        return account;
    account = calloc(1, sizeof *account);
    assert(account);
    account->account_id = account_id;
    account->balance_micros = catalog_balance;
    char key[24];
    proto_text_u64(key, account_id);
    zhashx_insert(self->accounts, key, account);
    return account;
}

//  Saturating arithmetic: these figures are for display and, later, for
//  admission; an absurd value must not wrap into a large credit.
static int64_t s_add(int64_t a, int64_t b)
{
    int64_t sum;
    if (__builtin_add_overflow(a, b, &sum))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return sum;
}

static int64_t s_sub(int64_t a, int64_t b)
{
    int64_t difference;
    if (__builtin_sub_overflow(a, b, &difference))
        return b < 0 ? INT64_MAX : INT64_MIN;
    return difference;
}

billing_limit_t *billing_book_key(billing_book_t *self, uint64_t key_id)
{
    char name[24];
    proto_text_u64(name, key_id);
    billing_limit_t *limit = zhashx_lookup(self->keys, name);
    if (!limit) {
        limit = calloc(1, sizeof *limit);
        assert(limit);
        zhashx_insert(self->keys, name, limit);
    }
    return limit;
}

static const proto_limits_t *s_key_limits(proto_catalog_t *catalog, uint64_t key_id)
{
    const proto_api_key_t *key = catalog ? proto_catalog_key(catalog, key_id) : NULL;
    return key ? &key->limits : &s_no_limits;
}

static const proto_limits_t *s_account_limits(proto_catalog_t *catalog, uint64_t account_id)
{
    const proto_account_t *account = catalog ? proto_catalog_account(catalog, account_id) : NULL;
    return account ? &account->limits : &s_no_limits;
}

//  Releases a reservation, if held: money, in-flight slots, token estimate
//  (corrected to tokens_used when the request settled, or given back whole
//  when it expired: tokens_used = its estimate). Returns true if held.
static bool s_release(billing_book_t *self, proto_catalog_t *catalog, const char *request_id,
                      const uint64_t *tokens_used, uint64_t now_ms)
{
    s_reservation_t *reservation = zhashx_lookup(self->reservations, request_id);
    if (!reservation)
        return false;
    uint64_t used = tokens_used ? *tokens_used : reservation->tokens;
    billing_account_t *account = billing_book_find(self, reservation->account_id);
    if (account) {
        account->reserved_micros = s_sub(account->reserved_micros, reservation->micros);
        account->reservations--;
        billing_limit_release(&account->limit, s_account_limits(catalog, reservation->account_id),
                              reservation->tokens, used, reservation->micros, now_ms);
    }
    billing_limit_release(billing_book_key(self, reservation->key_id),
                          s_key_limits(catalog, reservation->key_id), reservation->tokens, used,
                          reservation->micros, now_ms);
    zhashx_delete(self->reservations, request_id);
    return true;
}

//  Dollars text of micros for messages.
static void s_money(int64_t micros, char *out, size_t size)
{
    uint64_t magnitude = micros < 0 ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros;
    snprintf(out, size, "%s%" PRIu64 ".%06" PRIu64, micros < 0 ? "-" : "", magnitude / 1000000,
             magnitude % 1000000);
}

bool billing_book_admit(billing_book_t *self, const char *request_id,
                        const proto_account_t *account, const proto_api_key_t *key,
                        uint64_t tokens_estimate, int64_t reserve_micros, uint64_t now_ms,
                        uint64_t wall_us, billing_denial_t *denial)
{
    assert(account && key && denial);
    //  A second ADMIT of the same id is ingress re-sending one it got no
    //  answer to (request ids are unique: ingress adds random digits to a
    //  client's id). It is admitted already: counting it again would take
    //  its limits twice, and releasing then re-checking could refuse it
    //  while the first answer (admitted) is what ingress acts on.
    if (zhashx_lookup(self->reservations, request_id))
        return true;
    billing_account_t *figures = billing_book_account(self, account->id, account->balance_micros);
    int64_t available = billing_book_available(self, account);
    if (available < reserve_micros) {
        char have[32], need[32];
        s_money(available, have, sizeof have);
        s_money(reserve_micros, need, sizeof need);
        memset(denial, 0, sizeof *denial);
        denial->status = 402;
        denial->code = "insufficient_balance";
        snprintf(denial->message, sizeof denial->message,
                 "Insufficient balance: the account has %s %s available and this request may "
                 "cost up to %s. Top up the account to continue.",
                 have, account->currency ? account->currency : "", need);
        return false;
    }
    billing_limit_t *key_limit = billing_book_key(self, key->id);
    if (!billing_limit_check(key_limit, &key->limits, "key", tokens_estimate, reserve_micros,
                             now_ms, wall_us, denial) ||
        !billing_limit_check(&figures->limit, &account->limits, "account", tokens_estimate,
                             reserve_micros, now_ms, wall_us, denial))
        return false;
    billing_limit_take(key_limit, &key->limits, tokens_estimate, reserve_micros, now_ms);
    billing_limit_take(&figures->limit, &account->limits, tokens_estimate, reserve_micros, now_ms);
    figures->reserved_micros = s_add(figures->reserved_micros, reserve_micros);
    figures->reservations++;
    s_reservation_t *reservation = calloc(1, sizeof *reservation);
    assert(reservation);
    *reservation = (s_reservation_t){.account_id = account->id,
                                     .key_id = key->id,
                                     .micros = reserve_micros,
                                     .tokens = tokens_estimate,
                                     .at_ms = now_ms};
    zhashx_insert(self->reservations, request_id, reservation);
    return true;
}

int64_t billing_book_available(billing_book_t *self, const proto_account_t *account)
{
    billing_account_t *figures = billing_book_account(self, account->id, account->balance_micros);
    return s_sub(
        figures->balance_micros,
        s_add(s_add(figures->reserved_micros, figures->pending_micros), figures->leased_micros));
}

void billing_book_lease_hold(billing_book_t *self, proto_catalog_t *catalog, uint64_t account_id,
                             uint64_t key_id, int64_t delta_micros)
{
    const proto_account_t *entry = catalog ? proto_catalog_account(catalog, account_id) : NULL;
    billing_account_t *account =
        billing_book_account(self, account_id, entry ? entry->balance_micros : 0);
    account->leased_micros = s_add(account->leased_micros, delta_micros);
    if (account->leased_micros < 0)
        account->leased_micros = 0;
    billing_limit_block(&account->limit, s_account_limits(catalog, account_id), 0, 0, 0,
                        delta_micros, 0);
    billing_limit_block(billing_book_key(self, key_id), s_key_limits(catalog, key_id), 0, 0, 0,
                        delta_micros, 0);
}

void billing_book_settle(billing_book_t *self, proto_catalog_t *catalog, const char *request_id,
                         uint64_t account_id, uint64_t key_id, int64_t cost_micros,
                         uint64_t tokens_used, bool leased, uint64_t now_ms, uint64_t wall_us)
{
    bool held = s_release(self, catalog, request_id, &tokens_used, now_ms);
    const proto_account_t *entry = catalog ? proto_catalog_account(catalog, account_id) : NULL;
    billing_account_t *account =
        billing_book_account(self, account_id, entry ? entry->balance_micros : 0);
    account->pending_micros = s_add(account->pending_micros, cost_micros);
    billing_limit_spend(&account->limit, cost_micros, wall_us);
    billing_limit_t *key = billing_book_key(self, key_id);
    billing_limit_spend(key, cost_micros, wall_us);
    if (!held && !leased) {
        //  Admitted elsewhere (another instance before a re-shard, or
        //  before this one restarted): the tokens still count. (A lease's
        //  tokens left the buckets when it was granted.)
        billing_limit_charge_tokens(key, s_key_limits(catalog, key_id), tokens_used, now_ms);
        billing_limit_charge_tokens(&account->limit, s_account_limits(catalog, account_id),
                                    tokens_used, now_ms);
    }
}

void billing_book_load_spend(billing_book_t *self, proto_catalog_t *catalog, uint64_t account_id,
                             uint64_t key_id, int64_t day_micros, int64_t month_micros,
                             uint64_t wall_us)
{
    const proto_account_t *entry = catalog ? proto_catalog_account(catalog, account_id) : NULL;
    billing_account_t *account =
        billing_book_account(self, account_id, entry ? entry->balance_micros : 0);
    billing_limit_spend(&account->limit, 0, wall_us); //  roll to today first
    billing_limit_load(&account->limit, s_add(account->limit.day_micros, day_micros),
                       s_add(account->limit.month_micros, month_micros), wall_us);
    billing_limit_load(billing_book_key(self, key_id), day_micros, month_micros, wall_us);
}

void billing_book_commit(billing_book_t *self, uint64_t account_id, int64_t cost_micros,
                         bool in_balance)
{
    billing_account_t *account = billing_book_find(self, account_id);
    if (!account)
        return;
    account->pending_micros = s_sub(account->pending_micros, cost_micros);
    if (!in_balance)
        account->balance_micros = s_sub(account->balance_micros, cost_micros);
}

size_t billing_book_expire(billing_book_t *self, proto_catalog_t *catalog, uint64_t now_ms,
                           uint64_t max_age_ms)
{
    //  Collect first: deleting from a zhashx while walking it is not safe.
    zlistx_t *old = zlistx_new();
    zlistx_set_duplicator(old, (zlistx_duplicator_fn *)strdup);
    zlistx_set_destructor(old, s_free);
    for (s_reservation_t *reservation = zhashx_first(self->reservations); reservation;
         reservation = zhashx_next(self->reservations))
        if (now_ms > reservation->at_ms && now_ms - reservation->at_ms > max_age_ms)
            zlistx_add_end(old, (void *)zhashx_cursor(self->reservations));
    size_t count = zlistx_size(old);
    for (char *request_id = zlistx_first(old); request_id; request_id = zlistx_next(old))
        s_release(self, catalog, request_id, NULL, now_ms);
    zlistx_destroy(&old);
    return count;
}

void billing_book_rebase(billing_book_t *self, proto_catalog_t *catalog)
{
    for (billing_account_t *account = zhashx_first(self->accounts); account;
         account = zhashx_next(self->accounts)) {
        const proto_account_t *entry = proto_catalog_account(catalog, account->account_id);
        if (entry)
            account->balance_micros = entry->balance_micros;
    }
}

bool billing_book_holds(billing_book_t *self, const char *request_id, uint64_t account_id,
                        uint64_t key_id)
{
    s_reservation_t *reservation = zhashx_lookup(self->reservations, request_id);
    return reservation && reservation->account_id == account_id && reservation->key_id == key_id;
}

size_t billing_book_reservations(billing_book_t *self)
{
    return zhashx_size(self->reservations);
}

size_t billing_book_status(billing_book_t *self, char *out, size_t size)
{
    static const char truncated[] = "],\"accounts_truncated\":true";
    assert(size > 64);
    size_t used = (size_t)snprintf(out, size, "\"accounts\":[");
    bool first = true;
    for (billing_account_t *account = zhashx_first(self->accounts); account;
         account = zhashx_next(self->accounts)) {
        char item[256];
        int length =
            snprintf(item, sizeof item,
                     "%s{\"id\":%" PRIu64 ",\"balance_micros\":%" PRId64
                     ",\"reserved_micros\":%" PRId64 ",\"pending_micros\":%" PRId64
                     ",\"leased_micros\":%" PRId64 ",\"available_micros\":%" PRId64 "}",
                     first ? "" : ",", account->account_id, account->balance_micros,
                     account->reserved_micros, account->pending_micros, account->leased_micros,
                     s_sub(account->balance_micros,
                           s_add(s_add(account->reserved_micros, account->pending_micros),
                                 account->leased_micros)));
        if (used + (size_t)length + sizeof truncated >= size) {
            used += (size_t)snprintf(out + used, size - used, "%s", truncated);
            return used;
        }
        memcpy(out + used, item, (size_t)length + 1);
        used += (size_t)length;
        first = false;
    }
    used += (size_t)snprintf(out + used, size - used, "]");
    return used;
}

//  --------------------------------------------------------------------------
//  Self test

void billing_book_test(bool verbose)
{
    if (verbose)
        printf(" * billing_book: ");
    billing_denial_t denial;
    uint64_t wall = 1709208000ULL * 1000000;
    proto_account_t acct = {.id = 7,
                            .active = true,
                            .balance_micros = 1000,
                            .currency = "USD",
                            .limits = {.daily_micros = -1, .monthly_micros = -1}};
    proto_api_key_t key = {.id = 70,
                           .account_id = 7,
                           .status = "active",
                           .limits = {.daily_micros = -1, .monthly_micros = -1}};
    billing_book_t *book = billing_book_new();
    PROTO_CHECK(billing_book_admit(book, "r1", &acct, &key, 10, 100, 0, wall, &denial));
    acct.balance_micros = 999999; //  the balance is taken at first use only
    PROTO_CHECK(billing_book_admit(book, "r2", &acct, &key, 10, 50, 10, wall, &denial));
    billing_account_t *account = billing_book_find(book, 7);
    PROTO_CHECK(account && account->balance_micros == 1000);
    PROTO_CHECK(account->reserved_micros == 150 && account->reservations == 2);
    PROTO_CHECK(account->limit.in_flight == 2 && billing_book_key(book, 70)->in_flight == 2);
    //  Re-admitting the same request (a re-sent ADMIT) neither adds nor
    //  re-checks: it is admitted already.
    PROTO_CHECK(billing_book_admit(book, "r2", &acct, &key, 10, 60, 10, wall, &denial));
    PROTO_CHECK(account->reserved_micros == 150 && account->reservations == 2);
    PROTO_CHECK(account->limit.in_flight == 2);

    //  Balance: 1000 - 150 reserved = 850 available; 851 is refused, 850 not.
    PROTO_CHECK(!billing_book_admit(book, "r9", &acct, &key, 10, 851, 10, wall, &denial));
    PROTO_CHECK(denial.status == 402 && strcmp(denial.code, "insufficient_balance") == 0);
    PROTO_CHECK(strstr(denial.message, "0.000850 USD") && strstr(denial.message, "0.000851"));
    PROTO_CHECK(account->reservations == 2); //  nothing taken

    //  Settle releases what was reserved, whatever the cost.
    billing_book_settle(book, NULL, "r1", 7, 70, 30, 20, false, 20, wall);
    PROTO_CHECK(account->reserved_micros == 50 && account->pending_micros == 30);
    PROTO_CHECK(account->limit.in_flight == 1 && account->limit.day_micros == 30);
    PROTO_CHECK(billing_book_key(book, 70)->day_micros == 30);
    billing_book_commit(book, 7, 30, false);
    PROTO_CHECK(account->pending_micros == 0 && account->balance_micros == 970);
    //  A SETTLE for a request reserved elsewhere only adds pending.
    billing_book_settle(book, NULL, "elsewhere", 7, 70, 5, 0, false, 20, wall);
    PROTO_CHECK(account->reserved_micros == 50 && account->pending_micros == 5);
    PROTO_CHECK(account->limit.in_flight == 1);
    //  Pending counts against the balance: 970 - 50 - 5 = 915.
    PROTO_CHECK(!billing_book_admit(book, "r9", &acct, &key, 10, 916, 10, wall, &denial));
    //  A catalog read after the ledger wrote "elsewhere" (965) and before
    //  its COMMIT came: the commit leaves the balance as the catalog has it.
    char error[128];
    proto_catalog_t *after = proto_catalog_from_json(
        "{\"accounts\":[{\"id\":7,\"balance_micros\":965}]}", error, sizeof error);
    billing_book_rebase(book, after);
    PROTO_CHECK(account->balance_micros == 965 && account->pending_micros == 5);
    billing_book_commit(book, 7, 5, true);
    PROTO_CHECK(account->balance_micros == 965 && account->pending_micros == 0);
    proto_catalog_destroy(&after);
    account->balance_micros = 970;
    //  A commit for an account never seen is ignored.
    billing_book_commit(book, 99, 5, false);
    PROTO_CHECK(!billing_book_find(book, 99));

    //  Limits: the key allows one request at a time.
    key.limits.concurrency = 1;
    PROTO_CHECK(!billing_book_admit(book, "r3", &acct, &key, 10, 1, 30, wall, &denial));
    PROTO_CHECK(denial.status == 429 && strcmp(denial.code, "concurrency_limit_exceeded") == 0);
    PROTO_CHECK(strstr(denial.message, "key"));
    key.limits.concurrency = 0;
    acct.limits.rpm = 1;
    PROTO_CHECK(billing_book_admit(book, "r3", &acct, &key, 10, 1, 30, wall, &denial));
    PROTO_CHECK(!billing_book_admit(book, "r4", &acct, &key, 10, 1, 30, wall, &denial));
    PROTO_CHECK(strcmp(denial.code, "rate_limit_exceeded") == 0 &&
                strstr(denial.message, "account"));
    PROTO_CHECK(denial.retry_after_ms == 60000);

    //  Expiry releases old reservations only, with their in-flight slots.
    PROTO_CHECK(billing_book_expire(book, NULL, 400, 100) == 2); //  r2 (at 10), r3 (at 30)
    PROTO_CHECK(account->reserved_micros == 0 && account->reservations == 0);
    PROTO_CHECK(account->limit.in_flight == 0 && billing_book_key(book, 70)->in_flight == 0);
    PROTO_CHECK(billing_book_reservations(book) == 0);

    //  Rebase with a catalog that does not know the account keeps it.
    proto_catalog_t *empty = proto_catalog_new_empty();
    billing_book_rebase(book, empty);
    PROTO_CHECK(account->balance_micros == 970);
    proto_catalog_destroy(&empty);

    //  Status is valid JSON and stops before overflowing its buffer.
    char status[2048];
    size_t length = billing_book_status(book, status, sizeof status);
    PROTO_CHECK(length == strlen(status));
    PROTO_CHECK(strstr(status, "\"balance_micros\":970"));
    for (uint64_t id = 100; id < 200; id++)
        billing_book_account(book, id, (int64_t)id);
    length = billing_book_status(book, status, 600);
    PROTO_CHECK(length < 600 && strstr(status, "\"accounts_truncated\":true"));
    //  Saturation instead of wrapping: an absurd reservation on an account
    //  with an absurd balance.
    proto_account_t big_account = acct;
    big_account.id = 9;
    big_account.balance_micros = INT64_MAX;
    big_account.limits = (proto_limits_t){.daily_micros = -1, .monthly_micros = -1};
    PROTO_CHECK(
        billing_book_admit(book, "big", &big_account, &key, 0, INT64_MAX, 0, wall, &denial));
    billing_book_settle(book, NULL, "big2", 9, 70, INT64_MAX, 0, false, 0, wall);
    billing_account_t *big = billing_book_find(book, 9);
    billing_book_status(book, status, sizeof status);
    PROTO_CHECK(big->reserved_micros == INT64_MAX && big->pending_micros == INT64_MAX);
    PROTO_CHECK(!billing_book_admit(book, "big3", &big_account, &key, 0, 1, 0, wall, &denial));
    billing_book_destroy(&book);
    if (verbose)
        printf("OK\n");
}
