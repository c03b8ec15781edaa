"""The exit codes every verb shares, in one place (docs/plans.md has the same table).

Like `terraform plan -detailed-exitcode`, extended by one code of our own: 3 says that what is
left is something only a person can fix (a finding with a remedy), so a script can tell "run
apply" (2) from "page someone" (3). Imported by the CLI at its top: standard library only.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # same / done: nothing to do, the database matches, the command succeeded
    ERROR = 1  # an error: bad input, no connection, a failed step (the message says which)
    CHANGES = 2  # different / pending: `apply` (or `move run`) would change something
    MANUAL = 3  # only a person can fix this: manual findings remain (each with what to do)


# The table shown in `--help` epilogs (click keeps the lines as written after \b).
TABLE = """\b
Exit codes (shared by plan, verify, diff, inspect, move verify, digest):
  0  same / done
  1  error (nothing was changed unless the message says what was)
  2  different / pending: apply would change something
  3  only a person can fix this: manual findings remain"""
