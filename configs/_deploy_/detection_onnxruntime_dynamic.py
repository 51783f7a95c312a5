# Object detection (RetinaNet, Faster R-CNN), any batch size and picture size: MMDeploy 1.3.1's
# configs/mmdet/detection/detection_onnxruntime_dynamic.py at opset 16, with a second input:
# img_shape, int64 [height, width] of the resized picture without its padding, which MMDetection
# clips boxes to (MMDeploy's graphs clip them to the padded input). The thresholds and box counts
# come from the model's own test_cfg where it has them; post_processing fills the rest.
_base_ = ['./onnxruntime_base.py']

onnx_config = dict(
    input_names=['input', 'img_shape'],
    output_names=['dets', 'labels'],
    dynamic_axes={
        'input': {0: 'batch', 2: 'height', 3: 'width'},
        'dets': {0: 'batch', 1: 'num_dets'},
        'labels': {0: 'batch', 1: 'num_dets'},
    })
codebase_config = dict(
    type='mmdet',
    task='ObjectDetection',
    model_type='end2end',
    post_processing=dict(
        score_threshold=0.05,
        confidence_threshold=0.005,  # for YOLOv3
        iou_threshold=0.5,
        max_output_boxes_per_class=200,
        pre_top_k=5000,
        keep_top_k=100,
        background_label_id=-1))
