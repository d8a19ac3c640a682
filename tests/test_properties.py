"""Property-based tests (hypothesis) of the readers and Article.from_row: whatever a file
holds, every record ends as a row or as a reported row error with its row number, never
as a traceback, and rows read plus rows reported equals the records in the file."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from datetime import timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from similar_articles import Article, InvalidArticleError
from similar_articles.articles import FIELD_ALIASES
from similar_articles.sources import ArticleReader, RowError, read_rows

# Bounded so the file runs in a few seconds; derandomized so CI sees the same examples.
FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
FIELD_NAMES = st.sampled_from([alias for aliases in FIELD_ALIASES.values() for alias in aliases])
ROW_VALUES = (JSON_VALUES | st.binary(max_size=20) | st.datetimes() | st.dates()
              | st.datetimes(timezones=st.timezones()) | st.lists(st.text(max_size=5), max_size=3))
# CSV cells as a spreadsheet writes them: any text on one line, commas and quotes included.
CELLS = st.text(st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from('",\' '), max_size=12)


def read_file(data: bytes, suffix: str) -> list:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"feed{suffix}"
        path.write_bytes(data)
        return list(read_rows(path))


def assert_rows_or_row_errors(read: list) -> None:
    numbers = [number for number, _ in read]
    assert numbers == sorted(numbers) and all(n >= 1 for n in numbers)
    for number, row in read:
        assert isinstance(row, dict) or (isinstance(row, RowError) and row.row == number and row.reason)
    for item in ArticleReader().articles("feed", read):  # validation never raises either
        assert isinstance(item, (Article, RowError))


def jsonl_records(data: bytes) -> int:
    lines = data.split(b"\n")
    lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")
    return sum(1 for line in lines if line.strip())


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_as_jsonl_are_rows_or_row_errors_one_per_line(data):
    read = read_file(data, ".jsonl")
    assert_rows_or_row_errors(read)
    assert len(read) == jsonl_records(data)


@FAST
@given(st.lists(JSON_VALUES, max_size=8))
def test_any_json_values_as_jsonl_lines_are_rows_or_row_errors(values):
    read = read_file("".join(json.dumps(v) + "\n" for v in values).encode("utf-8"), ".jsonl")
    assert_rows_or_row_errors(read)
    assert len(read) == len(values)
    assert [isinstance(row, dict) for _, row in read] == [isinstance(v, dict) for v in values]


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_as_csv_are_rows_or_row_errors(data):
    assert_rows_or_row_errors(read_file(data, ".csv"))


@FAST
@given(st.lists(st.lists(CELLS, min_size=3, max_size=3), min_size=1, max_size=10), st.data())
def test_a_stray_quote_in_a_csv_costs_at_most_its_own_record(records, data):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "title", "body"])
    writer.writerows(records)
    lines = out.getvalue().split("\n")
    broken = data.draw(st.integers(1, len(records)))
    lines[broken] = '"' + lines[broken]  # a quote opened at the start of the record, never closed
    read = read_file("\n".join(lines).encode("utf-8"), ".csv")
    assert_rows_or_row_errors(read)
    assert len(read) == len(records)  # rows read + rows reported == records in the file
    others = [row for number, row in read if number != broken]
    assert all(isinstance(row, dict) for row in others)


@FAST
@given(st.dictionaries(FIELD_NAMES | st.text(max_size=6), ROW_VALUES, max_size=8))
def test_any_values_make_an_article_or_an_invalid_article_error(row):
    try:
        article = Article.from_row(row, row_number=7, source="feed")
    except InvalidArticleError as exc:
        assert exc.reason
        return
    assert article.id.strip() and (article.title or article.body)
    if article.published_at is not None:
        assert article.published_at.tzinfo == timezone.utc and article.published_at.timestamp()

