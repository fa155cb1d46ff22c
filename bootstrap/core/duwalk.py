"""The walk behind `vboot disk`: du's numbers, in a module that imports only what a forked child needs.

Counting rules are GNU du's (``du -a -B1 --max-depth=N PATH`` shows the same numbers):

- allocated bytes (``st_blocks * 512``; sparse files count what they occupy), or ``st_size`` with
  ``apparent=True`` (``du --apparent-size``);
- a file with several hard links is counted once, at its first occurrence in depth-first directory order;
- symbolic links are never followed (a link counts its own size); the PATH given on the command line is
  followed when it is a link (``du -D``), so ``vboot disk ~/.cache/huggingface`` measures the target;
- a directory that cannot be read still counts its own size and becomes a warning; files that vanish
  during the scan are skipped;
- pseudo filesystems mounted below the root (/proc, /sys, cgroup, devpts, ...) are not entered: they hold no
  disk blocks, so du's numbers do not change, but du spends time and errors there (and ``--apparent-size``
  would add /proc/kcore's 128 TiB). Their mount points are listed in ``skipped_mounts``.

Speed: one CPython process stats ~1.5x slower than du, so a large tree is split. The scan starts in-process;
once it has seen ``split_after`` entries, the subdirectories it has not entered yet become tasks, which the
parent and ``workers - 1`` forked children pull from a shared pipe (dynamic balancing). Children send their
partial sums back (marshal); the parent merges them and removes hard-link duplicates across processes by
(st_dev, st_ino), keeping the occurrence du would have counted. Small trees never fork.

Worker processes watch their parent: if the scanning process dies (even by SIGKILL), they stop within
``WATCH_EVERY`` entries instead of scanning the rest of the tree for nobody. ``scan(watch_parent=PID)`` makes
the scanning process itself do the same: the console script runs :func:`scan_wire` that way in a forked child
before it has imported click (bootstrap.cli.entry).
"""

from __future__ import annotations

import marshal
import os
import select
import struct
import time

TYPE_CHECKING = False  # typing itself costs an import; this module must load in a few milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    OpenDir = Callable[[str, str, "int | None"], int]

# Entries seen in-process before the rest of the tree is shared with worker processes.
SPLIT_AFTER = 1000
# Below this many levels per task we hold one directory fd per level; deeper directories are re-opened by
# path as fresh tasks (keeps fds and Python recursion bounded on pathological trees).
MAX_LEVELS = 200
# Enough tasks that dynamic pulling balances the workers.
TASKS_PER_WORKER = 8
MAX_EXPANSIONS = 64
MAX_WARNINGS = 200
# GNU du (gnulib fts) reads a directory in batches of 100,000 entries and sorts a batch of more than 10,000 by
# inode number before visiting it (not on tmpfs, NFS or CIFS). Which of two hard links du counts follows that
# order, so ours does too.
INODE_SORT_THRESHOLD = 10_000
READDIR_BATCH = 100_000
NO_INODE_SORT_FILESYSTEMS = frozenset({"tmpfs", "devtmpfs", "nfs", "nfs4", "cifs", "smb3"})
# Processes of a scan check that their parent is still there every this many entries (and directories).
WATCH_EVERY = 4000

# Filesystems that hold no disk blocks and no user data: never entered below the root.
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs", "securityfs", "pstore", "bpf",
    "configfs", "fusectl", "binfmt_misc", "efivarfs", "rpc_pipefs", "nsfs", "selinuxfs",
})  # not autofs (the real filesystem is mounted over it) nor hugetlbfs (its files count huge pages)
MOUNTINFO = "/proc/self/mountinfo"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_S_IFMT = 0o170000
_S_IFDIR = 0o040000

def default_open_dir(path: str, name: str, dir_fd: int | None) -> int:
    """Open directory ``name`` (relative to ``dir_fd``; ``path`` is its full path, for messages and tests)."""
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)

# A walk-order sort key, one component per level below the root: readdir's index of the entry until its directory
# is re-keyed in du's visiting order (_Walker._inode_order), then (batch, inode or 0, index).
_Key = tuple[int | tuple[int, int, int], ...]


class _Task:
    __slots__ = ("path", "key", "parts", "depth")

    def __init__(self, path: str, key: _Key, parts: tuple[str, ...], depth: int) -> None:
        self.path, self.key, self.parts, self.depth = path, key, parts, depth


class _Abandoned(Exception):
    """The process that started this scan is gone: stop working."""


class _Walker:
    """Walks directories with fds (``fstatat``), collecting sums for entries at depth <= ``maxdepth``."""

    def __init__(self, maxdepth: int, apparent: bool, xdev: int | None, open_dir: OpenDir, budget: int | None,
                 skip: Mapping[str, int], unsorted_devs: frozenset[int]) -> None:
        self.maxdepth = maxdepth
        self.apparent = apparent
        self.xdev = xdev
        self.open_dir = open_dir
        self.budget = budget  # entries before subdirectories get deferred (None: never)
        self.skip = skip  # mount point -> st_dev of the pseudo filesystem there
        self.unsorted_devs = unsorted_devs  # devices whose large directories du does not sort by inode
        self.entries: dict[tuple[str, ...], list] = {}  # parts -> [bytes, is_dir]
        self.attribs: list[tuple[tuple[str, ...], int]] = []
        self.links: list[tuple[_Key, int, int, int, tuple[str, ...]]] = []
        self.deferred: list[_Task] = []
        self.warnings: list[tuple[str, str, str]] = []
        self.unreadable: list[str] = []
        self.skipped: list[str] = []
        self.errors = 0
        self.count = 0
        self.deferring = False
        self.watch: int | None = None  # the scanning process's PID (in workers): stop when it is gone
        self.unwatched = 0  # entries and directories since the last look at the parent

    def _warn(self, path: str, kind: str, message: str) -> None:
        path = path or "/"
        if kind == "unreadable":
            self.unreadable.append(path)
        else:
            self.errors += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append((path, kind, message))

    def run_task(self, task: _Task) -> None:
        """Scan one deferred directory; its contents' total goes to its ancestors via ``attribs``."""
        total = self.walk(task.path, None, task.path, task.depth, 0, task.key, task.parts)
        self.attribs.append((task.parts, total))

    def drain_deep(self) -> None:
        """Run directories deferred for depth (never for the budget)."""
        while self.deferred:
            self.run_task(self.deferred.pop())

    def walk(self, path: str, dir_fd: int | None, name: str, depth: int, level: int,
             key: _Key, parts: tuple[str, ...]) -> int:
        """Bytes below directory ``path`` (not counting the directory itself)."""
        try:
            fd = self.open_dir(path, name, dir_fd)
        except (FileNotFoundError, NotADirectoryError):
            return 0  # vanished or replaced since its parent was listed
        except PermissionError as exc:
            self._warn(path, "unreadable", exc.strerror or "permission denied")
            return 0
        except OSError as exc:
            if exc.errno == 40:  # ELOOP: replaced by a symlink since it was listed
                return 0
            self._warn(path, "error", exc.strerror or str(exc))
            return 0
        try:
            try:
                it = os.scandir(fd)
            except OSError as exc:
                self._warn(path, "unreadable" if isinstance(exc, PermissionError) else "error",
                           exc.strerror or str(exc))
                return 0
            marks = (len(self.links), len(self.deferred))
            subdirs: list[tuple[int, int]] = []  # (index, d_ino) of the subdirectories listed
            with it:
                total, n = self._list(it, fd, path, depth + 1, level, key, parts, subdirs)
            if n > INODE_SORT_THRESHOLD and os.fstat(fd).st_dev not in self.unsorted_devs:
                self._inode_order(len(key), n, subdirs, marks)
            self.count += n
            if self.budget is not None and not self.deferring and self.count >= self.budget:
                self.deferring = True
            if self.watch is not None:
                self.unwatched += n + 1  # + 1: a tree of empty directories is work too
                if self.unwatched >= WATCH_EVERY:
                    self.unwatched = 0
                    if os.getppid() != self.watch:
                        raise _Abandoned
        finally:
            os.close(fd)
        return total

    def _inode_order(self, pos: int, n: int, subdirs: list[tuple[int, int]], marks: tuple[int, int]) -> None:
        """Re-key what this directory (``n`` entries, keys' component ``pos``) issued in du's visiting order.

        Keys use readdir's index; du visits a batch of more than INODE_SORT_THRESHOLD entries in inode order
        (a stable sort). Every key issued while listing this directory gets, at ``pos``, the component
        (batch, inode or 0, index), which orders like du's visit and compares only with its own kind.
        """
        inodes = dict(subdirs)

        def component(i: int, ino: int) -> tuple[int, int, int]:
            batch = i // READDIR_BATCH
            size = min(n - batch * READDIR_BATCH, READDIR_BATCH)
            return (batch, ino if size > INODE_SORT_THRESHOLD else 0, i)

        links = self.links
        for k in range(marks[0], len(links)):
            lk = links[k]
            i = lk[0][pos]
            assert isinstance(i, int)  # not re-keyed yet: it is this directory's listing that is re-keyed now
            ino = lk[2] if len(lk[0]) == pos + 1 else inodes[i]  # a file here, or one below subdirectory i
            links[k] = (lk[0][:pos] + (component(i, ino),) + lk[0][pos + 1:], *lk[1:])
        for task in self.deferred[marks[1]:]:
            i = task.key[pos]
            assert isinstance(i, int)
            task.key = task.key[:pos] + (component(i, inodes[i]),) + task.key[pos + 1:]

    def _subdir(self, path: str, fd: int, name: str, dev: int, cdepth: int, level: int, key: _Key,
                parts: tuple[str, ...]) -> int:
        """Bytes below subdirectory ``name`` (on device ``dev``) of ``fd``, or 0 when deferred or skipped."""
        sub = f"{path}/{name}"
        # Skipped only if the pseudo filesystem is what is visible there (not one mounted over, or hidden).
        if self.skip and self.skip.get(sub) == dev:
            self.skipped.append(sub)
            return 0
        if self.deferring or level >= MAX_LEVELS:
            self.deferred.append(_Task(sub, key, parts, cdepth))
            return 0
        return self.walk(sub, fd, name, cdepth, level + 1, key, parts)

    def _list(self, it: Iterable[os.DirEntry], fd: int, path: str, cdepth: int, level: int,
              key: _Key, parts: tuple[str, ...], subdirs: list[tuple[int, int]]) -> tuple[int, int]:
        """Sum a directory; record its entries when they are within the listed depth. Returns (bytes, entries).

        Most entries of a large tree pass through here, so it does the least per entry: one ``fstatat``
        (``DirEntry.stat``), a mode test, a link-count test.
        """
        total = 0
        apparent = self.apparent
        xdev = self.xdev
        links = self.links
        entries = self.entries if cdepth <= self.maxdepth else None
        i = -1
        try:
            for i, e in enumerate(it):
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # vanished since it was listed
                except OSError as exc:
                    self._warn(f"{path}/{e.name}", "error", exc.strerror or str(exc))
                    continue
                b = st.st_size if apparent else st.st_blocks * 512
                cparts = parts if entries is None else parts + (e.name,)
                if st.st_mode & _S_IFMT == _S_IFDIR:
                    if xdev is not None and st.st_dev != xdev:
                        continue
                    subdirs.append((i, e.inode()))
                    b += self._subdir(path, fd, e.name, st.st_dev, cdepth, level, key + (i,), cparts)
                elif st.st_nlink > 1:
                    links.append((key + (i,), st.st_dev, st.st_ino, b, cparts))
                if entries is not None:
                    entries[cparts] = [b, st.st_mode & _S_IFMT == _S_IFDIR]
                total += b
        except OSError as exc:  # readdir failed mid-directory (EIO, ...)
            self._warn(path, "error", exc.strerror or str(exc))
        return total, i + 1

    def result(self, done: list[int]) -> bytes:
        return marshal.dumps((list(self.entries.items()), self.attribs, self.links, self.warnings,
                              self.unreadable, self.errors, self.count, done, self.skipped))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    """Processes for a large scan: the CPUs this process may use, at most 8.

    A scan is mostly kernel time in ``fstatat``; on a busy box the scheduler shares the CPUs, so more
    processes still finish sooner than one (the load average, once used here, lags by a minute).
    """
    return max(1, min(8, _cpu_count()))


def _read_all(fd: int, watch: int | None = None) -> bytes:
    """Everything until EOF. With ``watch``: raise _Abandoned if this process's parent stops being ``watch``."""
    chunks: list[bytes] = []
    while True:
        if watch is not None:
            while not select.select([fd], [], [], 0.25)[0]:
                if os.getppid() != watch:
                    raise _Abandoned
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _run_parallel(walker_factory: Callable[[], _Walker], chunks: list[list[_Task]], workers: int,
                  parent: _Walker) -> list[tuple]:
    """Run ``chunks`` on the parent plus ``workers - 1`` forked children; returns the children's results."""
    r_tasks, w_tasks = os.pipe()
    # Fixed-size 4-byte tokens, all written before anyone reads: each read(4) takes exactly one token.
    _write_all(w_tasks, b"".join(struct.pack("=I", i) for i in range(len(chunks))))
    os.close(w_tasks)
    children: list[tuple[int, int]] = []
    scanner = os.getpid()
    try:
        for _ in range(workers - 1):
            r_res, w_res = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(r_res)
                os.close(w_res)
                break
            if pid == 0:  # child: never returns into the caller
                code = 0
                try:
                    os.close(r_res)
                    release_output()
                    walker = walker_factory()
                    walker.watch = scanner
                    done = _pull(r_tasks, chunks, walker)
                    _write_all(w_res, walker.result(done))
                except BaseException:  # noqa: BLE001 - the parent redoes what a failed child claimed
                    code = 1
                finally:
                    os._exit(code)
            os.close(w_res)
            children.append((pid, r_res))
        parent_done = _pull(r_tasks, chunks, parent)
    except BaseException:  # interrupted (Ctrl-C, SIGTERM) or abandoned during our own share: the workers go too
        for pid, r_res in children:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            _reap(pid)
            os.close(r_res)
        raise
    finally:
        os.close(r_tasks)
    results = []
    claimed = set(parent_done)
    waiting = dict(children)
    try:
        for pid, r_res in children:
            try:
                data = _read_all(r_res, parent.watch)
            finally:
                os.close(r_res)
            del waiting[pid]
            if _reap(pid) in (0, None) and data:  # None: reaped by the system (SIGCHLD ignored); judge the data
                try:
                    res = marshal.loads(data)
                except (EOFError, ValueError, TypeError):
                    continue
                results.append(res)
                claimed.update(res[7])
    except BaseException:
        for pid in waiting:  # abandoned or interrupted: the workers still running go too
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            _reap(pid)
        raise
    for i, chunk in enumerate(chunks):  # a child that died: redo its share here
        if i not in claimed:
            for task in chunk:
                parent.run_task(task)
            parent.drain_deep()
    return results


def release_output() -> None:
    """In a forked scan process, which never prints: let go of the caller's stdout and stderr, so that whoever
    reads vboot's output sees its end when vboot ends, not when the last scan process has noticed it is alone."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for fd in (1, 2):
        try:
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)


def _reap(pid: int) -> int | None:
    """The wait status of child ``pid``, or None when the system reaped it already (SIGCHLD ignored)."""
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return None


def _pull(r_tasks: int, chunks: list[list[_Task]], walker: _Walker) -> list[int]:
    done: list[int] = []
    while True:
        token = os.read(r_tasks, 4)
        if len(token) < 4:
            return done
        (i,) = struct.unpack("=I", token)
        for task in chunks[i]:
            walker.run_task(task)
        walker.drain_deep()
        done.append(i)


def display_path(path: str) -> tuple[str, bool]:
    """A path safe to print and to put in JSON: undecodable bytes become ``\\xNN``. Returns (text, was_odd)."""
    try:
        path.encode("utf-8")
        return path, False
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), True


def _unescape_mount(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    if "\\" not in field:
        return field
    raw = field.encode("utf-8", "surrogateescape")
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 4 <= len(raw) and raw[i + 1:i + 4].isdigit():
            out.append(int(raw[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return os.fsdecode(bytes(out))


def mount_table(mountinfo: str = MOUNTINFO) -> list[tuple[str, int, str]]:
    """(mount point, st_dev, filesystem type) of every mount in /proc/self/mountinfo; [] if unreadable."""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    table = []
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        major, _, minor = fields[2].partition(":")
        if major.isdigit() and minor.isdigit():
            table.append((_unescape_mount(fields[4]), os.makedev(int(major), int(minor)), right.split()[0]))
    return table


def pseudo_mounts(root: str, mounts: list[tuple[str, int, str]] | None = None) -> dict[str, int]:
    """Mount points strictly below ``root`` whose filesystem type is in :data:`PSEUDO_FILESYSTEMS`, with the
    ``st_dev`` of that filesystem (mountinfo's major:minor), so that the walk skips a mount point only while
    the pseudo filesystem is what can be seen there.

    Mount points in mountinfo are real paths; a ``root`` reached through a symlinked parent gets them re-based
    onto its own spelling. ``mounts``: :func:`mount_table`'s rows (default: read them).
    """
    base = root.rstrip("/")
    real = os.path.realpath(root).rstrip("/")
    found: dict[str, int] = {}
    for point, dev, fstype in mount_table() if mounts is None else mounts:
        if fstype in PSEUDO_FILESYSTEMS and point.startswith(real + "/"):
            found[base + point[len(real):]] = dev
    return found


def scan_wire(root: str, depth: int = 1, apparent: bool = False, one_file_system: bool = False,
              *, workers: int | None = None, split_after: int = SPLIT_AFTER,
              open_dir: OpenDir = default_open_dir, watch_parent: int | None = None,
              skip_mounts: Mapping[str, int] | None = None) -> dict:
    """Measure ``root`` like ``du -a -B1 --max-depth=DEPTH ROOT`` (``du --apparent-size`` with ``apparent``).

    ``one_file_system`` skips directories on other filesystems (``du -x``). ``workers`` caps the processes
    (default: the CPUs available, at most 8); ``split_after`` is how many entries are scanned in-process
    before the rest is shared out. ``open_dir`` opens a directory (injected by tests to simulate EACCES).
    ``watch_parent``: stop (raise) soon after this process is no longer the parent of the one scanning.
    ``skip_mounts``: {directory: st_dev} not to enter while that device is mounted there (default: the
    pseudo filesystems mounted below the root, :func:`pseudo_mounts`).

    Hard links are counted where du counts them, including du's inode-order visit of directories with more
    than 10,000 entries (INODE_SORT_THRESHOLD).
    Returns plain values that :mod:`marshal` can carry (a forked head start sends them through a pipe):
    :class:`bootstrap.core.disk.DiskReport`'s fields, entries and warnings as tuples, and ``fs_path`` (the
    absolute root) for the filesystem's size; :func:`bootstrap.core.disk.scan` is the typed interface.
    Raises NotFoundError when ``root`` does not exist; everything below it only produces warnings.
    """
    started = time.perf_counter()
    depth = max(0, int(depth))
    root_path = os.path.abspath(os.fspath(root)).rstrip("/") or "/"  # "//" is "/" too
    try:
        st = os.stat(root_path)
    except OSError as exc:
        from bootstrap.core.errors import NotFoundError

        if isinstance(exc, FileNotFoundError):
            raise NotFoundError(f"no such file or directory: {root_path}",
                                hint="check the path (a directory named like a subcommand: write ./caches)",
                                path=root_path) from None
        raise NotFoundError(f"cannot read {root_path}: {exc.strerror}", hint="check the path and its permissions",
                            path=root_path) from None
    own = st.st_size if apparent else st.st_blocks * 512
    # What a file (not a directory) as the root reports; a walk fills in the rest below.
    wire = {"root": display_path(root_path)[0], "total_bytes": own, "entries": [], "warnings": [],
            "unreadable_count": 0, "unreadable_paths": (), "error_count": 0, "depth": depth, "apparent": apparent,
            "one_file_system": one_file_system, "entry_count": 1, "workers": 1, "elapsed_s": 0.0,
            "skipped_mounts": (), "fs_path": root_path}
    if st.st_mode & _S_IFMT != _S_IFDIR:
        wire["elapsed_s"] = time.perf_counter() - started
        return wire
    nworkers = default_workers() if workers is None else max(1, workers)
    xdev = st.st_dev if one_file_system else None

    # The root is followed when it is a symlink (du -D); nothing below it is.
    walk_root = os.path.realpath(root_path) if os.path.islink(root_path) else root_path
    mounts = mount_table()
    skip = dict(pseudo_mounts(walk_root, mounts) if skip_mounts is None else skip_mounts)
    unsorted = frozenset(dev for _, dev, fstype in mounts if fstype in NO_INODE_SORT_FILESYSTEMS)

    def factory(budget: int | None = None) -> _Walker:
        return _Walker(maxdepth=depth, apparent=apparent, xdev=xdev, open_dir=open_dir, budget=budget, skip=skip,
                       unsorted_devs=unsorted)

    parent = factory(split_after if nworkers > 1 else None)
    parent.watch = watch_parent
    # Paths below the root are built as f"{path}/{name}": "/" starts from "" so that they read "/proc".
    contents = parent.walk(walk_root.rstrip("/"), None, walk_root, 0, 0, (), ())
    parent.count += 1  # the root itself
    tasks = parent.deferred
    parent.deferred = []
    results: list[tuple] = []
    used = 1
    if tasks and parent.deferring:
        # Cut the shallowest tasks into their subdirectories until there are enough to balance.
        expansions = 0
        while len(tasks) < TASKS_PER_WORKER * nworkers and expansions < MAX_EXPANSIONS:
            idx = min(range(len(tasks)), key=lambda k: tasks[k].depth)
            task = tasks.pop(idx)
            parent.run_task(task)
            tasks.extend(parent.deferred)
            parent.deferred = []
            expansions += 1
            if not tasks:
                break
        parent.deferring = False
        parent.budget = None
        tasks.sort(key=lambda t: t.key)
        per_chunk = max(1, -(-len(tasks) // 4096))
        chunks = [tasks[k:k + per_chunk] for k in range(0, len(tasks), per_chunk)]
        used = min(nworkers, len(chunks))
        results = _run_parallel(factory, chunks, used, parent) if used > 1 else []
        if used <= 1:
            for task in tasks:
                parent.run_task(task)
            parent.drain_deep()
    else:
        tasks.extend(parent.deferred)
        parent.deferred = tasks
        parent.drain_deep()

    entries: dict[tuple[str, ...], list] = parent.entries
    attribs = parent.attribs
    links = parent.links
    warnings = parent.warnings
    unreadable = parent.unreadable
    errors = parent.errors
    count = parent.count
    skipped = parent.skipped
    for res in results:
        for parts, val in res[0]:
            entries[tuple(parts)] = list(val)
        attribs = attribs + [(tuple(p), b) for p, b in res[1]]
        links = links + [(tuple(k), d, ino, b, tuple(p)) for k, d, ino, b, p in res[2]]
        warnings = warnings + [tuple(w) for w in res[3]]
        unreadable = unreadable + list(res[4])
        errors += res[5]
        count += res[6]
        skipped = skipped + list(res[8])

    total = own + contents
    for parts, b in attribs:
        total += b
        _add_to_prefixes(entries, parts, b)
    total -= _drop_duplicate_links(entries, links)

    out = []
    odd = []
    for parts, (b, is_dir) in entries.items():
        text, is_odd = display_path(root_path + "/" + "/".join(parts) if root_path != "/" else "/" + "/".join(parts))
        if is_odd:
            odd.append(text)
        out.append((text, b, is_dir, len(parts)))
    out.sort(key=lambda e: (-e[1], e[0]))
    walked, asked = walk_root.rstrip("/"), root_path.rstrip("/")

    def shown(path: str) -> str:  # paths met during the walk, in the spelling the user gave the root
        if walked != asked and (path == walked or path.startswith(walked + "/")):
            path = asked + path[len(walked):]
        return display_path(path or "/")[0]

    warns = [(shown(p), k, m) for p, k, m in warnings[:MAX_WARNINGS]]
    for text in odd[: max(0, MAX_WARNINGS - len(warns))]:
        warns.append((text, "non_utf8", "name is not valid UTF-8 (shown with \\x escapes)"))
    wire.update(total_bytes=total, entries=out, warnings=warns, unreadable_count=len(unreadable),
                unreadable_paths=tuple(shown(p) for p in unreadable[:50]), error_count=errors, entry_count=count,
                workers=used, elapsed_s=time.perf_counter() - started,
                skipped_mounts=tuple(sorted(shown(p) for p in skipped)))
    return wire


def _add_to_prefixes(entries: dict[tuple[str, ...], list], parts: Iterable[str], b: int) -> None:
    parts = tuple(parts)
    for k in range(1, len(parts) + 1):
        slot = entries.get(parts[:k])
        if slot is not None:
            slot[0] += b


def _drop_duplicate_links(entries: dict[tuple[str, ...], list], links: list) -> int:
    """Count each (dev, inode) once, at its first occurrence in depth-first order; returns bytes removed."""
    if not links:
        return 0
    first: dict[tuple[int, int], tuple] = {}
    for link in links:
        ident = (link[1], link[2])
        seen = first.get(ident)
        if seen is None or link[0] < seen[0]:
            first[ident] = link
    removed = 0
    for link in links:
        if first[(link[1], link[2])] is link:
            continue
        key, _dev, _ino, b, parts = link
        removed += b
        _add_to_prefixes(entries, parts[:-1] if parts in entries and not entries[parts][1] else parts, -b)
        if parts in entries and not entries[parts][1]:
            del entries[parts]  # du does not list a file it already counted under another name
    return removed
