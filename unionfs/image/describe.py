"""What the image verbs show of stored images: the list records (``image ls``), an image's
history rows (``image history``) and its inspect document (``image inspect``)."""


def image_records(store):
    """[{repository, tag, id, created, size}] newest image first, one record per tag (an untagged
    image: one record with repository and tag None)."""
    records = []
    for img in sorted(store.images(), key=lambda i: i.created or "", reverse=True):
        size = img.size()
        for t in img.tags() or [None]:
            repo, _, tag = t.rpartition(":") if t else (None, "", None)
            records.append({"repository": repo, "tag": tag, "id": img.id,
                            "created": img.created, "size": size})
    return records


def history_rows(img):
    """[(image, created, created_by, size, comment)] newest first."""
    hist = img.config.get("history") or []
    sizes = img.layer_sizes()
    rows = []
    li = 0
    if not hist:
        hist = [{} for _ in img.layers]
    for h in hist:
        empty = bool(h.get("empty_layer"))
        size = 0
        if not empty and li < len(sizes):
            size = sizes[li]
            li += 1
        rows.append(["<missing>", h.get("created"), h.get("created_by", ""), size,
                     h.get("comment", "")])
    for s in sizes[li:]:  # layers the history does not describe
        rows.append(["<missing>", None, "", s, ""])
    rows.reverse()
    if rows:
        rows[0][0] = img.hex[:12]
    return rows


def inspect_obj(store, img):
    """The ``image inspect`` document of one image (docker's field names)."""
    cfg = img.config.get("config") or {}
    return {
        "Id": img.id,
        "RepoTags": img.tags(),
        "Created": img.created,
        "Author": img.config.get("author", ""),
        "Architecture": img.config.get("architecture", ""),
        "Os": img.config.get("os", ""),
        "Size": img.size(),
        "Config": {
            "Env": cfg.get("Env") or [],
            "Entrypoint": cfg.get("Entrypoint"),
            "Cmd": cfg.get("Cmd"),
            "WorkingDir": cfg.get("WorkingDir", ""),
            "User": cfg.get("User", ""),
            "Labels": cfg.get("Labels") or {},
            "ExposedPorts": cfg.get("ExposedPorts") or {},
            "Volumes": cfg.get("Volumes") or {},
            "StopSignal": cfg.get("StopSignal", ""),
        },
        "RootFS": {"Type": "layers", "Layers": img.layers},
        "LayerDirs": [store.layer_root(d) for d in img.layers],
        "History": img.config.get("history") or [],
    }
