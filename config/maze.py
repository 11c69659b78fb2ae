# TRM on Maze-Hard (30x30 mazes), the paper's recipe (REFERENCE.md §7): the Sudoku recipe
# (config/sudoku.py) with self-attention and rotary positions over the 16 + 900 positions,
# H_cycles 3 and L_cycles 4; reported 85.3% exact accuracy on the test mazes, trained under 24
# hours on 4 L40S.
# Data: python prepare_maze.py --aug
# (the hub's 1000 training mazes, each with its 8 dihedral transforms: the reference README's
# "1000 examples, 8 augments". Its command line itself leaves augmentation off; the training
# schedule is the same either way, since an epoch draws one puzzle of each of the 1000 groups.)
import os

exec(open(os.path.join(os.path.dirname(__file__), "sudoku.py")).read())
out_dir = "out/maze"
data_dir = "data/maze-30x30-hard-1k"
mlp_t = False
pos_encodings = "rope"
H_cycles = 3
L_cycles = 4
