#include "dispatch_audio.h"
#include "proto_check.h"
#include "proto_msg.h"

#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

//  An OpenAI Chat message's content part that is audio.
static bool s_chat_audio(json_t *part)
{
    const char *type = json_string_value(json_object_get(part, "type"));
    return (type && strcmp(type, "input_audio") == 0) ||
           (!type && json_object_get(part, "input_audio"));
}

static bool s_chat(json_t *root, char *field, size_t size)
{
    size_t i, j;
    json_t *message, *part;
    json_array_foreach(json_object_get(root, "messages"), i, message)
    {
        json_array_foreach(json_object_get(message, "content"), j, part)
        {
            if (s_chat_audio(part)) {
                snprintf(field, size, "messages[%zu].content[%zu].input_audio", i, j);
                return true;
            }
        }
    }
    return false;
}

//  The member of a Gemini part holding audio, or NULL.
static const char *s_gemini_audio(json_t *part)
{
    const char *names[] = {"inlineData", "inline_data", "fileData", "file_data"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        json_t *data = json_object_get(part, names[i]);
        const char *mime = json_string_value(json_object_get(data, "mimeType"));
        if (!mime)
            mime = json_string_value(json_object_get(data, "mime_type"));
        if (mime && strncasecmp(mime, "audio/", 6) == 0)
            return names[i];
    }
    return NULL;
}

static bool s_gemini(json_t *root, char *field, size_t size)
{
    size_t i, j;
    json_t *content, *part;
    json_t *contents = json_object_get(root, "contents");
    if (!contents) //  countTokens' whole request
        contents = json_object_get(json_object_get(root, "generateContentRequest"), "contents");
    json_array_foreach(contents, i, content)
    {
        json_array_foreach(json_object_get(content, "parts"), j, part)
        {
            const char *name = s_gemini_audio(part);
            if (name) {
                snprintf(field, size, "contents[%zu].parts[%zu].%s", i, j, name);
                return true;
            }
        }
    }
    return false;
}

bool dispatch_audio_field(int client_protocol, const char *body, size_t size, char *field,
                          size_t field_size)
{
    assert(field && field_size);
    *field = '\0';
    if (client_protocol != PROTO_PROTOCOL_OPENAI && client_protocol != PROTO_PROTOCOL_GEMINI)
        return false;
    if (!body || !memmem(body, size, "udio", 4))
        return false;
    json_t *root = json_loadb(body, size, 0, NULL);
    bool found = client_protocol == PROTO_PROTOCOL_OPENAI ? s_chat(root, field, field_size)
                                                          : s_gemini(root, field, field_size);
    json_decref(root);
    return found;
}

bool dispatch_audio_accepted(int client_protocol, int upstream_protocol)
{
    return client_protocol == upstream_protocol &&
           (client_protocol == PROTO_PROTOCOL_OPENAI || client_protocol == PROTO_PROTOCOL_GEMINI);
}

//  --------------------------------------------------------------------------
//  Self test

static const char *s_found(int protocol, const char *body)
{
    static char field[DISPATCH_AUDIO_FIELD_MAX];
    return dispatch_audio_field(protocol, body, strlen(body), field, sizeof field) ? field : NULL;
}

void dispatch_audio_test(bool verbose)
{
    if (verbose)
        printf(" * dispatch_audio: ");
    const char *chat = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"audio "
                       "expert\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
                       "\"what is said?\"},{\"type\":\"input_audio\",\"input_audio\":{\"data\":"
                       "\"UklGRg==\",\"format\":\"wav\"}}]}]}";
    const char *field = s_found(PROTO_PROTOCOL_OPENAI, chat);
    PROTO_CHECK(field && strcmp(field, "messages[1].content[1].input_audio") == 0);
    //  The word alone is not audio; nor is an image.
    PROTO_CHECK(!s_found(PROTO_PROTOCOL_OPENAI, "{\"model\":\"m\",\"messages\":[{\"role\":"
                                                "\"user\",\"content\":\"audio please\"}]}"));
    PROTO_CHECK(!s_found(PROTO_PROTOCOL_OPENAI, "not json, audio"));
    const char *gemini = "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"hi\"},"
                         "{\"inline_data\":{\"mime_type\":\"image/png\",\"data\":\"QQ==\"}},"
                         "{\"inlineData\":{\"mimeType\":\"audio/mp3\",\"data\":\"QQ==\"}}]}]}";
    field = s_found(PROTO_PROTOCOL_GEMINI, gemini);
    PROTO_CHECK(field && strcmp(field, "contents[0].parts[2].inlineData") == 0);
    field = s_found(PROTO_PROTOCOL_GEMINI,
                    "{\"contents\":[{\"parts\":[{\"file_data\":{\"mime_type\":\"Audio/wav\","
                    "\"file_uri\":\"gs://b/a.wav\"}}]}]}");
    PROTO_CHECK(field && strcmp(field, "contents[0].parts[0].file_data") == 0);
    PROTO_CHECK(!s_found(PROTO_PROTOCOL_GEMINI,
                         "{\"contents\":[{\"parts\":[{\"inlineData\":{"
                         "\"mimeType\":\"image/png\",\"data\":\"audio\"}}]}]}"));
    //  Anthropic and Responses have no audio part to find.
    PROTO_CHECK(!s_found(PROTO_PROTOCOL_ANTHROPIC, chat));
    PROTO_CHECK(dispatch_audio_accepted(PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_OPENAI));
    PROTO_CHECK(dispatch_audio_accepted(PROTO_PROTOCOL_GEMINI, PROTO_PROTOCOL_GEMINI));
    PROTO_CHECK(!dispatch_audio_accepted(PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_ANTHROPIC));
    PROTO_CHECK(!dispatch_audio_accepted(PROTO_PROTOCOL_OPENAI, PROTO_PROTOCOL_GEMINI));
    PROTO_CHECK(!dispatch_audio_accepted(PROTO_PROTOCOL_GEMINI, PROTO_PROTOCOL_OPENAI));
    PROTO_CHECK(!dispatch_audio_accepted(PROTO_PROTOCOL_ANTHROPIC, PROTO_PROTOCOL_ANTHROPIC));
    if (verbose)
        printf("OK\n");
}
