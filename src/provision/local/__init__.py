"""The local Cloud SQL emulation (the `emulation` extra): an embedded PostgreSQL set up like
Cloud SQL, with the Google side the Cloud SQL Python Connector talks to.

One job per module; imports point down this list, never up:

- `server`: `local up | status | down`, putting the parts below together;
- `plugin`: the connector plug-in of `--env local` (reads the state of a running emulation);
- `scenarios`: the database states an instance can start from (a package with its SQL);
- `gcp`: the Google side: Admin API, CAs, mTLS proxy, their daemons and shared state;
- `cloudsql_api`: what Cloud SQL does inside PostgreSQL (its roles, users, databases);
- `postgres`: the PostgreSQL process (private install tree, initdb, pg_ctl);
- `instance`: the state of a started instance and direct connections to it.

Production code never imports this package; it reaches `plugin` through the entry point
`local` of group `nucleus_provision.connectors` (see `provision.connector_plugin`).
"""
