"""darknet-kd: Darknet-exact YOLO training in PyTorch with domain adaptation.

``pip install -e .`` (or a plain install) also builds the C++/CUDA core with CMake
(the pybind11 cmake_example pattern): the pybind11 module ``darknet_kd._C`` lands beside
the package sources and ``libdkd.so`` (the C API) in ``darknet_kd/lib/``.

Environment knobs:
  DKD_CUDA=0          build without CUDA even when nvcc is found (default: CUDA if nvcc)
  DKD_BUILD_DIR=path  CMake build folder (default: build/cmake; incremental rebuilds); the
                      build leaves _C in <dir>/python and libdkd in <dir>/python/lib
  DKD_BUILD_TYPE=...  CMake build type (default Release)
  DKD_CMAKE_ARGS="-D..."  extra CMake arguments
"""
import fcntl
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str, sourcedir: Path = ROOT):
        super().__init__(name, sources=[])
        self.sourcedir = str(sourcedir)


def _tool(name: str, module: str) -> str | None:
    """A build tool from its pip package (cmake, ninja) or from PATH."""
    try:
        mod = __import__(module)
        path = Path(mod.BIN_DIR) / name
        if path.exists():
            return str(path)
    except (ImportError, AttributeError):
        pass
    return shutil.which(name)


def _replace(src: Path, dst: Path) -> None:
    """Copy under a temporary name, then rename: a process that has the old shared library
    mapped keeps its (unlinked) file instead of reading a half-written one and crashing."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        extdir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(os.environ.get("DKD_BUILD_DIR", ROOT / "build" / "cmake")).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        cmake = _tool("cmake", "cmake")
        if cmake is None:
            raise RuntimeError("darknet-kd needs CMake >= 3.24 to build its C++ core (pip install cmake)")
        args = [
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('DKD_BUILD_TYPE', 'Release')}",
        ]
        try:
            import pybind11
            args.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
        except ImportError:
            pass
        if os.environ.get("DKD_CUDA", "").upper() in ("0", "OFF", "NO", "FALSE"):
            args.append("-DDKD_CUDA=OFF")
        ninja = _tool("ninja", "ninja")
        if not (build_dir / "CMakeCache.txt").exists() and ninja:
            args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
        args += shlex.split(os.environ.get("DKD_CMAKE_ARGS", ""))
        jobs = str(os.cpu_count() or 2)
        # One build at a time per build folder: two `pip install -e .` at once (several
        # people share a checkout) would otherwise race inside the same ninja tree.
        with open(build_dir / ".build-lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subprocess.run([cmake, "-S", ext.sourcedir, "-B", str(build_dir), *args], check=True)
            subprocess.run([cmake, "--build", str(build_dir), "--parallel", jobs], check=True)
            # CMake leaves _C in <build>/python and libdkd in <build>/python/lib (stable paths
            # for ctest and `make asan-test`); copy both where setuptools expects the extension.
            built = build_dir / "python"
            (extdir / "lib").mkdir(parents=True, exist_ok=True)
            _replace(built / Path(self.get_ext_filename(ext.name)).name, Path(self.get_ext_fullpath(ext.name)))
            _replace(built / "lib" / "libdkd.so", extdir / "lib" / "libdkd.so")
            _replace(ROOT / "csrc" / "include" / "dkd" / "dkd.h", extdir / "lib" / "dkd.h")  # darknet_kd.capi

    # libdkd.so (and its header, read by darknet_kd.capi) sit beside _C in lib/; setuptools
    # only knows about _C, so these make them travel with it: into the source tree
    # (editable install) or the wheel.
    def _lib_files(self) -> list[tuple[str, str]]:
        return [(str(Path(self.build_lib) / "darknet_kd" / "lib" / name), str(ROOT / "darknet_kd" / "lib" / name))
                for name in ("libdkd.so", "dkd.h")]

    def copy_extensions_to_source(self) -> None:
        super().copy_extensions_to_source()
        for built, in_source in self._lib_files():
            Path(in_source).parent.mkdir(exist_ok=True)
            self.copy_file(built, in_source, level=self.verbose)

    def get_output_mapping(self) -> dict[str, str]:
        mapping = super().get_output_mapping()
        if self.inplace:
            mapping.update(dict(self._lib_files()))
        return mapping

    def get_outputs(self) -> list[str]:
        outputs = super().get_outputs()
        if not self.inplace:
            outputs += [built for built, _ in self._lib_files()]
        return outputs

setup(
    name="darknet-kd",
    version="0.1.0",
    description="Darknet-exact YOLO in PyTorch: GAN + teacher distillation and source-free adaptation",
    packages=find_packages(include=["darknet_kd", "darknet_kd.*", "domain_transfer", "domain_transfer.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.2", "numpy", "opencv-python-headless>=4.8,<5", "tqdm", "pycocotools", "cffi>=1.16"],
    ext_modules=[CMakeExtension("darknet_kd._C")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
    entry_points={"console_scripts": [
        "darknet-kd=darknet_kd.cli:main",
        "domain-transfer=domain_transfer.cli:main",
    ]},
)
