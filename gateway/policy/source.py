"""Load, validate and compile config + policies; hold the current snapshot; watch for changes.

A reload either produces a complete new Snapshot, swapped in by one assignment, or leaves the
old one in force and reports every problem of the new files.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.policy.compile import compile_snapshot
from gateway.policy.errors import ConfigReport, SourceFile
from gateway.policy.schema import GatewayConfig
from gateway.policy.snapshot import Paths, Snapshot
from gateway.policy.validate import validate_config, validate_policy
from gateway.policy.yamlfile import parse_yaml


def display_name(path: Path) -> str:
    """Paths in messages are relative to the working directory when they are below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
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


@dataclass(frozen=True, slots=True)
class LoadResult:
    snapshot: Snapshot | None
    report: ConfigReport
    files: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.snapshot is not None


def _read(path: Path, report: ConfigReport, digest) -> SourceFile | None:  # type: ignore[no-untyped-def]
    name = display_name(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        report.error(name, (), f"cannot read the file ({exc.strerror})")
        return None
    digest.update(name.encode() + b"\0" + raw + b"\0")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        report.error(name, (), "the file is not UTF-8 text")
        return None
    return parse_yaml(text, name, report)


def policy_files(policies_dir: Path) -> list[Path]:
    """Every *.yaml in the folder, in name order; editor temp and hidden files are not policy."""
    try:
        return sorted(
            p for p in policies_dir.glob("*.yaml") if not p.name.startswith(".") and p.is_file()
        )
    except OSError:
        return []


def load(config_file: Path, *, generation: int = 1) -> LoadResult:
    report = ConfigReport()
    digest = hashlib.sha256()
    config_source = _read(config_file, report, digest)
    config = validate_config(config_source, report) if config_source else None
    files = [display_name(config_file)]
    if config is None:
        return LoadResult(None, report, tuple(files))
    paths = resolve_paths(config_file, config)
    if not paths.policies_dir.is_dir():
        report.error(
            display_name(config_file),
            ("policies",),
            f"{paths.policies_dir} is not a folder; create it or point `policies:` at one",
        )
        return LoadResult(None, report, tuple(files))
    sources = []
    for path in policy_files(paths.policies_dir):
        files.append(display_name(path))
        source = _read(path, report, digest)
        if source is not None:
            sources.append(source)
    policy = validate_policy(sources, config, report)
    if policy is None or not report.ok:
        return LoadResult(None, report, tuple(files))
    snapshot = compile_snapshot(
        config,
        policy,
        paths,
        generation=generation,
        fingerprint=digest.hexdigest(),
        warnings=[str(w) for w in report.warnings],
    )
    return LoadResult(snapshot, report, tuple(files))


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
                self.rejected = result
                self.last_rejected = (time.time(), result)
            for listener in self._listeners:
                await listener(result, previous)
            return result

    def watched_folders(self) -> set[Path]:
        paths = self.current.paths
        return {paths.config_dir, paths.policies_dir}


async def watch(holder: PolicyHolder, debounce_ms: int = 200) -> None:
    """Reload when the config file or a policy file changes. Runs until cancelled."""
    import watchfiles

    def relevant(_change: watchfiles.Change, path: str) -> bool:
        p = Path(path)
        current = holder.current.paths
        return p == current.config_file or (
            p.parent == current.policies_dir and p.suffix == ".yaml"
        )

    while True:
        folders = [str(p) for p in holder.watched_folders() if p.is_dir()]
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


def files_signature(paths: Paths) -> tuple[tuple[str, int, int, int], ...]:
    """What stat says about the config file and every policy file (symlinks followed)."""
    out = []
    for path in [paths.config_file, *policy_files(paths.policies_dir)]:
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


async def poll(holder: PolicyHolder, interval: float = 2.0) -> None:
    """A safety net under the file watcher: reload when stat sees a change it missed.

    inotify misses changes on network filesystems and the symlink swaps Kubernetes uses to
    update a mounted ConfigMap; a stat of a handful of files every two seconds costs nothing.
    """
    last = await asyncio.to_thread(files_signature, holder.current.paths)
    while True:
        await asyncio.sleep(interval)
        current = await asyncio.to_thread(files_signature, holder.current.paths)
        if current != last:
            last = current
            await holder.reload()
