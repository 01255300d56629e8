/*  mock_stream - the mock's answers as each API's stream of events */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "mock_stream.h"
#include "mock_shape.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_push_event(mock_req_t *req, mock_event_kind_t kind, int arg, int *cap)
{
    if (req->n_events == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        mock_event_t *events = realloc(req->events, (size_t)*cap * sizeof(*events));
        if (!events)
            return -1;
        req->events = events;
    }
    req->events[req->n_events].kind = (uint8_t)kind;
    req->events[req->n_events++].arg = arg;
    return 0;
}

//  The event list each API sends, in order. no-terminator drops the final event(s) a client
//  uses to know the stream is complete; everything before it is unchanged.
int mock_stream_plan(mock_req_t *req)
{
    int cap = 0, rc = 0;
    bool cut_end = req->fault.no_terminator;
    int n = req->n_pieces;
    switch (req->route) {
    case R_CHAT:
        rc |= s_push_event(req, req->tool ? E_CHAT_TOOL_START : E_CHAT_ROLE, 0, &cap);
        for (int index = 0; index < n; index++)
            rc |= s_push_event(req, req->tool ? E_CHAT_TOOL_DELTA : E_CHAT_DELTA, index, &cap);
        rc |= s_push_event(req, E_CHAT_FINISH, 0, &cap);
        if (req->include_usage)
            rc |= s_push_event(req, E_CHAT_USAGE, 0, &cap);
        if (!cut_end)
            rc |= s_push_event(req, E_CHAT_DONE, 0, &cap);
        break;
    case R_RESPONSES:
        rc |= s_push_event(req, E_RESP_CREATED, 0, &cap);
        rc |= s_push_event(req, E_RESP_IN_PROGRESS, 0, &cap);
        rc |= s_push_event(req, E_RESP_ITEM_ADDED, 0, &cap);
        if (!req->tool)
            rc |= s_push_event(req, E_RESP_PART_ADDED, 0, &cap);
        for (int index = 0; index < n; index++)
            rc |= s_push_event(req, req->tool ? E_RESP_ARGS_DELTA : E_RESP_TEXT_DELTA, index, &cap);
        if (req->tool)
            rc |= s_push_event(req, E_RESP_ARGS_DONE, 0, &cap);
        else {
            rc |= s_push_event(req, E_RESP_TEXT_DONE, 0, &cap);
            rc |= s_push_event(req, E_RESP_PART_DONE, 0, &cap);
        }
        rc |= s_push_event(req, E_RESP_ITEM_DONE, 0, &cap);
        if (!cut_end)
            rc |= s_push_event(req, E_RESP_COMPLETED, 0, &cap);
        break;
    case R_MESSAGES:
        rc |= s_push_event(req, E_ANTH_START, 0, &cap);
        rc |= s_push_event(req, E_ANTH_BLOCK_START, 0, &cap);
        rc |= s_push_event(req, E_ANTH_PING, 0, &cap);
        for (int index = 0; index < n; index++)
            rc |= s_push_event(req, E_ANTH_DELTA, index, &cap);
        rc |= s_push_event(req, E_ANTH_BLOCK_STOP, 0, &cap);
        rc |= s_push_event(req, E_ANTH_MSG_DELTA, 0, &cap);
        if (!cut_end)
            rc |= s_push_event(req, E_ANTH_STOP, 0, &cap);
        break;
    default: //  Gemini: no terminator of its own; the last chunk carries finishReason
        if (req->tool)
            rc |= s_push_event(req, E_GEM_TOOL, 0, &cap);
        else {
            for (int index = 0; index < n; index++)
                rc |= s_push_event(req, E_GEM_CHUNK, index, &cap);
            if (!cut_end)
                rc |= s_push_event(req, E_GEM_FINAL, 0, &cap);
        }
        if (!req->gemini_sse && !cut_end)
            rc |= s_push_event(req, E_GEM_ARRAY_END, 0, &cap);
        break;
    }
    //  Break the first content-bearing event (index 1), or the only one.
    req->malformed_event = req->fault.malformed ? (req->n_events > 1 ? 1 : 0) : -1;
    return rc ? -1 : 0;
}

//  OpenAI Chat chunk for event (no "event:" name; [DONE] is framed by the caller).
static json_t *s_render_chat(mock_req_t *req, const mock_event_t *event, const char *piece)
{
    switch ((mock_event_kind_t)event->kind) {
    case E_CHAT_ROLE:
        return mock_shape_chat_chunk(
            req, json_pack("{s:s, s:s, s:n}", "role", "assistant", "content", "", "refusal"), NULL);
    case E_CHAT_DELTA:
        return mock_shape_chat_chunk(req, json_pack("{s:s}", "content", piece), NULL);
    case E_CHAT_TOOL_START:
        return mock_shape_chat_chunk(req,
                                     json_pack("{s:s, s:n, s:[o]}", "role", "assistant", "content",
                                               "tool_calls",
                                               mock_shape_chat_tool_call(req, true, "")),
                                     NULL);
    case E_CHAT_TOOL_DELTA:
        return mock_shape_chat_chunk(req,
                                     json_pack("{s:[{s:i, s:{s:s}}]}", "tool_calls", "index", 0,
                                               "function", "arguments", piece),
                                     NULL);
    case E_CHAT_FINISH:
        return mock_shape_chat_chunk(req, json_object(), req->tool ? "tool_calls" : "stop");
    case E_CHAT_USAGE:
        return json_pack("{s:o, s:s, s:I, s:s, s:s, s:[], s:o}", "id",
                         json_sprintf("chatcmpl-mock%lu", req->seq), "object",
                         "chat.completion.chunk", "created", (json_int_t)req->created, "model",
                         req->model, "system_fingerprint", "fp_mock", "choices", "usage",
                         mock_shape_chat_usage(req));
    default:
        return NULL;
    }
}

//  Responses events addressed to the output item (a contiguous run of the enum, from
//  E_RESP_PART_ADDED to E_RESP_ARGS_DONE); *name gets the SSE event name.
static json_t *s_render_resp_item(mock_req_t *req, const mock_event_t *event, int seq,
                                  const char *piece, const char **name)
{
    char *item_id = NULL;
    if (asprintf(&item_id, req->tool ? "fc_mock%lu" : "msg_mock%lu", req->seq) < 0)
        return NULL;
    json_t *data = NULL;
    switch ((mock_event_kind_t)event->kind) {
    case E_RESP_PART_ADDED:
    case E_RESP_PART_DONE:
        *name = event->kind == E_RESP_PART_ADDED ? "response.content_part.added"
                                                 : "response.content_part.done";
        data = json_pack("{s:s, s:i, s:s, s:i, s:i, s:{s:s, s:s, s:[]}}", "type", *name,
                         "sequence_number", seq, "item_id", item_id, "output_index", 0,
                         "content_index", 0, "part", "type", "output_text", "text",
                         event->kind == E_RESP_PART_DONE ? req->full_text : "", "annotations");
        break;
    case E_RESP_TEXT_DELTA:
    case E_RESP_TEXT_DONE:
        *name = event->kind == E_RESP_TEXT_DELTA ? "response.output_text.delta"
                                                 : "response.output_text.done";
        data = json_pack("{s:s, s:i, s:s, s:i, s:i, s:s, s:[]}", "type", *name, "sequence_number",
                         seq, "item_id", item_id, "output_index", 0, "content_index", 0,
                         event->kind == E_RESP_TEXT_DELTA ? "delta" : "text",
                         event->kind == E_RESP_TEXT_DELTA ? piece : req->full_text, "logprobs");
        break;
    case E_RESP_ARGS_DELTA:
        *name = "response.function_call_arguments.delta";
        data = json_pack("{s:s, s:i, s:s, s:i, s:s}", "type", *name, "sequence_number", seq,
                         "item_id", item_id, "output_index", 0, "delta", piece);
        break;
    case E_RESP_ARGS_DONE:
        *name = "response.function_call_arguments.done";
        data = json_pack("{s:s, s:i, s:s, s:i, s:s, s:s}", "type", *name, "sequence_number", seq,
                         "item_id", item_id, "output_index", 0, "name", req->tool_name, "arguments",
                         req->full_text);
        break;
    default:
        break;
    }
    free(item_id);
    return data;
}

//  Responses event; seq is its sequence_number, *name gets the SSE event name.
static json_t *s_render_resp(mock_req_t *req, const mock_event_t *event, int seq, const char *piece,
                             const char **name)
{
    switch ((mock_event_kind_t)event->kind) {
    case E_RESP_CREATED:
    case E_RESP_IN_PROGRESS:
    case E_RESP_COMPLETED:
        *name = event->kind == E_RESP_CREATED       ? "response.created"
                : event->kind == E_RESP_IN_PROGRESS ? "response.in_progress"
                                                    : "response.completed";
        return json_pack("{s:s, s:i, s:o}", "type", *name, "sequence_number", seq, "response",
                         mock_shape_resp_object(req, event->kind == E_RESP_COMPLETED));
    case E_RESP_ITEM_ADDED:
    case E_RESP_ITEM_DONE:
        *name = event->kind == E_RESP_ITEM_ADDED ? "response.output_item.added"
                                                 : "response.output_item.done";
        return json_pack("{s:s, s:i, s:i, s:o}", "type", *name, "sequence_number", seq,
                         "output_index", 0, "item",
                         mock_shape_resp_item(req, event->kind == E_RESP_ITEM_DONE));
    default:
        if (event->kind >= E_RESP_PART_ADDED && event->kind <= E_RESP_ARGS_DONE)
            return s_render_resp_item(req, event, seq, piece, name);
        return NULL;
    }
}

//  Anthropic Messages event; *name gets the SSE event name.
static json_t *s_render_anth(mock_req_t *req, const mock_event_t *event, const char *piece,
                             const char **name)
{
    switch ((mock_event_kind_t)event->kind) {
    case E_ANTH_START:
        *name = "message_start";
        return json_pack("{s:s, s:o}", "type", *name, "message",
                         mock_shape_anth_message(req, false));
    case E_ANTH_BLOCK_START:
        *name = "content_block_start";
        return json_pack("{s:s, s:i, s:o}", "type", *name, "index", 0, "content_block",
                         mock_shape_anth_block(req, false));
    case E_ANTH_PING:
        *name = "ping";
        return json_pack("{s:s}", "type", *name);
    case E_ANTH_DELTA:
        *name = "content_block_delta";
        return json_pack("{s:s, s:i, s:{s:s, s:s}}", "type", *name, "index", 0, "delta", "type",
                         req->tool ? "input_json_delta" : "text_delta",
                         req->tool ? "partial_json" : "text", piece);
    case E_ANTH_BLOCK_STOP:
        *name = "content_block_stop";
        return json_pack("{s:s, s:i}", "type", *name, "index", 0);
    case E_ANTH_MSG_DELTA:
        *name = "message_delta";
        return json_pack("{s:s, s:{s:s, s:n}, s:{s:i}}", "type", *name, "delta", "stop_reason",
                         req->tool ? "tool_use" : "end_turn", "stop_sequence", "usage",
                         "output_tokens", req->completion_tokens);
    case E_ANTH_STOP:
        *name = "message_stop";
        return json_pack("{s:s}", "type", *name);
    default:
        return NULL;
    }
}

//  Gemini GenerateContentResponse for event (the array's closing "]" is framed by the caller).
static json_t *s_render_gem(mock_req_t *req, const mock_event_t *event, const char *piece)
{
    switch ((mock_event_kind_t)event->kind) {
    case E_GEM_CHUNK:
        //  Like Gemini, every chunk carries usageMetadata with the running candidate
        //  count: a client must keep the last one, not add them up.
        return mock_shape_gem_response(req, json_pack("[{s:s}]", "text", piece), NULL,
                                       event->arg + 1);
    case E_GEM_FINAL:
        return mock_shape_gem_response(req, json_pack("[{s:s}]", "text", ""), "STOP",
                                       req->completion_tokens);
    case E_GEM_TOOL:
        return mock_shape_gem_response(req, mock_shape_gem_tool_parts(req), "STOP",
                                       req->completion_tokens);
    default:
        return NULL;
    }
}

//  Appends event number index's data to req->out in the framing of req's API: SSE "data:"
//  only (Chat), SSE with "event:" names (Responses, Anthropic), SSE with CRLF (Gemini
//  alt=sse), or the elements of one JSON array (Gemini without alt=sse).
static int s_frame(mock_req_t *req, int index, const char *name, json_t *data)
{
    char *json = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (!json)
        return -1;
    if (index == req->malformed_event) {
        //  Cut the JSON short: still one well-formed SSE event, but its data will not parse.
        json[strlen(json) / 2] = 0;
    }
    int rc;
    if (req->route == R_CHAT)
        rc = mock_buf_appendf(&req->out, "data: %s\n\n", json);
    else if (name)
        rc = mock_buf_appendf(&req->out, "event: %s\ndata: %s\n\n", name, json);
    else if (req->gemini_sse)
        rc = mock_buf_appendf(&req->out, "data: %s\r\n\r\n", json);
    else //  Gemini without alt=sse: one JSON array, elements sent as they are generated
        rc = mock_buf_appendf(&req->out, "%s%s", index == 0 ? "[" : ",\r\n", json);
    free(json);
    return rc;
}

//  Renders event number index into req->out.
static int s_render_event(mock_req_t *req, int index)
{
    mock_event_t *event = &req->events[index];
    const char *piece = event->arg < req->n_pieces ? req->pieces[event->arg] : "";
    const char *name = NULL; //  SSE "event:" field, when the API uses one
    if (event->kind == E_CHAT_DONE)
        return mock_buf_appendf(&req->out, "data: [DONE]\n\n");
    if (event->kind == E_GEM_ARRAY_END)
        return mock_buf_append(&req->out, "]", 1);
    json_t *data = NULL;
    if (event->kind <= E_CHAT_DONE)
        data = s_render_chat(req, event, piece);
    else if (event->kind <= E_RESP_COMPLETED)
        data = s_render_resp(req, event, index, piece, &name);
    else if (event->kind <= E_ANTH_STOP)
        data = s_render_anth(req, event, piece, &name);
    else
        data = s_render_gem(req, event, piece);
    if (!data)
        return -1;
    return s_frame(req, index, name, data);
}

//  Content reader for streams. Hands over as many events as fit, or exactly one per
//  delay-chunks interval; parks the connection in the waiter between two delayed events.
ssize_t mock_stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    mock_req_t *req = cls;
    mock_upstream_t *self = req->owner;
    if (atomic_load(&self->stopping) || atomic_load(&req->aborted))
        return MHD_CONTENT_READER_END_WITH_ERROR;
    size_t written = 0;
    while (written < max) {
        if (req->out_off < req->out.len) {
            size_t size = req->out.len - req->out_off;
            if (size > max - written)
                size = max - written;
            memcpy(buf + written, req->out.data + req->out_off, size);
            written += size;
            req->out_off += size;
            continue;
        }
        req->out.len = req->out_off = 0;
        if (written && req->fault.delay_chunks_ms)
            break;
        if (req->fault.gather && req->events_sent == 1 && !req->gathered) {
            if (written)
                break; //  The first event goes out before the stream waits
            req->gathered = true;
            if (mock_waiter_gather(req, req->fault.gather))
                return MHD_CONTENT_READER_END_WITH_ERROR;
            return 0; //  The waiter resumes us when the gather is complete
        }
        if (req->fault.cut_after >= 0 && req->events_sent >= req->fault.cut_after) {
            if (written)
                break;
            //  MHD closes the socket without the terminating zero-length chunk.
            req->finished = true;
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (req->next_event >= req->n_events) {
            if (written)
                break;
            req->finished = true;
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (req->fault.delay_chunks_ms && req->events_sent > 0) {
            uint64_t now = mock_now_ms();
            if (now < req->next_due) {
                if (mock_waiter_hold(req, req->next_due))
                    return MHD_CONTENT_READER_END_WITH_ERROR;
                return 0; //  Nothing now; the waiter resumes us at next_due
            }
        }
        if (s_render_event(req, req->next_event++))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        req->events_sent++;
        if (req->fault.delay_chunks_ms)
            req->next_due = mock_now_ms() + (uint64_t)req->fault.delay_chunks_ms;
    }
    return (ssize_t)written;
}

//  Content reader for a non-stream answer cut after half its body.
ssize_t mock_stream_cut_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    mock_req_t *req = cls;
    size_t half = req->reply_len / 2;
    if (pos >= half) {
        req->finished = true;
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t size = half - (size_t)pos;
    if (size > max)
        size = max;
    memcpy(buf, req->reply + pos, size);
    return (ssize_t)size;
}
