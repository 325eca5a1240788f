"""Training and evaluation data sets on which one unreadable image never stops the run.

:class:`ReadGuardCacheDataset` is MONAI's :class:`~monai.data.CacheDataset` (same arguments) that catches the error of
an item whose image cannot be loaded (truncated JPEG, undecodable DICOM, missing file, ...), writes the item's id and
the full reason to a skip report (CSV ``id,reason``, atomically, rewritten at each new skip) and logs one line, and
serves in its place another readable item of the same label (the next one in the list), so the data list, its
length and a sampler built from its labels stay valid. It fails only when no item is readable or when the skipped
share exceeds ``max_skipped_fraction``.

Items are named by their ``id`` (the table's sample id or the manifest's pseudonymised key), never by their path.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from monai.data import CacheDataset

from attok_monai.data.image2d import ImageReadError, safe_reason
from attok_monai.errors import InputError
from attok_monai.fileio import atomic_write_text, rows_to_csv

__all__ = ["ReadGuardCacheDataset", "read_error_reason"]

logger = logging.getLogger("attok_monai.data")


def read_error_reason(exc: BaseException) -> str:
    """The reason an image could not be read, without its path: the reader's :class:`ImageReadError` reason, else
    the innermost error of the chain (MONAI wraps transform errors) as ``Type: message`` with quoted text blanked."""
    inner, cur = exc, exc
    while cur is not None:
        if isinstance(cur, ImageReadError):
            return cur.reason
        inner = cur
        cur = cur.__cause__ or cur.__context__
    return safe_reason(inner)


class _Unreadable:
    def __init__(self, reason: str) -> None:
        self.reason = reason


class ReadGuardCacheDataset(CacheDataset):
    """:class:`~monai.data.CacheDataset` that skips unreadable items with a report (see the module docstring).

    Args:
        data, transform: as in ``CacheDataset``; items are ``{"image", "label", "id", ...}``.
        skip_report: CSV written when an item is skipped (None: logged only).
        max_skipped_fraction: raise :class:`InputError` when more than this share of the items is unreadable.
        label_key: the item field whose value a substitute must share.
        kwargs: ``CacheDataset`` arguments (``cache_rate``, ``num_workers``, ...).
    """

    def __init__(
        self, data: Sequence[dict[str, Any]], transform: Callable | None = None, *,
        skip_report: str | os.PathLike | None = None, max_skipped_fraction: float | None = None,
        label_key: str = "label", **kwargs: Any,
    ) -> None:
        self.skip_report = skip_report
        self.max_skipped_fraction = max_skipped_fraction
        self.label_key = label_key
        self.skipped: dict[int, str] = {}
        self._lock = threading.Lock()
        super().__init__(data, transform, **kwargs)
        if len(self.skipped) == len(self.data) and len(self.data):
            raise InputError(f"none of the {len(self.data)} images could be read; reasons in {self.skip_report}.")

    def _record(self, index: int, exc: BaseException) -> _Unreadable:
        reason = read_error_reason(exc)
        with self._lock:
            if index not in self.skipped:
                self.skipped[index] = reason
                item_id = str(self.data[index].get("id", index))
                logger.warning("skipped unreadable image id=%s: %s", item_id, reason)
                if self.skip_report is not None:
                    rows = [{"id": str(self.data[i].get("id", i)), "reason": r} for i, r in sorted(self.skipped.items())]
                    atomic_write_text(self.skip_report, rows_to_csv(["id", "reason"], rows))
                n = len(self.data)
                if self.max_skipped_fraction is not None and len(self.skipped) > self.max_skipped_fraction * n:
                    raise InputError(f"{len(self.skipped)} of {n} images unreadable, more than max_skipped_fraction "
                                     f"{self.max_skipped_fraction:g}; reasons in {self.skip_report}.")
        return _Unreadable(reason)

    def _load_cache_item(self, idx: int):
        try:
            return super()._load_cache_item(idx)
        except InputError:
            raise
        except Exception as e:
            return self._record(idx, e)

    def _substitute(self, index: int) -> int:
        n = len(self.data)
        label = self.data[index].get(self.label_key)
        fallback = None
        for step in range(1, n):
            j = (index + step) % n
            if j in self.skipped:
                continue
            if self.data[j].get(self.label_key) == label:
                return j
            if fallback is None:
                fallback = j
        if fallback is None:
            raise InputError(f"none of the {n} images could be read; reasons in {self.skip_report}.")
        return fallback

    def _transform(self, index: int):
        seen = 0
        while True:
            if index in self.skipped or (index < len(self._cache) and isinstance(self._cache[index], _Unreadable)):
                index = self._substitute(index)
            try:
                return super()._transform(index)
            except InputError:
                raise
            except Exception as e:
                if index < self.cache_num and not isinstance(self._cache[index], _Unreadable):
                    raise  # a cached item that fails in a random transform is a bug, not a bad file
                self._record(index, e)
                seen += 1
                if seen > len(self.data):
                    raise
