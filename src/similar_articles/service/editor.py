"""The editors' page, ``/editor``: find an article by title or id, see its box with
scores, reasons, labels and fallback marks, pin into it or block from it, and read the
rules that shape it, the last rule changes and the boxes changed lately. Server-rendered HTML with a little
JavaScript and no build step; usable on a phone. ``/editor?id=ID`` opens one article
(a link from the CMS). Changes go through the token-guarded rules routes
(rules_routes.py): the token is typed once and kept in the browser's localStorage.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from ..changes import CHANGES_FILE, recent_changes
from ..recommender import Recommender
from ..rules import DEFAULT_POLICY
from ..rulesfile import RulesFile

SEARCH_LIMIT = 20
CHANGED_SHOWN = 8  # changed boxes listed a report (the rest are counted)


def install(app: FastAPI, rec: Callable[[], Recommender], index: Path) -> None:
    """Add ``GET /editor`` to ``app``."""
    files = RulesFile(index)

    @app.get("/editor", summary="The editors' page (HTML): find an article, see its box, pin and block")
    async def editor(request: Request) -> Response:
        query = request.query_params
        status, page = await run_in_threadpool(render, rec(), files, query.get("q", ""), query.get("id"),
                                               query.get("after"), query.get("k"), index / CHANGES_FILE)
        return Response(page, status_code=status, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store"})


def render(rec: Recommender, files: RulesFile, q: str, article_id: str | None, after: str | None,
           k: str | None, changes_log: Path) -> tuple[int, str]:
    """(status, HTML) of the page for a search ``q`` and/or an article."""
    if after and after.isdigit() and rec.state.rules.version < int(after):
        rec.refresh()  # the change this page just made, if another worker took it
    state = rec.state
    parts, status = [], 200
    q = q.strip()[:200]
    if q:
        parts.append(_results(state, q))
    if article_id:
        position = state.table.position_of(article_id)
        if position is None:
            status = 404
            parts.append(f'<p class="error">No article {escape(repr(article_id))} in the index.</p>')
        else:
            size = int(k) if k and k.isdigit() and 1 <= int(k) <= 20 else None
            parts.append(_article(rec, state, position, size))
    parts.append(_history(files.history(15)))
    parts.append(_changes(recent_changes(changes_log), state.table))
    return status, _page(escape(q), "\n".join(parts), state.rules.version, escape(str(state.manifest.get("version"))))


def _results(state, q: str) -> str:
    table, needle = state.table, q.casefold()
    found = []
    exact = table.position_of(q)
    if exact is not None:
        found.append(exact)
    titles, alive = table.titles, table.alive
    for position in table.recent_order.tolist():  # newest first
        if alive[position] and position != exact and needle in (titles[position] or "").casefold():
            found.append(position)
            if len(found) == SEARCH_LIMIT:
                break
    if not found:
        return f'<section><h2>Search</h2><p>No article has {escape(repr(q))} in its title or id.</p></section>'
    items = "".join(
        f'<li><a href="/editor?{urlencode({"id": table.ids[p]})}">{escape(table.titles[p] or table.ids[p])}</a>'
        f'<small>{escape(table.ids[p])} · {escape(table.sections[p] or "no section")} · {_date(table.published[p])}'
        f'</small></li>' for p in found)
    return f'<section><h2>Search</h2><ol id="results" class="results">{items}</ol></section>'


def _article(rec: Recommender, state, position: int, size: int | None) -> str:
    table, rules = state.table, state.rules
    article_id = table.ids[position]
    facts = [f"id {escape(article_id)}", escape(table.sections[position] or "no section"),
             _date(table.published[position])]
    for name, names, codes in (("kind", table.kind_names, table.kind_codes),
                               ("language", table.language_names, table.language_codes)):
        if codes is not None and codes[position] >= 0:
            facts.append(f"{name} {escape(names[codes[position]])}")
    flags = []
    if table.held is not None and table.held[position]:
        flags.append("do not recommend")
    for name, values in (("embargoed until", table.embargo), ("expires", table.expires)):
        if values is not None and not math.isnan(values[position]):
            flags.append(f"{name} {_date(values[position], time=True)}")
    if any(b.article == article_id and b.source is None for b in rules.blocks):
        flags.append("blocked everywhere")
    box = rec.recommend(article_id, k=size)
    items = "".join(_item(article_id, rank, item) for rank, item in enumerate(box, start=1))
    shown_flags = f'<p class="flags">{escape(", ".join(flags))}</p>' if flags else ""
    return f"""<section id="article" data-id="{escape(article_id)}">
<h2>{escape(table.titles[position] or article_id)}</h2>
<p class="facts">{" · ".join(facts)}</p>{shown_flags}
<h3>Its box</h3>
<ol id="box" class="box">{items or '<li>The box is empty.</li>'}</ol>
<form id="pin-form" data-into="{escape(article_id)}">
<label>Pin article id <input name="article" required autocomplete="off" placeholder="id"></label>
<label>at slot <input name="slot" type="number" min="1" max="100" value="1"></label>
<label>until <input name="until" type="datetime-local"></label>
<button type="submit">Pin into this box</button>
</form>
{_rules_for(state, position)}
</section>"""


def _item(source: str, rank: int, item) -> str:
    kind = "pinned" if item.label == "Editor's pick" and "editor's pick" in item.reasons else \
        "fallback" if item.fallback else "related"
    block_here = _button("Hide in this box", "POST", "/v1/rules/blocks", {"article": item.id, "from": source})
    block = _button("Block everywhere", "POST", "/v1/rules/blocks", {"article": item.id})
    return (f'<li class="item {kind}" data-id="{escape(item.id)}"><span class="rank">{rank}</span>'
            f'<div class="what"><a href="/editor?{urlencode({"id": item.id})}">{escape(item.title or item.id)}</a>'
            f' <span class="label">{escape(item.label)}</span>'
            f'<small>{escape(item.id)} · {escape(item.section or "no section")} · {_date(item.published_at)} · '
            f'score {item.score:.3f} · similarity {item.similarity:.3f}'
            f'{" · fallback" if item.fallback else ""}</small>'
            f'<small class="reasons">{escape("; ".join(item.reasons))}</small></div>'
            f'<div class="actions">{block_here}{block}</div></li>')


def _rules_for(state, position: int) -> str:
    """The rules that shape this article's box, each with the button that removes it."""
    table, rules = state.table, state.rules
    article_id, section = table.ids[position], table.sections[position]
    tags = set(table.tags_of(position))
    lines = []
    for pin in rules.pins:
        name, value = pin.target
        if (name, value) in (("into", article_id), ("section", section)) or (name == "tag" and value in tags):
            note = "" if table.position_of(pin.article) is not None else " (not in the index: not shown)"
            window = "".join(f" {w} {when:%Y-%m-%d %H:%M} UTC" for w, when in (("from", pin.start),
                                                                            ("until", pin.until)) if when)
            lines.append(f"{escape(pin.describe())} at slot {pin.slot}{window}{note}"
                         + _button("Unpin", "DELETE", f"/v1/rules/pins/{quote(pin.article, safe='')}?"
                                   + urlencode({name: value})))
    for block in rules.blocks:
        if block.source == article_id or (block.article == article_id and block.source is None):
            lines.append(escape(block.describe()) + _button(
                "Unblock", "DELETE", f"/v1/rules/blocks/{quote(block.article, safe='')}"
                + (f"?{urlencode({'from': block.source})}" if block.source else "")))
    if not any(b.article == article_id and b.source is None for b in rules.blocks):
        lines.append("this article shows in boxes" + _button("Block it everywhere", "POST", "/v1/rules/blocks",
                                                             {"article": article_id}))
    policy = rules.policies.get(section or "", rules.policies.get(DEFAULT_POLICY))
    named = section if section in rules.policies else DEFAULT_POLICY
    lines.append(f"policy ({escape(named)}): " + (escape(", ".join(f"{k}={v}" for k, v in policy.items()))
                                                  if policy else "none"))
    return '<h3>Rules of this box</h3><ul id="rules" class="rules">' + "".join(f"<li>{line}</li>" for line in lines) \
        + "</ul>"


def _history(entries: list[dict]) -> str:
    if not entries:
        return '<section><h3>Recent rule changes</h3><p>None yet.</p></section>'
    items = "".join(f'<li><small>version {e.get("version")} · {escape(str(e.get("at", ""))[:19])}</small> '
                    f'{escape("; ".join(e.get("changes") or ["no change"]))}</li>' for e in entries)
    return f'<section><h3>Recent rule changes</h3><ol id="history" class="history">{items}</ol></section>'


def _changes(reports: list[dict], table) -> str:
    """The latest changed-box reports: what changed them, when, and links to the boxes."""
    if not reports:
        return ('<section><h3>Recently changed boxes</h3><p>None recorded. Processes that track changes record '
                'them: <code>serve --track-changes</code> (or <code>--webhook</code>), <code>add</code>, '
                '<code>remove</code>, <code>rules … --changed</code>.</p></section>')
    items = []
    for report in reports:
        cause = f'rules version {report["rules"]["to"]}' if report.get("rules") else \
            f'live update {report.get("live_update")}'
        boxes = [b["id"] for b in report.get("boxes", []) if b.get("change") == "box"]
        links = "".join(f'<a href="/editor?{urlencode({"id": i})}">{escape(_title(table, i))}</a>'
                        for i in boxes[:CHANGED_SHOWN])
        more = f"<span>and {len(boxes) - CHANGED_SHOWN} more</span>" if len(boxes) > CHANGED_SHOWN else ""
        items.append(f'<li><small>{escape(cause)} · {escape(str(report.get("at", ""))[:19])} · {len(boxes)} '
                     f'{"box" if len(boxes) == 1 else "boxes"} changed</small><span class="links">{links}{more}</span></li>')
    return f'<section><h3>Recently changed boxes</h3><ol id="changes" class="history">{"".join(items)}</ol></section>'


def _title(table, article_id: str) -> str:
    position = table.position_of(article_id)
    return (table.titles[position] if position is not None else None) or article_id


def _button(text: str, method: str, url: str, body: dict | None = None) -> str:
    data = f' data-body="{escape(json.dumps(body))}"' if body is not None else ""
    return f'<button type="button" data-method="{method}" data-url="{escape(url)}"{data}>{escape(text)}</button>'


def _date(value, *, time: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "undated"
    when = value if isinstance(value, datetime) else datetime.fromtimestamp(value, timezone.utc)
    return f"{when:%Y-%m-%d %H:%M} UTC" if time else f"{when:%Y-%m-%d}"


STYLE = """
body{font:16px/1.4 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:.5rem 1rem;color:#222}
header{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;justify-content:space-between}
h1{font-size:1.2rem;margin:.3rem 0}h2{font-size:1.15rem;margin:.8rem 0 .2rem}h3{font-size:1rem;margin:1rem 0 .3rem}
form{display:flex;flex-wrap:wrap;gap:.4rem;align-items:center}input{font:inherit;padding:.3rem;max-width:100%}
input[name=q]{flex:1 1 12rem}button{font:inherit;padding:.3rem .6rem;cursor:pointer}
ol,ul{padding-left:0;list-style:none}small{display:block;color:#666;overflow-wrap:anywhere}
.results li,.rules li,.history li{padding:.3rem 0;border-bottom:1px solid #eee}
.item{display:flex;flex-wrap:wrap;gap:.5rem;padding:.5rem;margin:.3rem 0;border:1px solid #ddd;border-radius:6px}
.item .what{flex:1 1 16rem;min-width:0}.item .rank{font-weight:bold;width:1.5rem}
.item.pinned{border-color:#2a7;background:#f2fbf6}.item.fallback{border-style:dashed;background:#fafafa}
.label{font-size:.8rem;background:#eef;padding:0 .3rem;border-radius:3px;white-space:nowrap}
.actions{display:flex;gap:.3rem;flex-wrap:wrap;align-items:flex-start}
.links a{margin-right:.8rem}.flags,.error{color:#a00}#status{min-height:1.4em}#status.error{color:#a00}.rules button{margin-left:.5rem}
"""

def _page(q: str, body: str, version: int, snapshot: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Similar articles: editors</title><style>{STYLE}</style></head>
<body><header><h1>Similar articles</h1>
<label>Token <input id="token" type="password" autocomplete="off" placeholder="for changes"></label></header>
<form method="get" action="/editor" role="search"><input name="q" value="{q}" placeholder="Title or id">
<button type="submit">Find</button></form>
<p id="status" role="status"></p>
<main>{body}</main>
<footer><small>snapshot {snapshot} · rules version {version}</small></footer>
<script>{SCRIPT}</script></body></html>
"""


SCRIPT = """
(() => {
  const token = document.getElementById('token'), status = document.getElementById('status');
  token.value = localStorage.getItem('similar-articles-token') || '';
  token.addEventListener('input', () => localStorage.setItem('similar-articles-token', token.value));
  async function send(method, url, body) {
    status.className = ''; status.textContent = 'Saving…';
    let response, data = {};
    try {
      response = await fetch(url, {method, body: body === undefined ? undefined : JSON.stringify(body),
        headers: {'Authorization': 'Bearer ' + token.value, 'Content-Type': 'application/json'}});
      data = await response.json();
    } catch (error) { if (!response) { status.className = 'error'; status.textContent = 'Not sent: ' + error; return; } }
    if (!response.ok) {
      status.className = 'error'; status.textContent = (data.title || response.status) + ': ' + (data.detail || '');
      return;
    }
    const next = new URL(location.href);
    next.searchParams.set('after', data.version);
    location.assign(next);
  }
  document.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-url]');
    if (!button) return;
    send(button.dataset.method, button.dataset.url, button.dataset.body ? JSON.parse(button.dataset.body) : undefined);
  });
  const form = document.getElementById('pin-form');
  if (form) form.addEventListener('submit', (event) => {
    event.preventDefault();
    const fields = new FormData(form), until = fields.get('until');
    send('POST', '/v1/rules/pins', {article: fields.get('article').trim(), into: form.dataset.into,
      slot: Number(fields.get('slot')) || 1, until: until ? new Date(until).toISOString() : null});
  });
})();
"""
