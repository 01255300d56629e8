/*  fuzz_common: the pairs every converter fuzz target walks through. */
#ifndef FUZZ_COMMON_H_INCLUDED
#define FUZZ_COMMON_H_INCLUDED

#include "proto_msg.h"

//  The four generative protocols; each input is tried on all 16 pairs.
static const int fuzz_protocols[] = {PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI_RESPONSES,
                                     PROTO_PROTOCOL_ANTHROPIC, PROTO_PROTOCOL_GEMINI};
#define FUZZ_PROTOCOLS 4

#endif
