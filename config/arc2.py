# TRM on ARC-AGI-2, the paper's recipe (REFERENCE.md §7): reported 7.8% pass@2 on the evaluation set with
# 1000-augmentation voting (evaluate.py). The ARC-AGI-1 recipe on other data:
#   torchrun --nproc_per_node=4 train.py config/arc2.py
# Data: the training2, evaluation2 and ConceptARC tasks, the evaluation2 tasks' test pairs held out:
#   python prepare_arc.py --version=2 --input_file_prefix=kaggle/combined/arc-agi --output_dir=data/arc2
import os

exec(open(os.path.join(os.path.dirname(__file__), "arc1.py")).read())
out_dir = "out/arc2"
data_dir = "data/arc2"
