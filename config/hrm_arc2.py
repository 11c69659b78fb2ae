# HRM on ARC-AGI-2, its recipe (README): reported 5.0% pass@2; "8 hours often sufficient" on 8 GPUs.
# The ARC-AGI-1 recipe (config/hrm_arc1.py) on other data. HRM's ARC-AGI-2 data has no ConceptARC:
#   python prepare_arc.py --version=2 --input_file_prefix=kaggle/combined/arc-agi \
#       --subsets=training2,evaluation2 --output_dir=data/arc2-noconcept
out_dir = "out/hrm-arc2"
data_dir = "data/arc2-noconcept"
prepare = "python prepare_arc.py --version=2 --subsets=training2,evaluation2 --output_dir=data/arc2-noconcept"
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
