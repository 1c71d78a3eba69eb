"""Independent jobs (walk-forward blocks, optimisation trials, sweep points) on an existing engine.

``Jobs(workers=1)`` runs them one after the other in this process; ``workers > 1`` on a local
process pool (``concurrent.futures``, spawned workers: no forked torch or threads); ``ray=`` on
Ray (``auto``: a local Ray started here with ``workers`` CPUs; anything else: the address of a
running cluster). Results come back in submission order whatever finished first, so a
distributed run equals the serial one when every job is deterministic (each job is seeded).

A job that raises or whose worker dies is submitted once more and the retry is reported
(:attr:`Jobs.retried`); a second failure raises :class:`JobsFailed` naming every job that failed
twice, never a silent gap. A :class:`~bot.errors.BotError` (the user's input) is deterministic:
it is raised at once, not retried.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from bot.errors import BotError, ConfigError

RETRIES = 1


class JobsFailed(BotError):
    """Jobs that failed on their retry too."""


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class Jobs:
    """Where a command's independent jobs run; a context manager (the pool or Ray is shut down on exit)."""

    def __init__(self, workers: int = 1, ray: str | None = None) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.ray_address = ray
        self.retried: list[str] = []
        self._pool: ProcessPoolExecutor | None = None
        self._ray: Any = None
        self._order = _InOrder(None)
        self._own_ray = False

    @property
    def engine(self) -> str:
        if self.ray_address is not None:
            return f"ray ({self.ray_address})"
        return "serial" if self.workers == 1 else f"process pool ({self.workers} workers)"

    def __enter__(self) -> Jobs:
        if self.ray_address is not None:
            self._ray, self._own_ray = _start_ray(self.ray_address, self.workers)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._ray is not None and self._own_ray:
            self._ray.shutdown()
        self._ray = None

    def map(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], names: Sequence[str],
            on_result: Callable[[Any], None] | None = None) -> list[Any]:
        """``[fn(*args) for args in jobs]``, distributed; ``names`` say which job a report is about.
        ``on_result`` sees each result in submission order as soon as it and every earlier one are
        in (serially: right after its job; an exception it raises stops the map)."""
        if not jobs:
            return []
        self._order = _InOrder(on_result)
        if self._ray is not None:
            return self._map_ray(fn, jobs, names)
        if self.workers == 1:
            return self._map_serial(fn, jobs, names)
        return self._map_pool(fn, jobs, names)

    def _failed(self, name: str, exc: BaseException, attempts: dict[int, int], i: int,
                failures: list[str]) -> bool:
        """Count a failure of job ``i``; True when it should run again."""
        if isinstance(exc, BotError):
            raise exc
        attempts[i] = attempts.get(i, 0) + 1
        if attempts[i] <= RETRIES:
            self.retried.append(f"{name}: retried once after {_why(exc)}")
            return True
        failures.append(f"{name}: {_why(exc)}")
        return False

    def _raise(self, failures: list[str]) -> None:
        if failures:
            raise JobsFailed(f"{len(failures)} job(s) failed twice: " + "; ".join(failures))

    def _map_serial(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], names: Sequence[str]) -> list[Any]:
        out: list[Any] = []
        attempts: dict[int, int] = {}
        failures: list[str] = []
        for i, args in enumerate(jobs):
            while True:
                try:
                    result = fn(*args)
                except Exception as exc:  # noqa: BLE001 - any failure is retried once, then reported
                    if not self._failed(names[i], exc, attempts, i, failures):
                        out.append(None)
                        break
                    continue
                out.append(result)
                self._order.add(i, result)
                break
        self._raise(failures)
        return out

    def _map_pool(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], names: Sequence[str]) -> list[Any]:
        results: dict[int, Any] = {}
        attempts: dict[int, int] = {}
        failures: list[str] = []
        todo = list(range(len(jobs)))
        while todo:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            running: dict[Future[Any], int] = {self._pool.submit(fn, *jobs[i]): i for i in todo}
            todo = []
            broken = False
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    i = running.pop(f)
                    try:
                        results[i] = f.result()
                        self._order.add(i, results[i])
                    except BrokenProcessPool as exc:  # a worker died: every job it took down runs again
                        broken = True
                        if self._failed(names[i], exc, attempts, i, failures):
                            todo.append(i)
                    except Exception as exc:  # noqa: BLE001
                        if self._failed(names[i], exc, attempts, i, failures):
                            todo.append(i)
            if broken:
                self._pool.shutdown(wait=True)
                self._pool = None
            todo.sort()
        self._raise(failures)
        return [results[i] for i in range(len(jobs))]

    def _map_ray(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], names: Sequence[str]) -> list[Any]:
        ray = self._ray
        remote = ray.remote(max_retries=0)(fn)  # the one retry is ours, so that it is reported
        results: dict[int, Any] = {}
        attempts: dict[int, int] = {}
        failures: list[str] = []
        running = {remote.remote(*args): i for i, args in enumerate(jobs)}
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                i = running.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                    if self._failed(names[i], cause, attempts, i, failures):
                        running[remote.remote(*jobs[i])] = i
                except ray.exceptions.RayError as exc:  # the worker died
                    if self._failed(names[i], exc, attempts, i, failures):
                        running[remote.remote(*jobs[i])] = i
                else:
                    self._order.add(i, results[i])
        self._raise(failures)
        return [results[i] for i in range(len(jobs))]


class _InOrder:
    """Hands results to a callback in submission order, holding back those that came early."""

    def __init__(self, fn: Callable[[Any], None] | None) -> None:
        self.fn = fn
        self.next = 0
        self.held: dict[int, Any] = {}

    def add(self, i: int, result: Any) -> None:
        if self.fn is None:
            return
        self.held[i] = result
        while self.next in self.held:
            self.fn(self.held.pop(self.next))
            self.next += 1


def _start_ray(address: str, workers: int) -> tuple[Any, bool]:
    """Ray, connected; and whether it was started here (then shut down when the jobs are done).
    A Ray this process already joined is used as it is."""
    try:
        import ray  # noqa: PLC0415 - optional extra
    except ModuleNotFoundError:
        raise ConfigError("--ray needs Ray: pip install -e '.[ray]'") from None
    if ray.is_initialized():
        return ray, False
    if not address:
        raise ConfigError("--ray: give auto or a cluster address (ray://host:10001 or host:6379)")
    try:
        if address == "auto":  # a local Ray of our own, never an existing cluster picked up by accident
            ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"--ray {address}: cannot start or reach Ray: {_why(exc)}") from None
    return ray, True
