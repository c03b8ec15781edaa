"""`diff`'s comparison and option parsing: pure functions, tested on hand-built snapshots."""

from __future__ import annotations

from dataclasses import replace

import pytest

from provision.diff import options
from provision.diff.compare import CATEGORIES, Difference, Options, compare, parse_role_map
from provision.diff.snapshot import (
    Column,
    DefaultPrivilege,
    Extension,
    Index,
    Membership,
    MigrationRecord,
    Owned,
    Policy,
    Relation,
    Snapshot,
    parse_acl,
)
from provision.errors import ConfigError, PermissionProblem


def table(schema: str, name: str, owner: str = "nucleus", grants=()) -> Relation:
    """A table whose ACL is its owner's full rights plus `grants` (aclitem text)."""
    return Relation(schema, name, "table", Owned(owner, (f"{owner}=arwdDxt/{owner}", *grants)))


def snapshot(**changes) -> Snapshot:
    base = Snapshot(
        database="nucleus_v12",
        current_user="postgres",
        server_version_num=160000,
        schemas_in_scope=("dna", "public"),
        database_owned=Owned("cloudsqlsuperuser"),
        schemas={"dna": Owned("nucleus"), "public": Owned("pg_database_owner")},
        relations={("dna", "entity"): table("dna", "entity")},
        columns={
            ("dna", "entity", "email"): Column(
                "dna", "entity", "email", "text", False, None, None, None, None
            )
        },
        constraints={},
        indexes={
            ("dna", "entity_pkey"): Index(
                "dna",
                "entity",
                "entity_pkey",
                "CREATE UNIQUE INDEX entity_pkey ON dna.entity USING btree (id)",
                True,
            )
        },
        functions={},
        triggers={},
        policies={},
        default_privileges={},
        extensions={"vector": Extension("vector", "0.8.0", "public", "postgres")},
        memberships=(
            Membership("cloudsqlsuperuser", "nucleus", False, True, True),
            Membership("cloudsqlsuperuser", "postgres", False, True, True),
        ),
        migrations_table="public.migrations",
        migration_records=(
            MigrationRecord(None, None, "000_initial_schema"),
            MigrationRecord("001", "aaa", "001_init_schemas"),
        ),
    )
    return replace(base, **changes)


def kinds(diffs: list[Difference]) -> set[tuple[str, str]]:
    return {(d.kind, d.object) for d in diffs}


def test_identical_snapshots_have_no_differences():
    assert compare(snapshot(), snapshot()) == []


def test_privileges_are_compared_as_sets_whatever_their_order():
    grants = ["app=r/nucleus", "app=w*/nucleus"]
    left = snapshot(relations={("dna", "entity"): table("dna", "entity", grants=grants)})
    right = snapshot(relations={("dna", "entity"): table("dna", "entity", grants=grants[::-1])})
    assert compare(left, right) == []


def test_a_changed_grant_names_the_grantee_and_both_sides():
    left = snapshot(relations={("dna", "entity"): table("dna", "entity", grants=["app=r/nucleus"])})
    right = snapshot(
        relations={("dna", "entity"): table("dna", "entity", grants=["app=r*/postgres"])}
    )
    assert [d.to_dict() for d in compare(left, right)] == [
        {
            "kind": "privilege",
            "object": "table dna.entity to app",
            "left": ["SELECT"],
            "right": ["SELECT WITH GRANT OPTION"],
        }
    ]


def test_a_new_owner_is_one_owner_difference_not_also_privilege_ones():
    right = snapshot(relations={("dna", "entity"): table("dna", "entity", owner="postgres")})
    diffs = compare(snapshot(), right)
    assert [d.to_dict() for d in diffs] == [
        {"kind": "owner", "object": "table dna.entity", "left": "nucleus", "right": "postgres"}
    ]


def test_map_role_applies_to_owners_grantees_default_privileges_and_memberships():
    def env(owner: str, app: str) -> Snapshot:
        return snapshot(
            relations={
                ("dna", "entity"): table("dna", "entity", owner=owner, grants=[f"{app}=r/{owner}"])
            },
            schemas={"dna": Owned(owner), "public": Owned("pg_database_owner")},
            default_privileges={
                (owner, "dna", "tables"): DefaultPrivilege(
                    owner, "dna", "tables", (f"{app}=r/{owner}",)
                )
            },
            policies={
                ("dna", "entity", "mine"): Policy(
                    "dna", "entity", "mine", "SELECT", True, frozenset({app}), "true", None
                )
            },
            memberships=(Membership(owner, app, False, True, True),),
        )

    prod, staging = env("nucleus", "app"), env("nucleus_stg", "app_stg")
    assert compare(prod, staging) != []
    mapping = {"nucleus": "nucleus_stg", "app": "app_stg"}
    assert compare(prod, staging, Options(role_map=mapping)) == []


def test_memberships_of_managed_roles_only():
    left = snapshot(
        memberships=(Membership("cloudsqlsuperuser", "cloudsqladmin", True, True, True),)
    )
    right = snapshot(memberships=())
    # A platform role's own memberships are the platform's business.
    assert not any(
        d.kind == "membership"
        for d in compare(left, right, Options(ignore=frozenset({"legacy-migrations"})))
    )
    left = snapshot(memberships=(Membership("pg_read_all_data", "nucleus", False, True, True),))
    assert kinds(compare(left, right)) >= {("membership", "role nucleus in pg_read_all_data")}
    # PostgreSQL 16 makes `postgres` an ADMIN member of every role it creates: a role that owns
    # and is granted nothing compared is not a managed role, and neither is that membership.
    left = snapshot(memberships=(Membership("some_app", "postgres", True, False, False),))
    assert not any(d.kind == "membership" for d in compare(left, right))


def test_children_of_an_object_missing_on_one_side_are_not_listed_again():
    right = snapshot(
        relations={},
        columns={},
        indexes={},
    )
    assert kinds(compare(snapshot(), right)) == {("table", "table dna.entity")}
    right = snapshot(
        schemas={"public": Owned("pg_database_owner")}, relations={}, columns={}, indexes={}
    )
    assert kinds(compare(snapshot(), right)) == {("schema", "schema dna")}


def test_a_serial_sequence_goes_with_its_table():
    seq = Relation(
        "dna", "entity_id_seq", "sequence", Owned("nucleus"), owned_by=("dna", "entity", "id")
    )
    left = snapshot(
        relations={("dna", "entity"): table("dna", "entity"), ("dna", "entity_id_seq"): seq}
    )
    assert kinds(compare(left, snapshot(relations={}, columns={}, indexes={}))) == {
        ("table", "table dna.entity")
    }


def test_index_definitions_and_validity_are_compared():
    idx = snapshot().indexes[("dna", "entity_pkey")]
    right = snapshot(
        indexes={
            ("dna", "entity_pkey"): idx._replace(
                definition=idx.definition.replace("btree", "hash"), valid=False
            )
        }
    )
    assert kinds(compare(snapshot(), right)) == {
        ("index-definition", "index dna.entity_pkey"),
        ("index-validity", "index dna.entity_pkey"),
    }


def test_migration_records_compare_versions_and_checksums_and_legacy_rows_by_name():
    right = snapshot(
        migration_records=(
            MigrationRecord("001", "bbb", "001_init_schemas"),
            MigrationRecord("002", "ccc", "002_x"),
            MigrationRecord(None, None, "000_other"),
        )
    )
    assert {(d.kind, d.object, d.left, d.right) for d in compare(snapshot(), right)} == {
        ("migration-checksum", "migration 001", "aaa", "bbb"),
        ("migration-record", "migration 002", None, "ccc"),
        ("legacy-migration-record", "legacy migration 000_initial_schema", "recorded", None),
        ("legacy-migration-record", "legacy migration 000_other", None, "recorded"),
    }


def test_unreadable_migration_records_are_an_error_unless_ignored():
    right = snapshot(migration_records=None)
    with pytest.raises(PermissionProblem, match="may not read public.migrations"):
        compare(snapshot(), right)
    assert (
        compare(snapshot(), right, Options(ignore=frozenset({"migrations", "legacy-migrations"})))
        == []
    )


def test_ignore_drops_exactly_its_category():
    right = snapshot(
        relations={("dna", "entity"): table("dna", "entity", owner="postgres")},
        extensions={"vector": Extension("vector", "0.7.0", "public", "postgres")},
    )
    assert {d.category for d in compare(snapshot(), right)} == {"owners", "extensions"}
    assert {
        d.category for d in compare(snapshot(), right, Options(ignore=frozenset({"owners"})))
    } == {"extensions"}


def test_every_kind_belongs_to_one_category():
    kinds_seen = [k for ks in CATEGORIES.values() for k in ks]
    assert len(kinds_seen) == len(set(kinds_seen))


def test_unknown_categories_and_malformed_role_maps_are_refused():
    with pytest.raises(ConfigError, match="unknown category to ignore: owner"):
        options.categories(["owner"])
    assert options.categories(["owners,privileges", "memberships"]) == {
        "owners",
        "privileges",
        "memberships",
    }
    with pytest.raises(ConfigError, match="not LEFT=RIGHT"):
        parse_role_map(["nucleus"])
    with pytest.raises(ConfigError, match="twice"):
        parse_role_map(["a=b", "a=c"])
    assert parse_role_map(["a=b", "c=d"]) == {"a": "b", "c": "d"}


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"envs": ["prod", "staging"]}, ("prod", None, "staging", None)),
        ({"dsns": ["A", "B"]}, (None, "A", None, "B")),
        ({"from_env": "prod", "to_dsn": "B"}, ("prod", None, None, "B")),
        ({"to_env": "staging", "dsns": ["A"]}, (None, "A", "staging", None)),
    ],
)
def test_two_sides_from_any_mix_of_options(kwargs, expected):
    left, right = options.sides(**kwargs)
    assert (left.env, left.dsn, right.env, right.dsn) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"envs": ["prod"]}, "1 given"),
        ({"envs": ["a", "b"], "from_env": "c"}, "3 given"),
        ({"envs": ["a"], "dsns": ["B"]}, "which side is which"),
        ({"from_env": "a", "from_dsn": "B"}, "both name the left side"),
    ],
)
def test_anything_but_two_sides_is_a_usage_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        options.sides(**kwargs)


def test_acl_items_parse_into_grants_without_their_grantor():
    assert parse_acl(("nucleus=arw/nucleus", "=X/postgres", '"odd ""role"""=r*U/nucleus')) == {
        ("nucleus", "SELECT", False),
        ("nucleus", "INSERT", False),
        ("nucleus", "UPDATE", False),
        ("PUBLIC", "EXECUTE", False),
        ('odd "role"', "SELECT", True),
        ('odd "role"', "USAGE", False),
    }
