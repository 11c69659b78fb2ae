# HRM (Hierarchical Reasoning Model, REFERENCE.md §9) on ARC-AGI-1, its recipe (README): reported
# 40.3% pass@2. Separate H and L stacks of 4 blocks, H_cycles 2 x L_cycles 2 per ACT step with
# gradient through the final L and H update only, Q-continue halting with its target from an extra
# inner step, no EMA; the data and optimisation of TRM's ARC recipe (config/arc1.py). About 24 hours
# on 8 GPUs:
#   torchrun --nproc_per_node=8 train.py config/hrm_arc1.py
# Data: python prepare_arc.py --input_file_prefix=kaggle/combined/arc-agi --output_dir=data/arc1
out_dir = "out/hrm-arc1"
data_dir = "data/arc1"
prepare = "python prepare_arc.py"
global_batch_size = 768
epochs = 100000
eval_interval = 10000
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
weight_decay = 0.1
puzzle_emb_lr = 1e-2
puzzle_emb_weight_decay = 0.1
ema = False
ema_rate = 0.999
