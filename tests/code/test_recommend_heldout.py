"""The click model's report is computed on a held-out newest slice, never on the early-stopping one.

``train_click_model_task`` cuts the usable impressions in time order into fit / early-stopping /
held-out (:func:`models.train_click.time_slices`). Reporting on the impressions that picked the
epoch flatters the model; these tests fail if the reported rows overlap the early-stopping rows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.train_click import time_slices
from core.settings import get_settings
from tests.code.test_recommend_flow import _load
from warehouse.connection import connect


@pytest.mark.parametrize("n", [3, 4, 10, 57, 1000])
def test_time_slices_are_ordered_disjoint_and_cover(n: int) -> None:
    fit, stop, held = time_slices(n)
    assert len(fit) and len(stop) and len(held)
    assert np.array_equal(np.concatenate([fit, stop, held]), np.arange(n))  # in time order, no gap, no overlap
    assert fit.max() < stop.min() and stop.max() < held.min()  # held out = the newest
    if n >= 100:
        assert len(held) == round(n * 0.1) and len(stop) == round(n * 0.1)


def test_time_slices_refuse_too_few() -> None:
    with pytest.raises(ValueError, match="cannot be cut"):
        time_slices(2)


@pytest.mark.usefixtures("prefect_harness")
def test_reported_rows_are_not_the_early_stopping_rows(settings, monkeypatch) -> None:
    import models.click as click
    import models.train_click as train_click
    from flows.recommend import recommend_flow

    seen: dict[str, list] = {"fit": [], "early_stop": [], "reported": []}
    real_train, real_score = train_click.train_click_model, click.score_impressions

    def train_spy(vectors, train, cfg, *, valid=None, **kw):
        if valid is not None:
            seen["fit"].append(train)
            seen["early_stop"].append(valid)
        return real_train(vectors, train, cfg, valid=valid, **kw)

    def score_spy(model, vectors, imps, *args, **kw):
        seen["reported"].append(imps)
        return real_score(model, vectors, imps, *args, **kw)

    monkeypatch.setattr(train_click, "train_click_model", train_spy)
    monkeypatch.setattr(click, "score_impressions", score_spy)
    monkeypatch.setenv("NEWSPULSE_REC_MIN_TRAIN_IMPRESSIONS", "20")
    monkeypatch.setenv("NEWSPULSE_REC_CLICK_EPOCHS", "3")
    get_settings.cache_clear()
    settings = get_settings()
    _load(settings)

    out = recommend_flow()["clicks"]
    assert out["click_model"] and len(seen["early_stop"]) == 1 and len(seen["reported"]) == 1
    stop, reported = seen["early_stop"][0], seen["reported"][0]
    # The task subsets one impression list, so the same impression is the same array object.
    fit_ids, stop_ids = ({id(c) for c in s.candidates} for s in (seen["fit"][0], stop))
    reported_ids = {id(c) for c in reported.candidates}
    assert reported_ids and not stop_ids & reported_ids and not fit_ids & reported_ids
    m = out["metrics"]
    assert m["heldout_impressions"] == len(reported.candidates) == m["valid_impressions"]
    assert m["early_stopping_impressions"] == len(stop.candidates)
    assert m["early_stopping_to"] <= m["heldout_from"] and "held-out newest" in m["evaluated_on"]
    with connect(settings) as con:  # the rec_runs row says what its figures were computed on
        row = json.loads(con.execute("SELECT metrics FROM rec_runs").fetchone()[0])
    assert row["evaluated_on"] == m["evaluated_on"] and row["heldout_impressions"] == m["heldout_impressions"]
    assert row["fit_impressions"] == len(fit_ids) and row["early_stopping_impressions"] == len(stop_ids)
