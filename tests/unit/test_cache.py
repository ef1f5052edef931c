from unionfs.core.cache import NEGATIVE, ResolutionCache


def test_put_get():
    c = ResolutionCache()
    assert c.get("/a") is None
    c.put("/a", "A", c.generation)
    c.put("/b", NEGATIVE, c.generation)
    assert c.get("/a") == "A"
    assert c.get("/b") is NEGATIVE
    assert len(c) == 2
    assert c.hits == 2 and c.misses == 1


def test_forget_one_path():
    c = ResolutionCache()
    g = c.generation
    for p in ("/a", "/a/b", "/c"):
        c.put(p, p, g)
    c.forget("/a")
    assert c.get("/a") is None
    assert c.get("/a/b") == "/a/b"        # forget is not recursive
    assert c.get("/c") == "/c"
    assert c.generation == g + 1


def test_forget_tree_drops_descendants_and_only_them():
    c = ResolutionCache()
    g = c.generation
    keep = ["/", "/ab", "/ab/c", "/x", "/x/a", "/a2"]
    drop = ["/a", "/a/b", "/a/b/c", "/a/b/c/d", "/a/e"]
    for p in keep + drop:
        c.put(p, p, g)
    c.forget_tree("/a")
    for p in drop:
        assert c.get(p) is None, p
    for p in keep:
        assert c.get(p) == p, p
    assert c.generation == g + 1


def test_forget_tree_of_root_drops_everything():
    c = ResolutionCache()
    for p in ("/", "/a", "/a/b", "/c"):
        c.put(p, p, c.generation)
    c.forget_tree("/")
    assert len(c) == 0


def test_forget_tree_reaches_entries_below_a_forgotten_one():
    c = ResolutionCache()
    for p in ("/a", "/a/b", "/a/b/c"):
        c.put(p, p, c.generation)
    c.forget("/a/b")                  # dropped alone; its child is still cached
    assert c.get("/a/b/c") == "/a/b/c"
    c.forget_tree("/a")
    assert c.get("/a/b/c") is None


def test_forget_tree_after_refill_following_an_earlier_forget_tree():
    c = ResolutionCache()
    for p in ("/a", "/a/b"):
        c.put(p, p, c.generation)
    c.forget_tree("/a")
    for p in ("/a", "/a/b", "/a/b/c"):
        c.put(p, p, c.generation)
    c.forget_tree("/a")
    assert len(c) == 0


def test_stale_generation_put_is_dropped():
    c = ResolutionCache()
    g = c.generation
    c.forget("/unrelated")            # any invalidation after the lookup started
    c.put("/a", "stale", g)
    assert c.get("/a") is None
    c.put("/a", "fresh", c.generation)
    assert c.get("/a") == "fresh"
    g = c.generation
    c.forget_tree("/z")
    c.put("/b", "stale", g)
    assert c.get("/b") is None
    g = c.generation
    c.clear()
    c.put("/c", "stale", g)
    assert c.get("/c") is None


def test_bound_respected():
    c = ResolutionCache(max_entries=10)
    for i in range(100):
        c.put("/f%d" % i, i, c.generation)
        assert len(c) <= 10
    assert c.get("/f99") == 99        # the newest entry is always kept


def test_forget_tree_after_the_bound_cleared_the_cache():
    """forget_tree must drop everything cached below the path, even when the bound restarted
    the cache between the put of a parent and the put of its child."""
    c = ResolutionCache(max_entries=2)
    g = c.generation
    c.put("/a", "A", g)
    c.put("/a/b", "B", g)
    c.put("/a/b/c", "C", g)           # the bound clears the map first; /a/b/c alone remains
    assert len(c) <= 2
    c.forget_tree("/a")
    assert c.get("/a/b/c") is None, "stale entry below a forgotten tree survived"


def test_clear():
    c = ResolutionCache()
    c.put("/a", 1, c.generation)
    g = c.generation
    c.clear()
    assert len(c) == 0 and c.generation == g + 1


def test_listing_entries_count_toward_the_bound():
    """A listing entry is what is kept of a listed lower file (readdir.py): the bound counts
    them with the resolutions, so listings cannot grow past it."""
    c = ResolutionCache(max_entries=10)
    g = c.generation
    c.put("/d", "D", g)
    c.put_listing("/d", list(range(8)), g)
    assert c.get_listing("/d") == list(range(8))
    c.put("/e", "E", g)                   # 2 resolutions + 8 listing entries: full
    c.put("/f", "F", g)                   # past it: the cache starts over
    assert c.get_listing("/d") is None and c.get("/d") is None and c.get("/f") == "F"
    c.put("/g", "G", g)
    c.put_listing("/g", list(range(20)), g)   # larger than the bound: not kept
    assert c.get_listing("/g") is None and len(c) == 0
    c.put("/h", "H", g)
    c.put_listing("/h", list(range(8)), g)
    c.forget_tree("/h")                   # a dropped listing gives its room back
    for p in "abcdefgh":
        c.put("/x" + p, p, c.generation)
    assert len(c) == 8
