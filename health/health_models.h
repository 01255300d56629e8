/*  health_models: how to ask a provider for its model list, and how to read
    the answer, per upstream protocol.

        openai     GET {base}/v1/models                 Authorization: Bearer KEY
                   {"data":[{"id":"gpt-4o"}, ...]}
        anthropic  GET {base}/v1/models?limit=1000      x-api-key: KEY,
                                                        anthropic-version: 2023-06-01
                   {"data":[{"id":"claude-..."}], "has_more":false}
        gemini     GET {base}/v1beta/models?pageSize=1000  x-goog-api-key: KEY
                   {"models":[{"name":"models/gemini-2.0-flash"}], "nextPageToken":...}
    A base URL may or may not end with the version segment; it is not
    doubled. One page is read (1000 models); a longer list is cut there.
    Pure functions, no I/O.
*/
#ifndef HEALTH_MODELS_H_INCLUDED
#define HEALTH_MODELS_H_INCLUDED

#include <curl/curl.h>
#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>

#define HEALTH_MODELS_MAX 1000    //  names kept from one list
#define HEALTH_MODEL_NAME_MAX 127 //  longer names are skipped

//  The models-list URL for a protocol, or NULL when it has none. Caller
//  owns return value (free()).
char *health_models_url(int protocol, const char *base_url);

//  The request headers carrying the key. Caller owns return value
//  (curl_slist_free_all); the lines hold the secret.
struct curl_slist *health_models_headers(int protocol, const char *secret);

//  Reads a models-list answer into `names` (strings, owned by the list,
//  which must have a destructor). Returns how many, or -1 when the body is
//  not a model list of that protocol.
int health_models_parse(int protocol, const char *body, size_t size, zlistx_t *names);

//  The URL of a model call (a completion probe) to model at base_url in
//  protocol, the protocol's own path. Caller owns return value (free()).
char *health_models_generate_url(int protocol, const char *base_url, const char *model);

//  The headers of that call: JSON in and out, the protocol's
//  authentication carrying secret. Caller owns return value.
struct curl_slist *health_models_generate_headers(int protocol, const char *secret);

//  Self test.
void health_models_test(bool verbose);

#endif
