"""A privilege in the new schemas granted on by another grantor with a grant option the owner
gave: apply takes back the option first (CASCADE takes the grant made with it), then the
privilege; in the other order PostgreSQL refuses (dependent privileges exist) and every rerun
would fail the same way."""

from __future__ import annotations

from helpers import cli

RO = "nucleus_readonly"


def test_a_grant_made_with_an_undeclared_grant_option_is_revoked_and_apply_converges(legacy_db):
    assert cli("apply", "--auto-approve", *legacy_db.targets).code == 0
    legacy_db.query("GRANT DELETE ON dna.goals TO postgres WITH GRANT OPTION", user="nucleus")
    legacy_db.query(f"GRANT DELETE ON dna.goals TO {RO}", user="postgres")
    assert legacy_db.query(f"SELECT has_table_privilege('{RO}', 'dna.goals', 'DELETE')") == [[True]]
    verify = cli("verify", *legacy_db.targets)
    assert verify.code == 2 and "dna.goals" in verify.out, verify.out  # apply fixes it

    apply = cli("apply", "--auto-approve", *legacy_db.targets)
    assert apply.code == 0, apply.err
    assert legacy_db.query(f"SELECT has_table_privilege('{RO}', 'dna.goals', 'DELETE')") == [
        [False]
    ]
    # postgres inherits the owner (Cloud SQL's creator of it), so its own grant is read off the ACL
    (acl,) = legacy_db.query(
        "SELECT array_agg(pg_get_userbyid(a.grantee) || '/' || pg_get_userbyid(a.grantor)) "
        "FROM aclexplode((SELECT relacl FROM pg_class WHERE oid = 'dna.goals'::regclass)) a"
    )[0]
    assert not [entry for entry in acl if "postgres" in entry], acl
    assert cli("verify", *legacy_db.targets).code == 0
