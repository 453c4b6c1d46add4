from setuptools import find_packages, setup

EXPORT = [
    "ai-edge-litert>=1.2",
    "tf2onnx==1.17.0",
    "onnx>=1.16",
    "onnxruntime>=1.18",
]

setup(
    name="tfcartoon",
    version="0.1.0",
    description=(
        "Few-shot fine-grained cartoon faces (photo2cartoon / U-GAT-IT with per-group "
        "branches) in TensorFlow/Keras 3, with TFLite and ONNX export."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfcartoon", "tfcartoon.*"]),
    # Presets: trained weights shipped with the package (tfcartoon/presets/<name>/).
    package_data={"tfcartoon": ["presets/*/weights.npz", "presets/*/preset.json",
                                "presets/*/MODEL_CARD.md"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tensorboard>=2.20",
        "keras>=3.10",
        "numpy>=1.26",
        "pyyaml>=6",
        "opencv-python-headless>=4.8",
        "mtcnn==1.0.0",
        "pillow>=10",
        "tqdm>=4.66",
    ],
    extras_require={
        "export": EXPORT,
        "dev": EXPORT + ["pytest>=8", "pytest-xdist>=3.5"],
        # bench/bench_export.py's OpenVINO rows (bf16 / int8 on x86 CPUs)
        "bench": EXPORT + ["openvino>=2025.0"],
    },
)
