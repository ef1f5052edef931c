"""The FUSE side of a mount: the kernel's protocol and the /dev/fuse channel (proto.py), the
node table (nodes.py), the open-file table (handles.py), and the server that dispatches requests
on worker threads to the union and sends the kernel's notifications (server.py)."""
