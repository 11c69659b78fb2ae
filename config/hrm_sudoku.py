# HRM on Sudoku-Extreme (1000 training puzzles x 1000 augmentations), its recipe (README): reported
# 55.0% exact accuracy (reproductions report lower, e.g. 45.8%, HRM issue #12); about 10 minutes on
# 8 GPUs. The README advises stopping early once train accuracy nears 100%. The ARC model
# (config/hrm_arc1.py) with Sudoku's schedule, weight decay and puzzle-embedding learning rate.
# Data: python prepare_sudoku.py --source=hub --subsample_size=1000 --num_aug=1000 \
#           --output_dir=data/sudoku-extreme-1k-aug-1000
out_dir = "out/hrm-sudoku"
data_dir = "data/sudoku-extreme-1k-aug-1000"
prepare = "python prepare_sudoku.py --source=hub --subsample_size=1000 --num_aug=1000 --output_dir=data/sudoku-extreme-1k-aug-1000"
global_batch_size = 768
epochs = 20000
eval_interval = 2000
# model: two attention stacks with rotary positions over the 1 puzzle-embedding position + 81 cells
arch = "hrm"
hidden_size = 512
num_heads = 8
expansion = 4.0
H_layers = 4
L_layers = 4
H_cycles = 2
L_cycles = 2
puzzle_emb_ndim = 512
puzzle_emb_len = 1             # HRM: a one-position puzzle prefix
mlp_t = False
pos_encodings = "rope"
halt_max_steps = 16
halt_exploration_prob = 0.1
no_ACT_continue = False        # halt when q_halt > q_continue; Q-continue target from an extra step
loss_type = "stablemax"
# optimisation
lr = 1e-4
lr_min_ratio = 1.0
lr_warmup_steps = 2000
beta1 = 0.9
beta2 = 0.95
weight_decay = 1.0
puzzle_emb_lr = 1e-4
puzzle_emb_weight_decay = 1.0
ema = False
ema_rate = 0.999
