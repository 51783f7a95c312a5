"""Single-head against multi-head Deformable DETR: interleaved timings and parameter counts.

    python tools/analysis_tools/benchmark_detr.py                       # CPU, 1 thread, 800x1066
    python tools/analysis_tools/benchmark_detr.py --shape 512 512 --reps 3 --devices cpu cuda

Prints a markdown table (with this command) and writes every raw time to a JSON file. The logic
lives in :mod:`shvit_mm.benchmark.detr_speed`; this script holds the paper's figures it is compared
with.
"""
import argparse
import os
import shlex
import sys

from mmengine.config import DictAction

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)  # run from a checkout too

from shvit_mm.benchmark.detr_speed import STAGES, DetrSpeed  # noqa: E402

#: SHViT paper (Yun & Ro, CVPR 2024, arXiv:2401.16456), Appendix C, Table 9: ResNet-50 Deformable
#: DETR with multi-head against single-head attention (parameters, GPU FPS, COCO box AP).
PAPER_TABLE9 = dict(multi=dict(params_m=40.0, fps=25.4, ap=43.8),
                    single=dict(params_m=37.1, fps=31.4, ap=43.1))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--multi-config', default=os.path.join(ROOT, 'configs/deformable_detr/r50.py'),
                        help='multi-head (reference) config')
    parser.add_argument('--single-config',
                        default=os.path.join(ROOT, 'configs/deformable_detr/r50_single_head.py'),
                        help='single-head config')
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1066], metavar=('H', 'W'),
                        help='input height and width (default: a 640x480 COCO image resized to '
                        'the recipe\'s 800 short side)')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--reps', type=int, default=5, help='timed repetitions per model and part')
    parser.add_argument('--warmup', type=int, default=1, help='untimed repetitions first')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (0 keeps torch\'s default)')
    parser.add_argument('--devices', nargs='+', default=['cpu'],
                        help='devices to time on, e.g. cpu cuda (cuda is skipped if absent)')
    parser.add_argument('--parts', nargs='+', default=list(STAGES), choices=STAGES)
    parser.add_argument('--layer-profile', action='store_true',
                        help='also time the attention and FFN of every encoder layer')
    parser.add_argument('--out', default='work_dirs/benchmark_detr/detr_speed.json',
                        help='JSON file for all figures')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides applied to both configs, e.g. model.num_queries=100')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    command = 'python ' + ' '.join(shlex.quote(a) for a in sys.argv)
    bench = DetrSpeed(multi_config=args.multi_config, single_config=args.single_config,
                      height=args.shape[0], width=args.shape[1], batch_size=args.batch_size,
                      reps=args.reps, warmup=args.warmup, threads=args.threads or None,
                      devices=args.devices, stages=args.parts, cfg_options=args.cfg_options,
                      layer_profile=args.layer_profile, progress=True)
    result = dict(bench.run(command), paper=PAPER_TABLE9)
    bench.report(result, args.out)


if __name__ == '__main__':
    main()
