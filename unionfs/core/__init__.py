"""The union filesystem without FUSE, CLI or images: lookup, copy-up, whiteouts, listings.

Nothing here imports anything outside ``unionfs.core`` but the standard library; the FUSE server,
the commands and the image store build on it. The front door is ``union.Union``.
"""
