"""The real MIND sample through ingest and the recommender's export: every click-log item maps to a
titled article, and the point-in-time impressions keep every shown item and click.

No backbone is needed: the export is checked with a champion that has embedded nothing yet (so
``items_without_embedding`` counts every item, which the flow reports instead of dropping).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from tests.conftest import shared_data_dir

DATA = shared_data_dir()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("prefect_harness"),
    pytest.mark.skipif(DATA is None, reason="public datasets not found: set NEWSPULSE_DATA_DIR or add ../shared/data"),
]


def test_mind_click_log_maps_to_titles_and_keeps_every_click(settings, tmp_path) -> None:
    from flows.ingest import ingest_flow
    from models.recommend import impressions_from_events, load_rec_inputs, user_histories
    from warehouse.connection import connect
    from warehouse.recommend import export_rec_inputs, newest_impression

    ingest_flow(datasets=["mind_titles", "mind_behaviors"], data_dir=str(DATA))
    with connect(settings) as con:
        as_of = newest_impression(con, "mind")
        assert as_of == datetime(2019, 11, 14, 23, 50, 13, tzinfo=UTC)
        out = export_rec_inputs(con, source="mind", model_version="none", as_of=as_of, history_days=30,
                                candidate_hours=48, out_dir=tmp_path)
    # README of mind_small_titles: 100% of shown, clicked and history ids have a title.
    assert out["impressions"] == 5000 and out["users"] == 4637
    assert out["events_unmapped"] == 0
    assert out["events"] == 189_359 + 159_802
    assert out["items"] == out["items_without_embedding"]  # nothing embedded by "none"

    inputs = load_rec_inputs(out["events_path"], out["items_path"])
    imps, meta = impressions_from_events(inputs)
    assert len(imps) == 5000 and meta["time"].is_monotonic_increasing
    assert sum(len(c) for c in imps.candidates) == 189_359
    assert sum(int(lab.sum()) for lab in imps.labels) == 7_542
    # Point in time: an impression's history holds its own history field plus the user's clicks
    # in earlier impressions, and never a click the user makes only later.
    field = {k: set(g) for k, g in inputs.events[inputs.events["kind"] == "history"].groupby("impression_id")["row"]}
    by_user: dict[str, list[int]] = {}
    for i, user in enumerate(meta["user_id"]):
        by_user.setdefault(user, []).append(i)
    checked = 0
    for seq in by_user.values():
        for a, i in enumerate(seq):
            earlier = {int(r) for j in seq[:a] for r in imps.candidates[j][imps.labels[j] == 1]}
            later = {int(r) for j in seq[a + 1:] for r in imps.candidates[j][imps.labels[j] == 1]}
            own = field.get(meta["impression_id"][i], set())
            assert set(imps.history[i].tolist()) == own | earlier
            assert not (set(imps.history[i].tolist()) & (later - own - earlier))
            checked += len(seq) > 1
    assert checked > 300  # users with several impressions in the week
    users = user_histories(imps, meta)
    assert len(users) == 4637 and users["history"].map(len).min() >= 0
    assert np.isin(np.concatenate(list(users["history"])), np.arange(len(inputs.item_ids))).all()
