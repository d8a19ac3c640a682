"""Run `similar-articles build ...` with a pause injected at one stage, so that a test
can kill the build there with SIGKILL: ``python tests/fault_build.py STAGE build ...``.

Stages: read (before any row is read), encode (the first chunk, before it is encoded),
encode#2 (the second chunk, after the first was committed to the caches), index,
candidates, gate (as each starts), write (the index file written, the manifest not),
publish (the snapshot staged, not yet renamed).
"""

import sys
import time

import similar_articles.batch.build as build
import similar_articles.batch.engine as engine
from similar_articles.cli import main
from similar_articles.index import FaissIndex


def pause(stage: str) -> None:
    print(f"fault_build: paused at {stage}", file=sys.stderr, flush=True)
    time.sleep(3600)


def main_with_pause(stage: str, argv: list[str]) -> int:
    if stage == "read":
        original_read = build.read_and_encode
        build.read_and_encode = lambda *a, **k: (pause(stage), original_read(*a, **k))[1]
    elif stage.startswith("encode"):
        nth = 2 if stage == "encode#2" else 1
        calls = [0]
        original_embed = engine.embed_articles

        def embed(*args, **kwargs):
            calls[0] += 1
            if calls[0] == nth:
                pause(stage)
            return original_embed(*args, **kwargs)

        engine.embed_articles = embed
    elif stage == "write":
        original_save = FaissIndex.save
        FaissIndex.save = lambda self, path: (original_save(self, path), pause(stage))[0]
    else:
        original_stage = build.Stages.stage

        def stage_with_pause(self, name, *args, **kwargs):
            if name == stage:
                pause(stage)
            return original_stage(self, name, *args, **kwargs)

        build.Stages.stage = stage_with_pause
    return main(argv)


if __name__ == "__main__":
    sys.exit(main_with_pause(sys.argv[1], sys.argv[2:]))
