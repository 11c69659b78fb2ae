"""
Where train.py and evaluate.py run: the device, the forward dtype and, under torchrun, the
process group. setup() is the one place this is decided; the Runtime it returns carries the rank
and the few collectives the scripts use.

Under torchrun (RANK is set) the backend is NCCL on CUDA and gloo on the CPU. A rank that dies or
hangs makes the others' next collective fail after ddp_timeout seconds; that failure ends the
process with one line instead of a traceback (the process group is broken by then, so there is
nothing to clean up).
"""
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass
class Runtime:
    device: str        # 'cpu', 'cuda', 'cuda:3', ...
    device_type: str   # 'cpu' or 'cuda'
    dtype: str         # forward dtype: 'float32' or 'bfloat16'
    ddp: bool          # under torchrun
    rank: int = 0
    world_size: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0

    def log(self, *args):
        if self.master:
            print(*args, flush=True)

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Sum (or 'max') t over ranks, in place (nothing to do in one process)."""
        if self.ddp:
            dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t

    def gather(self, obj) -> list | None:
        """obj of every rank, in rank order, on rank 0 (None on the others)."""
        if not self.ddp:
            return [obj]
        out = [None] * self.world_size if self.master else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, t: torch.Tensor, src: int = 0):
        if self.ddp:
            dist.broadcast(t, src=src)

    def barrier(self):
        if self.ddp:
            dist.barrier()

    def close(self):
        if self.ddp and dist.is_initialized():
            dist.destroy_process_group()


def world() -> tuple[bool, int, int]:
    """(under torchrun, rank, world size), from the environment torchrun sets; nothing is joined."""
    if "RANK" not in os.environ:
        return False, 0, 1
    return True, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def setup(device: str = "auto", dtype: str = "auto", ddp_timeout: int = 300) -> Runtime:
    """Resolve 'auto' device (CUDA when present) and dtype (bfloat16 on CUDA, float32 on the
    CPU); under torchrun, join the process group, one GPU per local rank."""
    ddp, rank, world_size = world()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device_type == "cuda" else "float32"
    if ddp:
        # a rank that died or hangs makes the others' next collective fail after ddp_timeout
        # seconds (NCCL: with async error handling); the hook below turns that into one line
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        if device_type == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo",
                                timeout=timedelta(seconds=ddp_timeout))
        sys.excepthook = _collective_failed_hook(rank, ddp_timeout)
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device=device, device_type=device_type, dtype=dtype, ddp=ddp, rank=rank, world_size=world_size)


def _collective_failed_hook(rank: int, timeout: int):
    def hook(kind, e, tb):
        if issubclass(kind, (RuntimeError, dist.DistError)):
            first = (str(e).strip().splitlines() or [""])[0][:300]
            print(f"error: rank {rank}: a collective failed ({kind.__name__}: {first}); another rank has "
                  f"died or did not answer within ddp_timeout={timeout}s", file=sys.stderr, flush=True)
            os._exit(1)
        sys.__excepthook__(kind, e, tb)
    return hook
