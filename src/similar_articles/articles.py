"""Article: one validated, normalised news article, built from a row of any source."""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Iterable, Mapping

from .errors import InvalidArticleError

# The encoder reads only the lead of an article, and boxes show only metadata, so a
# body past this many characters is cut after HTML stripping. A 5 MB body is almost
# always a scraping accident; keeping it whole would cost memory and hashing time.
MAX_BODY_CHARS = 100_000

# Canonical field -> accepted aliases, first match wins.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "article_id", "guid", "slug"),
    "title": ("title", "headline"),
    "body": ("body", "text", "content", "article_text"),
    "published_at": ("published_at", "date", "publish_date", "published", "pub_date"),
    "section": ("section", "category", "topic"),
    "url": ("url", "link"),
    "tags": ("tags", "keywords"),
    "language": ("language", "lang"),
    # Newsroom fields (docs/editors.md): when and whether an article may fill boxes.
    "embargo_until": ("embargo_until", "embargo"),
    "expires_at": ("expires_at", "expires", "expiry"),
    "do_not_recommend": ("do_not_recommend", "no_recommend"),
    "kind": ("kind", "content_type", "article_type"),
}
_TRUE = frozenset({"true", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "no", "n", "0", "off", ""})

_TAG_RE = re.compile(r"<[^>]*>")
_SCRIPT_RE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_BLOCK_TAG_RE = re.compile(r"<\s*(br|/p|/div|/h[1-6]|/li)\b[^>]*>", re.IGNORECASE)
_LOOKS_LIKE_HTML = re.compile(r"<\s*/?\s*[a-zA-Z!][^>]*>")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\ufeff]")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


@dataclass(frozen=True, slots=True)
class Article:
    """A news article. Only ``id`` and some text (title or body) are required.

    Build one from a source row with :meth:`from_row`, which accepts common aliases
    (text, content, date, publish_date, category, ...), strips HTML and parses dates.
    """

    id: str
    title: str = ""
    body: str = ""
    published_at: datetime | None = None
    section: str | None = None
    url: str | None = None
    tags: tuple[str, ...] = field(default=())
    language: str | None = None
    embargo_until: datetime | None = None  # never in a box before this time
    expires_at: datetime | None = None  # never in a box from this time on
    do_not_recommend: bool = False  # never in a box (legal hold, takedown)
    kind: str | None = None  # news, opinion, sponsored, live, video...: policies choose which fill a box

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise InvalidArticleError("an article needs a non-empty id", field="id")
        if not (self.title.strip() or self.body.strip()):
            raise InvalidArticleError(
                "no text: give a title or a body", field="body", article_id=self.id)
        for name in ("published_at", "embargo_until", "expires_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InvalidArticleError(
                    f"{name} must be timezone-aware; use Article.from_row, which reads "
                    "a naive date as UTC", field=name, article_id=self.id)
        if not isinstance(self.do_not_recommend, bool):
            raise InvalidArticleError("do_not_recommend must be True or False", field="do_not_recommend",
                                      article_id=self.id)

    @classmethod
    def from_row(cls, row: Mapping[str, Any] | "Article", *, row_number: int | None = None,
                 source: str | None = None) -> "Article":
        """Validate and normalise a mapping (dict, DataFrame row, SQL row) into an Article.

        Raises InvalidArticleError naming the source, row and field at fault.
        """
        if isinstance(row, Article):
            return row
        if not isinstance(row, Mapping):
            raise InvalidArticleError(
                f"expected a mapping of fields, got {type(row).__name__}",
                row=row_number, source=source)
        where = dict(row=row_number, source=source)
        values = {name: _pick(row, aliases) for name, aliases in FIELD_ALIASES.items()}
        raw_id = values["id"]
        if raw_id is None or (isinstance(raw_id, float) and raw_id != raw_id):
            raise InvalidArticleError("missing id: every row needs an 'id' column", field="id", **where)
        article_id = _text(raw_id, "id", where).strip()
        if not article_id:
            raise InvalidArticleError("empty id: every row needs an 'id' value", field="id", **where)
        where["article_id"] = article_id
        title = normalise_text(_text(values["title"], "title", where), limit=1_000)
        body = normalise_text(_text(values["body"], "body", where), limit=MAX_BODY_CHARS)
        if not (title or body):
            raise InvalidArticleError(
                "no text: the row needs a title or a body (aliases: text, content)",
                field="body", **where)
        section = _text(values["section"], "section", where).strip() or None
        url = _text(values["url"], "url", where).strip() or None
        language = _text(values["language"], "language", where).strip() or None
        kind = _text(values["kind"], "kind", where).strip().lower() or None
        return cls(
            id=article_id, title=title, body=body,
            published_at=parse_datetime(values["published_at"], **where),
            section=section, url=url, tags=_tags(values["tags"], where), language=language,
            embargo_until=parse_datetime(values["embargo_until"], field="embargo_until", **where),
            expires_at=parse_datetime(values["expires_at"], field="expires_at", **where),
            do_not_recommend=_flag(values["do_not_recommend"], "do_not_recommend", where), kind=kind,
        )

    @property
    def text(self) -> str:
        """What the encoder reads: the title, then the body."""
        return f"{self.title}\n\n{self.body}" if self.title and self.body else self.title or self.body

    @property
    def content_hash(self) -> str:
        """Changes exactly when the encoded text changes; keys the embedding cache."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:32]

    def to_metadata(self) -> dict[str, Any]:
        """The JSON-safe fields a box shows (the body stays out of the index)."""
        return {
            "id": self.id, "title": self.title, "url": self.url, "section": self.section,
            "published_at": self.published_at.isoformat() if self.published_at else None,
            "tags": list(self.tags), "language": self.language,
            "embargo_until": self.embargo_until.isoformat() if self.embargo_until else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "do_not_recommend": self.do_not_recommend, "kind": self.kind,
        }


def _pick(row: Mapping[str, Any], aliases: tuple[str, ...]) -> Any:
    for key in aliases:
        if key in row:
            value = row[key]
            if value is not None and not (isinstance(value, float) and value != value):
                return value
    return None


def _text(value: Any, field_name: str, where: dict) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArticleError(
                f"not valid UTF-8 (byte 0x{value[exc.start]:02x} at offset {exc.start}); "
                "re-encode the source as UTF-8", field=field_name, **where) from None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise InvalidArticleError(
        f"expected text, got {type(value).__name__}", field=field_name, **where)


def _flag(value: Any, field_name: str, where: dict) -> bool:
    """A yes/no field: a bool, 0/1, or true/false, yes/no, on/off as text (CSV, SQL)."""
    if value is None:
        return False
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()  # numpy and pandas scalars
        except ValueError:  # an array of several values
            raise InvalidArticleError(f"expected true or false, got {type(value).__name__} of several values",
                                      field=field_name, **where) from None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidArticleError(f"expected true or false (or 1/0, yes/no), got {value!r}", field=field_name, **where)


def normalise_text(text: str, *, limit: int = MAX_BODY_CHARS) -> str:
    """Strip HTML and control characters, fold white space, cut at ``limit`` characters."""
    if not text:
        return ""
    if _LOOKS_LIKE_HTML.search(text):
        text = _SCRIPT_RE.sub(" ", text)
        text = _BLOCK_TAG_RE.sub("\n\n", text)  # paragraph ends stay paragraph breaks
        text = _TAG_RE.sub(" ", text)
    text = html.unescape(text)
    text = unicodedata.normalize("NFC", text)
    # Control and zero-width characters come from copy-paste and CMS exports.
    text = _CONTROL.sub(" ", text)
    text = _SPACES.sub(" ", text)
    text = _BLANK_LINES.sub("\n\n", text)
    text = "\n".join(line.strip() for line in text.split("\n")).strip()
    if len(text) > limit:
        cut = text.rfind(" ", 0, limit)
        text = text[: cut if cut > limit * 0.9 else limit]
    return text


def parse_datetime(value: Any, *, row: int | None = None, source: str | None = None,
                   article_id: str | None = None, field: str = "published_at") -> datetime | None:
    """Read an ISO 8601 date or datetime (or a date/datetime object) as aware UTC.

    A naive value is taken as UTC. ``None`` and empty strings mean "no date".
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            raise InvalidArticleError(
                f"date {value!r} is not ISO 8601; write it like 2019-01-25 or "
                "2019-01-25T14:30:00Z", field=field, row=row, source=source,
                article_id=article_id) from None
    else:
        raise InvalidArticleError(
            f"expected an ISO 8601 date string, got {type(value).__name__}",
            field=field, row=row, source=source, article_id=article_id)
    try:
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        parsed = parsed.astimezone(timezone.utc)
        parsed.timestamp()  # boxes compare timestamps; a date past year 9999 in UTC has none
    except (OverflowError, ValueError, OSError):
        raise InvalidArticleError(
            f"date {value!r} is out of range (in UTC it falls before year 1 or after 9999); "
            "fix the date", field=field, row=row, source=source, article_id=article_id) from None
    return parsed


def _tags(value: Any, where: dict) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple, set)) or hasattr(value, "tolist"):
        items = list(value.tolist() if hasattr(value, "tolist") else value)
    else:
        raise InvalidArticleError(
            f"tags must be a list or a comma-separated string, got {type(value).__name__}",
            field="tags", **where)
    return tuple(dict.fromkeys(str(t).strip() for t in items if str(t).strip()))


def parse_articles(rows: Iterable["Article | Mapping[str, Any]"]) -> list["Article"]:
    """Rows -> Articles, refusing a bad row or a repeated id with the row number."""
    if isinstance(rows, (str, bytes, Mapping)):
        raise InvalidArticleError(
            "rows must be an iterable of dicts or Articles (not a single row or a path); "
            "to read a file use similar_articles.sources.read_rows(path)")
    articles: list[Article] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        article = Article.from_row(row, row_number=number)
        if article.id in seen:
            raise InvalidArticleError(f"duplicate id (first seen at row {seen[article.id]}); ids must be unique",
                                      row=number, field="id", article_id=article.id)
        seen[article.id] = number
        articles.append(article)
    return articles
