/*  proto_price: what a request costs, as a pure function of its usage and
    the model's prices. No state, no I/O: the same inputs give the same micros
    in every billing instance and in every test.

    Token convention: SETTLE's, as proto_usage.h defines it:
        tokens_in           input tokens billed at the input price: the prompt
                            WITHOUT cache reads and cache writes
        tokens_cache_read   input tokens read from the provider's prompt cache
        tokens_cache_write  input tokens written to the prompt cache, for 5
                            minutes or for 1 hour (Anthropic's
                            cache_creation_input_tokens)
        tokens_cache_write_1h  the part of tokens_cache_write written for 1
                            hour (cache_creation.ephemeral_1h_input_tokens)
        tokens_out          output tokens, reasoning included
    so the whole prompt is tokens_in + cache_read + cache_write, and that
    whole prompt is what the long-context threshold is compared with (the
    providers' long-context tiers count cached tokens too).

    The rounding rule, one for everything (prices are micros per million
    tokens, so the token part is computed in 1e-12 units and rounded up once):

        in_price, out_price = long prices when long_context_threshold > 0 and
                              the whole prompt > long_context_threshold, else
                              normal (long prices default to normal ones)
        write_5m = cache_write - min(cache_write_1h, cache_write)
        base = ceil( (tokens_in x in_price + cache_read x price_cache_read
                      + write_5m x price_cache_write
                      + min(cache_write_1h, cache_write) x price_cache_write_1h
                      + tokens_out x out_price) / 1e6 ) + price_request
               + images x price_image      (price_image NULL, -1 here: 0)
        cost = ceil( base x multiplier_ppm / 1e6 )        (multiplier 0 -> 0)

    where multiplier_ppm is the provider key's and the account's together,
    proto_price_scale(key_ppm, account_ppm) = ceil(key x account / 1e6).
    The 1-hour price is the 5-minute one unless the model sets its own
    (the catalog fills it in).

    A failed request (status >= 400) that used no tokens costs 0: the
    upstream did not charge, so neither do we (not even price_request).
    All arithmetic is unsigned 128-bit with overflow checks; a result that
    does not fit int64 is an error, never a wrapped number.
*/
#ifndef PROTO_PRICE_H_INCLUDED
#define PROTO_PRICE_H_INCLUDED

#include "proto_catalog.h"

#include <stdbool.h>
#include <stdint.h>

//  Output tokens assumed by the admission estimate when the client gives no
//  limit and the model has no max_output_tokens in the catalog.
#define PROTO_PRICE_RESERVE_OUTPUT_TOKENS 4096

//  The list price multiplier: parts per million.
#define PROTO_PRICE_PPM_ONE 1000000

//  What a finished request used.
typedef struct {
    uint64_t tokens_in;             //  uncached input tokens
    uint64_t tokens_out;            //  output tokens
    uint64_t tokens_cache_read;     //  input tokens read from the prompt cache
    uint64_t tokens_cache_write;    //  input tokens written to the prompt cache (5 min and 1 h)
    uint64_t status;                //  final HTTP status of the request
    uint64_t tokens_cache_write_1h; //  the part of tokens_cache_write kept for 1 hour
    uint64_t images;                //  images generated (OpenAI Images)
} proto_price_usage_t;

//  Computes the cost of `usage` at `model`'s prices times multiplier_ppm
//  (negative multipliers count as 0). Returns 0 with *cost_micros set, or -1
//  when the cost does not fit int64 (*cost_micros then 0).
int proto_price_cost(const proto_model_t *model, const proto_price_usage_t *usage,
                     int64_t multiplier_ppm, int64_t *cost_micros);

//  The admission estimate: tokens_in (the client's whole prompt, estimated)
//  at the input price (long-context price when above the threshold) plus
//  tokens_out (the request's own output limit: max_tokens and its
//  equivalents; 0 when it gives none, then the model's max_output_tokens, or
//  PROTO_PRICE_RESERVE_OUTPUT_TOKENS when the model has none) at the output
//  price plus price_request, at list price (the provider key
//  is not chosen yet), rounded up. Saturates at INT64_MAX instead of
//  overflowing.
int64_t proto_price_reserve(const proto_model_t *model, uint64_t tokens_in, uint64_t tokens_out);

//  False when the request's own output limit (tokens_out, 0 = none) is above
//  the model's max_output_tokens: such a request is refused (400 naming
//  max_tokens), never reserved at less than it may produce.
bool proto_price_output_allowed(const proto_model_t *model, uint64_t tokens_out);

//  The admission estimate of a request that makes `images` images:
//  proto_price_reserve's plus images x price_image, saturating the same way.
int64_t proto_price_reserve_images(const proto_model_t *model, uint64_t tokens_in,
                                   uint64_t tokens_out, uint64_t images);

//  ceil(value x multiplier_ppm / 1e6), saturating at INT64_MAX; negative
//  inputs count as 0. Combines two multipliers (a provider key's and an
//  account's) into one, and scales an admission estimate by an account's.
int64_t proto_price_scale(int64_t value, int64_t multiplier_ppm);

//  Self test.
void proto_price_test(bool verbose);

#endif
