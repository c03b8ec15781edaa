"""Terraform names (construct ids) for the resources that come in lists.

IAM database users and secret readers are named after the identity, not after their
position in environments.toml: reordering the list then changes nothing, where positional
names would destroy and recreate every entry after the moved one. Only the account part
(before '@') is used, so that prod's `nucleus-api@nucleus-prod...` and staging's
`nucleus-api@nucleus-staging...` get the same Terraform name and the two stacks can be
compared resource by resource.
"""

from __future__ import annotations

import re

SERVICE_ACCOUNT_SUFFIX = ".gserviceaccount.com"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def iam_user_key(email: str) -> str:
    """`nucleus-api@nucleus-prod.iam.gserviceaccount.com` -> `nucleus_api`."""
    return _slug(email.split("@", 1)[0])


def iam_user_name(email: str) -> str:
    """The database user name Cloud SQL gives a service account: its email without the
    `.gserviceaccount.com` suffix (PostgreSQL's 63-byte name limit would cut the rest)."""
    return email.removesuffix(SERVICE_ACCOUNT_SUFFIX)


def member_key(member: str) -> str:
    """`serviceAccount:nucleus-api@nucleus-prod.iam.gserviceaccount.com` -> `serviceaccount_nucleus_api`."""
    kind, _, identity = member.partition(":")
    return _slug(f"{kind}_{identity.split('@', 1)[0]}")
