"""Where and how tensors are computed: device choice, seeding, precision.

The precision policy is one small object, :class:`Precision`, chosen from what the hardware
reports (:func:`precision_for`):

- CUDA: bf16 autocast where the GPU supports bf16 (tensor cores), else fp32.
- CPU: bf16 autocast where the processor runs bf16 natively (AVX512_BF16 or AMX, as torch
  reports them: :func:`cpu_bf16_native`), else fp32: on an AVX2-only laptop bf16 is
  emulated and slower than fp32. ``docs/performance.md`` has the measurements.
- MPS: fp32.

Convolutions run in the channels_last memory format on the CPU and on CUDA (oneDNN's and
cuDNN's faster layout). Each policy says why it was chosen (``Precision.reason``); the
configuration prints it and every run record keeps it. Everything that runs a model (the
trainer, the zoo, the benchmarks) asks this module, so a notebook never has to care which
machine it is on.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import sys
from dataclasses import dataclass

import torch

__all__ = [
    "resolve_device",
    "seed_everything",
    "cpu_bf16_native",
    "eval_mode",
    "Precision",
    "precision_for",
    "env_report",
    "synchronize",
]

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device request into a ``torch.device``.

    ``auto`` picks cuda, then mps, then cpu. Asking for a device that is not there is an
    error that says what is available, rather than a crash deep inside a forward pass.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'auto' or 'cuda', not {device!r}")
    kind = device.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {device!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        built = torch.version.cuda is not None
        why = (
            "this PyTorch build has CUDA but no GPU is visible (check nvidia-smi and "
            "CUDA_VISIBLE_DEVICES)"
            if built
            else "this PyTorch build has no CUDA support (install a CUDA build of torch)"
        )
        raise RuntimeError(f"device='cuda' was asked for but {why}; use device='auto' or 'cpu'")
    if kind == "mps" and not _mps_available():
        raise RuntimeError(
            "device='mps' was asked for but Apple's MPS backend is not available; "
            "use device='auto' or 'cpu'"
        )
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy (when installed) and torch on every device from one ``seed``.

    Returns a CPU ``torch.Generator`` seeded the same way, for code that wants its own
    stream of randomness.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, not {seed!r}")
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # numpy is optional
        pass
    torch.manual_seed(seed)  # seeds CUDA and MPS too
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def eval_mode(module: object):
    """Put ``module`` in eval mode inside the block and restore its mode after, errors too.

    ``module`` may be anything: only an ``nn.Module`` is switched (a bound method such as
    ``method.predict`` is not a module; pass its ``__self__`` for that).
    """
    if not isinstance(module, torch.nn.Module):
        yield
        return
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@dataclass(frozen=True)
class Precision:
    """The precision policy for one device.

    Attributes:
        device: where the model runs.
        autocast_dtype: ``torch.bfloat16`` for bf16 autocast, else None (fp32).
        channels_last: use the NHWC memory format for convolutions.
        reason: why this policy, in words (printed with the configuration, kept in records).
    """

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    reason: str = ""

    def autocast(self, enabled: bool = True):
        """Context manager for forward passes under this policy."""
        if self.autocast_dtype is None or not enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move a model to the device in the policy's memory format."""
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    @property
    def name(self) -> str:
        return "bf16 autocast" if self.autocast_dtype is torch.bfloat16 else "fp32"


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512_BF16 or AMX), as torch reports it."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def _cpu_features() -> str:
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return capability() if capability is not None else "unknown"


def precision_for(
    device: str | torch.device, precision: str = "auto", *, channels_last: bool | None = None
) -> Precision:
    """The precision policy for ``device``, from what the hardware reports.

    ``auto``: bf16 autocast on a CUDA GPU with bf16 and on a CPU that runs bf16 natively
    (:func:`cpu_bf16_native`), fp32 elsewhere (an AVX2-only CPU emulates bf16, slower than
    fp32; MPS). ``fp32`` forces full precision; ``bf16`` asks for bf16 autocast, which a
    GPU must support (on a CPU without native bf16 it runs, emulated, and says so).
    ``channels_last`` (None: on the CPU and CUDA) sets the convolutions' memory format.
    """
    dev = resolve_device(device)
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}: choose auto, fp32 or bf16")
    nhwc = dev.type in ("cpu", "cuda") if channels_last is None else channels_last
    if dev.type == "cuda":
        has_bf16 = torch.cuda.is_bf16_supported()
        if precision == "bf16" and not has_bf16:
            raise RuntimeError("this GPU does not support bf16; use precision='fp32'")
        if precision == "fp32" or not has_bf16:
            why = "asked for" if precision == "fp32" else "this GPU has no bf16"
            return Precision(dev, None, nhwc, why)
        why = "asked for" if precision == "bf16" else "the GPU supports bf16 (tensor cores)"
        return Precision(dev, torch.bfloat16, nhwc, why)
    if dev.type == "cpu":
        native = cpu_bf16_native()
        features = _cpu_features()
        if precision == "bf16":
            why = "asked for" + ("" if native else f"; emulated on this CPU ({features}, slower)")
            return Precision(dev, torch.bfloat16, nhwc, why)
        if precision == "fp32":
            return Precision(dev, None, nhwc, "asked for")
        if native:
            return Precision(dev, torch.bfloat16, nhwc, "this CPU runs bf16 natively "
                             "(AVX512_BF16 or AMX)")  # fmt: skip
        why = (f"this CPU ({features}) has no native bf16 (AVX512_BF16 or AMX): bf16 would "
               "be emulated, slower than fp32")  # fmt: skip
        return Precision(dev, None, nhwc, why)
    if precision == "bf16":
        return Precision(dev, torch.bfloat16, nhwc, "asked for")
    return Precision(dev, None, nhwc, "fp32 on this device" if precision == "auto" else "asked for")


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (needed before reading a wall clock around GPU work)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def env_report(device: str = "auto", *, print_report: bool = True) -> dict:
    """Versions, the device that ``auto`` picks and the data that is already on disk."""
    from . import paths

    dev = resolve_device(device)
    report: dict = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_build": torch.version.cuda,
        "device": str(dev),
        "cpu_threads": torch.get_num_threads(),
        "precision": f"{precision_for(dev).name} ({precision_for(dev).reason})",
    }
    try:
        import torchvision

        report["torchvision"] = torchvision.__version__
    except ImportError:
        report["torchvision"] = None
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        report["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    root = paths.data_root()
    report["data_root"] = str(root)
    found = []
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if entry.name != "README.md":
                found.append(entry.name)
    cache = paths.cache_root()
    if cache.is_dir():
        found += [f"cache/{p.name}" for p in sorted(cache.iterdir())]
    report["data_found"] = found
    if print_report:
        width = max(len(k) for k in report)
        for key, value in report.items():
            if isinstance(value, list):
                value = ", ".join(value) if value else "(nothing yet)"
            print(f"{key:<{width}}  {value}")
    return report
