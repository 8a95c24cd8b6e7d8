-- The capture index: one row per (result, checkpoint, hook) of neuron_stats, so listing and looking up
-- captures reads a handful of rows instead of scanning every statistic row.
-- neuron_captures_source defines it once: StatsStore's ingest refreshes the rows of each ingested result
-- from it (in the ingest's transaction), and this migration backfills a store made before the index.
CREATE VIEW neuron_captures_source AS
SELECT result_key, checkpoint, any_value(base_model) AS base_model, any_value(regime) AS regime, hook,
       max(layer) + 1 AS n_layers, max(neuron) + 1 AS n_neurons, count(*) AS n_rows
FROM neuron_stats GROUP BY result_key, checkpoint, hook;

CREATE TABLE neuron_captures (
    result_key VARCHAR NOT NULL,
    checkpoint VARCHAR NOT NULL,
    base_model VARCHAR,
    regime VARCHAR,
    hook VARCHAR,
    n_layers INTEGER NOT NULL,
    n_neurons INTEGER NOT NULL,
    n_rows BIGINT NOT NULL
);

INSERT INTO neuron_captures SELECT * FROM neuron_captures_source;
