"""In-memory sources: a pandas DataFrame read in slices, or rows (dicts or Articles)
already held by the caller."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

from ..articles import Article
from .base import CHUNK_ROWS, Row, Source


class DataFrameSource(Source):
    """A pandas DataFrame, read in slices; NaN and NaT become missing values."""

    def __init__(self, frame, *, name: str = "dataframe", mapping: Mapping[str, str] | None = None,
                 chunk_rows: int = CHUNK_ROWS):
        super().__init__(mapping=mapping)
        self.frame, self.name, self.chunk_rows = frame, name, chunk_rows

    def check(self) -> None:
        self._check_columns([str(c) for c in self.frame.columns])

    def _rows(self) -> Iterator[Row]:
        self.check()
        frame = self.frame
        number = 0
        for start in range(0, len(frame), self.chunk_rows):
            part = frame.iloc[start:start + self.chunk_rows]
            part = part.astype(object).where(part.notna(), None)  # NaT would pass as a datetime
            for row in part.to_dict("records"):
                number += 1
                yield number, {str(k): v for k, v in row.items()}


class RowsSource(Source):
    """Dicts (or Articles) already in memory, e.g. from an API client."""

    def __init__(self, rows: Iterable[Mapping[str, Any] | Article], *, name: str = "rows",
                 mapping: Mapping[str, str] | None = None):
        super().__init__(mapping=mapping)
        self._items, self.name = rows, name

    def _rows(self) -> Iterator[Row]:
        for number, row in enumerate(self._items, start=1):
            if isinstance(row, Article):
                row = {**row.to_metadata(), "body": row.body, "tags": list(row.tags)}
            yield number, dict(row) if isinstance(row, Mapping) else row
