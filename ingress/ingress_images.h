/*  ingress_images: what the ingress decides about an image generation
    (POST /v1/images/generations, OpenAI Images) before it is admitted.

    The body's own rules (prompt, n, no stream) are ingress_parse's; this is
    the catalog's part: a model is billed per image, so a model without a
    price per image (models.price_image_micros NULL) does not generate
    images, and the client is told so in OpenAI's error shape before
    anything is reserved. A model this ingress does not know (or may not
    use) is left to billing, which answers ADMIT with the reason.
*/
#ifndef INGRESS_IMAGES_H_INCLUDED
#define INGRESS_IMAGES_H_INCLUDED

#include "proto_catalog.h"

#include <stdbool.h>
#include <stddef.h>

//  Returns 0 when a request of client protocol `protocol` for `model` may
//  go on, or -1 with a message naming the field for a 400 in error: an image
//  generation for a model that has no price per image.
int ingress_images_check(proto_catalog_t *catalog, int protocol, const char *model, char *error,
                         size_t error_size);

//  Self test.
void ingress_images_test(bool verbose);

#endif
