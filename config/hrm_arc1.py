# HRM (Hierarchical Reasoning Model, REFERENCE.md §9) on ARC-AGI-1, its recipe (README): reported
# 40.3% pass@2. Separate H and L stacks of 4 blocks, H_cycles 2 x L_cycles 2 per ACT step with
# gradient through the final L and H update only, Q-continue halting with its target from an extra
# inner step, no EMA; the data and optimisation of TRM's ARC recipe (config/arc1.py). About 24 hours
# on 8 GPUs:
#   torchrun --nproc_per_node=8 train.py config/hrm_arc1.py
# Data: python prepare_arc.py --input_file_prefix=kaggle/combined/arc-agi --output_dir=data/arc1
import os

exec(open(os.path.join(os.path.dirname(__file__), "arc1.py")).read())
out_dir = "out/hrm-arc1"
arch = "hrm"
H_layers = 4
L_layers = 4
H_cycles = 2
L_cycles = 2
puzzle_emb_len = 1             # HRM: a one-position puzzle prefix
no_ACT_continue = False        # halt when q_halt > q_continue; Q-continue target from an extra step
ema = False
