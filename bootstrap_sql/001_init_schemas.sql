-- 001_init_schemas: the layout the Nucleus code expects (schemas without the `_schema` suffix).
--
-- Runs as `nucleus` (so everything it creates belongs to `nucleus`), in one transaction,
-- after `vector` is installed. Every statement is idempotent (IF NOT EXISTS) because this
-- migration was half run on production once: it must converge from any prefix of itself.
-- It never touches the legacy schemas (dna_schema, tasks_schema, agents_schema, results_schema).

CREATE SCHEMA IF NOT EXISTS dna;

CREATE TABLE IF NOT EXISTS dna.entity (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL,
    kind        text NOT NULL DEFAULT 'person' CHECK (kind IN ('person', 'organization', 'agent')),
    email       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS dna.interests (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_id   uuid NOT NULL REFERENCES dna.entity (id) ON DELETE CASCADE,
    topic       text NOT NULL,
    weight      real NOT NULL DEFAULT 0.5 CHECK (weight BETWEEN 0 AND 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (entity_id, topic)
);

CREATE TABLE IF NOT EXISTS dna.goals (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_id   uuid NOT NULL REFERENCES dna.entity (id) ON DELETE CASCADE,
    title       text NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'achieved', 'dropped')),
    target_date date,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- nucleus-provision: the production hand-run of this file stopped here (scenario legacy-nucleus-v12-partial)
-- `values` is a reserved word: quoted so the name reads the same everywhere it is used.
CREATE TABLE IF NOT EXISTS dna."values" (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_id   uuid NOT NULL REFERENCES dna.entity (id) ON DELETE CASCADE,
    name        text NOT NULL,
    importance  smallint NOT NULL DEFAULT 3 CHECK (importance BETWEEN 1 AND 5),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (entity_id, name)
);

CREATE TABLE IF NOT EXISTS dna.raw_data (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_id    uuid NOT NULL REFERENCES dna.entity (id) ON DELETE CASCADE,
    source       text NOT NULL,
    payload      jsonb NOT NULL,
    collected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS raw_data_entity_id_idx ON dna.raw_data (entity_id);

CREATE SCHEMA IF NOT EXISTS agents;

CREATE TABLE IF NOT EXISTS agents.agent (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    model       text NOT NULL,
    config      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE SCHEMA IF NOT EXISTS tasks;

CREATE TABLE IF NOT EXISTS tasks.task (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    entity_id   uuid NOT NULL REFERENCES dna.entity (id) ON DELETE CASCADE,
    title       text NOT NULL,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    priority    smallint NOT NULL DEFAULT 3,
    due_at      timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS task_entity_id_idx ON tasks.task (entity_id);

CREATE SCHEMA IF NOT EXISTS results;

CREATE TABLE IF NOT EXISTS results.result (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id     uuid NOT NULL REFERENCES tasks.task (id) ON DELETE CASCADE,
    agent_id    uuid REFERENCES agents.agent (id) ON DELETE SET NULL,
    output      jsonb NOT NULL,
    score       real,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS result_task_id_idx ON results.result (task_id);

CREATE SCHEMA IF NOT EXISTS memory;

CREATE TABLE IF NOT EXISTS memory.memory (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_id   uuid NOT NULL REFERENCES dna.entity (id) ON DELETE CASCADE,
    content     text NOT NULL,
    embedding   vector(1536) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS memory_embedding_hnsw_idx ON memory.memory USING hnsw (embedding vector_cosine_ops);
CREATE INDEX IF NOT EXISTS memory_entity_id_idx ON memory.memory (entity_id);

CREATE SCHEMA IF NOT EXISTS assembly;

CREATE TABLE IF NOT EXISTS assembly.blueprint (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    entity_id   uuid NOT NULL REFERENCES dna.entity (id) ON DELETE CASCADE,
    name        text NOT NULL,
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (entity_id, name)
);

CREATE SCHEMA IF NOT EXISTS execution;

CREATE TABLE IF NOT EXISTS execution.run (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id     uuid NOT NULL REFERENCES tasks.task (id) ON DELETE CASCADE,
    agent_id    uuid REFERENCES agents.agent (id) ON DELETE SET NULL,
    status      text NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    started_at  timestamptz,
    finished_at timestamptz,
    error       text
);
CREATE INDEX IF NOT EXISTS run_task_id_idx ON execution.run (task_id);
