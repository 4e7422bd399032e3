"""Tests for :mod:`sources.files`: the CSV reader and the file helpers.

Every CSV here is written by the test itself (made-up text). The invariant checked throughout:
each CSV record of the input comes back exactly once, numbered 1..n, and every bad record has a
non-empty ``error`` and keeps its ``raw`` text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from sources.files import (
    MAX_RAW_CHARS,
    expand_globs,
    file_fingerprint,
    read_csv_records,
)
from sources.records import RECORD_COLUMNS


def _write(tmp_path: Path, data: str | bytes, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _meta(value: object) -> dict:
    return json.loads(value) if isinstance(value, str) else {}


def _check_frame(df: pd.DataFrame, n_records: int) -> None:
    assert list(df.columns) == RECORD_COLUMNS
    assert len(df) == n_records
    assert df["record_no"].tolist() == list(range(1, n_records + 1))
    assert str(df["record_no"].dtype) == "int64"
    bad = df[df["error"].notna()]
    assert (bad["error"].str.len() > 0).all()
    assert bad["raw"].notna().all()


def test_header_mapping_headlines_time_description(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "Headlines,Time,Description\n"
        'Widgets rally on demand," 7:51  PM ET Fri, 17 July 2020","Analysts at Foo said ""buy"" today."\n'
        "Gadget maker cuts outlook,18-Jul-20,Shares of Gadget Co fell\n",
    )
    df = read_csv_records(path, source="cnbc")
    _check_frame(df, 2)
    assert df["error"].isna().all()
    first = df.iloc[0]
    assert first["title"] == "Widgets rally on demand"
    assert first["published_at"] == " 7:51  PM ET Fri, 17 July 2020"
    assert first["body"] == 'Analysts at Foo said "buy" today.'
    assert first["source"] == "cnbc"
    assert first["raw"].startswith("Widgets rally on demand,")
    assert _meta(first["meta"]) == {"line": 2}
    assert pd.isna(first["url"]) and pd.isna(first["label"])


def test_embedded_newlines_crlf_and_doubled_quotes(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "title,body\r\n"
        '"Multi\r\nline title","He said ""hello""\r\nand left"\r\n'
        "Plain,Row two\r\n"
        "Old mac,ending\rNext,row\r",
    )
    df = read_csv_records(path, source="s")
    _check_frame(df, 4)
    assert df["error"].isna().all()
    assert df.loc[0, "title"] == "Multi\r\nline title"
    assert df.loc[0, "body"] == 'He said "hello"\r\nand left'
    assert df.loc[1, "title"] == "Plain" and df.loc[1, "body"] == "Row two"
    assert df.loc[2, "title"] == "Old mac" and df.loc[3, "title"] == "Next"
    # starting *line* numbers vs record numbers
    assert [_meta(m)["line"] for m in df["meta"]] == [2, 5, 6, 7]


def test_wrong_field_counts_and_blank_records(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "title,body,date\n"
        "ok one,text one,2024-01-01\n"
        "too,many,fields,here,!\n"
        "too few\n"
        ",,\n"
        "\n"
        "   \n"
        "ok two,text two,2024-01-02\n"
        "\n\n",  # trailing empty lines are not records
    )
    df = read_csv_records(path, source="s")
    _check_frame(df, 7)
    errors = df["error"].tolist()
    assert pd.isna(errors[0]) and pd.isna(errors[6])
    assert errors[1] == "expected 3 fields, got 5"
    assert errors[2] == "expected 3 fields, got 1"
    assert errors[3:6] == ["blank record"] * 3
    assert df.loc[1, "raw"] == "too,many,fields,here,!"
    assert pd.isna(df.loc[1, "title"])  # ambiguous records are not half-parsed
    assert df.loc[6, "title"] == "ok two"


def test_invalid_utf8_bytes(tmp_path: Path) -> None:
    data = b"title,body\ngood,row\nbad \xff\xfe title,caf\xe9\nalso good,row\n"
    df = read_csv_records(_write(tmp_path, data), source="s")
    _check_frame(df, 3)
    assert df["error"].tolist()[1] == "invalid utf-8 bytes"
    assert df.loc[1, "raw"] == "bad \\xff\\xfe title,caf\\xe9"
    assert df["error"].isna().tolist() == [True, False, True]
    # Nothing with lone surrogates leaks into the frame (it would break Parquet/DuckDB).
    for col in RECORD_COLUMNS[1:]:
        for value in df[col].dropna():
            value.encode("utf-8")


def test_latin1_file_with_declared_encoding(tmp_path: Path) -> None:
    text = "title,body\nCafé société,Crème brûlée prices up 5 %\n"
    path = _write(tmp_path, text.encode("latin-1"))
    df = read_csv_records(path, source="s", encoding="latin-1")
    _check_frame(df, 1)
    assert df["error"].isna().all()
    assert df.loc[0, "title"] == "Café société"
    # The same bytes read as UTF-8 are flagged, not mis-decoded silently.
    df_utf8 = read_csv_records(path, source="s")
    assert df_utf8.loc[0, "error"] == "invalid utf-8 bytes"


def test_bom_and_nul_bytes(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbftitle,body\nNul\x00led title,bo\x00\x00dy\nclean,row\n"
    df = read_csv_records(_write(tmp_path, data), source="s")
    _check_frame(df, 2)
    assert df["error"].isna().all()  # the BOM did not spoil the "title" header
    assert df.loc[0, "title"] == "Nulled title"
    assert df.loc[0, "body"] == "body"
    assert "\x00" not in df.loc[0, "raw"]
    assert _meta(df.loc[0, "meta"])["nul_bytes_removed"] == 3
    assert "nul_bytes_removed" not in _meta(df.loc[1, "meta"])


def test_huge_field_is_read(tmp_path: Path) -> None:
    big = "x" * (5 * 1024 * 1024)
    path = _write(tmp_path, f"title,body\nBig one,{big}\nsmall,row\n")
    df = read_csv_records(path, source="s")
    _check_frame(df, 2)
    assert df["error"].isna().all()
    assert len(df.loc[0, "body"]) == len(big)
    assert len(df.loc[0, "raw"]) == MAX_RAW_CHARS
    assert _meta(df.loc[0, "meta"])["raw_truncated"] is True


def test_semicolon_and_tab_delimiters_sniffed(tmp_path: Path) -> None:
    semi = _write(tmp_path, "title;body;date\nA, b and c;text, with commas;2024\nD;e;f\n", "semi.csv")
    df = read_csv_records(semi, source="s")
    _check_frame(df, 2)
    assert df["error"].isna().all()
    assert df.loc[0, "title"] == "A, b and c" and df.loc[0, "body"] == "text, with commas"
    tab = _write(tmp_path, "title\tbody\nHello, world\tsome; text\n", "tab.tsv")
    df = read_csv_records(tab, source="s")
    assert df.loc[0, "title"] == "Hello, world" and df.loc[0, "body"] == "some; text"
    # An explicit delimiter wins over sniffing.
    df = read_csv_records(semi, source="s", delimiter=",")
    assert df.loc[0, "error"] == "expected 1 fields, got 3"


def test_unmapped_columns_defaults_and_overrides(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "Sentence,Rating,Desk,line,source\n"
        "Profits rose,positive,markets,7,wire-a\n"
        "Profits fell,negative,,8,\n",
    )
    df = read_csv_records(
        path,
        source="fallback",
        column_map={"label": "Rating"},
        defaults={"dataset": "mydata", "task": "sentiment", "split": "train"},
    )
    _check_frame(df, 2)
    assert df["body"].tolist() == ["Profits rose", "Profits fell"]
    assert df["label"].tolist() == ["positive", "negative"]
    assert df["dataset"].tolist() == ["mydata", "mydata"]
    assert df["task"].tolist() == ["sentiment", "sentiment"]
    assert df["split"].tolist() == ["train", "train"]
    # a mapped source column wins; an empty cell falls back to the argument
    assert df["source"].tolist() == ["wire-a", "fallback"]
    meta0 = _meta(df.loc[0, "meta"])
    assert meta0 == {"Desk": "markets", "column:line": "7", "line": 2}
    assert "Desk" not in _meta(df.loc[1, "meta"])  # empty extras are dropped
    with pytest.raises(ValueError, match="not in input columns"):
        read_csv_records(path, source="s", column_map={"label": "Nope"})
    with pytest.raises(ValueError, match="unknown record fields"):
        read_csv_records(path, source="s", defaults={"colour": "red"})


def test_tickers_left_as_is(tmp_path: Path) -> None:
    path = _write(tmp_path, 'title,tickers\nChip stocks,"AAPL, MSFT;NVDA"\n')
    df = read_csv_records(path, source="s")
    assert df.loc[0, "tickers"] == "AAPL, MSFT;NVDA"


def test_unterminated_quote_recovers(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'title,body\nfine,row\nbroken,"never closed\nnext,row\nlast,row\n',
    )
    df = read_csv_records(path, source="s")
    _check_frame(df, 4)
    assert df.loc[1, "error"] == "unterminated quoted field"
    assert df.loc[1, "raw"] == 'broken,"never closed'
    assert df["title"].tolist()[2:] == ["next", "last"]
    assert df["error"].isna().tolist() == [True, False, True, True]


def test_garbage_after_quote_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = _write(tmp_path, 'title,body\n"quoted"junk,x\nok,row\n')
    df = read_csv_records(path, source="s")
    _check_frame(df, 2)
    assert df.loc[0, "error"].startswith("malformed CSV record")
    assert df.loc[1, "title"] == "ok"


def test_mixed_bad_file_every_record_once(tmp_path: Path) -> None:
    rows = [
        b"headline,text,time",
        b"a1,b1,t1",
        b'"a2 ""q""","b2\nmore",t2',
        b"a3,b3",
        b",,",
        b"a5,b\xc3\x28,t5",
        b"a6,b6,t6",
    ]
    df = read_csv_records(_write(tmp_path, b"\r\n".join(rows) + b"\r\n"), source="s")
    _check_frame(df, 6)
    assert df["error"].isna().tolist() == [True, True, False, False, False, True]
    assert df.loc[1, "title"] == 'a2 "q"'


def test_unreadable_files_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_csv_records(tmp_path / "missing.csv", source="s")
    with pytest.raises(ValueError, match="directory"):
        read_csv_records(tmp_path, source="s")
    with pytest.raises(ValueError, match="no header"):
        read_csv_records(_write(tmp_path, b"", "empty.csv"), source="s")
    with pytest.raises(ValueError, match="no header"):
        read_csv_records(_write(tmp_path, b"\n\r\n", "blank.csv"), source="s")
    with pytest.raises(ValueError, match="encoding"):
        read_csv_records(_write(tmp_path, "a\n1\n", "x.csv"), source="s", encoding="nope-42")


def test_header_only_gives_empty_frame(tmp_path: Path) -> None:
    df = read_csv_records(_write(tmp_path, "title,body\n"), source="s")
    _check_frame(df, 0)


def test_file_fingerprint(tmp_path: Path) -> None:
    path = _write(tmp_path, "title\nx\n")
    fp = file_fingerprint(path)
    assert fp == {
        "path": str(path.resolve()),
        "size": 8,
        "mtime_ns": path.stat().st_mtime_ns,
    }
    os.utime(path, ns=(fp["mtime_ns"] + 10**9, fp["mtime_ns"] + 10**9))
    assert file_fingerprint(path)["mtime_ns"] != fp["mtime_ns"]
    with pytest.raises(FileNotFoundError):
        file_fingerprint(tmp_path / "gone.csv")


def test_expand_globs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    a = _write(tmp_path, "x", "a.csv")
    b = _write(tmp_path, "x", "b.csv")
    c = _write(tmp_path / "sub", "x", "c.csv")
    (tmp_path / "dir.csv").mkdir()  # a directory matching the glob is not a file
    monkeypatch.setenv("HOME", str(tmp_path))
    files, unmatched = expand_globs(
        [
            str(tmp_path / "*.csv"),
            str(b),  # duplicate of a glob hit
            "~/sub/*.csv",
            str(tmp_path / "**" / "c.csv"),
            str(tmp_path / "*.parquet"),
            str(tmp_path / "nothing.csv"),
        ]
    )
    assert files == sorted({a.resolve(), b.resolve(), c.resolve()})
    assert unmatched == [str(tmp_path / "*.parquet"), str(tmp_path / "nothing.csv")]
