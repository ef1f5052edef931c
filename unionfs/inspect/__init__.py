"""Image analysis without FUSE: what each layer of an image ships and hides, and what that adds
up to. The web explorer and the CLI verbs (unionfs/cli/inspect.py) are built on this API; every result is
a dataclass or plain JSON-ready data.

    stack.from_image(store, ref) / from_mount(store, mnt) / from_dirs(dirs) -> Stack
        stack.open_target(store, IMAGE|MNT): from_mount for a unionfs mountpoint, else from_image
        Stack.infos: [LayerInfo] bottom first (number, diff_id, created_by, created, comment,
        size, entries, whiteouts, dir, upper); Stack.indexes: [LayerIndex]
    timeline.Timeline(stack, upto=None)      every layer applied: .visible, .copies, .events
    analysis.layers(stack)                   [LayerInfo as dict]
    analysis.tree(stack, layer=None, timeline=None)  the merged tree after layer N, with badges
    analysis.history(stack, path)            a path's events across the layers
    analysis.find(stack, glob, all_layers)   copies matching a glob, with their fate
    analysis.versions(stack, path)           every copy of one path
    analysis.version(stack, path, layer)     (LayerIndex, Entry) to read one copy
    analysis.layer_changes(stack, n) / image_changes(stack_a, stack_b) / unified_diff(change)
    waste.waste(stack) / waste.evaluate_ci(report, rules)
    commitplan.plan(changes, store)          what a commit would write

Layers are numbered from 1 (the base) in every result; paths are absolute ('/etc/passwd').
"""
