"""Run a detection or segmentation config on pictures and save the painted predictions (the
codebase's own inferencer: MMDetection's DetInferencer or MMSegmentation's MMSegInferencer).

    python tools/image_demo.py IMAGE_DIR_OR_URL CONFIG --weights CKPT [--out-dir outputs]
                               [--device cpu] [--score-thr 0.3] [--max-side 2048] [--fast] [--amp]
    python tools/image_demo.py data/shvit_demo/val/000000.jpg \
        configs/demo/mask_rcnn_shvit_s1_demo.py \
        --weights work_dirs/mask_rcnn_shvit_s1_demo/epoch_20.pth

The work is done by shvit_mm.cli.image_demo.
"""
import os
import os.path as osp
import sys

# As in tools/test.py: OpenMP threads that sleep instead of spinning while they wait; must be set
# before torch loads its OpenMP runtime.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout too

from shvit_mm.cli.image_demo import cli_main  # noqa: E402

if __name__ == '__main__':
    cli_main()
