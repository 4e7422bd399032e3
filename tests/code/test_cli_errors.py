"""Every CLI command given bad arguments or a bad input: one clear line, a non-zero exit code
(2: the user's mistake, 1: a missing thing), never a traceback (issue 18, "Errors").

Table-driven: each row is a command line, the exit code and a phrase of the one-line answer. No
row starts a flow or loads a model, so the whole table runs in seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from newspulse.cli import app

runner = CliRunner()


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Input files of every kind a user may hand over; the working directory is ``tmp_path``."""
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "binary.csv").write_bytes(b"\x00\x01,\x02\n\xff\xfe,\x03,\x04,\x05\n\x89PNG\r\n\x1a\n,,,,,,\n")
    (tmp_path / "ok.csv").write_text("text\nshares fell\nprofit rose\n", encoding="utf-8")
    (tmp_path / "header_only.csv").write_text("text\n", encoding="utf-8")
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEWSPULSE_DATA_DIR", raising=False)
    return tmp_path


@pytest.fixture
def warehouse(settings, inputs):
    """A migrated warehouse with one registered champion (t1) whose files are not needed."""
    from warehouse import registry
    from warehouse.connection import connect
    from warehouse.migrate import migrate

    with connect(settings) as con:
        migrate(con)
        registry.record_model(con, {"model_version": "t1", "backbone": "tiny", "heads": {}, "metrics": {},
                                    "val_score": 0.5, "served": "gpt", "val_split_id": "s",
                                    "artifact_path": "/nonexistent/t1"})
        registry.promote(con, "t1", "first model")
    return settings


def _one_line(args: list[str], code: int, says: str) -> None:
    res = runner.invoke(app, args)
    out = res.output
    assert "Traceback" not in out and not isinstance(res.exception, (AssertionError, KeyError, TypeError)), out
    assert res.exit_code == code, (args, res.exit_code, out)
    assert says in out, (args, out)
    assert len(out.strip().splitlines()) == 1, (args, out)


WITH_WAREHOUSE = [
    # predict: the input file, the output suffix, the arguments, the model
    (["predict", "--input", "missing.csv", "--output", "o.csv"], 2, "no input file missing.csv"),
    (["predict", "--input", ".", "--output", "o.csv"], 2, "is not a file"),
    (["predict", "--input", "empty.csv", "--output", "o.csv"], 2, "the file is empty"),
    (["predict", "--input", "binary.csv", "--output", "o.csv"], 2, "cannot read binary.csv"),
    (["predict", "--input", "header_only.csv", "--output", "o.csv"], 2, "no rows"),
    (["predict", "--input", "ok.csv", "--output", "x.xlsx"], 2, "--output x.xlsx: write .csv"),
    (["predict", "--input", "ok.csv", "--output", "noext"], 2, "the format follows the suffix"),
    (["predict", "--input", "ok.csv", "--output", "o.csv", "--batch-size", "0"], 2, "--batch-size must be at least 1"),
    (["predict", "--input", "ok.csv", "--output", "o.csv", "--text-column", "body"], 2, "no column 'body'"),
    (["predict", "--input", "ok.csv", "--output", "o.csv", "--model", "nope"], 1, "no model 'nope'"),
    # the registry
    (["models", "promote", "nope"], 1, "no model version 'nope'"),
    (["models", "promote", "t1", "--alias", "gpu"], 1, "unknown alias 'gpu'"),
    (["models", "show", "nope"], 1, "no model 'nope'"),
    (["models", "list", "--format", "xml"], 2, "--format must be table, csv or json"),
    (["models", "rollback", "--alias", "teacher"], 1, "unknown alias 'teacher'"),
    # alerts and recommendations
    (["alerts", "list", "--status", "weird"], 2, "unknown status 'weird'"),
    (["alerts", "list", "--format", "xml"], 2, "--format must be"),
    (["alerts", "list", "--limit", "0"], 2, "--limit must be at least 1"),
    (["alerts", "show", "nope"], 1, "no alert 'nope'"),
    (["alerts", "ack", "nope"], 1, "no alert 'nope'"),
    (["alerts", "resolve", "nope"], 1, "no alert 'nope'"),
    (["recs", "U0001"], 1, "no recommendations for 'U0001'"),
    (["recs", "U0001", "--format", "xml"], 2, "--format must be"),
    # SQL
    (["sql", "SELECT * FROM nope"], 2, "Table with name nope does not exist"),
    (["sql", "SELECT * FROM"], 2, "Parser Error"),
    (["sql", "DROP TABLE articles"], 2, "read-only"),
    (["sql", "SELECT 1", "--format", "xml"], 2, "--format must be"),
    # flows: refused before any flow starts
    (["score", "--runner", "spark"], 2, "--runner must be"),
    (["score", "--model-version", "nope"], 1, "no model 'nope'"),
    (["score", "--shard-size", "0"], 2, "--shard-size must be at least 1"),
    (["ingest", "files", "missing.csv"], 2, "no such file: missing.csv"),
    (["ingest", "support", "missing.csv"], 2, "no such support file: missing.csv"),
    (["ingest", "dataset", "nope", "--data-dir", "."], 2, "unknown dataset 'nope'"),
    (["ingest", "dataset", "ag_news", "--data-dir", "."], 2, "folder"),
    (["ingest", "dataset", "ag_news"], 2, "give --data-dir or set NEWSPULSE_DATA_DIR"),
    (["generate-stream", "out", "--days", "0"], 2, "need --days >= 2"),
    (["generate-stream", "a_file/out"], 2, "cannot write to a_file/out"),
    (["pretrain", "--base", "nope"], 2, "unknown backbone 'nope'"),
    (["finetune", "--recipe", "magic"], 2, "--recipe must be"),
    (["finetune", "--task", "ner"], 2, "--task must be"),
    (["finetune", "--intent", "banking77", "--sentiment", "synthetic"], 2, "an intent model is trained on its own"),
    (["finetune", "--base", "nope"], 2, "unknown backbone 'nope'"),
    (["distill", "--student", "huge"], 2, "student 'huge'"),
    (["distill", "--teacher", "nope"], 2, "no model version 'nope'"),
    (["distill", "--alpha", "2"], 2, "--alpha must be in [0, 1]"),
    (["backbones", "show", "nope"], 2, "unknown backbone 'nope'"),
    (["backbones", "fetch", "nope"], 2, "unknown catalogue backbone 'nope'"),
    (["generate", "hi", "--model", "nope"], 1, "no model 'nope'"),
]


@pytest.mark.parametrize(("args", "code", "says"), WITH_WAREHOUSE, ids=[" ".join(a) for a, _, _ in WITH_WAREHOUSE])
def test_bad_arguments_are_one_line(warehouse, args: list[str], code: int, says: str) -> None:
    _one_line(args, code, says)


WITHOUT_WAREHOUSE = [
    ["models", "list"], ["models", "show"], ["models", "promote", "t1"], ["models", "rollback"],
    ["recs", "U0001"], ["alerts", "list"], ["alerts", "show", "a1"], ["alerts", "ack", "a1"],
    ["sql", "SELECT 1"], ["score"], ["predict", "--input", "ok.csv", "--output", "o.csv"],
]


@pytest.mark.parametrize("args", WITHOUT_WAREHOUSE, ids=[" ".join(a) for a in WITHOUT_WAREHOUSE])
def test_no_warehouse_yet_is_one_line_exit_1(settings, inputs, args: list[str]) -> None:
    _one_line(args, 1, "no warehouse at")
    assert not Path(settings.warehouse_path).exists()  # asking did not create one


def test_broken_routing_table_is_one_line(settings, inputs, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("NEWSPULSE_ROUTING_TABLE", str(inputs / "missing-routing.csv"))
    get_settings.cache_clear()
    _one_line(["triage"], 2, "missing-routing.csv")


@pytest.mark.parametrize("args", [["predict"], ["recs"], ["score", "--limit", "many"], ["demo", "--seed", "x"],
                                  ["models", "nope"], ["nope"]])
def test_usage_errors_exit_2_without_a_traceback(args: list[str]) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "Traceback" not in res.output and "Error" in res.output, res.output


def test_output_format_follows_the_suffix(tmp_path: Path) -> None:
    """--output x.tsv writes tabs and x.json one JSON document; both read back."""
    import json

    import pandas as pd

    from newspulse.cli import _read_table, _write_table

    df = pd.DataFrame({"text": ["a, b", "c"], "p": [0.5, 0.25]})
    _write_table(df, tmp_path / "x.tsv")
    assert (tmp_path / "x.tsv").read_text(encoding="utf-8").splitlines()[0] == "text\tp"
    _write_table(df, tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text(encoding="utf-8"))[0] == {"text": "a, b", "p": 0.5}
    assert _read_table(tmp_path / "x.json").text.tolist() == ["a, b", "c"]
    assert _read_table(tmp_path / "x.tsv").text.tolist() == ["a, b", "c"]
