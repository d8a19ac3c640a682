from datetime import datetime, timezone

import pytest

from similar_articles import Article, InvalidArticleError
from similar_articles.articles import MAX_BODY_CHARS


def test_aliases_are_accepted():
    article = Article.from_row({"article_id": 7, "headline": "Title", "text": "Body text.",
                                "publish_date": "2019-01-25", "category": "world", "link": "u"})
    assert (article.id, article.title, article.body, article.section, article.url) == \
        ("7", "Title", "Body text.", "world", "u")
    assert article.published_at == datetime(2019, 1, 25, tzinfo=timezone.utc)


def test_only_id_and_some_text_are_required():
    assert Article.from_row({"id": "a", "content": "just a body"}).body == "just a body"
    assert Article.from_row({"id": "b", "title": "just a title"}).text == "just a title"


@pytest.mark.parametrize("row, field, words", [
    ({"title": "t"}, "id", "missing id"),
    ({"id": "  ", "title": "t"}, "id", "empty id"),
    ({"id": "a"}, "body", "no text"),
    ({"id": "a", "body": "<p>  </p>"}, "body", "no text"),
    ({"id": "a", "body": "x", "date": "25/01/2019"}, "published_at", "ISO 8601"),
    ({"id": "a", "body": b"caf\xe9"}, "body", "UTF-8"),
    ({"id": "a", "body": "x", "tags": 5}, "tags", "comma-separated"),
])
def test_bad_rows_name_the_row_and_field(row, field, words):
    with pytest.raises(InvalidArticleError) as info:
        Article.from_row(row, row_number=12, source="feed.jsonl")
    assert info.value.field == field
    assert words in str(info.value)
    assert "feed.jsonl, row 12" in str(info.value)


def test_html_is_stripped_and_entities_decoded():
    article = Article.from_row({"id": "a", "title": "Fish &amp; chips",
                                "body": "<div><p>First&nbsp;para.</p><script>var x=1;</script>"
                                        "<p>Second <b>bold</b> para.</p></div>"})
    assert article.title == "Fish & chips"
    assert article.body == "First para.\n\nSecond bold para."


def test_text_that_merely_mentions_angle_brackets_is_kept():
    assert Article.from_row({"id": "a", "body": "3 < 4 and 5 > 2"}).body == "3 < 4 and 5 > 2"


def test_huge_body_is_cut_not_refused():
    article = Article.from_row({"id": "a", "body": "word " * 1_000_000})  # 5 MB
    assert 0.9 * MAX_BODY_CHARS <= len(article.body) <= MAX_BODY_CHARS


def test_dates_are_utc_aware():
    assert Article.from_row({"id": "a", "body": "x", "date": "2019-01-25T17:00:00+01:00"}) \
        .published_at == datetime(2019, 1, 25, 16, tzinfo=timezone.utc)
    assert Article.from_row({"id": "a", "body": "x", "date": "2019-01-25T16:00:00Z"}) \
        .published_at.tzinfo is timezone.utc
    assert Article.from_row({"id": "a", "body": "x", "date": ""}).published_at is None


def test_content_hash_follows_the_encoded_text_only():
    a = Article.from_row({"id": "a", "title": "T", "body": "B", "section": "x"})
    b = Article.from_row({"id": "b", "title": "T", "body": "<p>B</p>", "section": "y"})
    c = Article.from_row({"id": "a", "title": "T", "body": "B changed"})
    assert a.content_hash == b.content_hash != c.content_hash


def test_tags_from_string_or_list():
    assert Article.from_row({"id": "a", "body": "x", "tags": "nato, russia,,nato"}).tags == ("nato", "russia")
    assert Article.from_row({"id": "a", "body": "x", "tags": ["a", "b"]}).tags == ("a", "b")
