"""Load, validate and compile config + policies; hold the current snapshot; watch for changes.

A reload either produces a complete new Snapshot, swapped in by one assignment, or leaves the
old one in force and reports every problem of the new files.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway.policy.compile import CompileError, compile_snapshot
from gateway.policy.errors import ConfigReport, SourceFile
from gateway.policy.schema import GatewayConfig
from gateway.policy.snapshot import Paths, Snapshot
from gateway.policy.validate import validate_config, validate_policy
from gateway.policy.yamlfile import parse_yaml

log = structlog.get_logger("gateway")


def display_name(path: Path) -> str:
    """Paths in messages are relative to the working directory when they are below it."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: name the link itself
        resolved = Path(os.path.abspath(path))
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def resolve_paths(config_file: Path, config: GatewayConfig) -> Paths:
    config_dir = config_file.resolve().parent
    return Paths(
        config_file=config_file.resolve(),
        config_dir=config_dir,
        policies_dir=_resolve(config_dir, config.policies),
        audit_file=_resolve(config_dir, config.audit.path),
        secret_key_file=_resolve(config_dir, config.secret_key_file)
        if config.secret_key_file
        else None,
    )


Signature = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True, slots=True)
class LoadResult:
    snapshot: Snapshot | None
    report: ConfigReport
    files: tuple[str, ...]
    digest: str = ""  # of the files' names and bytes as read, good or bad
    # What stat said just before the policy files were read: the poller's first baseline, so a
    # change made between this load and the poller's start is not taken as the starting state.
    signature: Signature = ()

    @property
    def ok(self) -> bool:
        return self.snapshot is not None


# A policy this big is a mistake or an attack; parsing it would hold a worker for minutes.
MAX_FILE_BYTES = 16 * 1024 * 1024


def _why_unreadable(path: Path) -> str | None:
    """Why a policy entry is not a regular file we can read, in words an admin can act on."""
    try:
        target = path.stat()  # follows symlinks
    except OSError as exc:
        if path.is_symlink():
            try:
                link = os.readlink(path)
            except OSError:
                link = "?"
            if exc.errno == errno.ELOOP:
                return f"is a symbolic link loop ({link})"
            return f"is a symbolic link to {link}, which does not exist"
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(target.st_mode):
        return (
            "is a folder, not a file (Docker creates one when a bind-mounted file is missing); "
            "mount the file or remove the folder"
        )
    if not stat.S_ISREG(target.st_mode):
        return "is not a regular file"
    if target.st_size > MAX_FILE_BYTES:
        return f"is {target.st_size / 1048576:.1f} MiB; files over 16 MiB are refused"
    return None


def _read(path: Path, report: ConfigReport, digest) -> SourceFile | None:  # type: ignore[no-untyped-def]
    name = display_name(path)
    why = _why_unreadable(path)
    if why is not None:
        report.error(name, (), why)
        return None
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # it may have grown since the stat
    except OSError as exc:
        report.error(name, (), f"cannot read the file ({exc.strerror})")
        return None
    if len(raw) > MAX_FILE_BYTES:
        report.error(name, (), "is over 16 MiB; files over 16 MiB are refused")
        return None
    digest.update(name.encode() + b"\0" + raw + b"\0")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        report.error(name, (), "the file is not UTF-8 text")
        return None
    return parse_yaml(text, name, report)


def policy_files(policies_dir: Path) -> list[Path]:
    """Every *.yaml entry in the folder, in name order, whatever it is: a dangling link or a
    folder named *.yaml is reported by `_read`, never skipped (an allowlist must not vanish).
    Hidden files (editors' temp files) are not policy. Raises OSError if the folder cannot be
    listed."""
    with os.scandir(policies_dir) as entries:
        return sorted(
            Path(e.path) for e in entries if e.name.endswith(".yaml") and not e.name.startswith(".")
        )


def load(config_file: Path, *, generation: int = 1) -> LoadResult:
    """Never raises: whatever goes wrong becomes an error in the report."""
    report = ConfigReport()
    try:
        return _load(config_file, generation, report)
    except Exception as exc:  # a bug must not take hot reload down; the report says what
        log.exception("policy_load_failed")
        report.error(
            display_name(config_file),
            (),
            f"the configuration could not be loaded ({type(exc).__name__}: {exc})",
        )
        return LoadResult(None, report, (display_name(config_file),))


def _load(config_file: Path, generation: int, report: ConfigReport) -> LoadResult:
    digest = hashlib.sha256()
    config_source = _read(config_file, report, digest)
    config = validate_config(config_source, report) if config_source else None
    files = [display_name(config_file)]
    if config is None or config_source is None:
        return LoadResult(None, report, tuple(files), digest.hexdigest())
    paths = resolve_paths(config_file, config)
    signature = files_signature(paths)
    try:
        entries = policy_files(paths.policies_dir)
    except OSError as exc:
        reason = (
            "is not a folder; create it or point `policies:` at one"
            if isinstance(exc, FileNotFoundError | NotADirectoryError)
            else f"cannot be listed ({exc.strerror})"
        )
        report.error(display_name(config_file), ("policies",), f"{paths.policies_dir} {reason}")
        return LoadResult(None, report, tuple(files), digest.hexdigest())
    sources = []
    unreadable = False
    for path in entries:
        files.append(display_name(path))
        source = _read(path, report, digest)
        if source is None:
            unreadable = True
        else:
            sources.append(source)
    # With a file unreadable, cross-file references (a role defined in that file) would cascade
    # into errors about files nobody touched: report the root cause alone.
    policy = validate_policy(sources, config, report, check_references=not unreadable)
    if policy is None or not report.ok:
        return LoadResult(None, report, tuple(files), digest.hexdigest())
    try:
        snapshot = compile_snapshot(
            config,
            policy,
            paths,
            generation=generation,
            fingerprint=digest.hexdigest(),
            warnings=[str(w) for w in report.warnings],
        )
    except CompileError as exc:
        report.error(_owner(exc, config_source, sources), exc.path, exc.message)
        return LoadResult(None, report, tuple(files), digest.hexdigest())
    return LoadResult(snapshot, report, tuple(files), digest.hexdigest(), signature)


def _owner(exc: CompileError, config: SourceFile, sources: list[SourceFile]) -> SourceFile:
    if exc.where == "config" or not exc.path:
        return config
    top = exc.path[0]
    return next((s for s in sources if isinstance(s.data, dict) and top in s.data), config)


ReloadListener = Callable[[LoadResult, Snapshot], Awaitable[None]]


class PolicyHolder:
    """The one reference every request reads. Swapped only with a complete, valid snapshot."""

    def __init__(self, config_file: Path, snapshot: Snapshot) -> None:
        self.config_file = config_file
        self.current = snapshot
        self.last_result: LoadResult | None = None
        self.rejected: LoadResult | None = None  # the newest failed load, until a good one
        self.last_rejected: tuple[float, LoadResult] | None = None  # kept after a good one
        self._lock = asyncio.Lock()
        self._listeners: list[ReloadListener] = []

    def on_reload(self, listener: ReloadListener) -> None:
        """listener(result, previous) runs after every reload attempt, good or bad."""
        self._listeners.append(listener)

    async def reload(self) -> LoadResult:
        async with self._lock:
            previous = self.current
            generation = previous.generation + 1
            result = await asyncio.to_thread(load, self.config_file, generation=generation)
            self.last_result = result
            if result.snapshot is not None:
                if result.snapshot.fingerprint != previous.fingerprint:
                    self.current = result.snapshot
                self.rejected = None
            else:
                if self.rejected is not None and self.rejected.digest == result.digest:
                    # The same broken files again (the watcher and the poller both saw the
                    # change): reported once already.
                    return result
                self.rejected = result
                self.last_rejected = (time.time(), result)
            for listener in self._listeners:
                try:
                    await listener(result, previous)
                except Exception:  # one listener's failure must not stop the others
                    log.exception("policy_listener_failed", listener=repr(listener))
            return result

    def watched_folders(self) -> set[Path]:
        paths = self.current.paths
        return {paths.config_dir, paths.policies_dir}


async def watch(holder: PolicyHolder, debounce_ms: int = 200) -> None:
    """Reload when the config file or a policy file changes. Runs until cancelled; survives
    any error (logged, then watching starts again a second later)."""
    while True:
        try:
            await _watch(holder, debounce_ms)
        except Exception:
            log.exception("policy_watch_failed")
        await asyncio.sleep(1.0)


async def _watch(holder: PolicyHolder, debounce_ms: int) -> None:
    import watchfiles

    def relevant(_change: watchfiles.Change, path: str) -> bool:
        p = Path(path)
        current = holder.current.paths
        return p == current.config_file or (
            p.parent == current.policies_dir and p.suffix == ".yaml"
        )

    while True:
        folders = [str(p) for p in holder.watched_folders() if p.is_dir()]
        if not folders:
            return  # nothing to watch now; the poller notices when the folders come back
        stop = asyncio.Event()
        async for _changes in watchfiles.awatch(
            *folders,
            watch_filter=relevant,
            debounce=debounce_ms,
            stop_event=stop,
            recursive=False,
            force_polling=os.environ.get("GATEWAY_WATCH_POLLING") == "1",
        ):
            await holder.reload()
            if {str(p) for p in holder.watched_folders()} != set(folders):
                stop.set()  # the policies folder moved: watch the new one
                break


def files_signature(paths: Paths) -> Signature:
    """What stat says about the config file and every policy entry (symlinks followed; an
    entry that cannot be stat'ed or listed is part of the signature too)."""
    out = []
    try:
        entries = policy_files(paths.policies_dir)
    except OSError as exc:
        entries = []
        out.append((str(paths.policies_dir), -1, -1, exc.errno or -1))
    for path in [paths.config_file, *entries]:
        try:
            st = path.stat()
        except OSError as exc:
            out.append((str(path), -1, -1, exc.errno or -1))
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


async def poll(holder: PolicyHolder, interval: float = 2.0) -> None:
    """A safety net under the file watcher: reload when stat sees a change it missed.

    inotify misses changes on network filesystems and the symlink swaps Kubernetes uses to
    update a mounted ConfigMap; a stat of a handful of files every two seconds costs nothing.
    Survives any error: logged, and the next round tries again.
    """
    loaded = holder.last_result
    last: Signature | None = loaded.signature if loaded and loaded.signature else None
    while True:
        try:
            current = await asyncio.to_thread(files_signature, holder.current.paths)
            if last is not None and current != last:
                await holder.reload()
            last = current
        except Exception:
            log.exception("policy_poll_failed")
        await asyncio.sleep(interval)
