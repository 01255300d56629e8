/*  mock_agent - what the mock upstream needs to serve real CLI agents (tests/agents/)

    Two parts, both used by mock_upstream.c:

    - The journal: every API request the mock answered, in order (method, path, query,
      model, headers, body as JSON), read back with GET /mock/requests and emptied by
      POST /mock/reset, so a test can check what each upstream request contained.
      Authentication headers are kept out. The journal keeps the newest
      MOCK_JOURNAL_MAX entries.

    - The script: a conversation whose user text says `mock-call NAME {JSON}` makes the
      mock call tool NAME with those arguments (an agent's own tool, e.g. Claude Code's
      Read with {"file_path": ...}); once the conversation ends with that tool's result,
      the mock answers `mock saw: ` followed by the result's text (its first 400 bytes),
      so a test sees the agent's tool result travel back through the gateway. A
      conversation without the directive is answered as before.
*/
#ifndef MOCK_AGENT_H_INCLUDED
#define MOCK_AGENT_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define MOCK_JOURNAL_MAX 256 //  entries kept; older ones are forgotten

typedef struct _mock_journal_t mock_journal_t;

//  Creates an empty journal. Caller owns return value.
mock_journal_t *mock_journal_new(void);

//  Destroys a journal; nulls the pointer.
void mock_journal_destroy(mock_journal_t **self_p);

//  Records one request. headers (lower-case names -> values) is borrowed and copied without
//  credentials; body is the raw request body (JSON or not). Thread-safe.
void mock_journal_add(mock_journal_t *self, const char *method, const char *path, const char *query,
                      const char *model, const json_t *headers, const char *body, size_t size);

//  The entries, oldest first, as a new JSON array of {seq, method, path, query, model,
//  headers, body} (body parsed when it is JSON, else a string). Caller owns return value.
json_t *mock_journal_json(mock_journal_t *self);

//  Forgets every entry.
void mock_journal_clear(mock_journal_t *self);

//  Which API shape a request body has.
typedef enum {
    MOCK_AGENT_CHAT,      //  OpenAI Chat Completions: messages
    MOCK_AGENT_RESPONSES, //  OpenAI Responses: input
    MOCK_AGENT_ANTHROPIC, //  Anthropic Messages: messages with blocks
    MOCK_AGENT_GEMINI,    //  Gemini: contents with parts
} mock_agent_api_t;

typedef enum {
    MOCK_AGENT_NONE = 0, //  the script does not apply: answer as usual
    MOCK_AGENT_CALL,     //  call plan->tool with plan->arguments
    MOCK_AGENT_TEXT,     //  answer plan->text
} mock_agent_reply_t;

typedef struct {
    char *tool;      //  tool to call (malloc), MOCK_AGENT_CALL
    char *arguments; //  its arguments, JSON object text (malloc), MOCK_AGENT_CALL
    char *text;      //  answer text (malloc), MOCK_AGENT_TEXT
} mock_agent_plan_t;

//  Reads the conversation in body and decides the scripted reply; fills plan (free it with
//  mock_agent_plan_clear). Returns what to do.
mock_agent_reply_t mock_agent_plan(const json_t *body, mock_agent_api_t api,
                                   mock_agent_plan_t *plan);

//  Frees what a plan holds.
void mock_agent_plan_clear(mock_agent_plan_t *plan);

//  Self test.
void mock_agent_test(bool verbose);

#endif
