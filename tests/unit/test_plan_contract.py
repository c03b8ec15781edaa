"""A plan is a contract: the deferred (known after apply) actions, the plan document, its
fingerprints and digest, and verify's itemised differences. Pure: no database."""

from __future__ import annotations

import json
from dataclasses import replace

from test_planner import DESIRED, MIGRATIONS, converged, plan

from provision import planfile
from provision.actions import ActionKind, Phase
from provision.findings import Finding, Item, Severity, verify


def _pending_everything():
    info = replace(converged().migrations, records=())
    return converged(migrations=info)


def test_pending_migrations_end_the_plan_with_their_privileges_known_after_apply():
    planned = plan(_pending_everything(), owner_session=True)
    later = [a for a in planned.actions if a.deferred]
    assert [(a.kind, a.phase) for a in later] == [
        (ActionKind.DEFAULT_PRIVILEGES, Phase.AFTER_MIGRATIONS),
        (ActionKind.GRANTS, Phase.AFTER_MIGRATIONS),
    ]
    # Last, after every migration; no SQL yet; named from the lock: what they create.
    assert planned.actions[-2:] == tuple(later)
    assert all(not a.statements for a in later)
    versions = ", ".join(m.version for m in MIGRATIONS)
    assert all(a.reason.startswith(f"after {versions}:") for a in later)
    assert "dna.entity" in later[1].reason and "dna" in later[0].reason


def test_a_converged_database_has_nothing_known_after_apply():
    assert not plan(converged(), owner_session=True).actions


def test_the_document_fingerprints_and_digest_are_stable_and_follow_changes():
    catalog = _pending_everything()
    planned = plan(catalog, owner_session=True)
    one = planfile.plan_document(planned, desired=DESIRED, catalog=catalog)
    two = planfile.plan_document(
        plan(catalog, owner_session=True), desired=DESIRED, catalog=catalog
    )
    assert one == two
    assert one["format_version"] == planfile.FORMAT_VERSION
    assert [a["known_after_apply"] for a in one["actions"]][-2:] == [True, True]
    changed = replace(catalog, database="elsewhere")
    assert planfile.catalog_fingerprint(changed) != one["fingerprints"]["catalog"]
    owner = replace(DESIRED, owner="someone")
    assert planfile.declaration_fingerprint(owner) != one["fingerprints"]["declaration"]
    assert planfile.digest(planned) != planfile.digest(plan(converged(), owner_session=True))


def test_a_saved_plan_is_stale_when_either_fingerprint_changed(tmp_path):
    catalog = _pending_everything()
    document = planfile.plan_document(
        plan(catalog, owner_session=True), desired=DESIRED, catalog=catalog
    )
    path = tmp_path / "p.plan"
    path.write_text(json.dumps(document))
    saved = planfile.load(path)
    assert planfile.stale(saved, document) == []
    moved = {**document, "fingerprints": {**document["fingerprints"], "catalog": "x"}}
    assert planfile.stale(saved, moved) == [
        "the live database changed (a role, grant, object or migration record)"
    ]


def test_verify_lists_each_difference_with_object_expected_and_actual():
    finding = Finding(
        "privilege-missing",
        Severity.HIGH,
        "2 declared privilege(s) are not granted",
        items=(
            Item("table dna.entity", "SELECT to nucleus_readonly", None),
            Item("table dna.goals", "SELECT to nucleus_readonly", None),
        ),
    )
    manual = Finding("extension-missing", Severity.CRITICAL, "no pgaudit", remedy="turn it on")
    verdict = verify([finding, manual])
    assert [(d.code, d.object, d.expected, d.actual) for d in verdict.items][:2] == [
        ("privilege-missing", "table dna.entity", "SELECT to nucleus_readonly", None),
        ("privilege-missing", "table dna.goals", "SELECT to nucleus_readonly", None),
    ]
    assert verdict.manual and verdict.items[2].remedy == "turn it on"
    assert not verify([finding]).manual
