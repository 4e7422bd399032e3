"""Tests for :mod:`sources.feeds`: fetching over HTTP and parsing RSS/Atom safely.

Feeds are served from a local ``ThreadingHTTPServer`` on 127.0.0.1 (no external network); all
feed texts are made up here.
"""

from __future__ import annotations

import gzip
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from sources.feeds import (
    FeedError,
    FeedResponse,
    FeedTooLargeError,
    UnsafeXMLError,
    fetch_feed,
    html_to_text,
    parse_feed,
)
from sources.records import RECORD_COLUMNS

RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel>
  <title>Example Markets Wire</title>
  <link>http://example.test/</link>
  <language>en-us</language>
  <item>
    <title>Acme Corp beats estimates</title>
    <link>http://example.test/news/1</link>
    <guid isPermaLink="false">acme-001</guid>
    <pubDate>Tue, 02 Jan 2024 15:04:05 +0100</pubDate>
    <description>&lt;p&gt;Acme &amp;amp; partners &lt;b&gt;rose&lt;/b&gt; 5%.&lt;/p&gt;
      &lt;script&gt;alert(1)&lt;/script&gt;&lt;p&gt;More   text&amp;nbsp;here.&lt;/p&gt;</description>
    <category>NASDAQ:ACME</category>
    <category>Earnings</category>
  </item>
  <item>
    <title>Widget prices slide</title>
    <link>/news/2</link>
    <pubDate>sometime last week</pubDate>
    <description><![CDATA[<div>Widget <i>prices</i> fell&hellip; <br/>again</div>]]></description>
  </item>
  <item>
    <link>http://example.test/news/3</link>
    <guid>http://example.test/news/3</guid>
  </item>
</channel>
</rss>
"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">
  <title>Example Atom Desk</title>
  <id>urn:example:atom-desk</id>
  <updated>2024-03-04T05:06:07Z</updated>
  <entry>
    <title type="html">Gadget &lt;em&gt;maker&lt;/em&gt; raises guidance</title>
    <id>urn:example:entry:1</id>
    <link href="http://example.test/a/1"/>
    <updated>2024-03-04T05:06:07Z</updated>
    <summary>Short summary of the gadget news.</summary>
    <content type="html">&lt;p&gt;Full text: Gadget Co lifted its outlook — café prices too.&lt;/p&gt;</content>
    <category term="$GDGT"/>
  </entry>
  <entry>
    <title>Only a title here</title>
    <id>urn:example:entry:2</id>
    <published>2024-03-03T00:00:00-05:00</published>
  </entry>
</feed>
""".encode()

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<rss version="2.0"><channel><title>x</title><item><title>&lol3;</title></item></channel></rss>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<rss version="2.0"><channel><title>x</title><item><title>&xxe;</title></item></channel></rss>
"""


# --------------------------------------------------------------------------------------------
# local HTTP server


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    trickle_s: float = 0.0  # sleep between bytes


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, Callable[[BaseHTTPRequestHandler], Reply]] = {}

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        route = self.routes.get(self.path.split("?")[0])
        reply = route(self) if route else Reply(404, b"not found")
        try:
            if reply.delay_s:
                time.sleep(reply.delay_s)
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            if "Content-Length" not in reply.headers and not reply.trickle_s:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if reply.trickle_s:
                for i in range(len(reply.body)):
                    self.wfile.write(reply.body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(reply.trickle_s)
            else:
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)


ETAG = '"rss-v1"'
LAST_MODIFIED = "Tue, 02 Jan 2024 15:00:00 GMT"


def _conditional_rss(req: BaseHTTPRequestHandler) -> Reply:
    headers = {"ETag": ETAG, "Last-Modified": LAST_MODIFIED, "Content-Type": "application/rss+xml"}
    if req.headers.get("If-None-Match") == ETAG or req.headers.get("If-Modified-Since") == LAST_MODIFIED:
        return Reply(304, b"", {"ETag": ETAG})
    return Reply(200, RSS, headers)


def _big_no_length(req: BaseHTTPRequestHandler) -> Reply:
    # Close-delimited body without Content-Length: the size cap must hold while reading.
    req.close_connection = True
    return Reply(200, b"<rss>" + b"x" * 200_000 + b"</rss>", {"Content-Length": ""})


ROUTES: dict[str, Callable[[BaseHTTPRequestHandler], Reply]] = {
    "/rss": _conditional_rss,
    "/atom": lambda req: Reply(200, ATOM, {"Content-Type": "application/atom+xml"}),
    "/gzip": lambda req: Reply(200, gzip.compress(RSS), {"Content-Encoding": "gzip"}),
    "/gzip-bomb": lambda req: Reply(200, gzip.compress(b" " * 5_000_000), {"Content-Encoding": "gzip"}),
    "/error": lambda req: Reply(500, b"boom"),
    "/missing": lambda req: Reply(404, b"nope"),
    "/slow": lambda req: Reply(200, RSS, delay_s=1.5),
    "/trickle": lambda req: Reply(200, RSS[:200], {"Content-Length": "200"}, trickle_s=0.05),
    "/big": lambda req: Reply(200, b"<rss>" + b"x" * 200_000 + b"</rss>"),
    "/big-no-length": _big_no_length,
    "/laughs": lambda req: Reply(200, BILLION_LAUGHS),
    "/redirect-file": lambda req: Reply(302, b"", {"Location": "file:///etc/passwd"}),
    "/redirect-ok": lambda req: Reply(301, b"", {"Location": "/atom"}),
}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    handler = type("Handler", (_Handler,), {"routes": ROUTES})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment must not intercept requests to the local test server.
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _fetch(url: str, **kw: object) -> FeedResponse:
    args: dict[str, object] = {"timeout_s": 5.0, "max_bytes": 1_000_000, "user_agent": "NewsPulse-test/1"}
    args.update(kw)
    return fetch_feed(url, **args)  # type: ignore[arg-type]


def _meta(value: object) -> dict:
    return json.loads(value) if isinstance(value, str) else {}


# --------------------------------------------------------------------------------------------
# fetching


def test_fetch_then_conditional_get_not_modified(server: str) -> None:
    first = _fetch(f"{server}/rss")
    assert first.status == 200 and not first.not_modified
    assert first.body == RSS
    assert first.etag == ETAG and first.last_modified == LAST_MODIFIED

    again = _fetch(f"{server}/rss", etag=first.etag, last_modified=first.last_modified)
    assert again.not_modified and again.status == 304 and again.body is None
    assert again.etag == ETAG and again.last_modified == LAST_MODIFIED

    by_date = _fetch(f"{server}/rss", last_modified=LAST_MODIFIED)
    assert by_date.not_modified

    changed = _fetch(f"{server}/rss", etag='"other"')
    assert changed.status == 200 and changed.body == RSS


def test_fetch_gzip(server: str) -> None:
    resp = _fetch(f"{server}/gzip")
    assert resp.body == RSS


def test_fetch_gzip_bomb_refused(server: str) -> None:
    with pytest.raises(FeedTooLargeError, match="max_bytes"):
        _fetch(f"{server}/gzip-bomb", max_bytes=100_000)


def test_fetch_http_errors(server: str) -> None:
    with pytest.raises(FeedError, match="HTTP 500"):
        _fetch(f"{server}/error")
    with pytest.raises(FeedError, match="HTTP 404"):
        _fetch(f"{server}/missing")


def test_fetch_timeouts(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(FeedError, match="timed out"):
        _fetch(f"{server}/slow", timeout_s=0.2)
    with pytest.raises(FeedError, match="timed out"):
        _fetch(f"{server}/trickle", timeout_s=0.5, total_timeout_s=0.3)
    assert time.monotonic() - started < 3


def test_fetch_over_max_bytes(server: str) -> None:
    with pytest.raises(FeedTooLargeError, match="max_bytes"):
        _fetch(f"{server}/big", max_bytes=10_000)
    with pytest.raises(FeedTooLargeError, match="max_bytes"):
        _fetch(f"{server}/big-no-length", max_bytes=10_000)
    assert issubclass(FeedTooLargeError, FeedError)


def test_fetch_refuses_non_http_urls(server: str) -> None:
    for url in ("file:///etc/passwd", "FILE:///etc/passwd", "ftp://example.test/x", "data:,hi", "/etc/passwd", ""):
        with pytest.raises(ValueError):
            _fetch(url)
    with pytest.raises(FeedError, match="redirect"):
        _fetch(f"{server}/redirect-file")


def test_fetch_follows_http_redirect(server: str) -> None:
    resp = _fetch(f"{server}/redirect-ok")
    assert resp.body == ATOM and resp.url.endswith("/atom")


def test_fetch_connection_refused() -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FeedError):
        _fetch(f"http://127.0.0.1:{port}/rss", timeout_s=1.0)


def test_unsafe_feeds_refused_end_to_end(server: str) -> None:
    body = _fetch(f"{server}/laughs").body
    assert body is not None
    with pytest.raises(FeedError, match="unsafe XML"):
        parse_feed(body, source="t", feed_url=f"{server}/laughs")


# --------------------------------------------------------------------------------------------
# parsing


def test_parse_rss(server: str) -> None:
    feed_url = f"{server}/rss"
    df = parse_feed(_fetch(feed_url).body or b"", source="wire", feed_url=feed_url)
    assert list(df.columns) == RECORD_COLUMNS
    assert df["record_no"].tolist() == [1, 2, 3]
    assert (df["source"] == "wire").all()

    first = df.iloc[0]
    assert first["source_id"] == "acme-001"
    assert first["title"] == "Acme Corp beats estimates"
    assert first["body"] == "Acme & partners rose 5%. More text here."
    assert "<" not in first["body"] and "alert" not in first["body"]
    assert first["url"] == "http://example.test/news/1"
    assert first["published_at"] == "2024-01-02T14:04:05+00:00"
    assert first["tickers"] == "ACME"
    assert first["lang"] == "en-us"
    meta = _meta(first["meta"])
    assert meta["categories"] == ["NASDAQ:ACME", "Earnings"]
    assert meta["feed_url"] == feed_url and meta["feed_title"] == "Example Markets Wire"
    assert "bozo" not in meta
    raw = json.loads(first["raw"])
    assert raw["id"] == "acme-001" and raw["title"] == "Acme Corp beats estimates"
    assert pd.isna(first["error"])

    second = df.iloc[1]
    assert second["body"] == "Widget prices fell… again"
    assert second["url"] == f"{server}/news/2"  # relative link made absolute against the feed URL
    assert second["source_id"] == second["url"]  # no guid: the link
    assert pd.isna(second["published_at"])
    assert _meta(second["meta"])["raw_published"] == "sometime last week"

    third = df.iloc[2]
    assert third["error"] == "entry has no title or text"
    assert third["source_id"] == "http://example.test/news/3"


def test_parse_atom(server: str) -> None:
    feed_url = f"{server}/atom"
    df = parse_feed(_fetch(feed_url).body or b"", source="desk", feed_url=feed_url)
    assert len(df) == 2
    first, second = df.iloc[0], df.iloc[1]
    assert first["source_id"] == "urn:example:entry:1"
    assert first["title"] == "Gadget maker raises guidance"
    assert first["body"] == "Full text: Gadget Co lifted its outlook — café prices too."
    assert first["url"] == "http://example.test/a/1"
    assert first["published_at"] == "2024-03-04T05:06:07+00:00"
    assert first["tickers"] == "GDGT"
    assert first["lang"] == "en"
    assert second["title"] == "Only a title here" and pd.isna(second["body"])
    assert pd.isna(second["error"])  # a title alone is enough
    assert second["published_at"] == "2024-03-03T05:00:00+00:00"


def test_parse_rss091_with_netscape_doctype_is_fine() -> None:
    body = b"""<?xml version="1.0"?>
<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"
 "http://my.netscape.com/publish/formats/rss-0.91.dtd">
<rss version="0.91"><channel><title>Old</title><link>http://example.test/</link>
<item><title>Vintage item</title><link>http://example.test/v</link><description>Old text</description></item>
</channel></rss>"""
    df = parse_feed(body, source="old", feed_url="http://example.test/rss091")
    assert df["title"].tolist() == ["Vintage item"]
    assert df["body"].tolist() == ["Old text"]


def test_parse_rss10_rdf() -> None:
    body = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
         xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel rdf:about="http://example.test/"><title>RDF desk</title><link>http://example.test/</link>
    <description>d</description></channel>
  <item rdf:about="http://example.test/r/1"><title>RDF item</title><link>http://example.test/r/1</link>
    <description>RDF text</description><dc:date>2024-05-06T07:08:09Z</dc:date></item>
</rdf:RDF>"""
    df = parse_feed(body, source="rdf", feed_url="http://example.test/rdf")
    assert df["title"].tolist() == ["RDF item"]
    assert df["published_at"].tolist() == ["2024-05-06T07:08:09+00:00"]


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        EXTERNAL_ENTITY,
        BILLION_LAUGHS.decode().replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="utf-16"?>').encode("utf-16"),
        # Not well-formed *and* declaring entities: caught by the fallback scan.
        BILLION_LAUGHS.replace(b"</channel></rss>", b"</rss>"),
        b'<?xml version="1.0" encoding="shift_jis"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><rss>&x;</rss>',
        b'<!DOCTYPE r [<!ENTITY % p SYSTEM "http://evil.test/x.dtd"> %p;]><rss version="2.0"/>',
    ],
    ids=["billion-laughs", "external-entity", "utf16-laughs", "malformed-laughs", "sjis-xxe", "param-entity"],
)
def test_unsafe_xml_refused(body: bytes) -> None:
    with pytest.raises(UnsafeXMLError, match="^unsafe XML"):
        parse_feed(body, source="t", feed_url="http://example.test/evil")


def test_malformed_but_harmless_feed_is_read_with_bozo_note() -> None:
    body = b"""<rss version="2.0"><channel><title>Sloppy & Co</title>
<item><title>Broken & unescaped</title><link>http://example.test/s/1</link>
<description>Text with <b>unclosed bold</description></item>
</channel></rss>"""
    df = parse_feed(body, source="sloppy", feed_url="http://example.test/sloppy")
    assert len(df) == 1
    assert df.loc[0, "title"] == "Broken & unescaped"
    assert "bozo" in _meta(df.loc[0, "meta"])
    assert pd.isna(df.loc[0, "error"])


def test_empty_channel_gives_empty_frame() -> None:
    body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>quiet</title></channel></rss>'
    df = parse_feed(body, source="q", feed_url="http://example.test/q")
    assert len(df) == 0 and list(df.columns) == RECORD_COLUMNS


@pytest.mark.parametrize(
    "body",
    [b"", b"   \n", b"hello world", b"\x00\xff\xfe garbage", b"<html><body><p>Not a feed</p></body></html>", b"{\"json\": 1}"],
)
def test_garbage_raises_feed_error(body: bytes) -> None:
    with pytest.raises(FeedError):
        parse_feed(body, source="g", feed_url="http://example.test/g")


def test_non_bytes_body_is_value_error() -> None:
    with pytest.raises(ValueError):
        parse_feed("<rss/>", source="g", feed_url="http://example.test/g")  # type: ignore[arg-type]


def test_feedparser_never_opens_body_as_a_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # feedparser.parse(bytes) would try the bytes as a filename; we must hand it a stream.
    secret = tmp_path / "secret.xml"
    secret.write_bytes(RSS)
    with pytest.raises(FeedError):
        parse_feed(str(secret).encode(), source="g", feed_url="http://example.test/g")


def test_hostile_inputs_only_raise_feed_or_value_errors() -> None:
    rng = random.Random(1234)
    samples = [RSS, ATOM, BILLION_LAUGHS]
    for i in range(150):
        base = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 20)):
            op = rng.random()
            pos = rng.randrange(len(base))
            if op < 0.4:
                base[pos] = rng.randrange(256)
            elif op < 0.7:
                del base[pos : pos + rng.randint(1, 30)]
            else:
                base[pos:pos] = rng.choice([b"<", b">", b"&", b"]]>", b"<!", b"\x00", b"<item>", b"</channel>"])
        if i % 10 == 0:
            base = bytearray(rng.randbytes(rng.randint(1, 500)))
        try:
            df = parse_feed(bytes(base), source="fuzz", feed_url="http://example.test/fuzz")
        except (FeedError, ValueError):
            continue
        assert list(df.columns) == RECORD_COLUMNS
    deep = b"<rss><channel>" + b"<item><title>x" * 5000 + b"</rss>"
    try:
        parse_feed(deep, source="fuzz", feed_url="http://example.test/deep")
    except (FeedError, ValueError):
        pass


def test_html_to_text() -> None:
    assert html_to_text("<p>A &amp; B</p><p>C&nbsp;&lt;D&gt;</p>") in ("A & B C\xa0<D>", "A & B C <D>")
    assert html_to_text("<style>p{}</style>Keep <script>drop()</script>this") == "Keep this"
    assert html_to_text("  plain\n\ttext  ") == "plain text"
    assert html_to_text("") == ""
