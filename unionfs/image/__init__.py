"""Container images for unionfs: import, store, mount, diff, commit and save.

An image's layers are stored once each, by DiffID, as extracted directories that are used as
unionfs lower layers exactly as they are: OCI whiteouts (``.wh.<name>``) and opaque markers
(``.wh..wh..opq``) are kept as the plain files the layer tar holds, because unionfs reads that
form natively in lower layers. Nothing is rewritten at import, so a layer directory is a faithful
extraction of its tar, and the tar itself is kept beside it so ``image save`` reproduces the
layer byte for byte.

Modules, one responsibility each:

* ``errors``      the one-line ImageError
* ``digest``      sha256 digests: parsing, hashing readers/writers
* ``compression`` layer compression detected by magic bytes (gzip, zstd, bzip2, xz, none)
* ``archive``     readers for docker-save archives and OCI image layouts (dir or tar)
* ``extract``     safe extraction of one layer tar into a directory
* ``tarmember``   what a tar member says (names, PAX times, xattrs); its data copied out
* ``store``       the on-disk layer/image/upper store, names and references, locking
* ``files``       atomic JSON writes, JSON reads, rmtree by directory fds (however deep)
* ``importer``    verified, atomic import of an archive into the store
* ``changes``     what an upper directory (kernel overlay format) changes: diff entries
* ``commit``      a deterministic OCI layer tar from those changes, and the new image
* ``save``        writing docker-archive and OCI archives
* ``progress``    progress lines on a TTY
* ``describe``    what the verbs show of stored images: list records, history rows, inspect JSON
* ``remove``      ``image rm`` and ``image prune``
* ``uppers``      the stored writable uppers; the upper a diff or commit names
* ``mount``       mounting a stored image (pulled first if its name says its registry)
* ``registry_queries``  tags, catalog, a remote image's manifest and config, login, logout

The verbs themselves are unionfs/cli/image.py and unionfs/cli/registry.py.
"""
