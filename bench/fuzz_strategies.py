"""Hypothesis strategies for hostile ingest input: one example is one input file (one batch).

Used by ``bench/reliability_fuzz.py`` (10k+ records per run, driven by :func:`drive`) and by the
seeded smoke test. Every ingest path has a strategy:

- :func:`jsonl_files`: JSON Lines with truncated lines, invalid UTF-8, raw control characters,
  non-object lines, enormous fields, duplicate and odd ids, odd keys, far past/future timestamps;
- :func:`csv_files`: CSV with broken quoting, latin-1 lines in UTF-8 files (and latin-1 files),
  NUL bytes, wrong column counts, several delimiters, BOMs, renamed headers;
- :func:`feed_docs`: RSS 2.0 / Atom with HTML in text, CDATA, duplicate guids, odd dates, odd
  links, control characters, truncated documents; :func:`hostile_xml_docs`: entity expansion,
  XXE (``/etc/passwd`` and a planted marker), parameter entities, external DTDs, UTF-16;
- :func:`parquet_files`: Parquet with every column type in every place (binary titles, list and
  struct fields, far past/future timestamps, all-null columns, duplicate column names), and
  truncated or not-Parquet bytes;
- :func:`dataset_inputs`: the public-dataset formats (PhraseBank, AG News, BBC, Reuters SGML,
  CNBC, Guardian, gold news, MIND news / titles / behaviors) with the same damage, written as
  the files their readers expect.

Probabilities matter (an enormous field in one record in a hundred, not in one in six), so rare
cases are drawn with :func:`rarely`. Hypothesis is driven in generate-only mode with a seed, so a
run is reproducible; a crash is recorded with its input by the caller rather than shrunk.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning

WORDS = ("market stocks fell rose profit loss bank oil gold shares investors earnings quarter growth "
         "rate inflation outlook guidance merger deal probe layoffs record demand supply").split()
HTML_BITS = ["<script>alert('x')</script>", "<b>bold</b>", "<p>para</p>", "&amp;", "&lt;tag&gt;",
             "<img src=x onerror=y>", "<a href='javascript:1'>link</a>", "&#39;", "<style>p{}</style>",
             "<!-- comment -->", "&nbsp;", "<br/>", " #39;", "quot;", "&#3;", "\\"]
CONTROLS = [chr(c) for c in (0, 1, 7, 8, 11, 12, 27, 31, 127, 0x85, 0x2028, 0xFEFF, 0x200B)]
ODD_KEYS = ["w\u00e9ird k\u00e9y", "it's", "a.b", 'q"k', "$", "\u65e5\u672c", "x\\y", "", "Title", "ID", "BODY",
            " title", "title ", "__proto__", "null", "1", "a;b", "a,b", "text", "headline", "date"]
TIMESTAMPS = ["2999-01-01T00:00:00Z", "9999-12-31", "1066-10-14", "0001-01-01", "1899-12-31T23:59:59Z",
              "-001-01-01", "2020-01-01T00:00:00Z", "2021-06-30 12:00:00", "17-Jul-20", "32/13/2020 25:61", "",
              "now", "NaN", "2020-02-30", "1594980000", "1594980000000", "99999999999999999999",
              "2020-01-01T00:00:00+14:00", "Tue, 10 Jun 2003 04:00:00 GMT", "2020-01-01T00:00:00.123456789Z"]
INVALID_UTF8 = [b"\xff\xfe", b"\xe9", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\xf4\x90\x80\x80"]
HUGE_SIZES = [2_100, 50_000, 210_000, 1_000_000]


_M64 = 2**64 - 1


def _mix64(z: int) -> int:
    """splitmix64's finaliser: spreads Hypothesis's favourite integers (0, 1, 2**k, the bounds)
    over the whole range, so that a residue of the result is close to uniform."""
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def rarely(percent: float, strategy: st.SearchStrategy, otherwise: st.SearchStrategy) -> st.SearchStrategy:
    """``strategy`` in about ``percent`` % of draws, else ``otherwise``.

    Hypothesis has no weights, and it draws small integers and range ends far more often than
    others (``integers(0, 9999) < 500`` holds in a sixth of draws, not a twentieth), so the
    draw is a 64-bit integer passed through :func:`_mix64`: measured over 5,000 draws, 1/5/20/
    50/85 % came out as 1.1/3.8/19.1/50.6/87.7 %.
    """
    cut = int(percent * 100)
    return st.integers(0, _M64).flatmap(lambda k: strategy if _mix64(k) % 10_000 < cut else otherwise)


def chance(percent: float) -> st.SearchStrategy[bool]:
    """True in about ``percent`` % of draws (see :func:`rarely`)."""
    return rarely(percent, st.just(True), st.just(False))


words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
# Lone surrogates are not Unicode text, but JSON escapes ("\\ud83d") and surrogatepass bytes
# carry them into inputs; each path must quarantine, not crash.
LONE_SURROGATES = ["\ud83d", "\udc00", "\udcff", "\udfff"]
_token = st.one_of(st.sampled_from(WORDS), st.sampled_from(WORDS), st.sampled_from(WORDS), st.sampled_from(WORDS),
                   st.sampled_from(HTML_BITS), st.sampled_from(CONTROLS),
                   st.characters(min_codepoint=0x80, max_codepoint=0x10FFFF, exclude_categories=["Cs"]),
                   st.just("\U0001F4C8"), rarely(10, st.sampled_from(LONE_SURROGATES), st.sampled_from(WORDS)))


def hostile_text(lo: int = 2, hi: int = 10) -> st.SearchStrategy[str]:
    """Words with HTML, entities, control characters and odd Unicode mixed in."""
    return st.lists(_token, min_size=lo, max_size=hi).map(" ".join)


huge = st.tuples(st.sampled_from("xyz\u00e9"), st.sampled_from(HUGE_SIZES)).map(lambda t: t[0] * t[1])


def text_field(lo: int = 2, hi: int = 10) -> st.SearchStrategy[str]:
    """A text field: hostile text, plain words, empty, or (1 in 100) an enormous field."""
    return rarely(1, huge, st.one_of(hostile_text(lo, hi), words, st.sampled_from(["", "  ", "\t"])))


def ids(dup_ids: list[str], prefix: str) -> st.SearchStrategy[Any]:
    """A record id: fresh, repeated from ``dup_ids`` (duplicates within and across batches), odd."""
    fresh = st.integers(0, 10**9).map(lambda i: f"{prefix}{i}")
    odd = st.one_of(st.integers(-5, 10**15), st.text(max_size=8), fresh.map(lambda s: f" {s} "),
                    fresh.map(lambda s: s + "\u0000"))
    return rarely(15, st.sampled_from(dup_ids), rarely(10, odd, fresh))


def _no_surrogates(value: str | None) -> str | None:
    return value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value


def _insert(data: bytes, at: int, piece: bytes) -> bytes:
    at = min(max(at, 0), len(data))
    return data[:at] + piece + data[at:]


# --------------------------------------------------------------------------------------------
# JSONL


@st.composite
def json_records(draw: st.DrawFn, dup_ids: list[str]) -> dict[str, Any]:
    """One JSON object as a user might send it, with hostile values and keys."""
    rec: dict[str, Any] = {}
    if draw(chance(85)):
        rec["id"] = draw(ids(dup_ids, "j"))
    rec["title"] = draw(st.one_of(text_field(), words, st.none(), st.just(""), st.integers(),
                                  st.just({"nested": [1, 2]}), st.lists(st.sampled_from(WORDS), max_size=3)))
    if draw(chance(80)):
        rec["body"] = draw(text_field(5, 40))
    if draw(chance(60)):
        rec["published_at"] = draw(st.one_of(st.sampled_from(TIMESTAMPS), st.integers(-10**12, 10**14),
                                             st.just(1.5e9), st.booleans()))
    if draw(chance(20)):
        rec[draw(st.sampled_from(ODD_KEYS))] = draw(st.one_of(st.integers(), st.text(max_size=5), st.none(),
                                                              st.just([1]), st.just({"k": "v"})))
    if draw(chance(10)):
        rec["label"], rec["task"] = draw(st.sampled_from([("positive", "sentiment"), ("bullish", "sentiment"),
                                                          ("earn|acq", "topic"), ("positive", None), ("joy", "emotion")]))
    if draw(chance(10)):
        rec["tickers"] = draw(st.sampled_from([["ACME"], "ACME,GLBX", [1, None], "$$$", []]))
    return rec


@st.composite
def jsonl_lines(draw: st.DrawFn, dup_ids: list[str]) -> bytes:
    """One JSON Lines line (no newline): an object, or a damaged one, or not an object at all."""
    line = json.dumps(draw(json_records(dup_ids)), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    damage = draw(rarely(21, st.sampled_from(["truncate", "utf8", "control", "junk", "empty"]), st.just(None)))
    if damage == "truncate":
        return line[: draw(st.integers(1, max(1, len(line) - 1)))]
    if damage == "utf8":
        return _insert(line, draw(st.integers(0, len(line))), draw(st.sampled_from(INVALID_UTF8)))
    if damage == "control":
        return _insert(line, draw(st.integers(1, max(1, len(line) - 1))), bytes([draw(st.sampled_from([0, 1, 8, 27, 31]))]))
    if damage == "junk":
        return draw(st.sampled_from([b"[1, 2, 3]", b"42", b'"string"', b"null", b"true", b"{}", b"{", b"}", b"\x00",
                                     b"\xef\xbb\xbf{}", b'{"id": "a"}{"id": "b"}', b'{"id": "t"} junk',
                                     b'{"title": "\\ud800 lone"}', b"   "]))
    return b"" if damage == "empty" else line


@st.composite
def jsonl_files(draw: st.DrawFn, dup_ids: list[str], max_records: int = 60) -> tuple[bytes, int]:
    """A JSON Lines file and the number of lines generated."""
    n = draw(st.integers(1, max_records))  # hypothesis keeps plain lists short; draw the length
    lines = draw(st.lists(jsonl_lines(dup_ids), min_size=n, max_size=n))
    return b"\n".join(lines) + draw(st.sampled_from([b"\n", b"", b"\r\n"])), len(lines)


# --------------------------------------------------------------------------------------------
# CSV


def _csv_field(value: str, delim: str, broken: str | None) -> str:
    if broken:
        return {"open": '"' + value, "close": value + '"', "after": '"' + value + '"x', "inside": 'a"b' + value}[broken]
    if delim in value or '"' in value or "\n" in value or "\r" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def csv_files(draw: st.DrawFn, dup_ids: list[str], max_records: int = 60) -> tuple[bytes, str, int]:
    """A CSV file, the encoding to read it with, and the number of data lines generated."""
    delim = draw(st.sampled_from([",", ",", ";", "\t", "|"]))
    header = ["id", "title", "body", "published_at", "label", "task"]
    if draw(chance(30)):
        header = [draw(st.sampled_from(["headline", "Title", "text", "date", "ticker", "w\u00e9ird", h])) for h in header]
    n = draw(st.integers(1, max_records))
    lines = [delim.join(header)]
    for _ in range(n):
        fields = [draw(ids(dup_ids, "c")), draw(text_field()),
                  draw(st.one_of(text_field(3, 20), st.just("embedded\nnewline body"), st.just(""))),
                  draw(st.sampled_from(TIMESTAMPS)),
                  *draw(st.sampled_from([("", ""), ("positive", "sentiment"), ("bullish", "sentiment"),
                                         ("Negative", "Sentiment"), ("earn|acq", "topic"), ("positive", "")]))]
        fields = [str(f) for f in fields]
        if draw(chance(7)):  # wrong column count
            fields = fields[: draw(st.integers(1, 5))] if draw(st.booleans()) else fields + ["extra"] * draw(st.integers(1, 3))
        broken = [draw(rarely(6, st.sampled_from(["open", "close", "after", "inside"]), st.none())) for _ in fields]
        line = delim.join(_csv_field(f, delim, b) for f, b in zip(fields, broken, strict=True))
        if draw(chance(2)):
            line = draw(st.sampled_from(["", "   ", delim * 5, '"', '""']))
        lines.append(line)
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join(lines) + eol
    if draw(chance(15)):  # the whole file in latin-1, read as latin-1
        return text.encode("latin-1", "replace"), "latin-1", n
    chunks = []
    for line in text.split(eol):
        b = line.encode("utf-8", "surrogatepass")
        if draw(chance(5)):  # a latin-1 line in a UTF-8 file
            b = line.encode("latin-1", "replace")
        if draw(chance(1)):
            b = b.replace(b"e", b"\x00", 1)
        chunks.append(b)
    data = eol.encode().join(chunks)
    if draw(chance(30)):
        data = b"\xef\xbb\xbf" + data
    return data, "utf-8", n


# --------------------------------------------------------------------------------------------
# RSS / Atom


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&apos;")


def _xml_chars(text: str) -> str:
    """Drop the characters XML 1.0 cannot hold (most control characters, surrogates, U+FFFE/F)."""
    return "".join(ch for ch in text if ch in "\t\n" or (ord(ch) >= 32 and ord(ch) not in (0xFFFE, 0xFFFF, 127)
                                                         and not 0xD800 <= ord(ch) <= 0xDFFF))


@st.composite
def feed_docs(draw: st.DrawFn, dup_ids: list[str], max_records: int = 40) -> tuple[bytes, int]:
    """An RSS 2.0 or Atom document with hostile content (1 in 20 malformed) and its entry count."""
    atom = draw(chance(35))
    n = draw(st.integers(1, max_records))
    items = []
    for _ in range(n):
        guid = draw(rarely(12, st.sampled_from(dup_ids), st.integers(0, 10**9).map(lambda i: f"urn:f:{i}")))
        title = draw(st.one_of(hostile_text(), words, st.just("")))
        desc = draw(rarely(1, huge, st.one_of(hostile_text(5, 30), words.map(lambda w: f"<p>{w}</p>"), st.just(""))))
        date = draw(st.sampled_from(["Tue, 10 Jun 2003 04:00:00 GMT", "Fri, 01 Jan 2999 00:00:00 GMT",
                                     "Mon, 01 Jan 1066 00:00:00 GMT", "2020-01-01T00:00:00Z", "garbage", "",
                                     "2999-12-31T00:00:00Z"]))
        if not draw(chance(3)):  # keep a few control characters: those documents are malformed
            title, desc = _xml_chars(title), _xml_chars(desc)
        body = f"<![CDATA[{desc.replace(']]>', '')}]]>" if draw(chance(40)) else _xml_escape(desc)
        link = _xml_escape(draw(st.sampled_from(["https://example.com/a/1", "/rel/2", "javascript:alert(1)",
                                                 "file:///etc/passwd", ""])))
        if atom:
            items.append(f"<entry><id>{_xml_escape(guid)}</id><title type='html'>{_xml_escape(title)}</title>"
                         f"<link href='{link}'/><updated>{date}</updated>"
                         f"<content type='html'>{body}</content><category term='NYSE:ACME'/></entry>")
        else:
            items.append(f"<item><guid>{_xml_escape(guid)}</guid><title>{_xml_escape(title)}</title>"
                         f"<link>{link}</link><pubDate>{date}</pubDate>"
                         f"<description>{body}</description><category>$GLBX</category></item>")
    if atom:
        doc = ("<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/Atom'>"
               "<title>Fuzz &amp; feed</title>" + "".join(items) + "</feed>")
    else:
        doc = ("<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>Fuzz</title>"
               "<link>https://example.com/</link>" + "".join(items) + "</channel></rss>")
    data = doc.encode("utf-8", "surrogatepass")
    damage = draw(rarely(5, st.sampled_from(["truncate", "stray"]), st.none()))
    if damage == "truncate":
        data = data[: draw(st.integers(len(data) // 2, len(data)))]
    elif damage == "stray":
        data = data.replace(b"<item>", b"<item><<", 1).replace(b"<entry>", b"<entry><<", 1)
    return data, n


HOSTILE_KINDS = ["billion_laughs", "xxe_passwd", "xxe_marker", "xxe_parameter", "external_dtd", "quadratic_blowup",
                 "malformed_entity_decl", "utf16_xxe", "not_xml"]
MUST_BE_UNSAFE = {"billion_laughs", "xxe_passwd", "xxe_marker", "xxe_parameter", "quadratic_blowup",
                  "malformed_entity_decl", "utf16_xxe"}


def hostile_xml(kind: str, marker_file: str, variant: int = 0) -> bytes:
    """A document that must be refused (entity expansion, external entities) or is not XML."""
    item = "<item><title>&{e};</title><description>&{e};</description></item>"
    rss = "<rss version='2.0'><channel><title>t</title>{items}</channel></rss>"
    if kind == "billion_laughs":
        depth = 6 + variant % 4
        ents = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{k} "{("&lol" + str(k - 1) + ";") * 10}">'
                                          for k in range(1, depth + 1)]
        return (f"<?xml version='1.0'?><!DOCTYPE rss [{''.join(ents)}]>"
                + rss.format(items=item.format(e=f"lol{depth}"))).encode()
    if kind == "xxe_passwd":
        return ("<?xml version='1.0'?><!DOCTYPE rss [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
                + rss.format(items=item.format(e="x"))).encode()
    if kind == "xxe_marker":
        return (f"<?xml version='1.0'?><!DOCTYPE rss [<!ENTITY x SYSTEM 'file://{marker_file}'>]>"
                + rss.format(items=item.format(e="x"))).encode()
    if kind == "xxe_parameter":
        return ("<?xml version='1.0'?><!DOCTYPE rss [<!ENTITY % p SYSTEM 'file:///etc/passwd'> %p;]>"
                + rss.format(items="<item><title>t</title></item>")).encode()
    if kind == "external_dtd":
        return ("<?xml version='1.0'?><!DOCTYPE rss SYSTEM 'http://127.0.0.1:9/evil.dtd'>"
                + rss.format(items="<item><title>External DTD title</title></item>")).encode()
    if kind == "quadratic_blowup":
        return (f"<?xml version='1.0'?><!DOCTYPE rss [<!ENTITY a '{'x' * (20_000 + 10_000 * (variant % 4))}'>]>"
                + rss.format(items=item.format(e="a") * 50)).encode()
    if kind == "malformed_entity_decl":  # not well-formed and declares an entity
        return (b"<?xml version='1.0'?><!DOCTYPE rss [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><rss><channel><item>"
                b"<title>&x;</title></channel>")
    if kind == "utf16_xxe":
        return ("<?xml version='1.0' encoding='utf-16'?><!DOCTYPE rss [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
                + rss.format(items=item.format(e="x"))).encode("utf-16")
    if kind == "not_xml":
        return [b"<html><body>not a feed</body></html>", b"\x00\x01\x02", b"{\"json\": true}", b"plain text"][variant % 4]
    raise ValueError(kind)


def hostile_xml_docs(marker_file: str) -> st.SearchStrategy[tuple[str, bytes]]:
    """``(kind, document)`` for every kind of :data:`HOSTILE_KINDS`."""
    return st.tuples(st.sampled_from(HOSTILE_KINDS), st.integers(0, 7)).map(
        lambda t: (t[0], hostile_xml(t[0], marker_file, t[1])))


# --------------------------------------------------------------------------------------------
# Parquet


def _column(draw: st.DrawFn, kind: str, n: int, dup_ids: list[str]) -> pa.Array:
    """``n`` values of one column, in one of the types a user's Parquet file might carry."""
    if kind == "string":
        # Arrow strings are UTF-8: a surrogate cannot even be written (a reader never meets one).
        values = [draw(st.one_of(text_field(), st.none(), ids(dup_ids, "p").map(str))) for _ in range(n)]
        return pa.array([_no_surrogates(v) for v in values], pa.string())
    if kind == "large_string":
        return pa.array([draw(st.one_of(words, st.none())) for _ in range(n)], pa.large_string())
    if kind == "binary":
        return pa.array([draw(st.one_of(st.binary(max_size=30), st.sampled_from(INVALID_UTF8), st.none()))
                         for _ in range(n)], pa.binary())
    if kind == "int":
        return pa.array([draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.none())) for _ in range(n)], pa.int64())
    if kind == "float":
        return pa.array([draw(st.floats(allow_nan=True, allow_infinity=True)) for _ in range(n)], pa.float64())
    if kind == "bool":
        return pa.array([draw(st.booleans()) for _ in range(n)], pa.bool_())
    if kind == "timestamp":  # microseconds reach year 1 .. 9999
        return pa.array([draw(st.one_of(st.integers(-62_135_596_800_000_000, 253_402_300_799_000_000), st.none()))
                         for _ in range(n)], pa.timestamp("us", tz="UTC"))
    if kind == "date":
        return pa.array([draw(st.integers(-719_162, 2_932_896)) for _ in range(n)], pa.date32())
    if kind == "list":
        return pa.array([draw(st.lists(st.sampled_from(WORDS), max_size=3)) for _ in range(n)], pa.list_(pa.string()))
    if kind == "struct":
        return pa.array([{"a": draw(st.integers(0, 9)), "b": draw(words)} for _ in range(n)],
                        pa.struct([("a", pa.int64()), ("b", pa.string())]))
    if kind == "null":
        return pa.nulls(n)
    raise ValueError(kind)


COLUMN_KINDS = ["string", "large_string", "binary", "int", "float", "bool", "timestamp", "date", "list", "struct",
                "null"]


@st.composite
def parquet_files(draw: st.DrawFn, dup_ids: list[str], max_records: int = 60) -> tuple[bytes, int]:
    """A Parquet file (or bytes that only claim to be one) and its row count."""
    n = draw(st.integers(0, max_records))
    names = ["id", "title", "body", "published_at", "label", "task"]
    usual = {"id": "string", "title": "string", "body": "string", "published_at": "timestamp",
             "label": "string", "task": "string"}
    fields, arrays = [], []
    for name in names:
        if draw(chance(8)):
            continue  # the column is missing
        kind = draw(rarely(25, st.sampled_from(COLUMN_KINDS), st.just(usual[name])))
        if name in ("label", "task") and kind == "string":
            values = st.sampled_from([("positive", "sentiment"), ("bullish", "sentiment"), ("earn", "topic"),
                                      (None, None), ("positive", None)])
            pairs = [draw(values) for _ in range(n)]
            arr = pa.array([p[0 if name == "label" else 1] for p in pairs], pa.string())
        else:
            arr = _column(draw, kind, n, dup_ids)
        fields.append(draw(st.sampled_from([name, name, name, name.upper(), f" {name}"])))
        arrays.append(arr)
    for _ in range(draw(st.integers(0, 2))):  # extra columns, odd names, maybe a duplicate name
        fields.append(draw(st.sampled_from(ODD_KEYS + ["title", "id"])))
        arrays.append(_column(draw, draw(st.sampled_from(COLUMN_KINDS)), n, dup_ids))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, names=fields) if fields else pa.table({"x": pa.nulls(n)}), buf)
    data = buf.getvalue()
    damage = draw(rarely(6, st.sampled_from(["truncate", "flip", "empty", "csv"]), st.none()))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
    elif damage == "empty":
        data = b""
    elif damage == "csv":
        data = b"id,title\n1,not parquet\n"
    return data, n


# --------------------------------------------------------------------------------------------
# public datasets: the files each reader in sources/datasets.py expects, damaged


def _enc(draw: st.DrawFn, text: str, encoding: str = "utf-8") -> bytes:
    """Encode, with 1 in 20 lines carrying bytes the encoding cannot decode (UTF-8 only)."""
    data = text.encode(encoding, "replace")
    if encoding == "utf-8" and draw(chance(5)):
        data = _insert(data, draw(st.integers(0, len(data))), draw(st.sampled_from(INVALID_UTF8)))
    return data


def _lines(draw: st.DrawFn, make: Callable[[], str], max_records: int, encoding: str = "utf-8",
           eol: bytes = b"\n") -> tuple[bytes, int]:
    n = draw(st.integers(0, max_records))
    out = [_enc(draw, make(), encoding) for _ in range(n)]
    return eol.join(out) + draw(st.sampled_from([eol, b""])), n


def _csv_line(draw: st.DrawFn, fields: list[str], delim: str = ",") -> str:
    broken = [draw(rarely(5, st.sampled_from(["open", "close", "after", "inside"]), st.none())) for _ in fields]
    line = delim.join(_csv_field(f, delim, b) for f, b in zip(fields, broken, strict=True))
    if draw(chance(5)):
        line = draw(st.sampled_from(["", ",,", delim.join(fields[:1]), line + delim + "extra"]))
    return line


def _phrasebank(draw: st.DrawFn, max_records: int) -> tuple[dict[str, bytes], int]:
    def line() -> str:
        label = draw(st.sampled_from(["positive", "negative", "neutral", "", "bullish", "positive@neutral"]))
        sentence = draw(text_field(3, 20))
        return draw(rarely(8, st.sampled_from([sentence, "", "   ", f"{sentence}@"]), st.just(f"{sentence}@{label}")))
    data, n = _lines(draw, line, max_records, "latin-1", draw(st.sampled_from([b"\n", b"\r\n"])))
    return {"financial_phrasebank/Sentences_" + draw(st.sampled_from(["50", "All", "x"])) + "Agree.txt": data}, n


def _ag_news(draw: st.DrawFn, max_records: int) -> tuple[dict[str, bytes], int]:
    def line() -> str:
        return _csv_line(draw, [draw(st.sampled_from(["1", "2", "3", "4", "9", "", "x"])), draw(text_field()),
                                draw(text_field(3, 30)) + draw(st.sampled_from(["", " <TXN.N>", " #39;s", "\\\\"]))])
    data, n = _lines(draw, line, max_records)
    return {"ag_news/test.csv": data}, n


def _bbc(draw: st.DrawFn, max_records: int) -> tuple[dict[str, bytes], int]:
    n = draw(st.integers(1, max(1, max_records // 4)))
    files = {}
    for i in range(n):
        text = draw(text_field()) + "\n\n" + draw(text_field(5, 60))
        data = draw(st.one_of(st.just(text.encode("utf-8", "surrogatepass")), st.just(text.encode("latin-1", "replace")),
                              st.binary(max_size=50), st.just(b""), st.just(b"\xef\xbb\xbf" + text.encode("utf-8", "replace"))))
        files[f"bbc_news/bbc/{draw(st.sampled_from(['business', 'tech', 'w eird']))}/{i:03d}.txt"] = data
    return files, n


def _reuters(draw: st.DrawFn, max_records: int) -> tuple[dict[str, bytes], int]:
    n = draw(st.integers(0, max(1, max_records // 3)))
    blocks = []
    for i in range(n):
        topics = "".join(f"<D>{t}</D>" for t in draw(st.lists(st.sampled_from(["earn", "acq", "earn", "crude", ""]),
                                                                max_size=3)))
        date = draw(st.sampled_from(["26-FEB-1987 15:01:01.79", "31-FEB-1987 25:61:00", "garbage", "",
                                     "1-XYZ-1987 10:00:00", "26-FEB-9999 15:01:01"]))
        block = (f'<REUTERS TOPICS="YES" LEWISSPLIT="{draw(st.sampled_from(["TRAIN", "TEST", "NOT-USED", "?"]))}" '
                 f'CGISPLIT="TRAINING-SET" OLDID="{i}" NEWID="{draw(st.sampled_from([str(i + 1), "", "x"]))}">\n'
                 f"<DATE>{date}</DATE>\n<TOPICS>{topics}</TOPICS>\n<TEXT>&#2;\n<TITLE>{draw(text_field())}</TITLE>\n"
                 f"<BODY>{draw(text_field(5, 60))}\n Reuter\n&#3;</BODY></TEXT>\n</REUTERS>")
        block = draw(rarely(8, st.sampled_from([block[: len(block) // 2], block.replace("</TITLE>", ""),
                                                "<REUTERS>", block.replace("<TEXT>", "<TEXT TYPE=\"BRIEF\">")]),
                            st.just(block)))
        blocks.append(block)
    text = '<!DOCTYPE lewis SYSTEM "lewis.dtd">\n' + "\n".join(blocks) + "\n"
    return {"reuters21578/reut2-000.sgm": text.encode("latin-1", "replace")}, n


def _headed_csv(draw: st.DrawFn, path: str, header: list[str], row: Callable[[], list[str]], max_records: int,
                delim: str = ",") -> tuple[dict[str, bytes], int]:
    if draw(chance(5)):  # a wrong or missing header: the whole file is unreadable
        header = draw(st.sampled_from([[], ["a", "b"], [h.lower() for h in header]]))
    data, n = _lines(draw, lambda: _csv_line(draw, row(), delim), max_records)
    head = delim.join(header).encode() + b"\n" if header else b""
    return {path: head + data}, n


def _cnbc(draw: st.DrawFn, max_records: int) -> tuple[dict[str, bytes], int]:
    return _headed_csv(draw, "financial_news_headlines/cnbc_headlines.csv", ["Headlines", "Time", "Description"],
                       lambda: [draw(text_field()), draw(st.sampled_from([" 7:51  PM ET Fri, 17 July 2020",
                                                                          "10:00 AM ET Thu, 31 Sept 2020", "garbage", ""])),
                                draw(text_field(3, 30))], max_records)


def _guardian(draw: st.DrawFn, max_records: int) -> tuple[dict[str, bytes], int]:
    return _headed_csv(draw, "financial_news_headlines/guardian_headlines.csv", ["Time", "Headlines"],
                       lambda: [draw(st.sampled_from(["18-Jul-20", "Jul-20", "31-Feb-20", "garbage", ""])),
                                draw(text_field())], max_records)


def _gold(draw: st.DrawFn, max_records: int) -> tuple[dict[str, bytes], int]:
    from sources.datasets import GOLD_COLUMNS

    def row() -> list[str]:
        return [draw(st.sampled_from(["28-01-2016", "1/2/2017", "31-02-2016", "x", ""])),
                draw(st.sampled_from(["http://e.com/a", ""])), draw(text_field()),
                *[draw(st.sampled_from(["0", "1", "", "yes"])) for _ in range(6)],
                draw(st.sampled_from(["positive", "negative", "neutral", "none", "", "Bullish"]))]
    return _headed_csv(draw, "gold_commodity_news/gold-dataset-sinha-khandait.csv", GOLD_COLUMNS, row, max_records,
                       delim="\t")


def _tsv(draw: st.DrawFn, fields: list[str]) -> str:
    if draw(chance(6)):
        fields = fields[: draw(st.integers(0, len(fields)))]
    return "\t".join(f.replace("\t", " ").replace("\n", " ") if draw(chance(97)) else f for f in fields)


def _mind_news(draw: st.DrawFn, max_records: int) -> tuple[dict[str, bytes], int]:
    def line() -> str:
        return _tsv(draw, [draw(st.sampled_from(["N1", "N2", "N 3", "", "N\u00e94"])), "finance", "markets",
                           draw(text_field()), draw(text_field(3, 30)), "https://e.com/n",
                           draw(st.sampled_from(["[]", "[{\"Label\": \"X\"}]", "[{", "", "[{\"Label\": \"\\ud83d\"}]"])), "[]"])
    data, n = _lines(draw, line, max_records)
    return {"mind_small_sample/news.tsv": data}, n


def _mind_behaviors(draw: st.DrawFn, max_records: int) -> tuple[dict[str, bytes], int]:
    def line() -> str:
        hist = " ".join(draw(st.lists(st.sampled_from(["N1", "N2", "N3", "N?", ""]), max_size=4)))
        imps = " ".join(draw(st.lists(st.sampled_from(["N1-1", "N2-0", "N3-2", "N4", "-1"]), max_size=4)))
        return _tsv(draw, [draw(st.sampled_from(["1", "2", "x", "", "99999999999999999999"])),
                           draw(st.sampled_from(["U1", "U2", "", "U\u00e9"])),
                           draw(st.sampled_from(["11/15/2019 8:55:22 AM", "13/45/2019 8:55:22 AM", "garbage", ""])),
                           hist, imps])
    data, n = _lines(draw, line, max_records)
    return {"mind_small_sample/behaviors.tsv": data}, n


def _mind_titles(draw: st.DrawFn, max_records: int) -> tuple[dict[str, bytes], int]:
    n = draw(st.integers(0, max_records))
    rows = [_csv_line(draw, [str(draw(st.sampled_from([i, i, i, 999_999]))) if draw(chance(95)) else "x",
                             draw(st.sampled_from(["finance", "sports", ""])), draw(text_field())], "\t")
            for i in range(n)]
    mapping = {f"N{i}": i + 1 for i in range(n) if draw(chance(90))}
    side = draw(rarely(5, st.sampled_from([b"{", b"[]", b"", b"\xff"]), st.just(json.dumps(mapping).encode())))
    return {"mind_small_titles/news_mind.tsv": "\n".join(rows).encode("utf-8", "surrogatepass") + b"\n",
            "mind_small_titles/nid2idx_small_train.json": side}, n


DATASET_MAKERS: dict[str, Callable[[st.DrawFn, int], tuple[dict[str, bytes], int]]] = {
    "financial_phrasebank": _phrasebank, "ag_news": _ag_news, "bbc": _bbc, "reuters": _reuters, "cnbc": _cnbc,
    "guardian": _guardian, "gold_news": _gold, "mind_news": _mind_news, "mind_titles": _mind_titles,
    "mind_behaviors": _mind_behaviors,
}


@st.composite
def dataset_inputs(draw: st.DrawFn, max_records: int = 40,
                   names: list[str] | None = None) -> tuple[str, dict[str, bytes], int]:
    """``(dataset name, {path under the data dir: bytes}, records generated)`` for one dataset input
    of one of ``names`` (default: every dataset with a reader)."""
    name = draw(st.sampled_from(sorted(names or DATASET_MAKERS)))
    files, n = DATASET_MAKERS[name](draw, max_records)
    return name, files, n


# --------------------------------------------------------------------------------------------
# driving hypothesis from a benchmark


class Enough(Exception):
    """Raised by a :func:`drive` body to end the run early (its quota is met)."""


class _Opaque:
    """An example with a short repr: Hypothesis builds the repr of every example it runs, which
    for a file with a 1 MB field costs more than ingesting it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"<{type(self.value).__name__} example>"


def drive(strategy: st.SearchStrategy, examples: int, seed_value: int, body: Callable[[Any], None]) -> None:
    """Call ``body(example)`` for up to ``examples`` examples of ``strategy``, reproducibly from
    ``seed_value``; ``body`` may raise :class:`Enough` to stop.

    Generate phase only, no example database, no deadline: a benchmark, not a test. ``body``
    records failures itself (so one crash does not end the run and every input is counted).
    """
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=False, report_multiple_bugs=False)
    @seed(seed_value)
    @given(strategy.map(_Opaque))
    def run(example: _Opaque) -> None:
        body(example.value)

    with warnings.catch_warnings():
        # Threads of a Prefect test server beside us use the global `random`; Hypothesis takes
        # that for our strategies using it (they do not) and warns.
        warnings.filterwarnings("ignore", message="Do not use the `random` module", category=HypothesisDeprecationWarning)
        try:
            run()
        except Enough:
            pass
