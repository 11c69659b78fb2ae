# train.py's defaults (the mini Sudoku, as config/sudoku_mini.py) with URM's architecture: one latent
# state, 2 blocks per iteration with a causal ConvSwiGLU and rotary attention, H_cycles 2 x L_cycles 2
# iterations per ACT step (the last 2 with gradient). For the README's three-model comparison.
#   python train.py config/sudoku_mini_urm.py
out_dir = "out/sudoku-mini-urm"
arch = "urm"
mlp_kind = "conv_swiglu"
mlp_t = False
pos_encodings = "rope"
