"""Count XLA compilations, from JAX's own monitoring events (not estimated from shapes)."""

from __future__ import annotations

import threading

__all__ = ["CompilationCounter"]

_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompilationCounter:
    """Counts every backend compilation in this process from the moment it is created."""

    _lock = threading.Lock()
    _count = 0
    _installed = False

    def __init__(self) -> None:
        with CompilationCounter._lock:
            if not CompilationCounter._installed:
                import jax.monitoring

                jax.monitoring.register_event_duration_secs_listener(CompilationCounter._on_event)
                CompilationCounter._installed = True
            self._start = CompilationCounter._count

    @staticmethod
    def _on_event(event: str, duration: float, **_: object) -> None:
        if event == _BACKEND_COMPILE_EVENT:
            with CompilationCounter._lock:
                CompilationCounter._count += 1

    @property
    def count(self) -> int:
        return CompilationCounter._count - self._start
