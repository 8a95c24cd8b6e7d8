-- Per-neuron statistics from capture jobs, and top activating examples.
CREATE TABLE neuron_stats (
    result_key VARCHAR NOT NULL,
    checkpoint VARCHAR NOT NULL,
    base_model VARCHAR,
    regime VARCHAR,
    hook VARCHAR,
    objective VARCHAR NOT NULL,
    side VARCHAR NOT NULL,
    layer INTEGER NOT NULL,
    neuron INTEGER NOT NULL,
    mean DOUBLE,
    mean_sq_change DOUBLE,
    frac_pos DOUBLE,
    var DOUBLE,
    max DOUBLE,
    n_tokens BIGINT
);
CREATE INDEX neuron_stats_ck ON neuron_stats (checkpoint, layer, neuron);

CREATE TABLE neuron_examples (
    result_key VARCHAR NOT NULL,
    checkpoint VARCHAR NOT NULL,
    objective VARCHAR NOT NULL,
    side VARCHAR NOT NULL,
    layer INTEGER NOT NULL,
    neuron INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    pair_id VARCHAR,
    token_pos INTEGER,
    value DOUBLE,
    text_before VARCHAR,
    token VARCHAR,
    text_after VARCHAR
);
CREATE INDEX neuron_examples_ck ON neuron_examples (checkpoint, layer, neuron);
