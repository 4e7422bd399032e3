"""`newspulse models` per alias: promote and roll back champion or cpu-champion, list who serves
what, and every user mistake as one clear line with a non-zero exit (no model files needed)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from newspulse.cli import app
from warehouse import registry
from warehouse.connection import connect
from warehouse.migrate import migrate

runner = CliRunner()


@pytest.fixture
def warehouse(settings):
    """Teacher t1 (champion) and student s1 (a candidate) in a fresh warehouse."""
    with connect(settings) as con:
        migrate(con)
        for version in ("t1", "s1"):
            registry.record_model(con, {"model_version": version, "backbone": "tiny", "heads": {}, "metrics": {},
                                        "val_score": 0.5, "served": "gpt", "val_split_id": "s",
                                        "artifact_path": f"/nonexistent/{version}"})
        registry.promote(con, "t1", "first model")
    return settings


def _run(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["models", *args])
    return res.exit_code, res.output


def _serving(settings) -> dict[str, str]:
    with connect(settings) as con:
        return {r["alias"]: r["model_version"] for r in registry.serving(con)}


def test_promote_list_and_roll_back_per_alias(warehouse) -> None:
    code, out = _run("promote", "s1", "--alias", "cpu-champion", "--reason", "student checked by hand")
    assert code == 0 and "s1 is now the cpu-champion" in out
    assert _serving(warehouse) == {"champion": "t1", "cpu-champion": "s1"}
    code, out = _run("list")
    assert code == 0 and "cpu-champion" in out and "score-hourly" in out  # v_models, then v_serving
    code, out = _run("list", "--format", "csv")
    assert code == 0 and "aliases" in out.splitlines()[0] and "score-hourly" not in out  # one document
    code, out = _run("show", "cpu-champion")
    assert code == 0 and "s1" in out
    code, out = _run("rollback", "--alias", "cpu-champion")
    assert code == 0 and "falls back to the champion t1" in out, out
    assert _serving(warehouse) == {"champion": "t1", "cpu-champion": "t1"}
    with connect(warehouse) as con:
        events = con.execute("SELECT action, alias, to_version, reason FROM model_promotions ORDER BY event_at").fetchall()
    assert events[1:] == [("promote", "cpu-champion", "s1", "student checked by hand"),
                          ("rollback", "cpu-champion", None, "rolled back from s1")]


@pytest.mark.parametrize(("args", "says"), [
    (("promote", "s1", "--alias", "gpu-champion"), "unknown alias 'gpu-champion': use champion, cpu-champion, intent-champion"),
    (("promote", "nope"), "no model version 'nope'"),
    (("promote", "nope", "--alias", "cpu-champion"), "no model version 'nope'"),
    (("promote", "t1"), "t1 already holds champion"),
    (("rollback", "--alias", "teacher"), "unknown alias 'teacher'"),
    (("rollback", "--alias", "cpu-champion"), "no model holds cpu-champion"),
    (("rollback",), "t1 was the first champion"),
])
def test_mistakes_are_one_line_and_exit_1(warehouse, args: tuple[str, ...], says: str) -> None:
    before = _serving(warehouse)
    code, out = _run(*args)
    assert code == 1 and says in out and "Traceback" not in out, out
    assert len(out.strip().splitlines()) == 1, out
    assert _serving(warehouse) == before  # nothing moved
