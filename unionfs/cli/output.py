"""Printing results: aligned tables, CSV and versioned JSON, on stdout as bytes (names that are
not valid UTF-8 come out as they are on disk); times as people read them ("2 hours ago")."""
import csv
import datetime
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


def _when(s):
    if not s:
        return None
    try:
        s = s.rstrip("Z")
        if "." in s:
            head, frac = s.split(".", 1)
            digits = "".join(c for c in frac if c.isdigit())[:6]
            tz = frac[len("".join(c for c in frac if c.isdigit())):]
            s = head + "." + digits + tz
        t = datetime.datetime.fromisoformat(s)
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.timezone.utc)
        return t
    except ValueError:
        return None


def ago(s):
    """An ISO 8601 time as docker prints it: "3 days ago", "N/A"."""
    t = _when(s)
    if t is None:
        return "N/A"
    secs = (datetime.datetime.now(datetime.timezone.utc) - t).total_seconds()
    for unit, n in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400),
                    ("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= n:
            k = int(secs // n)
            return "%d %s%s ago" % (k, unit, "s" if k > 1 else "")
    return "Less than a minute ago" if secs >= 0 else "in the future"


def _table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def format_args(p):
    p.add_argument("--json", action="store_true", help="versioned JSON (fields: docs/images.md)")
    p.add_argument("--csv", action="store_true", help="the table as CSV, with raw values")


def emit_records(args, command, key, recs, table):
    """Print recs (dicts of raw values) as JSON or CSV when asked, else the human table."""
    if getattr(args, "json", False):
        emit_json(command, {key: recs})
    elif getattr(args, "csv", False):
        header = list(recs[0]) if recs else []
        emit_csv(header, [[r[h] for h in header] for r in recs])
    else:
        _table(table)
