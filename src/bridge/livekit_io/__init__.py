"""Everything that touches the ``livekit`` SDK lives in this package (and only here).

All functions and methods here are asyncio coroutines or plain callbacks: they run on the asyncio
side of the process (trio-asyncio's loop), where the SDK binds its objects. Trio code reaches them
through ``trio_asyncio.aio_as_trio`` once per long-lived task, never once per frame.
"""
