#!/usr/bin/env python3
"""A SPECweb99-like static file set, and the request mix over it.

The Knot comparison needs a load that looks like a web site rather than one
file fetched over and over: many files of very different sizes, a few of
them hot.  SPECweb99's static part is the classic such load, so this
follows its shape:

- directories dir00000, dir00001, ...; each holds 4 classes x 9 files,
  class c file i (named classC_I) being (i+1) * base_c bytes, with bases
  102 B, 1 KiB, 10 KiB and 100 KiB (so 0.1-0.9 KB, 1-9 KB, 10-90 KB,
  100-900 KB; about 5.1 MB per directory);
- a request picks its class 35 / 50 / 14 / 1 % of the time, its file in
  the class by Zipf (exponent 1) popularity, and its directory by Zipf as
  well (dir00000 the most popular).  Which of the 9 sizes is the hottest
  in each class is a seeded permutation, so the mean response size does
  not depend on file order.

Everything is deterministic for a given (dirs, seed): file contents are
slices of one seeded random block (incompressible, unlike repeated text),
and the request mix is written as a list of "probability path size"
lines (urls.txt) that the wrk script (specweb.lua) turns into a table.

Used as a module by compare-knot (ensure_fileset) and runnable by hand:
    bench/knot/specweb_fileset.py OUTDIR [--dirs N] [--seed N]
"""

import argparse
import json
import os
import random
import sys

CLASS_BASE = (102, 1024, 10 * 1024, 100 * 1024)
CLASS_SHARE = (0.35, 0.50, 0.14, 0.01)
FILES_PER_CLASS = 9
ZIPF_EXPONENT = 1.0
FORMAT = 1          # bump when the layout or the mix changes: forces a rebuild
BLOCK = 1 << 20     # the random block every file is cut from


def zipf_weights(n, s=ZIPF_EXPONENT):
    w = [1.0 / (k + 1) ** s for k in range(n)]
    total = sum(w)
    return [x / total for x in w]


def plan(dirs, seed):
    """The file set and its request mix: a list of (prob, path, size)."""
    rng = random.Random(seed)
    # rank_of[c][i]: the popularity rank (0 = hottest) of file i of class c
    rank_of = []
    for _ in CLASS_BASE:
        order = list(range(FILES_PER_CLASS))
        rng.shuffle(order)
        rank_of.append(order)
    pdir = zipf_weights(dirs)
    pfile = zipf_weights(FILES_PER_CLASS)
    out = []
    for d in range(dirs):
        for c, base in enumerate(CLASS_BASE):
            for i in range(FILES_PER_CLASS):
                p = pdir[d] * CLASS_SHARE[c] * pfile[rank_of[c][i]]
                out.append((p, "/dir%05d/class%d_%d" % (d, c, i), (i + 1) * base))
    return out


def _manifest(dirs, seed, entries):
    return {
        "format": FORMAT,
        "dirs": dirs,
        "seed": seed,
        "files": len(entries),
        "bytes": sum(e[2] for e in entries),
        "mean_response_bytes": sum(e[0] * e[2] for e in entries),
    }


def ensure_fileset(root, dirs=20, seed=1, log=None):
    """Builds the file set under root (docroot = root/docroot) unless an
    identical one is already there.  Returns the manifest, with paths."""
    entries = plan(dirs, seed)
    man = _manifest(dirs, seed, entries)
    docroot = os.path.join(root, "docroot")
    urls = os.path.join(root, "urls.txt")
    manpath = os.path.join(root, "manifest.json")
    try:
        with open(manpath) as f:
            old = json.load(f)
    except (OSError, ValueError):
        old = None
    if old != man or not os.path.exists(urls):
        if log:
            log("building the file set: %d directories, %d files, %.0f MB, in %s"
                % (dirs, man["files"], man["bytes"] / 1e6, docroot))
        _build(root, docroot, urls, manpath, entries, man, seed)
    man = dict(man, root=root, docroot=docroot, urls=urls)
    return man


def _build(root, docroot, urls, manpath, entries, man, seed):
    os.makedirs(docroot, exist_ok=True)
    # nginx's workers run as nobody: every directory up to the files must be
    # searchable and every file readable by others.
    for p in (root, docroot):
        os.chmod(p, 0o755)
    try:
        os.unlink(manpath)      # an interrupted build must not look complete
    except FileNotFoundError:
        pass
    rng = random.Random(seed * 1000003 + 17)
    block = rng.randbytes(BLOCK)
    block2 = block + block      # any slice of up to BLOCK bytes, wrapping
    made = set()
    for n, (_, path, size) in enumerate(entries):
        full = os.path.join(docroot, path.lstrip("/"))
        d = os.path.dirname(full)
        if d not in made:
            os.makedirs(d, mode=0o755, exist_ok=True)
            os.chmod(d, 0o755)
            made.add(d)
        off = (n * 7919 + size) % BLOCK
        # the name heads the file, so a server that mixes files up is caught
        # by the content check even between files of equal size
        head = ("%s %d\n" % (path, size)).encode()
        body = (head + block2[off:off + size])[:size]
        tmp = full + ".tmp"
        with open(tmp, "wb") as f:
            f.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, full)
    with open(urls + ".tmp", "w") as f:
        f.write("# SPECweb99-like request mix: probability path size "
                "(dirs=%d seed=%d format=%d)\n" % (man["dirs"], man["seed"], FORMAT))
        for p, path, size in entries:
            f.write("%.12e %s %d\n" % (p, path, size))
    os.replace(urls + ".tmp", urls)
    with open(manpath, "w") as f:
        json.dump(man, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description="Build the SPECweb99-like file set.")
    ap.add_argument("root", help="where docroot/, urls.txt and manifest.json go")
    ap.add_argument("--dirs", type=int, default=20,
                    help="directories, about 5.1 MB each (default 20)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.dirs < 1:
        ap.error("--dirs wants at least 1")
    man = ensure_fileset(a.root, a.dirs, a.seed,
                         log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(man, indent=1))


if __name__ == "__main__":
    main()
