#include "billing_limit.h"
#include "proto_check.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define S_US_PER_DAY 86400000000ULL

//  --------------------------------------------------------------------------
//  UTC calendar (H. Hinnant's days_from_civil / civil_from_days)

static void s_civil(int64_t days, int64_t *year, int64_t *month)
{
    days += 719468;
    int64_t era = (days >= 0 ? days : days - 146096) / 146097;
    int64_t doe = days - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *month = mp < 10 ? mp + 3 : mp - 9;
    *year = yoe + era * 400 + (*month <= 2);
}

static int64_t s_days_from_civil(int64_t year, int64_t month)
{
    year -= month <= 2;
    int64_t era = (year >= 0 ? year : year - 399) / 400;
    int64_t yoe = year - era * 400;
    int64_t doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5; //  day 1
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int64_t billing_limit_day(uint64_t wall_us)
{
    return (int64_t)(wall_us / S_US_PER_DAY);
}

int64_t billing_limit_month(uint64_t wall_us)
{
    int64_t year, month;
    s_civil(billing_limit_day(wall_us), &year, &month);
    return year * 12 + month - 1;
}

uint64_t billing_limit_ms_to_next_day(uint64_t wall_us)
{
    uint64_t next = ((uint64_t)billing_limit_day(wall_us) + 1) * S_US_PER_DAY;
    return (next - wall_us + 999) / 1000;
}

uint64_t billing_limit_ms_to_next_month(uint64_t wall_us)
{
    int64_t month = billing_limit_month(wall_us) + 1;
    int64_t days = s_days_from_civil(month / 12, month % 12 + 1);
    uint64_t next = (uint64_t)days * S_US_PER_DAY;
    return (next - wall_us + 999) / 1000;
}

//  --------------------------------------------------------------------------
//  Buckets

//  Brings a bucket up to now: `limit` units per minute, capacity `limit`.
//  A bucket never used (at 0) starts full; a limit lowered below the level
//  caps it.
static void s_refill(int64_t *level, uint64_t *at_ms, int64_t limit, uint64_t now_ms)
{
    int64_t capacity =
        limit > INT64_MAX / BILLING_LIMIT_SCALE ? INT64_MAX : limit * BILLING_LIMIT_SCALE;
    if (*at_ms == 0)
        *level = capacity;
    else if (now_ms > *at_ms) {
        uint64_t elapsed = now_ms - *at_ms;
        int64_t gained;
        if (__builtin_mul_overflow((int64_t)(elapsed > INT64_MAX ? INT64_MAX : elapsed), limit,
                                   &gained) ||
            __builtin_add_overflow(*level, gained, level))
            *level = capacity;
    }
    if (*level > capacity)
        *level = capacity;
    *at_ms = now_ms > *at_ms ? now_ms : *at_ms;
}

//  Milliseconds until a bucket at `level` holds `need` (both scaled).
static uint64_t s_wait_ms(int64_t level, int64_t need, int64_t limit)
{
    if (level >= need || limit <= 0)
        return 0;
    //  (need - level) / limit, rounded up; need - level cannot overflow by
    //  much: levels are bounded below by minus a settled request's tokens.
    uint64_t missing = (uint64_t)need - (uint64_t)level;
    return missing / (uint64_t)limit + (missing % (uint64_t)limit != 0);
}

static int64_t s_scaled(uint64_t units)
{
    return units > (uint64_t)(INT64_MAX / BILLING_LIMIT_SCALE)
               ? INT64_MAX
               : (int64_t)units * BILLING_LIMIT_SCALE;
}

static void s_roll(billing_limit_t *self, uint64_t wall_us)
{
    int64_t day = billing_limit_day(wall_us);
    int64_t month = billing_limit_month(wall_us);
    if (self->day != day) {
        self->day = day;
        self->day_micros = 0;
    }
    if (self->month != month) {
        self->month = month;
        self->month_micros = 0;
    }
}

static int64_t s_sat_add(int64_t a, int64_t b)
{
    int64_t sum;
    if (__builtin_add_overflow(a, b, &sum))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return sum;
}

//  Dollars-and-cents text of micros for messages: 1234567 -> "1.234567".
static void s_money(int64_t micros, char *out, size_t size)
{
    uint64_t magnitude = micros < 0 ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros;
    snprintf(out, size, "%s%" PRIu64 ".%06" PRIu64, micros < 0 ? "-" : "", magnitude / 1000000,
             magnitude % 1000000);
}

bool billing_limit_check(billing_limit_t *self, const proto_limits_t *limits, const char *who,
                         uint64_t tokens_estimate, int64_t reserve_micros, uint64_t now_ms,
                         uint64_t wall_us, billing_denial_t *denial)
{
    assert(self && limits && denial);
    memset(denial, 0, sizeof *denial);
    denial->status = 429;
    if (limits->concurrency > 0 && self->in_flight >= limits->concurrency) {
        denial->code = "concurrency_limit_exceeded";
        snprintf(denial->message, sizeof denial->message,
                 "Too many concurrent requests for this %s: the limit is %" PRId64
                 " at a time. Retry when one finishes.",
                 who, limits->concurrency);
        denial->retry_after_ms = 1000;
        return false;
    }
    if (limits->rpm > 0) {
        s_refill(&self->rpm_level, &self->rpm_at_ms, limits->rpm, now_ms);
        if (self->rpm_level < BILLING_LIMIT_SCALE) {
            denial->code = "rate_limit_exceeded";
            snprintf(denial->message, sizeof denial->message,
                     "Rate limit reached for this %s: %" PRId64 " requests per minute.", who,
                     limits->rpm);
            denial->retry_after_ms = s_wait_ms(self->rpm_level, BILLING_LIMIT_SCALE, limits->rpm);
            return false;
        }
    }
    if (limits->tpm > 0) {
        s_refill(&self->tpm_level, &self->tpm_at_ms, limits->tpm, now_ms);
        uint64_t need_tokens =
            tokens_estimate < (uint64_t)limits->tpm ? tokens_estimate : (uint64_t)limits->tpm;
        int64_t need = s_scaled(need_tokens);
        //  At least a little room: a request with no estimate still needs
        //  the bucket above zero.
        if (need == 0)
            need = 1;
        if (self->tpm_level < need) {
            denial->code = "token_limit_exceeded";
            snprintf(denial->message, sizeof denial->message,
                     "Token rate limit reached for this %s: %" PRId64 " tokens per minute.", who,
                     limits->tpm);
            denial->retry_after_ms = s_wait_ms(self->tpm_level, need, limits->tpm);
            return false;
        }
    }
    s_roll(self, wall_us);
    int64_t wanted = s_sat_add(self->reserved_micros, reserve_micros);
    char cap[32];
    if (limits->daily_micros >= 0 && s_sat_add(self->day_micros, wanted) > limits->daily_micros &&
        !(reserve_micros == 0 && self->day_micros + self->reserved_micros < limits->daily_micros)) {
        s_money(limits->daily_micros, cap, sizeof cap);
        denial->code = "spend_limit_exceeded";
        snprintf(denial->message, sizeof denial->message,
                 "Daily spend limit of %s reached for this %s; it resets at 00:00 UTC.", cap, who);
        denial->retry_after_ms = billing_limit_ms_to_next_day(wall_us);
        return false;
    }
    if (limits->monthly_micros >= 0 &&
        s_sat_add(self->month_micros, wanted) > limits->monthly_micros &&
        !(reserve_micros == 0 &&
          self->month_micros + self->reserved_micros < limits->monthly_micros)) {
        s_money(limits->monthly_micros, cap, sizeof cap);
        denial->code = "spend_limit_exceeded";
        snprintf(denial->message, sizeof denial->message,
                 "Monthly spend limit of %s reached for this %s; it resets on the 1st, 00:00 UTC.",
                 cap, who);
        denial->retry_after_ms = billing_limit_ms_to_next_month(wall_us);
        return false;
    }
    return true;
}

void billing_limit_take(billing_limit_t *self, const proto_limits_t *limits,
                        uint64_t tokens_estimate, int64_t reserve_micros, uint64_t now_ms)
{
    if (limits->rpm > 0) {
        s_refill(&self->rpm_level, &self->rpm_at_ms, limits->rpm, now_ms);
        self->rpm_level -= BILLING_LIMIT_SCALE;
    }
    if (limits->tpm > 0) {
        s_refill(&self->tpm_level, &self->tpm_at_ms, limits->tpm, now_ms);
        self->tpm_level = s_sat_add(self->tpm_level, -s_scaled(tokens_estimate));
    }
    self->in_flight++;
    self->reserved_micros = s_sat_add(self->reserved_micros, reserve_micros);
}

void billing_limit_release(billing_limit_t *self, const proto_limits_t *limits,
                           uint64_t tokens_estimate, uint64_t tokens_used, int64_t reserve_micros,
                           uint64_t now_ms)
{
    if (self->in_flight > 0)
        self->in_flight--;
    self->reserved_micros = s_sat_add(self->reserved_micros, -reserve_micros);
    if (self->reserved_micros < 0)
        self->reserved_micros = 0;
    if (limits->tpm > 0 && self->tpm_at_ms) {
        s_refill(&self->tpm_level, &self->tpm_at_ms, limits->tpm, now_ms);
        //  Give back the estimate, take what was used.
        self->tpm_level = s_sat_add(self->tpm_level, s_scaled(tokens_estimate));
        self->tpm_level = s_sat_add(self->tpm_level, -s_scaled(tokens_used));
        int64_t capacity = s_scaled((uint64_t)limits->tpm);
        if (self->tpm_level > capacity)
            self->tpm_level = capacity;
    }
}

void billing_limit_room(billing_limit_t *self, const proto_limits_t *limits, uint64_t now_ms,
                        uint64_t wall_us, billing_room_t *room)
{
    *room = (billing_room_t){.micros = -1, .requests = -1, .tokens = -1, .slots = -1};
    s_roll(self, wall_us);
    int64_t committed = s_sat_add(self->reserved_micros, 0);
    if (limits->daily_micros >= 0)
        room->micros = limits->daily_micros - s_sat_add(self->day_micros, committed);
    if (limits->monthly_micros >= 0) {
        int64_t month = limits->monthly_micros - s_sat_add(self->month_micros, committed);
        if (room->micros < 0 || month < room->micros)
            room->micros = month;
    }
    if (room->micros < -1)
        room->micros = 0;
    if (limits->rpm > 0) {
        s_refill(&self->rpm_level, &self->rpm_at_ms, limits->rpm, now_ms);
        room->requests = self->rpm_level > 0 ? self->rpm_level / BILLING_LIMIT_SCALE : 0;
    }
    if (limits->tpm > 0) {
        s_refill(&self->tpm_level, &self->tpm_at_ms, limits->tpm, now_ms);
        room->tokens = self->tpm_level > 0 ? self->tpm_level / BILLING_LIMIT_SCALE : 0;
    }
    if (limits->concurrency > 0)
        room->slots =
            limits->concurrency > self->in_flight ? limits->concurrency - self->in_flight : 0;
}

//  Moves a bucket by `units` whole units (taken when positive, given back
//  when negative, and then never above capacity).
static void s_bucket_take(int64_t *level, uint64_t *at_ms, int64_t limit, int64_t units,
                          uint64_t now_ms)
{
    if (limit <= 0 || units == 0)
        return;
    s_refill(level, at_ms, limit, now_ms);
    int64_t scaled = units > 0 ? s_scaled((uint64_t)units) : -s_scaled((uint64_t)-units);
    *level = s_sat_add(*level, -scaled);
    int64_t capacity = s_scaled((uint64_t)limit);
    if (*level > capacity)
        *level = capacity;
}

void billing_limit_block(billing_limit_t *self, const proto_limits_t *limits, int64_t requests,
                         int64_t tokens, int64_t slots, int64_t micros, uint64_t now_ms)
{
    s_bucket_take(&self->rpm_level, &self->rpm_at_ms, limits->rpm, requests, now_ms);
    s_bucket_take(&self->tpm_level, &self->tpm_at_ms, limits->tpm, tokens, now_ms);
    self->in_flight += slots;
    if (self->in_flight < 0)
        self->in_flight = 0;
    self->reserved_micros = s_sat_add(self->reserved_micros, micros);
    if (self->reserved_micros < 0)
        self->reserved_micros = 0;
}

void billing_limit_charge_tokens(billing_limit_t *self, const proto_limits_t *limits,
                                 uint64_t tokens_used, uint64_t now_ms)
{
    if (limits->tpm <= 0)
        return;
    s_refill(&self->tpm_level, &self->tpm_at_ms, limits->tpm, now_ms);
    self->tpm_level = s_sat_add(self->tpm_level, -s_scaled(tokens_used));
}

void billing_limit_spend(billing_limit_t *self, int64_t cost_micros, uint64_t wall_us)
{
    s_roll(self, wall_us);
    self->day_micros = s_sat_add(self->day_micros, cost_micros);
    self->month_micros = s_sat_add(self->month_micros, cost_micros);
}

void billing_limit_load(billing_limit_t *self, int64_t day_micros, int64_t month_micros,
                        uint64_t wall_us)
{
    s_roll(self, wall_us);
    self->day_micros = day_micros;
    self->month_micros = month_micros;
}

//  --------------------------------------------------------------------------
//  Self test

void billing_limit_test(bool verbose)
{
    if (verbose)
        printf(" * billing_limit: ");
    //  Calendar: 2024-02-29 12:00 UTC is day 19782, month 2024*12+1.
    uint64_t leap = 1709208000ULL * 1000000;
    PROTO_CHECK(billing_limit_day(leap) == 19782);
    PROTO_CHECK(billing_limit_month(leap) == 2024 * 12 + 1);
    PROTO_CHECK(billing_limit_ms_to_next_day(leap) == 12 * 3600 * 1000ULL);
    PROTO_CHECK(billing_limit_ms_to_next_month(leap) == 12 * 3600 * 1000ULL);
    uint64_t new_year_eve = 1735689599ULL * 1000000; //  2024-12-31 23:59:59
    PROTO_CHECK(billing_limit_month(new_year_eve) == 2024 * 12 + 11);
    PROTO_CHECK(billing_limit_month(new_year_eve + 1000000) == 2025 * 12);
    PROTO_CHECK(billing_limit_ms_to_next_month(new_year_eve) == 1000);
    PROTO_CHECK(billing_limit_ms_to_next_month(0) == 31ULL * 86400 * 1000);

    billing_denial_t denial;
    uint64_t wall = leap;
    //  rpm 2: two pass at once, the third waits 30 s (half a minute for one).
    proto_limits_t limits = {.rpm = 2, .daily_micros = -1, .monthly_micros = -1};
    billing_limit_t key = {0};
    for (int i = 0; i < 2; i++) {
        PROTO_CHECK(billing_limit_check(&key, &limits, "key", 10, 0, 1000, wall, &denial));
        billing_limit_take(&key, &limits, 10, 0, 1000);
    }
    PROTO_CHECK(!billing_limit_check(&key, &limits, "key", 10, 0, 1000, wall, &denial));
    PROTO_CHECK(denial.status == 429 && strcmp(denial.code, "rate_limit_exceeded") == 0);
    PROTO_CHECK(denial.retry_after_ms == 30000);
    PROTO_CHECK(strstr(denial.message, "2 requests per minute"));
    PROTO_CHECK(!billing_limit_check(&key, &limits, "key", 10, 0, 21000, wall, &denial));
    PROTO_CHECK(denial.retry_after_ms == 10000);
    PROTO_CHECK(billing_limit_check(&key, &limits, "key", 10, 0, 31000, wall, &denial));
    PROTO_CHECK(key.in_flight == 2);

    //  Concurrency 1: the second waits for the first to be released.
    limits = (proto_limits_t){.concurrency = 1, .daily_micros = -1, .monthly_micros = -1};
    key = (billing_limit_t){0};
    billing_limit_take(&key, &limits, 0, 100, 0);
    PROTO_CHECK(!billing_limit_check(&key, &limits, "account", 0, 0, 0, wall, &denial));
    PROTO_CHECK(strcmp(denial.code, "concurrency_limit_exceeded") == 0 &&
                strstr(denial.message, "account"));
    billing_limit_release(&key, &limits, 0, 0, 100, 0);
    PROTO_CHECK(key.in_flight == 0 && key.reserved_micros == 0);
    PROTO_CHECK(billing_limit_check(&key, &limits, "account", 0, 0, 0, wall, &denial));

    //  tpm 1000: an estimate of 800 passes, leaving 200; the settlement
    //  says 1500 were used: the bucket is at -500 and a request of 100
    //  waits (600 tokens at 1000/min = 36 s).
    limits = (proto_limits_t){.tpm = 1000, .daily_micros = -1, .monthly_micros = -1};
    key = (billing_limit_t){0};
    PROTO_CHECK(billing_limit_check(&key, &limits, "key", 800, 0, 5, wall, &denial));
    billing_limit_take(&key, &limits, 800, 0, 5);
    PROTO_CHECK(key.tpm_level == 200 * BILLING_LIMIT_SCALE);
    billing_limit_release(&key, &limits, 800, 1500, 0, 5);
    PROTO_CHECK(key.tpm_level == -500 * BILLING_LIMIT_SCALE);
    PROTO_CHECK(!billing_limit_check(&key, &limits, "key", 100, 0, 5, wall, &denial));
    PROTO_CHECK(strcmp(denial.code, "token_limit_exceeded") == 0 && denial.retry_after_ms == 36000);
    //  A request larger than the whole limit needs a full bucket, not more.
    PROTO_CHECK(billing_limit_check(&key, &limits, "key", 5000, 0, 5 + 90000, wall, &denial));
    //  Bucket full after a long pause, never above capacity.
    PROTO_CHECK(billing_limit_check(&key, &limits, "key", 1000, 0, 10000000, wall, &denial));
    PROTO_CHECK(key.tpm_level == 1000 * BILLING_LIMIT_SCALE);

    //  Daily cap 1000 micros: 900 spent + 50 reserved + 100 wanted > 1000.
    limits = (proto_limits_t){.daily_micros = 1000, .monthly_micros = -1};
    key = (billing_limit_t){0};
    billing_limit_spend(&key, 900, wall);
    billing_limit_take(&key, &limits, 0, 50, 0);
    PROTO_CHECK(billing_limit_check(&key, &limits, "key", 0, 50, 0, wall, &denial));
    PROTO_CHECK(!billing_limit_check(&key, &limits, "key", 0, 100, 0, wall, &denial));
    PROTO_CHECK(strcmp(denial.code, "spend_limit_exceeded") == 0);
    PROTO_CHECK(denial.retry_after_ms == billing_limit_ms_to_next_day(wall));
    PROTO_CHECK(strstr(denial.message, "0.001000"));
    //  A free request passes while the cap is not reached...
    PROTO_CHECK(billing_limit_check(&key, &limits, "key", 0, 0, 0, wall, &denial));
    //  ...and not once it is.
    billing_limit_spend(&key, 60, wall);
    PROTO_CHECK(!billing_limit_check(&key, &limits, "key", 0, 0, 0, wall, &denial));
    //  The next day starts from zero.
    PROTO_CHECK(billing_limit_check(&key, &limits, "key", 0, 100, 0, wall + S_US_PER_DAY, &denial));
    PROTO_CHECK(key.day_micros == 0 && key.month_micros == 0); //  Feb 29 + 1 day: March
    //  Monthly cap, loaded from the database at start.
    limits = (proto_limits_t){.daily_micros = -1, .monthly_micros = 5000};
    billing_limit_load(&key, 0, 4990, wall);
    PROTO_CHECK(!billing_limit_check(&key, &limits, "key", 0, 100, 0, wall, &denial));
    PROTO_CHECK(strstr(denial.message, "Monthly") && denial.retry_after_ms == 12 * 3600 * 1000ULL);
    //  A cap of 0 refuses everything that costs.
    limits = (proto_limits_t){.daily_micros = 0, .monthly_micros = -1};
    key = (billing_limit_t){0};
    PROTO_CHECK(!billing_limit_check(&key, &limits, "key", 0, 1, 0, wall, &denial));
    //  No limits: always fits.
    limits = (proto_limits_t){.daily_micros = -1, .monthly_micros = -1};
    PROTO_CHECK(billing_limit_check(&key, &limits, "key", UINT64_MAX, INT64_MAX, 0, wall, &denial));
    if (verbose)
        printf("OK\n");
}
