"""The embedded broker's fetch-wait workaround reaches the consumers Faust builds."""

from __future__ import annotations

import asyncio

import faust

from streamproc.tansu_compat import FETCH_WAIT_MS, install_faust_fetch_wait


def test_faust_consumers_wait_briefly_per_fetch_once_installed():
    install_faust_fetch_wait()

    async def waits() -> tuple[int, int]:
        app = faust.App("t-fetch-wait", broker="kafka://127.0.0.1:1", store="memory://")
        thread = app.consumer._thread
        worker, client = thread._create_worker_consumer(app.transport), thread._create_client_consumer(app.transport)
        try:
            return worker._fetch_max_wait_ms, client._fetch_max_wait_ms
        finally:
            await worker.stop()
            await client.stop()

    assert asyncio.run(waits()) == (FETCH_WAIT_MS, FETCH_WAIT_MS)  # Faust's own value is 1,500
