# TRM on ARC-AGI-1 under the held-out-task protocol: the paper's recipe (config/arc1.py: same model,
# optimiser and schedule), but pretraining never sees anything of the evaluation tasks it is scored
# on. The paper (and the reference builder) put the evaluation tasks' demonstration pairs into the
# training set, so every evaluation task has trained puzzle-embedding rows and trained-on examples
# before it is scored; here those pairs are left out, and the evaluation tasks can be answered only
# by test-time training on their demonstrations afterwards, as a Kaggle submission must answer its
# hidden tasks. Scores from this protocol are therefore NOT comparable with the paper's 44.6%: the
# model has strictly less to go on (none of the 400 evaluation tasks' ~1300 demonstrations, nor their
# augmentations, during pretraining), and a number here measures generalisation to unseen tasks.
#   python prepare_arc.py --hold_out_test_tasks=True --output_dir=data/arc1-heldout
#   torchrun --nproc_per_node=4 train.py config/arc1_heldout.py
# (its evaluations during pretraining score untrained puzzle rows: expect ~0), then the second half:
#   python prepare_arc.py --subsets=evaluation --test_set_name=evaluation --output_dir=data/arc1-eval-ttt
#   python train.py config/arc_ttt.py --init_from=out/arc1-heldout/ckpt.pt --data_dir=data/arc1-eval-ttt \
#       --out_dir=out/arc1-heldout-ttt
#   python evaluate.py --ckpt=out/arc1-heldout-ttt/ckpt.pt          # pass@2 on the evaluation set
# or, for tasks in a Kaggle challenges file: python solve.py --ckpt=out/arc1-heldout/ckpt.pt --file=...
out_dir = "out/arc1-heldout"
data_dir = "data/arc1-heldout"
prepare = "python prepare_arc.py --hold_out_test_tasks=True --output_dir=data/arc1-heldout"
global_batch_size = 768
epochs = 100000
eval_interval = 10000
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
