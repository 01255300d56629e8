/*  dispatch_audio: audio input, and the upstreams that cannot take it.

    Clients send audio as OpenAI Chat `input_audio` content parts
    (messages[i].content[j]) or as Gemini parts whose inlineData (or
    inline_data, or fileData) has an audio MIME type (audio/...)
    (contents[i].parts[j]). Only the same protocol carries them: Anthropic
    Messages and OpenAI Responses take no audio, and the converters do not
    turn one protocol's audio into the other's. So a candidate whose
    upstream protocol differs from the client's is skipped for a request with
    audio (the next may take it), and when no candidate could, the client
    gets a 400 in its own format naming the first audio field.
*/
#ifndef DISPATCH_AUDIO_H_INCLUDED
#define DISPATCH_AUDIO_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#define DISPATCH_AUDIO_FIELD_MAX 96 //  room for the longest field path written

//  Finds the first audio input of a client request body (proto_protocol_t
//  client_protocol) and writes its path ("messages[1].content[0].input_audio",
//  "contents[0].parts[1].inlineData") into field. Returns false (field "")
//  when the body has none or is not JSON. Looks only when the bytes mention
//  "udio" (audio, Audio), so a request without audio costs a scan.
bool dispatch_audio_field(int client_protocol, const char *body, size_t size, char *field,
                          size_t field_size);

//  True when an upstream of upstream_protocol takes the audio input of a
//  client_protocol request: the same protocol, OpenAI Chat or Gemini.
bool dispatch_audio_accepted(int client_protocol, int upstream_protocol);

//  Self test.
void dispatch_audio_test(bool verbose);

#endif
