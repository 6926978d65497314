"""Step statistics kept on the training device and read once per tick.

Each phase of a step returns its numbers as 0-d tensors (losses, scores, the ADA sign sums).
`StepStats.add` sums them on the device, with no conversion to Python numbers, so a GPU step
never waits for the host; it also remembers, still on the device, the first step whose numbers
were not all finite (a device-side flag that the loop reads at the tick, before it saves
anything). `read` brings the means and that flag to the host in one transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NonFinite:
    """The first non-finite step number of a tick: which quantity, after how many images."""

    quantity: str
    nimg: int


class StepStats:
    """Sums and counts per quantity, and the first non-finite one, on `device`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.keys: list[str] = []
        self._sums = torch.zeros(0, dtype=torch.float64, device=device)
        self._counts = torch.zeros(0, dtype=torch.float64, device=device)
        # first bad quantity's index in `keys` and the image count after its step; -1: none yet
        self._bad = torch.full((2,), -1, dtype=torch.int64, device=device)
        self._indices: dict[tuple[str, ...], torch.Tensor] = {}

    def _index(self, keys: tuple[str, ...]) -> torch.Tensor:
        """Positions of `keys` in `self.keys` (new ones appended), cached per key tuple: a host
        list copied to a GPU would wait for the queued work."""
        if keys not in self._indices:
            new = [k for k in keys if k not in self.keys]
            self.keys += new
            grow = torch.zeros(len(new), dtype=torch.float64, device=self.device)
            self._sums = torch.cat([self._sums, grow])
            self._counts = torch.cat([self._counts, grow])
            self._indices[keys] = torch.tensor([self.keys.index(k) for k in keys]).to(self.device)
        return self._indices[keys]

    def add(self, stats: dict[str, torch.Tensor | float], nimg: int) -> None:
        """Add one step's numbers (tensors or floats), seen after `nimg` images in all."""
        if not stats:
            return
        index = self._index(tuple(stats))
        values = torch.stack([self._scalar(v) for v in stats.values()])
        self._sums.index_add_(0, index, values)
        self._counts.index_add_(0, index, torch.ones_like(values))
        bad = ~torch.isfinite(values)
        first = index[bad.to(torch.int64).argmax()]
        found = torch.stack([first, torch.full((), nimg, device=self.device)])
        fresh = bad.any() & (self._bad[0] < 0)
        self._bad = torch.where(fresh, found, self._bad)

    def _scalar(self, value: torch.Tensor | float) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.detach().reshape(()).to(self.device, torch.float64)
        return torch.full((), value, dtype=torch.float64, device=self.device)  # no host copy

    def read(self) -> tuple[dict[str, float], NonFinite | None]:
        """(mean of each quantity since the last `clear`, the first non-finite step or None),
        in one device-to-host transfer."""
        packed = torch.cat([self._sums, self._counts, self._bad.double()]).cpu().tolist()
        n = len(self.keys)
        sums, counts, (bad_key, bad_nimg) = packed[:n], packed[n : 2 * n], packed[2 * n :]
        means = {k: s / c for k, s, c in zip(self.keys, sums, counts, strict=True) if c > 0}
        bad = NonFinite(self.keys[int(bad_key)], int(bad_nimg)) if bad_key >= 0 else None
        return means, bad

    def clear(self) -> None:
        self._sums.zero_()
        self._counts.zero_()
        self._bad.fill_(-1)
