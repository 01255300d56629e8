-- Strict conversion (docs/conversion.md, "Dropped or refused").
--
-- When a request is converted to another protocol, a field that only tunes
-- or annotates and that the upstream cannot take is dropped and named in the
-- client's x-tollgate-dropped-fields header. An operator can make a provider
-- or a model strict: such fields are then refused (HTTP 400 naming them)
-- instead of dropped. Either being strict is enough.
ALTER TABLE providers ADD COLUMN strict_conversion boolean NOT NULL DEFAULT false;
ALTER TABLE models ADD COLUMN strict_conversion boolean NOT NULL DEFAULT false;
