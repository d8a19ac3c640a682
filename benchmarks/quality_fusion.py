"""Exhaustive text-only scoring of every pair: the ceilings behind docs/quality.md's
"Two retrievers, one pool" (issue 26). No pool, no MMR, no freshness: each method
scores every pair and the top 2 are compared with the labels.

BBC News: precision@2 by topic. NewsArticles: event hit@2 over all labelled events and
the two halves (evaluation.event_halves), with the same-story rule the boxes obey
(cosine >= 0.92 or the same headline is the source's own story and is never shown).

    .venv/bin/python benchmarks/quality_fusion.py bbc|news
"""

from __future__ import annotations

import re
import sys

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from similar_articles import evaluation as ev
from similar_articles.datasets import load_event_labels
from similar_articles.features.lexical import N_FEATURES, LexicalModel

NAME = re.compile(r"\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*\b")  # capitalised n-grams: people, places, organisations


def fingerprint_cosines(corpus) -> np.ndarray:
    """The ranking's term overlap (cosine of the 64-term fingerprints) of every pair."""
    _, prints = LexicalModel.fit([a.text for a in corpus.articles])
    n, t = prints.ids.shape
    keep = prints.ids >= 0
    rows = np.repeat(np.arange(n), t)[keep.ravel()]
    m = sparse.csr_matrix((prints.weights.astype(np.float32)[keep], (rows, prints.ids[keep])), shape=(n, N_FEATURES))
    return (m @ m.T).toarray()


def tfidf_cosines(texts, **options) -> np.ndarray:
    base = {"stop_words": "english", "sublinear_tf": True, "min_df": 2, "max_df": 0.5}
    m = TfidfVectorizer(**{**base, **options}).fit_transform(texts)
    return (m @ m.T).toarray()


def rrf(*matrices, c: int = 60) -> np.ndarray:
    out = 0
    for m in matrices:
        m = m.copy()
        np.fill_diagonal(m, -np.inf)
        out = out + 1.0 / (c + np.argsort(np.argsort(-m, axis=1), axis=1))
    return out


def top2(scores: np.ndarray) -> np.ndarray:
    scores = scores.copy()
    np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1)[:, :2]


def main(which: str) -> None:
    corpus = ev.load_corpus(which)
    arts = corpus.articles
    cos = corpus.vectors @ corpus.vectors.T
    fp = fingerprint_cosines(corpus)
    tf = tfidf_cosines([a.text for a in arts])
    titled = tfidf_cosines([(a.title + " ") * 3 + a.body for a in arts])
    names = tfidf_cosines([" ".join(m.replace(" ", "_") for m in NAME.findall(a.title + ". " + a.body)) for a in arts],
                          lowercase=False, token_pattern=r"\S+", stop_words=None)
    methods = {"encoder": cos, "TF-IDF": tf, "fingerprints": fp, "TF-IDF, title x3": titled, "names": names,
               "rrf(encoder, fingerprints)": rrf(cos, fp), "rrf(encoder, TF-IDF)": rrf(cos, tf)}
    for w in (0.3, 0.4, 0.5, 0.6, 0.7):
        methods[f"blend encoder + fingerprints w={w}"] = (1 - w) * cos + w * fp
        methods[f"blend encoder + TF-IDF w={w}"] = (1 - w) * cos + w * tf
        methods[f"blend encoder + TF-IDF title x3 w={w}"] = (1 - w) * cos + w * titled
    for nw in (0.1, 0.2):
        methods[f"blend encoder + fingerprints w=0.4 + names {nw}"] = 0.6 * cos + 0.4 * fp + nw * names
    if which == "bbc":
        labels = np.array([corpus.labels[i] for i in corpus.ids])
        for name, scores in methods.items():
            print(f"{name:50s} P@2 {(labels[top2(scores)] == labels[:, None]).mean():.4f}")
        return
    events = load_event_labels()
    groups = ev.event_groups(events, None, corpus.ids)
    tuning, held = ev.event_halves(groups)
    keys = corpus.title_keys
    own_story = (cos >= 0.92) | ((keys[:, None] == keys[None, :]) & (keys[:, None] != 0))
    for name, scores in methods.items():
        boxes = {corpus.ids[i]: [corpus.ids[j] for j in row] for i, row in enumerate(top2(np.where(own_story, -np.inf, scores)))}
        print(f"{name:50s} hit@2 all {ev.event_recall(boxes, groups, 2)['hit_rate']:.4f} "
              f"tuning {ev.event_recall(boxes, tuning, 2)['hit_rate']:.4f} "
              f"held-out {ev.event_recall(boxes, held, 2)['hit_rate']:.4f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bbc")
