# report.py: the ARC page orders and marks tasks right and renders grids cell for cell, offline;
# the trace page counts wrong cells per step and crops ARC grids; the vote curve is a PNG and
# leaves no figure open. Pages are read back with the standard library's HTML parser.
import subprocess
import sys
from html.parser import HTMLParser

from conftest import ROOT
from report import plot_curve, write_arc_html, write_trace_html


class Page(HTMLParser):
    """The parts of a report page the tests look at: sections (id, heading, figures), index links,
    figures (class, caption, grid as rows of cells {class, text}) and every href/src value."""

    def __init__(self, path):
        super().__init__()
        self.urls, self.sections, self.index, self.text = [], [], [], []
        self._into = None  # the dict whose "text" the next data goes to
        with open(path, encoding="utf-8") as f:
            self.raw = f.read()
        self.feed(self.raw)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("href", "src")]
        if tag == "section":
            self.sections.append({"id": a.get("id"), "text": "", "figures": []})
        elif tag == "h2":
            self._into = self.sections[-1]
        elif tag == "a" and a.get("href", "").startswith("#"):
            self.index.append({"href": a["href"], "text": ""})
            self._into = self.index[-1]
        elif tag == "figure":
            self.sections[-1]["figures"].append({"class": a.get("class", ""), "text": "", "grid": None})
        elif tag == "figcaption":
            self._into = self.sections[-1]["figures"][-1]
        elif tag == "table" and self.sections:
            self.sections[-1]["figures"][-1]["grid"] = []
        elif tag == "tr" and self.sections:
            self.sections[-1]["figures"][-1]["grid"].append([])
        elif tag == "td" and self.sections:
            self.sections[-1]["figures"][-1]["grid"][-1].append({"class": a.get("class") or "", "text": ""})
            self._into = self.sections[-1]["figures"][-1]["grid"][-1][-1]
        elif tag == "br" and self._into is not None:
            self._into["text"] += " "
        elif tag not in ("br", "small"):
            self._into = None

    def handle_endtag(self, tag):
        if tag not in ("small", "br"):
            self._into = None

    def handle_data(self, data):
        self.text.append(data)
        if self._into is not None:
            self._into["text"] += data


def figure(section, caption):
    return next(f for f in section["figures"] if f["text"].startswith(caption))


# -----------------------------------------------------------------------------
# ARC report

GRID = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
BAD_NAME = "<b>x & y</b>"


def arc_tasks():
    a, b = [[1, 2], [3, 4]], [[4, 3], [2, 1]]
    return [
        {"task": "b_solved_second", "demos": [[a, b]],
         "tests": [{"index": 0, "input": a, "target": b, "attempts": [a, b], "votes": [7, 5], "correct": True}]},
        {"task": BAD_NAME, "demos": [[a, b], [b, a]],
         "tests": [{"index": 0, "input": a, "target": b, "attempts": [b], "votes": [3], "correct": True},
                   {"index": 1, "input": b, "target": a, "attempts": [b, None], "votes": [2], "correct": False}]},
        {"task": "a_solved", "demos": [[GRID, GRID]],
         "tests": [{"index": 0, "input": a, "target": b, "attempts": [b, a], "votes": [9, 1], "correct": True}]},
    ]


def test_arc_html(tmp_path):
    path = tmp_path / "arc.html"
    summary = {"pass@2": 0.4463, "tasks": 3, "checkpoint": "step_1000"}
    write_arc_html(str(path), arc_tasks(), "ARC test", summary)
    page = Page(path)

    # offline: only in-page links, nothing loaded from elsewhere
    assert all(u.startswith("#") for u in page.urls)
    for bad in ("http://", "https://", "<script", "<link", "<img", "url(", "@import"):
        assert bad not in page.raw

    # failed task first, in the sections and in the index; then by name
    names = [BAD_NAME, "a_solved", "b_solved_second"]
    assert [s["text"].split(" (")[0] for s in page.sections] == ["✗ " + names[0], "✓ " + names[1], "✓ " + names[2]]
    assert [i["text"] for i in page.index] == ["✗\xa0" + names[0], "✓\xa0" + names[1], "✓\xa0" + names[2]]
    assert [i["href"] for i in page.index] == ["#" + s["id"] for s in page.sections]
    assert BAD_NAME not in page.raw and "&lt;b&gt;x &amp; y&lt;/b&gt;" in page.raw

    # a known grid, cell for cell: colour 0 is a bare cell, colour v has class cv
    grid = figure(page.sections[1], "demo 1 in")
    assert grid["text"] == "demo 1 in 3x4"
    assert [len(row) for row in grid["grid"]] == [4, 4, 4]
    assert [[c["class"] for c in row] for row in grid["grid"]] == [
        ["" if v == 0 else f"c{v}" for v in row] for row in GRID]

    # attempts marked right and wrong; no prediction shown as such
    second = page.sections[2]
    assert figure(second, "✗ attempt 1")["class"] == "bad"
    assert figure(second, "✓ attempt 2")["class"] == "ok"
    assert figure(second, "✓ attempt 2")["text"] == "✓ attempt 2, 5 votes 2x2"
    failed = page.sections[0]
    assert figure(failed, "attempt 2")["grid"] is None
    assert "no prediction" in page.text
    assert "(1/2 test inputs solved)" in failed["text"]

    # the summary
    text = "".join(page.text)
    for k, v in summary.items():
        assert f"{k}{v}" in text


def test_arc_html_size(tmp_path):
    """A 30x30 grid costs at most 14 bytes a cell."""
    grid = [[(r * 30 + c) % 10 for c in range(30)] for r in range(30)]
    task = {"task": "big", "demos": [[grid, grid]] * 3,
            "tests": [{"index": 0, "input": grid, "target": grid, "attempts": [grid, grid],
                       "votes": [1, 1], "correct": True}]}
    write_arc_html(str(tmp_path / "big.html"), [task], "size", {})
    assert (tmp_path / "big.html").stat().st_size < 10 * 900 * 14 + 5000


# -----------------------------------------------------------------------------
# ACT traces

def arc_canvas(grid):
    """The dataset's ARC tokens: colour c -> c + 2 on a 30x30 PAD canvas, EOS (1) right of and
    below the grid."""
    canvas = [[0] * 30 for _ in range(30)]
    h, w = len(grid), len(grid[0])
    for r in range(h):
        for c in range(w):
            canvas[r][c] = grid[r][c] + 2
        canvas[r][w] = 1
    for c in range(w):
        canvas[h][c] = 1
    return [v for row in canvas for v in row]


def trace_cases():
    solution = [1, 2, 3, 4, 3, 4, 1, 2, 2, 1, 4, 3, 4, 3, 2, 1]
    target = [d + 1 for d in solution]
    puzzle = [1 if i % 3 else t for i, t in enumerate(target)]  # every third cell given
    step1 = list(target)
    step1[1], step1[5], step1[7] = 1, 2, 2  # a blank and two wrong digits: 3 wrong
    step2 = list(target)
    step2[5] = 2  # 1 wrong
    sudoku = {"kind": "sudoku", "name": "sudoku 4x4", "input": puzzle, "target": target,
              "steps": [step1, step2, target], "q_halt": [-2.0, 0.0, 3.0]}

    maze_in = [1, 1, 1, 1, 1, 1, 3, 2, 2, 1, 1, 1, 1, 2, 1, 1, 4, 2, 2, 1, 1, 1, 1, 1, 1]
    maze_out = [1, 1, 1, 1, 1, 1, 3, 5, 5, 1, 1, 1, 1, 5, 1, 1, 4, 5, 5, 1, 1, 1, 1, 1, 1]
    maze = {"kind": "maze", "name": "maze 5x5", "input": maze_in, "target": maze_out,
            "steps": [maze_in, maze_out], "q_halt": [-1.0, 1.0]}

    x = arc_canvas([[1, 2], [3, 4], [5, 6]])  # 3x2 + EOS: 4 rows, 3 columns used
    y = arc_canvas([[7, 8, 9, 0], [1, 2, 3, 4]])  # 2x4 + EOS: 3 rows, 5 columns used
    stray = list(y)
    stray[5 * 30 + 1] = 5  # outside the target (PAD there, so not wrong) but in the crop: 6 rows
    stray[0] = 3  # one wrong colour (1 for 7)
    arc = {"kind": "arc", "name": "arc <task>", "input": x, "target": y,
           "steps": [stray, y], "q_halt": [0.5, 20.0]}
    return [sudoku, maze, arc]


def test_trace_html(tmp_path):
    path = tmp_path / "trace.html"
    write_trace_html(str(path), trace_cases(), "traces")
    page = Page(path)
    assert all(u.startswith("#") for u in page.urls)
    sudoku, maze, arc = page.sections
    steps = {name: [f for f in s["figures"] if f["class"] == "step"]
             for name, s in zip(("sudoku", "maze", "arc"), page.sections)}
    assert [len(v) for v in steps.values()] == [3, 2, 2]

    # wrong cells in the captions, per-step line, and as marked cells
    text = "".join(page.text)
    assert "wrong cells: 3 → 1 → 0" in text
    assert "wrong cells: 5 → 0" in text
    assert "wrong cells: 1 → 0" in text
    assert [f["text"] for f in steps["sudoku"]] == [
        "step 1: 3 wrong q_halt 0.119 (logit -2.00)",
        "step 2: 1 wrong q_halt 0.500 (logit +0.00)",
        "step 3: 0 wrong, exact q_halt 0.953 (logit +3.00)"]
    for name, wrong in (("sudoku", [3, 1, 0]), ("maze", [5, 0]), ("arc", [1, 0])):
        marked = [sum("x" in c["class"].split() for row in f["grid"] for c in row) for f in steps[name]]
        assert marked == wrong, name
    # changed since the previous step: none at step 1; sudoku step 2 fixed 2 cells, step 3 one
    changed = [sum("d" in c["class"].split() for row in f["grid"] for c in row) for f in steps["sudoku"]]
    assert changed == [0, 2, 1]

    # Sudoku: digits as text, blanks empty, box borders after column 2 and row 2
    first = steps["sudoku"][0]["grid"]
    assert [c["text"] for c in first[0]] == ["1", "", "3", "4"]
    assert "br" in first[0][1]["class"] and "bb" in first[1][0]["class"]

    # ARC: cropped to 6x5 (input, target and the stray cell); PAD, EOS and colours
    for f in arc["figures"]:
        assert [len(row) for row in f["grid"]] == [5] * 6
    target = figure(arc, "target")["grid"]
    assert [c["class"] for c in target[0]] == ["c7", "c8", "c9", "c0", "e"]
    assert target[5][1]["class"] == "p"
    assert "shown 6x5 of 30x30" in arc["text"] and "arc &lt;task&gt;" in page.raw
    assert maze["figures"][0]["grid"][1][1]["class"] == "m3"


# -----------------------------------------------------------------------------
# vote curve

def test_plot_curve(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"votes": v, "pass@1": 0.3 + 0.01 * i, "pass@1_std": 0.02,
             "pass@2": 0.4 + 0.01 * i, "pass@2_std": 0.01} for i, v in enumerate([1, 2, 4, 8, 16, 32])]
    path = tmp_path / "curve.png"
    plot_curve(rows, str(path), "pass@k against votes")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    assert plt.get_fignums() == []


def test_import_is_cheap():
    """report.py imports matplotlib only when plotting."""
    code = "import sys, report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
