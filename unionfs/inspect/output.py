"""Printing results: aligned tables, CSV and versioned JSON, on stdout as bytes (names that are
not valid UTF-8 come out as they are on disk)."""
import csv
import io
import json
import sys

JSON_VERSION = 1


def write(text):
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape"))
    sys.stdout.buffer.flush()


def emit_json(command, obj):
    """obj with {"version": JSON_VERSION, "command": command} first."""
    doc = {"version": JSON_VERSION, "command": command}
    doc.update(obj)
    write(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def emit_csv(header, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if c is None else c for c in r])
    write(buf.getvalue())


def table_text(header, rows):
    rows = [header] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n" for r in rows)


def emit_table(header, rows, args=None):
    """A table as CSV when args.csv, else aligned text."""
    if args is not None and getattr(args, "csv", False):
        emit_csv(header, rows)
    else:
        write(table_text(header, rows))
