# HRM on Maze-Hard 30x30 (1000 training mazes), its recipe (README): reported 74.5% exact accuracy;
# about an hour on 8 GPUs. The Sudoku recipe (config/hrm_sudoku.py) on mazes.
# Data: python prepare_maze.py --aug
import os

exec(open(os.path.join(os.path.dirname(__file__), "hrm_sudoku.py")).read())
out_dir = "out/hrm-maze"
data_dir = "data/maze-30x30-hard-1k"
