"""Whole-model inference speed of configs, interleaved in one run, with a per-part breakdown.

    python tools/analysis_tools/benchmark_models.py                     # segmentation table, 512x512
    python tools/analysis_tools/benchmark_models.py configs/mask_rcnn/shvit_s4.py \
        mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py --shape 800 1333 --reps 3

Prints markdown (timings and parameters / FLOPs of backbone, neck and heads) and writes JSON.
The logic lives in :mod:`shvit_mm.benchmark.model_speed`.
"""
import argparse
import shlex
import sys

#: The default table: SHViT Semantic FPN and UPerNet against MMSegmentation's R50 Semantic FPN.
SEGMENTATION = [f'configs/sem_fpn/shvit_s{i}.py' for i in (1, 2, 3, 4)] + \
    [f'configs/upernet/shvit_s{i}.py' for i in (1, 2, 3, 4)] + \
    ['mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('configs', nargs='*', default=SEGMENTATION,
                   help='configs (paths or mmdet::/mmseg:: names); default: the segmentation table')
    p.add_argument('--shape', nargs='+', type=int, default=[512, 512], help='H W (or one size)')
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int, default=1, help='CPU threads (0: PyTorch default)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--reference', default=None, help='model the speed-up divides by (default: last)')
    p.add_argument('--no-flops', action='store_true')
    p.add_argument('--out', default='work_dirs/benchmark_models/model_speed.json')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from shvit_mm.benchmark.model_speed import format_model_speed, run_model_speed, write_json
    command = 'python ' + ' '.join(shlex.quote(a) for a in [sys.argv[0]] + (
        argv if argv is not None else sys.argv[1:]))
    result = run_model_speed(args.configs, args.shape, reps=args.reps, warmup=args.warmup,
                             threads=args.threads or None, device=args.device,
                             reference=args.reference, count_flops=not args.no_flops,
                             progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    result['command'] = command
    print(format_model_speed(result, command))
    print(f'JSON: {write_json(result, args.out)}')


if __name__ == '__main__':
    main()
