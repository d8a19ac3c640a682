import numpy as np

from similar_articles.lexical import PAD, TERMS, LexicalModel, similarity_matrix

TEXTS = ["NATO and Russia clash over the INF missile treaty",
         "Russia denies breaching the INF treaty, NATO unconvinced",
         "Arsenal beat Tottenham in the north London derby",
         "Tottenham fans angry after derby defeat to Arsenal"]


def test_fingerprints_link_stories_that_name_the_same_things():
    model, prints = LexicalModel.fit(TEXTS)
    assert prints.ids.shape == (4, TERMS) and prints.weights.dtype == np.float16
    sims = similarity_matrix(prints)
    np.testing.assert_allclose(np.diag(sims), 1.0, atol=1e-2)
    assert sims[0, 1] > 0.3 and sims[2, 3] > 0.3
    assert sims[0, 2] == 0 and sims[1, 3] == 0


def test_unseen_text_uses_the_fitted_weights_and_unknown_text_gives_zeros():
    model, prints = LexicalModel.fit(TEXTS)
    new = model.transform(["INF treaty talks between NATO and Russia", "xylophone quartet"])
    assert (new.ids[1] == PAD).all()
    merged = prints.extend(new)
    sims = similarity_matrix(merged)
    assert sims[4, :2].min() > 0.3 and sims[4, 2:4].max() == 0 and sims[5].sum() == 0


def test_term_overlap_equals_the_dense_cosine_of_the_fingerprints():
    from similar_articles.corpora import load_news_articles

    texts = [r.get("title", "") + " " + r.get("body", "") for r in load_news_articles("news100").rows]
    model, prints = LexicalModel.fit(texts)
    dense = np.zeros((len(texts), int(prints.ids.max()) + 1), dtype=np.float64)
    for row, (ids, weights) in enumerate(zip(prints.ids, prints.weights.astype(np.float64))):
        real = ids != PAD
        dense[row, ids[real]] = weights[real]
    np.testing.assert_allclose(similarity_matrix(prints), dense @ dense.T, atol=1e-3)
