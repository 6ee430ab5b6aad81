"""darknet-kd: Darknet-exact YOLO training in PyTorch with domain adaptation."""
from setuptools import find_packages, setup

setup(
    name="darknet-kd",
    version="0.1.0",
    description="Darknet-exact YOLO in PyTorch: GAN + teacher distillation and source-free adaptation",
    packages=find_packages(include=["darknet_kd", "darknet_kd.*", "domain_transfer", "domain_transfer.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.2", "numpy", "opencv-python-headless>=4.8,<5", "tqdm", "pycocotools"],
    entry_points={"console_scripts": [
        "darknet-kd=darknet_kd.cli:main",
        "domain-transfer=domain_transfer.cli:main",
    ]},
)
