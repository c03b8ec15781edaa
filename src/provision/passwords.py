"""Passwords that satisfy a Cloud SQL password validation policy: generated here for `rotate`,
and the same rules handed to the stacks' ephemeral `random_password` for first deploys.

Cloud SQL checks a built-in user's password whenever it is set (Admin API, console, SQL)
against the instance's `password_validation_policy` (environments.toml): a minimum length,
`COMPLEXITY_DEFAULT` (at least one lower-case letter, one upper-case letter, one digit and
one symbol), not one of the last N passwords, and not containing the user name. A password
made here is at least PASSWORD_LENGTH characters of `secrets` randomness with at least
MIN_PER_CLASS of each class, so it passes all four (a reuse of one of the last N is a
2**-190 event, and `acceptable` still checks the name).
"""

from __future__ import annotations

import secrets
import string

from provision.config import PasswordComplexity, PasswordValidationPolicy

# Any character is fine for Cloud SQL, but these stay readable in a connection URL and in
# a shell without quoting surprises (no '@', '/', ':', '%', quotes or '$').
SPECIALS = "-_.~!*+="
PASSWORD_LENGTH = 32
MIN_PER_CLASS = 2
CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits, SPECIALS)


def length_for(policy: PasswordValidationPolicy) -> int:
    """PASSWORD_LENGTH, or the policy's minimum when that is longer."""
    return max(PASSWORD_LENGTH, policy.min_length) if policy.enabled else PASSWORD_LENGTH


def problems(password: str, policy: PasswordValidationPolicy, username: str) -> list[str]:
    """What Cloud SQL would refuse about `password` (never quoting it); empty when it passes."""
    if not policy.enabled:
        return []
    found = []
    if len(password) < policy.min_length:
        found.append(f"shorter than {policy.min_length} characters")
    if policy.complexity is PasswordComplexity.COMPLEXITY_DEFAULT:
        punctuation = set(string.punctuation)
        checks = (
            ("a lower-case letter", any(c.islower() for c in password)),
            ("an upper-case letter", any(c.isupper() for c in password)),
            ("a digit", any(c.isdigit() for c in password)),
            ("a symbol", any(c in punctuation for c in password)),
        )
        found += [f"lacks {what}" for what, present in checks if not present]
    if policy.disallow_username_substring and username.lower() in password.lower():
        found.append("contains the user name")
    return found


def generate(policy: PasswordValidationPolicy, username: str) -> str:
    """A fresh random password that `policy` accepts for `username`."""
    alphabet = "".join(CLASSES)
    rng = secrets.SystemRandom()
    while True:
        chars = [rng.choice(cls) for cls in CLASSES for _ in range(MIN_PER_CLASS)]
        chars += [rng.choice(alphabet) for _ in range(length_for(policy) - len(chars))]
        rng.shuffle(chars)
        password = "".join(chars)
        if not problems(password, policy, username):
            return password
