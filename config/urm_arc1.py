# URM (Universal Reasoning Model, REFERENCE.md §8) on ARC-AGI-1, its recipe (scripts/URM_arcagi1.sh):
# reported 53.8% pass@1 on the evaluation set (1000-augmentation voting; evaluate.py reports pass@1).
# One latent state re-injected with the input before every iteration, 4 blocks per iteration with a
# causal ConvSwiGLU, H_cycles 2 x L_cycles 6 iterations per ACT step (the last 6 with gradient),
# 16 loops (ACT steps), EMA; otherwise the data and optimisation of TRM's ARC recipe
# (config/arc1.py), trained twice as long. 8 GPUs in the reference:
#   torchrun --nproc_per_node=8 train.py config/urm_arc1.py
# Data: python prepare_arc.py --input_file_prefix=kaggle/combined/arc-agi --output_dir=data/arc1
out_dir = "out/urm-arc1"
data_dir = "data/arc1"
prepare = "python prepare_arc.py"
global_batch_size = 768
epochs = 200000
eval_interval = 2000
# model: one stack with rotary attention over the 1 puzzle-embedding position + 900 cells
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
weight_decay = 0.1
puzzle_emb_lr = 1e-2
puzzle_emb_weight_decay = 0.1
ema = True
ema_rate = 0.999
