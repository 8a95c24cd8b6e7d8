-- Results ledger and rewards from scoring jobs.
CREATE TABLE ingested_results (
    result_key VARCHAR PRIMARY KEY,
    job_id VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    ingested_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    manifest JSON
);

CREATE TABLE rewards (
    result_key VARCHAR NOT NULL,
    model VARCHAR,
    checkpoint VARCHAR,
    pair_id VARCHAR NOT NULL,
    item_id VARCHAR,
    objective VARCHAR,
    subset VARCHAR,
    split VARCHAR,
    side VARCHAR NOT NULL,
    n_chars INTEGER,
    n_tokens INTEGER,
    reward DOUBLE NOT NULL
);
CREATE INDEX rewards_key ON rewards (result_key);
