# Test-time training on ARC tasks a checkpoint has never seen (a Kaggle submission's tasks): their
# puzzles have no rows in its puzzle table, so TRM can answer them only after training those rows
# on the tasks' own demonstration pairs, as the reference did for the evaluation tasks it reports.
# This recipe starts from a checkpoint (ours or a reference's; the architecture is the
# checkpoint's, the rows of the new puzzles start from the mean of its rows) and trains on the new
# tasks' demonstrations only: the puzzle rows alone for the first half of a short schedule, then
# every weight, gently. The test outputs are never read before evaluation (a challenges file
# without solutions gets blank answers).
#   python prepare_arc.py --input_file_prefix=new/arc-agi --subsets=test --test_set_name=test \
#       --output_dir=data/arc-new                    # new/arc-agi_test_challenges.json: the tasks
#   python train.py config/arc_ttt.py --init_from=CKPT --data_dir=data/arc-new
#   python evaluate.py --ckpt=out/arc-ttt/ckpt.pt    # -> out/arc-ttt/eval/submission.json
# Sized for one GPU; the figure in BENCHMARKS.md ran it on CPU with smaller batches.
out_dir = "out/arc-ttt"
data_dir = "data/arc-new"
prepare = ("python prepare_arc.py --input_file_prefix=PREFIX --subsets=SUBSET --test_set_name=SUBSET "
           "--output_dir=data/arc-new")
init_from = "hf:arcprize/trm_arc_prize_verification/arc_v1_public/step_518071"  # TRM's public ARC-AGI-1 model
freeze_weights = True          # first the new puzzles' rows only ...
unfreeze_at = 0.5              # ... then every weight, for the second half
global_batch_size = 96
epochs = 200                   # an epoch: one variant of each task; a few hundred steps for 100 tasks
eval_interval = 100
lr = 1e-5                      # the weights move little: they already know ARC
lr_min_ratio = 1.0
lr_warmup_steps = 20
weight_decay = 0.1
puzzle_emb_lr = 1e-2
puzzle_emb_weight_decay = 0.1
ema = True
ema_rate = 0.99
