/*  mock_reply - what the mock's answer says, read from the request */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "mock_reply.h"

#include <stdlib.h>
#include <string.h>

#define S_DEFAULT_CHUNKS 5 //  Reply length when nothing asks otherwise
#define S_TOOL_ARGS "{\"location\":\"Paris\"}"

//  Concatenated text of a message whose content is a string or an array of parts with
//  "text" members (OpenAI, Anthropic, Responses) or a Gemini "parts" array.
static void s_text_of(json_t *content, mock_buf_t *text)
{
    if (json_is_string(content)) {
        mock_buf_append(text, json_string_value(content), json_string_length(content));
        return;
    }
    size_t index;
    json_t *part;
    json_array_foreach(content, index, part)
    {
        json_t *value = json_object_get(part, "text");
        if (json_is_string(value))
            mock_buf_append(text, json_string_value(value), json_string_length(value));
    }
}

//  Text of the conversation's final message if, and only if, it is a user message. A
//  conversation ending in a tool result (OpenAI role "tool", Responses function_call_output,
//  Anthropic tool_result, Gemini functionResponse) yields no text, so a tool-call round trip
//  ends with a plain answer instead of calling the tool again.
static void s_last_user_text(mock_req_t *req, json_t *body, mock_buf_t *text)
{
    json_t *last = NULL;
    if (req->route == R_RESPONSES) {
        json_t *input = json_object_get(body, "input");
        if (json_is_string(input)) {
            s_text_of(input, text);
            return;
        }
        last = json_array_get(input, json_array_size(input) - 1);
        const char *type = json_string_value(json_object_get(last, "type"));
        if (type && strcmp(type, "message"))
            return;
    } else if (req->proto == P_GEMINI) {
        json_t *contents = json_object_get(body, "contents");
        last = json_array_get(contents, json_array_size(contents) - 1);
        const char *role = json_string_value(json_object_get(last, "role"));
        if (!role || !strcmp(role, "user"))
            s_text_of(json_object_get(last, "parts"), text);
        return;
    } else {
        json_t *messages = json_object_get(body, "messages");
        last = json_array_get(messages, json_array_size(messages) - 1);
    }
    const char *role = json_string_value(json_object_get(last, "role"));
    if (role && !strcmp(role, "user"))
        s_text_of(json_object_get(last, "content"), text);
}

//  Name of the first function tool the request defines, or NULL.
static const char *s_first_tool(mock_req_t *req, json_t *body)
{
    json_t *tools = json_object_get(body, "tools");
    size_t index;
    json_t *tool;
    json_array_foreach(tools, index, tool)
    {
        const char *name = NULL;
        if (req->proto == P_GEMINI) {
            json_t *decls = json_object_get(tool, "functionDeclarations");
            if (!decls)
                decls = json_object_get(tool, "function_declarations");
            name = json_string_value(json_object_get(json_array_get(decls, 0), "name"));
        } else if (req->route == R_CHAT)
            name = json_string_value(json_object_get(json_object_get(tool, "function"), "name"));
        else
            name = json_string_value(json_object_get(tool, "name"));
        if (name)
            return name;
    }
    if (req->route == R_CHAT) //  Legacy "functions"
        return json_string_value(
            json_object_get(json_array_get(json_object_get(body, "functions"), 0), "name"));
    return NULL;
}

static int s_add_piece(mock_req_t *req, const char *bytes, size_t size)
{
    char **pieces = realloc(req->pieces, (size_t)(req->n_pieces + 1) * sizeof(*pieces));
    if (!pieces)
        return -1;
    req->pieces = pieces;
    //  Upload data is not NUL-terminated: copy exactly `size` bytes.
    char *piece = malloc(size + 1);
    if (!piece)
        return -1;
    memcpy(piece, bytes, size);
    piece[size] = '\0';
    req->pieces[req->n_pieces++] = piece;
    return 0;
}

//  Decides what the reply says: tool call, echo, or N words. Fills pieces and tokens.
int mock_reply_plan(mock_req_t *req, json_t *body)
{
    mock_buf_t text = {0};
    s_last_user_text(req, body, &text);
    const char *tool = s_first_tool(req, body);
    int rc = 0;
    mock_agent_plan_t plan;
    mock_agent_api_t api = req->route == R_RESPONSES   ? MOCK_AGENT_RESPONSES
                           : req->proto == P_GEMINI    ? MOCK_AGENT_GEMINI
                           : req->proto == P_ANTHROPIC ? MOCK_AGENT_ANTHROPIC
                                                       : MOCK_AGENT_CHAT;
    mock_agent_reply_t scripted = mock_agent_plan(body, api, &plan);
    if (scripted == MOCK_AGENT_CALL) {
        //  An agent's own tool with the arguments the test chose (mock_agent.h).
        size_t half = strlen(plan.arguments) / 2;
        req->tool = true;
        req->tool_name = strdup(plan.tool);
        rc = s_add_piece(req, plan.arguments, half) ||
             s_add_piece(req, plan.arguments + half, strlen(plan.arguments) - half);
    } else if (scripted == MOCK_AGENT_TEXT) {
        const char *start = plan.text;
        while (*start && !rc) {
            const char *end = start;
            while (*end == ' ')
                end++;
            while (*end && *end != ' ')
                end++;
            rc = s_add_piece(req, start, (size_t)(end - start));
            start = end;
        }
    } else if (tool && text.data && strstr(text.data, "call_tool")) {
        //  Split the arguments so a streaming client must reassemble them.
        const char *args = S_TOOL_ARGS;
        req->tool = true;
        req->tool_name = strdup(tool);
        rc = s_add_piece(req, args, 12) || s_add_piece(req, args + 12, strlen(args) - 12);
    } else if (text.data && !strncmp(text.data, "echo:", 5)) {
        //  One piece per word, each carrying its leading spaces, so pieces rejoin exactly.
        const char *start = text.data + 5;
        while (*start && !rc) {
            const char *end = start;
            while (*end == ' ')
                end++;
            while (*end && *end != ' ')
                end++;
            rc = s_add_piece(req, start, (size_t)(end - start));
            start = end;
        }
    } else {
        static const char *words[] = {" Hello", " from", " mock", " upstream", " model"};
        int chunks = S_DEFAULT_CHUNKS;
        const char *header = mock_req_header(req, "x-mock-chunks");
        if (header)
            mock_parse_int(header, 0, MOCK_MAX_CHUNKS, &chunks);
        else if (!strncmp(req->model, "mock-", 5))
            mock_parse_int(req->model + 5, 0, MOCK_MAX_CHUNKS, &chunks);
        for (int index = 0; index < chunks && !rc; index++) {
            const char *word = words[index % 5] + (index == 0); //  No leading space at first
            rc = s_add_piece(req, word, strlen(word));
        }
    }
    mock_buf_reset(&text);
    mock_agent_plan_clear(&plan);
    if (rc || (req->tool && !req->tool_name))
        return -1;
    mock_buf_t full = {0};
    for (int index = 0; index < req->n_pieces; index++)
        mock_buf_append(&full, req->pieces[index], strlen(req->pieces[index]));
    req->full_text = full.data ? full.data : strdup("");
    req->completion_tokens = req->n_pieces;
    return req->full_text ? 0 : -1;
}
