"""A large legacy data set for benchmarks (`nucleus-provision local seed --rows N`).

Appends, in the server (generate_series: nothing comes through Python), N entities, 2N
interests (two distinct topics each), N/10 tasks and N/10 results to the legacy tables of a
running emulation, as `postgres`, as the legacy services would have written them. Only for
the emulation: production's legacy rows are never written by this tool.
"""

from __future__ import annotations

import time

import pg8000.native

STATEMENTS = (
    (
        "entities",
        """INSERT INTO dna_schema.entities (external_id, name, entity_type, email, created_at, updated_at)
SELECT md5('seed-entity-' || g)::uuid, 'Seeded entity ' || g,
       (ARRAY['person', 'person', 'person', 'organization', 'agent'])[1 + g % 5],
       CASE WHEN g % 7 = 0 THEN NULL ELSE 'seed' || g || '@example.org' END,
       timestamp '2024-01-01' + g * interval '1 second',
       CASE WHEN g % 3 = 0 THEN timestamp '2025-01-01' + g * interval '1 second' END
FROM generate_series(1, :n) AS g""",
    ),
    (
        "interests",
        """INSERT INTO dna_schema.interests (entity_id, topic, weight, created_at)
SELECT e.id,
       (ARRAY['music', 'hiking', 'databases', 'cooking', 'chess', 'gardening', 'robotics',
              'poetry'])[1 + (e.id + k * 3) % 8], ((e.id * 37 + k * 101) % 1000) / 1000.0,
       e.created_at + k * interval '1 hour'
FROM dna_schema.entities e CROSS JOIN generate_series(0, 1) AS k
WHERE e.id > :first""",
    ),
    (
        "tasks",
        """INSERT INTO tasks_schema.tasks (entity_id, title, status, priority, created_at, due_at)
SELECT e.id, 'Seeded task of ' || e.id, (ARRAY['pending', 'running', 'done', 'failed'])[1 + e.id % 4],
       1 + e.id % 5, e.created_at, CASE WHEN e.id % 4 = 0 THEN e.created_at + interval '30 days' END
FROM dna_schema.entities e WHERE e.id > :first AND e.id % 10 = 0""",
    ),
    (
        "results",
        """INSERT INTO results_schema.results (task_id, agent_id, output, score, created_at)
SELECT t.id, (SELECT min(id) FROM agents_schema.agents) + t.id % 24,
       jsonb_build_object('summary', 'seeded ' || t.id), (t.id % 10000) / 100.0, t.created_at
FROM tasks_schema.tasks t WHERE t.entity_id > :first""",
    ),
)


def seed(conn: pg8000.native.Connection, rows: int) -> dict[str, float]:
    """Append the data set (one transaction per table); seconds per table."""
    first = conn.run("SELECT coalesce(max(id), 0) FROM dna_schema.entities")[0][0]
    timings: dict[str, float] = {}
    for table, sql in STATEMENTS:
        started = time.perf_counter()
        conn.run("BEGIN")
        conn.run(sql, **({"n": rows} if ":n" in sql else {"first": first}))
        conn.run("COMMIT")
        timings[table] = round(time.perf_counter() - started, 2)
    conn.run(
        "ANALYZE dna_schema.entities, dna_schema.interests, tasks_schema.tasks, results_schema.results"
    )
    return timings
