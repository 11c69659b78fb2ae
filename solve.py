"""
Put a trained model to work on puzzles of one's own (what nanoGPT's sample.py is to its train.py):
Sudoku, mazes or ARC tasks, in the text people write them in, answered in the same form, and
checked where the rules are known.

    python solve.py --ckpt=out/sudoku-mini/ckpt.pt --puzzle=1.3..6...   # one puzzle (a row of n*n cells)
    python solve.py --ckpt=out/sudoku-mini/ckpt.pt --file=puzzles.txt --format=json
    python solve.py --ckpt=out/sudoku-mini/ckpt.pt --steps=True < puzzles.txt   # watch each ACT step
    python solve.py --ckpt=out/arc-mini/ckpt.pt --file=task.json --out=submission.json

The checkpoint (ours or a reference's, TRM, URM or HRM; a path or hf:OWNER/REPO/PATH) says what it
solves: Sudoku of its size, mazes of its size, or ARC. Input comes from --puzzle (one puzzle),
--file (many) or standard input:
  Sudoku  a row of n*n cells (digits, '.' or '0' for a blank) per line, or a grid of n lines
          (spaces and '|' between cells, and lines of '-' or '+' between boxes, are ignored);
          grids are separated by an empty line. A CSV file in the hub's format
          (source,question,answer,rating) is read by its question column.
  Maze    the hub's characters ('#' wall, ' ' open, 'S' start, 'G' goal): a maze of n lines of n
          characters, or one line of n*n; mazes are separated by an empty line.
  ARC     one task as JSON ({"train": [...], "test": [{"input": ...}]}) or a Kaggle challenges
          file ({task id: task}). The model has never seen these tasks: their augmented variants
          get puzzle-table rows trained on the tasks' demonstrations first (test-time training:
          train.py with config/arc_ttt.py, ttt_steps steps; 0 = every new row is the mean of the
          trained rows), then every variant is solved and the answers, mapped back, are voted on
          as evaluate.py does; two attempts per test input.

Every puzzle runs the number of ACT steps the checkpoint was trained with (what evaluate.py
runs), or with --halting=q until its halting rule fires. Puzzles go through the model in batches
of batch_size. Bad input stops before anything is solved or written: one line per bad puzzle
(up to 10, then a count), exit status 1.

Output (--format):
  text   per puzzle: a line with its verdict (Sudoku: the rows, columns, boxes and clues
         checked; maze: a connected route from S to G; ARC: whether an attempt equals an output
         the file gave), then the answer in the form it was given; --steps=True shows the answer
         after every ACT step, cells that changed marked (colour in a terminal, '*' after the
         cell otherwise), with the halting head's probability and the step where halting by q
         stops.
  json   one JSON object per line and puzzle: answer, answer after each step, q per step, the
         step where halting by q stops, the verdict, seconds (its batch's time over its rows).
--html=FILE writes the steps as evaluate.py's trace page; --out=FILE (ARC) the attempts in the
Kaggle submission format. In Python:

    from solve import Solver
    Solver("out/sudoku-mini/ckpt.pt").solve(["1.3...", "..."])   # what --format=json prints
"""
import contextlib
import copy
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import checkpoint
import prepare_arc
import prepare_maze
import prepare_sudoku
import report
from configurator import ConfigError, parse
from data import load_metadata, read_identifiers

# -----------------------------------------------------------------------------
# settings (python solve.py --key=value ...)
ckpt = ""                  # checkpoint: ours (ckpt.pt) or a reference's; a path or hf:OWNER/REPO/PATH
puzzle = ""                # one puzzle as text ('' = --file, else standard input)
file = ""                  # a file of puzzles ('-' = standard input)
out = ""                   # ARC: write the attempts to this file in the Kaggle submission format
format = "text"            # 'text' or 'json' (one object per line and puzzle)
steps = False              # show the answer after every ACT step
html = ""                  # write the answer after every ACT step as a trace page to this file
color = "auto"             # --steps marks: 'auto' (colour in a terminal), 'always', 'never'
halting = "fixed"          # 'fixed': halt_max_steps steps each (evaluate.py's default); 'q': each
                           # puzzle stops where its halting rule fires (faster, maybe less accurate)
halt_max_steps = 0         # ACT steps (0 = as trained); more than trained works
batch_size = 256           # puzzles per forward
kind = ""                  # 'sudoku', 'maze' or 'arc' ('' = what the checkpoint was trained on)
data = ""                  # the dataset a reference checkpoint trained on (its sizes and puzzle names;
                           # '' = the one its all_config.yaml names, when present)
config = ""                # a train config describing a reference checkpoint without all_config.yaml
ttt_steps = -1             # ARC: test-time training steps (-1 = 100 on CPU, 300 on CUDA; 0 = none)
num_aug = -1               # ARC: augmented variants per task voted on (-1 = 7 on CPU, 99 on CUDA)
ttt_batch_size = 0         # ARC: test-time training batch (0 = 16 on CPU, config/arc_ttt.py's 96 on CUDA)
use_ema = True             # the EMA weights when the checkpoint holds them
trust_checkpoint = False   # load a checkpoint that needs full unpickling (can run code): only files you trust
device = "auto"            # 'auto' (cuda if present), 'cpu', 'cuda', ...
dtype = "auto"             # forward dtype: 'auto' (bfloat16 on CUDA, float32 on CPU)
seed = 0                   # ARC: the augmentations and the test-time training
# a reference checkpoint's architecture, as in evaluate.py (None: from all_config.yaml or --config)
globals().update({k: None for k in checkpoint.ARCH_KEYS if k != "halt_max_steps"})
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and not k.isupper()
            and (v is None or isinstance(v, (int, float, bool, str)))}
ROOT = os.path.dirname(os.path.abspath(__file__))
MAX_REPORTED = 10          # bad puzzles listed one per line; the rest are counted
DEVICE_DEFAULTS = {"cpu": dict(ttt_steps=100, num_aug=7, ttt_batch_size=16),
                   "cuda": dict(ttt_steps=300, num_aug=99, ttt_batch_size=96)}
MAZE_INPUT = "# SG"        # characters a maze question may hold (the answer adds 'o')
CSV_HEADER = "source,question,answer,rating"


class PuzzleError(ValueError):
    """Bad input: .problems holds one line per bad puzzle (or file)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:MAX_REPORTED]
        more = len(problems) - len(shown)
        super().__init__("\n".join(shown + ([f"... and {more} more bad puzzles"] if more else [])))


# -----------------------------------------------------------------------------
# reading puzzles: text -> [{'source', 'tokens', 'form', ...}], every problem collected

def decode_text(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PuzzleError([f"{name}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})"]) from None


def csv_questions(text: str, name: str) -> list[tuple[str, str]]:
    """(source, question) of each row of a CSV file in the hub's format."""
    import csv
    rows = list(csv.reader(io.StringIO(text)))
    out = []
    for i, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != 4:
            out.append((f"{name} line {i}", None))
            continue
        out.append((f"{name} line {i}", row[1]))
    return out


def grid_blocks(text: str, name: str, n: int, cells_of, is_separator, is_blank):
    """Split text into puzzles: a line of n*n cells is one puzzle; n lines of n cells (separator
    lines among them ignored) are one grid; a blank line ends a grid. Yields (source, cells, form,
    problem, spaced): cells_of(line) gives a line's cells; spaced: the grid's lines had spaces."""
    block, start, spaced, skipping = [], 0, False, False
    for i, line in enumerate(text.split("\n") + [""], 1):
        line = line.rstrip("\r")
        if skipping and not is_blank(line):  # the rest of a grid already reported
            continue
        skipping = False
        if is_blank(line):
            if block:
                src = f"{name} line {start}"
                if len(block) != n:
                    yield src, None, "grid", f"a grid of {len(block)} rows; this checkpoint's puzzles have {n}", False
                else:
                    yield src, "".join(block), "grid", None, spaced
                block = []
            continue
        if is_separator(line):
            continue
        cells = cells_of(line)
        if len(cells) == n * n and not block:
            yield f"{name} line {i}", cells, "row", None, False
        elif len(cells) == n:
            if not block:
                start, spaced = i, False
            spaced |= " " in line.strip()
            block.append(cells)
        elif block:  # a row of another length inside a grid: the grid is bad; go on after it
            yield (f"{name} line {start}", None, "grid",
                   f"row {len(block) + 1} (line {i}) has {len(cells)} cells, the grid's rows {n}", False)
            block, skipping = [], True
        else:
            yield (f"{name} line {i}", None, "row", f"{len(cells)} cells; this checkpoint's puzzles are {n}x{n}: "
                   f"{n * n} on one line, or {n} lines of {n}", False)


def sudoku_cells(line: str) -> str:
    return re.sub(r"[\s|]", "", line)


def sudoku_separator(line: str) -> bool:
    return bool(line.strip()) and set(line.strip()) <= set("-+=| ")


def sudoku_problem(cells: str, n: int) -> str | None:
    """Why a Sudoku question is not one (a character outside the alphabet, clues that break the
    rules), or None."""
    digits = "".join(str(d) for d in range(1, n + 1))
    for j, ch in enumerate(cells):
        if ch not in digits and ch not in ".0":
            return (f"character {ch!r} at row {j // n + 1}, column {j % n + 1} is not a digit 1-{n}, "
                    f"'.' or '0'")
    g = np.array([0 if ch in ".0" else int(ch) for ch in cells]).reshape(n, n)
    br, bc = prepare_sudoku.BOXES[n]
    for what, units in (("row", g), ("column", g.T),
                        ("box", g.reshape(n // br, br, n // bc, bc).transpose(0, 2, 1, 3).reshape(n, n))):
        for u, unit in enumerate(units):
            vals = unit[unit > 0]
            if len(vals) != len(set(vals.tolist())):
                d = next(v for v in vals.tolist() if (vals == v).sum() > 1)
                return f"the clues already break the rules: {d} appears twice in {what} {u + 1}"
    return None


def maze_problem(cells: str, n: int) -> str | None:
    for j, ch in enumerate(cells):
        if ch not in MAZE_INPUT:
            return (f"character {ch!r} at row {j // n + 1}, column {j % n + 1} is not one of '#' (wall), ' ' (open), "
                    f"'S' (start), 'G' (goal)")
    s, g = cells.count("S"), cells.count("G")
    if s != 1 or g != 1:
        return f"a maze needs exactly one S and one G, this one has {s} S and {g} G"
    return None


def read_grid_puzzles(text: str, name: str, kind: str, n: int) -> list[dict]:
    """Sudoku or maze puzzles of an n x n checkpoint from text (lines, grids or the hub's CSV)."""
    if kind == "sudoku" and text.lstrip().startswith(("{", "[")):
        raise PuzzleError([f"{name}: JSON (an ARC task?), but this checkpoint solves {n}x{n} Sudoku"])
    if kind == "maze" and text.lstrip().startswith(("{", "[")) and "#" not in text:
        raise PuzzleError([f"{name}: JSON (an ARC task?), but this checkpoint solves {n}x{n} mazes"])
    first = text.split("\n", 1)[0].strip().lstrip("\ufeff")
    if first == CSV_HEADER:
        items = []
        for src, q in csv_questions(text, name):
            if q is None:
                items.append((src, None, "row", f"not 4 columns ({CSV_HEADER})", False))
            elif len(q) != n * n:
                items.append((src, None, "row", f"question of {len(q)} cells; this checkpoint's puzzles have {n * n}",
                              False))
            else:
                items.append((src, q, "row", None, False))
    elif kind == "sudoku":
        items = list(grid_blocks(text, name, n, sudoku_cells, sudoku_separator, lambda line: not line.strip()))
    else:  # a maze row may be all spaces: only an empty line separates mazes
        items = list(grid_blocks(text, name, n, lambda line: line, lambda line: False, lambda line: not line))
    puzzles, problems = [], []
    for src, cells, form, problem, spaced in items:
        if problem is None:
            problem = sudoku_problem(cells, n) if kind == "sudoku" else maze_problem(cells, n)
        if problem is not None:
            problems.append(f"{src}: {problem}")
            continue
        if kind == "sudoku":
            tokens = [1 if ch in ".0" else int(ch) + 1 for ch in cells]  # token = digit + 1, blank 1
            blank = "0" if "0" in cells else "."
            puzzles.append({"source": src, "question": cells, "tokens": tokens, "form": form, "spaced": spaced,
                            "blank": blank})
        else:
            tokens = [prepare_maze.CHARSET.index(ch) + 1 for ch in cells]
            puzzles.append({"source": src, "question": cells, "tokens": tokens, "form": form})
    if problems:
        raise PuzzleError(problems)
    if not puzzles:
        raise PuzzleError([f"{name}: no puzzles in the input (it is empty)"])
    return puzzles


def read_arc_tasks(text: str, name: str, default_id: str) -> dict:
    """{task id: task} from one task's JSON or a Kaggle challenges file, every task checked."""
    if not text.strip():
        raise PuzzleError([f"{name}: no puzzles in the input (it is empty)"])
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise PuzzleError([f"{name}: not JSON ({e.msg} at line {e.lineno}, column {e.colno}); an ARC checkpoint "
                           f"takes one task or a Kaggle challenges file"]) from None
    if not isinstance(obj, dict) or not obj:
        raise PuzzleError([f"{name}: expected a task ({{\"train\": ..., \"test\": ...}}) or an object of "
                           f"task id -> task"])
    tasks = {default_id: obj} if ("train" in obj or "test" in obj) else obj
    problems = []
    for tid, task in tasks.items():
        try:
            prepare_arc.read_tasks({tid: copy.deepcopy(task)}, None, "test", True, name, name)
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise PuzzleError(problems)
    return tasks


# -----------------------------------------------------------------------------
# answers: tokens -> the text form of the question, and checks

def sudoku_answer(tokens, p: dict, n: int) -> str:
    cells = "".join(str(t - 1) if 2 <= t <= n + 1 else p["blank"] for t in tokens)
    return layout(cells, p, n)


def maze_answer(tokens, p: dict, n: int) -> str:
    cells = "".join(prepare_maze.CHARSET[t - 1] if 1 <= t <= len(prepare_maze.CHARSET) else "?" for t in tokens)
    return layout(cells, p, n)


def layout(cells: str, p: dict, n: int) -> str:
    if p["form"] == "row":
        return cells
    sep = " " if p.get("spaced") else ""
    return "\n".join(sep.join(cells[r * n:(r + 1) * n]) for r in range(n))


def sudoku_verdict(tokens, question_tokens, n: int) -> str | None:
    """Why an answer breaks the rules or the clues, None when it is a solution."""
    a, q = np.asarray(tokens), np.asarray(question_tokens)
    if not ((a >= 2) & (a <= n + 1)).all():
        return f"{int((~((a >= 2) & (a <= n + 1))).sum())} cells are not digits"
    changed = np.flatnonzero((q >= 2) & (a != q))
    if len(changed):
        j = int(changed[0])
        return f"changes the clue at row {j // n + 1}, column {j % n + 1}"
    g = (a - 1).reshape(n, n)
    br, bc = prepare_sudoku.BOXES[n]
    for what, units in (("row", g), ("column", g.T),
                        ("box", g.reshape(n // br, br, n // bc, bc).transpose(0, 2, 1, 3).reshape(n, n))):
        for u, unit in enumerate(units):
            if len(set(unit.tolist())) != n:
                return f"{what} {u + 1} repeats a digit"
    return None


def maze_verdict(tokens, question_tokens, n: int) -> str | None:
    a, q = (np.asarray(t, np.int64).reshape(1, n, n) for t in (tokens, question_tokens))
    if ((a < 1) | (a > len(prepare_maze.CHARSET))).any():
        return "some cells are not maze characters"
    return prepare_maze.maze_problems(q, a)[0]


# -----------------------------------------------------------------------------
# the model

def run_batch(model, batch: dict, halt_on_q: bool, keep_steps: bool) -> dict:
    """One batch through model.solve: the final answers [B, L] and each row's final q, the steps
    it ran, the first step where its halting rule fired (halt_max_steps when it never did), and
    (keep_steps) its answer and halting probability after every step it ran."""
    B, L = batch["inputs"].shape
    rows = torch.arange(B)
    fired_at = torch.zeros(B, dtype=torch.long)
    per_step, q_prob = [], []
    hrm = not model.cfg.no_ACT_continue

    def on_step(step, carry, metrics, outputs):
        nonlocal rows
        fired = model.halts_on_q(outputs).cpu()
        first = fired & (fired_at[rows] == 0)
        fired_at[rows[first]] = step
        if keep_steps:
            logit = outputs["q_halt_logits"].float() - (outputs["q_continue_logits"].float() if hrm else 0)
            p = torch.full((B, L), -1, dtype=torch.long)
            p[rows] = outputs["preds"].cpu().long()
            q = torch.full((B,), float("nan"))
            q[rows] = logit.sigmoid().cpu()
            per_step.append(p)
            q_prob.append(q)
        if halt_on_q:
            rows = rows[~(carry.halted.cpu() | fired)]

    with torch.inference_mode():
        carry, _, outputs = model.solve(batch, on_step=on_step, halt_on_q=halt_on_q)
    fired_at[fired_at == 0] = model.cfg.halt_max_steps
    ran = outputs["steps"].cpu().long() if halt_on_q else torch.full((B,), model.cfg.halt_max_steps)
    return {"preds": outputs["preds"].cpu().long(), "q": outputs["q_halt_logits"].float().cpu(), "ran": ran,
            "fired_at": fired_at, "per_step": per_step, "q_prob": q_prob}


def resolve_device(dev: str, dt: str) -> tuple[str, str]:
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dt == "auto":
        dt = "bfloat16" if dev.startswith("cuda") else "float32"
    return dev, dt


def guess_kind(vocab: int, seq: int, dataset: str | None) -> str:
    """'sudoku', 'maze' or 'arc' from a model's vocabulary and sequence length (and the marker of
    the dataset it trained on, which names its builder, for a 4x4 grid, where a Sudoku and a maze
    vocabulary have the same size)."""
    n = math.isqrt(seq)
    if vocab == 12 and seq == 900:
        return "arc"
    if n * n == seq and vocab == n + 2 and n in prepare_sudoku.BOXES:
        if vocab == len(prepare_maze.CHARSET) + 1 and dataset:
            try:
                with open(os.path.join(dataset, checkpoint.MARKER)) as f:
                    if json.load(f).get("by") == "prepare_maze.py":
                        return "maze"
            except (OSError, ValueError, AttributeError):
                pass
        return "sudoku"
    if vocab == len(prepare_maze.CHARSET) + 1 and n * n == seq:
        return "maze"
    raise SystemExit(f"error: cannot tell what the checkpoint solves (vocabulary {vocab}, {seq} positions); "
                     f"give --kind=sudoku, maze or arc")


class Solver:
    """A checkpoint ready to solve puzzles: Solver(CKPT, **settings) with the settings of this
    file (halting='q', batch_size=..., ttt_steps=...). solve(puzzles) returns one dict per puzzle
    (ARC: per test input), what --format=json prints; nothing is written."""

    def __init__(self, ckpt: str, **settings):
        unknown = sorted(set(settings) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown setting {unknown[0]!r} (the settings are those of solve.py --help)")
        s = self.s = {**DEFAULTS, **settings, "ckpt": ckpt}
        if s["halting"] not in ("fixed", "q"):
            raise ValueError(f"halting must be 'fixed' or 'q', got {s['halting']!r}")
        if s["kind"] not in ("", "sudoku", "maze", "arc"):
            raise ValueError(f"kind must be 'sudoku', 'maze' or 'arc', got {s['kind']!r}")
        if s["batch_size"] < 1:
            raise ValueError(f"batch_size must be positive, got {s['batch_size']}")
        self.device, self.dtype = resolve_device(s["device"], s["dtype"])
        dev_type = "cuda" if self.device.startswith("cuda") else "cpu"
        for k, v in DEVICE_DEFAULTS[dev_type].items():  # the device's defaults where not given
            if s[k] == (0 if k == "ttt_batch_size" else -1):
                s[k] = v
        self.path = checkpoint.resolve(ckpt)
        self.ckpt_kind, self.ck = checkpoint.read_checkpoint(self.path, s["trust_checkpoint"])
        # the sizes the network was built for, and the dataset it trained on (when it is here)
        if self.ckpt_kind == "ours":
            mc = self.ck["model_config"]
            self.vocab, self.seq, self.num_ids = mc["vocab_size"], mc["seq_len"], mc["num_puzzle_identifiers"]
            dataset = s["data"] or (self.ck.get("config") or {}).get("data_dir", "").split(",")[0]
        else:
            ref = checkpoint.reference_config(self.path)
            dataset = s["data"] or (ref["data_paths"][0] if ref and ref["data_paths"] else "")
            emb = self.ck.get("embed_tokens.embedding_weight")
            table = self.ck.get("puzzle_emb.weights")
            if os.path.isdir(os.path.join(dataset or "", "test")):
                meta = load_metadata(dataset, "test")
                self.vocab, self.seq, self.num_ids = meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers
            elif emb is not None:
                self.vocab = emb.shape[0]
                self.num_ids = table.shape[0] if table is not None else 1
                # Sudoku: vocabulary n + 2; ARC and Maze-Hard: 30 x 30
                self.seq = next((n * n for n in prepare_sudoku.BOXES if n + 2 == self.vocab and self.vocab != 6), 900)
            else:
                raise SystemExit(f"error: {self.path}: no token embedding (embed_tokens.embedding_weight) to read "
                                 f"the vocabulary from")
        self.dataset = dataset if dataset and os.path.isdir(dataset) else None
        self.kind = s["kind"] or guess_kind(self.vocab, self.seq, self.dataset)
        self.n = math.isqrt(self.seq)
        self.model = None

    # building the model -------------------------------------------------------

    def build(self, kind: str, ck: dict, path: str, names, num_ids: int):
        """The model of checkpoint ck for puzzles whose names are `names` (its puzzle rows moved
        by name, new ones the mean of its rows), in eval mode."""
        from model import TRM, TRMConfig
        s = self.s
        cfg = checkpoint.model_settings(kind, ck, s, path)
        cfg.update(vocab_size=self.vocab, seq_len=self.seq, num_puzzle_identifiers=num_ids,
                   forward_dtype=self.dtype, halt_exploration_prob=0.0)
        if s["halt_max_steps"]:
            cfg["halt_max_steps"] = s["halt_max_steps"]
        try:
            model = TRM(TRMConfig.from_settings(cfg)).to(self.device)
        except (TypeError, ValueError) as e:
            raise SystemExit(f"error: model settings of {path}: {e}")
        with contextlib.redirect_stdout(sys.stderr):  # what happened to the puzzle table: a note
            state, moved = checkpoint.weights_for(kind, ck, path, names, s["use_ema"])
            if moved:
                print(moved)
            checkpoint.load_weights(model, state, path)
        return model.eval()

    def grid_model(self):
        if self.model is None:
            names = None
            if self.ckpt_kind == "ours":
                names = self.ck.get("identifiers")
            self.model = self.build(self.ckpt_kind, self.ck, self.path, names, self.num_ids)
        return self.model

    # solving ------------------------------------------------------------------

    def read(self, text: str, name: str = "input", default_id: str = "task"):
        """Puzzles (Sudoku, maze) or tasks (ARC) from text; PuzzleError lists every bad one."""
        if self.kind == "arc":
            return read_arc_tasks(text, name, default_id)
        return read_grid_puzzles(text, name, self.kind, self.n)

    def solve(self, puzzles, progress: bool = False, tokens: bool = False) -> list[dict]:
        """Solve puzzles: a list of texts (one puzzle each; ARC: task JSON texts or task dicts), a
        dict (ARC: one task or {task id: task}) or one text holding many (as a file would). Returns
        what --format=json prints, one dict per puzzle (ARC: per test input); tokens=True adds
        '_tokens', the model's input and answer tokens per step (for report.write_trace_html)."""
        return [r if tokens else {k: v for k, v in r.items() if not k.startswith("_")}
                for r in self._solve(puzzles, progress)]

    def _solve(self, puzzles, progress: bool) -> list[dict]:
        if isinstance(puzzles, dict) or (isinstance(puzzles, list) and puzzles and isinstance(puzzles[0], dict)):
            if self.kind != "arc":
                raise PuzzleError([f"ARC tasks given, but this checkpoint solves {self.n}x{self.n} {self.kind}"])
            text = json.dumps(puzzles if isinstance(puzzles, dict) else {f"task{i}": t for i, t in enumerate(puzzles)})
            return self.solve_parsed(self.read(text, "tasks"), progress)
        if isinstance(puzzles, str):
            return self.solve_parsed(self.read(puzzles, "input"), progress)
        parsed, problems = ([], []) if self.kind != "arc" else ({}, [])
        for i, text in enumerate(puzzles):
            try:
                got = self.read(text, f"puzzle {i + 1}", default_id=f"task{i}")
            except PuzzleError as e:
                problems += e.problems
                continue
            if self.kind == "arc":
                parsed.update(got)
            else:
                parsed += [{**p, "source": f"puzzle {i + 1}"} for p in got]
        if problems:
            raise PuzzleError(problems)
        return self.solve_parsed(parsed, progress)

    def solve_parsed(self, parsed, progress: bool = False) -> list[dict]:
        if self.kind == "arc":
            return self.solve_arc(parsed, progress)
        return self.solve_grids(parsed)

    def solve_grids(self, puzzles: list[dict]) -> list[dict]:
        model = self.grid_model()
        s, n = self.s, self.n
        answer = sudoku_answer if self.kind == "sudoku" else maze_answer
        verdict = sudoku_verdict if self.kind == "sudoku" else maze_verdict
        results = []
        for start in range(0, len(puzzles), s["batch_size"]):
            chunk = puzzles[start:start + s["batch_size"]]
            t0 = time.perf_counter()
            inputs = torch.tensor([p["tokens"] for p in chunk], dtype=torch.int32)
            batch = {"inputs": inputs.to(self.device), "labels": torch.zeros_like(inputs).to(self.device),
                     "puzzle_identifiers": torch.zeros(len(chunk), dtype=torch.int32, device=self.device)}
            r = run_batch(model, batch, s["halting"] == "q", keep_steps=True)
            seconds = (time.perf_counter() - t0) / len(chunk)
            for i, p in enumerate(chunk):
                final = r["preds"][i].tolist()
                problem = verdict(final, p["tokens"], n)
                ran = int(r["ran"][i])
                results.append({
                    "source": p["source"], "question": layout(p["question"], p, n), "answer": answer(final, p, n),
                    "valid": problem is None, "problem": problem, "steps_run": ran,
                    "halts_on_q_at": int(r["fired_at"][i]),
                    "steps": [answer(st[i].tolist(), p, n) for st in r["per_step"][:ran]],
                    "q": [round(float(q[i]), 6) for q in r["q_prob"][:ran]],
                    "seconds": round(seconds, 6),
                    "_tokens": {"input": p["tokens"], "steps": [st[i].tolist() for st in r["per_step"][:ran]]},
                })
        return results

    def solve_arc(self, tasks: dict, progress: bool = False) -> list[dict]:
        """ARC: build the tasks' dataset (their variants), train its puzzle rows (test-time
        training, train.py), solve every variant, vote; per test input two attempts."""
        from evaluate import ARCEvaluator, crop, inverse_variant
        from data import PuzzleDataset
        s = self.s
        t_start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="trm-solve-") as tmp:
            prefix = os.path.join(tmp, "tasks")
            with open(f"{prefix}_test_challenges.json", "w") as f:
                json.dump(tasks, f)
            data_dir = os.path.join(tmp, "data")
            with contextlib.redirect_stdout(io.StringIO()):  # its note on the missing solutions file
                prepare_arc.build(data_dir, input_file_prefix=prefix, subsets=["test"], test_set_name="test",
                                  num_aug=s["num_aug"], seed=s["seed"], num_workers=1, progress=False)
            kind, ck, path = self.ckpt_kind, self.ck, self.path
            trained = 0.0
            if s["ttt_steps"] > 0:
                t0 = time.perf_counter()
                path = self.test_time_train(data_dir, os.path.join(tmp, "run"), progress)
                kind, ck = checkpoint.read_checkpoint(path)
                trained = time.perf_counter() - t0
            names = read_identifiers(data_dir)
            model = self.build(kind, ck, path, names, len(names))
            test = PuzzleDataset(data_dir, "test", s["batch_size"])
            if test.num_examples() < s["batch_size"]:  # a batch pads to its size: no more rows than there are
                test = PuzzleDataset(data_dir, "test", test.num_examples())
            arc = ARCEvaluator(data_dir, pass_ks=(1, 2), blank_identifier_id=test.metadata.blank_identifier_id)
            canonical = {}  # (task, input key) -> the unaugmented variant's steps
            from evaluate import grid_key
            t0 = time.perf_counter()
            for _, batch in test.iter_test():
                batch = {k: v.to(self.device) for k, v in batch.items()}
                r = run_batch(model, batch, s["halting"] == "q", keep_steps=True)
                arc.update(batch["inputs"], batch["puzzle_identifiers"], r["preds"], r["q"])
                for i, pid in enumerate(batch["puzzle_identifiers"].tolist()):
                    if pid != arc.blank and inverse_variant(names[pid])[0] == names[pid]:
                        ran = int(r["ran"][i])
                        inp = batch["inputs"][i].cpu()
                        canonical[(names[pid], grid_key(crop(inp)))] = {
                            "steps": [crop(st[i]).tolist() for st in r["per_step"][:ran]],
                            "q": [round(float(q[i]), 6) for q in r["q_prob"][:ran]],
                            "steps_run": ran, "halts_on_q_at": int(r["fired_at"][i]),
                            "_tokens": {"input": inp.tolist(), "steps": [st[i].tolist() for st in r["per_step"][:ran]]}}
            solve_time = time.perf_counter() - t0
            res = arc.result()
        n_inputs = max(len(res["rows"]), 1)
        results = []
        for (task, i, ikey, _), attempts in zip(arc.test_inputs(), (a for t in res["submission"].values() for a in t)):
            given = tasks[task]["test"][i].get("output")
            cands = arc.rank(arc.votes.get((task, ikey), []))
            c = canonical.get((task, ikey), {})
            pair = [attempts["attempt_1"], attempts["attempt_2"]]
            results.append({
                "source": f"task {task} test {i}", "task": task, "test_index": i,
                "question": tasks[task]["test"][i]["input"], "attempts": pair, "answer": pair[0],
                "votes": [n for _, n, _ in cands[:2]], "total_votes": sum(n for _, n, _ in cands),
                "matches_given_output": (None if given is None else [a == given for a in pair]),
                "steps_run": c.get("steps_run"), "halts_on_q_at": c.get("halts_on_q_at"),
                "steps": c.get("steps", []), "q": c.get("q", []),
                "seconds": round((time.perf_counter() - t_start) / n_inputs, 6),
                "test_time_training_seconds": round(trained, 3), "solve_seconds": round(solve_time, 3),
                "_tokens": c.get("_tokens"),
            })
        return results

    def test_time_train(self, data_dir: str, run_dir: str, progress: bool) -> str:
        """train.py config/arc_ttt.py from this checkpoint on the tasks' demonstrations, for
        ttt_steps steps of ttt_batch_size; returns the trained checkpoint's path."""
        s = self.s
        meta = load_metadata(data_dir, "train")
        batch = s["ttt_batch_size"]
        per_epoch = meta.total_groups * meta.mean_puzzle_examples
        epochs = max(1, math.ceil(s["ttt_steps"] * batch / per_epoch))
        cmd = [sys.executable, os.path.join(ROOT, "train.py"), os.path.join(ROOT, "config", "arc_ttt.py"),
               f"--init_from={s['ckpt']}", f"--data_dir={data_dir}", f"--out_dir={run_dir}",
               f"--global_batch_size={batch}", f"--epochs={epochs}", f"--eval_interval={epochs}",
               f"--max_steps={s['ttt_steps']}", "--log_interval=1", f"--seed={s['seed']}",
               f"--device={s['device']}", f"--dtype={s['dtype']}", f"--trust_checkpoint={s['trust_checkpoint']}"]
        if self.ckpt_kind == "reference":  # its architecture as given here (a config file, settings)
            arch = checkpoint.model_settings("reference", self.ck, {**s, "arch": s["arch"]}, self.path)
            if checkpoint.reference_config(self.path) is None:
                cmd += [f"--{k}={v}" for k, v in arch.items() if k in checkpoint.SHAPE_KEYS]
        from tqdm import tqdm
        bar = tqdm(total=s["ttt_steps"], desc="test-time training", unit="step", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        lines = []
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=os.getcwd()) as proc:
            for line in proc.stdout:
                lines.append(line.rstrip())
                m = re.match(r"step (\d+)/(\d+) \|", line)
                if m:
                    bar.update(int(m.group(1)) - bar.n)
        bar.close()
        if proc.returncode != 0:
            tail = "\n".join(lines[-15:])
            raise SystemExit(f"{tail}\nerror: test-time training (train.py config/arc_ttt.py) failed, exit status "
                             f"{proc.returncode}")
        return os.path.join(run_dir, "ckpt.pt")


# -----------------------------------------------------------------------------
# showing the answers

ANSI_CHANGED = "\033[1;30;43m"   # bold black on yellow
ANSI_RESET = "\033[0m"
ARC_ANSI = [16, 26, 196, 34, 226, 248, 201, 208, 117, 88]  # 256-colour approximations of report.PALETTE


def show_grid(rows: list[list[str]], prev: list[list[str]] | None, colour: bool, arc: bool = False) -> str:
    """Cells as text, those that differ from prev marked: in colour, or with a '*' after them."""
    out = []
    for r, row in enumerate(rows):
        parts = []
        for c, cell in enumerate(row):
            changed = prev is not None and (r >= len(prev) or c >= len(prev[r]) or prev[r][c] != cell)
            if arc and colour:
                bg = f"\033[48;5;{ARC_ANSI[int(cell)]}m" if cell.isdigit() else ""
                parts.append(f"{bg}{'<>' if changed else '  '}{ANSI_RESET}")
            elif colour:
                parts.append(f"{ANSI_CHANGED}{cell}{ANSI_RESET} " if changed else f"{cell} ")
            else:
                parts.append(f"{cell}{'*' if changed else ' '}")
        out.append("".join(parts).rstrip() if not colour else "".join(parts))
    return "\n".join(out)


def as_rows(answer, n: int | None) -> list[list[str]]:
    if isinstance(answer, list):  # an ARC grid
        return [[str(v) for v in row] for row in answer]
    cells = answer.replace("\n", "").replace(" ", "") if "\n" in answer else answer
    if len(cells) != n * n:  # a maze row keeps its spaces
        cells = answer.replace("\n", "")
    return [list(cells[r * n:(r + 1) * n]) for r in range(n)]


def verdict_line(r: dict, kind: str) -> str:
    if kind == "arc":
        votes = "/".join(str(v) for v in r["votes"]) or "0"
        line = f"{r['source']}: attempts from {votes} of {r['total_votes']} votes"
        if r["matches_given_output"] is not None:
            m = r["matches_given_output"]
            line += (f", attempt {m.index(True) + 1} equals the output given in the input" if any(m)
                     else ", neither attempt equals the output given in the input")
        return line
    state = "valid" if r["valid"] else f"INVALID ({r['problem']})"
    return f"{r['source']}: {state}, {r['steps_run']} ACT steps"


def print_text(results: list[dict], kind: str, n: int, show_steps: bool, colour: bool, stream=sys.stdout):
    for r in results:
        print(verdict_line(r, kind), file=stream)
        if show_steps:
            prev = None
            question = as_rows(r["question"], n)  # first: step 1 marks the cells it changed in it
            print("question:", file=stream)
            print(show_grid(question, None, colour, arc=kind == "arc"), file=stream)
            first = as_rows(r["steps"][0], n) if r["steps"] else []
            if kind != "arc" or (len(first) == len(question) and len(first[0]) == len(question[0])):
                prev = question
            for t, (ans, q) in enumerate(zip(r["steps"], r["q"]), 1):
                grid = as_rows(ans, n)
                changed = "" if prev is None else (f", {sum(a != b for x, y in zip(grid, prev) for a, b in zip(x, y))} "
                                                   f"cells changed" + (" from the question" if t == 1 else ""))
                stop = ""
                if t == r["halts_on_q_at"]:
                    stop = "  <- halting by q stops here" + ("" if q > 0.5 else " (the last step: q never passed 0.5)")
                print(f"step {t}: q {q:.3f}{changed}{stop}", file=stream)
                print(show_grid(grid, prev, colour, arc=kind == "arc"), file=stream)
                prev = grid
            print("answer:", file=stream)
        if kind == "arc":
            for j, a in enumerate(r["attempts"], 1):
                print(f"attempt_{j}: {json.dumps(a, separators=(',', ':'))}", file=stream)
        else:
            print(r["answer"], file=stream)


def write_atomically(path: str, text: str):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def trace_page(results: list[dict], kind: str, title: str) -> str:
    """The trace page evaluate.py writes (report.write_trace_html), for these answers."""
    traces = []
    for r in results:
        tok = r.get("_tokens")
        if not tok or not tok["steps"]:
            continue
        traces.append({"kind": kind, "name": r["source"], "input": tok["input"], "target": None,
                       "steps": tok["steps"], "q_halt": [math.log(q / (1 - q)) if 0 < q < 1 else (50.0 if q >= 1 else -50.0)
                                                          for q in r["q"]],
                       "halts_on_q_at": r["halts_on_q_at"]})
    return traces


# -----------------------------------------------------------------------------

def read_input(s: dict) -> tuple[str, str, str]:
    """(text, its name for messages, a task id for a lone ARC task) from --puzzle, --file or stdin."""
    if s["puzzle"] and s["file"]:
        raise SystemExit("error: give --puzzle or --file, not both")
    if s["puzzle"]:
        return s["puzzle"], "--puzzle", "task"
    if s["file"] and s["file"] != "-":
        try:
            with open(s["file"], "rb") as f:
                raw = f.read()
        except OSError as e:
            raise SystemExit(f"error: {s['file']}: {e.strerror}")
        return decode_text(raw, s["file"]), s["file"], os.path.splitext(os.path.basename(s["file"]))[0]
    if sys.stdin.isatty():
        print("reading puzzles from standard input (end with Ctrl-D) ...", file=sys.stderr)
    return decode_text(sys.stdin.buffer.read(), "<stdin>"), "<stdin>", "task"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n\nsettings (--key=value):")
        for k, v in DEFAULTS.items():
            print(f"  {k} = {v!r}")
        return 0
    try:
        s = {**DEFAULTS, **parse(DEFAULTS, argv)}
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not s["ckpt"]:
        print("error: --ckpt=PATH is required (a checkpoint of train.py, or a reference's)", file=sys.stderr)
        return 2
    if s["format"] not in ("text", "json"):
        print(f"error: format must be 'text' or 'json', got {s['format']!r}", file=sys.stderr)
        return 2
    if s["color"] not in ("auto", "always", "never"):
        print(f"error: color must be 'auto', 'always' or 'never', got {s['color']!r}", file=sys.stderr)
        return 2
    settings = {k: v for k, v in s.items() if k != "ckpt"}
    try:
        solver = Solver(s["ckpt"], **settings)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if s["out"] and solver.kind != "arc":
        print(f"error: --out writes ARC attempts in the Kaggle format; this checkpoint solves {solver.kind} "
              f"(redirect the output instead)", file=sys.stderr)
        return 2
    for dest in (s["out"], s["html"]):
        if dest and os.path.isdir(dest):
            print(f"error: {dest} is a folder; give a file name", file=sys.stderr)
            return 2
    try:
        text, name, default_id = read_input(s)
        parsed = solver.read(text, name, default_id)
    except PuzzleError as e:
        for line in str(e).split("\n"):
            print(f"error: {line}", file=sys.stderr)
        return 1
    count = len(parsed) if solver.kind != "arc" else sum(len(t["test"]) for t in parsed.values())
    what = (f"{len(parsed)} ARC task(s), {count} test input(s)" if solver.kind == "arc"
            else f"{count} {solver.kind} puzzle{'s' if count != 1 else ''}")
    print(f"solving {what} with {s['ckpt']} ({'a train.py' if solver.ckpt_kind == 'ours' else 'a reference'} checkpoint) on {solver.device}, halting={s['halting']}"
          + (f", {solver.s['ttt_steps']} test-time training steps over {solver.s['num_aug'] + 1} variants"
             if solver.kind == "arc" else ""),
          file=sys.stderr)
    t0 = time.perf_counter()
    results = solver.solve_parsed(parsed, progress=True)
    wall = time.perf_counter() - t0
    if s["format"] == "json":
        for r in results:
            print(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}))
    else:
        colour = s["color"] == "always" or (s["color"] == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
        print_text(results, solver.kind, solver.n, s["steps"], colour)
    if s["out"]:
        sub = {}
        for r in results:
            sub.setdefault(r["task"], []).append({"attempt_1": r["attempts"][0], "attempt_2": r["attempts"][1]})
        write_atomically(s["out"], json.dumps(sub))
    if s["html"]:
        html_text = trace_page(results, solver.kind, s["ckpt"])
        tmp = f"{s['html']}.tmp-{os.getpid()}"
        report.write_trace_html(tmp, html_text, f"solve.py: ACT steps of {s['ckpt']}")
        os.replace(tmp, s["html"])
    if solver.kind == "arc":
        print(f"done in {wall:.1f} s", file=sys.stderr)
    else:
        bad = sum(not r["valid"] for r in results)
        print(f"{len(results)} puzzle{'s' if len(results) != 1 else ''} in {wall:.2f} s ({len(results) / max(wall, 1e-9):.1f}/s): "
              f"{len(results) - bad} valid, {bad} invalid", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
