-- Training curves and evaluation results (issue: reward-model lab).
CREATE TABLE training_history (
    result_key VARCHAR NOT NULL,
    checkpoint VARCHAR,
    step INTEGER,
    epoch DOUBLE,
    train_loss DOUBLE,
    train_acc DOUBLE,
    eval_loss DOUBLE,
    eval_acc DOUBLE
);

CREATE TABLE eval_items (
    result_key VARCHAR NOT NULL,
    checkpoint VARCHAR NOT NULL,
    base_model VARCHAR,
    regime VARCHAR,
    seed INTEGER,
    item_id VARCHAR NOT NULL,
    objective VARCHAR,
    subset VARCHAR,
    correct BOOLEAN NOT NULL,
    margin DOUBLE
);
CREATE INDEX eval_items_key ON eval_items (result_key, checkpoint);

CREATE TABLE eval_subsets (
    result_key VARCHAR NOT NULL,
    checkpoint VARCHAR NOT NULL,
    base_model VARCHAR,
    regime VARCHAR,
    seed INTEGER,
    subset VARCHAR NOT NULL,
    subset_type VARCHAR,
    n_items INTEGER,
    accuracy DOUBLE,
    ci_lo DOUBLE,
    ci_hi DOUBLE,
    mean_margin_correct DOUBLE,
    length_longer DOUBLE,
    length_shorter DOUBLE,
    ece DOUBLE,
    brier DOUBLE,
    nll DOUBLE
);

CREATE TABLE eval_reliability (
    result_key VARCHAR NOT NULL,
    checkpoint VARCHAR NOT NULL,
    scope VARCHAR NOT NULL,
    bin_lo DOUBLE,
    bin_hi DOUBLE,
    count INTEGER,
    mean_confidence DOUBLE,
    accuracy DOUBLE
);

CREATE TABLE eval_transfer (
    result_key VARCHAR NOT NULL,
    base_model VARCHAR,
    seed INTEGER,
    subset VARCHAR NOT NULL,
    subset_type VARCHAR,
    n_items INTEGER,
    transferability DOUBLE,
    jaccard_helpful DOUBLE,
    jaccard_harmless DOUBLE
);
