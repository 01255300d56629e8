/*  proto_usage: token usage read from upstream answers, or estimated.

    Each API reports usage its own way:
      OpenAI Chat   `usage` {prompt_tokens, completion_tokens,
                    prompt_tokens_details.cached_tokens} on the answer; on a
                    stream, only when stream_options.include_usage was asked,
                    in a last chunk with empty `choices`.
      Anthropic     `usage` {input_tokens, output_tokens,
                    cache_creation_input_tokens, cache_read_input_tokens,
                    cache_creation {ephemeral_5m_input_tokens,
                    ephemeral_1h_input_tokens}} on
                    the answer; on a stream in `message_start` (message.usage)
                    and, running totals, in `message_delta` (usage).
      OpenAI Images the count of `data`'s items (images), and for gpt-image
                    models `usage` {input_tokens, output_tokens}.
      Gemini        `usageMetadata` {promptTokenCount, candidatesTokenCount,
                    cachedContentTokenCount, thoughtsTokenCount} on the answer
                    and on stream chunks (running totals).

    Tollgate's meaning, the one SETTLE carries:
      tokens_in          input tokens billed at the input price: the prompt
                         WITHOUT cache reads and cache writes (OpenAI's and
                         Gemini's prompt counts include cached tokens, so
                         those are subtracted; Anthropic's input_tokens
                         already excludes them)
      tokens_out         output tokens (Gemini's thoughts are output)
      tokens_cache_read  input tokens read from a prompt cache
      tokens_cache_write input tokens written to a prompt cache (Anthropic),
                         for 5 minutes or 1 hour: cache_creation_input_tokens
      tokens_cache_write_1h  the part of tokens_cache_write written for 1
                         hour: cache_creation.ephemeral_1h_input_tokens
    so tokens_in + cache_read + cache_write is the whole prompt.

    When an answer carries no usage (or a stream was cut before it), the
    estimate is a quarter token per byte, rounded up: of the request body
    for input, of the content text relayed for output; `estimated` says so.
    Every function here is pure: no I/O, no global state.
*/
#ifndef PROTO_USAGE_H_INCLUDED
#define PROTO_USAGE_H_INCLUDED

#include "proto_jscan.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t tokens_in;             //  uncached input tokens
    uint64_t tokens_out;            //  output tokens
    uint64_t tokens_cache_read;     //  input tokens read from cache
    uint64_t tokens_cache_write;    //  input tokens written to cache (5 min and 1 h)
    uint64_t tokens_cache_write_1h; //  the part of tokens_cache_write kept 1 hour
    uint64_t images;                //  images an image generation made (`data`'s items)
    bool seen_in;                   //  the upstream reported input usage
    bool seen_out;                  //  the upstream reported output usage
    bool estimated;                 //  some of it is our estimate
} proto_usage_t;

//  Reads the usage of a whole (non-streamed) answer of an upstream protocol
//  (proto_protocol_t) into usage, which is reset first. Returns 0 when the
//  body carried usage, -1 when it did not or is not JSON.
int proto_usage_from_body(int protocol, const char *body, size_t size, proto_usage_t *usage);

//  Folds the usage one stream event carries into usage (which the caller
//  resets once per stream). `name` is the SSE event name ("" when none),
//  `data` the event's data. Returns 1 when the event carried usage, else 0.
int proto_usage_from_event(int protocol, const char *name, const char *data, size_t size,
                           proto_usage_t *usage);

//  Same as the two above for an already parsed JSON object (a jansson json_t
//  passed as void * so that this header does not pull in jansson). For a
//  stream event pass is_event true. Returns 1 when usage was found, else 0.
int proto_usage_from_json(int protocol, const void *json, const char *name, bool is_event,
                          proto_usage_t *usage);

//  Bytes of content text (answer text, tool-call arguments, thinking) in a
//  parsed answer or stream event, for estimating output. `json` is a json_t.
size_t proto_usage_content_bytes(int protocol, const void *json, bool is_event);

//  Both of the above at once on JSON text that proto_jscan_valid accepted
//  with the flags jansson loaded it with, not PROTO_JSCAN_INT_AS_REAL (a
//  stream event or answer), given as the index of its top object
//  (proto_jscan_object): folds its usage into usage and sets
//  *content_bytes exactly as proto_usage_from_json and
//  proto_usage_content_bytes would on its parse, without parsing it.
//  Returns what proto_usage_from_json would, or -1, changing nothing, when
//  only the parse can tell (tool arguments given as JSON are counted as
//  jansson dumps them).
int proto_usage_scan(int protocol, const proto_jscan_object_t *root, const char *name,
                     bool is_event, proto_usage_t *usage, size_t *content_bytes);

//  ceil(bytes / 4): the estimate of tokens in that many bytes.
uint64_t proto_usage_estimate_tokens(size_t bytes);

//  Fills what the upstream did not report: input from the request body's
//  size, output from the relayed content's size. Sets estimated when it
//  filled anything.
void proto_usage_estimate(proto_usage_t *usage, size_t request_bytes, size_t content_bytes);

//  Self test with answers copied from the providers' API references.
void proto_usage_test(bool verbose);

#endif
