"""Running on several processes: ``torchrun`` ranks and ``--shard i/n`` parts.

cfe uses torch.distributed as launched by ``torchrun`` (it sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``). Without those variables a run is one process, exactly as
before. With them, :func:`context` joins the process group once: NCCL with ``cuda:LOCAL_RANK`` when
CUDA is present, gloo on CPU (each rank then takes ``cores ÷ local ranks`` threads).

``--shard i/n`` (SLURM arrays, plain shells) is a :class:`Dist` with ``rank = i``, ``world = n`` and
no communication: each shard writes its own part and ``cfe merge`` combines them.

Work is split by *batches*: batch ``b`` of the 1-process run (inputs ``b·B … b·B + B − 1``) goes to
rank ``b mod n``. A batch is therefore the same tensor in every world size, each batch reseeds the
method, and every counterfactual equals the 1-process one.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch

from cfe_cli.errors import InputError


@dataclass(frozen=True)
class Dist:
    """Where this process stands: ``rank`` of ``world``; ``comm``: a torch.distributed group exists."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    comm: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: prints, merges and saves checkpoints."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.comm:
            torch.distributed.barrier()

    def sum(self, value: float | int) -> float:
        """The sum of ``value`` over every rank (the value itself without communication)."""
        if not self.comm:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
        torch.distributed.all_reduce(t)
        return float(t.item())

    def sums(self, values: list[float]) -> list[float]:
        """Element-wise sums of ``values`` over every rank (one collective)."""
        if not self.comm:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
        torch.distributed.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (``[obj]`` without communication)."""
        if not self.comm:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def gather_main(self, obj: Any) -> list[Any] | None:
        """``obj`` of every rank in rank order on rank 0 (None elsewhere); ``[obj]`` without communication."""
        if not self.comm:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.main else None
        torch.distributed.gather_object(obj, out, dst=0)
        return out

    def max(self, value: float) -> float:
        """The largest ``value`` over the ranks."""
        if not self.comm:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.comm:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def _comm_device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def launched() -> bool:
    """Whether torchrun (or another launcher) started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def context(shard: str | None = None, device: str = "auto") -> Dist:
    """This process's :class:`Dist`: ``--shard i/n``, torchrun's ranks, or one process.

    Joins the process group on the first call under torchrun: NCCL when CUDA is present (and
    ``device`` is not ``cpu``), gloo otherwise.

    Raises:
        InputError: a malformed ``shard``, or ``--shard`` inside a torchrun launch.
    """
    if shard is not None:
        if launched():
            raise InputError("--shard is for separate single processes; under torchrun the ranks are the shards")
        i, n = parse_shard(shard)
        return Dist(rank=i, world=n)
    if not launched():
        return Dist()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dist = torch.distributed
    if not dist.is_initialized():
        if torch.cuda.is_available() and not str(device).startswith("cpu"):
            torch.cuda.set_device(local)
            dist.init_process_group("nccl")
        else:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
            dist.init_process_group("gloo")
    return Dist(rank=rank, world=world, local_rank=local, comm=True)


def device_name(device: str, d: Dist) -> str:
    """``auto``/``cuda`` of a torchrun rank on a GPU machine -> ``cuda:LOCAL_RANK``."""
    if d.comm and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{d.local_rank}"
    return device


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; anything else is an InputError."""
    parts = text.strip().split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise InputError(f"--shard {text!r}: expected I/N, e.g. 0/4 (shard I of N, counted from 0)")
    i, n = int(parts[0]), int(parts[1])
    if n < 1 or not 0 <= i < n:
        raise InputError(f"--shard {text!r}: I must be in 0..N-1 and N at least 1")
    return i, n


def my_batches(n_items: int, batch_size: int, d: Dist) -> list[range]:
    """The index ranges of this rank's batches: batch ``b`` of the 1-process run goes to rank ``b mod world``."""
    starts = range(0, n_items, batch_size)
    return [range(s, min(s + batch_size, n_items)) for b, s in enumerate(starts) if b % d.world == d.rank]


def rounds(n_items: int, batch_size: int, d: Dist) -> int:
    """Batches the busiest rank runs (every rank steps through this many rounds to stay in lockstep)."""
    n_batches = -(-n_items // batch_size)
    return -(-n_batches // d.world)


def finish(d: Dist) -> None:
    """Leave the process group (after the last collective).

    Every rank waits for the others first, and DDP wrappers left in reference cycles are collected
    while the interpreter is fully alive: a gloo group freed during interpreter shutdown instead can
    abort the process ("terminate called without an active exception"; seen once in 2-rank training).
    """
    if d.comm and torch.distributed.is_initialized():
        torch.distributed.barrier()
        gc.collect()
        torch.distributed.destroy_process_group()
        gc.collect()
