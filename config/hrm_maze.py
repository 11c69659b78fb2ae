# HRM on Maze-Hard 30x30 (1000 training mazes), its recipe (README): reported 74.5% exact accuracy;
# about an hour on 8 GPUs. The Sudoku recipe (config/hrm_sudoku.py) on mazes.
# Data: python prepare_maze.py --aug=True
out_dir = "out/hrm-maze"
data_dir = "data/maze-30x30-hard-1k"
prepare = "python prepare_maze.py --aug=True --output_dir=data/maze-30x30-hard-1k"
global_batch_size = 768
epochs = 20000
eval_interval = 2000
# model: two attention stacks with rotary positions over the 1 puzzle-embedding position + 900 cells
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
