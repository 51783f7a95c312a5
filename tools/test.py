"""Test (and evaluate) a detector or segmentor: the tools/test.py command line of the config's
codebase (MMDetection 3.3 or MMSegmentation 1.2.2), with shvit_mm.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out OUT] [--show] [--show-dir DIR]
                         [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}] [--tta]
                         [--fast] [--amp]

The work is done by shvit_mm.cli.test.
"""
import os
import os.path as osp
import sys

# On a CPU shared with other work, OpenMP threads that spin while waiting for each other make
# PyTorch many times slower; sleeping instead costs next to nothing. Must be set before torch loads
# its OpenMP runtime.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout too

from shvit_mm.cli.test import cli_main  # noqa: E402

if __name__ == '__main__':
    cli_main()
