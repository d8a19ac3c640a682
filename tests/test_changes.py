"""Changed boxes: after adds, replacements and removals, the boxes reported as changed
are exactly those that a recomputation of every box before and after finds changed,
on the real News100 corpus with the real model and FAISS; an Update still acts as the
count; updates followed from another process are reported there too; the CLI prints
them; export --changed rewrites exactly those files."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from similar_articles import Recommender
from similar_articles.changes import CHANGES_FILE, Update
from similar_articles.tracking import ChangeTracker

NOW = datetime(2017, 6, 1, tzinfo=timezone.utc)


@pytest.fixture
def rec(tmp_path, news100, news100_vectors, encoder):
    built = Recommender.build(news100, tmp_path / "index", embeddings=news100_vectors, encoder=encoder)
    return built.track_changes(k=2, now=NOW)


def every_box(rec, k=2) -> dict[str, list]:
    """Brute force: every live article's box, as a reader sees it."""
    ids = rec.ids()
    return {i: [(x.id, x.title, x.url, x.fallback) for x in box]
            for i, box in zip(ids, rec.recommend_many(ids, k=k, now=NOW))}


def assert_reported_exactly(rec, change, k=2):
    before = every_box(rec, k)
    update = change()
    after = every_box(rec, k)
    report = update.changed
    assert report.complete  # every box the searches' bound left open was scored
    truth = {i for i in before if i in after and before[i] != after[i]}
    assert set(report.boxes) == truth - set(report.replaced)
    assert set(report.added) == set(after) - set(before)
    assert set(report.removed) == set(before) - set(after)
    return update


def new_row(rows, i, j, day, tag="new"):
    """A new article: one article's headline over another's body, published ``day``."""
    return {"id": f"{tag}-{i}-{j}", "title": f"{rows[i]['title']} (follow-up)", "body": rows[j]["body"],
            "section": rows[i].get("section"), "published_at": day.isoformat()}


def test_reported_boxes_are_the_boxes_that_changed(rec, news100):
    """Adds (recent, in a fallback window, and old), replacements, removals of a much
    shown article and of an added one, one at a time and several at once: the report
    equals the recomputed difference each time, never missing a box nor adding one."""
    rng = np.random.default_rng(7)
    shown = {}
    for box in every_box(rec).values():
        for item in box:
            shown[item[0]] = shown.get(item[0], 0) + 1
    hub = max(shown, key=shown.get)
    steps = [
        lambda: rec.add([new_row(news100, 3, 3, NOW - timedelta(days=1))]),  # a recent follow-up
        lambda: rec.add([new_row(news100, 10, 11, datetime(2016, 1, 1, tzinfo=timezone.utc))]),  # an old one
        lambda: rec.remove([hub]),
        lambda: rec.add([{**news100[20], "title": "Updated: " + news100[20]["title"], "body": news100[40]["body"]}]),
        lambda: rec.remove([news100[50]["id"], "new-3-3"]),
        lambda: rec.add([new_row(news100, i, int(rng.integers(100)), NOW - timedelta(days=int(rng.integers(1, 200))))
                         for i in rng.choice(100, 8, replace=False)]),
        lambda: rec.add([{**news100[60], "title": news100[61]["title"], "body": news100[61]["body"]}]),
        lambda: rec.remove([news100[i]["id"] for i in rng.choice(100, 5, replace=False)]),
    ]
    reported = 0
    for step in steps:
        reported += len(assert_reported_exactly(rec, step).changed.boxes)
    assert reported > 10  # the updates did change other boxes


def test_an_update_is_still_the_count(tmp_path, news100, news100_vectors, encoder):
    """What add and remove returned before (an int) still works: it compares, adds and
    serialises as the count; without tracking there are no changed boxes to give."""
    rec = Recommender.build(news100[:30], tmp_path / "index", embeddings=news100_vectors[:30], encoder=encoder)
    added = rec.add([new_row(news100, 1, 2, NOW)])
    assert isinstance(added, int) and isinstance(added, Update)
    assert added == 1 and added + 1 == 2 and json.dumps({"added": added}) == '{"added": 1}'
    assert added.changed is None and added.seq == 1
    removed = rec.track_changes(now=NOW).remove(["nothing-like-this", news100[0]["id"]])
    assert removed == 1 and removed.seq == 2 and removed.changed.removed == (news100[0]["id"],)
    assert rec.add([]) == 0


def test_updates_followed_from_another_process_are_reported_there(rec, news100, encoder):
    """A second recommender of the index (another worker) applies the update from the
    journal and reports the same boxes; only the writer logs it for the export."""
    other = Recommender.load(rec.root, encoder=encoder, reload_interval=None).track_changes(now=NOW)
    update = rec.add([new_row(news100, 5, 6, NOW - timedelta(days=2))])
    assert other.refresh()
    followed = other.changed_boxes()[-1]
    assert followed.seq == update.seq and set(followed.boxes) == set(update.changed.boxes)
    assert followed.added == update.changed.added == ("new-5-6",)
    lines = (rec.root / CHANGES_FILE).read_text().splitlines()
    assert [json.loads(line)["live_update"] for line in lines] == [update.seq]


def test_a_reload_ranks_every_box_without_holding_back_writes(tmp_path, news100, news100_vectors, encoder,
                                                             monkeypatch):
    """After a nightly build the serving process ranks the new snapshot's boxes (~25 s a
    million articles) while adds go on; its map then follows what they did, so the
    boxes showing an article added meanwhile are reported when it goes."""
    index = tmp_path / "index"
    rec = Recommender.build(news100[:90], index, embeddings=news100_vectors[:90], encoder=encoder)
    rec.track_changes(now=NOW)
    Recommender.build(news100, index, embeddings=news100_vectors, encoder=encoder)  # the nightly build
    ranking, release = threading.Event(), threading.Event()
    rank_all = ChangeTracker.rank_all

    def held(tracker, state):
        ranking.set()
        assert release.wait(60)
        return rank_all(tracker, state)

    monkeypatch.setattr(ChangeTracker, "rank_all", held)
    reload = threading.Thread(target=rec.reload)
    reload.start()
    assert ranking.wait(60)
    added = []
    write = threading.Thread(target=lambda: added.append(rec.add([new_row(news100, 3, 4, NOW - timedelta(days=1))])))
    write.start()
    write.join(20)
    assert added and added[0] == 1, "the add waited for the reload's ranking"
    release.set()
    reload.join(60)
    monkeypatch.undo()
    assert len(rec) == 101 and "new-3-4" in rec  # the new snapshot, with the add made meanwhile
    assert any(item[0] == "new-3-4" for box in every_box(rec).values() for item in box)  # boxes show it
    removal = assert_reported_exactly(rec, lambda: rec.remove(["new-3-4"]))
    assert removal.changed.boxes  # the boxes that showed it, known to the map that followed the add
    assert_reported_exactly(rec, lambda: rec.add([new_row(news100, 5, 6, NOW - timedelta(days=2))]))


def test_a_box_of_another_size_is_compared_at_that_size(tmp_path, news100, news100_vectors, encoder):
    rec = Recommender.build(news100, tmp_path / "index", embeddings=news100_vectors, encoder=encoder)
    rec.track_changes(k=5, now=NOW)
    assert_reported_exactly(rec, lambda: rec.add([new_row(news100, 7, 8, NOW - timedelta(days=3))]), k=5)
    assert_reported_exactly(rec, lambda: rec.remove([news100[9]["id"]]), k=5)


def test_the_cli_prints_changed_boxes_as_json_lines(tmp_path, news100, news100_vectors, encoder, capsys):
    """add reads files as build does (a bad row is skipped and named), remove takes
    ids; both print one JSON line a changed box."""
    from similar_articles.cli import main

    index = tmp_path / "index"
    Recommender.build(news100, index, embeddings=news100_vectors, encoder=encoder)
    source = tmp_path / "new.jsonl"
    source.write_text(json.dumps(new_row(news100, 3, 3, NOW - timedelta(days=1))) + "\n"
                      + json.dumps({"id": "empty", "published_at": "2017-05-01"}) + "\n", encoding="utf-8")
    before = every_box(Recommender.load(index, encoder=encoder, reload_interval=None))
    assert main(["add", "--index", str(index), str(source), "--now", NOW.isoformat()]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert "row 2" in err and "empty" in err  # the bad row, named
    after = every_box(Recommender.load(index, encoder=encoder, reload_interval=None))
    assert {r["id"] for r in records if r["change"] == "box"} == {i for i in before if i in after and before[i] != after[i]}
    assert {"id": "new-3-3", "change": "added", "live_update": 1} in records

    assert main(["remove", "--index", str(index), "new-3-3", "--now", NOW.isoformat()]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {"id": "new-3-3", "change": "removed", "live_update": 2} in records
    assert {r["id"] for r in records if r["change"] == "box"} == {i for i in before if i in after and after[i] != before[i]}
    assert main(["remove", "--index", str(index), "no-such-id"]) == 2
    assert "no-such-id" in capsys.readouterr().err


def test_export_changed_rewrites_exactly_the_changed_boxes(tmp_path, news100, news100_vectors, encoder, capsys):
    """A per-article folder, then live updates through the CLI, then export --changed:
    the files rewritten are the changed boxes, a removed article's file is gone, and
    the folder equals a full export. Without a record of the updates, every box."""
    from similar_articles.cli import main

    index, out, full = tmp_path / "index", tmp_path / "boxes", tmp_path / "full"
    Recommender.build(news100, index, embeddings=news100_vectors, encoder=encoder)
    export = ["export", "--index", str(index), "--layout", "per-article", "--now", NOW.isoformat()]
    assert main([*export, "--out", str(out), "--changed"]) == 0  # a first export: every box
    assert "100 boxes ranked" in capsys.readouterr().err
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("[!.]*.json")}

    source = tmp_path / "new.jsonl"
    source.write_text(json.dumps(new_row(news100, 3, 3, NOW - timedelta(days=1))) + "\n", encoding="utf-8")
    assert main(["add", "--index", str(index), str(source), "--now", NOW.isoformat()]) == 0
    victim = news100[12]["id"]
    assert main(["remove", "--index", str(index), victim, "--now", NOW.isoformat()]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rewritten = {f"{r['id']}.json" for r in records if r["change"] != "removed"} - {f"{victim}.json"}

    assert main([*export, "--out", str(out), "--changed"]) == 0
    assert f"{len(rewritten)} boxes changed since the last export ranked" in capsys.readouterr().err
    now_stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("[!.]*.json")}
    touched = {name for name, stamp in now_stamps.items() if stamps.get(name) != stamp}
    assert touched == rewritten and f"{victim}.json" not in now_stamps
    assert main([*export, "--out", str(full)]) == 0
    assert {p.name: p.read_bytes() for p in full.glob("[!.]*.json")} == \
        {p.name: p.read_bytes() for p in out.glob("[!.]*.json")}

    # An update made without tracking leaves a gap: every box is ranked again.
    Recommender.load(index, encoder=encoder, reload_interval=None).remove([news100[13]["id"]])
    capsys.readouterr()
    assert main([*export, "--out", str(out), "--changed"]) == 0
    assert "99 boxes ranked for" in capsys.readouterr().err

    # A rules edit made without tracking (a block changes boxes no update named):
    # every box is ranked, and the block shows in the files.
    blocked = news100[20]["id"]
    assert main(["rules", "--index", str(index), "block", blocked]) == 0
    assert main([*export, "--out", str(out), "--changed"]) == 0  # a tracked-changes mark, then the rule
    assert "99 boxes ranked for" in capsys.readouterr().err
    shown = {item["id"] for path in out.glob("[!.]*.json") for item in json.loads(path.read_text())["box"]}
    assert shown and blocked not in shown

    # A rules edit made with --changed is logged: the next export ranks only its boxes.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("[!.]*.json")}
    pin = ["rules", "--index", str(index), "pin", news100[30]["id"], "--section", "rte", "--changed", "--now", NOW.isoformat()]
    assert main(pin) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records and all(r["change"] == "box" and r["rules"] == 2 for r in records)
    assert main([*export, "--out", str(out), "--changed"]) == 0
    assert f"{len(records)} boxes changed since the last export ranked" in capsys.readouterr().err
    touched = {p.name for p in out.glob("[!.]*.json") if stamps.get(p.name) != p.stat().st_mtime_ns}
    assert touched == {f"{r['id']}.json" for r in records}
    assert main([*export, "--out", str(full)]) == 0
    assert {p.name: p.read_bytes() for p in full.glob("[!.]*.json")} == \
        {p.name: p.read_bytes() for p in out.glob("[!.]*.json")}


def test_an_added_article_changes_only_the_boxes_that_show_it(rec, news100):
    """An article added since the build joins every pool beside the build's list; it
    never pushes a list member (a lexical find may be far by cosine) out of one: a box
    that does not show a newcomer stays as it was (old newcomers: no fallback moves)."""
    old = datetime(2015, 1, 1, tzinfo=timezone.utc)
    before = every_box(rec)
    update = rec.add([new_row(news100, i, (i * 7) % 100, old - timedelta(days=i), tag="old") for i in range(0, 100, 4)])
    after = every_box(rec)
    added = set(update.changed.added)
    showing = {i for i in before if {item[0] for item in after[i]} & added}
    assert {i for i in before if before[i] != after[i]} == showing == set(update.changed.boxes)


# ------------------------------------------------------------------ rules edits
@pytest.fixture
def ruled(tmp_path, news100, news100_vectors, encoder):
    """News100 with tags and kinds for rules to aim at, tracking changes."""
    rows = [dict(r, tags=["uk"] if r["section"] == "bbc" else [],
                 kind="opinion" if r["section"] == "huffingtonpost" else "news") for r in news100]
    built = Recommender.build(rows, tmp_path / "index", embeddings=news100_vectors, encoder=encoder)
    return built.track_changes(k=2, now=NOW)


def assert_edit_reported_exactly(rec, change) -> set:
    """A rules edit's report (the last one) equals the boxes that changed."""
    before, version = every_box(rec), rec.state.rules.version
    rec.edit_rules(change)
    after = every_box(rec)
    report = rec.changed_boxes()[-1]
    assert report.rules == (version, version + 1) and report.complete and not report.added
    truth = {i for i in before if before[i] != after[i]}
    assert set(report.boxes) == truth
    return truth


def most_shown(rec) -> str:
    shown = {}
    for box in every_box(rec).values():
        for item in box:
            shown[item[0]] = shown.get(item[0], 0) + 1
    return max(shown, key=shown.get)


def test_rule_edits_report_the_boxes_they_changed(ruled):
    """Pins (into a box, a section, a tag; moved; removed), blocks (everywhere, from
    one box, lifted) and policies (a section's, the default, removed): each edit's
    report equals the recomputed difference of every box."""
    rec, ids = ruled, ruled.ids()
    hub = most_shown(rec)
    host = next(i for i, box in every_box(rec).items() if box and box[0][0] != hub and i != hub)
    shown_in_host = every_box(rec)[host][0][0]
    a, b, c = [i for i in ids if i not in (host, hub, shown_in_host)][:3]
    sizes = [
        assert_edit_reported_exactly(rec, lambda r: r.with_pin({"article": a, "into": host})),
        assert_edit_reported_exactly(rec, lambda r: r.with_pin({"article": a, "into": host, "slot": 2})),
        assert_edit_reported_exactly(rec, lambda r: r.with_pin({"article": b, "section": "rte"})),
        assert_edit_reported_exactly(rec, lambda r: r.with_pin({"article": c, "tag": "uk", "slot": 2})),
        assert_edit_reported_exactly(rec, lambda r: r.without_pins(b)),
        assert_edit_reported_exactly(rec, lambda r: r.with_block({"article": hub})),
        assert_edit_reported_exactly(rec, lambda r: r.with_block({"article": shown_in_host, "from": host})),
        assert_edit_reported_exactly(rec, lambda r: r.without_block(hub)),
        assert_edit_reported_exactly(rec, lambda r: r.with_policy("bbc", {"half_life_days": 0.5, "max_age_days": 60})),
        assert_edit_reported_exactly(rec, lambda r: r.with_policy("cnn", {"exclude_kinds": ["opinion"]})),
        assert_edit_reported_exactly(rec, lambda r: r.with_policy("*", {"sections": ["bbc", "cnn", "rte"]})),
        assert_edit_reported_exactly(rec, lambda r: r.without_policy("*")),
        assert_edit_reported_exactly(rec, lambda r: r.without_pins(a).without_pins(c)),
    ]
    assert all(sizes[:8]) and sum(map(len, sizes)) > 100  # every pin and block edit changed boxes


def test_article_updates_under_rules_are_reported_exactly(ruled, news100):
    """With pins, blocks and policies in force, adds and removals report the boxes as
    they are served: a newcomer filling a blocked article's place, or a policy's box."""
    rec = ruled
    hub = most_shown(rec)
    rec.edit_rules(lambda r: r.with_block({"article": hub}).with_pin({"article": news100[5]["id"], "section": "bbc"})
                   .with_policy("cnn", {"half_life_days": 1, "exclude_kinds": ["opinion"]})
                   .with_policy("*", {"half_life_days": 30})
                   .with_pin({"article": "new-40-41", "section": "rte", "slot": 2}))  # not in the index yet
    rng = np.random.default_rng(11)
    steps = [
        lambda: rec.add([new_row(news100, 3, 3, NOW - timedelta(days=1))]),
        lambda: rec.add([dict(new_row(news100, 30, 31, NOW - timedelta(hours=5)), kind="opinion")]),
        lambda: rec.remove([news100[5]["id"]]),  # the pinned article
        lambda: rec.add([new_row(news100, 40, 41, datetime(2016, 1, 1, tzinfo=timezone.utc))]),  # now it is
        lambda: rec.add([new_row(news100, i, int(rng.integers(100)), NOW - timedelta(days=int(rng.integers(1, 90))))
                         for i in rng.choice(100, 6, replace=False)]),
        lambda: rec.remove([news100[i]["id"] for i in rng.choice(100, 4, replace=False)]),
    ]
    assert sum(len(assert_reported_exactly(rec, step).changed.boxes) for step in steps) > 5


def test_edits_reaching_many_boxes_are_ranked_a_block_at_a_time(ruled, news100, monkeypatch):
    """A policy edit or an add reaching more boxes than a block holds ranks them block by
    block (at 1M one block of every box took 17.8 GiB): the reports stay exact."""
    monkeypatch.setattr("similar_articles.tracking.BLOCK", 8)
    rec = ruled.track_changes(k=2, now=NOW)  # the map of every box, 8 at a time on every core
    assert_edit_reported_exactly(rec, lambda r: r.with_policy("*", {"half_life_days": 2}))  # every box a suspect
    assert len(assert_edit_reported_exactly(rec, lambda r: r.with_policy("*", {"sections": ["bbc", "cnn"]}))) > 16
    rows = [new_row(news100, i, i, NOW - timedelta(hours=i)) for i in range(20)]
    assert len(assert_reported_exactly(rec, lambda: rec.add(rows)).changed.added) == 20


def test_the_changes_log_keeps_its_newer_half_past_its_limit(tmp_path, monkeypatch):
    """changes.jsonl never grows without end: past its limit it is cut to whole lines
    of its newer half; an export whose updates were cut away finds the gap and ranks
    every box instead of trusting a partial list."""
    from similar_articles import changes
    from similar_articles.changes import ChangedBoxes, append_changes, read_changes, recent_changes

    monkeypatch.setattr(changes, "CHANGES_MAX_BYTES", 4000)
    log = tmp_path / CHANGES_FILE
    for seq in range(1, 201):
        append_changes(log, ChangedBoxes(seq, 2, "v1", boxes=(f"a{seq}", f"b{seq}")))
        assert log.stat().st_size <= 4000
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    seqs = [line["live_update"] for line in lines]
    assert seqs == list(range(seqs[0], 201)) and 10 < len(seqs) < 200
    assert [r["live_update"] for r in recent_changes(log, 3)] == [200, 199, 198]
    assert read_changes(log, seqs[0] - 1, 200, "v1", 2) == ({f"{p}{s}" for s in seqs for p in "ab"}, set())
    assert read_changes(log, seqs[0] - 2, 200, "v1", 2) is None  # one update is gone: not trusted
