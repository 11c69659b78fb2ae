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
