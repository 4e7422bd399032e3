"""Whole inputs no reader can read, and single undecodable bytes, in every dataset reader.

A bad byte costs its record (quarantined as not valid UTF-8), never the file; a file without the
header its reader needs becomes one quarantined record (``read_or_quarantine``), never a crash;
an error in the call itself (``InputConfigError``) is raised.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sources.datasets import (
    read_ag_news,
    read_cnbc,
    read_gold_news,
    read_guardian,
    read_mind_behaviors,
    read_mind_news,
)
from sources.files import read_csv_records
from sources.records import NOT_UTF8, InputConfigError, UnreadableInputError, read_or_quarantine, records_frame

GOLD_HEADER = ("Dates\tURL\tNews\tPrice Direction Up\tPrice Direction Constant\tPrice Direction Down\t"
               "Asset Comparision\tPast Information\tFuture Information\tPrice Sentiment\n")

# reader, file name, good line, the same line with a bad byte, header (or b"")
READERS = [
    (read_ag_news, "test.csv", b'"3","Acme beats","Shares rose"', b'"3","Acme b\xffeats","Shares rose"', b""),
    (read_cnbc, "cnbc_headlines.csv", b'Acme beats," 7:51  PM ET Fri, 17 July 2020",Shares rose',
     b'Acme b\xe9ats," 7:51  PM ET Fri, 17 July 2020",Shares rose', b"Headlines,Time,Description\n"),
    (read_guardian, "guardian_headlines.csv", b"18-Jul-20,Acme beats", b"18-Jul-20,Acme \xc3beats",
     b"Time,Headlines\n"),
    (read_gold_news, "gold.csv", b"28-01-2016\thttp://e/1\tGold up\t1\t0\t0\t0\t1\t0\tpositive",
     b"28-01-2016\thttp://e/2\tGold \xff up\t1\t0\t0\t0\t1\t0\tpositive", GOLD_HEADER.encode()),
    (read_mind_news, "news.tsv", b"N1\tfinance\tmarkets\tAcme beats\tShares rose\thttps://e/n\t[]\t[]",
     b"N2\tfinance\tmarkets\tAcme \xff beats\tShares rose\thttps://e/n\t[]\t[]", b""),
    (read_mind_behaviors, "behaviors.tsv", b"1\tU1\t11/15/2019 8:55:22 AM\tN1\tN2-1 N3-0",
     b"2\tU\xff2\t11/15/2019 8:55:22 AM\tN1\tN2-1 N3-0", b""),
]


@pytest.mark.parametrize("reader, name, good, bad, header", READERS, ids=[r[1] for r in READERS])
def test_a_bad_byte_costs_one_record(tmp_path: Path, reader, name: str, good: bytes, bad: bytes,
                                     header: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(header + good + b"\n" + bad + b"\n" + good.replace(b"1", b"7", 1) + b"\n")
    frame = reader(path)
    assert len(frame) == 3
    errors = frame["error"].tolist()
    assert NOT_UTF8 not in str(errors[0])
    assert NOT_UTF8 in str(errors[1])
    assert "\\x" in frame["raw"].iloc[1]  # the undecodable byte is shown, not lost
    assert NOT_UTF8 not in str(errors[2])


@pytest.mark.parametrize("reader, name, header", [
    (read_cnbc, "cnbc_headlines.csv", b""), (read_guardian, "guardian_headlines.csv", b"Title,When\n"),
    (read_gold_news, "gold.csv", b"Dates\tNews\n"),
])
def test_a_file_without_its_header_is_one_quarantined_record(tmp_path: Path, reader, name: str,
                                                             header: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(header + b"a,b\n")
    frame = read_or_quarantine(lambda: reader(path), str(path))
    assert len(frame) == 1 and frame["raw"].iloc[0] == str(path)
    assert frame["error"].iloc[0].startswith("unreadable input: UnreadableInputError")


def test_behaviors_input_keeps_the_behaviors_shape(tmp_path: Path) -> None:
    def unreadable():
        raise UnreadableInputError("broken")

    frame = read_or_quarantine(unreadable, "x.tsv", behaviors=True)
    assert "impression_id" in frame.columns and frame["error"].iloc[0] == "unreadable input: UnreadableInputError: broken"


def test_call_errors_and_missing_files_are_raised(tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    path.write_text("id,title\n1,Acme\n", encoding="utf-8")
    with pytest.raises(InputConfigError):
        read_or_quarantine(lambda: read_csv_records(path, source="s", encoding="no-such-codec"), str(path))
    with pytest.raises(InputConfigError):
        read_or_quarantine(lambda: read_csv_records(path, source="s", column_map={"body": "Description"}), str(path))
    with pytest.raises(FileNotFoundError):
        read_or_quarantine(lambda: read_csv_records(tmp_path / "gone.csv", source="s"), "gone.csv")
    with pytest.raises(ZeroDivisionError):  # a bug is not an unreadable input
        read_or_quarantine(lambda: 1 / 0, "x")
    with pytest.raises(ValueError):  # nor is any ValueError: only UnreadableInputError and csv.Error
        read_or_quarantine(lambda: int("x"), "x")
    path.chmod(0)
    try:
        if os.geteuid() != 0:  # root reads anything
            with pytest.raises(PermissionError):  # an I/O fault is retried, not quarantined
                read_or_quarantine(lambda: read_csv_records(path, source="s"), str(path))
    finally:
        path.chmod(0o644)


def test_records_frame_repairs_undecodable_text_only_when_needed() -> None:
    clean = records_frame([{"raw": "ok", "title": "Acme"}])
    assert clean["error"].isna().all()
    frame = records_frame([{"raw": "a\udcff b", "title": "x"}, {"raw": "fine", "title": "y"},
                           {"raw": "z", "body": "\udce9", "error": "blank record"}])
    assert frame["raw"].tolist() == ["a\\xff b", "fine", "z"]
    assert frame["error"].iloc[0] == NOT_UTF8 and frame["error"].isna().iloc[1]
    assert frame["error"].iloc[2] == f"blank record; {NOT_UTF8}"


def test_mind_titles_with_a_broken_id_map_is_unreadable(tmp_path: Path) -> None:
    from sources.datasets import read_mind_titles_folder

    (tmp_path / "news_mind.tsv").write_text("0\tfinance\tAcme beats\n", encoding="utf-8")
    for side in (b"{", b"[]", b"\xff", b'{"N1": "x"}'):
        (tmp_path / "nid2idx_small_train.json").write_bytes(side)
        frame = read_or_quarantine(lambda: read_mind_titles_folder(tmp_path), str(tmp_path))
        assert len(frame) == 1 and frame["error"].iloc[0].startswith("unreadable input: UnreadableInputError"), side


def test_a_lone_surrogate_escape_costs_one_record(tmp_path: Path) -> None:
    """MIND entity JSON with "\\ud83d": json.loads gives a lone surrogate; that row is quarantined."""
    path = tmp_path / "news.tsv"
    good = "N1\tfinance\tmarkets\tAcme beats\tShares rose\thttps://e/n\t[]\t[]"
    bad = 'N2\tfinance\tmarkets\tGlobex\tShares fell\thttps://e/n\t[{"Label": "\\ud83d"}]\t[]'
    path.write_text(f"{good}\n{bad}\n", encoding="utf-8")
    frame = read_mind_news(path)
    assert len(frame) == 2 and frame["error"].isna().iloc[0]
    assert NOT_UTF8 in frame["error"].iloc[1] and "\\ud83d" in frame["meta"].iloc[1]


def test_a_column_map_naming_an_unknown_field_is_a_settings_error() -> None:
    from sources.records import map_columns

    with pytest.raises(InputConfigError, match="titel"):
        map_columns(["Headline"], {"titel": "Headline"})
    assert map_columns(["Headline"], {"title": "Headline"}) == {"title": "Headline"}
