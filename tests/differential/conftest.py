"""Differential tier: unionfs against the kernel's overlayfs (redirect_dir=on), the reference.

The runner and the layer builders live in ``_diff.py``. Differential modules carry
``pytestmark = DIFFERENTIAL`` (needs root, the kernel's overlayfs and FUSE); modules that check
unionfs alone (the OCI/aufs ``.wh.`` forms the kernel does not know) need FUSE only.
"""
