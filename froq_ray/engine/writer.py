"""Driver-side assembly of scored rows into deterministic, completion-marked output shards.

Rows carry their global ``row`` index and ``shard`` index from the listing. The assembler buffers rows per
shard and writes a shard (Parquet, then its completion marker) as soon as all of its rows have arrived, sorted
by row index, so a shard's content never depends on the order in which Ray delivered batches. A shard that
receives a row twice, or a run that ends with rows missing, is an error: every input yields exactly one row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..storage.shards import Shard


@dataclass
class ShardResult:
    shard: Shard
    counts: dict[str, int]
    quality: np.ndarray


class IncompleteRunError(RuntimeError):
    pass


def _concat_parts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate batches column by column. A batch in which no row could be scored carries no result columns
    (quality, embedding, ...): its rows get NaN there, shaped like the batches that have them."""
    columns = {}
    for key in dict.fromkeys(k for p in parts for k in p):
        template = next(p[key] for p in parts if key in p)
        filled = [p[key] if key in p else _missing(template, len(next(iter(p.values())))) for p in parts]
        columns[key] = np.concatenate(filled)
    return columns


def _missing(template: np.ndarray, n: int) -> np.ndarray:
    if template.dtype.kind == "f":
        return np.full((n,) + template.shape[1:], np.nan, dtype=template.dtype)
    return np.full((n,) + template.shape[1:], None, dtype=object)


class ShardAssembler:
    def __init__(self, shards: list[Shard], sink: Callable[[Shard, dict[str, np.ndarray]], None]) -> None:
        self.expected = {s.index: s for s in shards}
        self.sink = sink
        self.buffers: dict[int, list[dict[str, np.ndarray]]] = {}
        self.received: Counter[int] = Counter()
        self.results: list[ShardResult] = []

    def consume(self, batch: dict[str, np.ndarray]) -> list[ShardResult]:
        shard_ids = np.asarray(batch["shard"], dtype=np.int64)
        written = []
        for sid in np.unique(shard_ids):
            sid = int(sid)
            if sid not in self.expected:
                raise IncompleteRunError(f"received rows for shard {sid}, which is not pending in this run")
            take = np.flatnonzero(shard_ids == sid)
            self.buffers.setdefault(sid, []).append({k: np.asarray(v)[take] for k, v in batch.items()})
            self.received[sid] += take.size
            shard = self.expected[sid]
            if self.received[sid] > (shard.stop - shard.start):
                raise IncompleteRunError(
                    f"shard {sid} received {self.received[sid]} rows, expected {(shard.stop - shard.start)}"
                )
            if self.received[sid] == (shard.stop - shard.start):
                written.append(self._flush(shard))
        return written

    def _flush(self, shard: Shard) -> ShardResult:
        columns = _concat_parts(self.buffers.pop(shard.index))
        order = np.argsort(columns["row"], kind="stable")
        columns = {k: v[order] for k, v in columns.items()}
        rows = columns["row"]
        if not np.array_equal(rows, np.arange(shard.start, shard.stop)):
            raise IncompleteRunError(
                f"shard {shard.index}: rows are not exactly {shard.start}..{shard.stop - 1}"
            )
        self.sink(shard, columns)
        quality = columns.get("quality", np.empty(0, np.float32))
        result = ShardResult(shard, dict(Counter(str(s) for s in columns["status"])), np.asarray(quality))
        self.results.append(result)
        return result

    def finish(self) -> None:
        missing = {
            sid: (s.stop - s.start) - self.received[sid]
            for sid, s in self.expected.items()
            if self.received[sid] != (s.stop - s.start)
        }
        if missing:
            detail = ", ".join(f"shard {k}: {v} rows missing" for k, v in sorted(missing.items())[:10])
            raise IncompleteRunError(f"the run ended before every row was written ({detail})")
