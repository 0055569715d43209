#!/usr/bin/env python3
"""Gives every tracked file whose content is unchanged since the last run the modification time
it had then, so that cargo, which decides what to rebuild by comparing file times with its
artifacts', reuses a cached build in a fresh clone (issue 24: a new clone over a warm cache
recompiled every crate of the workspace, minutes of CI, because cloning gives every file a new
time).

Usage: `keep-mtimes.py restore MANIFEST` before building, `keep-mtimes.py record MANIFEST` once
the run is over (failed or not). MANIFEST, in the build cache beside what cargo built, holds per
tracked file the hash of its content and its time as the last run LEFT it. `restore` gives a
file its recorded time only if its content hashes the same now (a changed or new file keeps its
own, newer time, so cargo rebuilds what depends on it), then deletes the manifest: the checkout
is then exactly as the last run left it, as if that checkout had been kept, and cargo decides as
it would there. A run that dies before `record` leaves no manifest, and the next run rebuilds
the workspace's crates: what was built before it died may be of another content than any record.
This is what cargo's unstable `checksum-freshness` does inside cargo. One checkout at a time per
cache (cargo itself mixes up two checkouts that share a target directory).
"""

import os
import subprocess
import sys


def tracked_files():
    """Tracked paths that are regular files in the working tree (not symlinks, not deleted)."""
    listed = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout
    paths = [p for p in listed.decode().split("\0") if p]
    return [p for p in paths if os.path.isfile(p) and not os.path.islink(p)]


def content_hashes(paths):
    """Git's hash of each file's content as it is on disk now (not as the index has it)."""
    if not paths:
        return {}
    answer = subprocess.run(
        ["git", "hash-object", "--no-filters", "--stdin-paths"],
        input="\n".join(paths).encode(),
        capture_output=True,
        check=True,
    ).stdout.decode().split()
    return dict(zip(paths, answer))


def read_manifest(path):
    recorded = {}
    try:
        with open(path, encoding="utf-8") as manifest:
            for line in manifest:
                parts = line.rstrip("\n").split("\t", 2)
                if len(parts) == 3:
                    digest, mtime_ns, name = parts
                    recorded[name] = (digest, int(mtime_ns))
    except FileNotFoundError:
        pass
    return recorded


def restore(manifest_path):
    recorded = read_manifest(manifest_path)
    hashes = content_hashes(tracked_files())
    restored = 0
    for name, digest in hashes.items():
        before = recorded.get(name)
        if before is None or before[0] != digest:
            continue
        stat = os.stat(name)
        if stat.st_mtime_ns != before[1]:
            os.utime(name, ns=(stat.st_atime_ns, before[1]))
            restored += 1
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    print(f"keep-mtimes: {restored} of {len(hashes)} tracked files given back the time the last run left them with")


def record(manifest_path):
    hashes = content_hashes(tracked_files())
    lines = [f"{digest}\t{os.stat(name).st_mtime_ns}\t{name}\n" for name, digest in sorted(hashes.items())]
    os.makedirs(os.path.dirname(os.path.abspath(manifest_path)), exist_ok=True)
    temporary = f"{manifest_path}.{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as manifest:
        manifest.writelines(lines)
    os.replace(temporary, manifest_path)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("restore", "record"):
        sys.exit("usage: keep-mtimes.py restore|record MANIFEST")
    {"restore": restore, "record": record}[sys.argv[1]](sys.argv[2])


if __name__ == "__main__":
    main()
