# URM on ARC-AGI-2, its recipe (scripts/URM_arcagi2.sh): reported 16.0% pass@1 on the evaluation
# set. The ARC-AGI-1 recipe (config/urm_arc1.py) with Muon for the 2-D weights (REFERENCE.md §8).
#   torchrun --nproc_per_node=8 train.py config/urm_arc2.py
# Data: python prepare_arc.py --version=2 --input_file_prefix=kaggle/combined/arc-agi --output_dir=data/arc2
import os

exec(open(os.path.join(os.path.dirname(__file__), "urm_arc1.py")).read())
out_dir = "out/urm-arc2"
data_dir = "data/arc2"
optimizer = "muon"
