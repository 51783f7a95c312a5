# Instance segmentation (Mask R-CNN), any batch size and picture size: MMDeploy 1.3.1's
# configs/mmdet/instance-seg/instance-seg_onnxruntime_dynamic.py at opset 16. The graph returns
# the mask head's 28x28 masks; pasting them into the picture is done outside it.
_base_ = ['./detection_onnxruntime_dynamic.py']

onnx_config = dict(
    output_names=['dets', 'labels', 'masks'],
    dynamic_axes={
        'masks': {0: 'batch', 1: 'num_dets', 2: 'height', 3: 'width'},
    })
codebase_config = dict(post_processing=dict(export_postprocess_mask=False))
