-- The seed's production state of nucleus_v12 (shared/seed, "Database State Analysis").
-- Loaded as `postgres`, so every object belongs to `postgres`, as on production.
-- Data is generated deterministically (no random()): reruns give identical rows.

CREATE SCHEMA dna_schema;
CREATE SCHEMA tasks_schema;
CREATE SCHEMA agents_schema;
CREATE SCHEMA results_schema;

CREATE TABLE dna_schema.entities (
    id          serial PRIMARY KEY,
    external_id uuid NOT NULL UNIQUE,
    name        varchar(200) NOT NULL,
    entity_type varchar(30) NOT NULL DEFAULT 'person',
    email       varchar(320),
    created_at  timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at  timestamp
);

CREATE TABLE dna_schema.interests (
    id          serial PRIMARY KEY,
    entity_id   integer NOT NULL REFERENCES dna_schema.entities (id) ON DELETE CASCADE,
    topic       varchar(100) NOT NULL,
    weight      numeric(4, 3) NOT NULL DEFAULT 0.5,
    created_at  timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX interests_entity_id_idx ON dna_schema.interests (entity_id);

CREATE TABLE dna_schema.capabilities (
    id          serial PRIMARY KEY,
    entity_id   integer NOT NULL REFERENCES dna_schema.entities (id) ON DELETE CASCADE,
    capability  varchar(100) NOT NULL,
    level       smallint NOT NULL CHECK (level BETWEEN 1 AND 5),
    UNIQUE (entity_id, capability)
);

CREATE TABLE dna_schema.dna_profiles (
    entity_id   integer PRIMARY KEY REFERENCES dna_schema.entities (id) ON DELETE CASCADE,
    profile     jsonb NOT NULL,
    version     integer NOT NULL DEFAULT 1,
    updated_at  timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE agents_schema.agents (
    id          serial PRIMARY KEY,
    name        varchar(100) NOT NULL UNIQUE,
    model       varchar(100) NOT NULL,
    config      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE tasks_schema.tasks (
    id          serial PRIMARY KEY,
    entity_id   integer NOT NULL REFERENCES dna_schema.entities (id),
    title       varchar(300) NOT NULL,
    status      varchar(20) NOT NULL DEFAULT 'pending',
    priority    smallint NOT NULL DEFAULT 3,
    created_at  timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
    due_at      timestamp
);
CREATE INDEX tasks_entity_id_idx ON tasks_schema.tasks (entity_id);

CREATE TABLE results_schema.results (
    id          serial PRIMARY KEY,
    task_id     integer NOT NULL REFERENCES tasks_schema.tasks (id),
    agent_id    integer REFERENCES agents_schema.agents (id),
    output      jsonb NOT NULL,
    score       numeric(5, 2),
    created_at  timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE VIEW dna_schema.entity_summary AS
    SELECT e.id, e.name, count(i.id) AS interest_count
    FROM dna_schema.entities e LEFT JOIN dna_schema.interests i ON i.entity_id = e.id
    GROUP BY e.id, e.name;

-- The migrations table of the old tooling: other columns than the new code expects.
CREATE TABLE public.migrations (
    id             serial PRIMARY KEY,
    migration_name varchar(255) NOT NULL UNIQUE,
    applied_at     timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- Live services use the old schemas through the `nucleus` login.
GRANT USAGE ON SCHEMA dna_schema, tasks_schema, agents_schema, results_schema TO nucleus;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA dna_schema, tasks_schema, agents_schema, results_schema TO nucleus;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA dna_schema, tasks_schema, agents_schema, results_schema TO nucleus;
GRANT SELECT, INSERT ON public.migrations TO nucleus;
GRANT USAGE ON SEQUENCE public.migrations_id_seq TO nucleus;

INSERT INTO public.migrations (migration_name, applied_at) VALUES
    ('000_initial_schema', '2025-03-02 09:14:00'),
    ('001_add_dna_profiles', '2025-04-17 16:40:12'),
    ('002_add_results_score', '2025-06-30 11:05:47'),
    ('003_tasks_due_at', '2025-09-08 08:22:31');

INSERT INTO dna_schema.entities (external_id, name, entity_type, email, created_at, updated_at)
SELECT md5('entity-' || g)::uuid,
       (ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken', 'Radia', 'Leslie'])[1 + g % 10]
           || ' ' || (ARRAY['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Allen', 'Thompson', 'Perlman', 'Lamport'])[1 + (g / 10) % 10]
           || ' ' || g,
       (ARRAY['person', 'person', 'person', 'organization', 'agent'])[1 + g % 5],
       CASE WHEN g % 7 = 0 THEN NULL ELSE 'user' || g || '@example.org' END,
       timestamp '2025-01-01' + g * interval '37 minutes',
       CASE WHEN g % 3 = 0 THEN timestamp '2025-06-01' + g * interval '11 minutes' END
FROM generate_series(1, 2000) AS g;

INSERT INTO dna_schema.interests (entity_id, topic, weight, created_at)
SELECT 1 + (g % 2000),
       (ARRAY['music', 'hiking', 'databases', 'cooking', 'chess', 'gardening', 'robotics', 'poetry'])[1 + g % 8],
       ((g * 37) % 1000) / 1000.0,
       timestamp '2025-02-01' + g * interval '13 minutes'
FROM generate_series(1, 6000) AS g;

INSERT INTO dna_schema.capabilities (entity_id, capability, level)
SELECT 1 + (g % 2000),
       (ARRAY['python', 'sql', 'writing', 'design', 'negotiation', 'research'])[1 + (g / 2000) % 6],
       1 + g % 5
FROM generate_series(1, 3000) AS g;

INSERT INTO dna_schema.dna_profiles (entity_id, profile, version, updated_at)
SELECT g,
       jsonb_build_object('openness', (g * 17) % 100, 'focus', (g * 29) % 100, 'tags', jsonb_build_array('t' || g % 13)),
       1 + g % 4,
       timestamp '2025-05-01' + g * interval '5 minutes'
FROM generate_series(1, 1500) AS g;

INSERT INTO agents_schema.agents (name, model, config)
SELECT 'agent-' || g,
       (ARRAY['planner-v1', 'writer-v2', 'researcher-v1', 'critic-v1'])[1 + g % 4],
       jsonb_build_object('temperature', (g % 10) / 10.0, 'max_steps', 5 + g)
FROM generate_series(1, 24) AS g;

INSERT INTO tasks_schema.tasks (entity_id, title, status, priority, created_at, due_at)
SELECT 1 + (g % 2000),
       'Task ' || g || ': ' || (ARRAY['summarize notes', 'plan trip', 'draft email', 'review code', 'book venue'])[1 + g % 5],
       (ARRAY['pending', 'running', 'done', 'done', 'failed'])[1 + g % 5],
       1 + g % 5,
       timestamp '2025-03-01' + g * interval '17 minutes',
       CASE WHEN g % 4 = 0 THEN timestamp '2025-12-01' + g * interval '1 hour' END
FROM generate_series(1, 5000) AS g;

INSERT INTO results_schema.results (task_id, agent_id, output, score, created_at)
SELECT 1 + (g % 5000),
       CASE WHEN g % 9 = 0 THEN NULL ELSE 1 + g % 24 END,
       jsonb_build_object('summary', 'result ' || g, 'tokens', 100 + (g * 7) % 900),
       ((g * 13) % 10000) / 100.0,
       timestamp '2025-03-02' + g * interval '9 minutes'
FROM generate_series(1, 8000) AS g;

ANALYZE;
