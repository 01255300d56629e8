/*  mock_agent - the request journal and the tool-call script of the mock upstream.
    See mock_agent.h.
*/
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
//  Asserts drive the self test: they stay on in release builds.
#undef NDEBUG
#include "mock_agent.h"
#include "proto_check.h"

#include <assert.h>
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_DIRECTIVE "mock-call "
#define S_RESULT_MAX 400 //  bytes of a tool result quoted back

//  -------------------------------------------------------------------------
//  Journal

struct _mock_journal_t {
    pthread_mutex_t mutex; //  guards everything below (MHD runs several threads)
    json_t *entries;       //  oldest first, at most MOCK_JOURNAL_MAX
    json_int_t seq;        //  number of the last entry recorded
};

mock_journal_t *mock_journal_new(void)
{
    mock_journal_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->mutex, NULL);
    self->entries = json_array();
    return self;
}

void mock_journal_destroy(mock_journal_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mock_journal_t *self = *self_p;
    json_decref(self->entries);
    pthread_mutex_destroy(&self->mutex);
    free(self);
    *self_p = NULL;
}

void mock_journal_add(mock_journal_t *self, const char *method, const char *path, const char *query,
                      const char *model, const json_t *headers, const char *body, size_t size)
{
    //  Credentials stay out: tests compare what was sent, not who sent it.
    static const char *const secret[] = {"authorization", "x-api-key", "x-goog-api-key", "api-key",
                                         NULL};
    json_t *kept = json_object();
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)headers, name, value)
    {
        bool hidden = false;
        for (const char *const *word = secret; *word && !hidden; word++)
            hidden = strcmp(*word, name) == 0;
        if (!hidden)
            json_object_set(kept, name, value);
    }
    json_t *parsed = size ? json_loadb(body, size, 0, NULL) : NULL;
    json_t *entry =
        json_pack("{s:s, s:s, s:s?, s:s?, s:o, s:o}", "method", method ? method : "", "path",
                  path ? path : "", "query", query, "model", model, "headers", kept, "body",
                  parsed ? parsed : json_stringn(body ? body : "", body ? size : 0));
    pthread_mutex_lock(&self->mutex);
    json_object_set_new(entry, "seq", json_integer(++self->seq));
    json_array_append_new(self->entries, entry);
    while (json_array_size(self->entries) > MOCK_JOURNAL_MAX)
        json_array_remove(self->entries, 0);
    pthread_mutex_unlock(&self->mutex);
}

json_t *mock_journal_json(mock_journal_t *self)
{
    pthread_mutex_lock(&self->mutex);
    json_t *copy = json_deep_copy(self->entries);
    pthread_mutex_unlock(&self->mutex);
    return copy;
}

void mock_journal_clear(mock_journal_t *self)
{
    pthread_mutex_lock(&self->mutex);
    json_array_clear(self->entries);
    pthread_mutex_unlock(&self->mutex);
}

//  -------------------------------------------------------------------------
//  Script

//  Appends the text of a tool result's content: a string, an array of text parts or
//  blocks, or (Gemini) a response object whose one string member is the text.
static void s_append_text(const json_t *content, char **text)
{
    char *piece = NULL;
    if (json_is_string(content))
        piece = strdup(json_string_value(content));
    else if (json_is_array(content)) {
        size_t index;
        json_t *part;
        json_array_foreach(content, index, part) s_append_text(json_object_get(part, "text"), text);
        return;
    } else if (json_is_object(content)) {
        const char *keys[] = {"output", "result", "content", NULL};
        for (const char **key = keys; *key && !piece; key++)
            if (json_is_string(json_object_get(content, *key)))
                piece = strdup(json_string_value(json_object_get(content, *key)));
        if (!piece)
            piece = json_dumps(content, JSON_COMPACT);
    }
    if (!piece)
        return;
    char *joined = NULL;
    if (asprintf(&joined, "%s%s", *text ? *text : "", piece) >= 0) {
        free(*text);
        *text = joined;
    }
    free(piece);
}

//  The text of the tool result the conversation ends with, or NULL when it ends otherwise.
//  Caller owns return value.
static char *s_final_result(const json_t *body, mock_agent_api_t api)
{
    const char *list = api == MOCK_AGENT_RESPONSES ? "input"
                       : api == MOCK_AGENT_GEMINI  ? "contents"
                                                   : "messages";
    json_t *items = json_object_get(body, list);
    json_t *last = json_array_get(items, json_array_size(items) - 1);
    char *text = NULL;
    const char *role = json_string_value(json_object_get(last, "role"));
    const char *type = json_string_value(json_object_get(last, "type"));
    size_t index;
    json_t *part;
    switch (api) {
    case MOCK_AGENT_CHAT:
        if (role && strcmp(role, "tool") == 0)
            s_append_text(json_object_get(last, "content"), &text);
        break;
    case MOCK_AGENT_RESPONSES:
        if (type && strcmp(type, "function_call_output") == 0)
            s_append_text(json_object_get(last, "output"), &text);
        break;
    case MOCK_AGENT_ANTHROPIC:
        json_array_foreach(json_object_get(last, "content"), index, part)
        {
            type = json_string_value(json_object_get(part, "type"));
            if (type && strcmp(type, "tool_result") == 0 && !text)
                s_append_text(json_object_get(part, "content"), &text);
        }
        break;
    case MOCK_AGENT_GEMINI:
        json_array_foreach(json_object_get(last, "parts"), index, part)
        {
            json_t *response = json_object_get(part, "functionResponse");
            if (response && !text)
                s_append_text(json_object_get(response, "response"), &text);
        }
        break;
    }
    if (text && strlen(text) > S_RESULT_MAX)
        text[S_RESULT_MAX] = 0;
    return text;
}

//  Finds the last string anywhere in value that holds the directive; borrowed.
static const char *s_find_directive(const json_t *value)
{
    const char *found = NULL;
    if (json_is_string(value))
        return strstr(json_string_value(value), S_DIRECTIVE);
    size_t index;
    json_t *item;
    const char *key;
    if (json_is_array(value))
        json_array_foreach(value, index, item)
        {
            const char *here = s_find_directive(item);
            if (here)
                found = here;
        }
    else if (json_is_object(value))
        json_object_foreach((json_t *)value, key, item)
        {
            const char *here = s_find_directive(item);
            if (here)
                found = here;
        }
    return found;
}

//  Parses "mock-call NAME {JSON}" at text into plan. Returns 0, or -1 when it does not
//  parse.
static int s_parse_directive(const char *text, mock_agent_plan_t *plan)
{
    const char *name = text + strlen(S_DIRECTIVE);
    const char *end = name;
    while (isalnum((unsigned char)*end) || strchr("_-.:", *end))
        end++;
    if (end == name)
        return -1;
    const char *args = end;
    while (*args == ' ')
        args++;
    json_t *object = json_loads(args, JSON_DISABLE_EOF_CHECK, NULL);
    if (!json_is_object(object)) {
        json_decref(object);
        return -1;
    }
    plan->tool = strndup(name, (size_t)(end - name));
    plan->arguments = json_dumps(object, JSON_COMPACT);
    json_decref(object);
    return plan->tool && plan->arguments ? 0 : -1;
}

mock_agent_reply_t mock_agent_plan(const json_t *body, mock_agent_api_t api,
                                   mock_agent_plan_t *plan)
{
    memset(plan, 0, sizeof *plan);
    const char *list = api == MOCK_AGENT_RESPONSES ? "input"
                       : api == MOCK_AGENT_GEMINI  ? "contents"
                                                   : "messages";
    const char *directive = s_find_directive(json_object_get(body, list));
    if (!directive)
        return MOCK_AGENT_NONE;
    char *result = s_final_result(body, api);
    if (result) {
        if (asprintf(&plan->text, "mock saw: %s", result) < 0)
            plan->text = NULL;
        free(result);
        return plan->text ? MOCK_AGENT_TEXT : MOCK_AGENT_NONE;
    }
    if (s_parse_directive(directive, plan)) {
        mock_agent_plan_clear(plan);
        return MOCK_AGENT_NONE;
    }
    return MOCK_AGENT_CALL;
}

void mock_agent_plan_clear(mock_agent_plan_t *plan)
{
    free(plan->tool);
    free(plan->arguments);
    free(plan->text);
    memset(plan, 0, sizeof *plan);
}

//  -------------------------------------------------------------------------
//  Self test

static mock_agent_reply_t s_test_plan(const char *text, mock_agent_api_t api,
                                      mock_agent_plan_t *plan)
{
    json_t *body = json_loads(text, 0, NULL);
    PROTO_CHECK(body);
    mock_agent_reply_t reply = mock_agent_plan(body, api, plan);
    json_decref(body);
    return reply;
}

void mock_agent_test(bool verbose)
{
    if (verbose)
        printf(" * mock_agent: ");
    mock_agent_plan_t plan;
    //  No directive: not scripted.
    PROTO_CHECK(s_test_plan("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                            MOCK_AGENT_CHAT, &plan) == MOCK_AGENT_NONE);
    //  A directive in a user block: the call.
    PROTO_CHECK(
        s_test_plan("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                    "\"text\":\"please mock-call Read {\\\"file_path\\\":\\\"/a b\\\"} now\"}]}]}",
                    MOCK_AGENT_ANTHROPIC, &plan) == MOCK_AGENT_CALL);
    PROTO_CHECK(strcmp(plan.tool, "Read") == 0);
    PROTO_CHECK(strcmp(plan.arguments, "{\"file_path\":\"/a b\"}") == 0);
    mock_agent_plan_clear(&plan);
    //  Its result ends the conversation: quoted back, per protocol.
    PROTO_CHECK(s_test_plan("{\"messages\":[{\"role\":\"user\",\"content\":\"mock-call f {}\"},"
                            "{\"role\":\"assistant\",\"tool_calls\":[]},"
                            "{\"role\":\"tool\",\"content\":\"42 lines\"}]}",
                            MOCK_AGENT_CHAT, &plan) == MOCK_AGENT_TEXT);
    PROTO_CHECK(strcmp(plan.text, "mock saw: 42 lines") == 0);
    mock_agent_plan_clear(&plan);
    PROTO_CHECK(s_test_plan("{\"input\":[{\"role\":\"user\",\"content\":\"mock-call f {}\"},"
                            "{\"type\":\"function_call_output\",\"call_id\":\"c\",\"output\":"
                            "[{\"type\":\"input_text\",\"text\":\"ok\"}]}]}",
                            MOCK_AGENT_RESPONSES, &plan) == MOCK_AGENT_TEXT);
    PROTO_CHECK(strcmp(plan.text, "mock saw: ok") == 0);
    mock_agent_plan_clear(&plan);
    PROTO_CHECK(
        s_test_plan("{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"mock-call f {}\"}]},"
                    "{\"role\":\"user\",\"parts\":[{\"functionResponse\":{\"name\":\"f\","
                    "\"response\":{\"output\":\"abc\"}}}]}]}",
                    MOCK_AGENT_GEMINI, &plan) == MOCK_AGENT_TEXT);
    PROTO_CHECK(strcmp(plan.text, "mock saw: abc") == 0);
    mock_agent_plan_clear(&plan);
    //  A directive that does not parse is not scripted.
    PROTO_CHECK(s_test_plan("{\"messages\":[{\"role\":\"user\",\"content\":\"mock-call {}\"}]}",
                            MOCK_AGENT_CHAT, &plan) == MOCK_AGENT_NONE);

    //  The journal keeps the newest entries, without credentials.
    mock_journal_t *journal = mock_journal_new();
    json_t *headers = json_pack("{s:s, s:s}", "x-api-key", "secret", "accept", "*/*");
    for (int i = 0; i < MOCK_JOURNAL_MAX + 2; i++)
        mock_journal_add(journal, "POST", "/v1/messages", NULL, "m", headers, "{\"a\":1}", 7);
    json_decref(headers);
    json_t *entries = mock_journal_json(journal);
    PROTO_CHECK(json_array_size(entries) == MOCK_JOURNAL_MAX);
    json_t *first = json_array_get(entries, 0);
    PROTO_CHECK(json_integer_value(json_object_get(first, "seq")) == 3);
    PROTO_CHECK(!json_object_get(json_object_get(first, "headers"), "x-api-key"));
    PROTO_CHECK(json_integer_value(json_object_get(json_object_get(first, "body"), "a")) == 1);
    json_decref(entries);
    mock_journal_clear(journal);
    entries = mock_journal_json(journal);
    PROTO_CHECK(json_array_size(entries) == 0);
    json_decref(entries);
    mock_journal_destroy(&journal);
    if (verbose)
        printf("OK\n");
}
