#include "proto_price.h"
#include "proto_check.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

typedef unsigned __int128 s_u128;

#define S_MILLION 1000000u

//  Prices and multipliers are never negative in the schema (CHECK >= 0); a
//  negative one here would be our bug or a hand-edited row, and charging a
//  negative amount is worse than charging nothing.
static uint64_t s_nonneg(int64_t value)
{
    return value > 0 ? (uint64_t)value : 0;
}

//  sum += a * b, false on overflow. a * b itself cannot overflow 128 bits.
static bool s_add_product(s_u128 *sum, uint64_t a, uint64_t b)
{
    s_u128 product = (s_u128)a * b;
    return !__builtin_add_overflow(*sum, product, sum);
}

static s_u128 s_ceil_million(s_u128 value)
{
    return value / S_MILLION + (value % S_MILLION != 0);
}

static bool s_long_context(const proto_model_t *model, uint64_t tokens_in)
{
    return model->long_context_threshold > 0 && tokens_in > (uint64_t)model->long_context_threshold;
}

int proto_price_cost(const proto_model_t *model, const proto_price_usage_t *usage,
                     int64_t multiplier_ppm, int64_t *cost_micros)
{
    assert(model && usage && cost_micros);
    *cost_micros = 0;
    //  The whole prompt, saturating: beyond 2^64 it is above any threshold.
    uint64_t prompt = 0;
    if (__builtin_add_overflow(usage->tokens_in, usage->tokens_cache_read, &prompt) ||
        __builtin_add_overflow(prompt, usage->tokens_cache_write, &prompt))
        prompt = UINT64_MAX;
    if (usage->status >= 400 && prompt == 0 && usage->tokens_out == 0)
        return 0;
    bool long_context = s_long_context(model, prompt);
    uint64_t price_in =
        s_nonneg(long_context ? model->long_price_in_micros : model->price_in_micros);
    uint64_t price_out =
        s_nonneg(long_context ? model->long_price_out_micros : model->price_out_micros);

    //  The 1-hour writes are part of all writes; a sender that says more
    //  were 1-hour than were written at all is held to the total.
    uint64_t write_1h = usage->tokens_cache_write_1h < usage->tokens_cache_write
                            ? usage->tokens_cache_write_1h
                            : usage->tokens_cache_write;
    s_u128 sum = 0;
    if (!s_add_product(&sum, usage->tokens_in, price_in) ||
        !s_add_product(&sum, usage->tokens_cache_read, s_nonneg(model->price_cache_read_micros)) ||
        !s_add_product(&sum, usage->tokens_cache_write - write_1h,
                       s_nonneg(model->price_cache_write_micros)) ||
        !s_add_product(&sum, write_1h, s_nonneg(model->price_cache_write_1h_micros)) ||
        !s_add_product(&sum, usage->tokens_out, price_out))
        return -1;
    s_u128 base = s_ceil_million(sum) + s_nonneg(model->price_request_micros);
    base += (s_u128)usage->images * s_nonneg(model->price_image_micros);
    if (base > INT64_MAX)
        return -1;
    //  base < 2^63 and the multiplier < 2^63, so the product fits 126 bits.
    s_u128 cost = s_ceil_million(base * s_nonneg(multiplier_ppm));
    if (cost > INT64_MAX)
        return -1;
    *cost_micros = (int64_t)cost;
    return 0;
}

int64_t proto_price_reserve(const proto_model_t *model, uint64_t tokens_in, uint64_t tokens_out)
{
    assert(model);
    bool long_context = s_long_context(model, tokens_in);
    uint64_t price_in =
        s_nonneg(long_context ? model->long_price_in_micros : model->price_in_micros);
    uint64_t price_out =
        s_nonneg(long_context ? model->long_price_out_micros : model->price_out_micros);
    if (!tokens_out)
        tokens_out = model->max_output_tokens > 0 ? (uint64_t)model->max_output_tokens
                                                  : PROTO_PRICE_RESERVE_OUTPUT_TOKENS;
    s_u128 sum = 0;
    if (!s_add_product(&sum, tokens_in, price_in) || !s_add_product(&sum, tokens_out, price_out))
        return INT64_MAX;
    s_u128 reserve = s_ceil_million(sum) + s_nonneg(model->price_request_micros);
    return reserve > INT64_MAX ? INT64_MAX : (int64_t)reserve;
}

bool proto_price_output_allowed(const proto_model_t *model, uint64_t tokens_out)
{
    assert(model);
    return model->max_output_tokens <= 0 || tokens_out <= (uint64_t)model->max_output_tokens;
}

int64_t proto_price_reserve_images(const proto_model_t *model, uint64_t tokens_in,
                                   uint64_t tokens_out, uint64_t images)
{
    s_u128 reserve = (s_u128)proto_price_reserve(model, tokens_in, tokens_out) +
                     (s_u128)images * s_nonneg(model->price_image_micros);
    return reserve > INT64_MAX ? INT64_MAX : (int64_t)reserve;
}

int64_t proto_price_scale(int64_t value, int64_t multiplier_ppm)
{
    //  Both < 2^63: the product fits 126 bits.
    s_u128 scaled = s_ceil_million((s_u128)s_nonneg(value) * s_nonneg(multiplier_ppm));
    return scaled > INT64_MAX ? INT64_MAX : (int64_t)scaled;
}

//  --------------------------------------------------------------------------
//  Self test

static int64_t s_cost(const proto_model_t *model, uint64_t in, uint64_t out, uint64_t read,
                      uint64_t write, uint64_t status, int64_t multiplier)
{
    proto_price_usage_t usage = {.tokens_in = in,
                                 .tokens_out = out,
                                 .tokens_cache_read = read,
                                 .tokens_cache_write = write,
                                 .status = status};
    int64_t cost = -1;
    int rc = proto_price_cost(model, &usage, multiplier, &cost);
    return rc == 0 ? cost : -1;
}

//  Images: billed per image (docs/billing.md "Images").
static void s_test_images(void)
{
    const int64_t one = PROTO_PRICE_PPM_ONE;
    int64_t cost = -1;
    //  n x the price per image, after the token part, then the
    //  multiplier; reserved the same way.
    proto_model_t painter = {.price_image_micros = 40000, .price_request_micros = 7};
    proto_price_usage_t drawn = {.images = 3, .status = 200};
    PROTO_CHECK(proto_price_cost(&painter, &drawn, one, &cost) == 0 && cost == 120007);
    PROTO_CHECK(proto_price_cost(&painter, &drawn, 500000, &cost) == 0 && cost == 60004);
    PROTO_CHECK(proto_price_reserve_images(&painter, 10, 0, 3) == 120007);
    painter.price_image_micros = -1; //  NULL: serves no images, charges none
    PROTO_CHECK(proto_price_cost(&painter, &drawn, one, &cost) == 0 && cost == 7);
    painter.price_image_micros = INT64_MAX;
    PROTO_CHECK(proto_price_cost(&painter, &drawn, one, &cost) == -1);
    PROTO_CHECK(proto_price_reserve_images(&painter, 0, 0, 2) == INT64_MAX);
}

//  Names providers list that no logical model has (proto_catalog_add_unlisted):
//  admitted at the highest default price, charged at the serving provider's.
static void s_test_unlisted(void)
{
    char error[256];
    proto_catalog_t *catalog = proto_catalog_from_json(
        "{\"providers\":["
        "{\"id\":1,\"name\":\"cheap\",\"default_price_in_micros\":1000000,"
        "\"default_price_out_micros\":2000000},"
        "{\"id\":2,\"name\":\"dear\",\"default_price_in_micros\":3000000,"
        "\"default_price_out_micros\":1000000,\"default_price_cache_read_micros\":500000,"
        "\"default_price_request_micros\":9,\"blocked_models\":[\"*-blocked\"]},"
        "{\"id\":3,\"name\":\"unpriced\"},"
        "{\"id\":4,\"name\":\"off\",\"status\":\"disabled\","
        "\"default_price_in_micros\":1,\"default_price_out_micros\":1},"
        "{\"id\":5,\"name\":\"byok\",\"account_id\":7,"
        "\"default_price_in_micros\":1,\"default_price_out_micros\":1}],"
        "\"models\":[{\"id\":1,\"name\":\"logical\",\"price_in_micros\":5}],"
        "\"provider_models\":["
        "{\"provider_id\":1,\"name\":\"both\",\"first_seen_s\":200},"
        "{\"provider_id\":2,\"name\":\"both\",\"first_seen_s\":100},"
        "{\"provider_id\":1,\"name\":\"logical\"},{\"provider_id\":1,\"name\":\"dear/logical\"},"
        "{\"provider_id\":1,\"name\":\"x-blocked\"},{\"provider_id\":2,\"name\":\"x-blocked\"},"
        "{\"provider_id\":3,\"name\":\"only-unpriced\"},{\"provider_id\":3,\"name\":\"both\"},"
        "{\"provider_id\":4,\"name\":\"only-off\"},{\"provider_id\":5,\"name\":\"only-byok\"}]}",
        error, sizeof error);
    PROTO_CHECK(catalog);
    proto_catalog_add_unlisted(catalog, true);
    //  "logical" is the logical model; "x-blocked" only where "dear" blocks
    //  it; nothing of the unpriced, disabled or account-owned providers.
    PROTO_CHECK(proto_catalog_unlisted_count(catalog) == 2);
    const proto_model_t *both = proto_catalog_model_named(catalog, "both");
    PROTO_CHECK(both && both->unlisted && both->active && both->id == 0);
    PROTO_CHECK(proto_catalog_unlisted_at(catalog, 0) == both);
    PROTO_CHECK(strcmp(proto_catalog_unlisted_at(catalog, 1)->name, "x-blocked") == 0);
    PROTO_CHECK(!proto_catalog_model_named(catalog, "only-unpriced"));
    PROTO_CHECK(!proto_catalog_model_named(catalog, "only-off"));
    PROTO_CHECK(!proto_catalog_model_named(catalog, "only-byok"));
    PROTO_CHECK(!proto_catalog_model_named(catalog, "logical")->unlisted);
    //  Routing never sees it as a logical model.
    PROTO_CHECK(!proto_catalog_model_by_name(catalog, "both"));
    PROTO_CHECK(both->created_s == 100 && both->price_image_micros == -1);
    //  The highest of each price: in 3 (dear), out 2 (cheap), cache read
    //  1 (cheap's input) over 0.5, cache write 3 (dear's input), request 9.
    PROTO_CHECK(both->price_in_micros == 3000000 && both->price_out_micros == 2000000);
    PROTO_CHECK(both->price_cache_read_micros == 1000000);
    PROTO_CHECK(both->price_cache_write_micros == 3000000);
    PROTO_CHECK(both->price_cache_write_1h_micros == 3000000 && both->price_request_micros == 9);
    PROTO_CHECK(proto_price_reserve(both, 1000, 1000) == 3000 + 2000 + 9);
    //  A pin of an unlisted name is that name.
    PROTO_CHECK(proto_catalog_model_for_client(catalog, "cheap/both") == both);
    PROTO_CHECK(!proto_catalog_model_for_client(catalog, "nosuch/both"));
    //  A listed name routing reads as a pin ("dear/logical": provider dear,
    //  logical model "logical") is not an unlisted name: it is admitted and
    //  priced as routing serves it, the logical model.
    PROTO_CHECK(!proto_catalog_model_named(catalog, "dear/logical"));
    PROTO_CHECK(proto_catalog_model_for_client(catalog, "dear/logical") ==
                proto_catalog_model_named(catalog, "logical"));
    //  Charged at the serving provider's prices; the highest where it has none.
    proto_model_t scratch;
    proto_price_usage_t usage = {.tokens_in = 1000, .tokens_out = 1000, .status = 200};
    int64_t cost = -1;
    const proto_model_t *priced = proto_catalog_serving_price(catalog, both, 1, &scratch);
    PROTO_CHECK(priced == &scratch &&
                proto_price_cost(priced, &usage, PROTO_PRICE_PPM_ONE, &cost) == 0 &&
                cost == 1000 + 2000);
    priced = proto_catalog_serving_price(catalog, both, 2, &scratch);
    PROTO_CHECK(proto_price_cost(priced, &usage, PROTO_PRICE_PPM_ONE, &cost) == 0 &&
                cost == 3000 + 1000 + 9);
    PROTO_CHECK(proto_catalog_serving_price(catalog, both, 3, &scratch) == both);
    PROTO_CHECK(proto_catalog_serving_price(catalog, both, 99, &scratch) == both);
    //  Prices that did not admit the name (a disabled provider's, an
    //  account's own) are not charged: the highest is.
    PROTO_CHECK(proto_catalog_serving_price(catalog, both, 4, &scratch) == both);
    PROTO_CHECK(proto_catalog_serving_price(catalog, both, 5, &scratch) == both);
    //  Gone from the catalog since admission: the serving provider's default
    //  prices still apply; with none, nothing does.
    priced = proto_catalog_serving_price(catalog, NULL, 1, &scratch);
    PROTO_CHECK(priced == &scratch && priced->price_image_micros == -1 &&
                proto_price_cost(priced, &usage, PROTO_PRICE_PPM_ONE, &cost) == 0 &&
                cost == 1000 + 2000);
    PROTO_CHECK(!proto_catalog_serving_price(catalog, NULL, 3, &scratch));
    PROTO_CHECK(!proto_catalog_serving_price(catalog, NULL, 99, &scratch));
    const proto_model_t *logical = proto_catalog_model_named(catalog, "logical");
    PROTO_CHECK(proto_catalog_serving_price(catalog, logical, 1, &scratch) == logical);
    proto_catalog_destroy(&catalog);

    //  Zero-config routing off: no unlisted names at all.
    catalog = proto_catalog_from_json(
        "{\"providers\":[{\"id\":1,\"name\":\"p\",\"default_price_in_micros\":1,"
        "\"default_price_out_micros\":1}],\"provider_models\":[{\"provider_id\":1,\"name\":\"n\"}]"
        "}",
        error, sizeof error);
    PROTO_CHECK(catalog);
    proto_catalog_add_unlisted(catalog, false);
    PROTO_CHECK(proto_catalog_unlisted_count(catalog) == 0 &&
                !proto_catalog_model_for_client(catalog, "n"));
    proto_catalog_destroy(&catalog);
}

void proto_price_test(bool verbose)
{
    if (verbose)
        printf(" * proto_price: ");
    //  $2.50 / $10 per million, cache read $1.25, cache write $3.125.
    proto_model_t model = {.name = "gpt-test",
                           .active = true,
                           .price_in_micros = 2500000,
                           .price_out_micros = 10000000,
                           .price_cache_read_micros = 1250000,
                           .price_cache_write_micros = 3125000};
    model.long_price_in_micros = model.price_in_micros;
    model.long_price_out_micros = model.price_out_micros;
    const int64_t one = PROTO_PRICE_PPM_ONE;

    //  Exact: 1000 in x 2.5 + 500 out x 10 = 2500 + 5000 micros.
    PROTO_CHECK(s_cost(&model, 1000, 500, 0, 0, 200, one) == 7500);
    //  Rounding up once: 1 input token = 2.5 micros -> 3, and 1 in + 1 out
    //  = 12.5 -> 13 (not 3 + 10).
    PROTO_CHECK(s_cost(&model, 1, 0, 0, 0, 200, one) == 3);
    PROTO_CHECK(s_cost(&model, 1, 1, 0, 0, 200, one) == 13);
    PROTO_CHECK(s_cost(&model, 0, 0, 0, 0, 200, one) == 0);
    //  Cache tokens are apart from tokens_in (proto_usage.h): 300 uncached,
    //  600 read, 100 written: 300 x 2.5 + 600 x 1.25 + 100 x 3.125 = 750 +
    //  750 + 312.5, rounded up once.
    PROTO_CHECK(s_cost(&model, 300, 0, 600, 100, 200, one) == 1813);
    PROTO_CHECK(s_cost(&model, 0, 0, 600, 0, 200, one) == 750);
    //  A failed request that read the cache used tokens: it is charged.
    PROTO_CHECK(s_cost(&model, 0, 0, 600, 0, 500, one) == 750);
    //  Per-request price is added after the token rounding.
    model.price_request_micros = 100;
    PROTO_CHECK(s_cost(&model, 1, 0, 0, 0, 200, one) == 103);
    //  A failed request with no tokens costs nothing, not even per request;
    //  a failed one that used tokens is charged for them.
    PROTO_CHECK(s_cost(&model, 0, 0, 0, 0, 502, one) == 0);
    PROTO_CHECK(s_cost(&model, 0, 0, 0, 0, 200, one) == 100);
    PROTO_CHECK(s_cost(&model, 1000, 10, 0, 0, 500, one) == 2500 + 100 + 100);
    model.price_request_micros = 0;

    //  Multiplier: 0 -> free; half price rounds up; 1.5x.
    PROTO_CHECK(s_cost(&model, 1000, 500, 0, 0, 200, 0) == 0);
    PROTO_CHECK(s_cost(&model, 1, 0, 0, 0, 200, 500000) == 2); //  ceil(3 x 0.5)
    PROTO_CHECK(s_cost(&model, 1000, 500, 0, 0, 200, 1500000) == 11250);
    PROTO_CHECK(s_cost(&model, 1000, 500, 0, 0, 200, -5) == 0);

    //  Long context: above the threshold both in and out use the long prices.
    model.long_context_threshold = 200000;
    model.long_price_in_micros = 5000000;
    model.long_price_out_micros = 15000000;
    PROTO_CHECK(s_cost(&model, 200000, 1000, 0, 0, 200, one) == 500000 + 10000);
    PROTO_CHECK(s_cost(&model, 200001, 1000, 0, 0, 200, one) == 1000005 + 15000);
    //  The threshold counts the whole prompt, cache included; cache prices
    //  do not change with the tier: 1 x 5 + 200000 x 1.25.
    PROTO_CHECK(s_cost(&model, 1, 0, 200000, 0, 200, one) == 250005);
    PROTO_CHECK(s_cost(&model, 1, 0, 199999, 0, 200, one) == 250002); //  ceil(2.5 + 249998.75)

    //  Overflow: a product beyond int64 is an error, not a wrapped cost.
    PROTO_CHECK(s_cost(&model, UINT64_MAX, UINT64_MAX, 0, 0, 200, one) == -1);
    PROTO_CHECK(s_cost(&model, 0, 0, UINT64_MAX, UINT64_MAX, 200, one) == -1);
    //  The whole prompt saturates instead of wrapping below the threshold.
    PROTO_CHECK(s_cost(&model, UINT64_MAX, 0, UINT64_MAX, 0, 200, one) == -1);
    proto_model_t pricey = model;
    pricey.long_context_threshold = 0;
    pricey.price_in_micros = INT64_MAX;
    pricey.price_out_micros = INT64_MAX;
    pricey.price_cache_read_micros = INT64_MAX;
    pricey.price_cache_write_micros = INT64_MAX;
    //  Near 2^128 in the sum (the checked add is defensive: cache tokens
    //  share tokens_in's 64 bits, so the terms stay just below 2^128).
    PROTO_CHECK(s_cost(&pricey, UINT64_MAX, UINT64_MAX, UINT64_MAX / 2, UINT64_MAX / 2, 200, one) ==
                -1);
    //  Largest that fits: base = INT64_MAX micros at 1x.
    proto_model_t per_request = {.price_request_micros = INT64_MAX};
    PROTO_CHECK(s_cost(&per_request, 0, 0, 0, 0, 200, one) == INT64_MAX);
    PROTO_CHECK(s_cost(&per_request, 0, 0, 0, 0, 200, one + 1) == -1);
    PROTO_CHECK(s_cost(&per_request, 0, 0, 0, 0, 200, INT64_MAX) == -1);
    //  A big but legal bill: 10^12 tokens at $1000/M = $10^9 = 10^15 micros.
    proto_model_t dear = {.price_in_micros = 1000000000};
    PROTO_CHECK(s_cost(&dear, 1000000000000ull, 0, 0, 0, 200, one) == 1000000000000000ll);

    //  1-hour cache writes are part of all writes, at their own price: 100
    //  written, 40 of them for 1 hour at $6.25 (twice the 5-minute $3.125):
    //  60 x 3.125 + 40 x 6.25 = 187.5 + 250, rounded up once.
    model.long_context_threshold = 0;
    model.price_cache_write_1h_micros = 6250000;
    proto_price_usage_t hour = {
        .tokens_cache_write = 100, .tokens_cache_write_1h = 40, .status = 200};
    int64_t cost = -1;
    PROTO_CHECK(proto_price_cost(&model, &hour, one, &cost) == 0 && cost == 438);
    //  More 1-hour writes than writes: held to the total (all 1-hour).
    hour.tokens_cache_write_1h = 1000;
    PROTO_CHECK(proto_price_cost(&model, &hour, one, &cost) == 0 && cost == 625);
    //  None for 1 hour: the 5-minute price, as before the field existed.
    hour.tokens_cache_write_1h = 0;
    PROTO_CHECK(proto_price_cost(&model, &hour, one, &cost) == 0 && cost == 313);
    //  The 1-hour part counts in the whole prompt for the long-context tier.
    model.long_context_threshold = 99;
    hour.tokens_cache_write_1h = 50;
    hour.tokens_in = 1;
    PROTO_CHECK(proto_price_cost(&model, &hour, one, &cost) == 0 &&
                cost == 474); //  5 + 156.25 + 312.5
    model.long_context_threshold = 200000;

    //  Multipliers combined and estimates scaled: ceil(a x b / 1e6).
    PROTO_CHECK(proto_price_scale(500000, 500000) == 250000);
    PROTO_CHECK(proto_price_scale(one, 0) == 0 && proto_price_scale(0, one) == 0);
    PROTO_CHECK(proto_price_scale(333333, 500000) == 166667); //  166666.5 rounded up
    PROTO_CHECK(proto_price_scale(40963, 1500000) == 61445);  //  61444.5 rounded up
    PROTO_CHECK(proto_price_scale(INT64_MAX, INT64_MAX) == INT64_MAX);
    PROTO_CHECK(proto_price_scale(-5, one) == 0 && proto_price_scale(5, -1) == 0);

    //  Reservation: tokens_in at input price + 4096 out at output price.
    proto_model_t plain = {.price_in_micros = 2500000, .price_out_micros = 10000000};
    PROTO_CHECK(proto_price_reserve(&plain, 0, 0) == 40960);
    PROTO_CHECK(proto_price_reserve(&plain, 1, 0) == 40963);
    PROTO_CHECK(proto_price_reserve(&model, 300000, 0) == 1500000 + 61440);
    PROTO_CHECK(proto_price_reserve(&pricey, UINT64_MAX, 0) == INT64_MAX);
    //  The request's own output limit replaces the default: max_tokens 100.
    PROTO_CHECK(proto_price_reserve(&plain, 0, 100) == 1000);
    //  A model's max_output_tokens replaces the 4096 when the request gives
    //  none: 100,000 x 10 = 1,000,000 micros; the request's own limit
    //  still wins below it, and a limit above it is not allowed.
    plain.max_output_tokens = 100000;
    PROTO_CHECK(proto_price_reserve(&plain, 0, 0) == 1000000);
    PROTO_CHECK(proto_price_reserve(&plain, 1, 0) == 1000003);
    PROTO_CHECK(proto_price_reserve(&plain, 0, 100) == 1000);
    PROTO_CHECK(proto_price_output_allowed(&plain, 0));
    PROTO_CHECK(proto_price_output_allowed(&plain, 100000));
    PROTO_CHECK(!proto_price_output_allowed(&plain, 100001));
    plain.max_output_tokens = 0;
    PROTO_CHECK(proto_price_output_allowed(&plain, UINT64_MAX));
    plain.max_output_tokens = INT64_MAX;
    PROTO_CHECK(proto_price_reserve(&plain, 0, 0) == INT64_MAX); //  saturates
    plain.max_output_tokens = 0;

    s_test_images();
    s_test_unlisted();
    if (verbose)
        printf("OK\n");
}
