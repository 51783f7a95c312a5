# ONNX for ONNX Runtime through MMDeploy 1.3.1: its configs/_base_/onnx_config.py and
# backends/onnxruntime.py, with two changes. Opset 16 instead of 11: below 16, ONNX's RoiAlign has
# no coordinate_transformation_mode and torchvision's exporter drops ``aligned=True`` with only a
# warning, so the RoI features (boxes and masks) of an opset-11 export are silently wrong.
# optimize=False: MMDeploy's graph optimiser needs its TorchScript extension, which the wheel
# lacks (with True it only logs that it cannot run).
onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    opset_version=16,
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['output'],
    input_shape=None,
    optimize=False)
backend_config = dict(type='onnxruntime')
