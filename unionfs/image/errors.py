"""The one error type of the image commands: a one-line, user-facing message."""
from ..errors import UnionfsError


class ImageError(UnionfsError):
    """A one-line error about an archive, an image reference or the store."""
