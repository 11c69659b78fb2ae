# train.py's defaults (the mini Sudoku, as config/sudoku_mini.py) with HRM's architecture: an H stack
# and an L stack of one attention block each, H_cycles 2 x L_cycles 2 with gradient through the final
# L and H update only, Q-continue halting, no EMA. For the README's three-model comparison.
#   python train.py config/sudoku_mini_hrm.py
out_dir = "out/sudoku-mini-hrm"
arch = "hrm"
H_layers = 1
L_layers = 1
mlp_t = False
pos_encodings = "rope"
no_ACT_continue = False
ema = False
