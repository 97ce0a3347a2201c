"""PURE: small immutable collections whose change copies a slice, not the whole.

A rollout of 10,000 replicas changes one target at a time, 50,000 times over. Copying a tuple or
a dict of 10,000 entries on each change is quadratic; these keep their entries in pieces of
``PIECE`` so that a change copies one piece and the short tuple of pieces (10,000 entries: one
piece of 64 and a tuple of 157 pieces, instead of 10,000 entries).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from itertools import chain, compress
from operator import is_not
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

PIECE = 64


class Pieces(Generic[T]):
    """An immutable sequence in pieces of ``PIECE``: ``with_item`` copies one piece."""

    __slots__ = ("_pieces", "_size")

    def __init__(self, items: Sequence[T] = ()) -> None:
        self._pieces = tuple(tuple(items[start:start + PIECE]) for start in range(0, len(items), PIECE))
        self._size = len(items)

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, position: int) -> T:
        return self._pieces[position // PIECE][position % PIECE]

    def __iter__(self) -> Iterator[T]:
        return chain.from_iterable(self._pieces)

    def with_item(self, position: int, item: T) -> Pieces[T]:
        number, offset = divmod(position, PIECE)
        piece = self._pieces[number]
        new = Pieces.__new__(Pieces)
        new._pieces = (*self._pieces[:number], (*piece[:offset], item, *piece[offset + 1:]),
                       *self._pieces[number + 1:])
        new._size = self._size
        return new

    def changed(self, other: Pieces[T]) -> list[int]:
        """Positions whose item is not the same object in ``other`` (same length): the pieces a
        change copied, then their items, compared by identity at C speed."""
        positions: list[int] = []
        for number in compress(range(len(self._pieces)), map(is_not, self._pieces, other._pieces)):
            base = number * PIECE
            mine, theirs = self._pieces[number], other._pieces[number]
            positions += [base + offset for offset in compress(range(len(mine)), map(is_not, mine, theirs))]
        return positions


class Shards(Generic[K, V]):
    """An immutable mapping in ``PIECE`` dicts by the key's hash: a change copies one of them."""

    __slots__ = ("_shards", "_size")

    def __init__(self, entries: Iterable[tuple[K, V]] = ()) -> None:
        shards: list[dict[K, V]] = [{} for _ in range(PIECE)]
        for key, value in entries:
            shards[hash(key) % PIECE][key] = value
        self._shards = tuple(shards)
        self._size = sum(len(shard) for shard in shards)

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: object) -> bool:
        return key in self._shards[hash(key) % PIECE]

    def get(self, key: K) -> V | None:
        return self._shards[hash(key) % PIECE].get(key)

    def __iter__(self) -> Iterator[K]:
        return chain.from_iterable(self._shards)

    def _with_shard(self, number: int, shard: dict[K, V], size: int) -> Shards[K, V]:
        new: Shards[K, V] = Shards.__new__(Shards)
        new._shards = (*self._shards[:number], shard, *self._shards[number + 1:])
        new._size = size
        return new

    def set(self, key: K, value: V) -> Shards[K, V]:
        number = hash(key) % PIECE
        shard = self._shards[number]
        if key in shard and shard[key] is value:
            return self
        size = self._size + (key not in shard)
        return self._with_shard(number, {**shard, key: value}, size)

    def without(self, key: K) -> Shards[K, V]:
        number = hash(key) % PIECE
        shard = self._shards[number]
        if key not in shard:
            return self
        rest = dict(shard)
        del rest[key]
        return self._with_shard(number, rest, self._size - 1)
