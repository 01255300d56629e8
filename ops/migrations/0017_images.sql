-- Image generation (POST /v1/images/generations, docs/billing.md "Images"):
-- a model is billed per image it makes. NULL: the model makes no images,
-- and an image request for it is refused with a 400 naming 'model'.
ALTER TABLE models ADD COLUMN price_image_micros bigint
    CHECK (price_image_micros IS NULL OR price_image_micros >= 0);

-- How many images a request made (the answer's `data` items); 0 for
-- everything else. cost_micros includes images x price_image_micros.
ALTER TABLE usage ADD COLUMN images integer NOT NULL DEFAULT 0 CHECK (images >= 0);
