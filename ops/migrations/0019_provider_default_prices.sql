-- A provider's default prices (docs/billing.md "Names no logical model has"):
-- what a model it lists costs when no logical model has that name (a
-- zero-config name, `gpt-4.1-mini` straight from the provider's list, or its
-- pin `provider/gpt-4.1-mini`). NULL input and output prices: the provider's
-- unlisted names are not served (404 model_not_found, as before). Per million
-- tokens, in micros, as the models' prices; cache reads and cache writes are
-- charged at the input price unless set, a request price is 0 unless set.
ALTER TABLE providers
    ADD COLUMN default_price_in_micros bigint
        CHECK (default_price_in_micros IS NULL OR default_price_in_micros >= 0),
    ADD COLUMN default_price_out_micros bigint
        CHECK (default_price_out_micros IS NULL OR default_price_out_micros >= 0),
    ADD COLUMN default_price_cache_read_micros bigint
        CHECK (default_price_cache_read_micros IS NULL OR default_price_cache_read_micros >= 0),
    ADD COLUMN default_price_cache_write_micros bigint
        CHECK (default_price_cache_write_micros IS NULL OR default_price_cache_write_micros >= 0),
    ADD COLUMN default_price_request_micros bigint
        CHECK (default_price_request_micros IS NULL OR default_price_request_micros >= 0),
    -- Input and output are set together or not at all: half a price would
    -- serve a name at a price nobody chose.
    ADD CONSTRAINT providers_default_price_pair
        CHECK ((default_price_in_micros IS NULL) = (default_price_out_micros IS NULL));
