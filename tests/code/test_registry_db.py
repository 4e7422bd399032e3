"""The model_registry table: the champion and cpu-champion aliases, promotion events, rollback through
history per alias, and the views that say who serves what (v_serving, v_scores, v_scores_by_model, v_models)."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from warehouse import registry
from warehouse.connection import connect
from warehouse.migrate import migrate


def _row(version: str, score: float) -> dict:
    return {"model_version": version, "backbone": "preset:tiny", "heads": {"topic_labels": ["a"]},
            "metrics": {"sentiment": {}}, "val_score": score, "baseline_val_score": 0.5, "served": "gpt",
            "val_split_id": "split-1", "data_snapshot": {"rows": 10}, "artifact_path": f"/tmp/{version}"}


def test_promote_refuse_and_rollback_walk_the_history(settings) -> None:
    with connect(settings) as con:
        migrate(con)
        assert registry.champion(con) is None
        with pytest.raises(ValueError, match="no champion"):
            registry.rollback(con)
        for version, score in (("m1", 0.6), ("m2", 0.7), ("m3", 0.8)):
            registry.record_model(con, _row(version, score))
        registry.promote(con, "m1", "first model")
        with pytest.raises(ValueError, match="first champion"):
            registry.rollback(con)
        registry.promote(con, "m2", "better")
        registry.refuse(con, "m3", "worse on validation")  # a refusal moves nothing
        assert registry.champion(con)["model_version"] == "m2"
        registry.promote(con, "m3", "better still")
        stages = {r["model_version"]: r["stage"] for r in registry.list_models(con)}
        assert stages == {"m1": "archived", "m2": "archived", "m3": "champion"}
        assert registry.rollback(con) == ("m3", "m2")
        assert registry.rollback(con) == ("m2", "m1")  # keeps walking back
        assert registry.champion(con)["model_version"] == "m1"
        assert registry.get_model(con, "champion")["metrics"] == {"sentiment": {}}
        actions = [r[0] for r in con.execute("SELECT action FROM model_promotions ORDER BY event_at").fetchall()]
        assert actions == ["promote", "promote", "refuse", "promote", "rollback", "rollback"]
        with pytest.raises(KeyError):
            registry.promote(con, "nope", "x")


# ----------------------------------------------------------------------------- serving aliases


@pytest.fixture
def con(settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """A migrated warehouse with teachers t1, t2 and students s1, s2 recorded as candidates."""
    with connect(settings) as c:
        migrate(c)
        for i, version in enumerate(("t1", "t2", "s1", "s2")):
            registry.record_model(c, _row(version, 0.6 + i / 100))
        yield c


def _serving(con) -> dict[str, tuple[str, bool]]:
    return {r["alias"]: (r["model_version"], r["held"]) for r in registry.serving(con)}


def test_cpu_champion_falls_back_to_the_champion_until_a_model_holds_it(con) -> None:
    assert registry.get_model(con, "cpu-champion") is None and _serving(con) == {}
    registry.promote(con, "t1", "first model")
    # No student: the hourly scorer serves the champion, exactly as before the aliases.
    assert registry.get_model(con, "cpu-champion")["model_version"] == "t1"
    assert registry.holder(con, "cpu-champion") is None
    assert _serving(con) == {"champion": ("t1", True), "cpu-champion": ("t1", False)}
    registry.promote(con, "s1", "student within the gap", alias="cpu-champion")
    assert registry.get_model(con, "cpu-champion")["model_version"] == "s1"
    assert registry.get_model(con, "champion")["model_version"] == "t1"
    # A fine-tune promoted to champion does not move cpu-champion, and stage stays the champion's.
    registry.promote(con, "t2", "better teacher")
    assert _serving(con) == {"champion": ("t2", True), "cpu-champion": ("s1", True)}
    stages = {r["model_version"]: (r["stage"], r["cpu_champion"]) for r in registry.list_models(con)}
    assert stages == {"t1": ("archived", False), "t2": ("champion", False), "s1": ("candidate", True),
                      "s2": ("candidate", False)}
    events = con.execute("SELECT action, alias, from_version, to_version FROM model_promotions "
                         "ORDER BY event_at").fetchall()
    assert events == [("promote", "champion", None, "t1"), ("promote", "cpu-champion", None, "s1"),
                      ("promote", "champion", "t1", "t2")]


def test_refusal_and_rollback_are_per_alias(con) -> None:
    registry.promote(con, "t1", "first model")
    registry.refuse(con, "s1", "gap too large", alias="cpu-champion")  # records what keeps serving
    assert con.execute("SELECT from_version, alias FROM model_promotions WHERE action = 'refuse'").fetchall() \
        == [("t1", "cpu-champion")]
    with pytest.raises(ValueError, match="nothing to roll back"):
        registry.rollback(con, "cpu-champion")
    registry.promote(con, "s1", "first student", alias="cpu-champion")
    registry.promote(con, "t2", "better teacher")
    registry.promote(con, "s2", "better student", alias="cpu-champion")
    # Rolling back the champion leaves the students alone, and the other way round.
    assert registry.rollback(con, "champion") == ("t2", "t1")
    assert _serving(con) == {"champion": ("t1", True), "cpu-champion": ("s2", True)}
    assert registry.rollback(con, "cpu-champion") == ("s2", "s1")
    assert registry.champion(con)["model_version"] == "t1"
    # The first student rolled back: nobody holds cpu-champion, it falls back to the champion.
    assert registry.rollback(con, "cpu-champion") == ("s1", None)
    assert _serving(con) == {"champion": ("t1", True), "cpu-champion": ("t1", False)}
    with pytest.raises(ValueError, match="falls back to the champion"):
        registry.rollback(con, "cpu-champion")
    with pytest.raises(ValueError, match="first champion"):
        registry.rollback(con, "champion")
    actions = con.execute("SELECT action, alias FROM model_promotions WHERE action = 'rollback' "
                          "ORDER BY event_at").fetchall()
    assert actions == [("rollback", "champion"), ("rollback", "cpu-champion"), ("rollback", "cpu-champion")]


def test_alias_mistakes_are_clear_errors(con) -> None:
    registry.promote(con, "t1", "first model")
    with pytest.raises(ValueError, match="unknown alias 'gpu-champion'"):
        registry.promote(con, "s1", "x", alias="gpu-champion")
    with pytest.raises(ValueError, match="unknown alias"):
        registry.rollback(con, "teacher")
    with pytest.raises(ValueError, match="t1 already holds champion"):
        registry.promote(con, "t1", "again")
    with pytest.raises(KeyError, match="nope"):
        registry.promote(con, "nope", "x", alias="cpu-champion")
    # The champion may also be given cpu-champion by hand: one model then serves both.
    registry.promote(con, "t1", "no student yet, pin it", alias="cpu-champion")
    assert _serving(con) == {"champion": ("t1", True), "cpu-champion": ("t1", True)}


def _scores(con, rows: list[tuple[str, str, str]]) -> None:
    """Articles a1..a3 and ``(article_id, model_version, sentiment_label)`` score rows."""
    con.execute("INSERT INTO articles (article_id, source, source_id, title, body, published_at, ingested_at, "
                "batch_id) SELECT 'a' || i, 'demo', 'a' || i, 'title ' || i, '', now(), now(), 'b' "
                "FROM range(1, 4) t(i)")
    for article, version, label in rows:
        con.execute("INSERT INTO scores (article_id, model_version, sentiment_label, sentiment_p_negative, "
                    "sentiment_p_neutral, sentiment_p_positive, sentiment_score, n_tokens, truncated, scored_at, "
                    "score_run_id) VALUES (?, ?, ?, 0.2, 0.6, 0.2, 0.0, 3, false, now(), 'r')",
                    [article, version, label])


# (who holds what) -> what each view shows: v_scores follows the resolved cpu-champion.
VIEW_CASES = {
    "no student: the champion serves both": (
        [("t1", "champion")],
        {"champion": ("t1", True), "cpu-champion": ("t1", False)},
        {("a1", "t1", "champion, cpu-champion"), ("a2", "t1", "champion, cpu-champion")},
        {"t1": "champion, cpu-champion", "s1": "none"}),
    "a student holds cpu-champion": (
        [("t1", "champion"), ("s1", "cpu-champion")],
        {"champion": ("t1", True), "cpu-champion": ("s1", True)},
        {("a1", "s1", "cpu-champion"), ("a3", "s1", "cpu-champion")},
        {"t1": "champion", "s1": "cpu-champion"}),
    "the student rolled back": (
        [("t1", "champion"), ("s1", "cpu-champion"), ("rollback", "cpu-champion")],
        {"champion": ("t1", True), "cpu-champion": ("t1", False)},
        {("a1", "t1", "champion, cpu-champion"), ("a2", "t1", "champion, cpu-champion")},
        {"t1": "champion, cpu-champion", "s1": "none"}),
}


@pytest.mark.parametrize("case", list(VIEW_CASES))
def test_views_follow_the_resolved_cpu_champion(con, case: str) -> None:
    moves, serving, v_scores, by_model_alias = VIEW_CASES[case]
    _scores(con, [("a1", "t1", "neutral"), ("a2", "t1", "negative"), ("a1", "s1", "positive"),
                  ("a3", "s1", "neutral")])
    for version, alias in moves:
        if version == "rollback":
            registry.rollback(con, alias)
        else:
            registry.promote(con, version, "test", alias=alias)
    got = {(r[0], r[1], r[2]) for r in con.execute("SELECT alias, model_version, held FROM v_serving").fetchall()}
    assert got == {(a, v, h) for a, (v, h) in serving.items()}
    assert set(con.execute("SELECT article_id, model_version, alias FROM v_scores").fetchall()) == v_scores
    # Every model's scores, side by side, each with the aliases its model serves now.
    both = con.execute("SELECT model_version, alias, count(*) FROM v_scores_by_model GROUP BY ALL").fetchall()
    assert {(v, a, n) for v, a, n in both} == {("t1", by_model_alias["t1"], 2), ("s1", by_model_alias["s1"], 2)}
    listed = dict(con.execute("SELECT model_version, aliases FROM v_models").fetchall())
    assert {v: listed[v] for v in by_model_alias} == by_model_alias and listed["s2"] == "none"


def test_history_from_before_the_aliases_is_the_champions(settings, tmp_path) -> None:
    """A warehouse promoted before migration 007: its events count as champion moves after it."""
    import shutil

    from warehouse.migrate import MIGRATIONS_DIR

    old = tmp_path / "old-migrations"
    old.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("00[1-6]_*.sql")):
        shutil.copy(path, old / path.name)
    with connect(settings) as c:
        migrate(c, old)
        for version, stage in (("m1", "archived"), ("m2", "champion")):
            c.execute("INSERT INTO model_registry (model_version, created_at, backbone, heads, metrics, val_score, "
                      "served, val_split_id, artifact_path, stage) VALUES (?, now(), 'tiny', '{}', '{}', 0.5, 'gpt', "
                      "'s', '/x', ?)", [version, stage])
        c.execute("INSERT INTO model_promotions VALUES (now() - INTERVAL 1 HOUR, 'promote', NULL, 'm1', 'first'), "
                  "(now(), 'promote', 'm1', 'm2', 'better')")
        assert 7 in migrate(c)
        assert _serving(c) == {"champion": ("m2", True), "cpu-champion": ("m2", False)}
        assert registry.rollback(c, "champion") == ("m2", "m1")
        with pytest.raises(ValueError, match="nothing to roll back"):
            registry.rollback(c, "cpu-champion")
