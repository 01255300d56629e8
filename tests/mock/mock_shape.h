/*  mock_shape - the mock's answers in each API's own JSON shapes

    OpenAI Chat Completions, Responses and Embeddings, Anthropic Messages, Gemini
    generateContent, the model lists, and each API's error body. Every json_t * returned is
    a new reference the caller owns; parts given to a builder are stolen where it says so.
*/

#ifndef MOCK_SHAPE_H_INCLUDED
#define MOCK_SHAPE_H_INCLUDED

#include "mock_req.h"

//  Makes object (stolen; NULL = out of memory) the whole non-stream answer with status.
void mock_shape_json(mock_req_t *req, int status, json_t *object);

//  Makes an error body in req's API shape the whole answer.
void mock_shape_error(mock_req_t *req, int status, const char *message);

//  Whole non-streamed answer for a generation route (chat, responses, messages, Gemini).
json_t *mock_shape_full_answer(mock_req_t *req);

//  The model list in req's API shape, or with only set, that one model (NULL if unknown).
json_t *mock_shape_models(mock_upstream_t *self, mock_req_t *req, const char *only);

//  Deterministic embeddings of the body's input (float arrays or base64 float32).
json_t *mock_shape_embeddings(mock_req_t *req, json_t *body);

//  An OpenAI Images answer: n (1 by default) images, each a 1x1 PNG in
//  b64_json, or a URL when response_format is "url"; gpt-image models add
//  token usage (input: the prompt's bytes / 4, output: 272 per image).
json_t *mock_shape_images(mock_req_t *req, json_t *body);

//  OpenAI Chat: the usage object; a tool call (with_index for stream deltas); a stream chunk
//  carrying delta (stolen) and finish (NULL for none).
json_t *mock_shape_chat_usage(mock_req_t *req);
json_t *mock_shape_chat_tool_call(mock_req_t *req, bool with_index, const char *arguments);
json_t *mock_shape_chat_chunk(mock_req_t *req, json_t *delta, const char *finish);

//  Responses: the output item and the response object, in progress or done.
json_t *mock_shape_resp_item(mock_req_t *req, bool done);
json_t *mock_shape_resp_object(mock_req_t *req, bool done);

//  Anthropic: the content block and the message, in progress or done.
json_t *mock_shape_anth_block(mock_req_t *req, bool done);
json_t *mock_shape_anth_message(mock_req_t *req, bool done);

//  Gemini: one GenerateContentResponse (parts stolen; finish NULL for a non-final chunk) and
//  the parts of a function call.
json_t *mock_shape_gem_response(mock_req_t *req, json_t *parts, const char *finish, int candidates);
json_t *mock_shape_gem_tool_parts(mock_req_t *req);

#endif
