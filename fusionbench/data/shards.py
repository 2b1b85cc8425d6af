"""Which clips each distributed rank reads (fusionbench's rule, on Lightning's sampler wrappers).

Training: every rank builds the sampler one process would use (a ``RandomSampler`` on the loader's generator, seeded
alike on every rank, so every rank draws the same order P) and rank r of W keeps positions r, r + W, r + 2W, ... of
P (:class:`RankShard`), padded to a multiple of W by repeating P's first clips, as torch's ``DistributedSampler``
pads. The W per-rank batches of step k, b clips each, are then together exactly the single-process batch k of W·b
clips (P[k·W·b : (k+1)·W·b]), and DDP's mean of the W per-rank mean losses is that batch's mean loss: W devices at
batch b train as one device at batch W·b, up to float reduction order, when the training split holds a multiple of W
clips (else each epoch sees W − n mod W clips twice) and training draws no other randomness (drop_path, SpecAugment,
random windows: each rank draws its own). The ranks also advance the generator as the one process does, epoch after
epoch: ``RandomSampler`` draws a second (empty) permutation only when asked for an index past its last, which the one
process's loader does only when its last batch is short, so a rank takes P's n indices and resumes the sampler past
its end only when its own loader asks (its last batch short too). Lightning's own replacement would reshuffle with a
``DistributedSampler`` of its own seed (other batches than one process's); its ``DistributedSamplerWrapper`` reads
the sampler to its end every epoch (a generator one permutation ahead from the second epoch on).

Validation and test: unpadded shards (``UnrepeatedDistributedSamplerWrapper``): every clip once over the ranks, the
last ones a batch shorter; torchmetrics and ``sync_dist`` gather them. (``fusionbench.train`` scores the test split
in one process after fit, so the test set is never sharded.)

Without a trainer, or with one process, the samplers are exactly what ``DataLoader(shuffle=...)`` builds.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSamplerWrapper
from torch.utils.data import Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler


class RankShard(DistributedSampler):
    """Rank ``rank`` of ``num_replicas``: positions rank, rank + W, ... of the order ``sampler`` draws, padded to a
    multiple of W (see the module docstring). A ``DistributedSampler``, so Lightning does not replace it."""

    def __init__(self, sampler: Sampler, num_replicas: int, rank: int) -> None:
        super().__init__(range(len(sampler)), num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.sampler = sampler
        self.num_samples = math.ceil(len(sampler) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        order = iter(self.sampler)
        indices = list(itertools.islice(order, len(self.sampler)))  # P: never past its last index
        indices += indices[: self.total_size - len(indices)]  # padded as DistributedSampler pads
        yield from indices[self.rank : self.total_size : self.num_replicas]
        for _ in order:  # asked past the end (a short last batch): the sampler finishes as for one process
            pass

    def __len__(self) -> int:
        return self.num_samples


def rank_sampler(dataset: Dataset, shuffle: bool, generator: torch.Generator | None, trainer: Any = None) -> Sampler:
    """The sampler of this process's share of ``dataset`` (see the module docstring); ``shuffle``: a training split."""
    base = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    world = int(getattr(trainer, "world_size", 1) or 1)
    if world == 1:
        return base
    rank = int(trainer.global_rank)
    if shuffle:
        return RankShard(base, num_replicas=world, rank=rank)
    return UnrepeatedDistributedSamplerWrapper(base, num_replicas=world, rank=rank, shuffle=False)
