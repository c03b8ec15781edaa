"""The local Cloud SQL emulation: an embedded PostgreSQL set up like Cloud SQL, and its scenarios."""
