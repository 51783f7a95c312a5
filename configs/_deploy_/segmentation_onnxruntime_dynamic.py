# Semantic segmentation (Semantic FPN, UperNet), any batch size and picture size: MMDeploy 1.3.1's
# configs/mmseg/segmentation_onnxruntime_dynamic.py at opset 16, ending in the class logits
# instead of their arg-max: MMSegmentation resizes the logits (bilinear) to the original picture
# before the arg-max, which shvit_mm.inference.deploy_onnx.build_onnx_model then does the same way.
_base_ = ['./onnxruntime_base.py']

onnx_config = dict(
    dynamic_axes={
        'input': {0: 'batch', 2: 'height', 3: 'width'},
        'output': {0: 'batch', 2: 'height', 3: 'width'},
    })
codebase_config = dict(type='mmseg', task='Segmentation', with_argmax=False)
