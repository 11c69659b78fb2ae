# HRM on ARC-AGI-2, its recipe (README): reported 5.0% pass@2; "8 hours often sufficient" on 8 GPUs.
# HRM's ARC-AGI-2 data has no ConceptARC:
#   python prepare_arc.py --version=2 --input_file_prefix=kaggle/combined/arc-agi \
#       --subsets=training2,evaluation2 --output_dir=data/arc2-noconcept
import os

exec(open(os.path.join(os.path.dirname(__file__), "hrm_arc1.py")).read())
out_dir = "out/hrm-arc2"
data_dir = "data/arc2-noconcept"
