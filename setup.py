import os.path as osp

from setuptools import find_packages, setup


def read_requirements(name):
    with open(osp.join(osp.dirname(osp.abspath(__file__)), 'requirements', name)) as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


setup(
    name='shvit_mm',
    version='0.1.0',
    description='SHViT (Single-Head Vision Transformer, CVPR 2024) for MMDetection / MMPretrain',
    packages=find_packages(include=['shvit_mm', 'shvit_mm.*']),
    python_requires='>=3.8',
    install_requires=read_requirements('runtime.txt'),
    extras_require={'tests': read_requirements('tests.txt')},
)
