"""Run a detection or segmentation config on pictures and save the painted predictions (the
codebase's own inferencer: MMDetection's DetInferencer or MMSegmentation's MMSegInferencer).

    python tools/image_demo.py IMAGE_OR_DIR CONFIG --weights CKPT [--out-dir outputs] [--device cpu]
    python tools/image_demo.py data/shvit_demo/val/000000.jpg configs/demo/mask_rcnn_shvit_s1_demo.py \
        --weights work_dirs/mask_rcnn_shvit_s1_demo/epoch_20.pth
"""
import argparse


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('inputs', help='an image file or a folder of images')
    p.add_argument('config', help='detection or segmentation config')
    p.add_argument('--weights', required=True, help='checkpoint file')
    p.add_argument('--out-dir', default='outputs', help='where painted pictures (vis/) and, for '
                   'detection, predictions (preds/) go')
    p.add_argument('--device', default=None, help="e.g. 'cpu' or 'cuda:0' (default: the best)")
    p.add_argument('--score-thr', type=float, default=0.3, help='detection: box score threshold')
    p.add_argument('--fast', action='store_true',
                   help='fast inference path (BatchNorm folding, channels-last)')
    p.add_argument('--amp', action='store_true', help='fast path in mixed precision (bf16 on '
                   'CPUs with AVX-512 BF16 or AMX, fp16 on CUDA); implies --fast')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from shvit_mm.apis import build_inferencer, codebase_of, read_config
    inferencer = build_inferencer(args.config, args.weights, args.device, fast=args.fast,
                                  amp=args.amp)
    if codebase_of(read_config(args.config)) == 'mmdet':
        inferencer(args.inputs, out_dir=args.out_dir, pred_score_thr=args.score_thr,
                   no_save_pred=False)
    else:
        inferencer(args.inputs, out_dir=args.out_dir)
    print(f'results saved under {args.out_dir}')


if __name__ == '__main__':
    main()
