"""
Train a Tiny Recursive Model, on one CPU or GPU or under torchrun.

    python train.py                                # mini Sudoku: prepared on first use, CPU minutes
    python train.py config/sudoku.py --global_batch_size=64   # a recipe, with overrides
    python train.py config/sudoku.py --init_from=resume   # continue from out_dir/ckpt.pt
    python train.py config/arc_ttt.py --init_from=CKPT --data_dir=data/arc-new   # new puzzles
    torchrun --standalone --nproc_per_node=2 train.py   # the same run on 2 processes

The defaults below are the mini Sudoku run; config/*.py files and --key=value override them
(configurator.py; --help lists them). Checkpoints (out_dir/ckpt.pt) hold everything a run needs to
continue (REFERENCE.md §6.3); every evaluation also keeps step_N.pt, and best.pt by best_metric.
"""
import contextlib
import importlib
import json
import os
import shutil
import time
from dataclasses import asdict

import torch

import checkpoint
import ops
import report
import runtime
from data import PuzzleDataset, read_identifiers
from evaluate import ARCEvaluator, evaluate_split, is_arc_dataset, subset_tasks
from model import TRM, Carry, TRMConfig, supervision_weights
from optim import EMA, depth_at, depth_stages, lr_at, make_optimizers, train_step

# -----------------------------------------------------------------------------
# default config: the mini Sudoku (generated 6x6 puzzles, half the cells blank)
# I/O
out_dir = "out/sudoku-mini"
data_dir = "data/sudoku-mini"  # one dataset from prepare_*.py, or several joined by commas
prepare = ""                   # the command that builds data_dir (the error for a missing dataset quotes it)
test_data_dir = ""             # test split from here instead ('' = data_dir)
init_from = "scratch"          # 'scratch', 'resume' (out_dir/ckpt.pt), or a checkpoint to start from: a path
                               # or hf:OWNER/REPO/PATH, ours or a reference's (its architecture, its weights)
init_identifiers = ""          # identifiers.json of the data the init_from checkpoint trained on ('' = found
                               # from the checkpoint) so that puzzle-table rows move with their puzzles' names
freeze_weights = False         # train only the puzzle-embedding table (new puzzles' rows)
unfreeze_at = 0.0              # with freeze_weights: train every weight from this fraction of the schedule on (0 = never)
trust_checkpoint = False       # load a checkpoint that needs full unpickling (can run code): only files you trust
keep_checkpoints = 0           # step_N.pt written at every evaluation: keep the newest K (0 = all)
best_metric = ""               # keep best.pt by this evaluation metric, e.g. 'val/pass@2', 'val/exact_accuracy'
eval_interval = 10             # epochs between evaluations (a divisor of epochs)
eval_max_examples = 0          # evaluate a fixed, seeded subset of about this many test (and val) examples
log_interval = 50              # steps between progress lines
ckpt_interval = 0              # steps between extra checkpoints (0: at evaluations and the end)
max_steps = 0                  # stop after this many steps (0: all epochs); the schedule is unchanged
wandb_log = False
wandb_project = "trm"
wandb_run_name = ""            # '' = out_dir's name
# data
global_batch_size = 128
grad_accum_steps = 1           # micro-batches per optimiser step, each of global_batch_size / (world size x this) rows
epochs = 40                    # an epoch draws one puzzle of every group (original puzzle)
# model (TRMConfig)
arch = "trm"                   # 'trm', or its successor 'urm' / ancestor 'hrm' (REFERENCE.md §8, §9)
hidden_size = 64
num_heads = 4
expansion = 4.0
L_layers = 2                   # the block stack (URM: num_layers; HRM: the L stack)
H_layers = 0                   # HRM: the H stack
H_cycles = 2
L_cycles = 2
puzzle_emb_ndim = 0
puzzle_emb_len = 0
pos_encodings = "none"
mlp_t = True                   # an MLP across the 36 cells mixes them (the paper's Sudoku choice)
mlp_kind = "swiglu"            # channel MLP: 'swiglu', or URM's 'conv_swiglu' (a causal depthwise conv inside)
conv_dtype = "bfloat16"        # conv_swiglu's conv parameters and arithmetic: URM's 'bfloat16' or 'float32'
halt_max_steps = 4
halt_exploration_prob = 0.1
no_ACT_continue = True
loss_type = "stablemax"
# optimisation: AdamATan2 (or Muon) for the weights, sign-SGD for the puzzle table, same schedule
optimizer = "adam_atan2"       # 'adam_atan2', or 'muon': Muon for 2-D weights, AdamW for the rest (URM ARC-AGI-2)
lr = 3e-3
lr_min_ratio = 1.0
lr_warmup_steps = 100
beta1 = 0.9
beta2 = 0.95
weight_decay = 0.1
puzzle_emb_lr = 1e-2
puzzle_emb_weight_decay = 0.1
ema = True                     # evaluate and export the exponential moving average of the weights
ema_rate = 0.99                # a short run: average over the last ~100 steps (paper: 0.999)
# cheaper training (CGAR, arXiv 2511.08653; off by default, as in the references; BENCHMARKS.md)
depth_schedule = ""            # train shallower early: 'START:HxL,...' stages (optim.depth_stages), 'cgar' for
                               # the paper's three; evaluation always runs the full H_cycles x L_cycles
supervision_decay = 1.0        # ACT step t's loss weighted decay**(t-1), the weights averaging 1 (paper: 0.7)
# system
device = "auto"                # 'auto' (cuda if present), 'cpu', 'cuda', 'cuda:1', ...
dtype = "auto"                 # forward dtype: 'auto' (bfloat16 on CUDA, float32 on CPU), 'float32', 'bfloat16'
compile = None                 # torch.compile the recursion; None = on for CUDA only
ddp_timeout = 300              # torchrun: seconds a collective waits for the other ranks before the job stops
seed = 0
# -----------------------------------------------------------------------------
from configurator import configure  # noqa: E402

_given = configure(globals())  # the settings a config file or the command line set
config = {k: v for k, v in globals().items()
          if not k.startswith("_") and isinstance(v, (int, float, bool, str, type(None)))}
# datasets small enough to build on first use: data_dir -> the builder whose MINI recipe makes it
EMBEDDED_DATA = {"data/sudoku-mini": "prepare_sudoku", "data/arc-mini": "prepare_arc"}
# -----------------------------------------------------------------------------

# where this runs: device, dtype, torchrun (plain all_reduce rather than DDP, because the
# puzzle-embedding table is a buffer updated by its own sparse optimiser, outside DDP's reach)
_, rank, world_size = runtime.world()
if global_batch_size % world_size:
    raise SystemExit(f"error: global_batch_size {global_batch_size} is not divisible by the world size {world_size}")
if grad_accum_steps < 1 or global_batch_size % (world_size * grad_accum_steps):
    raise SystemExit(f"error: global_batch_size {global_batch_size} is not divisible by the world size {world_size} "
                     f"x grad_accum_steps {grad_accum_steps}")
if epochs % eval_interval:
    raise SystemExit(f"error: eval_interval {eval_interval} must divide epochs {epochs}")
# the output folder: a new or empty one, or an earlier run's (resume); nothing else is touched
try:
    checkpoint.check_folder(out_dir, "run", "--out_dir")
except ValueError as e:
    raise SystemExit(f"error: out_dir {e}")
ckpt_path = os.path.join(out_dir, "ckpt.pt")
if init_from != "resume" and os.path.exists(ckpt_path):
    raise SystemExit(f"error: {ckpt_path} holds an earlier run's checkpoint; continue it with --init_from=resume, "
                     f"or choose another --out_dir (nothing was changed)")
rt = runtime.setup(device, dtype, ddp_timeout)
device, master, log = rt.device, rt.master, rt.log
if compile is None:
    compile = rt.device_type == "cuda"
torch.manual_seed(seed + rank)

# data -------------------------------------------------------------------------
if not os.path.exists(data_dir) and data_dir in EMBEDDED_DATA:
    if master:
        builder = importlib.import_module(EMBEDDED_DATA[data_dir])
        log(f"preparing {data_dir} with {builder.__name__}.py (its MINI recipe) ...")
        builder.build(data_dir, **builder.MINI)
    rt.barrier()
train_paths = data_dir.split(",")
test_paths = (test_data_dir or data_dir).split(",")
for path in {*train_paths, *test_paths}:
    if not os.path.isdir(path):
        raise SystemExit(f"error: dataset directory {path} not found" + (f"; build it with: {prepare}" if prepare else ""))
try:
    train_data = PuzzleDataset(train_paths, "train", global_batch_size, rank=rank, world_size=world_size,
                               seed=seed, epochs_per_iter=eval_interval)
    test_data = PuzzleDataset(test_paths, "test", global_batch_size, rank=rank, world_size=world_size)
    # a val split (prepare_*.py --val_pairs / --val_fraction): evaluated beside test, for choosing
    # checkpoints without looking at the test answers
    val_data = (PuzzleDataset(train_paths, "val", global_batch_size, rank=rank, world_size=world_size)
                if os.path.isdir(os.path.join(train_paths[0], "val")) else None)
except (OSError, ValueError) as e:
    raise SystemExit(f"error: {e}")
meta = train_data.metadata
eval_note = ""
if eval_max_examples:  # quick checks: the same subset at every evaluation, said on every line
    whole = test_data.num_examples()
    eval_note = (f" [subset: {test_data.limit(eval_max_examples, seed)} of {whole} test examples, whole puzzles, "
                 f"seed {seed}]")
    if val_data is not None:
        val_data.limit(eval_max_examples, seed)
identifiers = read_identifiers(train_paths[0])  # the names of the puzzle table's rows, kept in checkpoints
if best_metric and (best_metric.partition("/")[0] not in ("val", "test") or not best_metric.partition("/")[2]
                    or (best_metric.startswith("val/") and val_data is None)):
    raise SystemExit(f"error: best_metric {best_metric!r} must be 'val/METRIC' (a dataset with a val split) or "
                     f"'test/METRIC'" + ("; this dataset has no val split" if val_data is None else ""))
# the schedule's length: the reference's estimate, from the dataset's size
total_steps = int(epochs * meta.total_groups * meta.mean_puzzle_examples / global_batch_size)
last_step = min(total_steps, max_steps) if max_steps > 0 else total_steps
total_passes = epochs // eval_interval

# model and optimisers ---------------------------------------------------------
init = None
if init_from not in ("scratch", "resume"):  # a checkpoint to start from: its architecture decides
    init = checkpoint.start_from(init_from, config, _given, trust_checkpoint)
    config.update(init["model"])
try:  # an impossible combination of settings (say, URM with mlp_t) is one line, exit 1
    model_cfg = TRMConfig.from_settings(config, vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                                        num_puzzle_identifiers=meta.num_puzzle_identifiers, forward_dtype=rt.dtype)
    model = TRM(model_cfg).to(device)
    optimizers, base_lrs = make_optimizers(model, **config, world_size=world_size)
    stages = depth_stages(depth_schedule, model_cfg.H_cycles, model_cfg.L_cycles)
    if not 0 < supervision_decay <= 1:
        raise ValueError(f"supervision_decay {supervision_decay} must be in (0, 1]")
except ValueError as e:
    raise SystemExit(f"error: {e}")
if supervision_decay != 1.0:
    model.step_weights = supervision_weights(supervision_decay, model_cfg.halt_max_steps).to(device)
for t in list(model.parameters()) + list(model.buffers()):  # every rank starts from rank 0's weights
    rt.broadcast(t.data)
if init is not None:  # its weights; puzzle-table rows move with their puzzles' names, new puzzles get the mean
    state, moved = checkpoint.weights_for(init["kind"], init["ck"], init["path"], identifiers, given=init_identifiers)
    checkpoint.load_weights(model, state, init_from)
    log(f"started from {init_from} ({init['kind']} checkpoint), with fresh optimisers and schedule"
        + (f"; {moved}" if moved else ""))
    del init, state
if freeze_weights and not hasattr(model, "puzzle_emb"):
    raise SystemExit("error: freeze_weights trains only the puzzle-embedding table, and this model has none")
# freeze_weights: the weights take no gradient (AdamATan2 / Muon skip them) until unfreeze_at
frozen_until = (round(unfreeze_at * total_steps) if unfreeze_at > 0 else last_step) if freeze_weights else 0
ema_model = EMA(model, ema_rate) if ema else None
step, passes_done, carry, best = 0, 0, None, None

if init_from == "resume":
    ck = checkpoint.load(ckpt_path, map_location=device, trust=trust_checkpoint)
    # the architecture must match; the forward dtype may change (a GPU run resumed on a CPU)
    diff = {k: (v, asdict(model_cfg).get(k)) for k, v in ck["model_config"].items()
            if k != "forward_dtype" and asdict(model_cfg).get(k) != v}
    if diff:
        raise SystemExit(f"error: {ckpt_path} was trained with another model config (saved, now): {diff}")
    model.load_state_dict(ck["model"])
    for opt, state in zip(optimizers, ck["optimizers"]):
        opt.load_state_dict(state)
    if ema_model is not None and ck["ema"] is not None:
        ema_model.load_state_dict(ck["ema"])
    step, passes_done, best = ck["step"], ck["passes_done"], ck.get("best")
    if ck.get("op_paths"):  # each op keeps the path it ran on (TRM_USE_EXT still overrides)
        try:
            ops.set_op_paths(ck["op_paths"].get("device_type", rt.device_type), ck["op_paths"])
        except (ValueError, TypeError, AttributeError) as e:
            raise SystemExit(f"error: {ckpt_path}: op_paths {ck['op_paths']!r} is not a valid record of op paths ({e})")
    train_data.load_state_dict(ck["data"])
    # the carry is saved for the global batch: each rank takes its rows, so a run resumes on any
    # number of ranks
    if ck["carry"] is not None:
        rows = ck["carry"]["steps"].shape[0]
        if rows == global_batch_size:
            local = global_batch_size // world_size
            carry = Carry.from_state(Carry.state_rows(ck["carry"], rank * local, (rank + 1) * local),
                                     device).split(grad_accum_steps)
        else:
            log(f"note: the checkpoint's ACT carry holds {rows} rows, the global batch {global_batch_size}: "
                f"every row starts a new puzzle")
    # each rank's random state; a rank the saved run did not have keeps its fresh seed
    if rank < len(ck["rng"]["torch"]):
        torch.set_rng_state(ck["rng"]["torch"][rank])
        if rt.device_type == "cuda" and ck["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(ck["rng"]["cuda"][rank])
    saved_ranks = len(ck["rng"]["torch"])
    log(f"resumed from {ckpt_path} at step {step}" + (f" (saved by {saved_ranks} ranks, now {world_size})"
                                                     if saved_ranks != world_size else ""))

# each op's path (csrc/ extension or PyTorch reference), decided once for the whole run, the same
# on every rank, and recorded in every checkpoint
op_paths = rt.op_paths()
log(f"ops on {rt.device_type}: " + ", ".join(f"{op} {op_paths[op]}" for op in ops.OPS)
    + f" ({op_paths['source']}; extension check: {op_paths['ext_check']})")
if compile:
    log("compiling the recursion with torch.compile ...")
    model.recurse = torch.compile(model.recurse)

log(f"{model.num_params() / 1e6:.2f}M parameters, {total_steps} steps in the schedule "
    f"({epochs} epochs x {meta.total_groups} groups / batch {global_batch_size}), device {device}, "
    f"{rt.dtype}, world size {world_size}")
if master and wandb_log:
    import wandb
    wandb.init(project=wandb_project, name=wandb_run_name or os.path.basename(out_dir.rstrip("/")),
               config=config, resume="allow")


def evaluate_split_of(data, paths, puzzles, name):
    """One split's metrics per set (and 'ARC' on ARC data: pass@K from the votes of every
    augmented variant, a fresh vote pool each time). Returns (metrics, the ARC result or None)."""
    arc = None
    if is_arc_dataset(paths[0], puzzles):
        arc = ARCEvaluator(paths[0], blank_identifier_id=data.metadata.blank_identifier_id, puzzles=puzzles)
        if data.subset is not None:  # score only the tasks the subset holds
            keep = subset_tasks(data, arc.names)
            arc.tasks = {t: v for t, v in arc.tasks.items() if t in keep}
    long = master and data.num_examples() >= 10 * data.global_batch_size
    results = evaluate_split(model, data, device, arc=arc, reduce=rt.all_reduce if rt.ddp else None,
                             progress=f"evaluating {name} at step {step}{eval_note}" if long else None)["sets"]
    for m in results.values():
        m.pop("count")
    r = None
    if arc is not None:
        arc.gather(rt)
        if master:
            r = arc.result()
            results["ARC"] = r["metrics"]
        if set(arc.tasks) <= arc.unsolved:  # placeholder answers: nothing to score
            log(f"{name}: no solutions given for its tasks: no score (the attempts go to submission.json)")
            results = {}
    return {(f"{name}/{k}" if name != "test" else k): v for k, v in results.items()}, r


def evaluate():
    """The test split's metrics (and the val split's, keyed 'val/SET'), with the EMA weights
    swapped into the model meanwhile; on ARC data the test votes' submission.json."""
    with ema_model.swapped_in(model) if ema_model is not None else contextlib.nullcontext():
        results, arc = evaluate_split_of(test_data, test_paths, "test_puzzles.json", "test")
        if val_data is not None:
            results.update(evaluate_split_of(val_data, train_paths, "val_puzzles.json", "val")[0])
    if arc is not None:
        report.write_json(os.path.join(out_dir, "submission.json"), arc["submission"])
    return results


def metric_value(results, name):
    """The value of best_metric 'SPLIT/METRIC' (e.g. 'val/pass@2', 'test/exact_accuracy') in
    evaluate()'s results: the split's ARC votes first, then its first set."""
    split, _, metric = name.partition("/")
    sets = [k for k in results if (k.startswith(f"{split}/") if split != "test" else "/" not in k)]
    for k in sorted(sets, key=lambda k: not k.endswith("ARC")):
        if metric in results[k]:
            return results[k][metric]
    raise SystemExit(f"error: best_metric {name!r}: no {metric!r} among the {split} results ({sorted(results)})")


def improves_best(results):
    """Whether this evaluation improves best_metric (then `best` records it)."""
    global best
    if not best_metric:
        return False
    value = metric_value(results, best_metric)
    if best is not None and (value >= best["value"] if "loss" in best_metric else value <= best["value"]):
        return False
    best = {"metric": best_metric, "value": value, "step": step}
    return True


def keep_history(improved):
    """After ckpt.pt is written at an evaluation: step_N.pt beside it (a hard link: no copy), only
    the newest keep_checkpoints of them, and best.pt when best_metric improved."""
    link_or_copy(ckpt_path, os.path.join(out_dir, f"step_{step}.pt"))
    steps = sorted(int(f[5:-3]) for f in os.listdir(out_dir) if f.startswith("step_") and f.endswith(".pt"))
    for old in steps[:-keep_checkpoints] if keep_checkpoints > 0 else []:
        os.remove(os.path.join(out_dir, f"step_{old}.pt"))
    if improved:
        link_or_copy(ckpt_path, os.path.join(out_dir, "best.pt"))
        log(f"best.pt: {best_metric} {best['value']:.4f} at step {step}")


def link_or_copy(src, dst):
    """dst becomes the file src is now (a hard link where the file system allows, else a copy),
    replacing dst atomically."""
    tmp = f"{dst}.tmp-{os.getpid()}"
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def save(metrics=None):
    """Every rank calls this: the master writes its state with the ACT carry and random states of
    all ranks (the carry as one global batch)."""
    carries = rt.gather(Carry.cat(carry).to_state() if carry is not None else None)
    rngs = rt.gather((torch.get_rng_state(), torch.cuda.get_rng_state() if rt.device_type == "cuda" else None))
    if not master:
        return
    improved = metrics is not None and improves_best(metrics)
    checkpoint.save({
        "model": model.state_dict(),
        "ema": ema_model.state_dict() if ema_model is not None else None,
        "optimizers": [opt.state_dict() for opt in optimizers],
        "step": step,
        "passes_done": passes_done,
        "data": train_data.state_dict(),
        "carry": Carry.cat_states(carries),
        "rng": {"torch": [r[0] for r in rngs], "cuda": [r[1] for r in rngs] if rt.device_type == "cuda" else None},
        "config": config,
        "model_config": asdict(model_cfg),
        "world_size": world_size,
        "metrics": metrics,
        "identifiers": identifiers,
        "best": best,
        "op_paths": op_paths,
    }, ckpt_path)
    if metrics is not None:  # an evaluation's checkpoint
        keep_history(improved)


def evaluate_and_save():
    global outside_training
    t0 = time.time()
    trained = t0 - t_start - outside_training  # this session's wall time in training steps so far
    results = evaluate()
    for set_name, m in results.items():
        log(f"eval step {step} [{set_name}] " + " ".join(f"{k} {v:.4f}" for k, v in m.items())
            + f" ({time.time() - t0:.1f}s; after {trained:.1f}s of training)" + eval_note)
    if master and wandb_log:
        wandb.log({f"eval/{s}/{k}": v for s, m in results.items() for k, v in m.items()}, step=step)
    save(results)
    outside_training += time.time() - t0
    return results


class Running:
    """The training metrics since the last progress line, summed on the device (nothing waits for
    them between lines), and the first step whose loss was not finite."""

    def __init__(self):
        self.sums, self.steps = None, 0
        self.bad_step = torch.zeros((), dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, metrics, step):
        self.keys = sorted(metrics)
        vec = torch.stack([metrics[k].double() for k in self.keys])
        self.sums = vec if self.sums is None else self.sums + vec
        self.steps += 1
        first_bad = ~torch.isfinite(metrics["loss"]) & (self.bad_step == 0)
        self.bad_step = torch.where(first_bad, step, self.bad_step)
        self.bad_loss = torch.where(first_bad, metrics["loss"].double(), self.bad_loss)

    def check_finite(self):
        """Stop the run, on every rank, if a loss so far was not finite: the last checkpoint was
        written before it and stays as it is."""
        bad = int(rt.all_reduce(self.bad_step.clone(), op="max"))
        if bad:
            raise SystemExit(f"error: non-finite loss {float(self.bad_loss):g} at step {bad}; stopping. The last "
                             f"checkpoint ({ckpt_path}) is intact: lower lr or check the data.")

    def read(self):
        """The sums over all ranks since the last read, as a dict, and the number of steps."""
        m = dict(zip(self.keys, rt.all_reduce(self.sums).cpu().tolist()))
        n_steps, self.sums, self.steps = self.steps, None, 0
        return m, n_steps


# training loop ----------------------------------------------------------------
if master:
    checkpoint.mark_folder(out_dir, "run", "train.py")
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
model.train()
train_iter = train_data.iter_train()
t_start, step_start = time.time(), step
outside_training = 0.0  # seconds since t_start spent evaluating and writing evaluation checkpoints
running = Running()
evaluated_at = -1
while step < last_step:
    item = next(train_iter, None)
    if item is None:  # a pass of eval_interval epochs is over: evaluate, checkpoint, go on
        passes_done += 1
        running.check_finite()
        evaluate_and_save()
        evaluated_at = step
        if passes_done >= total_passes:
            break
        train_iter = train_data.iter_train()
        continue
    set_name, batch = item
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    # the rank's rows in grad_accum_steps micro-batches, each with its own carry
    rows = len(batch["inputs"]) // grad_accum_steps
    micro = [{k: v[i * rows:(i + 1) * rows] for k, v in batch.items()} for i in range(grad_accum_steps)]
    if carry is None:
        carry = [model.initial_carry(m) for m in micro]
    step += 1
    frozen = step <= frozen_until
    if frozen == next(model.parameters()).requires_grad:  # freeze or unfreeze the weights
        for p in model.parameters():
            p.requires_grad_(not frozen)
        log(f"step {step}: " + ("only the puzzle table trains" if frozen else "every weight trains from here on"))
    depth = depth_at(stages, step, total_steps)
    if depth != model.train_depth:  # a stage of the depth curriculum begins (under compile: one recompile)
        model.train_depth = depth
        log(f"step {step}: training at depth H_cycles={depth[0]} L_cycles={depth[1]} (depth_schedule; evaluation "
            f"at {model_cfg.H_cycles}x{model_cfg.L_cycles})")
    lrs = [lr_at(step, base, lr_warmup_steps, total_steps, lr_min_ratio) for base in base_lrs]
    for opt, lr_now in zip(optimizers, lrs):
        for group in opt.param_groups:
            group["lr"] = lr_now
    carry, metrics = train_step(model, carry, micro, optimizers, global_batch_size, world_size=world_size)
    if ema_model is not None:
        ema_model.update(model)
    running.add(metrics, step)
    if step % log_interval == 0 or step == last_step:
        running.check_finite()
        m, n_steps = running.read()
        # progress line: losses per example, the rest per halted row
        count = max(m["count"], 1)
        rm = {k: v / (global_batch_size * n_steps if k.endswith("loss") else count) for k, v in m.items() if k != "count"}
        now = time.time()
        speed = (step - step_start) / max(now - t_start, 1e-9)
        eta = (last_step - step) / max(speed, 1e-9)
        log(f"step {step}/{last_step} | loss {rm['lm_loss']:.4f} | acc {rm['accuracy']:.4f} | "
            f"exact {rm['exact_accuracy']:.4f} | halt steps {rm['steps']:.2f} | lr {lrs[-1]:.2e} | "
            f"{speed:.2f} steps/s | ETA {eta / 60:.1f} min")
        if master and wandb_log:
            wandb.log({**{f"train/{k}": v for k, v in rm.items()}, "train/lr": lrs[-1]}, step=step)
    if ckpt_interval > 0 and step % ckpt_interval == 0:
        running.check_finite()
        save()
if evaluated_at != step:
    running.check_finite()
    evaluate_and_save()
log(f"done: {step} steps in {(time.time() - t_start) / 60:.1f} min; checkpoint {ckpt_path}")
if master and wandb_log:
    wandb.finish()
rt.close()
