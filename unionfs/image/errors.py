"""The one error type of the image commands: a one-line, user-facing message."""
from ..errors import UnionfsError


class ImageError(UnionfsError):
    """A one-line error about an archive, an image reference or the store."""


class LimitError(ImageError):
    """Input over one of an import's caps (targuard.Limits): refused before it is read on."""
