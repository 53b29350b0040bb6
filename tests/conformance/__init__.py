"""Differential conformance: iovirt's emulated NICs against QEMU's device
models, one driver script run on both (see :mod:`.nic`)."""
