"""Newsroom controls in the library and the CLI: the article fields (embargo, expiry,
do-not-recommend, kind, language) in every box, fallback included; pins, blocks and
section policies from the index's rules.json; reader labels; rules that survive a
restart and a rebuild and reach another process within a second."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from similar_articles import Article, InvalidArticleError, Recommender
from similar_articles.batch import run_build
from similar_articles.cli import main
from similar_articles.rules import RuleError, Rules, RulesConflictError
from similar_articles.rulesfile import RulesFile
from similar_articles.sources import read_rows

NOW = datetime(2017, 4, 1, tzinfo=timezone.utc)
EARLY, LATE = datetime(2017, 3, 30, 12, tzinfo=timezone.utc), datetime(2017, 4, 3, tzinfo=timezone.utc)
EMBARGOED, EXPIRED, HELD = "3592", "3631", "3697"  # three of the newest articles: the fallback's first picks
SPONSORED = ("3624", "3687")  # two more of the newest
FORCE_FALLBACK = {"min_similarity": 0.99}  # nothing is related: every item is a fallback


def _rows(news100: list[dict]) -> list[dict]:
    rows = []
    for row in news100:
        row = dict(row, kind="opinion" if row["section"] == "huffingtonpost" else "news",
                   language="de" if row["section"] == "dw" else None if row["section"] == "cnn" else "en")
        if row["id"] in SPONSORED:
            row["kind"] = "sponsored"
        if row["section"] == "bbc":
            row["tags"] = ["uk", "bbc-pick"]
        rows.append(row)
    by_id = {row["id"]: row for row in rows}
    by_id[EMBARGOED]["embargo_until"] = "2017-04-02T00:00:00Z"
    by_id[EXPIRED]["expires_at"] = "2017-03-31"
    by_id[HELD]["do_not_recommend"] = "yes"
    return rows


@pytest.fixture(scope="module")
def index(tmp_path_factory, news100, news100_vectors, encoder):
    path = tmp_path_factory.mktemp("rules-index")
    Recommender.build(_rows(news100), path, embeddings=news100_vectors, encoder=encoder)
    return path


@pytest.fixture
def rec(index, encoder):
    """The index with no rules and English labels, loaded afresh."""
    for name in ("rules.json", "labels.json"):
        (index / name).unlink(missing_ok=True)
    return Recommender.load(index, encoder=encoder, reload_interval=None)


def _shown(boxes) -> Counter:
    return Counter(item.id for box in boxes for item in box)


# ---------------------------------------------------------------- article fields
def test_newsroom_fields_are_read_from_rows_files_and_mapped_columns(tmp_path):
    article = Article.from_row({"id": "a", "title": "T", "embargo": "2017-04-02T10:00:00+02:00",
                                "expiry": "2017-05-01", "no_recommend": "Yes", "content_type": "Sponsored",
                                "lang": "de"})
    assert article.embargo_until == datetime(2017, 4, 2, 8, tzinfo=timezone.utc)
    assert article.expires_at == datetime(2017, 5, 1, tzinfo=timezone.utc)
    assert article.do_not_recommend is True and article.kind == "sponsored" and article.language == "de"
    assert Article.from_row({"id": "b", "title": "T", "do_not_recommend": 0}).do_not_recommend is False
    with pytest.raises(InvalidArticleError, match="'embargo_until'.*ISO 8601"):
        Article.from_row({"id": "c", "title": "T", "embargo_until": "next week"})
    with pytest.raises(InvalidArticleError, match="'do_not_recommend'.*true or false"):
        Article.from_row({"id": "c", "title": "T", "do_not_recommend": "maybe"})
    import numpy as np

    assert Article.from_row({"id": "d", "title": "T", "do_not_recommend": np.bool_(True)}).do_not_recommend
    with pytest.raises(InvalidArticleError, match="'do_not_recommend'.*several values"):
        Article.from_row({"id": "c", "title": "T", "do_not_recommend": np.array([1, 0])})
    csv = tmp_path / "feed.csv"
    csv.write_text("id,title,hold,type_of_story,off_after\nx,A title,true,Live,2017-03-31\n", encoding="utf-8")
    from similar_articles.sources import FileSource

    source = FileSource(csv, mapping={"do_not_recommend": "hold", "kind": "type_of_story", "expires_at": "off_after"})
    (number, row), = list(source.rows())
    mapped = Article.from_row(row, row_number=number)
    assert mapped.do_not_recommend and mapped.kind == "live" and mapped.expires_at.day == 31
    assert list(read_rows(csv))  # the same file reads without a mapping too


def test_held_expired_and_embargoed_articles_never_fill_a_box_fallback_included(rec):
    ids = rec.ids()
    for overrides in ({}, FORCE_FALLBACK):
        shown = _shown(rec.recommend_many(ids, k=3, now=NOW, **overrides))
        assert not {EMBARGOED, EXPIRED, HELD} & set(shown), overrides
        assert sum(shown.values()) == 3 * len(ids)  # the boxes stay full
    assert all(item.fallback for box in rec.recommend_many(ids, k=3, now=NOW, **FORCE_FALLBACK) for item in box)
    # Each fills fallback slots once its time comes: before expiry, after embargo.
    early = _shown(rec.recommend_many(ids, k=3, now=EARLY, **FORCE_FALLBACK))
    late = _shown(rec.recommend_many(ids, k=3, now=LATE, **FORCE_FALLBACK))
    assert early[EXPIRED] > 0 and late[EXPIRED] == 0
    assert early[EMBARGOED] == 0 and late[EMBARGOED] > 0
    assert early[HELD] == late[HELD] == 0
    # An unseen article's box (a search, not a list) obeys them too.
    draft = {"id": "draft", "title": "Travel ban court ruling", "body": "A court blocked the travel ban.",
             "language": "en"}
    assert not {EMBARGOED, EXPIRED, HELD} & {i.id for i in rec.recommend(draft, k=10, now=NOW, **FORCE_FALLBACK)}


def test_the_fields_persist_in_the_snapshot_and_through_live_updates(rec, index, encoder):
    table = rec.state.table
    assert table.held is not None and table.embargo is not None and table.expires is not None
    assert set(table.kind_names) == {"news", "opinion", "sponsored"} and set(table.language_names) == {"de", "en"}
    assert {"embargo_until.npy", "expires_at.npy", "do_not_recommend.npy"} <= {p.name for p in rec.path.iterdir()}
    # Two new articles, newer than any: the fallback's first picks in their section, unless held.
    vectors = rec.state.index.vectors(table.require(rec.ids()[:2]))
    fresh = [{"id": f"fresh-{name}", "title": f"A {name} story from Moscow", "body": "Words.", "section": "tass",
              "published_at": "2017-03-31T10:00:00Z", "language": "en", "do_not_recommend": name == "held"}
             for name in ("shown", "held")]
    rec.add(fresh, embeddings=vectors)
    try:
        for serving in (rec, Recommender.load(index, encoder=encoder, reload_interval=None)):  # a restart replays
            shown = _shown(serving.recommend_many(serving.ids(), k=3, now=NOW, **FORCE_FALLBACK))
            assert shown["fresh-shown"] > 0 and shown["fresh-held"] == 0
            assert serving.state.table.metadata()["languages"][-1] == "en"
    finally:
        rec.remove(["fresh-shown", "fresh-held"])


def test_an_index_without_newsroom_fields_stores_none(tmp_path, news100, news100_vectors, encoder):
    rec = Recommender.build(news100[:30], tmp_path / "plain", embeddings=news100_vectors[:30], encoder=encoder)
    table = rec.state.table
    assert table.held is None and table.embargo is None and table.kind_codes is None and table.language_codes is None
    assert not {"embargo_until.npy", "do_not_recommend.npy"} & {p.name for p in rec.path.iterdir()}
    assert len(rec.recommend(news100[0]["id"], k=3)) == 3


def test_a_snapshot_from_before_the_newsroom_fields_still_loads(tmp_path, news100, news100_vectors, encoder):
    """articles.json without kinds and languages, no newsroom arrays: what older builds
    wrote. It loads, and serves as before (no article has those fields)."""
    import hashlib

    rec = Recommender.build(news100[:30], tmp_path / "old", embeddings=news100_vectors[:30], encoder=encoder)
    before = rec.recommend(news100[0]["id"], k=3, now=NOW)
    folder = rec.path
    articles = json.loads((folder / "articles.json").read_text("utf-8"))
    for name in ("kinds", "languages"):
        articles.pop(name)
    (folder / "articles.json").write_text(json.dumps(articles), encoding="utf-8")
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    manifest["checksums"]["articles.json"] = hashlib.sha256((folder / "articles.json").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    old = Recommender.load(tmp_path / "old", encoder=encoder, reload_interval=None)
    assert old.state.table.kind_codes is None and old.state.table.language_codes is None
    assert old.recommend(news100[0]["id"], k=3, now=NOW) == before


def test_a_box_shows_its_sources_language_unless_a_policy_says_otherwise(rec):
    table = rec.state.table
    language = dict(zip(rec.ids(), table.metadata()["languages"]))
    german = [i for i, lang in language.items() if lang == "de"]
    english = [i for i, lang in language.items() if lang == "en"]
    for ids, wanted in ((german, {"de", None}), (english, {"en", None})):
        for overrides in ({}, FORCE_FALLBACK):
            assert {language[i.id] for box in rec.recommend_many(ids, k=4, now=NOW, **overrides) for i in box} <= wanted
    assert "de" in {language[i.id] for box in rec.recommend_many(german, k=4, now=NOW) for i in box}
    rec.edit_rules(lambda r: r.with_policy("dw", {"language": "any"}))
    assert "en" in {language[i.id] for box in rec.recommend_many(german, k=4, now=NOW) for i in box}
    rec.edit_rules(lambda r: r.with_policy("*", {"language": ["de"]}))  # English boxes may show German only
    assert {language[i.id] for box in rec.recommend_many(english, k=3, now=NOW) for i in box} <= {"de", None}


def test_kinds_a_policy_lets_fill_the_box(rec):
    kinds = dict(zip(rec.ids(), rec.state.table.metadata()["kinds"]))
    ids = rec.ids()
    assert {kinds[i] for i in _shown(rec.recommend_many(ids, k=3, now=NOW, **FORCE_FALLBACK))} >= {"sponsored"}
    rec.edit_rules(lambda r: r.with_policy("*", {"exclude_kinds": ["sponsored"]}))
    for overrides in ({}, FORCE_FALLBACK):
        assert "sponsored" not in {kinds[i] for i in _shown(rec.recommend_many(ids, k=3, now=NOW, **overrides))}
    rec.edit_rules(lambda r: r.with_policy("*", {"exclude_kinds": None, "kinds": ["opinion"]}))
    assert {kinds[i] for i in _shown(rec.recommend_many(ids, k=3, now=NOW, **FORCE_FALLBACK))} == {"opinion"}


# ---------------------------------------------------------------- rules
def test_a_pin_takes_its_slot_in_its_window_as_an_editors_pick(rec):
    source, other = rec.ids()[0], rec.ids()[1]
    before = rec.recommend(source, k=3, now=NOW)
    pick = next(i for i in reversed(rec.ids()) if i not in {b.id for b in before} and i not in
                (source, EMBARGOED, EXPIRED, HELD))
    rec.edit_rules(lambda r: r.with_pin({"article": pick, "into": source, "slot": 2,
                                         "from": "2017-03-31", "until": "2017-04-02"}))
    box = rec.recommend(source, k=3, now=NOW)
    assert [i.id for i in box] == [before[0].id, pick, before[1].id]
    assert box[1].reasons[0] == "editor's pick" and box[1].label == "Editor's pick" and not box[1].fallback
    assert rec.recommend_many([source, other], k=3, now=NOW)[0] == box  # the same box whichever call asks
    assert pick not in {i.id for i in rec.recommend(other, k=3, now=NOW)}  # only the box it was pinned into
    for outside in (datetime(2017, 3, 30, tzinfo=timezone.utc), datetime(2017, 4, 2, tzinfo=timezone.utc)):
        assert pick not in {i.id for i in rec.recommend(source, k=3, now=outside)}
    assert pick not in {i.id for i in rec.recommend(source, k=1, now=NOW)}  # slot 2 of a box of 1


def test_a_pinned_story_shows_once(rec):
    """Ranked items of the pinned story make way (here two: one under its headline, one
    with its vector), and the box is ranked deeper to stay full."""
    source = rec.ids()[0]
    before = rec.recommend(source, k=4, now=NOW)
    vector = rec.state.index.vectors(rec.state.table.require([before[1].id]))
    copy = {"id": "pinned-copy", "title": before[0].title, "body": "Another outlet's words on it.",
            "section": "elsewhere", "published_at": "2017-03-01", "language": "en"}
    rec.add([copy], embeddings=vector)
    try:
        rec.edit_rules(lambda r: r.with_pin({"article": "pinned-copy", "into": source, "slot": 2}))
        box = rec.recommend(source, k=3, now=NOW)
        assert [i.id for i in box] == [before[2].id, "pinned-copy", before[3].id]
        assert rec.recommend_many([source, rec.ids()[1]], k=3, now=NOW)[0] == box
    finally:
        rec.remove(["pinned-copy"])


def test_pins_into_a_section_and_a_tag(rec):
    table = rec.state.table
    sections = dict(zip(rec.ids(), table.sections.tolist()))
    pick = next(i for i in rec.ids() if sections[i] == "tass")
    rec.edit_rules(lambda r: r.with_pin({"article": pick, "section": "rte"}))
    for article_id, box in zip(rec.ids(), rec.recommend_many(rec.ids(), k=2, now=NOW)):
        picked = [item.label == "Editor's pick" for item in box]
        assert picked == ([True, False] if sections[article_id] == "rte" else [False, False]), article_id
        assert not picked[0] or box[0].id == pick
    rec.edit_rules(lambda r: r.without_pins(pick).with_pin({"article": pick, "tag": "bbc-pick", "slot": 2}))
    for article_id, box in zip(rec.ids(), rec.recommend_many(rec.ids(), k=2, now=NOW)):
        picked = [item.label == "Editor's pick" for item in box]
        assert picked == ([False, True] if sections[article_id] == "bbc" else [False, False]), article_id
        assert not picked[1] or box[1].id == pick


def test_a_pin_never_brings_back_what_may_not_show(rec):
    source = next(i for i in rec.ids() if i not in (EMBARGOED, EXPIRED, HELD))
    for pick in (EMBARGOED, EXPIRED, HELD):
        rec.edit_rules(lambda r, pick=pick: r.with_pin({"article": pick, "into": source}))
    assert not {EMBARGOED, EXPIRED, HELD} & {i.id for i in rec.recommend(source, k=3, now=NOW)}
    assert rec.recommend(source, k=3, now=LATE)[0].id == EMBARGOED  # its embargo is over: the pin shows it
    assert rec.recommend(source, k=3, now=EARLY)[0].id == EXPIRED  # not expired yet
    assert EMBARGOED not in {i.id for i in rec.recommend(source, k=3, now=LATE, exclude_ids=[EMBARGOED])}
    blocked = rec.ids()[5]
    rec.edit_rules(lambda r: r.with_block({"article": blocked}))
    with pytest.raises(RuleError, match=f"pin of '{blocked}'.*contradicts the block"):
        rec.edit_rules(lambda r: r.with_pin({"article": blocked, "into": source}))


def test_a_blocked_article_never_shows_fallback_included(rec):
    ids = rec.ids()
    popular = _shown(rec.recommend_many(ids, k=3, now=NOW)).most_common(1)[0][0]
    newest = _shown(rec.recommend_many(ids, k=3, now=NOW, **FORCE_FALLBACK)).most_common(1)[0][0]
    rec.edit_rules(lambda r: r.with_block({"article": popular}).with_block({"article": newest}))
    for overrides in ({}, FORCE_FALLBACK):
        boxes = rec.recommend_many(ids, k=3, now=NOW, **overrides)
        assert not {popular, newest} & set(_shown(boxes)) and all(len(b) == 3 for b in boxes)
    rec.edit_rules(lambda r: r.without_block(popular).without_block(newest))
    source = ids[0]
    shown = rec.recommend(source, k=3, now=NOW)[0].id
    holders = [i for i, box in zip(ids, rec.recommend_many(ids, k=3, now=NOW)) if shown in {b.id for b in box}]
    rec.edit_rules(lambda r: r.with_block({"article": shown, "from": source}))
    assert shown not in {i.id for i in rec.recommend(source, k=3, now=NOW)}
    assert shown not in {i.id for i in rec.recommend(source, k=3, now=NOW, **FORCE_FALLBACK)}
    assert sum(shown in {b.id for b in box} for box in rec.recommend_many(holders, k=3, now=NOW)) == len(holders) - 1


def test_a_section_policy_sets_k_age_sections_and_half_life(rec):
    table = rec.state.table
    sections = dict(zip(rec.ids(), table.sections.tolist()))
    tass = [i for i in rec.ids() if sections[i] == "tass"]
    rec.edit_rules(lambda r: r.with_policy("tass", {"k": 4, "max_age_days": 20, "sections": ["bbc", "cnn"]}))
    for box in rec.recommend_many(tass, now=NOW):
        assert len(box) == 4 and {sections[i.id] for i in box} <= {"bbc", "cnn"}
        assert all(NOW - i.published_at <= timedelta(days=20) for i in box)
    assert len(rec.recommend(tass[0], k=2, now=NOW)) == 2  # a call that names k gets k
    other = next(i for i in rec.ids() if sections[i] == "rte")
    assert len(rec.recommend(other, now=NOW)) == 2 and not all(
        i.published_at and NOW - i.published_at <= timedelta(days=20) for i in rec.recommend(other, k=10, now=NOW))
    other = next(i for i in rec.ids() if sections[i] == "rte" and not rec.recommend(i, k=4, now=NOW)[0].fallback)
    before = rec.recommend(other, k=4, now=NOW)
    rec.edit_rules(lambda r: r.with_policy("rte", {"half_life_days": 0.5}))  # freshness counts for nothing
    after = {item.id: item.score for item in rec.recommend(other, k=4, now=NOW) if not item.fallback}
    assert after and all(after[item.id] < item.score for item in before if item.id in after)
    assert rec.recommend(other, k=4, now=NOW, half_life_days=30.0) == before  # the call's setting wins


def test_a_bad_rule_is_refused_naming_it_and_the_rules_in_force_stay(rec, index):
    rec.edit_rules(lambda r: r.with_block({"article": "x1"}))
    before = (index / "rules.json").read_bytes()
    bad = [({"article": "p", "into": "a", "section": "s"}, "exactly one of into, section, tag"),
           ({"article": "p", "into": "a", "slot": 0}, "slot=0"),
           ({"article": "p", "into": "a", "until": "2017-01-01", "from": "2017-02-01"}, "not after"),
           ({"article": "p", "into": "p"}, "its own box"),
           ({"article": "p", "tag": "t", "colour": "red"}, "unknown key")]
    for fields, words in bad:
        with pytest.raises(RuleError, match=words):
            rec.edit_rules(lambda r, fields=fields: r.with_pin(fields))
    with pytest.raises(RuleError, match=r"policies\['sport'\].*half_life_days=-1"):
        rec.edit_rules(lambda r: r.with_policy("sport", {"half_life_days": -1}))
    with pytest.raises(RuleError, match=r"^pins\[1\]: .*slot='top'"):
        Rules.from_document({"pins": [{"article": "a", "into": "b"}, {"article": "c", "into": "b", "slot": "top"}]})
    assert (index / "rules.json").read_bytes() == before and rec.state.rules.version == 1
    with pytest.raises(RulesConflictError, match="version 0.*version 1 is in force"):
        rec.edit_rules(lambda r: r.with_block({"article": "x2"}), based_on=0)
    assert rec.edit_rules(lambda r: r.with_block({"article": "x2"}), based_on=1).version == 2


def test_edits_from_two_processes_at_once_are_all_kept(rec, index):
    script = ("import sys; from similar_articles.rulesfile import RulesFile\n"
              "f = RulesFile(sys.argv[1])\n"
              "for i in range(25): f.edit(lambda r, i=i: r.with_block({'article': f'{sys.argv[2]}-{i}'}))\n")
    writers = [subprocess.Popen([sys.executable, "-c", script, str(index), name]) for name in ("a", "b")]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    rules = RulesFile(index).read()
    assert len(rules.blocks) == 50 and rules.version == 50


def test_rules_survive_a_restart_and_a_nightly_rebuild(rec, index, news100, encoder):
    source = rec.ids()[0]
    pick = next(i for i in reversed(rec.ids()) if i not in (source, EMBARGOED, EXPIRED, HELD))
    rec.edit_rules(lambda r: r.with_pin({"article": pick, "into": source}))
    script = ("import sys, json; from datetime import datetime; from similar_articles import Recommender\n"
              "rec = Recommender.load(sys.argv[1], reload_interval=None)\n"
              "print(json.dumps([i.to_dict() for i in rec.recommend(sys.argv[2], k=2, now=datetime(2017, 4, 1))]))\n")
    out = subprocess.run([sys.executable, "-c", script, str(index), source], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert json.loads(out)[0]["id"] == pick and json.loads(out)[0]["label"] == "Editor's pick"
    snapshot = rec.path
    report = run_build(_rows(news100), index, encoder=encoder, force=True)  # the nightly job, from its source
    assert report.status == "published"
    assert rec.refresh() and rec.path != snapshot
    assert rec.recommend(source, k=2, now=NOW)[0].id == pick
    assert Recommender.load(index, encoder=encoder).recommend(source, k=2, now=NOW)[0].id == pick


def test_a_rule_reaches_another_process_within_a_second(rec, index):
    source = rec.ids()[0]
    pick = next(i for i in reversed(rec.ids()) if i not in (source, EMBARGOED, EXPIRED, HELD))
    script = ("import sys, time; from datetime import datetime; from similar_articles import Recommender\n"
              "rec = Recommender.load(sys.argv[1])\n"  # the default reload_interval, as a server runs
              "print('ready', flush=True)\n"
              "while rec.recommend(sys.argv[2], k=2, now=datetime(2017, 4, 1))[0].id != sys.argv[3]:\n"
              "    time.sleep(0.01)\n"
              "print(time.time(), flush=True)\n")
    follower = subprocess.Popen([sys.executable, "-c", script, str(index), source, pick], stdout=subprocess.PIPE,
                                text=True)
    try:
        assert follower.stdout.readline().strip() == "ready"
        time.sleep(0.6)
        edited = time.time()
        rec.edit_rules(lambda r: r.with_pin({"article": pick, "into": source}))
        seen = float(follower.stdout.readline())
        assert follower.wait(timeout=10) == 0
    finally:
        follower.kill()
    assert seen - edited < 1.0, seen - edited


def test_reader_labels_and_their_translation(rec, index):
    source = rec.ids()[0]
    table = rec.state.table
    box = rec.recommend(source, k=6, now=NOW)
    published = table.published[table.require_one(source)]
    assert not box[0].fallback
    for item in (i for i in box if not i.fallback):
        assert item.label == ("Earlier coverage" if item.published_at.timestamp() < published else
                              "Latest on this story" if item.published_at.timestamp() > published else "Related")
    fallback = rec.recommend(source, k=3, now=NOW, **FORCE_FALLBACK)
    section = table.sections[table.require_one(source)]
    assert fallback[0].label == f"More from {section[:1].upper() + section[1:]}"
    assert all(not any(ch.isdigit() for ch in item.label) for item in box + fallback)
    (index / "labels.json").write_text(json.dumps({"section": "Plus de {section}", "pinned": "Notre choix"}))
    assert rec.refresh()
    assert rec.recommend(source, k=3, now=NOW, **FORCE_FALLBACK)[0].label.startswith("Plus de ")
    (index / "labels.json").write_text(json.dumps({"sections": "x"}))
    with pytest.raises(Exception, match="unknown label 'sections'"):
        rec.refresh()
    assert rec.recommend(source, k=3, now=NOW, **FORCE_FALLBACK)[0].label.startswith("Plus de ")


# ---------------------------------------------------------------- command line
def test_the_rules_command(rec, index, capsys):
    source, pick = rec.ids()[0], rec.ids()[-1]
    base = ["rules", "--index", str(index)]
    assert main(base + ["pin", pick, "--into", source, "--slot", "1", "--until", "2030-01-01"]) == 0
    assert main(base + ["block", rec.ids()[3]]) == 0
    assert main(base + ["block", rec.ids()[4], "--from", source]) == 0
    assert main(base + ["policy", "tass", "k=4", "sections=tass,bbc", "language=any", "half_life_days=3"]) == 0
    capsys.readouterr()
    assert main(base + ["list", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["version"] == 4 and document["pins"][0]["article"] == pick
    assert document["pins"][0]["until"].startswith("2030-01-01")
    assert document["blocks"] == [{"article": rec.ids()[3], "from": None}, {"article": rec.ids()[4], "from": source}]
    assert document["policies"] == {"tass": {"k": 4, "sections": ["tass", "bbc"], "language": "any",
                                             "half_life_days": 3}}
    assert main(base + ["list"]) == 0
    assert f"pin of '{pick}' into the box of '{source}' at slot 1" in capsys.readouterr().out
    assert rec.refresh() and rec.recommend(source, k=2, now=NOW)[0].id == pick
    assert main(base + ["pin", pick, "--section", "x", "--slot", "0"]) == 2
    assert "slot=0 is invalid" in capsys.readouterr().err
    assert main(base + ["unpin", "nobody"]) == 2 and "no pin of 'nobody'" in capsys.readouterr().err
    assert main(base + ["policy", "tass", "k=none"]) == 0 and main(base + ["policy", "tass", "--clear"]) == 0
    assert main(base + ["unpin", pick]) == 0 and main(base + ["unblock", rec.ids()[3]]) == 0
    assert main(base + ["unblock", rec.ids()[4], "--from", source]) == 0
    rules = RulesFile(index).read()
    assert rules.version == 9 and not rules
    history = RulesFile(index).history(2)
    assert [h["version"] for h in history] == [9, 8]
    assert history[0]["changes"] == [f"removed block of {rec.ids()[4]!r} from the box of {source!r}"]
    with pytest.raises(SystemExit):
        main(base + ["pin", pick])  # no target
    assert main(["rules", "--index", str(index / "missing"), "list"]) != 0
