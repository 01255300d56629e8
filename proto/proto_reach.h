/*  proto_reach: the path of a model call as the operator set it for a
    provider, or for one (provider, upstream model) (migration 0012,
    docs/routing.md section 11). Shared by dispatch (every request) and
    health (completion probes), so a probe goes where a request would.

    The template replaces the protocol's path, appended to base_url, with
    {model} (the upstream model, from a safe character set) and, for Gemini,
    {action} (generateContent or streamGenerateContent) filled in, and
    alt=sse added to a Gemini stream. It applies to the model call in the
    candidate's own protocol only: embeddings through an OpenAI provider and
    token counts keep the protocol's paths.
*/
#ifndef PROTO_REACH_H_INCLUDED
#define PROTO_REACH_H_INCLUDED

#include "proto_catalog.h"

#include <stdbool.h>

//  The operator's URL for a call to provider for upstream_model, spoken in
//  endpoint_protocol where the candidate's protocol is upstream_protocol.
//  Returns 1 with *url set (caller frees) when a template applies, 0 when
//  the protocol's own path applies (*url NULL), -1 when a template applies
//  but cannot be filled (a model name unsafe in a path).
int proto_reach_url(proto_catalog_t *catalog, const proto_provider_t *provider,
                    const char *upstream_model, int endpoint_protocol, int upstream_protocol,
                    bool count_tokens, bool stream, char **url);

//  The protocol a (provider, upstream model) is spoken to in: its model
//  setting's, else the provider's.
int proto_reach_protocol(proto_catalog_t *catalog, const proto_provider_t *provider,
                         const char *upstream_model);

//  Self test.
void proto_reach_test(bool verbose);

#endif
