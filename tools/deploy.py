"""Export a detector or segmentor to ONNX (ONNX Runtime) through MMDeploy 1.3.1.

    python tools/deploy.py CONFIG CHECKPOINT --work-dir DIR [--shape H W] [--deploy-cfg FILE]
    python tools/deploy.py configs/demo/mask_rcnn_shvit_s1_demo.py \
        work_dirs/mask_rcnn_shvit_s1_demo/epoch_7.pth --work-dir work_dirs/mask_rcnn_onnx

writes DIR/end2end.onnx. MMDeploy installs without its protobuf and grpcio pins:
pip install --no-deps mmdeploy==1.3.1 aenum multiprocess dill

The work is done by shvit_mm.cli.deploy.
"""
import os
import os.path as osp
import sys

# As in tools/test.py: OpenMP threads that sleep instead of spinning while they wait; must be set
# before torch loads its OpenMP runtime.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout too

from shvit_mm.cli.deploy import cli_main  # noqa: E402

if __name__ == '__main__':
    cli_main()
