"""unionfs: a userspace union filesystem (FUSE) with the kernel's overlayfs semantics and format."""
__version__ = "0.1.0"
