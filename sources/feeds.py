"""RSS/Atom feeds over HTTP -> records frames.

Two steps, kept apart so the flow layer can retry, cache and test them separately:

- :func:`fetch_feed` downloads a feed with ``urllib`` (no extra dependency): conditional GET
  (``ETag``/``Last-Modified`` -> ``304`` -> ``not_modified``), gzip/deflate bodies, a hard cap on
  the body size (compressed and decompressed), http(s) only, redirects only to http(s).
  Network problems and HTTP errors raise :class:`FeedError`.
- :func:`parse_feed` turns the body into one record per entry with ``feedparser`` (RSS 0.9x/1.0/2.0,
  Atom). The bytes are first checked with ``defusedxml``: documents declaring entities (billion
  laughs, external entities) are refused with :class:`UnsafeXMLError`. A malformed but harmless
  feed that feedparser still reads ("bozo" mode) is accepted and the problem is noted in each
  record's ``meta`` (``bozo``).

``meta`` of a feed record may hold: ``feed_url``, ``feed_title``, ``categories`` (entry tags;
they are not tickers), ``authors``, ``raw_published`` (a date string feedparser could not parse),
``link`` (a non-http(s) link, which is then not used as ``url``) and ``bozo``.
``tickers`` is only set from unambiguous category tags: exchange-prefixed (``NASDAQ:AAPL``) or
cashtags (``$AAPL``).
"""

from __future__ import annotations

import calendar
import html
import json
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from html.parser import HTMLParser
from http.client import HTTPException
from io import BytesIO
from typing import Any
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as DefusedET
import feedparser
import pandas as pd
from defusedxml import DefusedXmlException

from sources.records import UnreadableInputError, records_frame, to_meta

__all__ = [
    "FeedError",
    "FeedResponse",
    "FeedTooLargeError",
    "UnsafeXMLError",
    "fetch_feed",
    "html_to_text",
    "parse_feed",
]

_ALLOWED_SCHEMES = ("http", "https")
_CHUNK = 64 * 1024
#: ``raw`` keeps each text value of an entry up to this many characters (the JSON stays valid).
MAX_RAW_VALUE_CHARS = 20_000
_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)


class FeedError(Exception):
    """A feed could not be fetched or parsed (network, HTTP status, size, unsafe or non-feed XML).

    ``retryable`` tells the flow layer whether trying again later can help.
    """

    retryable: bool = True


class FeedTooLargeError(FeedError):
    """The feed body is larger than the configured ``max_bytes``."""

    retryable = False


class UnreadableFeedError(FeedError, UnreadableInputError):
    """The body is not a feed anyone can read (empty, not RSS/Atom, unsafe XML): fetching it again
    will not help, so the ingest task quarantines it as one record (``read_or_quarantine``)."""

    retryable = False


class UnsafeXMLError(UnreadableFeedError):
    """The document declares entities or external references (XML bomb / XXE); refused."""

    retryable = False


@dataclass(frozen=True)
class FeedResponse:
    """Outcome of :func:`fetch_feed`.

    ``url`` is the final URL (after redirects); ``body`` is the decoded (gunzipped) body, None
    when the server answered ``304 Not Modified`` (``not_modified`` is then True and the validators
    passed in are echoed back unless the server sent new ones).
    """

    url: str
    status: int
    body: bytes | None
    etag: str | None
    last_modified: str | None
    not_modified: bool


# --------------------------------------------------------------------------------------------
# fetching


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"feed URL must be a non-empty string, got {url!r}")
    url = url.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in _ALLOWED_SCHEMES:
        raise ValueError(
            f"refusing feed URL {url!r}: only http(s) URLs are allowed, not {parts.scheme or 'no'!s} scheme"
        )
    if not parts.hostname:
        raise ValueError(f"feed URL {url!r} has no host")
    return url


class _SafeRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s) URLs (never ``file:``/``ftp:``/``data:``)."""

    max_redirections = 5

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in _ALLOWED_SCHEMES:
            raise FeedError(f"refusing redirect from {req.full_url} to non-http(s) URL {newurl!r}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    # Built by hand so no file:, ftp: or data: handler exists at all.
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(context=ssl.create_default_context()),
        urllib.request.HTTPDefaultErrorHandler(),
        _SafeRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _decompress(data: bytes, encoding: str, max_bytes: int, url: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding in ("gzip", "x-gzip"):
        decoders = [zlib.MAX_WBITS | 16]
    elif encoding == "deflate":
        decoders = [zlib.MAX_WBITS, -zlib.MAX_WBITS]  # zlib-wrapped, or raw deflate
    else:
        raise FeedError(f"unsupported Content-Encoding {encoding!r} from {url}")
    last: Exception | None = None
    for wbits in decoders:
        try:
            d = zlib.decompressobj(wbits)
            out = d.decompress(data, max_bytes + 1)
            if len(out) > max_bytes or d.unconsumed_tail:
                raise FeedTooLargeError(
                    f"feed {url} decompresses to more than max_bytes={max_bytes} bytes"
                )
            return out + d.flush()
        except zlib.error as exc:
            last = exc
    raise FeedError(f"cannot decode {encoding} body from {url}: {last}")


def _header(headers: Message | None, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    return str(value).strip() if value else None


def fetch_feed(
    url: str,
    *,
    timeout_s: float,
    max_bytes: int,
    user_agent: str,
    etag: str | None = None,
    last_modified: str | None = None,
    total_timeout_s: float | None = None,
) -> FeedResponse:
    """Download a feed with a conditional GET.

    ``timeout_s`` bounds the connection and every socket read; the whole download must also end
    within ``total_timeout_s`` (default ``5 * timeout_s``) so a server trickling bytes cannot hold
    the worker. ``etag``/``last_modified`` from the previous fetch become ``If-None-Match`` /
    ``If-Modified-Since``; a ``304`` answer gives ``not_modified=True`` and ``body=None``.

    Raises ``ValueError`` for a non-http(s) URL (``file:`` and friends are never read),
    :class:`FeedTooLargeError` when the body (raw or decompressed) exceeds ``max_bytes``, and
    :class:`FeedError` for timeouts, connection problems, HTTP error statuses and bad encodings.
    """
    url = _check_url(url)
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    deadline = time.monotonic() + (total_timeout_s if total_timeout_s is not None else 5 * timeout_s)
    headers = {
        "User-Agent": user_agent,
        "Accept": _ACCEPT,
        "Accept-Encoding": "gzip, deflate",
    }
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    request = urllib.request.Request(url, headers=headers, method="GET")

    try:
        response = _opener().open(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        try:
            if exc.code == 304:
                return FeedResponse(
                    url=exc.geturl() or url,
                    status=304,
                    body=None,
                    etag=_header(exc.headers, "ETag") or etag,
                    last_modified=_header(exc.headers, "Last-Modified") or last_modified,
                    not_modified=True,
                )
            raise FeedError(f"HTTP {exc.code} {exc.reason} from {url}") from exc
        finally:
            exc.close()
    except FeedError:
        raise
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise FeedError(f"timed out after {timeout_s}s connecting to {url}") from exc
        raise FeedError(f"cannot fetch {url}: {reason}") from exc
    except (TimeoutError, socket.timeout) as exc:
        raise FeedError(f"timed out after {timeout_s}s waiting for {url}") from exc
    except (OSError, HTTPException, ValueError) as exc:
        raise FeedError(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from exc

    with response:
        status = int(getattr(response, "status", 200) or 200)
        resp_headers = response.headers
        final_url = response.geturl() or url
        length = _header(resp_headers, "Content-Length")
        if length and length.isdigit() and int(length) > max_bytes:
            raise FeedTooLargeError(
                f"feed {url} is {int(length)} bytes (Content-Length), over max_bytes={max_bytes}"
            )
        chunks: list[bytes] = []
        size = 0
        read = getattr(response, "read1", None) or response.read
        try:
            while True:
                if time.monotonic() > deadline:
                    raise FeedError(f"timed out downloading {url} (total time limit exceeded)")
                # read1: whatever has arrived (not a full buffer), so the deadline is checked often.
                chunk = read(min(_CHUNK, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise FeedTooLargeError(f"feed {url} is larger than max_bytes={max_bytes} bytes")
        except FeedError:
            raise
        except (TimeoutError, socket.timeout) as exc:
            raise FeedError(f"timed out after {timeout_s}s reading {url}") from exc
        except (OSError, HTTPException, ValueError) as exc:
            raise FeedError(f"error reading {url}: {type(exc).__name__}: {exc}") from exc

    body = _decompress(b"".join(chunks), _header(resp_headers, "Content-Encoding") or "", max_bytes, url)
    return FeedResponse(
        url=final_url,
        status=status,
        body=body,
        etag=_header(resp_headers, "ETag"),
        last_modified=_header(resp_headers, "Last-Modified"),
        not_modified=False,
    )


# --------------------------------------------------------------------------------------------
# parsing

_BLOCK_TAGS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table td th tr ul".split()
)
_SKIP_TAGS = frozenset(("script", "style", "noscript", "template", "head", "title", "iframe", "object"))


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def html_to_text(markup: str) -> str:
    """Strip HTML tags (``html.parser``), drop script/style, unescape entities, collapse whitespace."""
    if not markup:
        return ""
    if "<" not in markup and "&" not in markup:
        return _collapse(markup)
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
        text = "".join(parser.parts)
    except Exception:  # html.parser is lenient; this is a last resort for pathological input
        text = html.unescape(re.sub(r"<[^>]*>", " ", markup))
    return _collapse(text)


def _detail_text(value: Any, detail: Any) -> str:
    """Text of a feedparser value; HTML is stripped when its declared type is (x)html."""
    if not isinstance(value, str) or not value:
        return ""
    ctype = str((detail or {}).get("type") or "text/html").lower()
    return html_to_text(value) if "html" in ctype else _collapse(value)


def _is_unsafe_declaration(body: bytes) -> bool:
    # Fallback for documents expat cannot parse: any entity declaration is refused.
    return re.search(rb"<!\s*ENTITY", body.replace(b"\x00", b""), re.IGNORECASE) is not None


def _check_xml_safety(body: bytes) -> str | None:
    """Refuse entity declarations / external references; returns a parse problem or None."""
    try:
        DefusedET.fromstring(body, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise UnsafeXMLError(f"unsafe XML: {exc}") from exc
    except (ParseError, ValueError, LookupError, UnicodeError, RecursionError, MemoryError) as exc:
        if _is_unsafe_declaration(body):
            raise UnsafeXMLError("unsafe XML: entity declaration in a document that is not well-formed") from exc
        return f"{type(exc).__name__}: {exc}"
    return None


_TICKER_TAG = re.compile(
    r"^(?:(?:NYSE|NASDAQ|AMEX|NYSEARCA|NYSEAMERICAN|LSE|TSX|OTC|BATS|XETRA|EPA|HKEX)\s*:\s*"
    r"(?P<sym>[A-Z][A-Z0-9.\-]{0,9})|\$(?P<cash>[A-Z][A-Z0-9.]{0,9}))$",
    re.IGNORECASE,
)


def _tickers(categories: list[str]) -> str | None:
    found: list[str] = []
    for cat in categories:
        m = _TICKER_TAG.match(cat.strip())
        if m:
            sym = (m.group("sym") or m.group("cash")).upper()
            if sym not in found:
                found.append(sym)
    return ",".join(found) if found else None


def _iso_utc(parsed: Any) -> str | None:
    if not parsed:
        return None
    try:
        ts = calendar.timegm(tuple(parsed)[:6] + (0, 0, 0))
        return datetime.fromtimestamp(ts, tz=UTC).isoformat()
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_RAW_VALUE_CHARS:
        return value[:MAX_RAW_VALUE_CHARS]
    return value


def _raw_entry(entry: Any) -> str:
    raw: dict[str, Any] = {}
    for key in ("id", "title", "link", "published", "updated", "author", "summary"):
        value = entry.get(key)
        if isinstance(value, str) and value:
            raw[key] = _clip(value)
    contents = [c.get("value") for c in entry.get("content") or [] if isinstance(c, dict)]
    contents = [_clip(c) for c in contents if isinstance(c, str) and c]
    if contents:
        raw["content"] = contents
    tags = [t.get("term") for t in entry.get("tags") or [] if isinstance(t, dict)]
    tags = [t for t in tags if isinstance(t, str) and t]
    if tags:
        raw["tags"] = tags
    return json.dumps(raw, ensure_ascii=False, sort_keys=True)


def _entry_record(entry: Any, *, source: str, feed_url: str, feed_info: dict[str, Any]) -> dict[str, Any]:
    notes: dict[str, Any] = dict(feed_info)
    title = _detail_text(entry.get("title"), entry.get("title_detail"))
    body = ""
    for content in entry.get("content") or []:
        if isinstance(content, dict):
            body = _detail_text(content.get("value"), content)
            if body:
                break
    if not body:
        body = _detail_text(entry.get("summary"), entry.get("summary_detail"))

    link = entry.get("link") if isinstance(entry.get("link"), str) else None
    url: str | None = None
    if link:
        link = urllib.parse.urljoin(feed_url, link.strip())
        if urllib.parse.urlsplit(link).scheme.lower() in _ALLOWED_SCHEMES:
            url = link
        else:
            notes["link"] = link
    entry_id = entry.get("id") if isinstance(entry.get("id"), str) else None
    source_id = (entry_id or "").strip() or url or link or None

    published_at = _iso_utc(entry.get("published_parsed")) or _iso_utc(entry.get("updated_parsed"))
    if published_at is None:
        raw_date = entry.get("published") or entry.get("updated")
        if isinstance(raw_date, str) and raw_date.strip():
            notes["raw_published"] = raw_date.strip()

    categories = [t.get("term") for t in entry.get("tags") or [] if isinstance(t, dict)]
    categories = [c.strip() for c in categories if isinstance(c, str) and c.strip()]
    notes["categories"] = categories
    authors = [a.get("name") for a in entry.get("authors") or [] if isinstance(a, dict)]
    notes["authors"] = [a for a in authors if isinstance(a, str) and a]

    lang = (entry.get("title_detail") or {}).get("language") or feed_info.get("_lang")
    notes.pop("_lang", None)
    return {
        "raw": _raw_entry(entry),
        "source": source,
        "source_id": source_id,
        "title": title or None,
        "body": body or None,
        "url": url,
        "published_at": published_at,
        "lang": lang or None,
        "tickers": _tickers(categories),
        "meta": to_meta(notes),
        "error": None if (title or body) else "entry has no title or text",
    }


def parse_feed(body: bytes, *, source: str, feed_url: str) -> pd.DataFrame:
    """Parse an RSS/Atom document into a records frame, one row per entry (in feed order).

    Fields: ``source_id`` = entry id/guid, else its link; ``title``; ``body`` = content or summary
    as plain text (HTML stripped, entities unescaped, whitespace collapsed); ``url`` = the entry
    link (made absolute against ``feed_url``; non-http(s) links go to ``meta``); ``published_at``
    = ISO 8601 UTC from the published/updated date (None if absent or unparseable, the raw string
    then kept in ``meta``); ``raw`` = JSON of the entry's main fields. Entries without title and
    text get the error ``"entry has no title or text"``. A feed with no entries gives an empty frame.

    Raises :class:`UnsafeXMLError` (message ``"unsafe XML: ..."``) for documents declaring entities
    or external references, :class:`UnreadableFeedError` (its parent) for input that is empty or
    not an RSS/Atom feed at all, ``ValueError`` for a body that is not bytes. Nothing else escapes.
    """
    if isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    if not isinstance(body, bytes):
        raise ValueError(f"feed body must be bytes, got {type(body).__name__}")
    if not body.strip():
        raise UnreadableFeedError(f"empty feed body from {feed_url}")

    problem = _check_xml_safety(body)
    try:
        # A stream, never raw bytes/str: feedparser would treat those as a path or URL to open.
        parsed = feedparser.parse(
            BytesIO(body),
            # application/xml without charset: the document's own declaration/BOM decides.
            response_headers={"content-location": feed_url, "content-type": "application/xml"},
            sanitize_html=True,
            resolve_relative_uris=True,
        )
    except Exception as exc:  # feedparser on hostile input: recursion, codec errors, ...
        raise UnreadableFeedError(f"cannot parse feed from {feed_url}: {type(exc).__name__}: {exc}") from exc

    try:
        entries = list(parsed.get("entries") or [])
        version = parsed.get("version") or ""
        bozo = None
        if parsed.get("bozo"):
            exc = parsed.get("bozo_exception")
            bozo = f"{type(exc).__name__}: {exc}" if exc is not None else "malformed feed"
        elif problem:
            bozo = problem
        if not entries and not version:
            raise UnreadableFeedError(f"not an RSS/Atom feed ({feed_url}): {bozo or 'no feed elements found'}")

        feed = parsed.get("feed") or {}
        feed_title = feed.get("title") if isinstance(feed.get("title"), str) else None
        feed_info: dict[str, Any] = {
            "feed_url": feed_url,
            "feed_title": _collapse(html_to_text(feed_title)) if feed_title else None,
            "bozo": bozo,
            "_lang": feed.get("language") if isinstance(feed.get("language"), str) else None,
        }
        rows = [
            _entry_record(entry, source=source, feed_url=feed_url, feed_info=feed_info)
            for entry in entries
        ]
    except FeedError:
        raise
    except Exception as exc:
        raise UnreadableFeedError(f"cannot read entries of feed {feed_url}: {type(exc).__name__}: {exc}") from exc
    for n, row in enumerate(rows, start=1):
        row["record_no"] = n
    return records_frame(rows)
