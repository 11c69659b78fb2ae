# URM on Sudoku-Extreme (1000 training puzzles x 1000 augmentations), its recipe
# (scripts/URM_sudoku.sh): 77.6% exact accuracy as quoted by others (the URM README shows its results
# only as an image). The ARC recipe's model (config/urm_arc1.py) with Sudoku's optimisation.
# Data: python prepare_sudoku.py --source=hub --subsample_size=1000 --num_aug=1000 \
#           --output_dir=data/sudoku-extreme-1k-aug-1000
out_dir = "out/urm-sudoku"
data_dir = "data/sudoku-extreme-1k-aug-1000"
prepare = "python prepare_sudoku.py --source=hub --subsample_size=1000 --num_aug=1000 --output_dir=data/sudoku-extreme-1k-aug-1000"
global_batch_size = 128
epochs = 50000
eval_interval = 2000
# model: one stack with rotary attention over the 1 puzzle-embedding position + 81 cells
arch = "urm"
hidden_size = 512
num_heads = 8
expansion = 4.0
L_layers = 4                   # URM's num_layers
H_cycles = 2
L_cycles = 6
puzzle_emb_ndim = 512
puzzle_emb_len = 1             # URM: a one-position puzzle prefix
mlp_t = False
mlp_kind = "conv_swiglu"
conv_dtype = "bfloat16"        # as URM; "float32" lets the conv weights train (REFERENCE.md §8)
pos_encodings = "rope"
halt_max_steps = 16            # URM's loops
halt_exploration_prob = 0.1
no_ACT_continue = True
loss_type = "stablemax"
# optimisation
optimizer = "adam_atan2"
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
