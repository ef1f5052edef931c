"""The resolution cache: merged path -> Node (or a negative entry), with explicit invalidation.

Validity rules, all enforced by the union's operations (union.py, dir.py, copyup.py) through two
calls:

* ``forget(path)``: the resolution of one path changed (created, removed, copied up, its markers
  changed);
* ``forget_tree(path)``: a directory moved or was removed: the path and everything cached below it.

Every change made through the mount is followed by one of these *after* the change is on disk.
A lookup that raced with a change must not re-insert what it read before the change: ``put`` carries
the generation read before the lookup started and is dropped if any invalidation happened since.

Merged directory listings are kept here too, under the same rules: a change to any entry drops its
parent's listing, and a listing is only kept for a directory whose own resolution is cached.

Memory is bounded by ``max_entries``, resolutions and listing entries counted alike (a listing
entry of a lower file is what is kept of it: its resolution is not, readdir.py); past it the
cache starts over (an O(1) decision on the hot path; a refill costs one walk per path). Changes made to the layer directories behind the mount's
back are not seen until the entry is dropped: like the kernel, unionfs requires the layers to change
only through the mount while it is mounted.
"""
import threading

NEGATIVE = object()


class ResolutionCache:
    def __init__(self, max_entries=200_000):
        self.max_entries = max_entries
        self._map = {}
        self._kids = {}
        self._listings = {}
        self._listed = 0  # entries in self._listings
        self._lock = threading.Lock()
        self.generation = 0
        self.hits = 0
        self.misses = 0

    def __len__(self):
        return len(self._map)

    def get(self, path):
        v = self._map.get(path)
        if v is None:
            self.misses += 1
        else:
            self.hits += 1
        return v

    def put(self, path, value, generation):
        with self._lock:
            if generation != self.generation:
                return
            parent = path.rpartition("/")[0] or "/"
            if parent != "/" and parent not in self._map:
                # forget_tree finds entries through their parents: never cache an orphan
                return
            if len(self._map) + self._listed >= self.max_entries:
                self._start_over()
                if parent != "/":
                    return
            self._map[path] = value
            # the child's path itself (the key above): a name would be one more string each
            self._kids.setdefault(parent, set()).add(path)

    def get_listing(self, path):
        return self._listings.get(path)

    def put_listing(self, path, entries, generation):
        with self._lock:
            if generation != self.generation:
                return
            self._drop_listing(path)
            if len(self._map) + self._listed + len(entries) > self.max_entries:
                self._start_over()
            if path == "/" or path in self._map:
                self._listings[path] = entries
                self._listed += len(entries)

    def _drop_listing(self, path):
        entries = self._listings.pop(path, None)
        if entries is not None:
            self._listed -= len(entries)

    def _start_over(self):
        self._map.clear()
        self._kids.clear()
        self._listings.clear()
        self._listed = 0

    def forget(self, path):
        with self._lock:
            self.generation += 1
            self._map.pop(path, None)
            self._drop_listing(path)
            self._drop_listing(path.rpartition("/")[0] or "/")

    def forget_tree(self, path):
        with self._lock:
            self.generation += 1
            self._drop_listing(path.rpartition("/")[0] or "/")
            stack = [path]
            while stack:
                p = stack.pop()
                self._map.pop(p, None)
                self._drop_listing(p)
                kids = self._kids.pop(p, None)
                if kids:
                    stack.extend(kids)

    def replace(self, path, value):
        """forget_tree(path), then cache what the caller (holding the union's write lock)
        has just made there."""
        self.forget_tree(path)
        self.put(path, value, self.generation)

    def clear(self):
        with self._lock:
            self.generation += 1
            self._start_over()
