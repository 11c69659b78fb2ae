"""
A torchrun job that finished its work must exit cleanly, every time. Runs a short two-rank job
many times, a few at once, and fails unless every job exited 0 with every rank clean: no C++ abort
('terminate called without an active exception', SIGABRT) on the way out. First, one two-rank
job checks the cause directly: after rt.close() no backend thread (gloo's, NCCL's, the store's)
may be left in a rank (a thread left over is what aborts a rank that already finished, when it
still holds its last collective's tensors as Python exits; how often that happens depends on
the machine's load, so the repeated jobs alone would catch it only now and then).

    python tests/stress_distributed.py                        # train.py, 20 jobs, 2 at a time
    python tests/stress_distributed.py --job=teardown --runs=60 --pin --busy=2
    python tests/stress_distributed.py --job=evaluate --root=/path/to/another/checkout

Jobs (--job):
  train     tests/test_distributed.py's short run: a tiny model on 4x4 Sudoku, --max_steps=10,
            ending with an evaluation and a checkpoint (two gathers), then rt.close()
  evaluate  evaluate.py on two ranks, of a checkpoint trained here first
  teardown  the end of train.py's run without the training (seconds, not tens of seconds):
            runtime.setup, an optimiser built after it, an all_reduce, two gathers, rank 0 writes
            a checkpoint, rt.close() (TEARDOWN below)

Load: --parallel jobs at once, --busy busy-loop processes beside them, --pin puts each job
(launcher and ranks) on one core, round robin, the busy loops too.

Exit status 0 when every job was clean, 1 otherwise (each bad job's stderr tail is printed).
"""
import argparse
import contextlib
import itertools
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# the same tiny run as tests/test_distributed.py's `runs` fixture
TINY = ["--hidden_size=32", "--num_heads=2", "--L_layers=1", "--H_cycles=2", "--L_cycles=1", "--halt_max_steps=2",
        "--halt_exploration_prob=0.0", "--global_batch_size=16", "--epochs=4", "--eval_interval=2",
        "--puzzle_emb_ndim=16", "--puzzle_emb_len=2", "--compile=False", "--log_interval=1", "--ema_rate=0.9"]
ENV = {**os.environ, "TRM_USE_EXT": "off", "OMP_NUM_THREADS": "1"}
BAD = ("terminate called", "SIGABRT", "Signal 6", "core dumped", "Traceback")
# backend threads (gloo's workers and socket loop, NCCL's watchdog and heartbeat, the store's)
BACKEND_THREADS = ("gloo", "pt_gloo", "pt_nccl", "pt_tcpstore")

# the end of train.py's run on a rank, with the project's runtime.py (run from sys.argv[1])
TEARDOWN = '''
import os, sys
sys.path.insert(0, sys.argv[1])
import torch
import runtime
rt = runtime.setup("cpu")
# as train.py: the optimiser comes after the process group (torch imports torch.distributed.nn then)
opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1)
rt.all_reduce(torch.ones(4))
carries = rt.gather({"carry": torch.randn(16, 8)})     # train.py's save(): the carries, the RNG states,
rngs = rt.gather((torch.get_rng_state(), None))       # then rank 0 writes the checkpoint
if rt.master:
    torch.save({"weights": torch.randn(256, 256), "carries": carries, "rngs": rngs},
               os.path.join(os.path.dirname(os.path.abspath(__file__)), f"ckpt-{os.getppid()}.pt"))
rt.close()
if len(sys.argv) > 2:  # list the threads left (this takes long enough to hide a late one)
    left = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
    print(f"rank {rt.rank} threads after close: {left}", flush=True)
print(f"rank {rt.rank} closed", flush=True)
'''


def _busy(stop, core):
    if core is not None:
        os.sched_setaffinity(0, {core})
    while not stop.is_set():
        sum(range(10000))


def build_data(d):
    sys.path.insert(0, ROOT)
    import prepare_sudoku
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):  # its progress bars
        return prepare_sudoku.build(os.path.join(d, "data"), source="generate", size=4, num_train=100,
                                    num_test=40, min_blanks=6, num_aug=1, seed=0)


def command(job, root, data, d, i, python):
    launcher = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    if job == "teardown":
        return launcher + [os.path.join(d, "teardown.py"), root]
    if job == "evaluate":
        return launcher + ["evaluate.py", f"--ckpt={d}/ckpt/ckpt.pt", "--batch_size=16", "--html=False",
                           f"--out_dir={d}/eval{i}"]
    return launcher + ["train.py", f"--data_dir={data}", *TINY, f"--out_dir={d}/run{i}", "--max_steps=10"]


def clean(job, rc, out, err):
    """Whether a job exited as a finished job should: 0, its work done, nothing aborted."""
    done = {"train": "done: 10 steps" in out, "evaluate": "2 ranks" in out,
            "teardown": out.count("closed") == 2}[job]
    return rc == 0 and done and not any(b in err for b in BAD)


def stress(runs=20, parallel=2, busy=0, job="train", pin=False, root=ROOT, python=sys.executable, verbose=True):
    """Runs the job `runs` times, `parallel` at once, beside `busy` busy-loop processes (pin: each
    job and busy loop on one core). Returns (bad jobs as [(index, exit status, whether a rank
    aborted, stderr tail)], wall seconds)."""
    t0 = time.time()
    cores = sorted(os.sched_getaffinity(0))
    next_core = itertools.cycle(cores)
    bad = []
    stop = multiprocessing.Event()
    loops = [multiprocessing.Process(target=_busy, args=(stop, next(next_core) if pin else None), daemon=True)
             for _ in range(busy)]
    for p in loops:
        p.start()
    try:
        with tempfile.TemporaryDirectory(prefix="trm-stress-") as d:
            data = None
            if job == "teardown":
                with open(os.path.join(d, "teardown.py"), "w") as f:
                    f.write(TEARDOWN)
            else:
                data = build_data(d)
            if job == "evaluate":  # a checkpoint to evaluate (one process)
                subprocess.run([python, "train.py", f"--data_dir={data}", *TINY, f"--out_dir={d}/ckpt", "--max_steps=2"],
                               cwd=root, env=ENV, check=True, capture_output=True)
            pending = list(range(runs))
            live = {}
            while pending or live:
                while pending and len(live) < parallel:
                    i = pending.pop(0)
                    core = next(next_core) if pin else None
                    live[i] = subprocess.Popen(
                        command(job, root, data, d, i, python), cwd=root, env=ENV, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        preexec_fn=(lambda c=core: os.sched_setaffinity(0, {c})) if pin else None)
                i = next(iter(live))
                p = live.pop(i)
                try:
                    out, err = p.communicate(timeout=300)
                except subprocess.TimeoutExpired:
                    p.kill()
                    out, err = p.communicate()
                ok = clean(job, p.returncode, out, err)
                if not ok:
                    bad.append((i, p.returncode, "terminate called" in err, err[-4000:]))
                if verbose:
                    print(f"job {i}: exit {p.returncode}, {'clean' if ok else 'NOT CLEAN'}", flush=True)
    finally:
        stop.set()
        for p in loops:
            p.join(5)
            if p.is_alive():
                p.terminate()
    return bad, time.time() - t0


def threads_after_close(root=ROOT, python=sys.executable):
    """One two-rank teardown job that lists each rank's threads after rt.close(). Returns (the
    ranks' lines naming a backend thread, the job's output when it failed, else '')."""
    with tempfile.TemporaryDirectory(prefix="trm-stress-") as d:
        script = os.path.join(d, "teardown.py")
        with open(script, "w") as f:
            f.write(TEARDOWN)
        p = subprocess.run([python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script, root,
                            "threads"], cwd=root, env=ENV, text=True, capture_output=True, timeout=300)
    # the ranks print to one pipe: their lines may run into each other
    lines = re.findall(r"rank \d+ threads after close: \[[^\]]*\]", p.stdout)
    left = [line for line in lines if any(t in line for t in BACKEND_THREADS)]
    failed = p.returncode != 0 or len(lines) != 2 or any(b in p.stderr for b in BAD)
    return left, (p.stdout + p.stderr)[-4000:] if failed else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--job", choices=["train", "evaluate", "teardown"], default="train")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes beside the jobs")
    ap.add_argument("--pin", action="store_true", help="each job, and each busy loop, on one core (round robin)")
    ap.add_argument("--root", default=ROOT, help="the checkout whose scripts run (default: this one)")
    a = ap.parse_args()
    root = os.path.abspath(a.root)
    left, failed = threads_after_close(root)
    for line in left:
        print(f"stress_distributed: a backend thread outlived rt.close(): {line}", flush=True)
    if failed:
        print(f"stress_distributed: the teardown job that lists the threads failed:\n{failed}", flush=True)
    bad, wall = stress(a.runs, a.parallel, a.busy, a.job, a.pin, root)
    for i, rc, _, tail in bad:
        print(f"--- job {i}: exit {rc}:\n{tail}", file=sys.stderr)
    aborts = sum(aborted for _, _, aborted, _ in bad)
    print(f"stress_distributed: {a.runs - len(bad)}/{a.runs} two-rank {a.job} jobs exited cleanly; {len(bad)} did not, "
          f"{aborts} of them with 'terminate called'; backend threads left after rt.close(): "
          f"{'yes' if left else 'none'} ({a.parallel} at a time, {a.busy} busy loops{', pinned' if a.pin else ''}, "
          f"torch {torch_version(root)}, {wall:.0f} s)", flush=True)
    sys.exit(1 if bad or left or failed else 0)


def torch_version(root):
    return subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                          text=True, cwd=root).stdout.strip()


if __name__ == "__main__":
    main()
