"""
Benchmark TRM's custom ops and one whole supervision step, on the PyTorch reference ('torch')
and on the csrc/ extension ('ext') side by side, in the same run.

    python bench.py                                   # ops + steps at 'arc' and 'sudoku'
    python bench.py --time_ops=False --configs=sudoku --profile=True   # profiler table of one step
    python bench.py --backends=torch --iters=1 --warmup=0         # reference only, quick
    python bench.py --time_ops=False --configs=timing --backends=torch  # how fast is this machine
    python bench.py --time_ops=False --time_steps=False                 # evaluation: fixed depth vs halting=q
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
"""
import filecmp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import statistics
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
            fn = getattr(ops, f"{op}_cross_entropy")
            x = logits.detach().requires_grad_()

            def call():
                x.grad = None
                loss = fn(x, labels)
                loss.backward(torch.ones_like(loss))

            results = {}
            for name in names:
                with using(name):
                    results[name] = measure(call)
            report(f"{op}_ce fwd+bwd {task}", f"{N}x{V} {str(dtype)[6:]}", results, N, nbytes)
        del logits, labels, x

    # the puzzle-embedding table: B ids drawn from B/4 distinct rows, so ids repeat
    n_rows, D, B = (1_000_000 if cuda else 100_000), 512, ops_batch
    table = torch.randn(n_rows, D, device=device) * 0.01
    pool = torch.randperm(n_rows, device=device)[:max(1, B // 4)]
    ids = pool[torch.randint(0, len(pool), (B,), device=device)].int()
    U = ids.unique().numel()
    grads = torch.randn(B, D, device=device)
    shape = f"{n_rows}x{D} B={B} U={U}"

    results = {}
    for name in names:
        with using(name):
            results[name] = measure(lambda: ops.gather_rows(table, ids))
    # read B rows and the ids, write B rows
    report("gather_rows", shape, results, B, 2 * B * D * 4 + B * 4)

    results = {}
    for name in names:
        with using(name):
            results[name] = measure(lambda: ops.sparse_sign_sgd_(table, ids, grads, 1e-4, 0.1))
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

    results = {}
    for name in names:
        with using(name):
            results[name] = measure(call)
    shape = f"B={B} h={cfg.hidden_size} S={cfg.prefix_len}+{cfg.seq_len}"
    report(f"train_step {cfg_name} ({model.num_params() / 1e6:.2f}M)", shape, results, B,
           flops=step_flops(model, cfg, B))
    if cfg_name == "timing":
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


def run_measured(cmd: list[str], cwd: str) -> tuple[float, float]:
    """Run cmd to completion; (wall seconds, peak MB of its process tree)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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


def identical(a: str, b: str) -> bool:
    files = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    return bool(files) and all(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False) for f in files)


if prepare:
    bench_prepare()
    raise SystemExit(0)

names = [b.strip() for b in backends.split(",") if b.strip()]
for b in names:
    if b not in ("torch", "ext"):
        raise SystemExit(f"error: unknown backend {b!r} in --backends: expected 'torch' and/or 'ext'")
dev_name = torch.cuda.get_device_name(device) if cuda else f"cpu x{torch.get_num_threads()} threads"
print(f"bench: device={device} ({dev_name})  torch={torch.__version__}  dtype={str(dtype)[6:]}  "
      f"warmup={warmup} iters={iters} (median)")
if "ext" in names:
    reason = ext_unavailable_reason()
    if reason is None:
        print("ext: available; the faster path of each op here (what TRM_USE_EXT=auto/on picks): "
              + ", ".join(f"{op} {path}" for op, path in ops.faster_paths(ops.load_ext(), device).items()))
    else:
        print(f"ext: unavailable ({reason})")
        names.remove("ext")
if cuda:
    copy_gbs = copy_bandwidth()
    print(f"device copy bandwidth: {copy_gbs:.0f} GB/s (1 GiB float32 .copy_, read + write)")
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
