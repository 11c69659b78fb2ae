"""
Evaluate a checkpoint on a dataset's test split: ours (train.py's ckpt.pt, its config inside) or
a reference's: TRM's or HRM's (a state dict, REFERENCE.md §6) or URM's (a dict holding
model_state_dict), with or without the torch.compile prefix. The architecture of a reference
checkpoint (trm, urm or hrm) is read from its keys; its sizes come from a config file or
--key=value settings.

    python evaluate.py --ckpt=out/arc-mini/ckpt.pt                       # data and model from the checkpoint
    python evaluate.py --ckpt=ref/step_518071 --config=config/arc1.py --data=data/arc1
    python evaluate.py --ckpt=out/sudoku-mini/ckpt.pt --trace=4 --trace_unsolved=True --halt_max_steps=8
    torchrun --standalone --nproc_per_node=4 evaluate.py --ckpt=out/arc1/ckpt.pt   # the test split shared out

Every test example runs for halt_max_steps ACT steps (the trained value unless overridden: more
recursion at test time than in training is allowed), with the EMA weights when the checkpoint has
them. Writes into out_dir:
  report.json          metrics per set, accuracy after each ACT step, ARC pass@K with bootstrap
                       95% intervals, and provenance (commit, checkpoint sha256, dataset
                       fingerprint, versions, device, wall time, examples/s, peak memory)
  steps.csv            token and exact accuracy after each ACT step
  ARC datasets (those with test_puzzles.json), from the votes of all augmented variants
  (--variants=canonical: the unaugmented one only):
  submission.json      Kaggle format, two attempts per test input in the original order
  predictions.jsonl    one line per test input: correct at 1 and 2, votes, the top candidates
  votes_curve.csv/png  pass@1 and pass@2 against the number of votes (subsampled, repeated)
  report.html          every test task as coloured grids (demonstrations, input, target, attempts),
                       failures first; self-contained
  trace.json/html      with --trace=N: the answer (tokens) and q_halt after every ACT step for the
                       first N test examples, and a page that shows them changing
"""
import json
import math
import os
import time
from collections import Counter
from dataclasses import fields

import numpy as np
import torch

import checkpoint
import report
import runtime
from configurator import ConfigError, configure, load_config_file
from data import IGNORE_LABEL_ID, PuzzleDataset, inverse_dihedral
from model import TRM, TRMConfig

# -----------------------------------------------------------------------------
# settings (python evaluate.py [config file] --key=value ...)
ckpt = ""                  # checkpoint: ours (ckpt.pt) or a reference state dict
trust_checkpoint = False   # load a checkpoint that needs full unpickling (can run code): only files you trust
data = ""                  # dataset directory ('' = the checkpoint's test data)
out_dir = ""               # where results go ('' = CKPT_DIR/eval)
config = ""                # train config whose model settings describe a reference checkpoint
batch_size = 0             # examples per forward (0 = the checkpoint's global batch, else 256)
halt_max_steps = 0         # ACT steps per example (0 = as trained / configured)
use_ema = True             # evaluate the EMA weights when the checkpoint holds them
variants = "all"           # ARC: vote over 'all' augmented variants, or the 'canonical' one only
scoring = "per_input"      # ARC: a task scores the fraction of its test inputs solved ('per_input', TRM
                           # and URM), or 1 only when all are ('all_or_nothing', HRM's notebook)
pass_ks = [1, 2, 5, 10, 100, 1000]
curve_repeats = 8          # repeats of each vote subsample for votes_curve
bootstrap = 1000           # bootstrap resamples of the tasks for the pass@1 / pass@2 intervals
html = True                # write report.html (ARC)
trace = 0                  # record the answer after every ACT step for this many test examples
trace_unsolved = False     # trace the first examples whose answer after step 1 is wrong
device = "auto"
dtype = "auto"             # forward dtype: 'auto' (bfloat16 on CUDA, float32 on CPU)
seed = 0
ddp_timeout = 300          # torchrun: seconds a collective waits for the other ranks
# architecture of a reference checkpoint: every TRMConfig field (hidden_size, L_cycles, ...) is a
# setting too, None unless given (--config's value, else TRMConfig's default; arch None: read
# from the checkpoint's key layout). The sizes (vocab_size, ...) always come from the dataset.
SIZES = ("vocab_size", "seq_len", "num_puzzle_identifiers", "forward_dtype")
ARCH_KEYS = tuple(f.name for f in fields(TRMConfig) if f.name not in SIZES)
globals().update({k: None for k in ARCH_KEYS if k != "halt_max_steps"})
REF_PREFIXES = ("_orig_mod.model.inner.", "model.inner.")
LAYOUT = ("L_level.", "H_level.", "layers.")  # block keys of TRM, HRM (both) and URM
# -----------------------------------------------------------------------------


# ARC: decoding, de-augmentation, voting ----------------------------------------

SIZE = 30


def crop(tokens) -> np.ndarray:
    """The grid in a 900-token canvas: the largest top-left rectangle of colour tokens (2..11),
    minus 2. Rows are scanned down while the run of colours at their start is long enough; an
    empty grid when the corner is not a colour."""
    c = np.asarray(tokens).reshape(SIZE, SIZE)
    is_colour = (c >= 2) & (c <= 11)
    # run[r]: colours at the start of row r; a rectangle of r rows is as wide as the narrowest
    run = np.where(is_colour.all(1), SIZE, np.argmin(is_colour, 1))
    width = np.minimum.accumulate(run)
    area = width * np.arange(1, SIZE + 1)
    rows = int(np.argmax(area)) + 1  # the first of equal areas, as the reference's scan
    if area[rows - 1] == 0:
        return np.zeros((0, 0), np.uint8)
    return (c[:rows, :width[rows - 1]] - 2).astype(np.uint8)


def inverse_variant(name: str):
    """(task name, function that maps a variant's grid back to the original) for a puzzle name
    NAME or NAME|||t{transform}|||{colour map}."""
    if "|||" not in name:
        return name, lambda g: g
    task, t, colours = name.split("|||")
    inverse = np.argsort(np.frombuffer(colours.encode(), np.uint8) - ord("0")).astype(np.uint8)
    return task, lambda g: inverse[inverse_dihedral(g, int(t[1:]))]


def grid_key(grid: np.ndarray) -> bytes:
    """Identity of a grid for voting: its shape and cells."""
    return bytes(grid.shape) + np.ascontiguousarray(grid, np.uint8).tobytes()


def key_grid(key: bytes) -> np.ndarray:
    h, w = key[0], key[1]
    return np.frombuffer(key[2:], np.uint8).reshape(h, w)


class ARCEvaluator:
    """Votes of one evaluation over an ARC test split. Make a new one for every evaluation (the
    reference keeps votes from earlier evaluations of the same run; this does not).

    update() takes each batch's final predictions; result() ranks the candidates of each test
    input by votes, then by mean sigmoid(q_halt) (REFERENCE.md §5) and scores them."""

    def __init__(self, data_dir: str, pass_ks=(1, 2, 5, 10, 100, 1000), variants: str = "all",
                 blank_identifier_id: int = 0, scoring: str = "per_input"):
        if variants not in ("all", "canonical"):
            raise ValueError(f"variants must be 'all' or 'canonical', got {variants!r}")
        if scoring not in ("per_input", "all_or_nothing"):
            raise ValueError(f"scoring must be 'per_input' or 'all_or_nothing', got {scoring!r}")
        self.scoring = scoring
        for f in ("identifiers.json", "test_puzzles.json"):
            if not os.path.isfile(os.path.join(data_dir, f)):
                raise ValueError(f"{os.path.join(data_dir, f)}: not found (an ARC dataset from prepare_arc.py has it)")
        with open(os.path.join(data_dir, "identifiers.json")) as f:
            self.names = json.load(f)
        with open(os.path.join(data_dir, "test_puzzles.json")) as f:
            self.tasks = json.load(f)
        self.pass_ks, self.variants, self.blank = list(pass_ks), variants, blank_identifier_id
        self.votes = {}    # (task, input key) -> [(prediction key, sigmoid q_halt, example index)]
        self.seen = 0

    def update(self, inputs, puzzle_identifiers, preds, q_halt_logits, index=None):
        """One batch: input tokens [B, 900], identifiers [B], predicted tokens [B, 900], q [B], and
        each row's position in the test split (default: counting from 0 over the calls). Ranks
        that share a split pass the positions, so that the votes meet in one order however the
        split was divided."""
        inputs, ids, preds = (np.asarray(torch.as_tensor(x).cpu()) for x in (inputs, puzzle_identifiers, preds))
        q = torch.as_tensor(q_halt_logits).double().sigmoid().cpu().numpy()
        if index is None:
            index = range(self.seen, self.seen + len(ids))
        self.seen += len(ids)
        for inp, pid, pred, qi, i in zip(inputs, ids, preds, q, index):
            if pid == self.blank:
                continue
            name = self.names[pid]
            if self.variants == "canonical" and "|||" in name:
                continue
            task, undo = inverse_variant(name)
            key = (task, grid_key(undo(crop(inp))))
            self.votes.setdefault(key, []).append((grid_key(undo(crop(pred))), float(qi), int(i)))

    def gather(self, rt):
        """Under torchrun, bring every rank's votes to rank 0 (each vote knows its position in
        the split, so the result does not depend on the number of ranks)."""
        pools = rt.gather(self.votes)
        if rt.ddp and rt.master:
            self.votes = {}
            self.merge(pools)

    def merge(self, pools):
        """Add the votes of other evaluators' pools (their .votes), in order."""
        for votes in pools:
            for k, v in votes.items():
                self.votes.setdefault(k, []).extend(v)

    @staticmethod
    def rank(votes) -> list[tuple[bytes, int, float]]:
        """Candidates (key, votes, mean q), most votes first, then highest mean q, then first seen
        in the test split's order (which also fixes the order of the sums)."""
        count, qsum = Counter(), {}
        for k, q, _ in sorted(votes, key=lambda v: v[2]):
            count[k] += 1
            qsum[k] = qsum.get(k, 0.0) + q
        return sorted(((k, n, qsum[k] / n) for k, n in count.items()), key=lambda c: (c[1], c[2]), reverse=True)

    def test_inputs(self):
        """(task, test index, input key, label key) for every test input, in the file's order."""
        for task, puzzle in self.tasks.items():
            for i, pair in enumerate(puzzle["test"]):
                yield (task, i, grid_key(np.array(pair["input"], np.uint8)),
                       grid_key(np.array(pair["output"], np.uint8)))

    def scores(self, ranked_of, ks) -> dict:
        """Per task, for each k: the fraction of its test inputs whose label is in the top k
        (per_input), or 1 when all of them are (all_or_nothing)."""
        per_task = {}
        for task, i, ikey, lkey in self.test_inputs():
            ranked = ranked_of(task, ikey)
            hits = [any(c[0] == lkey for c in ranked[:k]) for k in ks]
            per_task.setdefault(task, []).append(hits)
        combine = np.mean if self.scoring == "per_input" else np.min
        return {t: combine(np.array(h, float), axis=0) for t, h in per_task.items()}

    def result(self, curve_repeats: int = 0, bootstrap: int = 0, seed: int = 0) -> dict:
        """{'metrics': {'pass@k': ...}, 'submission', 'rows' (per test input), 'curve', 'tasks'}."""
        ranked = {key: self.rank(v) for key, v in self.votes.items()}
        per_task = self.scores(lambda t, k: ranked.get((t, k), []), self.pass_ks)
        task_scores = np.array(list(per_task.values())) if per_task else np.zeros((0, len(self.pass_ks)))
        metrics = {f"pass@{k}": float(task_scores[:, j].mean()) if len(task_scores) else 0.0
                   for j, k in enumerate(self.pass_ks)}
        rng = np.random.default_rng(seed)
        if bootstrap and len(task_scores):
            for k in (1, 2):
                if k in self.pass_ks:
                    col = task_scores[:, self.pass_ks.index(k)]
                    means = col[rng.integers(0, len(col), (bootstrap, len(col)))].mean(1)
                    metrics[f"pass@{k}_ci95"] = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
        submission, rows = {}, []
        for task, i, ikey, lkey in self.test_inputs():
            cands = ranked.get((task, ikey), [])
            attempts = [key_grid(c[0]).tolist() for c in cands[:2]]
            attempts += attempts[:1] * (2 - len(attempts)) if attempts else [[[0]], [[0]]]  # no prediction: a blank answer
            submission.setdefault(task, []).append({"attempt_1": attempts[0], "attempt_2": attempts[1]})
            rows.append({"task": task, "test_index": i,
                         "correct@1": any(c[0] == lkey for c in cands[:1]),
                         "correct@2": any(c[0] == lkey for c in cands[:2]),
                         "votes": sum(c[1] for c in cands),
                         "top": [{"votes": n, "mean_q": round(q, 6), "correct": k == lkey} for k, n, q in cands[:5]]})
        out = {"metrics": metrics, "submission": submission, "rows": rows}
        if curve_repeats:
            out["curve"] = self.curve(curve_repeats, rng)
        return out

    def curve(self, repeats: int, rng) -> list[dict]:
        """pass@1 and pass@2 when each test input keeps only n of its votes (drawn at random),
        for n = 1, 2, 4, ... up to the most votes any input has: mean and std over repeats."""
        most = max((len(v) for v in self.votes.values()), default=0)
        sizes = [2 ** i for i in range(int(math.log2(most)) + 1)] if most else []
        if most and sizes[-1] != most:
            sizes.append(most)
        ordered = {key: sorted(v, key=lambda x: x[2]) for key, v in sorted(self.votes.items())}
        rows = []
        for n in sizes:
            runs = []
            for _ in range(repeats):
                sub = {key: self.rank([v[i] for i in rng.permutation(len(v))[:n]]) for key, v in ordered.items()}
                s = self.scores(lambda t, k: sub.get((t, k), []), [1, 2])
                runs.append(np.mean(list(s.values()), axis=0))
            runs = np.array(runs)
            rows.append({"votes": n, "pass@1": float(runs[:, 0].mean()), "pass@1_std": float(runs[:, 0].std()),
                         "pass@2": float(runs[:, 1].mean()), "pass@2_std": float(runs[:, 1].std())})
        return rows

    def html_tasks(self, res: dict) -> list[dict]:
        """The test tasks for report.write_arc_html."""
        by_task = {}
        for row, (task, i, ikey, lkey) in zip(res["rows"], self.test_inputs()):
            cands = self.rank(self.votes.get((task, ikey), []))[:2]
            by_task.setdefault(task, []).append({
                "index": i, "input": self.tasks[task]["test"][i]["input"], "target": self.tasks[task]["test"][i]["output"],
                "attempts": [key_grid(c[0]).tolist() for c in cands] or [None], "votes": [c[1] for c in cands],
                "correct": row["correct@2"]})
        return [{"task": t, "demos": [[p["input"], p["output"]] for p in self.tasks[t]["train"]], "tests": tests}
                for t, tests in by_task.items()]


# the evaluation loop (also train.py's) ---------------------------------------

class StepRecorder:
    """What one batch's ACT steps did, from the per-row results the model reports after each
    step: over the labelled rows, their number, summed token accuracy and exact count (for
    steps.csv); for tracing, every row's answer and q_halt after each step."""

    def __init__(self, keep_answers: bool):
        self.sums, self.keep_answers, self.preds, self.q_halt = [], keep_answers, [], []

    def __call__(self, step, carry, metrics, outputs):
        real = outputs["labelled"]
        self.sums.append(torch.stack([real.sum(), torch.where(real, outputs["token_accuracy"], 0).sum(),
                                      (real & outputs["exact"]).sum()]).double())
        if self.keep_answers:
            self.preds.append(outputs["preds"].cpu())
            self.q_halt.append(outputs["q_halt_logits"].float().cpu())

    def traces(self, set_name, batch, want: int, unsolved: bool) -> list[dict]:
        """Up to `want` labelled rows of the batch (unsolved: only those whose first answer is
        wrong), each with its input, target and answer and q_halt after every step."""
        labels = batch["labels"].cpu()
        mask = labels != IGNORE_LABEL_ID
        pick = mask.any(-1)
        if unsolved:
            pick &= ((self.preds[0] != labels) & mask).any(-1)
        return [{"set": set_name, "input": batch["inputs"][r].tolist(), "target": torch.where(mask[r], labels[r], 0).tolist(),
                 "steps": [p[r].tolist() for p in self.preds], "q_halt": [float(q[r]) for q in self.q_halt]}
                for r in torch.nonzero(pick).flatten()[:want].tolist()]


METRICS = ("accuracy", "count", "exact_accuracy", "lm_loss", "q_halt_accuracy", "q_halt_loss", "steps")


def evaluate_split(model, dataset: PuzzleDataset, device, arc: ARCEvaluator | None = None, trace: int = 0,
                   trace_unsolved: bool = False, reduce=None) -> dict:
    """Run every test example for the model's halt_max_steps ACT steps in inference mode.
    Returns {'sets': {set: the final step's metrics per example, 'count' examples},
    'steps': token and exact accuracy after each step, 'trace': the answers after each step of
    the first `trace` examples (trace_unsolved: the first whose answer after step 1 is wrong)}.
    reduce(tensor) sums across ranks; arc, if given, receives every final answer."""
    was_training = model.training
    model.eval()
    sums, step_sums, traces = {}, {}, []
    start = 0  # position in the split of the global batch's first example
    with torch.inference_mode():
        for set_name, batch in dataset.iter_test():
            batch = {k: v.to(device) for k, v in batch.items()}
            record = StepRecorder(keep_answers=len(traces) < trace)
            carry, metrics, outputs = model.solve(batch, on_step=record)
            for s, v in enumerate(record.sums, 1):
                step_sums[s] = step_sums.get(s, 0) + v
            if len(traces) < trace:
                traces += record.traces(set_name, batch, trace - len(traces), trace_unsolved)
            if arc is not None:
                first = start + dataset.rank * dataset.local_batch_size
                arc.update(batch["inputs"], batch["puzzle_identifiers"], outputs["preds"], outputs["q_halt_logits"],
                           index=range(first, first + len(batch["inputs"])))
            start += dataset.global_batch_size
            vec = torch.stack([metrics[k].double() for k in METRICS])
            sums[set_name] = sums.get(set_name, 0) + vec
    model.train(was_training)
    total = lambda v: (reduce(v.clone()) if reduce is not None else v).cpu().tolist()
    sets = {}
    for set_name in dataset.data:
        if set_name in sums:
            m = dict(zip(METRICS, total(sums[set_name])))
            sets[set_name] = {k: (v if k == "count" else v / max(m["count"], 1)) for k, v in m.items()}
    steps = []
    for s in sorted(step_sums):
        n, acc, exact = total(step_sums[s])
        steps.append({"step": s, "accuracy": acc / max(n, 1), "exact_accuracy": exact / max(n, 1)})
    return {"sets": sets, "steps": steps, "trace": traces}


# loading checkpoints -----------------------------------------------------------

def read_checkpoint(path: str, trust: bool = False) -> tuple[str, dict]:
    """('ours', checkpoint dict) or ('reference', state dict without its prefix); SystemExit
    naming the file when it is neither (or needs full unpickling and trust is off)."""
    obj = checkpoint.load(path, map_location="cpu", trust=trust)
    if isinstance(obj, dict) and "model" in obj and "model_config" in obj:
        return "ours", obj
    if isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict):  # URM's training script
        obj = obj["model_state_dict"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        for prefix in REF_PREFIXES + ("",):  # compiled, uncompiled, or keys already bare
            if all(k.startswith(prefix) for k in obj) and (prefix or any(k.startswith(LAYOUT) for k in obj)):
                return "reference", {k[len(prefix):]: v for k, v in obj.items()}
        bad = next(k for k in obj if not k.startswith(REF_PREFIXES))
        raise SystemExit(f"error: {path}: a state dict, but key {bad!r} has neither reference prefix "
                         f"({' or '.join(REF_PREFIXES)})")
    what = f"a dict with keys {sorted(obj)[:8]}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
    raise SystemExit(f"error: {path}: not a checkpoint (ours holds 'model' and 'model_config'; the "
                     f"reference's is a state dict of tensors): found {what}")


def load_weights(model: TRM, state: dict, path: str):
    """Load a state dict strictly, except that a puzzle table of another size is replaced by the
    mean of its rows (REFERENCE.md §6), with a warning; mismatches are listed in one error."""
    state = dict(state)
    own = model.state_dict()
    table = "puzzle_emb.weights"
    if table in state and table in own and state[table].shape != own[table].shape:
        if state[table].shape[1:] != own[table].shape[1:]:
            raise SystemExit(f"error: {path}: puzzle table width {state[table].shape[1]} != model's {own[table].shape[1]}")
        print(f"warning: {path}: the puzzle table has {state[table].shape[0]} rows and the dataset "
              f"{own[table].shape[0]} identifiers; using the mean of the loaded rows for every one")
        state[table] = state[table].mean(0, keepdim=True).expand_as(own[table]).clone()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"missing {missing}" if missing else "", f"unexpected {unexpected}" if unexpected else "",
                 f"shape (checkpoint vs model) {shapes}" if shapes else ""]
        raise SystemExit(f"error: {path} does not fit the model: " + "; ".join(p for p in parts if p))
    model.load_state_dict(state)


def model_settings(kind: str, ck: dict, settings: dict) -> dict:
    """The architecture settings of a checkpoint: ours carries them; a reference checkpoint's
    come from --config, then the settings given, and its arch from its key layout."""
    if kind == "ours":
        return dict(ck["model_config"])
    try:
        recipe = load_config_file(settings["config"]) if settings["config"] else {}
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    cfg = {k: v for k, v in recipe.items() if k in ARCH_KEYS}
    cfg.update({k: settings[k] for k in ARCH_KEYS if settings.get(k) is not None and k != "halt_max_steps"})
    if settings.get("arch") is None:
        cfg["arch"] = ("hrm" if any(k.startswith("H_level.") for k in ck)
                       else "urm" if any(k.startswith("layers.") for k in ck) else "trm")
    return cfg


def build_model(kind: str, ck: dict, meta, settings: dict, dev: str, fdtype: str) -> tuple[TRM, dict]:
    """The model of a checkpoint with its weights (EMA when asked and present)."""
    cfg = model_settings(kind, ck, settings)
    cfg.update(vocab_size=meta.vocab_size, seq_len=meta.seq_len, num_puzzle_identifiers=meta.num_puzzle_identifiers,
               forward_dtype=fdtype, halt_exploration_prob=0.0)
    if settings["halt_max_steps"]:
        cfg["halt_max_steps"] = settings["halt_max_steps"]
    try:
        model = TRM(TRMConfig.from_settings(cfg)).to(dev)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"error: model settings {cfg}: {e}")
    state = ck
    if kind == "ours":
        state = dict(ck["model"])
        if settings["use_ema"] and ck.get("ema") is not None:
            state.update(ck["ema"])  # the averaged parameters, by name
    load_weights(model, state, settings["ckpt"])
    return model, cfg


def data_kind(meta, path: str) -> str:
    if os.path.exists(os.path.join(path, "test_puzzles.json")):
        return "arc"
    return "maze" if meta.vocab_size == 6 else "sudoku"


# -----------------------------------------------------------------------------

def main(argv=None):
    settings = {k: v for k, v in globals().items() if not k.startswith("_") and not k.isupper()
                and (v is None or isinstance(v, (int, float, bool, str, list)))}
    configure(settings, argv)
    s = settings
    if not s["ckpt"]:
        raise SystemExit("error: --ckpt=PATH is required")
    out = s["out_dir"] or os.path.join(os.path.dirname(os.path.abspath(s["ckpt"])), "eval")
    try:  # a new or empty folder, or an earlier evaluation's: its files are replaced, nothing else
        checkpoint.check_folder(out, "evaluation", "--out_dir")
    except ValueError as e:
        raise SystemExit(f"error: out_dir {e}")
    torch.manual_seed(s["seed"])
    rt = runtime.setup(s["device"], s["dtype"], s["ddp_timeout"])

    kind, ck = read_checkpoint(s["ckpt"], s["trust_checkpoint"])
    data_dir = s["data"]
    if not data_dir:
        if kind != "ours":
            raise SystemExit("error: a reference checkpoint needs --data=DATASET_DIR")
        data_dir = ck["config"].get("test_data_dir") or ck["config"]["data_dir"]
    batch = s["batch_size"] or (ck["config"].get("global_batch_size", 256) if kind == "ours" else 256)
    try:
        test_data = PuzzleDataset(data_dir.split(","), "test", batch, rank=rt.rank, world_size=rt.world_size)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    meta = test_data.metadata
    model, cfg = build_model(kind, ck, meta, s, rt.device, rt.dtype)
    if rt.master:
        checkpoint.mark_folder(out, "evaluation", "evaluate.py", checkpoint=os.path.abspath(s["ckpt"]))
    first_dir = data_dir.split(",")[0]
    dkind = data_kind(meta, first_dir)
    arc = (ARCEvaluator(first_dir, s["pass_ks"], s["variants"], meta.blank_identifier_id, s["scoring"])
           if dkind == "arc" else None)
    rt.log(f"evaluating {s['ckpt']} ({kind} checkpoint, {model.num_params() / 1e6:.2f}M parameters, "
           f"{cfg['halt_max_steps']} ACT steps) on {data_dir} ({dkind}), device {rt.device}, {rt.dtype}, "
           f"batch {batch}" + (f", {rt.world_size} ranks" if rt.ddp else ""))

    if rt.device_type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    t0 = time.time()
    res = evaluate_split(model, test_data, rt.device, arc=arc, trace=s["trace"] if rt.master else 0,
                         trace_unsolved=s["trace_unsolved"], reduce=rt.all_reduce if rt.ddp else None)
    if arc is not None:
        arc.gather(rt)
    wall = time.time() - t0
    rt.close()
    if not rt.master:
        return None
    return report.write_evaluation(out, s, res, arc, dkind, kind=kind, data_dir=data_dir, model_config=cfg,
                                   rt=rt, wall=wall)


if __name__ == "__main__":
    main()
