"""Output units of many weight tensors as segments of one flat vector.

epsilon-shifted L2 and WRS act on *weight vectors* W_j, one per output unit
(a filter of a conv, a row of a linear layer): each has its own norm, mean
and standard deviation. Layers have different fan-ins, so the units of a
network do not stack into one matrix; laid end to end they form one flat
vector cut into segments, and a per-unit reduction over every layer at once
is one ``segment_reduce`` kernel. The hot path then launches a constant
number of kernels whatever the depth, with no host-device synchronisation.
"""
from typing import List, Sequence

import torch
from torch import Tensor


class OutputUnits:
    """The output units of ``params`` (each tensor's first dim indexes units).

    Args:
        params: weight tensors, all on one device.
    """

    def __init__(self, params: Sequence[Tensor]) -> None:
        if not params:
            raise ValueError('OutputUnits: no tensors')
        self.params: List[Tensor] = list(params)
        self.sizes = [p.numel() for p in self.params]
        self.units_per_tensor = [p.shape[0] for p in self.params]
        device = self.params[0].device
        fan_in = [p[0].numel() for p in self.params]
        #: number of entries n of each unit, shape (units,)
        self.lengths = torch.tensor([n for n, u in zip(fan_in, self.units_per_tensor)
                                     for _ in range(u)], device=device)
        self.numel = sum(self.sizes)

    @property
    def num_units(self) -> int:
        return self.lengths.numel()

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        """One fp32 vector holding ``tensors`` (shaped like the params) end to end."""
        return torch.cat([t.reshape(-1) for t in tensors]).float()

    def sum(self, flat: Tensor) -> Tensor:
        """Per-unit sums of a flat vector, shape (units,)."""
        # unsafe=True skips a check that would sync the host with the device
        return torch.segment_reduce(flat, 'sum', lengths=self.lengths, unsafe=True)

    def expand(self, per_unit: Tensor) -> Tensor:
        """Broadcast one value per unit to every entry of its unit (flat)."""
        return torch.repeat_interleave(per_unit, self.lengths, output_size=self.numel)

    def per_tensor(self, per_unit: Tensor) -> List[Tensor]:
        """Split a per-unit vector into one vector per tensor."""
        return list(per_unit.split(self.units_per_tensor))

    def split(self, flat: Tensor) -> List[Tensor]:
        """Views of a flat vector shaped like the params (no copy)."""
        return [v.view_as(p) for v, p in zip(flat.split(self.sizes), self.params)]
