"""The ``toolkit`` command against real SQLite files and the real Redis, as a user runs it."""

from __future__ import annotations

import argparse
import json
import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.postgres_support import drop_table, make_pg_cache, unique_table
from tests.redis_support import make_cache
from toolkit import SqliteCache, __version__
from toolkit.backends.redis import RedisCache
from toolkit.cli import main
from toolkit.cli._namespaces import format_namespace, parse_namespace
from toolkit.cli._target import (
    ADMIN_CALL_SECONDS,
    add_target_arguments,
    human_bytes,
    open_target,
)

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("stats", "ls", "clear", "purge", "dashboards", "demo")


def toolkit(*args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    """``python -m toolkit ARGS`` in a child process, stdin not a terminal unless given."""
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite cache file with three namespaces, one expired entry; its URL."""
    path = tmp_path / "cache.db"
    clock = [1_000.0]
    cache: SqliteCache[Any] = SqliteCache(path=str(path), timer=lambda: clock[0])
    with cache:
        cache.set({(("app.svc", "answer"), f"k{i}"): ("secret value", None) for i in range(3)})
        cache.set({(("llm",), "old"): ("secret value", 1), (("a/b",), "x"): (1, None)})
    return f"sqlite:///{path}"


def test_help_lists_every_command_and_version() -> None:
    done = toolkit("--help")
    assert done.returncode == 0
    for command in COMMANDS:
        assert f"\n    {command}" in done.stdout, command
    assert "a/b for ('a', 'b')" in done.stdout  # the namespace syntax is documented
    assert toolkit("--version").stdout.strip() == f"toolkit {__version__}"
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0, command
    no_command = toolkit()
    assert no_command.returncode == 2 and "COMMAND" in no_command.stderr


def test_stats_on_a_sqlite_file(db: str) -> None:
    done = toolkit("stats", db)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "entries:    5" in out
    assert "expired:    1 not yet purged" in out
    assert "namespaces: 3" in out
    assert "3  app.svc/answer" in out and "1  a%2Fb" in out and "1  llm" in out
    assert "secret" not in out  # never values


def stats_json(url: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["stats", url, "--json"]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def test_stats_json(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = stats_json(db, capsys)
    assert (data["entries"], data["expired"]) == (5, 1)
    assert data["bytes"] > 0
    assert {"namespace": ["a/b"], "path": "a%2Fb", "entries": 1} in data["namespaces"]


def test_ls_lists_namespaces_then_keys_never_values(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", db]) == 0
    assert "app.svc/answer" in capsys.readouterr().out
    assert main(["ls", db, "--ns", "app.svc/answer", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "never  k0" in out and "never  k1" in out and "k2" not in out
    assert "1 more keys" in out
    assert "secret" not in out
    assert main(["ls", db, "--ns", '["a/b"]']) == 0
    assert "never  x" in capsys.readouterr().out
    assert main(["ls", db, "--ns", "llm"]) == 0  # only an expired entry: no live keys
    assert "(no live keys)" in capsys.readouterr().out


def test_purge_deletes_expired_entries_only(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["purge", db]) == 0
    assert "purged 1 entry (expired)" in capsys.readouterr().out
    assert stats_json(db, capsys)["entries"] == 4


def test_clear_refuses_without_a_terminal_unless_yes(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not sys.stdin.isatty()  # pytest's stdin, like a cron job's
    assert main(["clear", db, "--ns", "app.svc/answer"]) == 2
    assert "pass --yes" in capsys.readouterr().err
    assert stats_json(db, capsys)["entries"] == 5  # untouched
    assert main(["clear", db, "--ns", "app.svc/answer", "--ns", "a%2Fb", "--yes"]) == 0
    assert "(4 entries)" in capsys.readouterr().out
    assert stats_json(db, capsys)["entries"] == 1


@pytest.mark.parametrize(("answer", "kept"), [("n\n", 5), ("y\n", 0)])
def test_clear_asks_at_a_terminal(
    db: str, answer: str, kept: int, capsys: pytest.CaptureFixture[str]
) -> None:
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode())
        done = toolkit("clear", db, stdin=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert "Delete 5 entries (every entry) of SQLite file" in done.stdout
    assert done.returncode == (2 if kept else 0), done.stderr
    assert stats_json(db, capsys)["entries"] == kept


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stats", "memory://"], "live inside one process"),
        (["stats", "sqlite://:memory:"], "inside one process"),
        (["stats", "sqlite:///does/not/exist.db"], "no SQLite file at"),
        (["stats", "mysql://x"], "unsupported cache URL"),
        (["ls", "sqlite:///x.db", "--ns", "a//b"], "empty part"),
        (["ls", "sqlite:///x.db", "--ns", "[1]"], "JSON array of strings"),
    ],
)
def test_bad_input_gets_one_clear_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_file_that_is_no_cache_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.db"
    other.write_bytes(b"not a database at all, just bytes" * 100)
    assert main(["stats", f"sqlite:///{other}"]) == 2
    assert "is not a SQLite cache" in capsys.readouterr().err
    empty = tmp_path / "app.db"
    sqlite3.connect(empty).close()
    assert main(["stats", f"sqlite:///{empty}"]) == 2
    assert "no cache table 'toolkit_cache'" in capsys.readouterr().err
    with sqlite3.connect(empty) as conn:  # nothing was created in the user's database
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


@pytest.mark.parametrize("table", ["toolkit_cache_lease", "users"])
def test_a_table_that_is_no_cache_table_is_refused_in_one_line(
    db: str, table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--table naming the lease table was a ValueError traceback; another application's
    table was "the cache failed" (exit 1) after trying to index it."""
    path = db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    before = _schema(path)
    for command in (["stats"], ["ls"], ["purge"], ["clear", "--yes"]):
        assert main([command[0], db, "--table", table, *command[1:]]) == 2
        err = capsys.readouterr().err
        assert f"{table!r} is not a cache table" in err and "Traceback" not in err
    assert _schema(path) == before


def _schema(path: str) -> list[Any]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()


def test_an_option_of_another_backend_is_refused_not_ignored(
    db: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--table means nothing to Redis and --prefix nothing to SQLite: ignored, they let a
    command act on the default cache (clear: delete its entries) instead of the one meant."""
    for args in (
        [db, "--prefix", "app:"],
        [db, "--schema", "app"],
        [redis_url, "--table", "app_cache"],
        [redis_url, "--schema", "app"],
    ):
        assert main(["clear", *args, "--yes"] if args[0] == db else ["stats", *args]) == 2
        err = capsys.readouterr().err
        assert f"{args[1]} does not apply" in err and "Traceback" not in err
    assert main(["stats", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 5  # nothing was cleared


def test_every_command_on_the_real_redis(
    redis_closer: list[RedisCache[Any]], redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = make_cache(redis_closer, redis_url)
    cache.set({(("llm",), f"k{i}"): ("secret value", 60) for i in range(3)})
    cache.set({(("other",), "k"): (1, None)})
    target = [redis_url, "--prefix", cache.prefix]
    assert main(["stats", *target]) == 0
    out = capsys.readouterr().out
    assert "entries:    4" in out and "3  llm" in out and "expired:    none kept" in out
    assert main(["ls", *target, "--ns", "llm"]) == 0
    out = capsys.readouterr().out
    assert "k0" in out and "s  k2" in out and "secret" not in out
    assert main(["purge", *target]) == 0
    assert "deletes expired entries itself" in capsys.readouterr().out
    assert main(["clear", *target, "--ns", "llm", "--yes"]) == 0
    assert cache.namespaces() == {("other",): 1}
    assert main(["clear", *target, "--yes"]) == 0
    assert cache.stats().entries == 0


def test_clear_deletes_a_namespace_redis_stores_hashed(
    redis_closer: list[RedisCache[Any]], redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A long namespace is stored hashed in Redis, so the namespace counts leave it out:
    clear used to answer "nothing to delete" and leave its entries in place."""
    cache = make_cache(redis_closer, redis_url)
    long_ns, child = ("x" * 200,), ("x" * 200, "child")
    cache.set({(long_ns, "a"): (1, None), (long_ns, "b"): (2, None), (child, "c"): (3, None)})
    assert long_ns not in cache.namespaces()  # the premise: hashed, not listed
    target = [redis_url, "--prefix", cache.prefix]
    assert main(["clear", *target, "--ns", json.dumps(list(long_ns)), "--yes"]) == 0
    assert "(2 entries)" in capsys.readouterr().out
    assert cache.get([(long_ns, "a"), (long_ns, "b"), (child, "c")]) == {(child, "c"): 3}


@pytest.mark.postgres
def test_a_password_in_the_url_query_is_never_printed(
    pg_url: str, pg_closer: list[tuple[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """libpq and redis-py take ?password= as well as user:password@: only the latter was
    hidden, so every command printed the former (into terminals and CI logs)."""
    cache = make_pg_cache(pg_closer, pg_url)
    cache.set({(("llm",), "k"): (1, None)})
    parts = urlsplit(pg_url)
    query = "&".join(filter(None, [parts.query, "password=hunter2", "application_name=x"]))
    url = urlunsplit(parts._replace(query=query))
    for command in ("stats", "ls"):
        assert main([command, url, "--table", cache.table]) == 0
        out = capsys.readouterr().out
        assert "hunter2" not in out and "password=***" in out and "application_name=x" in out


@pytest.mark.postgres
@pytest.mark.parametrize("where", ["table", "schema"])
def test_a_missing_postgres_table_is_refused_not_created(
    pg_url: str, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cache creates its tables on first use: a mistyped --table or --schema used to
    create them in the user's database, and the command reported an empty cache."""
    name = unique_table()
    option = ["--table", name] if where == "table" else ["--schema", name]
    try:
        for command in (["stats"], ["ls"], ["purge"], ["clear", "--yes"]):
            assert main([command[0], pg_url, *option, *command[1:]]) == 2
            err = capsys.readouterr().err
            assert "has no cache table" in err and f"--{where}" in err
        with psycopg.connect(pg_url, connect_timeout=5) as conn:
            if where == "schema":
                created = conn.execute("SELECT to_regnamespace(%s)", (name,)).fetchall()
            else:
                created = conn.execute(
                    "SELECT to_regclass(%s), to_regclass(%s)",
                    (f'"public"."{name}"', f'"public"."{name}_lease"'),
                ).fetchall()
        assert created in ([(None,)], [(None, None)])
    finally:  # what a failing run created
        drop_table(pg_url, *(("public", name) if where == "table" else (name, "toolkit_cache")))


@pytest.mark.parametrize("bad", ["database", "port"])
def test_a_malformed_redis_url_is_refused(
    redis_closer: list[RedisCache[Any]],
    redis_url: str,
    bad: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """redis-py reads a database that is no number as database 0, so clear on a mistyped
    redis://host/x deleted database 0's cache; a port that is no number was a traceback."""
    parts = urlsplit(redis_url)
    cache = make_cache(redis_closer, urlunsplit(parts._replace(path="/0")))
    cache.set({(("llm",), "k"): (1, None)})
    if bad == "database":
        url = urlunsplit(parts._replace(path="/x"))
    else:
        url = urlunsplit(parts._replace(netloc=f"{parts.hostname}:abc"))
    assert main(["clear", url, "--prefix", cache.prefix, "--yes"]) == 2
    err = capsys.readouterr().err
    assert "bad Redis URL" in err and "Traceback" not in err
    assert cache.get([(("llm",), "k")]) == {(("llm",), "k"): 1}


def test_a_redis_url_option_redis_py_does_not_take_is_refused_at_once(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``?prefix=`` (a natural guess for the key prefix) was passed on to every connection:
    the command died with a TypeError traceback from inside redis-py."""
    parts = urlsplit(redis_url)
    url = urlunsplit(parts._replace(path="/0", query="prefix=other:"))
    assert main(["stats", url]) == 2
    err = capsys.readouterr().err
    assert "bad Redis URL" in err and "'prefix'" in err and "Traceback" not in err


def test_an_empty_redis_prefix_is_refused_not_read_as_the_default(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--prefix "" (an unset shell variable) named the default prefix: the commands,
    clear included, acted on the default cache, another cache's entries."""
    for command in ("stats", "ls"):
        assert main([command, redis_url, "--prefix", ""]) == 2
        err = capsys.readouterr().err
        assert "prefix must not be empty" in err and "--prefix ''" in err


def test_an_unreachable_redis_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "redis://127.0.0.1:1/0"]) == 1
    assert "the cache failed" in capsys.readouterr().err


def test_dashboards_are_written(tmp_path: Path) -> None:
    out = tmp_path / "monitoring"
    done = toolkit("dashboards", "--out", str(out))
    assert done.returncode == 0, done.stderr
    shipped = sorted(path.name for path in (ROOT / "dashboards").iterdir())
    assert sorted(path.name for path in out.iterdir()) == shipped
    assert {"cache.json", "alerts.yml"} <= set(shipped)
    for name in shipped:
        assert (out / name).read_bytes() == (ROOT / "dashboards" / name).read_bytes()


def test_dashboards_never_clobber_other_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "monitoring"
    assert main(["dashboards", "--out", str(out)]) == 0
    assert main(["dashboards", "--out", str(out)]) == 0  # same content: fine
    (out / "cache.json").write_text("{}")
    assert main(["dashboards", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "cache.json").read_text() == "{}"
    assert main(["dashboards", "--out", str(out), "--force"]) == 0
    assert json.loads((out / "cache.json").read_text())["title"]


@given(st.lists(st.text(max_size=6), max_size=4).map(tuple))
def test_namespace_syntax_round_trips(ns: tuple[str, ...]) -> None:
    assert parse_namespace(format_namespace(ns)) == ns


@pytest.mark.parametrize(
    ("count", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 2**30, "3.0 GiB")]
)
def test_bytes_read_as_people_do(count: int, text: str) -> None:
    assert human_bytes(count) == text


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
def test_admin_commands_are_not_cut_short_by_the_hot_path_bound(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Clearing or purging a large cache may take minutes: the command's cache allows them,
    where the library's default (0.5 s, sized for observe's deadline) would cut it short."""
    url = request.getfixturevalue("redis_url" if kind == "redis" else "pg_url")
    where: list[str] = []
    if kind == "postgres":  # a table the command can open: it refuses to create one
        cache = make_pg_cache(request.getfixturevalue("pg_closer"), url)
        cache.set({(("a",), "k"): (1, None)})
        where = ["--table", cache.table]
    parser = argparse.ArgumentParser()
    add_target_arguments(parser)
    with open_target(parser.parse_args([url, *where])) as (target, _):
        assert getattr(target, "max_call_seconds", 0) >= ADMIN_CALL_SECONDS
