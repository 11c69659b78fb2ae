# URM (Universal Reasoning Model, REFERENCE.md §8) on ARC-AGI-1, its recipe (scripts/URM_arcagi1.sh):
# reported 53.8% pass@1 on the evaluation set (1000-augmentation voting; evaluate.py reports pass@1).
# One latent state re-injected with the input before every iteration, 4 blocks per iteration with a
# causal ConvSwiGLU, H_cycles 2 x L_cycles 6 iterations per ACT step (the last 6 with gradient),
# 16 loops (ACT steps), EMA; otherwise the data and optimisation of TRM's ARC recipe
# (config/arc1.py), trained twice as long. 8 GPUs in the reference:
#   torchrun --nproc_per_node=8 train.py config/urm_arc1.py
# Data: python prepare_arc.py --input_file_prefix=kaggle/combined/arc-agi --output_dir=data/arc1
import os

exec(open(os.path.join(os.path.dirname(__file__), "arc1.py")).read())
out_dir = "out/urm-arc1"
arch = "urm"
mlp_kind = "conv_swiglu"
conv_dtype = "bfloat16"        # as URM; "float32" lets the conv weights train (REFERENCE.md §8)
epochs = 200000
eval_interval = 2000
L_layers = 4                   # URM's num_layers
H_cycles = 2
L_cycles = 6
puzzle_emb_len = 1             # URM: a one-position puzzle prefix
halt_max_steps = 16            # URM's loops
no_ACT_continue = True
optimizer = "adam_atan2"
