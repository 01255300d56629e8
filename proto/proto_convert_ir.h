/*  proto_convert_ir: the protocol-neutral form shared by the converters.
    Internal to proto_convert*.c; not for other components.

    Request (json object, every member optional unless said):
      system        [string]            system/developer/instructions text, in order
      messages*     [{role, content}]   role "user" | "assistant"; content [part]
      tools         [{name*, description, parameters}]   parameters: JSON Schema
      tool_choice   "auto" | "none" | "required" | {"name": N}
      parallel_tool_calls  bool
      max_tokens, temperature, top_p, top_k, seed, presence_penalty,
      frequency_penalty    numbers as the client gave them
      stop          [string]
      response_format      {"type": "json_object"} |
                           {"type": "json_schema", name, schema, strict}
      reasoning     {effort: "minimal|low|medium|high", budget: int,
                     include_thoughts: bool}   (either effort or budget, or both)
      user          end-user id string
      stream        bool
    Parts:
      {type:"text", text}
      {type:"media", mime, data}        base64 bytes (images, application/pdf)
      {type:"media", url, mime?}        by URL
      {type:"tool_call", id, name, arguments}   arguments: JSON text
      {type:"tool_result", id, name?, content:[text|media part], is_error}
      {type:"thinking", text, signature?}
    Tool results sit in "user" messages, as Anthropic and Gemini have them;
    the OpenAI writers move them to their own tool messages/items.

    Answer (json object): {id, model, content:[text|thinking|tool_call part],
    stop: pc_stop_t as integer, stop_sequence, reasoning_tokens}; usage
    travels beside it as proto_usage_t.

    Streams: an upstream reader turns each event into calls of the pc_*
    functions below; they keep the stream well formed (one block open at a
    time, no empty blocks, start before anything, end once) and hand
    pc_event_t values to the client protocol's writer, which appends bytes.
*/
#ifndef PROTO_CONVERT_IR_H_INCLUDED
#define PROTO_CONVERT_IR_H_INCLUDED

#include "proto_convert.h"
#include "proto_msg.h"

#include <stdarg.h>
#include <stdint.h>

//  Why generation stopped, in neutral words.
typedef enum {
    PC_STOP_NONE = 0, //  not known (yet)
    PC_STOP_END,      //  natural end of turn
    PC_STOP_LENGTH,   //  output token limit
    PC_STOP_TOOL,     //  the model called tools
    PC_STOP_SEQUENCE, //  a stop sequence matched
    PC_STOP_FILTER,   //  safety / content filter
    PC_STOP_REFUSAL,  //  the model refused (Anthropic refusal)
    PC_STOP_PAUSE,    //  long turn paused (Anthropic pause_turn)
} pc_stop_t;

//  Kinds of content blocks in a stream.
typedef enum {
    PC_BLOCK_NONE = 0,
    PC_BLOCK_TEXT,     //  answer text
    PC_BLOCK_THINKING, //  reasoning text
    PC_BLOCK_TOOL,     //  a tool call: id, name, argument JSON text
} pc_block_t;

//  What the neutral stream tells a client writer.
typedef enum {
    PC_EV_START,       //  the answer begins (id, model known)
    PC_EV_BLOCK_START, //  a block opens: block, index, id/name for tools
    PC_EV_DELTA,       //  text of the open block
    PC_EV_BLOCK_STOP,  //  the open block closes
    PC_EV_END,         //  the answer ends: stop reason and usage are final
} pc_ev_kind_t;

typedef struct {
    pc_ev_kind_t kind; //  what happened
    pc_block_t block;  //  kind of the block concerned
    int index;         //  block number, from 0, in client order
    int tool_index;    //  for tool blocks: number among the tool calls, from 0
    const char *id;    //  tool call id (BLOCK_START of a tool)
    const char *name;  //  tool name (BLOCK_START of a tool)
    const char *text;  //  DELTA bytes (not NUL-terminated)
    size_t size;       //  DELTA byte count
} pc_event_t;

//  Stream state shared by the common layer, the upstream readers and the
//  client writers. Readers keep their own state in `up`, writers in `cl`.
struct _proto_convert_stream_t {
    int up_protocol;         //  proto_protocol_t of the upstream
    int cl_protocol;         //  proto_protocol_t of the client
    char *model;             //  model name shown to the client
    bool client_usage;       //  the client wants usage in the stream
    bool json_array;         //  Gemini client without alt=sse
    zchunk_t *out;           //  output of the current call (borrowed)
    char id[128];            //  answer id shown to the client
    int64_t created;         //  Unix time of the answer
    proto_usage_t usage;     //  usage reported by the upstream so far
    uint64_t reasoning;      //  reasoning tokens, when the upstream says
    pc_stop_t stop;          //  stop reason, once known
    char *stop_sequence;     //  the stop sequence that matched, or NULL
    bool started;            //  START went to the client
    bool ended;              //  END went to the client
    bool upstream_done;      //  the upstream's end marker was seen
    bool failed;             //  an error was reported; no more output
    int blocks;              //  blocks opened so far (next block index)
    pc_block_t open;         //  kind of the open block, NONE when none
    int open_index;          //  index of the open block
    int tools;               //  tool blocks opened so far
    bool open_pending;       //  a text/thinking block is announced but empty
    pc_block_t pending_kind; //  kind of that announced block
    size_t content_bytes;    //  content bytes sent to the client
    json_t *up;              //  reader state (object), owned
    json_t *cl;              //  writer state (object), owned
    char error[256];         //  why the last call failed
};

typedef struct _pc_codec_t pc_codec_t;

//  What one request conversion drops (docs/conversion.md, "Dropped or
//  refused"): readers name the client's fields they leave out, writers the
//  neutral fields the upstream cannot take, told in the client's words
//  through the client codec's names table.
typedef struct {
    const pc_codec_t *client; //  whose field names are reported
    json_t *dropped;          //  names, in the order first dropped (owned)
} pc_ctx_t;

//  One protocol's readers and writers.
struct _pc_codec_t {
    int protocol;     //  proto_protocol_t
    const char *name; //  for messages: "OpenAI Chat Completions"
    //  Client request -> neutral request; NULL with error on refusal. What
    //  only tunes or annotates and has no neutral form is named in ctx.
    json_t *(*request_read)(const json_t *request, bool stream, pc_ctx_t *ctx, char *error,
                            size_t size);
    //  Neutral request -> upstream request; NULL with error when the upstream
    //  cannot express something that changes the answer's meaning; what
    //  only tunes is left out and named in ctx (pc_drop_ir).
    json_t *(*request_write)(const json_t *ir, const char *model, pc_ctx_t *ctx, char *error,
                             size_t size);
    //  Neutral field names -> this protocol's names for them, {NULL, NULL}
    //  ended; a name not listed is reported as it is.
    const char *const (*names)[2];
    //  Upstream answer -> neutral answer (usage filled); NULL with error.
    json_t *(*response_read)(const json_t *response, proto_usage_t *usage, char *error,
                             size_t size);
    //  Neutral answer -> client answer.
    json_t *(*response_write)(const json_t *ir, const char *model, const proto_usage_t *usage);
    //  One parsed upstream event -> pc_* calls. Returns 0 or -1 (self->error).
    int (*stream_read)(proto_convert_stream_t *self, const char *name, json_t *data);
    //  One neutral event -> client bytes in self->out. Returns 0 or -1.
    int (*stream_write)(proto_convert_stream_t *self, const pc_event_t *event);
    //  The message inside an upstream error body, or NULL. Borrowed from body.
    const char *(*error_message)(const json_t *body);
};

extern const pc_codec_t pc_openai_codec;
extern const pc_codec_t pc_anthropic_codec;
extern const pc_codec_t pc_gemini_codec;
extern const pc_codec_t pc_responses_codec;

//  ---------------------------------------------------------------------------
//  Shared helpers (proto_convert.c)

//  One field's share of a request conversion (a reader's client field, a writer's neutral
//  field): reads what it needs of in, adds its part to out, names what it leaves out in ctx.
//  Returns 0, or -1 with a message for the client in error. Readers and writers are lists
//  of these, run in order by pc_fields_run.
typedef int(pc_field_fn)(const json_t *in, json_t *out, pc_ctx_t *ctx, char *error, size_t size);

//  Runs the NULL-ended list of field handlers in order and stops at the first that fails.
//  Returns 0 or -1 (error filled by the handler).
int pc_fields_run(pc_field_fn *const *fields, const json_t *in, json_t *out, pc_ctx_t *ctx,
                  char *error, size_t size);

//  Formats a message into error and returns NULL (for one-line refusals).
void *pc_fail(char *error, size_t size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

//  Names a client field that is left out (once; prefix "" or e.g.
//  "generationConfig." is put before it).
void pc_drop(pc_ctx_t *ctx, const char *prefix, const char *name);

//  Names a neutral field the upstream cannot take, in the client's words.
void pc_drop_ir(pc_ctx_t *ctx, const char *ir_name);

//  Every member of object that is not in the NULL-terminated list known is
//  unknown to the converter: it is dropped and named with prefix.
void pc_drop_unknown(const json_t *object, const char *const *known, const char *prefix,
                     pc_ctx_t *ctx);

//  Appends a text part to a parts array (skips empty text).
void pc_add_text(json_t *parts, const char *text);

//  Appends parts (stolen) as a message of role, merged into the previous
//  message when it has the same role (Anthropic and Gemini alternate
//  roles). Empty parts add nothing.
void pc_push_message(json_t *messages, const char *role, json_t *parts);

//  Parses "data:MIME;base64,DATA" into a media part; other URLs become
//  {type:media, url}. Returns a new part or NULL when the URL is empty.
json_t *pc_media_from_url(const char *url);

//  Returns "data:MIME;base64,DATA" for a media part with data, or its url.
//  Caller owns (free()).
char *pc_media_to_url(const json_t *part);

//  JSON text of a value (compact); "{}" for NULL. Caller owns (free()).
char *pc_dump(const json_t *value);

//  Parses tool-call argument text into an object; "" gives {}. Returns NULL
//  when the text is not a JSON object.
json_t *pc_parse_arguments(const char *text, size_t size);

//  Gemini OpenAPI schema (upper-case type names) -> JSON Schema (lower case),
//  deep copy.
json_t *pc_schema_lower_types(const json_t *schema);

//  Maps reasoning effort words to thinking budgets and back.
int64_t pc_effort_to_budget(const char *effort);
const char *pc_budget_to_effort(int64_t budget);

//  Appends "event: NAME\ndata: JSON\n\n" (name may be NULL) to out; the
//  object is stolen. Returns 0 or -1.
int pc_sse(zchunk_t *out, const char *name, json_t *data);

//  Appends raw bytes.
void pc_append(zchunk_t *out, const char *text);

//  Client-side usage shapes from proto_usage_t (new objects).
json_t *pc_usage_openai(const proto_usage_t *usage, uint64_t reasoning);
json_t *pc_usage_responses(const proto_usage_t *usage, uint64_t reasoning);
json_t *pc_usage_anthropic(const proto_usage_t *usage);
json_t *pc_usage_gemini(const proto_usage_t *usage, uint64_t reasoning);

//  A fresh id with a prefix ("chatcmpl-", "msg_", "resp_", "call_",
//  "toolu_"), derived from seed when given so a stream's ids agree.
void pc_make_id(char *id, size_t size, const char *prefix, const char *seed, int number);

//  ---------------------------------------------------------------------------
//  Stream building blocks for readers (proto_convert.c)

//  Records the answer id/model (either may be NULL) and starts the client
//  stream if it has not started. Returns 0 or -1.
int pc_start(proto_convert_stream_t *self, const char *id);

//  Announces a text or thinking block; it reaches the client only with
//  its first non-empty delta, so an empty block never does.
int pc_block(proto_convert_stream_t *self, pc_block_t kind);

//  Text or thinking delta; opens a block of that kind when the open block
//  is of another kind. Empty deltas are skipped.
int pc_delta(proto_convert_stream_t *self, pc_block_t kind, const char *text, size_t size);

//  Opens a tool block (closing any open block).
int pc_tool(proto_convert_stream_t *self, const char *id, const char *name);

//  Tool argument delta for the open tool block; -1 when no tool block is
//  open.
int pc_tool_args(proto_convert_stream_t *self, const char *text, size_t size);

//  Closes the open block, if any.
int pc_close(proto_convert_stream_t *self);

//  Records the stop reason (first one wins unless it was NONE).
void pc_finish(proto_convert_stream_t *self, pc_stop_t stop, const char *sequence);

//  The upstream's end marker: closes the block and sends END.
int pc_end(proto_convert_stream_t *self);

//  Records an error for the caller; returns -1.
int pc_stream_fail(proto_convert_stream_t *self, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

#endif
