-- 002_add_entity_integrations: links an entity to an external provider account.
--
-- Runs as `nucleus`, in one transaction. Credentials are never stored here: only a
-- reference to where they live (e.g. a Secret Manager secret name).

CREATE TABLE IF NOT EXISTS dna.entity_integrations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    entity_id       uuid NOT NULL REFERENCES dna.entity (id) ON DELETE CASCADE,
    provider        text NOT NULL,
    external_id     text NOT NULL,
    credentials_ref text,
    scopes          text[] NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked', 'error')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (entity_id, provider)
);
CREATE INDEX IF NOT EXISTS entity_integrations_provider_idx ON dna.entity_integrations (provider, external_id);
