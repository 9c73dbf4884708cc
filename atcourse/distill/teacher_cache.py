"""What a frozen teacher computed for each training batch, kept for the next student.

Every student of one setting (same teacher, same training images, seed, batch size,
augmentation and precision) sees the same batches in the same order: the loader draws them
from the seed and the epoch. A frozen teacher's outputs on those batches are therefore the
same for every such student, and a notebook that trains KD, AT and AT+KD one after the
other would compute them three times. :class:`TeacherCache` keeps them, by setting and by
(epoch, step), within a memory budget; a method asks for its teacher's outputs by name
through :meth:`~atcourse.distill.base.Distiller.teacher_outputs` and gets them from the
cache when the same setting computed them before, exactly as it would have computed them.

The trainer (:func:`atcourse.train.fit`) names the setting and the batch; nothing else has
to know. Outside a training step (evaluation, a notebook's own calls) nothing is cached.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from torch import Tensor

__all__ = ["TeacherCache"]

Batch = tuple[int, int]


class TeacherCache:
    """Teacher outputs by setting and by batch, within ``max_bytes``.

    When storing needs room, whole settings are dropped, least recently used first, but
    never the one being trained; when the budget is full with the current setting alone,
    later batches are simply not stored (they are computed, as without a cache).

    Args:
        max_bytes: the budget for the stored tensors (0 disables the cache).
    """

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._settings: OrderedDict[str, dict[Batch, dict[str, Tensor]]] = OrderedDict()
        self.nbytes = 0
        self.setting: str | None = None
        self.batch: Batch | None = None
        self.hits = 0
        self.misses = 0

    def start(self, setting: str) -> None:
        """Serve the batches of a run of ``setting`` (a key the trainer makes)."""
        self.setting = setting
        self._settings.setdefault(setting, {})
        self._settings.move_to_end(setting)
        self.batch = None

    def at(self, epoch: int, step: int) -> None:
        """The batch the next teacher outputs belong to."""
        self.batch = (int(epoch), int(step))

    def stop(self) -> None:
        """Out of a training step: nothing is looked up or stored until :meth:`at`."""
        self.batch = None

    def get(self, names: Sequence[str]) -> dict[str, Tensor] | None:
        """The stored outputs ``names`` of the current batch, or None if any is missing."""
        if self.setting is None or self.batch is None:
            return None
        entry = self._settings[self.setting].get(self.batch)
        if entry is None or any(n not in entry for n in names):
            self.misses += 1
            return None
        self.hits += 1
        return {n: entry[n] for n in names}

    def put(self, outputs: Mapping[str, Tensor]) -> bool:
        """Store the current batch's outputs (what is not stored yet); False if no room."""
        if self.setting is None or self.batch is None or self.max_bytes == 0:
            return False
        entry = self._settings[self.setting].setdefault(self.batch, {})
        new = {k: v for k, v in outputs.items() if k not in entry}
        size = sum(v.numel() * v.element_size() for v in new.values())
        while self.nbytes + size > self.max_bytes and len(self._settings) > 1:
            oldest = next(iter(self._settings))
            if oldest == self.setting:
                break
            self.nbytes -= _size(self._settings.pop(oldest))
        if self.nbytes + size > self.max_bytes:
            return False
        entry.update(new)
        self.nbytes += size
        return True

    def clear(self) -> None:
        """Drop everything."""
        self._settings.clear()
        self.nbytes = 0
        self.setting = self.batch = None


def _size(batches: dict[Batch, dict[str, Tensor]]) -> int:
    return sum(v.numel() * v.element_size() for entry in batches.values() for v in entry.values())
