"""Seconds per training iteration of detector or segmentor configs, interleaved, synthetic images.

    python tools/analysis_tools/benchmark_train_step.py configs/mask_rcnn/shvit_s4.py \
        mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py --shape 800 1333 --batch 2 --reps 3
"""
import argparse

from shvit_mm.benchmark.train_step import TrainStep


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+',
                        help='detector or segmentor configs (mmdet::... / mmseg::... allowed)')
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1333], metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    parser.add_argument('--amp', action='store_true',
                        help='time each config in fp32 and with mixed precision (as tools/train.py '
                        '--amp trains on this CPU), from the same weights')
    args = parser.parse_args()
    bench = TrainStep(configs=args.configs, shape=tuple(args.shape), batch_size=args.batch,
                      reps=args.reps, warmup=args.warmup, threads=args.threads or None,
                      precisions=('fp32', 'amp') if args.amp else ('fp32', ), progress=True)
    bench.report(bench.run())


if __name__ == '__main__':
    main()
