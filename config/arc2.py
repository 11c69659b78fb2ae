# TRM on ARC-AGI-2, the paper's recipe (REFERENCE.md §7): reported 7.8% pass@2 on the evaluation set with
# 1000-augmentation voting (evaluate.py). The ARC-AGI-1 recipe (config/arc1.py) on other data:
#   torchrun --nproc_per_node=4 train.py config/arc2.py
# Data: the training2, evaluation2 and ConceptARC tasks, the evaluation2 tasks' test pairs held out:
#   python prepare_arc.py --version=2 --input_file_prefix=kaggle/combined/arc-agi --output_dir=data/arc2
out_dir = "out/arc2"
data_dir = "data/arc2"
prepare = "python prepare_arc.py --version=2"
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
