"""bench/against: this checkout's fast path against an older commit's, in the same hour.

    .venv/bin/python -m bench.against COMMIT [--pairs 3] [--rounds 2] [--seconds 3]

Our programs' nanoseconds follow the machine's speed, which drifts by tens of
percent within an hour here, so a figure recorded on another day cannot be
compared with today's. This checks COMMIT out into a temporary git worktree
and runs bench.pps from it and from this checkout in turn, --pairs times (old,
new, new, old, ...), each a lab of its own. The worktree borrows this
checkout's compiled C helper, which needs csrc/ unchanged between the two
(checked against the working tree; untracked files in csrc/ are not seen).
Per run: our programs' ns per frame (kernel BPF statistics) and the
whole machine's busy CPU per frame, dataplane's and plain routing's. Writes
bench/results/against-<commit>.{json,md} (--out NAME: NAME.*)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

from bench.run import headline, machine, save
from lab.unwind import unwind_on_sigterm

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = (("bpf_ns", "dataplane", "our programs, ns per frame"),
        ("from_endpoint_ns", "dataplane", "from_endpoint, ns per run"),
        ("from_overlay_ns", "dataplane", "from_overlay, ns per run"),
        ("cpu_ns", "dataplane", "busy CPU per frame, dataplane, ns"),
        ("cpu_ns", "routing", "busy CPU per frame, routing, ns"))


def log(msg: str) -> None:
    print(f"bench/against: {msg}", file=sys.stderr, flush=True)


def git(*argv: str) -> str:
    return subprocess.run(["git", "-C", HERE, *argv], capture_output=True, text=True, check=True).stdout.strip()


def pps_run(tree: str, out: str, rounds: int, seconds: float) -> dict:
    """bench.pps from tree (its own packages first on the path): its whole result. Interrupted,
    the run is left to take its lab down before this one goes on."""
    env = dict(os.environ, PYTHONPATH=tree)
    proc = subprocess.Popen([sys.executable, "-m", "bench.pps", "--rounds", str(rounds), "--seconds",
                             str(seconds), "--out", out], cwd=tree, env=env, stdout=subprocess.DEVNULL)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.wait()          # the terminal's SIGINT reached it too: it is taking its lab down
        raise
    except BaseException:    # SIGTERM here (see main): interrupt it the way it cleans up after
        proc.send_signal(signal.SIGINT)
        proc.wait()
        raise
    if rc:
        raise RuntimeError(f"bench.pps in {tree} failed (exit {rc})")
    with open(out + ".json") as f:
        return json.load(f)


def table(res: dict) -> str:
    m, a = res["machine"], res["args"]
    out = [f"{headline(m)}. Command: `.venv/bin/python -m "
           f"bench.against {a['commit']} --pairs {a['pairs']} --rounds {a['rounds']} --seconds {a['seconds']:g}` "
           f"(this checkout: {res['head']}). Each cell: the medians of one bench.pps run of {a['rounds']} rounds; "
           "runs in the order old, new, new, old, old, new, ...", "",
           f"| metric | {a['commit']} (old) | this checkout (new) | new / old, median of the runs |", "|---|---|---|---|"]
    for key, mode, label in KEYS:
        old = [r["median"][mode].get(key) for r in res["old"]]
        new = [r["median"][mode].get(key) for r in res["new"]]
        if None in old + new:
            continue
        out.append(f"| {label} | {', '.join(f'{x:.0f}' for x in old)} | {', '.join(f'{x:.0f}' for x in new)} | "
                   f"{statistics.median(new) / statistics.median(old):.2f}x |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/against", description=__doc__.split("\n\n")[0])
    p.add_argument("commit")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.pairs < 1 or args.rounds < 2 or args.seconds <= 0:
        p.error("--pairs >= 1, --rounds >= 2, --seconds > 0")
    try:
        commit = git("rev-parse", "--short", args.commit + "^{commit}")
    except subprocess.CalledProcessError:
        p.error(f"{args.commit}: not a commit of this repository")
    if subprocess.run(["git", "-C", HERE, "diff", "--quiet", commit, "--", "csrc/"]).returncode:
        p.error(f"csrc/ differs between {commit} and this checkout: the worktree cannot borrow the C helper")
    args.commit = commit
    helper = [f for f in os.listdir(os.path.join(HERE, "dataplane"))
              if f.startswith("_cwire") and f.endswith(".so")]
    if not helper:
        p.error("the C helper is not built here: run scripts/bootstrap.sh first")
    unwind_on_sigterm()      # the worktree and the lab go too
    # Changed files outside bench/results (which the runs themselves rewrite) make the checkout dirty.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    res = {"machine": machine(), "args": vars(args),
           "head": git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else ""), "old": [], "new": []}
    tmp = tempfile.mkdtemp(prefix="dp-against-")
    tree = os.path.join(tmp, "tree")
    try:
        git("worktree", "add", "--detach", tree, commit)
        shutil.copy(os.path.join(HERE, "dataplane", helper[0]), os.path.join(tree, "dataplane", helper[0]))
        for i in range(args.pairs):     # old new, new old, ...: a steady drift falls on both alike
            for side in (("old", "new") if i % 2 == 0 else ("new", "old")):
                got = pps_run(tree if side == "old" else HERE, os.path.join(tmp, f"{side}-{i}"), args.rounds,
                              args.seconds)
                res[side].append(got)
                d = got["median"]["dataplane"]
                log(f"pair {i + 1}/{args.pairs} {side}: programs {d['bpf_ns']:.0f} ns, "
                    f"CPU per frame {d['cpu_ns']:.0f} ns")
    finally:
        subprocess.run(["git", "-C", HERE, "worktree", "remove", "--force", tree], capture_output=True)
        subprocess.run(["git", "-C", HERE, "worktree", "prune"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    save(res, table(res), args.out or f"against-{commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
