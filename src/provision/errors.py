"""The exceptions of nucleus-provision: one base class, a flat list of cases.

Library code raises these with the facts (what went wrong, how to fix it); only the CLI turns
them into a message, a hint and an exit code. Messages never contain passwords.
"""

from __future__ import annotations

from provision.exitcodes import ExitCode


class ProvisionError(Exception):
    """Base class: every error the CLI reports as a clear message with exit code 1."""

    exit_code: int = ExitCode.ERROR

    def __init__(
        self, message: str, *, hint: str | None = None, rolled_back: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # A step or batch that failed: what was rolled back and what a rerun does, which the
        # CLI prints on a line of its own ("rolled back: ..."), so that a person sees at a
        # glance that nothing was left half done.
        self.rolled_back = rolled_back

    def __str__(self) -> str:
        return self.message


class ConfigError(ProvisionError):
    """Raised when environments.toml or a command-line option is missing or invalid."""


class LocalInstanceError(ProvisionError):
    """Raised when the embedded Cloud SQL emulation cannot be started, found or stopped."""


class ConnectionFailed(ProvisionError):
    """Raised when the database cannot be reached or refuses the credentials."""


class InstanceAbsent(ConnectionFailed):
    """Raised when the Cloud SQL Admin API answers that the instance does not exist (404):
    not yet created, or deleted. `digest` reports it as the stable value "absent"."""


class CredentialsMissing(ProvisionError):
    """Raised when no password (or IAM identity) could be found for a database user."""


class MigrationFileError(ProvisionError):
    """Raised when a file in bootstrap_sql/ is malformed, misnamed or breaks a guard rail."""


class ChecksumMismatch(ProvisionError):
    """Raised when an applied migration's file changed after it was applied."""


class VersionClash(ProvisionError):
    """Raised when a recorded version belongs to another file than the one of that version in
    bootstrap_sql/ (two branches both added it): not an edit, never accepted as one."""


class PermissionProblem(ProvisionError):
    """Raised when a role lacks a membership or privilege the plan needs; the hint says how to grant it."""


class ApplyFailed(ProvisionError):
    """Raised when a statement of the plan fails; everything in its transaction was rolled back."""


class ScopeViolation(ProvisionError):
    """Raised when a migration changed rows or objects outside the managed schemas; its
    transaction was rolled back, so nothing of it remains."""


class LockTimeout(ProvisionError):
    """Raised when a lock was not granted within the lock budget; the hint names who holds it."""


class SessionMismatch(ProvisionError):
    """Raised when the admin and owner sessions do not reach the same server and database."""


class ManualActionRequired(ProvisionError):
    """Raised when the database differs from the desired state in a way `apply` cannot fix;
    the message says what a person must do. Exit 3 (`provision.exitcodes.ExitCode.MANUAL`)."""

    exit_code = ExitCode.MANUAL


class PlanRefused(ProvisionError):
    """Raised when `apply` will not run: a saved plan no longer matches the declaration or the
    live database, or nobody approved the plan. Nothing was changed."""


class VerifyFailed(ProvisionError):
    """Raised when the live database does not match the desired state after apply."""


class MoveFileError(ProvisionError):
    """Raised when a move file of moves/ is malformed or does not fit the database; the
    message starts with the file's name, and nothing was copied."""


class MoveFailed(ProvisionError):
    """Raised when a batch of a move fails; that batch was rolled back and the move's cursor
    stays at the last committed batch, so the next run resumes there."""
