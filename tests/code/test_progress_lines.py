"""Off a terminal, progress is a few plain lines per stage, not a redrawn bar (issue 18, "Output")."""

from __future__ import annotations

import io

from models import progress


def test_non_terminal_prints_a_line_per_interval_and_one_at_the_end(monkeypatch) -> None:
    out = io.StringIO()
    clock = iter(range(0, 10_000, 7))  # every call: 7 s later
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    bar = progress.LineProgress(total=400, desc="pretrain", every_s=30.0, file=out)
    for _ in range(179):
        bar.update(1)
    bar.set_postfix(loss="3.210")
    bar.close()
    bar.close()  # closing twice writes nothing more
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 50 and "\r" not in out.getvalue()
    assert lines[-1].startswith("pretrain: 179/400 (45%), loss=3.210,") and "so far" not in lines[-1]


def test_short_transient_stage_is_silent_and_iterates_everything() -> None:
    out = io.StringIO()
    assert list(progress.LineProgress(range(5), desc="epoch 1/3", leave=False, file=out)) == [0, 1, 2, 3, 4]
    assert out.getvalue() == ""


def test_progress_bar_picks_lines_off_a_terminal(monkeypatch) -> None:
    monkeypatch.setattr(progress, "interactive", lambda stream=None: False)
    assert isinstance(progress.progress_bar(range(3), desc="x"), progress.LineProgress)
    monkeypatch.setattr(progress, "interactive", lambda stream=None: True)
    assert not isinstance(progress.progress_bar(range(3), desc="x"), progress.LineProgress)
    assert not isinstance(progress.progress_bar(range(3), desc="x", disable=True), progress.LineProgress)
