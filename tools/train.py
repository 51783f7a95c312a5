"""Train a detector or segmentor: MMDetection 3.3's tools/train.py command line (which contains
MMSegmentation 1.2.2's), with shvit_mm registered; the codebase follows from the config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
                                 [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]

The work is done by shvit_mm.cli.train.
"""
import os
import os.path as osp
import sys

# On a CPU shared with other work, OpenMP threads that spin while waiting for each other make
# PyTorch many times slower; sleeping instead costs next to nothing. Must be set before torch loads
# its OpenMP runtime.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout too

from shvit_mm.cli.train import cli_main  # noqa: E402

if __name__ == '__main__':
    cli_main()
