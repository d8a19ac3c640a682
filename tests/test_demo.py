"""The demo a new user runs first: real corpus in, readable boxes out."""

import subprocess
import sys


def test_demo_builds_the_real_corpus_and_prints_explained_boxes(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "similar_articles.cli", "demo", "--subset", "news100",
         "--index", str(tmp_path / "index"), "--show", "3"],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "100 articles after cleaning" in out or "articles after cleaning" in out
    assert out.count("  1. ") == 3 and out.count("  2. ") == 3
    assert "similarity 0." in out and "published" in out
    assert "Traceback" not in result.stderr
