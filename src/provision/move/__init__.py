"""Phase 4: move the legacy rows into the new tables, online, resumable and verified.

`commands` (one function per `move` verb, and the demo's step), `declare` (move files,
validated without a database), `plan` (the SQL, pure), `runner` (the shell: checks, copy,
catch-up, status), `verify` (counts and hashes per key range), `render` (progress, reports).
"""
