"""Near-verbatim copies (copies.py) and the boxes that must never show one twice.

All texts are our own words: a made-up wire story, its republications and
independent reports of the same made-up event.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from similar_articles import RankingConfig, Recommender
from similar_articles.features import copies

WIRE = (
    "Flood barriers on the river Marle failed early on Tuesday after three days of heavy rain, "
    "forcing the evacuation of about four thousand residents from low-lying streets in the town "
    "of Eskbridge, regional officials said. Emergency crews used boats to reach families trapped "
    "on upper floors, and the army sent two helicopters to lift elderly patients from a care home "
    "near the station. The regional governor, Ana Lindqvist, told reporters the barriers had been "
    "inspected in the spring and should have held. An investigation into the failure would begin "
    "as soon as the water receded, she said. Forecasters expect another forty millimetres of rain "
    "before the weekend, and warned that the lower bridge could be closed for weeks. Schools in "
    "the district will remain shut until Friday. The rail operator cancelled all services between "
    "Eskbridge and the coast, and bus replacements were running with long delays, passengers said."
)
WIRE_TITLE = "Thousands evacuated as Marle flood barriers fail"
# Re-headlined, the last two sentences trimmed, a few words changed by a sub-editor.
REPUBLISHED = (
    "Flood barriers on the Marle river failed early on Tuesday after three days of heavy rain, "
    "forcing the evacuation of about 4,000 residents from low-lying streets in the town "
    "of Eskbridge, regional officials said. Emergency crews used boats to reach families trapped "
    "on upper floors, and the army sent two helicopters to lift elderly patients from a care home "
    "near the station. Regional governor Ana Lindqvist told reporters the barriers had been "
    "inspected in the spring and should have held. An investigation into the failure would begin "
    "as soon as the water receded, she said. Forecasters expect another forty millimetres of rain "
    "before the weekend, and warned that the lower bridge could be closed for weeks."
)
REPUBLISHED_TITLE = "Eskbridge: army helicopters lift patients as river bursts defences"
# A video page: one sentence, the wire story's opening (minus an article).
VIDEO = ("Flood barriers on river Marle failed early on Tuesday after three days of heavy rain, "
         "forcing the evacuation of about four thousand residents from low-lying streets in the "
         "town of Eskbridge, regional officials said.")
# The same event, independently reported.
OTHER_REPORT = (
    "Residents of Eskbridge spent Tuesday night in school halls and sports centres after the "
    "defences along the Marle gave way. Water reached the first floor of houses on Mill Lane "
    "within an hour, according to neighbours who watched from the hillside. Soldiers and "
    "volunteers in small boats ferried people to dry ground, while helicopters carried out "
    "several patients from a nursing home. Governor Ana Lindqvist promised an inquiry into why "
    "defences checked only months ago collapsed. Local shopkeepers counted their losses and "
    "insurers sent assessors. More rain is forecast, and the river may not fall for days. "
    "Commuters face weeks of disruption because the lower bridge is under water."
)
UNRELATED = (
    "The city orchestra announced its new season on Monday, opening in September with a cycle of "
    "Sibelius symphonies under its young principal conductor. Ticket prices will stay the same "
    "for a third year, and students can buy seats for five euros on the night of each concert. "
    "The orchestra also plans a tour of three northern towns in the spring and a series of "
    "family matinees with narrated fairy tales."
)


def is_copy(a: str, b: str, threshold: float = 0.6) -> bool:
    row, count = copies.sketch(a)
    other, other_count = copies.sketch(b)
    forward = bool(copies.copies_of(row, count, other[None, :], np.array([other_count]), threshold)[0])
    backward = bool(copies.copies_of(other, other_count, row[None, :], np.array([count]), threshold)[0])
    assert forward == backward  # the relation is symmetric
    return forward


# ------------------------------------------------------------------ the sketch itself
def test_sketch_is_a_fixed_size_sorted_row_of_hashes():
    row, count = copies.sketch(WIRE)
    assert row.dtype == np.uint32 and row.shape == (copies.SLOTS,) and row.nbytes <= 128
    assert count == len(set(copies.shingle_hashes(WIRE).tolist())) > copies.SLOTS
    real = row[row != copies.PAD]
    assert (np.diff(real.astype(np.int64)) > 0).all() and (row[len(real):] == copies.PAD).all()
    assert len(real) >= copies.BOTTOM  # the sample, plus lead shingles it lacks


def test_shingles_ignore_case_punctuation_and_function_words():
    assert np.array_equal(copies.shingle_hashes("Police in the US state of Missouri said."),
                          copies.shingle_hashes("police in US state, Missouri, said"))
    assert not np.array_equal(copies.shingle_hashes("police in US state of Missouri said"),
                              copies.shingle_hashes("police in US state of Kansas said"))


def test_hashes_are_stable_across_processes():
    # Stored sketches are compared with ones computed later, in other processes: a
    # change of words, hashing or layout needs a new copies.SCHEME.
    assert copies.shingle_hashes("one two three four five six").tolist() == [411933259, 31163559]


# ------------------------------------------------------------------ what is a copy
def test_a_trimmed_re_headlined_republication_is_a_copy():
    assert is_copy(WIRE, REPUBLISHED)
    assert is_copy(copies.copy_text(WIRE, WIRE_TITLE), copies.copy_text(REPUBLISHED, REPUBLISHED_TITLE))


def test_a_one_sentence_page_that_opens_an_article_is_a_copy():
    assert is_copy(VIDEO, WIRE)
    # Sharing only part of the opening is not enough: the republication reworded it
    # ("Marle river", "4,000"), and more than half the page's shingles are not in it.
    shared = set(copies.shingle_hashes(VIDEO).tolist()) & set(copies.shingle_hashes(REPUBLISHED).tolist())
    assert len(shared) < 0.6 * copies.sketch(VIDEO)[1] and not is_copy(VIDEO, REPUBLISHED)


def test_independent_reports_of_the_same_event_are_not_copies():
    assert not is_copy(WIRE, OTHER_REPORT)
    assert not is_copy(VIDEO, OTHER_REPORT)
    assert not is_copy(WIRE, UNRELATED)


def test_empty_and_short_texts():
    empty, zero = copies.sketch("")
    assert zero == 0 and (empty == copies.PAD).all()
    assert not is_copy("", WIRE) and not is_copy("", "")
    assert copies.sketch("Storm warning")[1] == 1  # fewer than 5 words: one shingle
    assert is_copy("Storm warning", "storm WARNING!")
    assert not is_copy("Storm warning", "Storm over")
    assert copies.copy_text("", "A title only") == "A title only"
    assert copies.copy_text("The body", "A title") == "The body"


def test_long_texts_are_judged_from_their_samples():
    rng = np.random.default_rng(7)
    words = [f"w{i}" for i in rng.integers(0, 20_000, size=3_000)]
    text = " ".join(words)
    trimmed = " ".join(words[:2_200])  # a long copy: 73% of the original, all of itself
    overlap = " ".join(words[:900] + [f"x{i}" for i in rng.integers(0, 20_000, size=2_100)])
    assert is_copy(text, trimmed)
    assert not is_copy(text, overlap)  # shares 30% of either text


def test_threshold_decides():
    # VIDEO shares its opening with WIRE but none of a shortened page (all but the
    # first eight words): between the two, half its shingles are in the other.
    half = " ".join(VIDEO.split()[:20]) + " and then something else entirely was reported later that day"
    row, count = copies.sketch(half)
    other, other_count = copies.sketch(VIDEO)
    share = len(set(copies.shingle_hashes(half).tolist()) & set(copies.shingle_hashes(VIDEO).tolist())) / count
    assert 0.3 < share < 0.9
    for threshold, expected in ((share - 0.05, True), (share + 0.05, False)):
        assert copies.copies_of(row, count, other[None, :], np.array([other_count]), threshold)[0] == expected


# ------------------------------------------------------------------ in boxes
def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def _rows_and_vectors():
    """Six articles whose vectors we set: copies far apart in cosine (below the
    duplicate_similarity rule), other related stories in between."""
    rows = [
        {"id": "wire", "title": WIRE_TITLE, "body": WIRE, "published_at": "2024-03-05T08:00:00Z", "section": "news"},
        {"id": "republished", "title": REPUBLISHED_TITLE, "body": REPUBLISHED,
         "published_at": "2024-03-05T10:00:00Z", "section": "news"},
        {"id": "video", "title": "Watch: Marle floods Eskbridge", "body": VIDEO,
         "published_at": "2024-03-05T09:00:00Z", "section": "video"},
        {"id": "report", "title": "A night in the school hall as Eskbridge floods", "body": OTHER_REPORT,
         "published_at": "2024-03-05T12:00:00Z", "section": "news"},
        {"id": "concerts", "title": "Orchestra opens season with Sibelius", "body": UNRELATED,
         "published_at": "2024-03-04T12:00:00Z", "section": "culture"},
        {"id": "insurers", "title": "Insurers brace for Marle flood claims",
         "body": "Insurance companies expect thousands of claims from Eskbridge homeowners after this "
                 "week's floods, an industry body said, and warned premiums in river towns may rise.",
         "published_at": "2024-03-06T12:00:00Z", "section": "business"},
    ]
    rng = np.random.default_rng(3)
    topic, other = _unit(rng.normal(size=384)), _unit(rng.normal(size=384))

    def near(weight):  # cosine to ``topic`` about ``weight``
        return _unit(weight * topic + np.sqrt(1 - weight ** 2) * _unit(rng.normal(size=384)))

    vectors = np.stack([topic, near(0.85), near(0.8), near(0.75), other, near(0.7)])
    return rows, vectors


@pytest.fixture
def flood_index(tmp_path, encoder):
    rows, vectors = _rows_and_vectors()
    sims = vectors @ vectors.T
    # the cosine rule sees no copy
    assert sims[np.triu_indices(len(rows), 1)].max() < RankingConfig().duplicate_similarity
    Recommender.build(rows, tmp_path, embeddings=vectors, encoder=encoder)
    return tmp_path, rows, vectors


NOW = "2024-03-07T00:00:00+00:00"


def _box(rec, source, k=3, **overrides):
    from datetime import datetime

    return [item.id for item in rec.recommend(source, k=k, now=datetime.fromisoformat(NOW), **overrides)]


# Copying is not transitive: the video page and the republication share too little.
COPY_PAIRS = [{"wire", "republished"}, {"wire", "video"}]


def shows_a_copy(source: str, box: list[str], pairs=COPY_PAIRS) -> bool:
    return any(pair <= set(box) | {source} for pair in pairs)


def test_box_never_shows_a_copy_of_the_source_or_two_copies(flood_index, encoder):
    path, _, _ = flood_index
    rec = Recommender.load(path, encoder=encoder)
    for source in ("wire", "republished", "video", "report", "insurers"):
        box = _box(rec, source)
        assert not shows_a_copy(source, box), (source, box)
        assert len(box) == 3
    # Without the rule the same boxes do show copies: the rule, not the vectors, works.
    assert set(_box(rec, "wire", copy_containment=None)[:2]) == {"republished", "video"}
    assert set(_box(rec, "report", copy_containment=None)) >= {"wire", "republished"}


def test_fallback_never_shows_a_copy(flood_index, encoder):
    path, _, _ = flood_index
    rec = Recommender.load(path, encoder=encoder)
    # A similarity floor above every cosine leaves the box to the fallback, which
    # prefers recent same-section articles: "republished" unless it is a copy.
    box = _box(rec, "wire", k=2, min_similarity=0.99)
    assert not shows_a_copy("wire", box), box
    assert "republished" in _box(rec, "wire", k=2, min_similarity=0.99, copy_containment=None)


def test_an_unseen_article_never_gets_its_own_copies(flood_index, encoder):
    path, _, _ = flood_index
    rec = Recommender.load(path, encoder=encoder)
    unseen = {"id": "cms-draft", "title": "Marle barriers fail, Eskbridge evacuated", "body": WIRE,
              "published_at": "2024-03-06T20:00:00Z", "section": "news"}
    box = _box(rec, unseen)
    assert len(box) == 3 and not {"wire", "republished", "video"} & set(box), box
    assert {"wire", "republished"} & set(_box(rec, unseen, copy_containment=None))


def test_sketches_survive_the_snapshot_and_add(flood_index, encoder):
    path, rows, vectors = flood_index
    rec = Recommender.load(path, encoder=encoder)
    sketches = rec.state.features.sketches
    assert len(sketches) == len(rows) and sketches.take(np.arange(len(rows))).shape[1] == copies.SLOTS
    # A copy added after the build, far from the source in cosine, is never shown with it.
    late = {"id": "late-copy", "title": "Marle barriers give way, thousands leave Eskbridge",
            "body": WIRE.replace("Tuesday", "Tuesday morning"), "published_at": "2024-03-06T18:00:00Z",
            "section": "news"}
    rng = np.random.default_rng(5)
    late_vector = _unit(0.9 * vectors[0] + np.sqrt(1 - 0.81) * _unit(rng.normal(size=384)))
    rec.add([late], embeddings=late_vector[None, :])
    assert "late-copy" in _box(rec, "report", copy_containment=None)
    pairs = COPY_PAIRS + [{"late-copy", "wire"}, {"late-copy", "republished"}, {"late-copy", "video"}]
    for source in ("wire", "report", "insurers", "late-copy"):
        box = _box(rec, source)
        assert not shows_a_copy(source, box, pairs), (source, box)


def test_an_index_without_sketches_loads_and_skips_the_rule(flood_index, encoder):
    path, _, _ = flood_index
    folder = Recommender.load(path, encoder=encoder).path
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in ("copy_sketches", "copy_shingles"):
        (folder / f"{name}.npy").unlink()
        del manifest["checksums"][f"{name}.npy"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    rec = Recommender.load(path, encoder=encoder)
    assert rec.state.features.sketches is None
    assert _box(rec, "wire") == _box(rec, "wire", copy_containment=None)


# ------------------------------------------------------------------ many pairs at once
def _texts():
    """Copies, trimmed copies, opening pages, unrelated, empty and short texts, and
    windows of one long word sequence (every containment from 0 to 1, long and short)."""
    half = " ".join(VIDEO.split()[:20]) + " and then something else entirely was reported later that day"
    rng = np.random.default_rng(11)
    words = [f"w{i}" for i in rng.integers(0, 5_000, size=3_000)]
    windows = [" ".join(words[start:start + size]) for start, size in
               ((0, 3_000), (0, 2_200), (400, 2_000), (1_500, 1_500), (0, 120), (60, 120), (100, 40),
                (0, 12), (3, 12), (2_000, 900))]
    return [WIRE, REPUBLISHED, VIDEO, OTHER_REPORT, UNRELATED, half, WIRE.replace("Tuesday", "Tuesday morning"),
            WIRE_TITLE, REPUBLISHED_TITLE, "", "   ", "Storm warning", "storm WARNING!", "Storm over",
            "one two three four five", "one two three four five six"] + windows


def test_copies_pairwise_says_what_copies_of_says_for_every_pair():
    rows, counts = copies.sketches(_texts())
    a, b = np.meshgrid(np.arange(len(rows)), np.arange(len(rows)), indexing="ij")
    a, b = a.ravel(), b.ravel()
    for threshold in np.linspace(0.0, 1.0, 41):  # 0: a shared hash is enough, if there is one
        got = copies.copies_pairwise(rows[a], counts[a], rows[b], counts[b], threshold)
        expected = [bool(copies.copies_of(rows[i], int(counts[i]), rows[j:j + 1], counts[j:j + 1], threshold)[0])
                    for i, j in zip(a, b)]
        assert got.dtype == bool and got.tolist() == expected, threshold
        assert 0 < got.sum() < len(got)
    assert copies.copies_pairwise(rows[:0], counts[:0], rows[:0], counts[:0], 0.6).shape == (0,)


def test_list_copy_bits_mark_the_listed_copies(counting_bar):
    rows, counts = copies.sketches(_texts())
    n = len(rows)
    rng = np.random.default_rng(5)
    lists = np.stack([rng.permutation(n)[:n - 3] for _ in range(n)]).astype(np.int32)
    lists[rng.random(lists.shape) < 0.2] = -1
    lists[4] = -1
    bits = copies.list_copy_bits(rows, counts, lists, 0.6, block=5, bar=counting_bar)
    width = lists.shape[1]
    assert bits.dtype == np.uint8 and bits.shape == (n, (width + 7) // 8) and counting_bar.n == n
    flags = copies.copy_flags(bits, width)
    for i in range(n):
        listed = lists[i][lists[i] >= 0]
        expected = np.zeros(width, dtype=bool)
        expected[lists[i] >= 0] = copies.copies_of(rows[i], int(counts[i]), rows[listed], counts[listed], 0.6)
        assert flags[i].tolist() == expected.tolist(), i
    assert flags.any() and not flags[4].any()
    # Any width: lists wider than 64 keep their copy bits (WIRE 100 times: a copy of itself).
    wide = np.zeros((n, 100), dtype=np.int32)
    assert copies.copy_flags(copies.list_copy_bits(rows, counts, wide, 0.6), 100)[0].all()
