from helpers import cli


def test_scratch(make_db):
    a, b = make_db("empty"), make_db("legacy-nucleus-v12")
    for db in (a, b):
        r = cli("apply", *db.targets)
        assert r.code == 0, r.err
    for args in ([], ["--schema", "dna,tasks,agents,results,memory,assembly,execution,public"]):
        r = cli("diff", "--from-dsn", a.admin_dsn, "--to-dsn", b.admin_dsn, *args)
        print(r.code, r.out, r.err)
    r = cli("diff", "--from-dsn", a.admin_dsn, "--to-dsn", b.admin_dsn, "--format", "markdown", "--schema", "dna,public")
    print(r.out)
    assert 0
