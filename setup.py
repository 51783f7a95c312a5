from setuptools import find_packages, setup

setup(
    name='shvit_mm',
    version='0.1.0',
    description='SHViT (Single-Head Vision Transformer, CVPR 2024) for MMDetection / MMPretrain',
    packages=find_packages(include=['shvit_mm', 'shvit_mm.*']),
    python_requires='>=3.8',
    # MMCV with compiled ops is built by tools/install.sh (no usable wheel on PyPI for current PyTorch),
    # so it is deliberately not listed here: pip would otherwise try to build it without its ops.
    install_requires=[
        'mmengine>=0.10.4,<0.11',
        'mmdet==3.3.0',
        'mmpretrain==1.2.0',
        'pycocotools>=2.0.7',
        'setuptools<82',
        'safetensors',
    ],
    extras_require={
        'tests': ['pytest', 'timm==1.0.31', 'scikit-image', 'fvcore'],
    },
)
