"""Container launcher and supervisor (a tiny `conmon`): runs one container process of a local pod.

Run as a script by the executor (`python -I -S launch.py spec.json`, stdlib only, so it starts in
~20 ms). It joins the pod's network namespace, makes a private mount (and UTS) namespace, builds a
root that mirrors the host's `/` (a tmpfs with every top-level entry rbind-mounted), mounts the
pod's volumes at their `mountPath`s, then forks: the child chroots into that root and execs the
container command; the parent stays behind as the supervisor, waits, and writes the exit status
to `exit.json` so that an executor restarted in the meantime still learns how the container ended.

Mount points that do not exist on the host are created without touching the host: inside our
tmpfs, inside a volume, or — below a host directory — on an overlay of that directory whose upper
layer is scratch tmpfs. Everything mounted here lives in the private namespace and disappears with
the last process in it, so there is nothing to unmount on teardown.

The supervisor ignores SIGTERM/SIGINT: the executor signals the whole process group, the container
gets the signal, and the supervisor records how it exited.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            src.encode() if src else None,
            dst.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {src} -> {dst} ({fstype})",
    )


def umount(path: str) -> None:
    _check(_libc.umount2(path.encode(), MNT_DETACH), f"umount {path}")


class RootBuilder:
    """Builds the container's root at `root`; `kinds` records who owns each mount point so that
    creating a missing path never writes into a host directory."""

    def __init__(self, root: str, scratch: str) -> None:
        self.root = root.rstrip("/")
        self.scratch = scratch
        self.kinds: dict[str, str] = {}  # container path -> "tmpfs" | "host" | "volume" | "overlay"
        self._n = 0

    def r(self, path: str) -> str:
        return self.root + path if path != "/" else self.root

    def resolve(self, path: str) -> str:
        """`path` with symlinks resolved as the container sees them (an absolute link such as
        `/var/run -> /run` points into the root, not at the host)."""
        parts = [p for p in path.split("/") if p]
        done: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if done:
                    done.pop()
                continue
            if part == ".":
                continue
            candidate = self.root + "/" + "/".join([*done, part])
            if os.path.islink(candidate):
                hops += 1
                if hops > 40:
                    raise OSError(40, f"too many symlinks resolving {path}")
                link = os.readlink(candidate)
                if link.startswith("/"):
                    done = []
                parts = [p for p in link.split("/") if p] + parts
            else:
                done.append(part)
        return "/" + "/".join(done)

    def _governing(self, path: str) -> tuple[str, str]:
        best = "/"
        for mp in self.kinds:
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                best = mp
        return best, self.kinds[best]

    def build(self) -> None:
        mount("tmpfs", self.root, "tmpfs", MS_NOSUID, "mode=755")
        self.kinds["/"] = "tmpfs"
        mount("tmpfs", self.scratch, "tmpfs", 0, "mode=700")
        for entry in sorted(os.listdir("/")):
            host = "/" + entry
            target = self.r(host)
            if os.path.islink(host):
                os.symlink(os.readlink(host), target)
            elif os.path.isdir(host):
                os.mkdir(target)
                mount(host, target, None, MS_BIND | MS_REC)
                self.kinds[host] = "host"
            elif os.path.isfile(host):
                open(target, "w").close()
                mount(host, target, None, MS_BIND)
                self.kinds[host] = "host"
        # the rbind of the directory holding our root copied the root into itself: drop that copy
        nested = self.r(self.root)
        if os.path.isdir(nested):
            umount(nested)

    def _overlay(self, path: str) -> None:
        """Make `path` (a host directory mirrored in the root) writable without touching the host."""
        self._n += 1
        upper, work = f"{self.scratch}/u{self._n}", f"{self.scratch}/w{self._n}"
        os.mkdir(upper)
        os.mkdir(work)
        submounts = _mounts_under(path, exclude=self.root)
        mount("overlay", self.r(path), "overlay", 0, f"lowerdir={path},upperdir={upper},workdir={work}")
        self.kinds[path] = "overlay"
        for sub in submounts:  # the overlay hides mounts below the lower directory: put them back
            mount(sub, self.r(sub), None, MS_BIND | MS_REC)

    def ensure(self, path: str, is_dir: bool) -> None:
        """Create `path` inside the root (and its parents), never in a host directory."""
        target = self.r(path)
        if os.path.lexists(target):
            return
        parent = os.path.dirname(path)
        self.ensure(parent, True)
        if self._governing(parent)[1] == "host":
            self._overlay(parent)
        if is_dir:
            os.makedirs(target, exist_ok=True)
        else:
            open(target, "a").close()

    def bind(self, src: str, dst: str, read_only: bool) -> None:
        dst = self.resolve(dst)
        self.ensure(dst, os.path.isdir(src))
        mount(src, self.r(dst), None, MS_BIND | MS_REC)
        if read_only:
            mount(None, self.r(dst), None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        self.kinds[dst] = "volume"

    def keep(self, host_path: str) -> None:
        """Re-expose a host path the programs run from (the venv, the Python install) when a volume
        mounted above it hides it, e.g. an emptyDir at `/work` over `/work/main/.venv`. The mount
        point is created inside the volume (empty directories stay behind there)."""
        path = os.path.normpath(host_path)
        if self._governing(path)[1] != "volume" or not os.path.exists(path):
            return
        missing: list[str] = []
        p = path
        while not os.path.lexists(self.r(p)):
            missing.append(p)
            p = os.path.dirname(p)
        for p in reversed(missing):
            if p == path and not os.path.isdir(path):
                open(self.r(p), "a").close()
            else:
                os.mkdir(self.r(p))
        mount(path, self.r(path), None, MS_BIND | MS_REC)
        self.kinds[path] = "host"


def _mounts_under(path: str, exclude: str) -> list[str]:
    """Top-most mount points strictly below `path` (their children come along with rbind)."""
    prefix = path.rstrip("/") + "/"
    points: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(prefix) and not (mp == exclude or mp.startswith(exclude + "/")):
                points.append(mp)
    points.sort(key=len)
    top: list[str] = []
    for mp in points:
        if not any(mp.startswith(t + "/") or mp == t for t in top):
            top.append(mp)
    return top


def _setup(spec: dict[str, Any]) -> None:
    if spec.get("netns"):
        fd = os.open(spec["netns"], os.O_RDONLY)
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {spec['netns']}")
        os.close(fd)
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    hostname = spec.get("hostname", "")[:63].encode()
    if hostname:
        _check(_libc.sethostname(hostname, len(hostname)), "sethostname")
    builder = RootBuilder(spec["root"], spec["scratch"])
    builder.build()
    for m in sorted(spec.get("mounts", []), key=lambda m: m["path"].rstrip("/").count("/")):
        builder.bind(m["source"], os.path.normpath(m["path"]), bool(m.get("readOnly")))
    for path in spec.get("keep", []):
        try:
            builder.keep(path)
        except OSError as e:
            gov = builder._governing(path)[0]
            raise OSError(
                e.errno,
                f"the volume at {gov} hides {path}, which the program runs from, and a mount "
                f"point for it cannot be made there ({e.strerror}); mount the volume elsewhere",
            ) from e
    builder.ensure(builder.resolve(spec.get("workingDir") or "/"), True)


def _write_exit(path: str, status: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(status, f)
    os.replace(tmp, path)


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    started = time.time()
    try:
        _setup(spec)
    except OSError as e:
        print(f"maestro executor: cannot set up the container: {e}", file=sys.stderr, flush=True)
        _write_exit(
            spec["exitFile"],
            {
                "exitCode": 128,
                "reason": "StartError",
                "message": str(e),
                "startedAt": started,
                "finishedAt": time.time(),
            },
        )
        return 128
    pid = os.fork()
    if pid == 0:
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            os.chroot(spec["root"])
            os.chdir(spec.get("workingDir") or "/")
            os.execve(spec["argv"][0], spec["argv"], spec["env"])
        except OSError as e:
            print(f"maestro executor: cannot run {spec['argv'][0]}: {e}", file=sys.stderr, flush=True)
            os._exit(127)
    _write_exit(spec["exitFile"] + ".pid", {"pid": pid, "startedAt": started})
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    result: dict[str, Any] = {
        "exitCode": code if code >= 0 else 128 - code,
        "startedAt": started,
        "finishedAt": time.time(),
    }
    if code < 0:
        result["signal"] = -code
    _write_exit(spec["exitFile"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
