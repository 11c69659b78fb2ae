# TRM on Maze-Hard (30x30 mazes), the paper's recipe (REFERENCE.md §7): the Sudoku recipe
# (config/sudoku.py) with self-attention and rotary positions over the 16 + 900 positions,
# H_cycles 3 and L_cycles 4; reported 85.3% exact accuracy on the test mazes, trained under 24
# hours on 4 L40S.
# Data: python prepare_maze.py --aug=True
# (the hub's 1000 training mazes, each with its 8 dihedral transforms: the reference README's
# "1000 examples, 8 augments". Its command line itself leaves augmentation off; the training
# schedule is the same either way, since an epoch draws one puzzle of each of the 1000 groups.)
out_dir = "out/maze"
data_dir = "data/maze-30x30-hard-1k"
prepare = "python prepare_maze.py --aug=True --output_dir=data/maze-30x30-hard-1k"
global_batch_size = 768
epochs = 50000
eval_interval = 5000
# model: attention with rotary positions over the 16 puzzle-embedding positions + 900 cells
hidden_size = 512
num_heads = 8
expansion = 4.0
L_layers = 2
H_cycles = 3
L_cycles = 4
puzzle_emb_ndim = 512
puzzle_emb_len = 16
mlp_t = False
pos_encodings = "rope"
halt_max_steps = 16
halt_exploration_prob = 0.1
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
ema = True
ema_rate = 0.999
