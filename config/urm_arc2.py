# URM on ARC-AGI-2, its recipe (scripts/URM_arcagi2.sh): reported 16.0% pass@1 on the evaluation
# set. The ARC-AGI-1 recipe (config/urm_arc1.py) with Muon for the 2-D weights (REFERENCE.md §8).
#   torchrun --nproc_per_node=8 train.py config/urm_arc2.py
# Data: python prepare_arc.py --version=2 --input_file_prefix=kaggle/combined/arc-agi --output_dir=data/arc2
out_dir = "out/urm-arc2"
data_dir = "data/arc2"
prepare = "python prepare_arc.py --version=2"
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
optimizer = "muon"             # Muon for the 2-D weights, AdamW for the rest
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
