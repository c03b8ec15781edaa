"""Retirement of the legacy tables (issue 20): declared in `moves/retire.toml`, taken through
observe -> freeze (-> archive -> soft delete -> drop, not built yet), each step gated, recorded
in the tool's own schema (`nucleus_retire`) and reversible until the drop. docs/retire.md."""
