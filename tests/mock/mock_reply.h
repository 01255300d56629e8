/*  mock_reply - what the mock's answer says, read from the request

    In order: an agent's scripted tool call or text (mock_agent.h); a tool call to the first
    tool defined when the last user message contains "call_tool"; "echo:X" answered with X;
    otherwise N words (x-mock-chunks, model "mock-N", default 5). One piece per chunk.
*/

#ifndef MOCK_REPLY_H_INCLUDED
#define MOCK_REPLY_H_INCLUDED

#include "mock_req.h"

//  Decides what the reply says from the parsed body: fills req's pieces, full_text, tool,
//  tool_name and completion_tokens. Returns 0, or -1 when out of memory.
int mock_reply_plan(mock_req_t *req, json_t *body);

#endif
