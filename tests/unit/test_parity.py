"""The parity check on hand-built Terraform JSON: no synth, no subprocess."""

from __future__ import annotations

import copy
from typing import Any

from stacks.parity import ALLOWED_DIFFERENCES, compare


def stack(**instance: Any) -> dict[str, Any]:
    settings = {
        "tier": "db-custom-2-7680",
        "disk_size": 50,
        "backup_configuration": {"enabled": True},
    }
    settings.update(instance.pop("settings", {}))
    return {
        "provider": {"google": [{"project": "nucleus-prod", "region": "europe-west1"}]},
        "terraform": {"backend": {"gcs": {"bucket": "state", "prefix": "nucleus/prod"}}},
        "resource": {
            "google_sql_database_instance": {
                "instance": {"name": "nucleus-prototype-db", "settings": settings, **instance}
            },
            "google_sql_user": {"owner_user": {"name": "nucleus"}},
        },
    }


def test_identical_stacks_pass():
    assert compare(stack(), stack()).ok


def test_a_reviewed_difference_passes_and_an_unreviewed_one_fails():
    assert ("google_sql_database_instance", "settings.tier") in ALLOWED_DIFFERENCES
    assert compare(stack(), stack(settings={"tier": "db-custom-1-3840"})).ok
    report = compare(stack(), stack(settings={"disk_size": 10}))
    assert not report.ok
    assert [(d.block, d.path) for d in report.unexpected] == [
        ("google_sql_database_instance", "settings.disk_size")
    ]


def test_a_missing_resource_fails():
    other = copy.deepcopy(stack())
    del other["resource"]["google_sql_user"]["owner_user"]
    assert not compare(stack(), other).ok
