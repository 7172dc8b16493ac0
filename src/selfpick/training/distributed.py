"""DistributedDataParallel helpers (one process per GPU, launched by ``torchrun``).

Without ``torchrun`` (``WORLD_SIZE`` unset) every function here is a no-op for a single
process, so the training code has one path. Backend: NCCL on GPUs, Gloo on CPUs (which is how
the tests run DDP without a GPU).
"""

from __future__ import annotations

import datetime
import logging
import os

import torch
import torch.distributed as tdist

log = logging.getLogger("selfpick")

# Rank 0 validates, pseudo-labels and writes models alone while the other ranks wait in a
# barrier; on a large data set that takes longer than the collective timeouts' defaults (10 min
# for NCCL), which would kill a healthy job. SELFPICK_DDP_TIMEOUT_MINUTES overrides it.
DEFAULT_TIMEOUT_MINUTES = 120


def _timeout() -> datetime.timedelta:
    minutes = float(os.environ.get("SELFPICK_DDP_TIMEOUT_MINUTES", DEFAULT_TIMEOUT_MINUTES))
    return datetime.timedelta(minutes=minutes)


def is_distributed() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank_world() -> tuple[int, int]:
    if is_distributed():
        return tdist.get_rank(), tdist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device_kind: str) -> torch.device | None:
    """Join the process group ``torchrun`` set up; returns this rank's device (or None)."""
    if not launched_by_torchrun() or is_distributed():
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if int(os.environ.get("RANK", "0")) != 0:
        # Every rank runs the same code; only rank 0 should talk to the user (its messages
        # also go to training.log). Warnings and errors of the others still show.
        log.setLevel(logging.WARNING)
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
        tdist.init_process_group("nccl", timeout=_timeout())
        device = torch.device("cuda", local_rank)
    else:
        tdist.init_process_group("gloo", timeout=_timeout())
        device = torch.device("cpu")
    log.info("DistributedDataParallel: %d processes, %s backend", tdist.get_world_size(),
             tdist.get_backend())
    return device


def shutdown() -> None:
    if is_distributed():
        tdist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        tdist.barrier()


def epoch_sampler(dataset, epoch: int):
    """Each rank's share of an epoch (``None`` in a single process: all items in order)."""
    if not is_distributed():
        return None
    sampler = torch.utils.data.distributed.DistributedSampler(
        dataset, shuffle=True, seed=getattr(dataset, "seed", 0), drop_last=False)
    sampler.set_epoch(epoch)
    return sampler


def average_dict(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average scalar values over ranks (identity in a single process)."""
    if not is_distributed():
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64,
                     device=device if device.type == "cuda" else "cpu")
    tdist.all_reduce(t)
    t /= tdist.get_world_size()
    return dict(zip(keys, t.tolist()))


def broadcast_flag(value: bool) -> bool:
    """Rank 0's ``value``, on every rank (``value`` itself in a single process).

    For decisions only rank 0 can make (a stage found complete on disk, stopping early):
    every rank must take the same branch, or the next collective call hangs. The flag travels
    on the GPU under NCCL, which cannot send CPU tensors.
    """
    return bool(broadcast_number(int(bool(value))))


def broadcast_number(value: float) -> float:
    """Rank 0's number ``value`` on every rank (``value`` itself in a single process), e.g.
    a setting derived from rank 0's validation."""
    if not is_distributed():
        return value
    device = (torch.device("cuda", torch.cuda.current_device())
              if tdist.get_backend() == "nccl" else torch.device("cpu"))
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    tdist.broadcast(t, src=0)
    return float(t.item())


def broadcast_state(model: torch.nn.Module) -> None:
    """Give every rank rank 0's weights (after rank 0 alone loaded or changed them)."""
    if not is_distributed():
        return
    for tensor in list(model.state_dict().values()):
        tdist.broadcast(tensor, src=0)
