"""
Evaluate a checkpoint on a dataset's test split: ours (train.py's ckpt.pt, its config inside) or
a reference's: TRM's or HRM's (a state dict, REFERENCE.md §6) or URM's (a dict holding
model_state_dict), with or without the torch.compile prefix; a path, or hf:OWNER/REPO/PATH on the
Hugging Face hub. A reference checkpoint's architecture comes from the all_config.yaml beside it,
else from a config file and --key=value settings, and its arch (trm, urm, hrm) from its keys.

    python evaluate.py --ckpt=out/arc-mini/ckpt.pt                       # data and model from the checkpoint
    python evaluate.py --ckpt=ref/step_518071 --config=config/arc1.py --data=data/arc1
    python evaluate.py --ckpt=out/sudoku-mini/ckpt.pt --trace=4 --trace_unsolved=True --halt_max_steps=8
    python evaluate.py --ckpt=out/sudoku-mini/ckpt.pt --halting=q        # halting by q against every depth
    python evaluate.py --export=reference --ckpt=out/arc1/ckpt.pt --out=ref/step_N   # for the references' code
    torchrun --standalone --nproc_per_node=4 evaluate.py --ckpt=out/arc1/ckpt.pt   # the test split shared out

Every test example runs for halt_max_steps ACT steps (the trained value unless overridden: more
recursion at test time than in training is allowed), or with --halting=q until its halting rule
fires, with the EMA weights when the checkpoint has them; eval_max_examples=N takes a seeded
subset of whole puzzles. Writes into out_dir:
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
  compute.csv/png      with --halting=q: accuracy, ARC pass@1/2, mean steps and examples/s of halting
                       by q and of every fixed depth 1..N (also in report.json and on the console)
"""
import copy
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import asdict

import numpy as np
import torch

import checkpoint
import ops
import report
import runtime
from configurator import configure
from data import IGNORE_LABEL_ID, PuzzleDataset, inverse_dihedral, read_identifiers
from model import TRM, TRMConfig

# -----------------------------------------------------------------------------
# settings (python evaluate.py [config file] --key=value ...)
ckpt = ""                  # checkpoint: ours (ckpt.pt) or a reference's; a path or hf:OWNER/REPO/PATH
trust_checkpoint = False   # load a checkpoint that needs full unpickling (can run code): only files you trust
export = ""                # 'reference': instead of evaluating, write our --ckpt as the reference codebase of
out = ""                   # its arch saves its own, to the file --out (all_config.yaml beside it), and stop
export_dtype = ""          # dtype of the exported initial states: '' = the checkpoint's forward dtype (an exact
                           # round trip), 'bfloat16' = what the references run in by default
score = ""                 # a Kaggle-format submission.json to score against --solutions (no checkpoint
solutions = ""             # needed): the ARC Prize rule, per task and over all test inputs; --out=FILE
                           # also writes the result as JSON
data = ""                  # dataset directory ('' = the checkpoint's test data)
out_dir = ""               # where results go ('' = CKPT_DIR/eval; for hf: paths out/eval/OWNER_REPO_PATH)
config = ""                # train config whose model settings describe a reference checkpoint
batch_size = 0             # examples per forward (0 = the checkpoint's global batch, else 256)
halt_max_steps = 0         # ACT steps per example (0 = as trained / configured); more than trained works
halting = "fixed"          # 'fixed': every example runs halt_max_steps steps (the references' evaluation);
                           # 'q': each stops when its halting rule fires and leaves the batch, and the
                           # report adds every fixed depth 1..N beside it (compute.csv/png)
eval_max_examples = 0      # evaluate a fixed, seeded subset of about this many test examples (whole puzzles)
use_ema = True             # evaluate the EMA weights when the checkpoint holds them
variants = "all"           # ARC: vote over 'all' augmented variants, or the 'canonical' one only
puzzle_ids = "own"         # which puzzle-embedding row each test example is evaluated with: 'own' (its
                           # puzzle's), 'blank' (the blank identifier's), 'mean' (the mean of all puzzle
                           # rows), 'random' (another task's puzzle's, seeded), or 'all' of them side by side
scoring = "per_input"      # ARC: a task scores the fraction of its test inputs solved ('per_input', TRM
                           # and URM), or 1 only when all are ('all_or_nothing', HRM's notebook)
pass_ks = [1, 2, 5, 10, 100, 1000]
maj_ks = [10, 100, 1000, 10000]  # URM's maj@K beside pass@K (ARCEvaluator's docstring defines it)
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
globals().update({k: None for k in checkpoint.ARCH_KEYS if k != "halt_max_steps"})
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


def parse_variant(name: str) -> tuple[str, int, str] | None:
    """(task, dihedral id, colour map) of a variant's name, None for an original. Variants are
    named NAME|||t{id}|||{map} by prepare_arc.py, TRM's and URM's builders, NAME_t{id}_{map} by
    HRM's (REFERENCE.md §5, §9.5); map: 10 digits, digit i = the colour i becomes."""
    if "|||" in name:
        task, t, colours = name.split("|||")
        return task, int(t[1:]), colours
    # HRM's suffix, taken from the right: a task name may itself hold underscores
    task, _, colours = name.rpartition("_")
    task, _, t = task.rpartition("_")
    if (task and len(t) == 2 and t[0] == "t" and t[1] in "01234567"
            and len(colours) == 10 and set(colours) == set("0123456789")):
        return task, int(t[1]), colours
    return None


def inverse_variant(name: str):
    """(task name, function that maps a variant's grid back to the original) for a puzzle name:
    NAME (an original), NAME|||t{transform}|||{colour map} or NAME_t{transform}_{colour map}."""
    variant = parse_variant(name)
    if variant is None:
        return name, lambda g: g
    task, t, colours = variant
    inverse = np.argsort(np.frombuffer(colours.encode(), np.uint8) - ord("0")).astype(np.uint8)
    return task, lambda g: inverse[inverse_dihedral(g, t)]


def grid_key(grid: np.ndarray) -> bytes:
    """Identity of a grid for voting: its shape and cells."""
    return bytes(grid.shape) + np.ascontiguousarray(grid, np.uint8).tobytes()


def key_grid(key: bytes) -> np.ndarray:
    h, w = key[0], key[1]
    return np.frombuffer(key[2:], np.uint8).reshape(h, w)


def crop_moved(inp, label) -> tuple[np.ndarray, np.ndarray]:
    """crop() of an example that a train split may have moved off the corner: input and label
    share one offset (REFERENCE.md §5), where the input's grid starts; the rows and columns
    before it hold only PAD, so rolling them round to the far side leaves crop() unaffected."""
    a, b = (np.asarray(x).reshape(SIZE, SIZE) for x in (inp, label))
    colour = (a >= 2) & (a <= 11)
    r, c = int(colour.any(1).argmax()), int(colour.any(0).argmax())
    return crop(np.roll(a, (-r, -c), (0, 1))), crop(np.roll(b, (-r, -c), (0, 1)))


def original_examples(data_dir: str, split: str, names: list[str], original: np.ndarray, decode,
                      only=None) -> dict:
    """{task: [{'input', 'output'}, ...]}: the examples of the split's original puzzles (those whose
    identifier is True in `original`), of the tasks in `only` if given, decoded by
    decode(input, label), in the split's order."""
    ds = PuzzleDataset(data_dir, split, 1)
    tasks = {}
    for d in ds.data.values():
        ids = np.asarray(d["puzzle_identifiers"])
        named = (ids >= 0) & (ids < len(names))
        for p in np.flatnonzero(named & original[np.where(named, ids, 0)]):
            task = names[ids[p]]
            if only is not None and task not in only:
                continue
            for e in range(d["puzzle_indices"][p], d["puzzle_indices"][p + 1]):
                i, o = decode(d["inputs"][e], d["labels"][e])
                tasks.setdefault(task, []).append({"input": i.tolist(), "output": o.tolist()})
    return tasks


def split_tasks(data_dir: str, split: str, names: list[str]) -> dict:
    """An ARC split's tasks in test_puzzles.json's shape, read from the split itself, for datasets
    that come without that file (HRM's builder, REFERENCE.md §9.5): the original variant of a task
    holds its test inputs with their answers, at the corner (crop), in the original order; its
    demonstrations are the same puzzle's examples in the train split, when there is one."""
    original = np.array([parse_variant(n) is None for n in names], bool)
    original[:1] = False  # identifier 0 names the blank puzzle
    tests = original_examples(data_dir, split, names, original, lambda i, o: (crop(i), crop(o)))
    if not tests:
        raise ValueError(f"{os.path.join(data_dir, split)}: no original (un-augmented) ARC puzzle to take "
                         f"the test inputs and answers from")
    demos = {}
    if split != "train" and os.path.isdir(os.path.join(data_dir, "train")):
        demos = original_examples(data_dir, "train", names, original, crop_moved, only=tests)
    return {task: {"train": demos.get(task, []), "test": pairs} for task, pairs in tests.items()}


def is_arc_dataset(data_dir: str, puzzles: str = "test_puzzles.json") -> bool:
    """Whether ARCEvaluator can vote on a dataset: it has `puzzles` (prepare_arc.py, TRM's and
    URM's builders), or, as HRM's builder writes it, no such file but ARC's 12 tokens x 900 and
    named puzzles (the split's originals then give the tasks)."""
    if os.path.isfile(os.path.join(data_dir, puzzles)):
        return True
    try:
        with open(os.path.join(data_dir, puzzles.removesuffix("_puzzles.json"), "dataset.json")) as f:
            meta = json.load(f)
        with open(os.path.join(data_dir, "identifiers.json")) as f:
            names = json.load(f)
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get("vocab_size") == 12 and meta.get("seq_len") == SIZE * SIZE
            and isinstance(names, list) and len(names) > 1)


class ARCEvaluator:
    """Votes of one evaluation over an ARC test split. Make a new one for every evaluation (the
    reference keeps votes from earlier evaluations of the same run; this does not).

    update() takes each batch's final predictions; result() ranks the candidates of each test
    input by votes, then by mean sigmoid(q_halt) (REFERENCE.md §5) and scores them.

    The test tasks and answers come from DIR/`puzzles`; a dataset without it (HRM's builder) has
    them read from the split `split` (default: the file name's prefix, 'test'), see split_tasks.

    maj@K for K in maj_ks, URM's "majority vote" (REFERENCE.md §8.5), per test input: draw K of
    its votes at random, with replacement, each with probability proportional to its
    sigmoid(q_halt); the answer is the drawn vote with the highest q_halt (of equal ones, the first
    drawn), and scores 1 if it is the label. K may exceed the votes; an input without votes
    scores 0; tasks combine as for pass@K (`scoring`; URM: per_input). A candidate's vote count
    only raises its chance of being drawn: for large K the answer is the most confident vote.
    URM draws from numpy's global generator, unseeded; here each K has a generator seeded with
    (K, result()'s seed) and the votes are taken in split order, so the numbers are reproducible
    and do not depend on the ranks. The draws differ, each input's chance of being right does not."""

    def __init__(self, data_dir: str, pass_ks=(1, 2, 5, 10, 100, 1000), variants: str = "all",
                 blank_identifier_id: int = 0, scoring: str = "per_input", puzzles: str = "test_puzzles.json",
                 maj_ks=(), split: str | None = None):
        if variants not in ("all", "canonical"):
            raise ValueError(f"variants must be 'all' or 'canonical', got {variants!r}")
        if scoring not in ("per_input", "all_or_nothing"):
            raise ValueError(f"scoring must be 'per_input' or 'all_or_nothing', got {scoring!r}")
        if not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1 for k in maj_ks):
            raise ValueError(f"maj_ks must be positive integers, got {list(maj_ks)}")
        self.scoring = scoring
        if not os.path.isfile(os.path.join(data_dir, "identifiers.json")):
            raise ValueError(f"{os.path.join(data_dir, 'identifiers.json')}: not found (an ARC dataset has it)")
        with open(os.path.join(data_dir, "identifiers.json")) as f:
            self.names = json.load(f)
        path = os.path.join(data_dir, puzzles)
        if os.path.isfile(path):
            with open(path) as f:  # the split's original tasks, answers included
                self.tasks = json.load(f)
        else:  # HRM's layout: the answers are the labels of the split's un-augmented variants
            split = split or puzzles.removesuffix("_puzzles.json")
            try:
                self.tasks = split_tasks(data_dir, split, self.names)
            except ValueError as e:
                raise ValueError(f"{path}: not found, nor the tasks in the '{split}' split ({e})") from None
        # tasks whose test outputs were not given (a challenges file without solutions: prepare_arc.py
        # names them in test_no_solutions.json; a dataset from elsewhere: every test output the
        # builders' [[0]] placeholder): their votes make submission.json, never a score
        unknown = os.path.join(data_dir, puzzles.replace("_puzzles.json", "_no_solutions.json"))
        if os.path.isfile(unknown):
            with open(unknown) as f:
                self.unsolved = set(json.load(f)) & set(self.tasks)
        else:
            self.unsolved = {t for t, v in self.tasks.items() if all(p.get("output") == [[0]] for p in v["test"])}
        self.pass_ks, self.variants, self.blank = list(pass_ks), variants, blank_identifier_id
        self.maj_ks = [int(k) for k in maj_ks]
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
            task, undo = inverse_variant(name)
            if self.variants == "canonical" and task != name:
                continue
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
            if task in self.unsolved:
                continue
            ranked = ranked_of(task, ikey)
            hits = [any(c[0] == lkey for c in ranked[:k]) for k in ks]
            per_task.setdefault(task, []).append(hits)
        return self.combine(per_task)

    def combine(self, per_task: dict) -> dict:
        """{task: [hits per k] per test input} -> {task: score per k}, as `scoring` says."""
        combine = np.mean if self.scoring == "per_input" else np.min
        return {t: combine(np.array(h, float), axis=0) for t, h in per_task.items()}

    def majority(self, ks, seed: int = 0) -> dict:
        """Per task, for each K in ks: maj@K (the class docstring), scored as pass@K."""
        gens = [np.random.default_rng([k, seed & (2**64 - 1)]) for k in ks]  # one stream per K
        per_task = {}
        for task, i, ikey, lkey in self.test_inputs():
            if task in self.unsolved:
                continue
            votes = sorted(self.votes.get((task, ikey), []), key=lambda v: v[2])  # split order
            hits = [False] * len(ks)
            if votes:
                q = np.array([v[1] for v in votes])
                # sigmoid(q) is 0 only for logits below about -745: then all equally likely
                p = q / q.sum() if q.sum() > 0 else None
                for j, (k, gen) in enumerate(zip(ks, gens)):
                    drawn = gen.choice(len(votes), size=k, p=p)
                    hits[j] = votes[drawn[np.argmax(q[drawn])]][0] == lkey
            per_task.setdefault(task, []).append(hits)
        return self.combine(per_task)

    def result(self, curve_repeats: int = 0, bootstrap: int = 0, seed: int = 0) -> dict:
        """{'metrics': {'pass@k': ...}, 'submission', 'rows' (per test input), 'curve', 'tasks'}."""
        ranked = {key: self.rank(v) for key, v in self.votes.items()}
        per_task = self.scores(lambda t, k: ranked.get((t, k), []), self.pass_ks)
        task_scores = np.array(list(per_task.values())) if per_task else np.zeros((0, len(self.pass_ks)))
        metrics = {f"pass@{k}": float(task_scores[:, j].mean()) if len(task_scores) else 0.0
                   for j, k in enumerate(self.pass_ks)}
        if self.maj_ks:
            maj = np.array(list(self.majority(self.maj_ks, seed).values())).reshape(-1, len(self.maj_ks))
            metrics.update({f"maj@{k}": float(maj[:, j].mean()) if len(maj) else 0.0
                            for j, k in enumerate(self.maj_ks)})
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
            known = task not in self.unsolved  # else: no solution given, nothing is correct or not
            rows.append({"task": task, "test_index": i,
                         "correct@1": any(c[0] == lkey for c in cands[:1]) if known else None,
                         "correct@2": any(c[0] == lkey for c in cands[:2]) if known else None,
                         "votes": sum(c[1] for c in cands),
                         "top": [{"votes": n, "mean_q": round(q, 6), "correct": k == lkey if known else None}
                                 for k, n, q in cands[:5]]})
        if not per_task:  # no test task has solutions: no score at all
            metrics = {}
        out = {"metrics": metrics, "submission": submission, "rows": rows, "unsolved": sorted(self.unsolved)}
        if curve_repeats and per_task:
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
            known = task not in self.unsolved
            by_task.setdefault(task, []).append({
                "index": i, "input": self.tasks[task]["test"][i]["input"],
                "target": self.tasks[task]["test"][i]["output"] if known else None,
                "attempts": [key_grid(c[0]).tolist() for c in cands] or [None], "votes": [c[1] for c in cands],
                "correct": row["correct@2"]})
        return [{"task": t, "demos": [[p["input"], p["output"]] for p in self.tasks[t]["train"]], "tests": tests}
                for t, tests in by_task.items()]


# the evaluation loop (also train.py's) ---------------------------------------

class StepRecorder:
    """What one batch's ACT steps did, from the per-row results the model reports after each
    step: over the labelled rows, their number, summed token accuracy and exact count (for
    steps.csv); the time each step took (timed: the device is waited for); the answers after
    each step, for tracing and for the per-depth votes of the compute curve."""

    def __init__(self, keep_answers: bool, timed: bool, device):
        self.sums, self.times, self.preds, self.q_halt = [], [], [], []
        self.keep_answers, self.timed, self.device = keep_answers, timed, device
        self.t = time.perf_counter()

    def __call__(self, step, carry, metrics, outputs):
        real = outputs["labelled"]
        self.sums.append(torch.stack([real.sum(), torch.where(real, outputs["token_accuracy"], 0).sum(),
                                      (real & outputs["exact"]).sum()]).double())
        if self.keep_answers:
            self.preds.append(outputs["preds"].cpu())
            self.q_halt.append(outputs["q_halt_logits"].float().cpu())
        if self.timed:
            if torch.device(self.device).type == "cuda":
                torch.cuda.synchronize(self.device)
            now = time.perf_counter()
            self.times.append(now - self.t)
            self.t = now

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
                   trace_unsolved: bool = False, reduce=None, halt_on_q: bool = False, depth_arcs=None,
                   timed: bool = False, progress: str | None = None) -> dict:
    """Run every test example in inference mode: for the model's halt_max_steps ACT steps, or
    (halt_on_q) until its halting rule fires, the halted rows leaving the batch (model.solve).
    Returns {'sets': {set: the final step's metrics per example, 'count' examples},
    'steps': token and exact accuracy after each step, 'step_time': seconds spent in each step
    (timed: the device waited for after each step; fixed steps only), 'wall': seconds, 'trace': the answers after each step of the first
    `trace` examples (trace_unsolved: the first whose answer after step 1 is wrong)}.
    reduce(tensor) sums across ranks; arc receives every final answer; depth_arcs[d - 1] the
    answers after step d (the compute curve). progress: a progress bar's title (rank 0)."""
    was_training = model.training
    model.eval()
    sums, step_sums, step_time, traces = {}, {}, {}, []
    start = 0  # position in the split of the global batch's first example
    bar = None
    if progress is not None:
        from tqdm import tqdm
        bar = tqdm(total=dataset.num_examples(), desc=progress, unit="ex", mininterval=5, dynamic_ncols=True)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for set_name, batch in dataset.iter_test():
            batch = {k: v.to(device) for k, v in batch.items()}
            record = StepRecorder(len(traces) < trace or depth_arcs is not None, timed, device)
            carry, metrics, outputs = model.solve(batch, on_step=None if halt_on_q else record, halt_on_q=halt_on_q)
            for s, v in enumerate(record.sums, 1):
                step_sums[s] = step_sums.get(s, 0) + v
            for s, t in enumerate(record.times, 1):
                step_time[s] = step_time.get(s, 0.0) + t
            if len(traces) < trace:
                traces += record.traces(set_name, batch, trace - len(traces), trace_unsolved)
            index = range(start + dataset.rank * dataset.local_batch_size,
                          start + dataset.rank * dataset.local_batch_size + len(batch["inputs"]))
            if arc is not None:
                arc.update(batch["inputs"], batch["puzzle_identifiers"], outputs["preds"], outputs["q_halt_logits"],
                           index=index)
            for d, ev in enumerate(depth_arcs or []):
                ev.update(batch["inputs"], batch["puzzle_identifiers"], record.preds[d], record.q_halt[d], index=index)
            start += dataset.global_batch_size
            vec = torch.stack([metrics[k].double() for k in METRICS])
            sums[set_name] = sums.get(set_name, 0) + vec
            if bar is not None:
                bar.update(min(dataset.global_batch_size, bar.total - bar.n))
    if bar is not None:
        bar.close()
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
    return {"sets": sets, "steps": steps, "trace": traces, "wall": time.perf_counter() - t0,
            "step_time": [step_time[s] for s in sorted(step_time)]}


def compute_table(fixed: dict, q: dict, depth_arcs, q_arc) -> list[dict]:
    """What each amount of test-time compute buys: one row per fixed depth d = 1..N (from the
    fixed run: accuracy after step d; its time, that run's time outside the steps plus its first
    d steps) and one for halting=q (its own run, halted rows leaving the batch)."""
    n = sum(m["count"] for m in fixed["sets"].values())
    outside = max(fixed["wall"] - sum(fixed["step_time"]), 0.0)
    rows = []
    for d, st in enumerate(fixed["steps"], 1):
        seconds = outside + sum(fixed["step_time"][:d])
        rows.append({"halting": f"fixed {d}", "mean_steps": float(d), "exact_accuracy": st["exact_accuracy"],
                     "accuracy": st["accuracy"], "examples_per_s": n / max(seconds, 1e-9),
                     **(pass_at_1_2(depth_arcs[d - 1]) if depth_arcs else {})})
    qn = sum(m["count"] for m in q["sets"].values())
    qs = {k: sum(m[k] * m["count"] for m in q["sets"].values()) / max(qn, 1) for k in ("exact_accuracy", "accuracy", "steps")}
    rows.append({"halting": "q", "mean_steps": qs["steps"], "exact_accuracy": qs["exact_accuracy"],
                 "accuracy": qs["accuracy"], "examples_per_s": qn / max(q["wall"], 1e-9),
                 **(pass_at_1_2(q_arc) if q_arc is not None else {})})
    return rows


def pass_at_1_2(arc: ARCEvaluator) -> dict:
    m = arc.result()["metrics"]
    return {"pass@1": m["pass@1"], "pass@2": m["pass@2"]}


# building the model of a checkpoint ---------------------------------------------

def build_model(kind: str, ck: dict, meta, settings: dict, dev: str, fdtype: str, names=None) -> tuple[TRM, dict]:
    """The model of a checkpoint with its weights (EMA when asked and present), for a dataset
    whose puzzle names are `names`."""
    cfg = checkpoint.model_settings(kind, ck, settings, settings["ckpt"])
    cfg.update(vocab_size=meta.vocab_size, seq_len=meta.seq_len, num_puzzle_identifiers=meta.num_puzzle_identifiers,
               forward_dtype=fdtype, halt_exploration_prob=0.0)
    if settings["halt_max_steps"]:
        cfg["halt_max_steps"] = settings["halt_max_steps"]
    try:
        model = TRM(TRMConfig.from_settings(cfg)).to(dev)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"error: model settings {cfg}: {e}")
    cfg = asdict(model.cfg)  # every setting, defaults included
    state, moved = checkpoint.weights_for(kind, ck, settings["ckpt"], names, settings["use_ema"])
    if moved:
        print(moved)
    checkpoint.load_weights(model, state, settings["ckpt"])
    return model, cfg


def data_kind(meta, path: str) -> str:
    if is_arc_dataset(path):  # test_puzzles.json, or an ARC layout without it (HRM's builder)
        return "arc"
    return "maze" if meta.vocab_size == 6 else "sudoku"


# -----------------------------------------------------------------------------

def main(argv=None):
    settings = {k: v for k, v in globals().items() if not k.startswith("_") and not k.isupper()
                and (v is None or isinstance(v, (int, float, bool, str, list)))}
    configure(settings, argv)
    s = settings
    if s["score"] or s["solutions"]:
        return score_files(s["score"], s["solutions"], s["out"])
    if not s["ckpt"]:
        raise SystemExit("error: --ckpt=PATH is required")
    if s["export"]:
        return export_checkpoint(s)
    if s["halting"] not in ("fixed", "q"):
        raise SystemExit(f"error: halting must be 'fixed' or 'q', got {s['halting']!r}")
    if s["puzzle_ids"] not in PUZZLE_ID_MODES + ("all",):
        raise SystemExit(f"error: puzzle_ids must be one of {', '.join(PUZZLE_ID_MODES)} or all, got {s['puzzle_ids']!r}")
    out = output_folder(s)
    torch.manual_seed(s["seed"])
    rt = runtime.setup(s["device"], s["dtype"], s["ddp_timeout"])

    s["ckpt"] = checkpoint.resolve(s["ckpt"])  # hf:OWNER/REPO/PATH: downloaded into the hub's cache
    kind, ck = checkpoint.read_checkpoint(s["ckpt"], s["trust_checkpoint"])
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
    note = ""
    if s["eval_max_examples"]:  # a quick check: a fixed subset, said on every line printed
        whole = test_data.num_examples()
        kept = test_data.limit(s["eval_max_examples"], s["seed"])
        note = f" [subset: {kept} of {whole} test examples, whole puzzles, seed {s['seed']}]"
    model, cfg = build_model(kind, ck, meta, s, rt.device, rt.dtype, read_identifiers(data_dir.split(",")[0]))
    if rt.master:
        checkpoint.mark_folder(out, "evaluation", "evaluate.py", checkpoint=os.path.abspath(s["ckpt"]))
    first_dir = data_dir.split(",")[0]
    dkind = data_kind(meta, first_dir)
    arc = (ARCEvaluator(first_dir, s["pass_ks"], s["variants"], meta.blank_identifier_id, s["scoring"],
                        maj_ks=s["maj_ks"]) if dkind == "arc" else None)
    if arc is not None and note:  # score only the tasks the subset holds
        keep = subset_tasks(test_data, arc.names)
        arc.tasks = {t: v for t, v in arc.tasks.items() if t in keep}
    rt.log(f"evaluating {s['ckpt']} ({kind} checkpoint, {model.num_params() / 1e6:.2f}M parameters, "
           f"{cfg['halt_max_steps']} ACT steps, halting={s['halting']}) on {data_dir} ({dkind}), device "
           f"{rt.device}, {rt.dtype}, batch {batch}" + (f", {rt.world_size} ranks" if rt.ddp else "") + note)

    paths = rt.op_paths()  # each op's path for the whole run, the same on every rank (report.json: op_paths)
    rt.log(f"ops on {rt.device_type}: " + ", ".join(f"{op} {paths[op]}" for op in ops.OPS))
    modes = list(PUZZLE_ID_MODES) if s["puzzle_ids"] == "all" else [s["puzzle_ids"]]
    if modes != ["own"] and not hasattr(model, "puzzle_emb"):
        rt.log(f"puzzle_ids={s['puzzle_ids']}: this model has no puzzle embedding (puzzle_emb_ndim=0), so the "
               f"setting has no effect; evaluating once")
        modes = ["own"]
    if rt.device_type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    own_table = model.puzzle_emb.weights.clone() if hasattr(model, "puzzle_emb") else None
    names = read_identifiers(first_dir)
    side = {}  # puzzle_ids=all: each mode's metrics
    for mode in modes:
        if own_table is not None:
            model.puzzle_emb.weights.copy_(puzzle_table(mode, own_table, meta.blank_identifier_id, names, s["seed"]))
        mode_note = note + (f" [puzzle_ids={mode}]" if mode != "own" else "")
        if mode == modes[0]:  # the full report: the one mode asked for, or 'own' of all
            t0 = time.time()
            res = run_evaluation(model, test_data, arc, s, rt, mode_note)
            wall = time.time() - t0
            main_arc = arc
        else:  # the figures only, halting as asked
            mode_arc = empty_pool(arc) if arc is not None else None
            long = rt.master and test_data.num_examples() >= 10 * test_data.global_batch_size
            res = evaluate_split(model, test_data, rt.device, arc=mode_arc, reduce=rt.all_reduce if rt.ddp else None,
                                 halt_on_q=s["halting"] == "q", progress=f"evaluating{mode_note}" if long else None)
            if mode_arc is not None:
                mode_arc.gather(rt)
        if len(modes) > 1 and rt.master:
            mode_arc = arc if mode == modes[0] else mode_arc
            side[mode] = ablation_row(res, mode_arc.result(bootstrap=s["bootstrap"], seed=s["seed"])
                                      if mode_arc is not None else None)
        if mode == modes[0]:
            first_res = res
    rt.close()
    if not rt.master:
        return None
    rep = report.write_evaluation(out, s, first_res, main_arc, dkind, kind=kind, data_dir=data_dir, model_config=cfg,
                                  rt=rt, wall=wall, note=note + (f" [puzzle_ids={modes[0]}]" if modes[0] != "own" else ""))
    rep["provenance"]["puzzle_ids"] = s["puzzle_ids"] if len(modes) > 1 or hasattr(model, "puzzle_emb") else "own"
    if side:
        rep["puzzle_ids"] = report.write_ablation(out, side, note)
    report.write_json(os.path.join(out, "report.json"), rep, indent=1)
    return rep


# puzzle identity: evaluating with rows other than each puzzle's own ---------------

PUZZLE_ID_MODES = ("own", "blank", "mean", "random")


def puzzle_table(mode: str, table: torch.Tensor, blank: int, names: list | None = None, seed: int = 0) -> torch.Tensor:
    """The puzzle-embedding table to evaluate with under puzzle_ids=mode, from the model's own:
    'own' unchanged; 'blank' every puzzle's row replaced by the blank identifier's; 'mean' by the
    mean of all puzzles' rows (the blank row left out of the mean); 'random' by the row of another
    puzzle, drawn with `seed` from the puzzles of other tasks (ARC: the task a variant's name
    names; elsewhere each row is its own puzzle). The blank row itself never changes."""
    if mode == "own":
        return table
    rows = [i for i in range(len(table)) if i != blank]
    out = table.clone()
    if not rows:
        return out
    if mode == "blank":
        out[rows] = table[blank]
    elif mode == "mean":
        out[rows] = table[rows].float().mean(0).to(table.dtype)
    elif mode == "random":
        out[rows] = table[random_rows(len(table), blank, names, seed)[rows]]
    else:
        raise ValueError(f"unknown puzzle_ids mode {mode!r}")
    return out


def random_rows(n: int, blank: int, names: list | None, seed: int) -> torch.Tensor:
    """[n] source row of each row for puzzle_ids=random: a row of another task, seeded (the blank
    row maps to itself)."""
    task = [inverse_variant(names[i])[0] if names is not None and i < len(names) else i for i in range(n)]
    rows = np.array([i for i in range(n) if i != blank])
    if len({task[i] for i in rows}) < 2:
        raise SystemExit("error: puzzle_ids=random needs puzzles of at least two tasks")
    rng = np.random.default_rng(seed)
    src = np.arange(n)
    for i in rows:
        j = int(rows[rng.integers(len(rows))])
        while task[j] == task[i]:
            j = int(rows[rng.integers(len(rows))])
        src[i] = j
    return torch.as_tensor(src)


def ablation_row(res: dict, arc_result: dict | None) -> dict:
    """One puzzle_ids mode's figures: exact and token accuracy per set, ARC pass@1 / pass@2 and
    their intervals."""
    row = {f"{k}/{m}": v[m] for k, v in res["sets"].items() for m in ("exact_accuracy", "accuracy", "lm_loss")}
    if arc_result is not None:
        row.update({k: v for k, v in arc_result["metrics"].items() if k in ("pass@1", "pass@2", "pass@1_ci95", "pass@2_ci95")})
    return row


# scoring a submission file -------------------------------------------------------

def check_attempt(grid, where: str) -> str | None:
    """Why grid is not an ARC grid (a non-empty list of equally long rows of 0..9, at most
    30x30), or None."""
    if not isinstance(grid, list) or not grid or not all(isinstance(r, list) and r for r in grid):
        return f"{where}: not a grid (a non-empty list of non-empty rows)"
    if len({len(r) for r in grid}) > 1:
        return f"{where}: ragged rows (lengths {sorted({len(r) for r in grid})})"
    if len(grid) > SIZE or len(grid[0]) > SIZE:
        return f"{where}: {len(grid)}x{len(grid[0])} grid is larger than {SIZE}x{SIZE}"
    bad = next((v for r in grid for v in r if type(v) is not int or not 0 <= v <= 9), None)
    if bad is not None:
        return f"{where}: cell value {bad!r} is not a colour 0..9"
    return None


def score_submission(sub, sol, sub_name: str = "submission", sol_name: str = "solutions") -> dict:
    """Score a Kaggle-format submission ({task: [{'attempt_1': grid, 'attempt_2': grid}, ...]})
    against solutions ({task: [grid, ...]}) with the ARC Prize rule: a test input is solved when
    either attempt equals its solution exactly, a task scores the fraction of its test inputs
    solved, the score is the mean over tasks. Also the fraction of all test inputs solved, and
    per task which inputs were. Every problem with the files is collected: ValueError, one line
    each (up to 10, then a count)."""
    problems = []
    if not isinstance(sub, dict):
        problems.append(f"{sub_name}: expected an object of task id -> list of attempts")
    if not isinstance(sol, dict):
        problems.append(f"{sol_name}: expected an object of task id -> list of grids")
    if problems:
        raise ValueError("\n".join(problems))
    for task in sub:
        if task not in sol:
            problems.append(f"{sub_name}: task {task}: not in {sol_name}")
    per_task = {}
    for task, grids in sol.items():
        where = f"{sol_name}: task {task}"
        if not isinstance(grids, list) or not grids:
            problems.append(f"{where}: expected a non-empty list of grids")
            continue
        problems += [p for i, g in enumerate(grids) if (p := check_attempt(g, f"{where}: test input {i}"))]
        if task not in sub:
            problems.append(f"{sub_name}: task {task}: missing (the solutions have it)")
            continue
        entries = sub[task]
        where = f"{sub_name}: task {task}"
        if not isinstance(entries, list):
            problems.append(f"{where}: expected a list of attempts, one per test input")
            continue
        if len(entries) != len(grids):
            problems.append(f"{where}: {len(entries)} test inputs, the solutions have {len(grids)}")
            continue
        solved = []
        for i, (entry, want) in enumerate(zip(entries, grids)):
            if not isinstance(entry, dict):
                problems.append(f"{where}: test input {i}: expected {{'attempt_1': grid, 'attempt_2': grid}}")
                continue
            for k in ("attempt_1", "attempt_2"):
                if k not in entry:
                    problems.append(f"{where}: test input {i}: missing {k}")
                elif p := check_attempt(entry[k], f"{where}: test input {i}: {k}"):
                    problems.append(p)
            solved.append(any(entry.get(k) == want for k in ("attempt_1", "attempt_2")))
        per_task[task] = solved
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more problems"] if len(problems) > 10 else [])
        raise ValueError("\n".join(shown))
    inputs = [x for v in per_task.values() for x in v]
    return {"rule": "ARC Prize: an input is solved when either of its two attempts equals the solution; "
                    "a task scores the fraction of its inputs solved; the score is the mean over tasks",
            "score": float(np.mean([np.mean(v) for v in per_task.values()])) if per_task else 0.0,
            "tasks": len(per_task), "test_inputs": len(inputs),
            "test_inputs_solved": int(sum(inputs)),
            "fraction_of_test_inputs_solved": float(np.mean(inputs)) if inputs else 0.0,
            "per_task": per_task}


def score_files(sub_path: str, sol_path: str, out_path: str = "") -> dict:
    """evaluate.py --score=SUBMISSION --solutions=SOLUTIONS [--out=FILE]."""
    if not sub_path or not sol_path:
        raise SystemExit("error: --score=SUBMISSION.json needs --solutions=SOLUTIONS.json (and the other way round)")
    loaded = []
    for path in (sub_path, sol_path):
        try:
            with open(path, encoding="utf-8") as f:
                loaded.append(json.load(f))
        except OSError as e:
            raise SystemExit(f"error: {path}: {e.strerror}")
        except UnicodeDecodeError:
            raise SystemExit(f"error: {path}: not UTF-8 text")
        except json.JSONDecodeError as e:
            raise SystemExit(f"error: {path}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})")
    try:
        res = score_submission(*loaded, sub_name=sub_path, sol_name=sol_path)
    except ValueError as e:
        for line in str(e).split("\n"):
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(1)
    for task, solved in res["per_task"].items():
        print(f"{task}: {sum(solved)}/{len(solved)} test inputs solved ({', '.join('yes' if x else 'no' for x in solved)})")
    print(f"score {res['score']:.4f} (ARC Prize rule: mean over {res['tasks']} tasks of the fraction of their test "
          f"inputs solved by either attempt); test inputs solved {res['test_inputs_solved']}/{res['test_inputs']} "
          f"({res['fraction_of_test_inputs_solved']:.4f})")
    if out_path:
        report.write_json(out_path, res, indent=1)
        print(f"wrote {out_path}")
    return res


def output_folder(s: dict) -> str:
    """out_dir, or by default CKPT_DIR/eval (out/eval/OWNER_REPO_PATH for a hub path): a new or
    empty folder, or an earlier evaluation's, whose files are then replaced and nothing else."""
    out = s["out_dir"] or (os.path.join("out", "eval", s["ckpt"][3:].replace("/", "_")) if s["ckpt"].startswith("hf:")
                           else os.path.join(os.path.dirname(os.path.abspath(s["ckpt"])), "eval"))
    try:
        checkpoint.check_folder(out, "evaluation", "--out_dir")
    except ValueError as e:
        raise SystemExit(f"error: out_dir {e}")
    return out


def export_checkpoint(s: dict) -> dict:
    """evaluate.py --export=reference --ckpt=OURS --out=PATH: our checkpoint in the layout of the
    reference codebase of its arch (checkpoint.export_reference), into a new or empty folder, or
    one an earlier export wrote."""
    if s["export"] != "reference":
        raise SystemExit(f"error: export must be 'reference', got {s['export']!r}")
    if not s["out"]:
        raise SystemExit("error: --export needs --out=PATH (the file to write; all_config.yaml goes beside it)")
    kind, ck = checkpoint.read_checkpoint(checkpoint.resolve(s["ckpt"]), s["trust_checkpoint"])
    if kind != "ours":
        raise SystemExit(f"error: {s['ckpt']} is already a reference checkpoint")
    folder = os.path.dirname(os.path.abspath(s["out"]))
    try:
        checkpoint.check_folder(folder, "export", "--out")
        info = checkpoint.export_reference(ck, s["out"], forward_dtype=s["export_dtype"] or
                                           ck["model_config"].get("forward_dtype", "float32"))
    except ValueError as e:
        raise SystemExit(f"error: cannot export {s['ckpt']}: {e}")
    checkpoint.mark_folder(folder, "export", "evaluate.py", checkpoint=os.path.abspath(s["ckpt"]))
    print(f"wrote {info['checkpoint']} ({info['arch']}, {'EMA' if info['ema'] else 'raw'} weights, "
          f"{info['keys']} keys) and {info['config']}")
    for note in info["notes"]:
        print(f"note: {note}")
    return info


def run_evaluation(model, test_data, arc, s, rt, note) -> dict:
    """evaluate_split as the settings ask; with halting='q' two runs: every fixed depth (its
    per-step answers and times) and halting by the rule (the reported answers), and the table
    of what each costs and buys under 'compute'."""
    reduce = rt.all_reduce if rt.ddp else None
    bar = f"evaluating{note}" if rt.master and test_data.num_examples() >= 10 * test_data.global_batch_size else None
    trace = s["trace"] if rt.master else 0
    if s["halting"] != "q":
        res = evaluate_split(model, test_data, rt.device, arc=arc, trace=trace, trace_unsolved=s["trace_unsolved"],
                             reduce=reduce, progress=bar)
        if arc is not None:
            arc.gather(rt)
        return res
    depth_arcs = [empty_pool(arc) for _ in range(model.cfg.halt_max_steps)] if arc is not None else None
    warm_up(model, test_data, rt.device)
    fixed = evaluate_split(model, test_data, rt.device, trace=trace, trace_unsolved=s["trace_unsolved"],
                           reduce=reduce, depth_arcs=depth_arcs, timed=True, progress=bar and f"{bar}, every fixed depth")
    res = evaluate_split(model, test_data, rt.device, arc=arc, reduce=reduce, halt_on_q=True,
                         progress=bar and f"{bar}, halting=q")
    for a in (depth_arcs or []) + ([arc] if arc is not None else []):
        a.gather(rt)
    res.update(steps=fixed["steps"], trace=fixed["trace"])
    if rt.master:
        res["compute"] = compute_table(fixed, res, depth_arcs, arc)
    return res


def warm_up(model, dataset: PuzzleDataset, device) -> None:
    """One batch of the split through both kinds of evaluation, untimed and unrecorded, before
    the compute table's two timed passes: the first forward calls of a process pay for lazy
    initialisation, the allocator's first requests and kernel selection, and without this the
    pass that runs first (every fixed depth) would pay them alone."""
    first = next(dataset.iter_test(), None)
    if first is None:
        return
    batch = {k: v.to(device) for k, v in first[1].items()}
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for halt_on_q in (False, True):
            model.solve(batch, halt_on_q=halt_on_q)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    model.train(was_training)


def empty_pool(arc: ARCEvaluator) -> ARCEvaluator:
    """An evaluator like arc (same tasks and settings) with no votes yet."""
    other = copy.copy(arc)
    other.votes, other.seen = {}, 0
    return other


def subset_tasks(dataset: PuzzleDataset, names: list[str]) -> set:
    """The ARC tasks whose examples a limited dataset kept."""
    tasks = set()
    for set_name, rows in dataset.subset.items():
        d = dataset.data[set_name]
        puzzles = np.searchsorted(d["puzzle_indices"], rows, side="right") - 1
        tasks |= {inverse_variant(names[i])[0] for i in np.unique(d["puzzle_identifiers"][puzzles])}
    return tasks


if __name__ == "__main__":
    main()
