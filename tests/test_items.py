"""Box items: the block path (recommend_many, the export) makes the items the one-item
path (recommend) makes, and the cached reason words read as they always have."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime
from types import SimpleNamespace

import numpy as np
import pytest

from similar_articles import items, many, ranking
from similar_articles.items import Recommendation

DAY = ranking.SECONDS_PER_DAY


def _old_describe_age(delta_seconds: float, relative_to: str) -> str:
    """describe_age as it was written before its words were cached (the wording to keep)."""
    days = abs(delta_seconds) / DAY
    if days < 1:
        span = "less than a day"
    elif days < 60:
        span = f"{round(days)} day{'s' if round(days) != 1 else ''}"
    elif days < 730:
        span = f"{round(days / 30.4)} months"
    else:
        span = f"{days / 365.25:.0f} years"
    if relative_to == "now":
        return f"published {span} ago"
    if days < 1:
        return "published the same day"
    return f"published {span} {'earlier' if delta_seconds > 0 else 'later'}"


def _ages() -> np.ndarray:
    rng = np.random.default_rng(3)
    edges = np.array([0.0, 0.4, 0.99999, 1.0, 1.5, 2.5, 59.4, 59.5, 59.99, 60.0, 91.2, 729.9, 730.0, 913.125, 5000.0])
    days = np.concatenate([edges, rng.uniform(0, 3, 300), rng.uniform(0, 100, 300), rng.uniform(0, 4000, 300)])
    return np.concatenate([days, -days]) * DAY


def test_age_words_read_as_before_and_arrays_code_them_as_one_by_one():
    deltas = _ages()
    for relative_to in ("article", "now"):
        one_by_one = [ranking.age_code(d, relative_to == "now") for d in deltas.tolist()]
        assert ranking.age_codes(deltas, np.full(len(deltas), relative_to == "now")).tolist() == one_by_one
        for delta, code in zip(deltas.tolist(), one_by_one):
            assert ranking.age_words(code) == ranking.describe_age(delta, relative_to) \
                == _old_describe_age(delta, relative_to), (delta, relative_to)


def test_similarity_words_show_two_decimals():
    for similarity in np.random.default_rng(4).uniform(-1, 1, 2000).tolist():
        words = ranking.reasons_for(similarity=similarity, section=None, source_section=None,
                                    age_seconds=math.nan, age_relative_to="article", fallback=None)
        if -0.005 < similarity < 0:
            assert words == ("similarity 0.00",)  # not "-0.00"
        elif abs(similarity * 100 % 1 - 0.5) > 1e-6:  # away from a tie, as the f-string rounds it
            assert words == (f"similarity {similarity:.2f}",), similarity


def test_new_item_is_the_dataclass_with_the_same_fields():
    values = dict(id="a", title="A title", url=None, published_at=datetime(2020, 1, 2).astimezone(),
                  section="world", score=0.5, similarity=0.4, reasons=("similarity 0.40",), fallback=True)
    assert [f.name for f in dataclasses.fields(Recommendation)] == list(values)
    made = items.new_item(**values)
    assert made == Recommendation(**values) and type(made) is Recommendation
    assert hash(made) == hash(Recommendation(**values))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.score = 1.0  # type: ignore[misc]
    assert dataclasses.replace(made, score=1.0) == Recommendation(**{**values, "score": 1.0})
    assert dataclasses.asdict(made) == values and repr(made) == repr(Recommendation(**values))


def _corpus(n: int, rng) -> SimpleNamespace:
    names = ["business", "sport", "world"]
    codes = rng.integers(-1, len(names), n).astype(np.int32)  # -1: no section
    published = rng.uniform(1.4e9, 1.7e9, n)
    published[::2] = published[::2].round()  # whole seconds, and fractional ones
    published[rng.random(n) < 0.1] = np.nan  # undated articles
    return SimpleNamespace(
        ids=np.array([f"id-{i}" for i in range(n)], dtype=object),
        titles=np.array([f"T{i}" for i in range(n)], dtype=object),
        urls=np.array([None if i % 7 == 0 else f"https://x/{i}" for i in range(n)], dtype=object),
        sections=np.array([names[c] if c >= 0 else None for c in codes], dtype=object),
        section_names=names, section_codes=codes, published=published, reason_table=items.ReasonTable(names))


# (-0.2, 1.0): every cosine a normalised store gives, reasons looked up by key
# (items.ReasonTable); (-2, 2): cosines no key holds, the tuple-by-tuple path.
@pytest.mark.parametrize("cosines", [(-0.2, 1.0), (-2.0, 2.0)])
def test_a_block_makes_the_items_one_call_makes(cosines):
    rng = np.random.default_rng(5)
    n, k, now_ts = 300, 3, 1.65e9
    corpus = _corpus(n, rng)
    sources = rng.permutation(n)[:120]
    positions = rng.integers(0, n, (len(sources), k))
    positions[rng.random(positions.shape) < 0.1] = -1  # short boxes
    positions[:, 0] = np.maximum(positions[:, 0], 0)
    positions = np.where(np.cumsum(positions < 0, axis=1) > 0, -1, positions)  # -1 only at a box's end
    scores = rng.uniform(-0.3, 1.3, positions.shape)
    scores[0, 0], scores[1, 0] = 0.12345, 0.87655  # ties at the fifth decimal
    sims = rng.uniform(*cosines, positions.shape)
    finished = rng.random(len(sources)) < 0.8
    ranked = many.Boxes(positions=positions, slots=np.zeros_like(positions), scores=scores, similarities=sims,
                        finished=finished)

    boxes = items.block_items(corpus, sources, ranked, now_ts)

    assert len(boxes) == finished.sum()
    for box, b in zip(boxes, np.flatnonzero(finished).tolist()):
        s = int(sources[b])
        expected = [items.item(corpus.ids[p], corpus.titles[p], corpus.urls[p], float(corpus.published[p]),
                               corpus.sections[p], float(scores[b, j]), float(sims[b, j]),
                               float(corpus.published[s]), corpus.sections[s], now_ts, None)
                    for j, p in enumerate(positions[b].tolist()) if p >= 0]
        assert box == expected, (b, box, expected)
        for got in box:
            assert type(got.score) is float and type(got.similarity) is float
            assert got.score == round(got.score, 4)


def test_reason_keys_name_each_tuple_apart():
    names = ["business", "sport", "world"]
    table = items.ReasonTable(names)
    hundredths = np.array([12.0, np.nan, -100.0, 100.0, 0.0, 55.0])
    shared = np.array([0, 2, ranking.NO_SECTION, 1, 2, ranking.NO_SECTION], dtype=np.int32)
    ages = np.array([-1, 4 * 16 + 6, 0, 3, 12345, -1], dtype=np.int64)
    keys = items.reason_keys(hundredths, shared, ages, len(names))
    assert len(set(keys.tolist())) == len(keys)
    for key, h, code, age in zip(keys.tolist(), hundredths.tolist(), shared.tolist(), ages.tolist()):
        assert table[key] == ranking.reason_words(None if math.isnan(h) else int(h),
                                                  names[code] if code >= 0 else None, age if age >= 0 else None, None)
    assert items.reason_keys(np.array([128.0]), shared[:1], ages[:1], len(names)) is None  # |cosine| > 1.27
