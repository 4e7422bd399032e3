"""The model_registry table: champion alias, promotion events, rollback through history."""

from __future__ import annotations

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
