#include "billing_book.h"

#include <assert.h>
#include <czmq.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t account_id; //  whose
    int64_t micros;      //  how much is held
    uint64_t at_ms;      //  when (monotonic), for expiry
} s_reservation_t;

struct _billing_book_t {
    zhashx_t *accounts;     //  decimal account id -> billing_account_t*
    zhashx_t *reservations; //  request id -> s_reservation_t*
};

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
    zhashx_destroy(&self->reservations);
    free(self);
    *self_p = NULL;
}

billing_account_t *billing_book_find(billing_book_t *self, uint64_t account_id)
{
    char key[24];
    snprintf(key, sizeof key, "%" PRIu64, account_id);
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
    snprintf(key, sizeof key, "%" PRIu64, account_id);
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

static void s_release(billing_book_t *self, const char *request_id)
{
    s_reservation_t *reservation = zhashx_lookup(self->reservations, request_id);
    if (!reservation)
        return;
    billing_account_t *account = billing_book_find(self, reservation->account_id);
    if (account) {
        account->reserved_micros = s_sub(account->reserved_micros, reservation->micros);
        account->reservations--;
    }
    zhashx_delete(self->reservations, request_id);
}

void billing_book_reserve(billing_book_t *self, const char *request_id, uint64_t account_id,
                          int64_t catalog_balance, int64_t micros, uint64_t now_ms)
{
    s_release(self, request_id);
    billing_account_t *account = billing_book_account(self, account_id, catalog_balance);
    account->reserved_micros = s_add(account->reserved_micros, micros);
    account->reservations++;
    s_reservation_t *reservation = calloc(1, sizeof *reservation);
    assert(reservation);
    *reservation = (s_reservation_t){.account_id = account_id, .micros = micros, .at_ms = now_ms};
    zhashx_insert(self->reservations, request_id, reservation);
}

void billing_book_settle(billing_book_t *self, const char *request_id, uint64_t account_id,
                         int64_t catalog_balance, int64_t cost_micros)
{
    s_release(self, request_id);
    billing_account_t *account = billing_book_account(self, account_id, catalog_balance);
    account->pending_micros = s_add(account->pending_micros, cost_micros);
}

void billing_book_commit(billing_book_t *self, uint64_t account_id, int64_t cost_micros)
{
    billing_account_t *account = billing_book_find(self, account_id);
    if (!account)
        return;
    account->pending_micros = s_sub(account->pending_micros, cost_micros);
    account->balance_micros = s_sub(account->balance_micros, cost_micros);
}

size_t billing_book_expire(billing_book_t *self, uint64_t now_ms, uint64_t max_age_ms)
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
        s_release(self, request_id);
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
        int length = snprintf(item, sizeof item,
                              "%s{\"id\":%" PRIu64 ",\"balance_micros\":%" PRId64
                              ",\"reserved_micros\":%" PRId64 ",\"pending_micros\":%" PRId64
                              ",\"available_micros\":%" PRId64 "}",
                              first ? "" : ",", account->account_id, account->balance_micros,
                              account->reserved_micros, account->pending_micros,
                              s_sub(account->balance_micros,
                                    s_add(account->reserved_micros, account->pending_micros)));
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
    billing_book_t *book = billing_book_new();
    billing_book_reserve(book, "r1", 7, 1000, 100, 0);
    billing_book_reserve(book, "r2", 7, 999999, 50, 10); //  balance taken at first use only
    billing_account_t *account = billing_book_find(book, 7);
    assert(account && account->balance_micros == 1000);
    assert(account->reserved_micros == 150 && account->reservations == 2);
    //  Re-reserving the same request replaces, never adds.
    billing_book_reserve(book, "r2", 7, 0, 60, 10);
    assert(account->reserved_micros == 160 && account->reservations == 2);

    //  Settle releases what was reserved, whatever the cost.
    billing_book_settle(book, "r1", 7, 0, 30);
    assert(account->reserved_micros == 60 && account->pending_micros == 30);
    billing_book_commit(book, 7, 30);
    assert(account->pending_micros == 0 && account->balance_micros == 970);
    //  A SETTLE for a request reserved elsewhere only adds pending.
    billing_book_settle(book, "elsewhere", 7, 0, 5);
    assert(account->reserved_micros == 60 && account->pending_micros == 5);
    //  A commit for an account never seen is ignored.
    billing_book_commit(book, 99, 5);
    assert(!billing_book_find(book, 99));

    //  Expiry releases old reservations only.
    billing_book_reserve(book, "r3", 8, 0, 7, 500);
    assert(billing_book_expire(book, 400, 100) == 1); //  r2 (at 10)
    assert(account->reserved_micros == 0 && account->reservations == 0);
    assert(billing_book_reservations(book) == 1);
    assert(billing_book_expire(book, 700, 100) == 1);
    assert(billing_book_reservations(book) == 0);

    //  Rebase with a catalog that does not know the account keeps it.
    proto_catalog_t *empty = proto_catalog_new_empty();
    billing_book_rebase(book, empty);
    assert(account->balance_micros == 970);
    proto_catalog_destroy(&empty);

    //  Status is valid JSON and stops before overflowing its buffer.
    char status[2048];
    size_t length = billing_book_status(book, status, sizeof status);
    assert(length == strlen(status));
    assert(strstr(status, "\"balance_micros\":970"));
    for (uint64_t id = 100; id < 200; id++)
        billing_book_account(book, id, (int64_t)id);
    length = billing_book_status(book, status, 600);
    assert(length < 600 && strstr(status, "\"accounts_truncated\":true"));
    //  Saturation instead of wrapping.
    billing_book_reserve(book, "big", 9, INT64_MIN, INT64_MAX, 0);
    billing_account_t *big = billing_book_find(book, 9);
    billing_book_status(book, status, sizeof status);
    assert(big->reserved_micros == INT64_MAX);
    billing_book_destroy(&book);
    if (verbose)
        printf("OK\n");
}
