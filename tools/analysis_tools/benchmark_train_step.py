"""Seconds per training iteration of detector configs, interleaved, on synthetic images.

    python tools/analysis_tools/benchmark_train_step.py configs/mask_rcnn/shvit_s4.py \
        mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py --shape 800 1333 --batch 2 --reps 3
"""
import argparse

from shvit_mm.benchmark.train_step import time_train_steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('configs', nargs='+', help='detector configs (mmdet::... allowed)')
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1333], metavar=('H', 'W'))
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    args = parser.parse_args()
    rows = time_train_steps(args.configs, *args.shape, args.batch, args.reps, args.warmup,
                            args.threads)
    ref = rows[-1]['median_s']
    print(f'\n{args.shape[0]}x{args.shape[1]}, batch {args.batch}, median of {args.reps} '
          'interleaved iterations (forward + backward + AdamW step)\n')
    print('| config | params (M) | s/iter (median) | min-max | time vs last |')
    print('|---|---:|---:|---:|---:|')
    for r in rows:
        print(f"| {r['config']} | {r['params_m']:.2f} | {r['median_s']:.2f} | "
              f"{r['min_s']:.2f}-{r['max_s']:.2f} | {r['median_s'] / ref:.2f}x |")


if __name__ == '__main__':
    main()
