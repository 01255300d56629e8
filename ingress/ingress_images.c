#include "ingress_images.h"
#include "proto_check.h"
#include "proto_msg.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ingress_images_check(proto_catalog_t *catalog, int protocol, const char *model, char *error,
                         size_t error_size)
{
    assert(model && error);
    if (protocol != PROTO_PROTOCOL_OPENAI_IMAGES || !catalog)
        return 0;
    const proto_model_t *found = proto_catalog_model_for_client(catalog, model);
    if (!found || found->price_image_micros >= 0)
        return 0;
    snprintf(error, error_size,
             "Invalid 'model': the model '%.100s' does not generate images (it has no price "
             "per image)",
             model);
    return -1;
}

//  --------------------------------------------------------------------------
//  Self test

void ingress_images_test(bool verbose)
{
    if (verbose)
        printf(" * ingress_images: ");
    const char *json = "{\"providers\":[{\"id\":1,\"name\":\"p\"}],\"models\":[{\"id\":1,\"name\":"
                       "\"painter\",\"price_image_micros\":40000},"
                       "{\"id\":2,\"name\":\"chat\"},"
                       "{\"id\":3,\"name\":\"free-painter\",\"price_image_micros\":0}]}";
    char problem[200];
    proto_catalog_t *catalog = proto_catalog_from_json(json, problem, sizeof problem);
    PROTO_CHECK(catalog);
    char error[200] = "";
    PROTO_CHECK(ingress_images_check(catalog, PROTO_PROTOCOL_OPENAI_IMAGES, "painter", error,
                                     sizeof error) == 0);
    PROTO_CHECK(ingress_images_check(catalog, PROTO_PROTOCOL_OPENAI_IMAGES, "free-painter", error,
                                     sizeof error) == 0);
    //  Unknown: billing's answer (404) is the one the client gets.
    PROTO_CHECK(ingress_images_check(catalog, PROTO_PROTOCOL_OPENAI_IMAGES, "nope", error,
                                     sizeof error) == 0);
    //  A chat model is fine for chat, not for images.
    PROTO_CHECK(ingress_images_check(catalog, PROTO_PROTOCOL_OPENAI, "chat", error, sizeof error) ==
                0);
    PROTO_CHECK(ingress_images_check(catalog, PROTO_PROTOCOL_OPENAI_IMAGES, "chat", error,
                                     sizeof error) == -1);
    PROTO_CHECK(strstr(error, "'model'") && strstr(error, "'chat'") &&
                strstr(error, "price per image"));
    //  A pin is its model: checked here too, since a request admitted from
    //  a lease never reaches billing's check.
    PROTO_CHECK(ingress_images_check(catalog, PROTO_PROTOCOL_OPENAI_IMAGES, "p/chat", error,
                                     sizeof error) == -1);
    proto_catalog_destroy(&catalog);
    if (verbose)
        printf("OK\n");
}
