"""Per-article text features by index position: lexical fingerprints and copy sketches.
Rows of articles added since the snapshot are kept apart from the snapshot's, so a
memory-mapped base (384 B an article of fingerprints) is never read whole to append."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lexical import Fingerprints, LexicalModel


@dataclass(frozen=True)
class Rows:
    """An array's ``base`` rows and the ``tail`` rows added after them, read by position."""

    base: np.ndarray
    tail: np.ndarray

    @classmethod
    def of(cls, base: np.ndarray) -> "Rows":
        return cls(base, np.zeros((0, *base.shape[1:]), base.dtype))

    def __len__(self) -> int:
        return len(self.base) + len(self.tail)

    def take(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        if not len(self.tail):
            return self.base[positions]
        n = len(self.base)
        mine = positions >= n
        out = np.empty((*positions.shape, *self.base.shape[1:]), self.base.dtype)
        out[~mine] = self.base[positions[~mine]]
        out[mine] = self.tail[positions[mine] - n]
        return out

    def with_rows(self, rows: np.ndarray) -> "Rows":
        return Rows(self.base, np.concatenate([self.tail, rows.astype(self.base.dtype)]))


@dataclass(frozen=True)
class TextFeatures:
    """What the ranking reads of each article's text. ``lexical`` is None in an index
    built without text (vectors only), ``sketches`` None where copy sketches are off."""

    lexical: LexicalModel | None
    term_ids: Rows | None
    term_weights: Rows | None
    sketches: Rows | None
    shingles: Rows | None

    def prints(self, positions: np.ndarray) -> Fingerprints:
        return Fingerprints(self.term_ids.take(positions), self.term_weights.take(positions))

    def with_rows(self, prints: Fingerprints | None, sketches: tuple[np.ndarray, np.ndarray] | None
                  ) -> "TextFeatures":
        """These features with the rows of added articles appended."""
        return TextFeatures(
            self.lexical,
            self.term_ids.with_rows(prints.ids) if prints is not None and self.term_ids is not None else None,
            self.term_weights.with_rows(prints.weights) if prints is not None and self.term_weights is not None
            else None,
            self.sketches.with_rows(sketches[0]) if sketches is not None and self.sketches is not None else None,
            self.shingles.with_rows(sketches[1]) if sketches is not None and self.shingles is not None else None)
