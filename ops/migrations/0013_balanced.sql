-- The "balanced" scheduling mode (docs/routing.md section 3): one score
-- blending weight, latency, reliability and price.
ALTER TABLE models DROP CONSTRAINT models_scheduling_known;
ALTER TABLE models ADD CONSTRAINT models_scheduling_known CHECK (scheduling IN
    ('priority', 'key_priority', 'weighted', 'latency', 'cost', 'reliability', 'balanced'));
