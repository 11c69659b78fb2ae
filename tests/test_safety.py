"""Nothing lost, nothing trusted blindly: the dataset builders, train.py and evaluate.py write
only into a folder that is new, empty or their own (and never remove another file), and a
checkpoint that would need full unpickling is refused unless the user says they trust it."""
import json
import os
import subprocess
import sys

import pytest
import torch

import checkpoint
import prepare_arc
import prepare_maze
import prepare_sudoku
from conftest import ROOT, arc1_tasks, write_kaggle
from test_train import TINY, run

ENV = {**os.environ, "TRM_USE_EXT": "off", "PYTHONUNBUFFERED": "1"}


def snapshot(folder):
    """Every file under folder, with its bytes."""
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(folder) for f in files}


def users_folder(path):
    """A folder a user filled: another dataset (not built here) and a note."""
    os.makedirs(os.path.join(path, "other-dataset", "train"))
    with open(os.path.join(path, "other-dataset", "train", "dataset.json"), "w") as f:
        f.write("{}")
    with open(os.path.join(path, "notes.txt"), "w") as f:
        f.write("mine")
    return snapshot(path)


def small_arc_prefix(tmp):
    arc1 = arc1_tasks()
    return write_kaggle(str(tmp), {"training": list(arc1["training"])[:2], "evaluation": list(arc1["evaluation"])[:1]})


def build_sudoku(out):
    return prepare_sudoku.build(out, source="generate", size=4, num_train=8, num_test=2, min_blanks=6, seed=0)


def build_maze(out):
    return prepare_maze.build(out, source="generate", size=6, num_train=4, num_test=2, seed=0)


BUILDERS = {"sudoku": lambda out, tmp: build_sudoku(out),
            "maze": lambda out, tmp: build_maze(out),
            "arc": lambda out, tmp: prepare_arc.build(out, input_file_prefix=small_arc_prefix(tmp),
                                                      subsets=["training", "evaluation"], num_aug=1, progress=False)}


@pytest.mark.parametrize("name", BUILDERS)
def test_builder_refuses_a_folder_it_did_not_build(tmp_path, name):
    out = str(tmp_path / "data")
    before = users_folder(out)
    with pytest.raises(ValueError) as e:
        BUILDERS[name](out, tmp_path)
    assert str(e.value).startswith(f"{out} holds other files and no {checkpoint.MARKER}")
    assert "nothing in it was changed" in str(e.value) and "--output_dir" in str(e.value)
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == sorted(["data"] + (["arc-agi_training_challenges.json",
                                                              "arc-agi_training_solutions.json",
                                                              "arc-agi_evaluation_challenges.json",
                                                              "arc-agi_evaluation_solutions.json"]
                                                             if name == "arc" else []))


@pytest.mark.parametrize("name", BUILDERS)
def test_builder_replaces_its_own_dataset_and_fills_an_empty_folder(tmp_path, name):
    out = str(tmp_path / "data")
    os.makedirs(out)  # empty: fine
    BUILDERS[name](out, tmp_path)
    with open(os.path.join(out, checkpoint.MARKER)) as f:
        marker = json.load(f)
    assert marker["kind"] == "dataset" and marker["by"] == f"prepare_{name}.py"
    BUILDERS[name](out, tmp_path)  # its own earlier build: replaced
    assert checkpoint.folder_kind(out) == "dataset"
    run_dir = str(tmp_path / "run")
    checkpoint.mark_folder(run_dir, "run", "train.py")
    with pytest.raises(ValueError, match="holds a training run of train.py, not a dataset"):
        BUILDERS[name](run_dir, tmp_path)


def test_builder_cli_refuses_in_one_line(tmp_path):
    out = str(tmp_path / "data")
    before = users_folder(out)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "prepare_sudoku.py"), "--source=generate", "--size=4",
                        "--num_train=8", "--num_test=2", "--min_blanks=6", f"--output_dir={out}"],
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"prepare_sudoku.py: error: {out} holds other files"), r.stderr
    assert snapshot(out) == before


# -----------------------------------------------------------------------------
# train.py and evaluate.py output folders

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run (its data and its out_dir)."""
    d = tmp_path_factory.mktemp("run")
    data = build_sudoku(str(d / "data"))
    out = str(d / "out")
    run([*TINY, f"--data_dir={data}", f"--out_dir={out}", "--epochs=2", "--eval_interval=2"], env={"TRM_USE_EXT": "off"})
    return data, out


def test_train_refuses_a_foreign_out_dir_and_an_earlier_run(trained, tmp_path):
    data, out = trained
    foreign = str(tmp_path / "mine")
    before = users_folder(foreign)
    r = run([*TINY, f"--data_dir={data}", f"--out_dir={foreign}"], check=False, env={"TRM_USE_EXT": "off"})
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"error: out_dir {foreign} holds other files and no {checkpoint.MARKER}, so this project did not write it; "
        f"nothing in it was changed. Choose another --out_dir, or move its contents away yourself"]
    assert snapshot(foreign) == before
    # a dataset folder is not a run folder either
    r = run([*TINY, f"--data_dir={data}", f"--out_dir={data}"], check=False, env={"TRM_USE_EXT": "off"})
    assert r.returncode == 1 and "holds a dataset built by prepare_*.py, not a training run" in r.stderr
    # a new run from scratch would overwrite the earlier run's checkpoint: refused
    before = snapshot(out)
    r = run([*TINY, f"--data_dir={data}", f"--out_dir={out}"], check=False, env={"TRM_USE_EXT": "off"})
    assert r.returncode == 1 and "holds an earlier run's checkpoint; continue it with --init_from=resume" in r.stderr
    assert snapshot(out) == before


def test_train_and_evaluate_keep_other_files_in_their_folders(trained, tmp_path):
    data, out = trained
    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("mine")
    run([*TINY, f"--data_dir={data}", f"--out_dir={out}", "--epochs=4", "--eval_interval=2",
         "--init_from=resume"], env={"TRM_USE_EXT": "off"})
    assert open(os.path.join(out, "notes.txt")).read() == "mine"
    ev = os.path.join(out, "eval")
    for _ in range(2):  # the second evaluation replaces the first one's files, and only them
        r = subprocess.run([sys.executable, "evaluate.py", f"--ckpt={out}/ckpt.pt"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300, env=ENV)
        assert r.returncode == 0, r.stderr
        with open(os.path.join(ev, "plot-notes.txt"), "w") as f:
            f.write("mine too")
    assert {"report.json", "steps.csv", checkpoint.MARKER, "plot-notes.txt"} <= set(os.listdir(ev))
    foreign = str(tmp_path / "results")
    before = users_folder(foreign)
    r = subprocess.run([sys.executable, "evaluate.py", f"--ckpt={out}/ckpt.pt", f"--out_dir={foreign}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        f"error: out_dir {foreign} holds other files and no {checkpoint.MARKER}, so this project did not write it; "
        f"nothing in it was changed. Choose another --out_dir, or move its contents away yourself"]
    assert snapshot(foreign) == before


# -----------------------------------------------------------------------------
# checkpoints are unpickled with weights_only=True

class CreatesAFile:
    """Unpickling this calls open(path, 'w'): a stand-in for any code a file could run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_that_would_run_code_is_refused(trained, tmp_path):
    data, out = trained
    ck = torch.load(os.path.join(out, "ckpt.pt"), weights_only=True)  # ours loads safely
    target = tmp_path / "created-by-unpickling"
    ck["config"]["extra"] = CreatesAFile(str(target))
    evil = str(tmp_path / "evil.pt")
    torch.save(ck, evil)
    want = (f"error: {evil} needs more than tensors and plain containers to load (it names io.open), so "
            f"unpickling it could run code; only for a file you trust: --trust_checkpoint=True")
    r = subprocess.run([sys.executable, "evaluate.py", f"--ckpt={evil}", f"--out_dir={tmp_path}/ev"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [want]
    assert not target.exists()
    # train.py resuming from such a file: the same
    run_dir = tmp_path / "run"
    checkpoint.mark_folder(str(run_dir), "run", "train.py")
    os.replace(evil, run_dir / "ckpt.pt")
    r = run([*TINY, f"--data_dir={data}", f"--out_dir={run_dir}", "--init_from=resume"], check=False,
            env={"TRM_USE_EXT": "off"})
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [want.replace(evil, str(run_dir / "ckpt.pt"))]
    assert not target.exists()
    # the user's explicit trust loads it (and so runs it)
    checkpoint.load(str(run_dir / "ckpt.pt"), trust=True)
    assert target.exists()


def test_importing_the_project_prints_nothing():
    """On a machine without a GPU, with a CUDA build of torch (what pip installs by default), the
    project's modules import without a warning (CI runs this under such a build)."""
    code = ("import warnings; warnings.simplefilter('default')\n"
            "import checkpoint, configurator, data, evaluate, model, ops, optim, prepare_arc, prepare_maze, "
            "prepare_sudoku, report, runtime\n"
            "import torch; torch.cuda.is_available()\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "TRM_USE_EXT": "auto"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "", r.stderr
