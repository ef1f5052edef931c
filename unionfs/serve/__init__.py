"""``unionfs serve``: a local web page that explores an image or a live mount.

    model.py     the JSON API as plain functions over an Explorer (no HTTP): layers, one
                 directory of the merged tree after layer N with badges, what a layer changed,
                 the waste report, a path's history; a mount's upper is re-read on change
    live.py      where a mount's changes come from: its trace stream (MNT/.unionfs/trace), or
                 polling its upper directory when the stream cannot be opened
    server.py    ThreadingHTTPServer: static files, /api/*, and /api/events (Server-Sent Events)
    launch.py    the Explorer and the listening server for a target, serving until interrupted
                 (the verb itself is unionfs/cli/serve.py)
    static/      the page (plain HTML, CSS and JS; nothing is fetched from elsewhere)

The analysis itself is unionfs.inspect's; this package only shapes it for the page.
"""
