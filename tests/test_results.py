"""Box items as data: the words of a Reason read as they always have, and a
Recommendation is a frozen, slotted dataclass with a stable JSON form."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from similar_articles import Recommendation
from similar_articles.results import Reason, age_words

DAY = 86_400.0


def _old_describe_age(delta_seconds: float, relative_to_now: bool) -> str:
    """The wording as the previous design wrote it (the wording to keep)."""
    days = abs(delta_seconds) / DAY
    if days < 1:
        span = "less than a day"
    elif days < 60:
        span = f"{round(days)} day{'s' if round(days) != 1 else ''}"
    elif days < 730:
        span = f"{round(days / 30.4)} months"
    else:
        span = f"{days / 365.25:.0f} years"
    if relative_to_now:
        return f"published {span} ago"
    if days < 1:
        return "published the same day"
    return f"published {span} {'earlier' if delta_seconds > 0 else 'later'}"


@pytest.mark.parametrize("delta_days, relative_to_now, text", [
    (3, False, "published 3 days earlier"),
    (-1, False, "published 1 day later"),
    (-7, False, "published 7 days later"),
    (0.2, False, "published the same day"),
    (-0.9, False, "published the same day"),
    (1.4, False, "published 1 day earlier"),
    (640, False, "published 21 months earlier"),
    (1000, False, "published 3 years earlier"),
    (3, True, "published 3 days ago"),
    (61, True, "published 2 months ago"),
    (0.5, True, "published less than a day ago"),
    (800, True, "published 2 years ago"),
])
def test_age_words(delta_days, relative_to_now, text):
    assert age_words(delta_days * DAY, relative_to_now) == text


def test_age_words_read_as_before_across_every_span():
    rng = np.random.default_rng(3)
    edges = np.array([0.0, 0.4, 0.99999, 1.0, 1.5, 2.5, 59.4, 59.5, 59.99, 60.0, 91.2, 729.9, 730.0, 913.125, 5000.0])
    days = np.concatenate([edges, rng.uniform(0, 3, 300), rng.uniform(0, 100, 300), rng.uniform(0, 4000, 300)])
    for delta in (np.concatenate([days, -days]) * DAY).tolist():
        for relative_to_now in (False, True):
            assert age_words(delta, relative_to_now) == _old_describe_age(delta, relative_to_now), delta


def _words(similarity=math.nan, shared_section=None, age_seconds=math.nan, relative_to_now=False, fallback=""):
    return Reason(similarity, shared_section, age_seconds, relative_to_now, fallback).words()


def test_reasons_name_similarity_section_age_and_fallback():
    assert _words(0.714, "world", 3 * DAY) == ("similarity 0.71", "same section: world", "published 3 days earlier")
    assert _words(0.64) == ("similarity 0.64",)
    assert _words(0.5, None, -7 * DAY) == ("similarity 0.50", "published 7 days later")
    assert _words(0.5, None, 60 * DAY, True) == ("similarity 0.50", "published 2 months ago")
    assert _words(0.1, None, math.nan, True, "recent article") == ("fallback: recent article",)
    assert _words(0.1, "sport", 2 * DAY, False, "recent in section sport") == \
        ("fallback: recent in section sport", "same section: sport", "published 2 days earlier")
    assert _words(0.3, None, 0.1 * DAY) == ("similarity 0.30", "published the same day")


def test_similarity_words_show_two_decimals():
    for similarity in np.random.default_rng(4).uniform(-1, 1, 2000).tolist():
        words = _words(similarity)
        if -0.005 < similarity < 0:
            assert words == ("similarity 0.00",)  # not "-0.00"
        elif abs(similarity * 100 % 1 - 0.5) > 1e-6:  # away from a tie
            assert words == (f"similarity {similarity:.2f}",), similarity
    assert _words(-0.001) == ("similarity 0.00",)
    assert _words(1.0) == ("similarity 1.00",)


VALUES = dict(id="a", title="A title", url=None, published_at=datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
              section="world", score=0.5, similarity=0.4, reasons=("similarity 0.40", "same section: world"),
              fallback=True, label="More from World")


def test_a_recommendation_is_frozen_slotted_data():
    item = Recommendation(**VALUES)
    assert [f.name for f in dataclasses.fields(Recommendation)] == list(VALUES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.score = 1.0  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        item.extra = 1  # type: ignore[attr-defined]
    assert hasattr(Recommendation, "__slots__") and not hasattr(item, "__dict__")
    assert set(Recommendation.__slots__) == set(VALUES)
    assert item == Recommendation(**VALUES) and hash(item) == hash(Recommendation(**VALUES))
    assert dataclasses.replace(item, score=1.0) == Recommendation(**{**VALUES, "score": 1.0})
    assert dataclasses.asdict(item) == VALUES
    assert Recommendation(**{k: v for k, v in VALUES.items() if k != "fallback"}).fallback is False


def test_to_dict_has_every_field_in_order_with_iso_dates():
    item = Recommendation(**VALUES)
    out = item.to_dict()
    assert list(out) == [f.name for f in dataclasses.fields(Recommendation)]
    assert out == {**VALUES, "published_at": "2020-01-02T03:04:05+00:00", "reasons": list(VALUES["reasons"])}
    assert Recommendation(**{**VALUES, "published_at": None}).to_dict()["published_at"] is None
    local = datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert Recommendation(**{**VALUES, "published_at": local}).to_dict()["published_at"] == \
        "2020-01-02T03:04:05+02:00"
    import json

    assert json.loads(json.dumps(out)) == out  # JSON-ready as it is


def test_served_items_carry_the_words_of_their_reason(seed_index, encoder):
    """The items a box serves are Recommendations whose reasons are a Reason's words."""
    from similar_articles import Recommender

    rec = Recommender.load(seed_index, encoder=encoder, reload_interval=None)
    box = rec.recommend("inf-talks-fail", k=3)
    assert box and all(type(item) is Recommendation for item in box)
    for item in box:
        assert isinstance(item.reasons, tuple) and type(item.score) is float and type(item.similarity) is float
        assert item.reasons[0].startswith("similarity ") or item.reasons[0].startswith("fallback: ")
        assert item.published_at is None or item.published_at.tzinfo is not None
    assert "published 7 days later" in box[0].reasons
