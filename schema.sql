-- actwh schema: the one place the DDL lives.
--
-- Four sections.
--
-- `catalog` is executed against the catalog database: an embedded DuckDB file by default, or any
-- SQLAlchemy URL (PostgreSQL for a team). It therefore sticks to types both understand. Readers
-- copy it into an in-memory DuckDB snapshot, so every catalog table is also queryable from SQL.
--
-- `facts` is never executed against the catalog. Each CREATE TABLE declares the columns of a
-- Parquet fact table: the writer derives the file's Arrow schema from it and readers expose a view
-- of the same name, with its columns in this order. The `-- partition:` line before a table names
-- its Hive partition columns (directories such as run=base/layer=19/, not columns in the file).
-- A `-- row groups: N rows` line before it marks a table read a few rows at a time (one neuron's
-- value vector): its files are written in row groups of N rows with min/max statistics, so a
-- lookup reads one group of its partition's file, not the file.
-- Vector columns are declared FLOAT[]; they are written as fixed-size lists of the stored dtype
-- (float16 or float32) and the views cast them to FLOAT[d], so array_cosine_similarity and
-- array_inner_product work on them directly.
--
-- `upgrades` brings a catalog written by an older actwh up to date (run after adding the columns
-- it lacks); readers run it on their in-memory copy too. `macros` holds the rules the named
-- queries share; readers define them in every snapshot.
--
-- Conventions (TransformerLens names): layers are 0-based; `pos` indexes the unpadded sequence
-- (prompt then continuation, BOS included when the tokenizer adds one); `site` is one of
-- resid_pre, resid_mid, resid_post, attn_out, mlp_out, mlp_post (the MLP neuron coefficients).

-- section: catalog

CREATE TABLE IF NOT EXISTS warehouse_info (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

-- One row per model: the raw HF weights it was loaded from (no LayerNorm folding).
CREATE TABLE IF NOT EXISTS models (
    name VARCHAR PRIMARY KEY,
    source VARCHAR NOT NULL,          -- hub id, local directory, .gguf file, or "embedded"
    revision VARCHAR,                 -- hub commit, or sha256 of the weight files
    architecture VARCHAR NOT NULL,    -- HF model_type: gpt2, gpt_neox, llama, gemma2, phi3, ...
    mlp_gated BOOLEAN,                -- true: m_i = act(gate)·up is signed, so a neuron writes
                                      -- +v_i or −v_i (Llama, Gemma, ...); false: GELU, m_i ≥ −0.17
    mlp_reads VARCHAR,                -- the residual site the MLP reads through its norm:
                                      -- resid_mid, or resid_pre where attention and MLP run in
                                      -- parallel (GPT-NeoX: such a model has no resid_mid)
    mlp_post_norm BOOLEAN,            -- a norm follows the MLP (Gemma 2/3, OLMo 2): the residual
                                      -- receives γ⊙y/rms(y), and value_vectors.vec is γ⊙v_i
    n_layers INTEGER NOT NULL,
    d_model INTEGER NOT NULL,
    d_mlp INTEGER NOT NULL,
    vocab_size INTEGER NOT NULL,
    dtype VARCHAR NOT NULL,           -- dtype the model ran in
    tokenizer_sha256 VARCHAR NOT NULL,
    parent VARCHAR,                   -- the model this one was derived from (DPO, intervention)
    role VARCHAR NOT NULL,            -- base, tuned, dpo, intervened, control
    config TEXT,                      -- JSON: how it was made (training config, edit)
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS prompt_sets (
    name VARCHAR PRIMARY KEY,
    sha256 VARCHAR NOT NULL,          -- of the prompts as read, so a changed file is noticed
    source VARCHAR NOT NULL,          -- the file it was read from
    n_prompts INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS prompts (
    prompt_set VARCHAR NOT NULL,
    prompt INTEGER NOT NULL,          -- 0-based index in the set; the `prompt` column of facts
    text VARCHAR NOT NULL,            -- the prompt as given (a chat rendered as JSON messages)
    messages TEXT,                    -- JSON list of {role, content} for chat prompts
    source_prompt INTEGER,            -- for a transformed variant: the prompt it came from
    transform VARCHAR,                -- rot13, base64, leet, ... (NULL for an original prompt)
    meta TEXT,                        -- JSON: every other field of the input line
    PRIMARY KEY (prompt_set, prompt)
);

-- One row per run: one model over one prompt set.
CREATE TABLE IF NOT EXISTS runs (
    name VARCHAR PRIMARY KEY,
    model VARCHAR NOT NULL,
    prompt_set VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,            -- generate | teacher_forced
    source_run VARCHAR,               -- teacher_forced: the run whose tokens were replayed
    config TEXT NOT NULL,             -- JSON: sites, layers, dtype, batch size, ...
    status VARCHAR NOT NULL,          -- running | complete | failed (see error; the same command
                                      -- resumes it) | stale (its source run was repaired)
    n_prompts INTEGER NOT NULL,
    n_tokens BIGINT NOT NULL,         -- committed tokens so far
    warnings TEXT,                    -- JSON list of warnings (truncated prompts, fp16 fallback)
    created_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    error TEXT                        -- why it failed (status failed)
);

-- One row per commit: a set of Parquet files that became visible together.
CREATE TABLE IF NOT EXISTS commits (
    id VARCHAR PRIMARY KEY,
    run VARCHAR,                      -- set for run data
    model VARCHAR,                    -- set for model data (value vectors)
    shard VARCHAR,                    -- i/N of the worker that wrote it
    n_prompts INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- Every file that is part of the warehouse. Readers choose a query's files here, by their
-- partition values, before any file is opened.
CREATE TABLE IF NOT EXISTS commit_files (
    path VARCHAR PRIMARY KEY,         -- relative to the warehouse root
    commit_id VARCHAR NOT NULL,
    table_name VARCHAR NOT NULL,
    n_rows BIGINT NOT NULL,
    n_bytes BIGINT NOT NULL,
    sha256 VARCHAR NOT NULL,
    vector_size INTEGER,              -- d of the file's vector column, if it has one
    vector_dtype VARCHAR,             -- float16 | float32: how its vectors are stored
    run VARCHAR,                      -- its partition values (its folders run=, model=, layer=);
    model VARCHAR,                    -- NULL where the table has no such partition
    layer SMALLINT
);

-- Files that left the warehouse (merged by actwh compact, replaced by a rebuild): no reader that
-- starts now opens them, and they stay on disk for readers that started before, until a grace
-- period after `retired_at` has passed (actwh compact and actwh check --repair delete them then).
CREATE TABLE IF NOT EXISTS retired_files (
    path VARCHAR PRIMARY KEY,         -- relative to the warehouse root
    table_name VARCHAR NOT NULL,
    commit_id VARCHAR NOT NULL,       -- the commit that retired it
    retired_at TIMESTAMP NOT NULL
);

-- The commits whose files a compaction merged (transitively: a compaction of compacted files
-- names the original commits). A repair that drops a merged file redoes their prompts.
CREATE TABLE IF NOT EXISTS commit_sources (
    commit_id VARCHAR NOT NULL,       -- the compaction's commit
    source_commit VARCHAR NOT NULL,
    PRIMARY KEY (commit_id, source_commit)
);

-- The commit log Spark follows (data/<table>/_spark_metadata/<version>.compact): the version
-- last published for each table, and a digest of its file list (see warehouse/spark_log.py).
CREATE TABLE IF NOT EXISTS spark_logs (
    table_name VARCHAR PRIMARY KEY,
    version BIGINT NOT NULL,
    digest VARCHAR NOT NULL,
    published_at TIMESTAMP NOT NULL
);

-- Who is writing each shard of a run now (warehouse/lease.py): two processes writing one run's
-- shard would delete each other's unrecorded files, so a writer holds this lease, renews it by a
-- heartbeat and in every commit's transaction, and is refused while another holds it.
CREATE TABLE IF NOT EXISTS run_leases (
    run VARCHAR NOT NULL,
    shard VARCHAR NOT NULL,           -- the writer's shard tag (s0of1)
    holder VARCHAR NOT NULL,          -- a random id of the holding process
    host VARCHAR NOT NULL,
    pid INTEGER NOT NULL,
    expires_at TIMESTAMP NOT NULL,    -- free after this unless renewed (or its process is gone)
    PRIMARY KEY (run, shard)
);

-- Which commit holds each prompt of a run: the primary key makes every prompt land exactly once.
CREATE TABLE IF NOT EXISTS commit_prompts (
    run VARCHAR NOT NULL,
    prompt INTEGER NOT NULL,
    commit_id VARCHAR NOT NULL,
    PRIMARY KEY (run, prompt)
);

-- Files a repair dropped from a commit whose other files were intact. The same ingest command
-- redoes exactly these: it re-runs the commit's prompts, writes only these files' tables and
-- partitions, and removes the rows in the same transaction.
CREATE TABLE IF NOT EXISTS commit_gaps (
    path VARCHAR PRIMARY KEY,         -- the dropped file, relative to the warehouse root
    commit_id VARCHAR NOT NULL,       -- the commit it belonged to (its prompts are redone)
    run VARCHAR NOT NULL,
    table_name VARCHAR NOT NULL,
    n_rows BIGINT NOT NULL
);

-- A named vector in a model's residual space: a probe, a value vector, an SVD component, δx.
CREATE TABLE IF NOT EXISTS directions (
    model VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,            -- file | value_vector | svd | delta | probe | random
    d_model INTEGER NOT NULL,
    vector BYTEA NOT NULL,            -- float32, little-endian; readers see it as vec FLOAT[d]
    norm DOUBLE PRECISION NOT NULL,
    meta TEXT,                        -- JSON: how it was made (source, layer, neuron, top N, ...)
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (model, name)
);

-- The FAISS index of a model's value vectors (a file under index/).
CREATE TABLE IF NOT EXISTS vector_indexes (
    model VARCHAR PRIMARY KEY,
    path VARCHAR NOT NULL,            -- relative to the warehouse root
    kind VARCHAR NOT NULL,            -- flat | ivf | hnsw
    n_vectors BIGINT NOT NULL,
    d_mlp INTEGER NOT NULL,           -- faiss id = layer * d_mlp + neuron
    sha256 VARCHAR NOT NULL,
    unembed VARCHAR,                  -- how top tokens were read: raw (W_U·v) | final_norm
                                      -- (W_U·(γ⊙v), through the final norm's gain)
    readout VARCHAR,                  -- the readout U (.npy, float32 [vocab, d_model], under
                                      -- index/): logits = U·v (see the vocabulary table)
    readout_sha256 VARCHAR,
    created_at TIMESTAMP NOT NULL
);

-- One row per evaluation of a model (paper Tables 2 and 4): toxicity of greedy continuations,
-- perplexity on a text, and the paper's F1 against reference continuations.
CREATE TABLE IF NOT EXISTS evaluations (
    model VARCHAR NOT NULL,
    prompt_set VARCHAR NOT NULL,
    scorer VARCHAR NOT NULL,
    run VARCHAR NOT NULL,             -- the generation run that was scored
    n_prompts INTEGER NOT NULL,
    toxicity DOUBLE PRECISION,        -- mean score of the continuations
    perplexity DOUBLE PRECISION,
    ppl_text VARCHAR,                 -- the text perplexity was measured on
    ppl_tokens BIGINT,
    f1 DOUBLE PRECISION,
    f1_data VARCHAR,
    n_f1 INTEGER,
    config TEXT,                      -- JSON: generation and evaluation settings
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (model, prompt_set, scorer)
);

-- section: facts

-- partition: run
CREATE TABLE tokens (
    run VARCHAR,
    prompt INTEGER,
    pos INTEGER,
    token_id INTEGER,
    token VARCHAR,                    -- the token decoded on its own
    is_generated BOOLEAN,
    logprob FLOAT,                    -- log P(token | tokens before); NULL at pos 0, and for prompt
                                      -- tokens of a generate run without --prompt-logprobs
    turn SMALLINT                     -- chat prompts: index of the message the token belongs to
                                      -- (-1: text the template inserted itself, such as a
                                      -- default system prompt)
);

-- partition: run
CREATE TABLE generations (
    run VARCHAR,
    prompt INTEGER,
    prompt_text VARCHAR,              -- the prompt as the model saw it (after any truncation)
    continuation VARCHAR,             -- the generated text, special tokens removed
    n_prompt_tokens INTEGER,
    n_generated INTEGER,
    truncated BOOLEAN,                -- the prompt was cut to fit --max-prompt-tokens
    stop VARCHAR                      -- eos | length | none (no generation) | teacher_forced
);

-- Toxicity scores of generated continuations, one row per scorer.
-- partition: run
CREATE TABLE scores (
    run VARCHAR,
    prompt INTEGER,
    scorer VARCHAR,                   -- profanity | wordlist | detoxify | perspective
    score FLOAT                       -- in [0, 1]
);

-- What perplexity and F1 are averages of, per item, for bootstrap intervals (toxicity_table):
-- metric 'nll': one paragraph of the perplexity text, value its tokens' NLL (the paper's window
-- weighting), weight its tokens, so exp(Σ value / Σ weight) is the perplexity; metric 'f1': one
-- F1 sample, value its F1, weight 1.
-- partition: run
CREATE TABLE eval_items (
    run VARCHAR,                      -- the evaluation run
    metric VARCHAR,                   -- nll | f1
    source VARCHAR,                   -- the perplexity text or the F1 data it came from
    item INTEGER,
    value DOUBLE,
    weight DOUBLE
);

-- A vector column `vec` may have a `vec_scale` column beside it: the stored values times
-- vec_scale are the vector. It is a power of two, set only on rows whose values exceed float16's
-- ±65504 (Gemma's residual stream reaches 1e5), so float16 keeps its size and its precision
-- relative to each row's largest value; NULL means 1. Readers apply it (the views, wh.scan,
-- wh.vectors, exports) and do not show it.

-- partition: run, layer
CREATE TABLE residuals (
    run VARCHAR,
    layer SMALLINT,
    prompt INTEGER,
    pos INTEGER,
    site VARCHAR,
    vec FLOAT[],                      -- [d_model]
    vec_scale FLOAT
);

-- partition: run, layer
CREATE TABLE mlp_acts (
    run VARCHAR,
    layer SMALLINT,
    prompt INTEGER,
    pos INTEGER,
    vec FLOAT[],                      -- [d_mlp]: the coefficients m_i of every value vector
    vec_scale FLOAT
);

-- Dot product and cosine of a residual-space site with every direction of the model, computed on
-- the device during the forward pass.
-- partition: run, layer
CREATE TABLE projections (
    run VARCHAR,
    layer SMALLINT,
    prompt INTEGER,
    pos INTEGER,
    site VARCHAR,
    direction VARCHAR,
    dot FLOAT,
    cos FLOAT
);

-- Coefficients m_i (mlp_post) of tracked neurons, e.g. the top toxic value vectors.
-- partition: run, layer
CREATE TABLE neuron_acts (
    run VARCHAR,
    layer SMALLINT,
    prompt INTEGER,
    pos INTEGER,
    neuron INTEGER,
    act FLOAT
);

-- How every neuron fires, for every run: sums of its coefficient m_i over the tokens of one commit,
-- split into prompt and generated tokens and by the prompts' arm. Sum the rows of a run for its
-- totals (e.g. the mean coefficient is sum(sum) / sum(n); one arm's: arm_stats); each commit adds
-- its own rows, so resumed and sharded runs count every token once.
-- partition: run, layer
CREATE TABLE neuron_stats (
    run VARCHAR,
    layer SMALLINT,
    neuron INTEGER,
    generated BOOLEAN,                -- the tokens counted: generated (true) or prompt (false)
    n BIGINT,                         -- tokens
    n_pos BIGINT,                     -- tokens with m_i > 0
    sum DOUBLE,                       -- Σ m_i
    sum_pos DOUBLE,                   -- Σ max(m_i, 0); Σ min(m_i, 0) = sum − sum_pos
    sum_sq DOUBLE,                    -- Σ m_i²
    arm VARCHAR                       -- the prompts' arm (prompt_arms): plain, rot13, chat, ...;
                                      -- NULL in a run ingested before arms were kept
);

-- Logit lens: softmax(W_U · final_norm(x)) of a residual site, top tokens.
-- partition: run, layer
CREATE TABLE logit_lens (
    run VARCHAR,
    layer SMALLINT,
    prompt INTEGER,
    pos INTEGER,
    site VARCHAR,
    rank SMALLINT,                    -- 1 = most probable
    token_id INTEGER,
    token VARCHAR,
    prob FLOAT
);

-- Logit lens probability of chosen target tokens (--target-tokens), at every lensed layer.
-- partition: run, layer
CREATE TABLE token_probs (
    run VARCHAR,
    layer SMALLINT,
    prompt INTEGER,
    pos INTEGER,
    site VARCHAR,
    token_id INTEGER,
    token VARCHAR,
    prob FLOAT
);

-- Every MLP value vector MLP.v_i^l (row i of W_out). Where a norm with gain γ follows the MLP
-- (models.mlp_post_norm), vec is γ⊙v_i: the direction the neuron writes into the residual
-- stream (its write at a token is m_i·γ⊙v_i/rms(y)). The tokens a vector promotes are read when
-- asked, through the model's readout: vector_tokens(model, vec, 1, 10) are those of v_i,
-- vector_tokens(model, vec, -1, 10) those of −v_i (what a gated neuron promotes when m_i < 0).
-- row groups: 128 rows
-- partition: model, layer
CREATE TABLE value_vectors (
    model VARCHAR,
    layer SMALLINT,
    neuron INTEGER,
    vec FLOAT[],                      -- [d_model]
    norm FLOAT,
    top_tokens VARCHAR[],             -- stored by an actwh older than the readout (NULL since):
    bottom_tokens VARCHAR[]           -- the 10 tokens v_i, and −v_i, promote most
);

-- The tokens of a model (decoded one by one), for reading vectors as tokens: the tokens a vector
-- v promotes are those with the highest logit U·v, where U is the model's readout (a float32
-- matrix [vocab, d_model], vector_indexes.readout): the unembedding's columns W_U[:, w]
-- (vector_indexes.unembed raw, the paper's Table 1), or with the final norm's gain folded in
-- (final_norm: γ⊙W_U[:, w], centred for a LayerNorm). The SQL function vector_tokens reads them.
-- partition: model
CREATE TABLE vocabulary (
    model VARCHAR,
    token_id INTEGER,
    token VARCHAR                     -- the token decoded on its own
);

-- Per parameter tensor: how far a tuned model moved from its base (paper §5.1).
-- partition: model
CREATE TABLE weight_diffs (
    model VARCHAR,                    -- the tuned model
    base VARCHAR,
    parameter VARCHAR,
    numel BIGINT,
    cosine DOUBLE,                    -- cos(θ_base, θ_tuned), flattened; NULL if either is all 0
    norm_base DOUBLE,
    norm_diff DOUBLE,                 -- ‖θ_tuned − θ_base‖
    mean_abs_diff DOUBLE              -- mean |θ_tuned − θ_base| per element
);

-- Per value vector: cosine between base and tuned, and the shift δv = v_tuned − v_base (Fig. 5).
-- row groups: 128 rows
-- partition: model, layer
CREATE TABLE value_vector_diffs (
    model VARCHAR,                    -- the tuned model
    layer SMALLINT,
    base VARCHAR,
    neuron INTEGER,
    cosine FLOAT,
    delta_norm FLOAT,
    delta FLOAT[]                     -- [d_model]
);

-- section: upgrades

-- Format 1 knew two MLP families only: GPT-2 (GELU) and the Llama family (gated).
UPDATE models SET mlp_gated = (architecture <> 'gpt2') WHERE mlp_gated IS NULL;
-- Format 2's models all read resid_mid and had no norm after the MLP.
UPDATE models SET mlp_reads = 'resid_mid' WHERE mlp_reads IS NULL;
UPDATE models SET mlp_post_norm = false WHERE mlp_post_norm IS NULL;

-- section: macros

-- A prompt's own fields (every field of its input line actwh does not use itself, kept as the JSON
-- `meta`: the shipped set's `category`, RealToxicityPrompts' scores, ...), a row per prompt and
-- field, of one prompt set or (NULL) all: `select prompt, value as category from
-- prompt_fields('analysis') where field = 'category'`.
CREATE MACRO prompt_fields(set_name) AS TABLE
    SELECT prompt_set, prompt, f.field,
           json_extract_string(meta, '$."' || f.field || '"') AS value
    FROM prompts, unnest(json_keys(meta)) AS f(field)
    WHERE set_name IS NULL OR prompt_set = set_name;

-- The models whose directions `model_name` may use, nearest first: itself, its parent, the
-- parent's parent, ... (a tuned model or a variant shares its base's residual space).
CREATE MACRO lineage(model_name) AS TABLE
    WITH RECURSIVE chain(model, depth) AS (
        SELECT model_name, 0
        UNION ALL
        SELECT m.parent, c.depth + 1 FROM chain c JOIN models m ON m.name = c.model
        WHERE m.parent IS NOT NULL AND c.depth < 64
    )
    SELECT model, depth FROM chain;

-- The residual site the MLP of `run_name`'s model reads: resid_mid, or resid_pre (GPT-NeoX).
CREATE MACRO mlp_input(run_name) AS
    (SELECT coalesce(m.mlp_reads, 'resid_mid') FROM runs r JOIN models m ON m.name = r.model
     WHERE r.name = run_name);

-- Direction `direction_name` as `model_name` sees it: its own, else its nearest ancestor's.
CREATE MACRO direction_of(model_name, direction_name) AS TABLE
    SELECT d.* FROM directions d JOIN lineage(model_name) l ON d.model = l.model
    WHERE d.name = direction_name
    ORDER BY l.depth
    LIMIT 1;

-- What a neuron writes along a direction d is m_i·⟨v_i, d̂⟩. Ranked by the cosine of v_i with d,
-- oriented by which way the neuron fires:
--   reach_cos: the most a neuron can write toward d, per unit: a GELU coefficient is almost never
--     below −0.17, so only +v_i counts (the paper's ranking, cos); a gated one writes ±v_i (|cos|).
--   write_cos: the cosine of its mean write m̄_i·v_i with d, given its mean coefficient m̄_i in a
--     run: sign(m̄_i)·cos for a gated MLP; cos for GELU (the paper's convention, m ≥ 0).
CREATE MACRO reach_cos(cosine, gated) AS CASE WHEN gated THEN abs(cosine) ELSE cosine END;
CREATE MACRO write_cos(cosine, gated, mean_coefficient) AS
    CASE WHEN gated THEN sign(mean_coefficient) * cosine ELSE cosine END;

-- One neuron's coefficient m_i at every stored token of a run: from neuron_acts if the run tracked
-- it, else from mlp_acts if the run captured its layer's mlp_post.
CREATE MACRO neuron_coefficients(run_name, layer_index, neuron_index) AS TABLE
    SELECT prompt, pos, act FROM neuron_acts
    WHERE run = run_name AND layer = layer_index AND neuron = neuron_index
    UNION ALL
    SELECT prompt, pos, vec[neuron_index + 1] AS act FROM mlp_acts
    WHERE run = run_name AND layer = layer_index
      AND NOT EXISTS (SELECT 1 FROM neuron_acts
                      WHERE run = run_name AND layer = layer_index AND neuron = neuron_index);

-- Draw j of bootstrap replicate b over n items: a deterministic pseudo-random index in [0, n),
-- so a bootstrap in SQL gives the same interval every time it runs.
CREATE MACRO bootstrap_index(b, j, n) AS CAST(hash(b, j) % n AS BIGINT);

-- The neuron_stats rows of a run's arm of prompts ('all': every row). A run ingested before arms
-- were kept has rows of no arm: asking it for one arm is an error that says so, never a silent pool.
CREATE MACRO arm_stats(run_name, arm_name) AS TABLE
    SELECT * FROM neuron_stats
    WHERE run = run_name
      AND CASE WHEN arm_name = 'all' THEN true
               WHEN arm IS NULL THEN CAST(error('actwh: run ' || run_name || ' was ingested '
                   || 'before neuron_stats kept arms: ask arm ''all'', or ingest it again')
                   AS BOOLEAN)
               ELSE arm = arm_name END;

-- Each neuron's mean coefficient m̄_i over every token of a run's arm of prompts (arm_stats),
-- prompt and generated alike: the weight Figure 5 gives the change of its value vector δv_i.
CREATE MACRO mean_coefficients(run_name, arm_name) AS TABLE
    SELECT layer, neuron, sum(sum) / sum(n) AS m FROM arm_stats(run_name, arm_name)
    GROUP BY layer, neuron;

-- How each neuron fires in a run, over its generated tokens (all its tokens if it generated none):
-- share of tokens with m_i > 0, mean of m_i, of max(m_i, 0) and of min(m_i, 0), and std of m_i.
CREATE MACRO neuron_means(run_name) AS TABLE
    WITH pick AS (SELECT bool_or(generated) AS generated FROM neuron_stats WHERE run = run_name)
    SELECT layer, neuron, CAST(sum(n) AS BIGINT) AS n,
           sum(n_pos) / sum(n) AS frac_pos,
           sum(sum) / sum(n) AS mean,
           sum(sum_pos) / sum(n) AS mean_pos,
           (sum(sum) - sum(sum_pos)) / sum(n) AS mean_neg,
           sqrt(greatest(sum(sum_sq) / sum(n) - pow(sum(sum) / sum(n), 2), 0)) AS std
    FROM neuron_stats
    WHERE run = run_name AND generated = (SELECT generated FROM pick)
    GROUP BY layer, neuron;

-- The arm of each prompt of a run: its encoding (rot13, base64, leet, ...), 'chat' for a
-- multi-turn chat, else 'plain'. Analyses read one arm (plain unless asked) and never pool them.
CREATE MACRO prompt_arms(run_name) AS TABLE
    SELECT p.prompt,
           coalesce(p.transform, CASE WHEN p.messages IS NULL THEN 'plain' ELSE 'chat' END) AS arm
    FROM prompts p JOIN runs r ON r.prompt_set = p.prompt_set
    WHERE r.name = run_name;

-- The prompts of `run_name` in arm `arm_name` ('all': every prompt). A run or arm with no prompts
-- is an error that names it and lists the arms there are, never an empty answer.
CREATE MACRO arm_prompts(run_name, arm_name) AS TABLE
    SELECT prompt FROM prompt_arms(run_name) WHERE arm_name = 'all' OR arm = arm_name
    UNION ALL
    SELECT CAST(error('actwh: ' ||
        CASE WHEN NOT EXISTS (SELECT 1 FROM runs WHERE name = run_name)
             THEN 'no run ' || coalesce('''' || run_name || '''', 'NULL') || ' (runs: '
                  || coalesce((SELECT string_agg(name, ', ' ORDER BY name) FROM runs), 'none')
                  || ')'
             ELSE 'run ' || run_name || ' has no prompts in arm '
                  || coalesce('''' || arm_name || '''', 'NULL') || ' (its arms: '
                  || (SELECT string_agg(DISTINCT arm, ', ' ORDER BY arm)
                      FROM prompt_arms(run_name)) || ', or all)'
        END) AS INTEGER)
    WHERE NOT EXISTS (SELECT 1 FROM prompt_arms(run_name)
                      WHERE arm_name = 'all' OR arm = arm_name);

-- What a ranking of tracked writes sorts by: `rank_name` 'write' (the base run's mean write
-- toward the direction) or 'cosine' (the paper's rule, write_cos); any other is an error naming
-- `query_name`, the query that asked.
CREATE MACRO rank_by(rank_name, base_write, write_cosine, query_name) AS
    CASE rank_name WHEN 'write' THEN base_write WHEN 'cosine' THEN write_cosine
         ELSE CAST(error('actwh-input: ' || query_name || ': rank '
                         || coalesce('''' || rank_name || '''', 'NULL')
                         || ': expected write or cosine') AS DOUBLE) END;

-- Per tracked neuron, over the generated tokens of `base_run` (the tuned run holds the same
-- tokens): the mean coefficient in each run, the cosine of the base model's value vector with the
-- direction, and the mean write along it, mean(m_i)·⟨v_i, d̂⟩ (base_dot is ⟨v_i, d̂⟩). The tuned
-- write uses the tuned model's value vector, v_i + δv_i (tuned_dot), when `actwh diff` stored δv
-- (DPO barely moves it). Only the prompts of arm `arm_name` count.
CREATE MACRO tracked_writes(base_run, tuned_run, direction_name, arm_name) AS TABLE
    WITH base AS (
        SELECT r.model, m.mlp_gated AS gated FROM runs r JOIN models m ON m.name = r.model
        WHERE r.name = base_run
    ),
    tuned AS (SELECT model FROM runs WHERE name = tuned_run),
    d AS (
        SELECT vec::FLOAT[] AS v, norm FROM direction_of((SELECT model FROM base), direction_name)
    ),
    generated AS (
        SELECT prompt, pos FROM tokens
        WHERE run = base_run AND is_generated
          AND prompt IN (SELECT prompt FROM arm_prompts(base_run, arm_name))
    ),
    means AS (
        SELECT a.layer, a.neuron,
               avg(a.act) FILTER (WHERE a.run = base_run) AS base_mean,
               avg(a.act) FILTER (WHERE a.run = tuned_run) AS tuned_mean,
               count(*) FILTER (WHERE a.run = base_run) AS n_tokens
        FROM neuron_acts a JOIN generated g ON g.prompt = a.prompt AND g.pos = a.pos
        WHERE a.run IN (base_run, tuned_run)
        GROUP BY a.layer, a.neuron
    )
    SELECT m.layer, m.neuron,
           list_cosine_similarity(v.vec::FLOAT[], d.v) AS cosine,
           write_cos(list_cosine_similarity(v.vec::FLOAT[], d.v), (SELECT gated FROM base),
                     m.base_mean) AS write_cosine,
           m.base_mean, m.tuned_mean, m.n_tokens,
           list_dot_product(v.vec::FLOAT[], d.v) / d.norm AS base_dot,
           (list_dot_product(v.vec::FLOAT[], d.v)
            + coalesce(list_dot_product(dv.delta::FLOAT[], d.v), 0)) / d.norm AS tuned_dot,
           m.base_mean * base_dot AS base_write,
           m.tuned_mean * tuned_dot AS tuned_write
    FROM means m
    JOIN value_vectors v
      ON v.model = (SELECT model FROM base) AND v.layer = m.layer AND v.neuron = m.neuron
    CROSS JOIN d
    LEFT JOIN value_vector_diffs dv
      ON dv.model = (SELECT model FROM tuned) AND dv.layer = m.layer AND dv.neuron = m.neuron;
