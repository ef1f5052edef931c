"""The FUSE side of a mount: the kernel's protocol and the /dev/fuse channel (proto.py), the
node table (nodes.py), the server that dispatches requests on worker threads and sends the
kernel's notifications (server.py), and the per-operation adapter over the union (ops.py)."""
