"""
Where train.py and evaluate.py run: the device, the forward dtype and, under torchrun, the
process group. setup() is the one place this is decided; the Runtime it returns carries the rank
and the few collectives the scripts use.

Under torchrun (RANK is set) the backend is NCCL on CUDA and gloo on the CPU. A rank that dies or
hangs makes the others' next collective fail after ddp_timeout seconds; that failure ends the
process with one line instead of a traceback (the process group is broken by then, so there is
nothing to clean up).

A run that finished ends with close() on every rank: a last barrier (every rank through the same
last collective, none outstanding), then destroy_process_group, which stops the backend's threads
(gloo's workers and its socket loop, NCCL's watchdog) while the interpreter is whole. Any other way
out after setup (an error, SystemExit) destroys the group at exit, without the barrier. A backend
thread still alive when Python finalizes may abort the process ('terminate called without an
active exception', SIGABRT) after its work is done: a gloo worker that drops the last reference to
a finished collective's tensors needs the GIL, which finalization no longer hands out, and the
thread is unwound out of a noexcept destructor.
"""
import atexit
import importlib
import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

import ops


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

    def op_paths(self) -> dict:
        """ops.op_paths for this run's device type, decided once and the same on every rank: an
        op runs on the csrc/ extension only where every rank can run it there (a rank whose
        extension failed to build or check takes the others to the reference, imposed with
        ops.set_op_paths)."""
        paths = ops.op_paths(self.device_type)
        if self.ddp:
            can = torch.tensor([paths[op] == "ext" for op in ops.OPS], dtype=torch.int32,
                               device=self.device if self.device_type == "cuda" else "cpu")
            dist.all_reduce(can, op=dist.ReduceOp.MIN)
            agreed = {op: "ext" if c else "torch" for op, c in zip(ops.OPS, can.tolist())}
            if any(agreed[op] != paths[op] for op in ops.OPS):
                ops.set_op_paths(self.device_type, agreed)
                paths = ops.op_paths(self.device_type)
        return paths

    def barrier(self):
        if self.ddp:
            # NCCL: on this rank's GPU (without device_ids it guesses one from the rank)
            dist.barrier(device_ids=[torch.device(self.device).index] if self.device_type == "cuda" else None)

    def close(self):
        """The end of a run that finished, on every rank: all ranks meet at a last barrier, so no
        collective is outstanding anywhere and no rank leaves while another still talks to it;
        then the process group is destroyed, its threads stopped and joined."""
        if self.ddp and dist.is_initialized():
            self.barrier()
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
        # before the group exists: torch.distributed.nn's functions take group=group.WORLD as a
        # default argument, evaluated when it is imported, and torch imports it lazily (building
        # a torch.optim optimizer does, through torch._dynamo). Imported after
        # init_process_group, ten function defaults would hold the default group for good, so
        # that destroy_process_group could not free it: its threads would outlive the interpreter.
        importlib.import_module("torch.distributed.nn")
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo",
                                timeout=timedelta(seconds=ddp_timeout))
        sys.excepthook = _collective_failed_hook(rank, ddp_timeout)
        atexit.register(_destroy_at_exit)
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device=device, device_type=device_type, dtype=dtype, ddp=ddp, rank=rank, world_size=world_size)


def _destroy_at_exit():
    """Any way out after setup that did not pass close(): destroy the group before Python
    finalizes (atexit runs first), without a barrier, since the other ranks may be anywhere. The
    process already fails; a group too broken to destroy adds nothing to say."""
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:
            pass


def _collective_failed_hook(rank: int, timeout: int):
    def hook(kind, e, tb):
        if issubclass(kind, (RuntimeError, dist.DistError)):
            first = (str(e).strip().splitlines() or [""])[0][:300]
            print(f"error: rank {rank}: a collective failed ({kind.__name__}: {first}); another rank has "
                  f"died or did not answer within ddp_timeout={timeout}s", file=sys.stderr, flush=True)
            os._exit(1)
        sys.__excepthook__(kind, e, tb)
    return hook
