# The embedded default: the mini Sudoku, the run `python train.py` makes with no arguments.
# 6x6 puzzles with half of the 36 cells blank (prepare_sudoku.MINI: 2000 generated training
# puzzles x 10 augmentations, 500 held-out test puzzles that no training puzzle or augmentation
# of one equals), a 0.15M-parameter MLP-t TRM. Reproduces the README's quick-start figure:
# over 95% exact accuracy on the held-out puzzles in a few minutes on 2 CPU cores.
out_dir = "out/sudoku-mini"
data_dir = "data/sudoku-mini"
global_batch_size = 128
epochs = 40
eval_interval = 10
hidden_size = 64
expansion = 4.0
L_layers = 2
H_cycles = 2
L_cycles = 2
puzzle_emb_ndim = 0
mlp_t = True
pos_encodings = "none"
halt_max_steps = 4
lr = 3e-3
lr_warmup_steps = 100
ema_rate = 0.99
