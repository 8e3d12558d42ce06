"""Optional extras stay optional: importing every minicnn module loads none of onnx, onnxruntime,
safetensors, dask, cupy or array_api_compat (each is imported only inside the feature that needs it;
NumPy arrays never need array_api_compat)."""

import json
import pkgutil
import subprocess
import sys

import minicnn

OPTIONAL = ("onnx", "onnxruntime", "safetensors", "dask", "distributed", "cupy", "array_api_compat")


def test_importing_every_minicnn_module_loads_no_optional_package():
    modules = sorted(m.name for m in pkgutil.walk_packages(minicnn.__path__, "minicnn."))
    assert {"minicnn.export", "minicnn.io", "minicnn.sklearn", "minicnn.nn.model"} <= set(modules)
    code = (
        f"import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        f"    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {OPTIONAL!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_check_sees_an_optional_package_when_one_is_imported():
    code = (
        "import json, sys, safetensors.numpy\nprint(json.dumps(sorted(m for m in sys.modules if "
        f"m.split('.')[0] in {OPTIONAL!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "safetensors" in json.loads(result.stdout)
