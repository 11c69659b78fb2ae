# URM on Sudoku-Extreme (1000 training puzzles x 1000 augmentations), its recipe
# (scripts/URM_sudoku.sh): 77.6% exact accuracy as quoted by others (the URM README shows its results
# only as an image). The ARC recipe's model (config/urm_arc1.py) with Sudoku's optimisation.
# Data: python prepare_sudoku.py --source=hub --subsample_size=1000 --num_aug=1000 \
#           --output_dir=data/sudoku-extreme-1k-aug-1000
import os

exec(open(os.path.join(os.path.dirname(__file__), "urm_arc1.py")).read())
out_dir = "out/urm-sudoku"
data_dir = "data/sudoku-extreme-1k-aug-1000"
global_batch_size = 128
epochs = 50000
eval_interval = 2000
puzzle_emb_lr = 1e-4
weight_decay = 1.0
puzzle_emb_weight_decay = 1.0
