"""Commands from the event loop to a worker's command socket (``streamer.runtime.commands``).

Each command is a blocking socket exchange, so it runs in a thread; at most ``slots`` run at
once and a request waits up to ``wait_s`` for a place, then gets ``Unavailable`` (503). A place
is given back when its command is done, even if the HTTP request that sent it was abandoned
first: the worker is still busy with it until then.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streamer.runtime import commands
from streamer.runtime.commands import Unavailable


class CommandQueue:
    def __init__(
        self, socket_path: str, slots: int, wait_s: float, busy: str, **request_options: Any
    ) -> None:
        self.socket_path = socket_path
        self._places = asyncio.Semaphore(slots)
        self._wait_s = wait_s
        self._busy = busy  # what a request that waited too long is told
        self._request_options = request_options  # e.g. the worker's name, a longer line limit

    async def send(self, name: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
        """The worker's answer to ``name``; raises CommandError (Unavailable also when the
        commands ahead of this one took too long)."""
        try:
            async with asyncio.timeout(self._wait_s):
                await self._places.acquire()
        except TimeoutError:
            raise Unavailable(f"{self._busy} (waited {self._wait_s:g} s): try again") from None
        try:
            running = asyncio.ensure_future(
                asyncio.to_thread(
                    commands.request, self.socket_path, name, timeout_s, **self._request_options, **fields
                )
            )
        except BaseException:
            self._places.release()
            raise
        running.add_done_callback(lambda _: self._places.release())
        return await asyncio.shield(running)
