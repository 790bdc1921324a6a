"""The runtime's verdict stream, fanned out to every open panel page.

Usage::

    bridge = FeedBridge("tcp://10.0.0.5:5556").start()
    queue = bridge.subscribe(asyncio.get_running_loop())   # asyncio.Queue of PanelMessage models
    message = await queue.get()                            # first: a StateMessage, then events
    bridge.unsubscribe(queue)
    bridge.stop()

One thread owns the SUB socket (a ``VerdictWatcher``: seq gaps, restarts, missed heartbeats) and the
``LineBoard``; pages get messages through their event loop. A page that reads too slowly is not allowed
to hold memory: its queue is emptied and it gets a fresh ``state`` snapshot instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import zmq

from lineguard.panel.board import LineBoard
from lineguard.runtime.clients.watch import VerdictWatcher
from lineguard.runtime.contract import PanelMessage, StateMessage
from lineguard.runtime.security.curve import CurveClientConfig

log = logging.getLogger(__name__)

PAGE_QUEUE = 256  # messages waiting for one page before it is resynchronised with a snapshot
UNHEALTHY_AFTER = 3  # relays failed in a row before /healthz says 503
MAX_RESTART_PAUSE_S = 30.0


class FeedBridge:
    def __init__(self, verdicts: str, board: LineBoard | None = None, context: zmq.Context | None = None,
                 curve: CurveClientConfig | None = None) -> None:
        self.verdicts = verdicts
        self.curve = curve
        self.board = board or LineBoard()
        self.context = context or zmq.Context.instance()
        self._lock = threading.Lock()
        self._pages: dict[asyncio.Queue[PanelMessage], asyncio.AbstractEventLoop] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0  # relays that ended on an error and were started over
        self.consecutive_failures = 0  # of them since the last events relayed

    def start(self) -> FeedBridge:
        self._thread = threading.Thread(target=self._run, name="panel-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def snapshot(self) -> StateMessage:
        with self._lock:
            return self.board.snapshot()

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue[PanelMessage]:
        queue: asyncio.Queue[PanelMessage] = asyncio.Queue(PAGE_QUEUE)
        with self._lock:
            queue.put_nowait(self.board.snapshot())
            self._pages[queue] = loop
        return queue

    def unsubscribe(self, queue: asyncio.Queue[PanelMessage]) -> None:
        with self._lock:
            self._pages.pop(queue, None)

    @property
    def alive(self) -> bool:
        """The feed's thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def healthy(self) -> bool:
        """The thread runs and is relaying (the panel's /healthz): not failing over and over."""
        return self.alive and self.consecutive_failures < UNHEALTHY_AFTER

    def _run(self) -> None:
        """Relay until stopped; a failure (a socket error, a bug on one event) is logged and the feed starts over
        on a fresh subscription after a growing pause, rather than leaving the pages frozen behind a panel that
        still answers."""
        while not self._stop.is_set():
            try:
                self._relay()
            except Exception:
                self.failures += 1
                self.consecutive_failures += 1
                pause = min(MAX_RESTART_PAUSE_S, 2.0 ** (self.consecutive_failures - 1))
                if self.consecutive_failures == 1:
                    log.exception("panel feed from %s failed; subscribing again in %.0f s", self.verdicts, pause)
                else:  # the traceback once, not every pause
                    log.warning("panel feed from %s failed again (%d in a row); next try in %.0f s", self.verdicts,
                                self.consecutive_failures, pause)
                self._stop.wait(pause)

    def _relay(self) -> None:
        with VerdictWatcher(self.verdicts, prefix="verdict.", context=self.context, curve=self.curve) as watcher:
            if self.failures:  # pages missed what came while the feed was down: a fresh state for each
                self._publish([self.snapshot()])
            while not self._stop.is_set():
                for event in watcher.poll(0.2):
                    with self._lock:
                        messages = self.board.apply(event)
                    self._publish(messages)
                self.consecutive_failures = 0

    def _publish(self, messages: list[PanelMessage]) -> None:
        with self._lock:
            pages = list(self._pages.items())
        for message in messages:
            for queue, loop in pages:
                try:
                    loop.call_soon_threadsafe(self._offer, queue, message)
                except RuntimeError:  # that page's loop has closed
                    self.unsubscribe(queue)

    def _offer(self, queue: asyncio.Queue[PanelMessage], message: PanelMessage) -> None:
        """On the page's loop: queue a message, or resynchronise a page that fell behind."""
        if queue.full():
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(self.snapshot())
            return
        queue.put_nowait(message)
