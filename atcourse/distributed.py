"""One run over several processes: PyTorch's process group and DistributedDataParallel.

Nothing here starts processes: ``torchrun`` does (``torchrun --standalone
--nproc_per_node=N -m atcourse train ...``, or a script of one's own that calls
:func:`atcourse.fit`). torchrun sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in each process; this module reads them, joins the
process group on first need (NCCL for CUDA tensors, gloo for CPU tensors: one group serves
both), and offers the few collective steps the trainer takes: an all-reduce of a dict of
tensors, one decision made by rank 0 and shared, rank 0's buffers copied to every rank, and
the wrapping of the trained module in :class:`~torch.nn.parallel.DistributedDataParallel`.

Started without torchrun (``WORLD_SIZE`` unset or 1) every function here is free: no process
group, no wrapping, no copy.
"""

from __future__ import annotations

import atexit
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "launched", "world_size", "rank", "local_rank", "is_main", "init", "teardown",
    "all_reduce", "weighted_mean", "from_main", "broadcast_buffers", "wrap", "backend",
    "describe", "sync_batch_norm",
]  # fmt: skip

T = TypeVar("T")

_LAUNCH = "start the processes with torchrun (torchrun --standalone --nproc_per_node=N ...)"


def _env_int(name: str, default: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        if default is None:
            raise RuntimeError(
                f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} says this process is one of "
                f"several, but {name} is not set: {_LAUNCH}, which sets it"
            )
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"the environment variable {name}={text!r} is not an integer: {_LAUNCH}, or unset it"
        ) from None


def launched() -> bool:
    """Whether this process is one of several (``WORLD_SIZE`` > 1, as torchrun sets it)."""
    return _initialized() or _env_int("WORLD_SIZE", 1) > 1


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """The number of processes of the run (1 without torchrun)."""
    return dist.get_world_size() if _initialized() else _env_int("WORLD_SIZE", 1)


def rank() -> int:
    """This process's rank in ``0..world_size()-1`` (0 without torchrun)."""
    if _initialized():
        return dist.get_rank()
    return _env_int("RANK") if world_size() > 1 else 0


def local_rank() -> int:
    """This process's rank on its machine: the GPU it uses (0 without torchrun)."""
    return _env_int("LOCAL_RANK") if world_size() > 1 else 0


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes records and checkpoints."""
    return rank() == 0


def backend() -> str | None:
    """The process group's backend (``"gloo"``, ``"cpu:gloo,cuda:nccl"``), None without one."""
    return str(dist.get_backend()) if _initialized() else None


def init() -> bool:
    """Join the process group torchrun's environment describes; whether there is one.

    Idempotent, and nothing at all for a single process. On a machine with CUDA the group
    serves CUDA tensors with NCCL and CPU tensors with gloo, and this process's current
    GPU becomes ``cuda:LOCAL_RANK``, so ``device="cuda"`` means its own GPU; without CUDA
    the group is gloo. The group is destroyed when the process exits (:func:`teardown`).
    """
    if _initialized():
        return dist.get_world_size() > 1
    if not launched():
        return False
    if not dist.is_available():
        raise RuntimeError(
            "WORLD_SIZE > 1 but this PyTorch build has no torch.distributed: install a "
            "standard build, or run a single process"
        )
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise RuntimeError(
                f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {name} is not set: {_LAUNCH}"
            )
    cuda = torch.cuda.is_available()
    if cuda and local_rank() < torch.cuda.device_count():
        torch.cuda.set_device(local_rank())
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    atexit.register(teardown)
    return True


def teardown() -> None:
    """Leave the process group (nothing when there is none)."""
    if _initialized():
        dist.destroy_process_group()


def all_reduce(tensors: Mapping[str, Tensor], op: str = "sum") -> dict[str, Tensor]:
    """Sum (``op="sum"``) or average (``"mean"``) each tensor over the processes.

    Every process must call it with the same names, in the same order, and shapes, all on
    the device its backend serves (CUDA under NCCL). The tensors travel as one float64
    buffer, so a dict of scalars is one collective, and each comes back in its own dtype
    and shape, the same on every process. A single process gets the dict back as it is.

    Args:
        tensors: name -> tensor of any shape (loss sums, counts), all on one device.
        op: ``"sum"`` or ``"mean"``.
    """
    if op not in ("sum", "mean"):
        raise ValueError(f"all_reduce op must be 'sum' or 'mean', not {op!r}")
    if world_size() == 1 or not tensors:
        return dict(tensors)
    init()
    names = list(tensors)
    flat = torch.cat([tensors[k].detach().reshape(-1).to(torch.float64) for k in names])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    if op == "mean":
        flat /= world_size()
    out, start = {}, 0
    for k in names:
        t = tensors[k]
        out[k] = flat[start : start + t.numel()].view(t.shape).to(t.dtype)
        start += t.numel()
    return out


def weighted_mean(means: Mapping[str, float], count: int, device: torch.device) -> dict[str, float]:
    """Means over each rank's ``count`` items, combined into means over all the ranks' items.

    Returns ``means`` with ``"n"``, the total count, added; for one process, ``means`` as
    they are. ``device``: where the backend takes tensors (the rank's GPU under NCCL).
    """
    if world_size() == 1:
        return {**means, "n": count}
    parts = {
        k: torch.tensor(v * count, dtype=torch.float64, device=device) for k, v in means.items()
    }
    parts["n"] = torch.tensor(float(count), dtype=torch.float64, device=device)
    total = all_reduce(parts)
    n = total.pop("n").item()
    return {**{k: v.item() / max(n, 1.0) for k, v in total.items()}, "n": int(n)}


def describe(batch_size: int, sync_bn: bool) -> dict[str, Any]:
    """What a run record says of its processes: ``world_size``, and for several, how."""
    if world_size() == 1:
        return {"world_size": 1}
    ddp = {
        "backend": backend(),
        "batch_per_rank": batch_size // world_size(),
        "batch_norm": "sync" if sync_bn else "per-rank",
        "evaluation": "sharded",
    }
    return {"world_size": world_size(), "ddp": ddp}


def from_main(fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0 alone, its result (or the exception it raised) on every rank.

    For decisions that read files (is there a checkpoint? is the run finished?): rank 0
    reads, every process follows the same decision, whatever each one's file system shows.
    The result travels pickled, so it should be small or live on the CPU.
    """
    if world_size() == 1:
        return fn()
    init()
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = (True, fn())
        except Exception as exc:  # every rank raises it, not rank 0 alone
            box[0] = (False, exc)
        try:
            pickle.dumps(box[0])
        except Exception as exc:
            box[0] = (False, RuntimeError(f"rank 0's result cannot be shared: {exc!r}"))
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def broadcast_buffers(module: nn.Module, skip: Sequence[str] = ()) -> None:
    """Copy rank 0's buffers (batch-norm statistics) into every rank's ``module``.

    DistributedDataParallel does this before each training forward; after the last step of
    an epoch each rank's per-rank statistics have moved on their own, so an evaluation
    sharded over the ranks calls this first. ``skip``: names of children to leave (a frozen
    teacher, the same everywhere).
    """
    if world_size() == 1:
        return
    init()
    for name, buf in module.named_buffers():
        if name.split(".")[0] not in skip:
            dist.broadcast(buf, src=0)


def sync_batch_norm(module: nn.Module, frozen: Sequence[str] = ("teacher",)) -> nn.Module:
    """Turn the batch-norm layers of ``module``'s trained children into SyncBatchNorm.

    In place, and keeping the same parameter and buffer tensors (an optimizer built before
    still trains them; a checkpoint's names do not change); the children named in
    ``frozen`` keep their batch norm. Returns ``module``.
    """
    for name, child in list(module.named_children()):
        if name not in frozen:
            setattr(module, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return module


def wrap(
    module: nn.Module,
    device: torch.device,
    *,
    sync_bn: bool = False,
    frozen: Sequence[str] = ("teacher",),
) -> nn.Module:
    """``module`` in DistributedDataParallel over the run's processes, or as it is for one.

    Gradients of every parameter that requires one are averaged over the processes in the
    backward pass. The children named in ``frozen`` (a distiller's teacher) are left out:
    DDP neither broadcasts their weights nor their buffers. Call the returned module for
    training steps; the original ``module`` (the same parameters) serves everything else.

    Args:
        module: the trained module on ``device`` (a distiller: student, its own layers,
            and a frozen teacher).
        device: where it runs; CUDA means this process's GPU (``cuda:LOCAL_RANK``).
        sync_bn: batch-norm statistics over the whole global batch
            (:class:`~torch.nn.SyncBatchNorm`: the same computation as one process, at the
            cost of a collective per batch-norm layer; CUDA only). False: each process
            normalizes with the statistics of its own share of the batch, and the running
            statistics are rank 0's (DDP copies them to every rank before each forward).
        frozen: names of ``module``'s children that are not trained.
    """
    if world_size() == 1:
        return module
    init()
    if sync_bn:
        if device.type != "cuda":
            raise ValueError(
                f"sync_bn=True needs CUDA (PyTorch's SyncBatchNorm runs on GPUs), but the run "
                f"is on {device}: drop --sync-bn / sync_bn=True, so that each process "
                "normalizes with its own share of the batch"
            )
        sync_batch_norm(module, frozen)
    ignored = [
        name
        for name, _ in (*module.named_parameters(), *module.named_buffers())
        if name.split(".")[0] in frozen
    ]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
    if device.type != "cuda":
        return DistributedDataParallel(module)
    gpu = torch.cuda.current_device() if device.index is None else device.index
    if gpu != local_rank() or local_rank() >= torch.cuda.device_count():
        raise RuntimeError(
            f"process LOCAL_RANK={local_rank()} would train on cuda:{gpu}, which is not its own "
            f"GPU ({torch.cuda.device_count()} visible): start at most as many processes per "
            "machine as it has GPUs (--nproc_per_node), or train on the CPU (--device cpu)"
        )
    return DistributedDataParallel(module, device_ids=[gpu], output_device=gpu)
