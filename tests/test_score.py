# evaluate.py --score=SUBMISSION --solutions=SOLUTIONS: any Kaggle-format submission scored offline
# with the ARC Prize rule, against a hand-computed score; every bad file refused, one line each.
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

from evaluate import score_submission

A, B, C, D = [[1]], [[2, 3]], [[4], [5]], [[0, 0], [0, 0]]


def entry(a1, a2):
    return {"attempt_1": a1, "attempt_2": a2}


SOLUTIONS = {"t1": [A, B], "t2": [C], "t3": [D, A]}
SUBMISSION = {"t1": [entry(B, A), entry(A, A)],   # input 0 by attempt_2, input 1 not: 1/2
              "t2": [entry(C, D)],                # by attempt_1: 1/1
              "t3": [entry(A, B), entry(B, C)]}   # neither: 0/2


def test_score_by_hand():
    res = score_submission(SUBMISSION, SOLUTIONS)
    # tasks 1/2, 1, 0 -> mean 0.5; inputs 2 of 5
    assert res["score"] == pytest.approx(0.5)
    assert res["test_inputs_solved"] == 2 and res["test_inputs"] == 5 and res["tasks"] == 3
    assert res["fraction_of_test_inputs_solved"] == pytest.approx(0.4)
    assert res["per_task"] == {"t1": [True, False], "t2": [True], "t3": [False, False]}


def run(*args):
    return subprocess.run([sys.executable, "evaluate.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return str(path)


def test_score_cli(tmp_path):
    sub, sol = write(tmp_path, "sub.json", SUBMISSION), write(tmp_path, "sol.json", SOLUTIONS)
    r = run(f"--score={sub}", f"--solutions={sol}", f"--out={tmp_path}/score.json")
    assert r.returncode == 0, r.stderr
    assert "t1: 1/2 test inputs solved (yes, no)" in r.stdout
    assert "score 0.5000" in r.stdout and "test inputs solved 2/5 (0.4000)" in r.stdout
    with open(tmp_path / "score.json") as f:
        assert json.load(f)["per_task"]["t3"] == [False, False]


def test_bad_submissions_are_named(tmp_path):
    sol = write(tmp_path, "sol.json", SOLUTIONS)
    bad = {"t1": [entry(B, A), {"attempt_1": A}],          # a missing attempt
           "t3": [entry([[1, 2], [3]], A), entry(A, [[12]])],   # a ragged grid, a value outside 0-9
           "t9": [entry(A, A)]}                             # a task the solutions do not have; t2 missing
    sub = write(tmp_path, "sub.json", bad)
    r = run(f"--score={sub}", f"--solutions={sol}", f"--out={tmp_path}/score.json")
    assert r.returncode == 1 and not any(line.startswith(("score ", "t1:")) for line in r.stdout.splitlines())
    assert r.stderr.strip().splitlines() == [
        f"error: {sub}: task t9: not in {sol}",
        f"error: {sub}: task t1: test input 1: missing attempt_2",
        f"error: {sub}: task t2: missing (the solutions have it)",
        f"error: {sub}: task t3: test input 0: attempt_1: ragged rows (lengths [1, 2])",
        f"error: {sub}: task t3: test input 1: attempt_2: cell value 12 is not a colour 0..9"]
    assert not os.path.exists(tmp_path / "score.json")
    fewer = write(tmp_path, "fewer.json", {**SUBMISSION, "t1": [entry(A, A)]})
    r = run(f"--score={fewer}", f"--solutions={sol}")
    assert r.returncode == 1 and r.stderr.strip() == f"error: {fewer}: task t1: 1 test inputs, the solutions have 2"
    broken = write(tmp_path, "broken.json", '{"t1": [')
    r = run(f"--score={broken}", f"--solutions={sol}")
    assert r.returncode != 0 and r.stderr.startswith(f"error: {broken}: not JSON")
    r = run(f"--score={sub}")
    assert r.returncode != 0 and "needs --solutions" in r.stderr


ARC_ROPE = ["--hidden_size=64", "--num_heads=4", "--expansion=4.0", "--H_cycles=2", "--L_cycles=2", "--L_layers=2",
            "--puzzle_emb_ndim=64", "--puzzle_emb_len=16", "--pos_encodings=rope", "--mlp_t=False",
            "--halt_max_steps=2", "--batch_size=8", "--curve_repeats=2", "--bootstrap=10"]


@pytest.mark.parametrize("drop", ["all", "one"])
def test_split_without_solutions_is_not_scored(golden, tmp_path, drop):
    """A test split built from a challenges file without solutions (all of it, or one task's)
    says so: submission.json is written, no score is printed or stored for those tasks, and the
    page draws their attempts under 'no solution given'."""
    import prepare_arc
    from conftest import ARC_REF_TASKS, arc1_tasks, write_kaggle
    arc1 = arc1_tasks()
    prefix = write_kaggle(str(tmp_path), {s: [arc1[s][i] for i in ids] for s, ids in ARC_REF_TASKS.items()})
    sol_path = f"{prefix}_evaluation_solutions.json"
    with open(sol_path) as f:
        sol = json.load(f)
    os.remove(sol_path)  # the test inputs have no outputs, unless the challenges carry them
    missing = sorted(sol)[0]
    if drop == "one":  # every task but one carries its test outputs inside the challenges file
        with open(f"{prefix}_evaluation_challenges.json") as f:
            ch = json.load(f)
        for k in ch:
            if k != missing:
                ch[k]["test"] = [{"input": t["input"], "output": o} for t, o in zip(ch[k]["test"], sol[k])]
        write(tmp_path, "arc-agi_evaluation_challenges.json", ch)
    data = str(tmp_path / "data")
    prepare_arc.build(data, input_file_prefix=prefix, subsets=["training", "evaluation"], test_set_name="evaluation",
                      num_aug=2, progress=False)
    with open(os.path.join(data, "test_no_solutions.json")) as f:
        unsolved = json.load(f)
    assert sorted(unsolved) == (sorted(ARC_REF_TASKS["evaluation"]) if drop == "all" else [missing])
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "evaluate.py", f"--ckpt={golden}/ckpt_arc_rope.pt", f"--data={data}", *ARC_ROPE,
                        f"--out_dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TRM_USE_EXT": "off"})
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out / "report.json") as f:
        rep = json.load(f)
    with open(out / "submission.json") as f:
        assert sorted(json.load(f)) == sorted(ARC_REF_TASKS["evaluation"])
    page = (out / "report.html").read_text()
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    if drop == "all":
        assert "this split has no solutions" in r.stdout and "ARC: no solutions given for the 2 test tasks" in r.stdout
        assert "[all]" not in r.stdout and "pass@1" not in r.stdout
        assert rep["no_solutions"] is True and rep["metrics"] == {} and rep["steps"] == []
        assert not any(k.startswith("pass@") for k in rep["arc"])
        assert all(x["correct@2"] is None for x in rows)
        assert page.count("no solution given") >= 3 and "✗" not in page
    else:
        assert "(over the 1 tasks with solutions; 1 without are not scored)" in r.stdout
        assert rep["no_solutions"] is False and "pass@2" in rep["arc"] and rep["arc"]["unsolved"] == [missing]
        assert [x["correct@2"] is None for x in rows] == [x["task"] == missing for x in rows]
        assert "no solution given" in page
    assert rep["arc"]["rule"].startswith("pass@K: a test input counts as solved")
