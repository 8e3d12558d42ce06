"""Devices: where arrays live, and moving them (the public face of the private :mod:`._backend`).

A device is ``"cpu"`` (NumPy), ``"cuda"`` (CuPy, imported only when asked for), an array namespace
module (``array_api_strict``) or a pair (module, one of its devices). ``to_device`` / ``to_host``
move one array; ``Layer.to`` and ``Optimizer.to`` move a model and its optimizer state;
``asarray_like`` puts an array where another one is; ``namespace`` names an array's library.
"""

from ._backend import Device, DeviceUnavailable, asarray_like, check_device, namespace, to_device, to_host

__all__ = ["Device", "DeviceUnavailable", "asarray_like", "check_device", "namespace", "to_device", "to_host"]
