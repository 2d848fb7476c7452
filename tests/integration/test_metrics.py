"""The Prometheus endpoint reports what really happened, under the names dashboards expect."""

from __future__ import annotations

import platform
from importlib import metadata

import numpy as np
import pytest
import trio
from trio_asyncio import aio_as_trio

from bridge._gen.mentra.livekit.bridge import JoinRoomRequest, LeaveRoomRequest, PlayAudioRequest
from bridge.testing.cloud import CloudStream
from bridge.testing.synth import encode_wav, tone
from conftest import running_bridge
from support import participants
from support.flows import join, new_room, wait_until
from support.media_server import MediaServer
from support.playback import PlaybackCall
from support.scrape import free_port, scrape

pytestmark = pytest.mark.livekit


async def test_metrics_count_packets_losses_rpcs_and_playbacks(aio_loop, livekit_server) -> None:  # type: ignore[no-untyped-def]
    media = MediaServer()
    port = free_port()
    try:
        with trio.fail_after(40):
            async with running_bridge(
                livekit_server, metrics_port=port, fetch_allow_hosts="127.0.0.1"
            ) as bridge:
                assert bridge.state.metrics_port == port
                user, room = "metrics-user", new_room()
                phone = await aio_as_trio(participants.connect)(
                    livekit_server.url, livekit_server.token(user, room)
                )
                assert (await join(bridge, user, room)).success
                bad = await aio_as_trio(bridge.stub.join_room)(
                    JoinRoomRequest(user_id="x", token="bad", room_name=room)
                )
                assert not bad.success
                cloud = CloudStream(bridge.channel, user)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(aio_as_trio(cloud.run))
                    await cloud.opened.wait()
                    await aio_as_trio(participants.wait_for_participant)(phone, f"bridge-{user}")
                    packets = [bytes([s]) + np.zeros(1600, np.int16).tobytes() for s in (0, 1, 2, 5, 6)]
                    await aio_as_trio(participants.send_packets)(phone, packets, 0.02)
                    await wait_until(lambda: len(cloud.received) == 5, what="packets at the cloud")

                    url = media.add("/m.wav", encode_wav(tone(440, 0.3, 16000), 16000))
                    call = PlaybackCall(
                        bridge.stub, PlayAudioRequest(user_id=user, request_id="m1", audio_url=url)
                    )
                    await aio_as_trio(call.run)()

                    live = await scrape(port)
                    assert live["livekit_bridge_sessions"] == 1 and live["livekit_bridge_streams"] == 1
                    assert live["livekit_bridge_data_packets_sequence_total{outcome=lost}"] == 2
                    assert live["livekit_bridge_frames_total{direction=room_to_cloud,stage=sent}"] == 5
                    assert live["livekit_bridge_pcm_bytes_total{direction=room_to_cloud_sent}"] == 5 * 3200
                    assert live["livekit_bridge_session_trio_tasks{stat=max}"] >= 3
                    assert live["livekit_bridge_joins_total{result=ok}"] == 1
                    assert live["livekit_bridge_joins_total{result=failed}"] == 1
                    assert live["livekit_bridge_rpc_duration_seconds_count{method=JoinRoom}"] == 2
                    assert live["server_playback_started_total"] == 1
                    assert live["server_playback_completed_total"] == 1
                    assert live["server_playback_first_frame_latency_ms_count"] == 1
                    assert 250 <= live["server_playback_duration_ms_sum"] <= 350
                    # The heap split (bridge.memory): a live bridge holds Python objects and C heap.
                    assert live["livekit_bridge_python_allocated_blocks"] > 100_000
                    assert live["livekit_bridge_c_heap_bytes{kind=in_use}"] > 2**20
                    assert live["livekit_bridge_c_heap_bytes{kind=free}"] >= 0
                    # The standard process families, build info and the CPU split by thread group.
                    assert live["process_resident_memory_bytes"] > 50 * 2**20
                    assert live["process_open_fds"] > 10 and live["process_cpu_seconds_total"] > 0
                    build = (
                        f"livekit_sdk={metadata.version('livekit')},python={platform.python_version()},"
                        f"version={metadata.version('livekit-bridge')}"
                    )
                    assert live[f"livekit_bridge_build_info{{{build}}}"] == 1
                    assert live["livekit_bridge_threads{group=tokio}"] >= 1
                    assert live["livekit_bridge_threads{group=python_main}"] == 1
                    assert live["livekit_bridge_thread_cpu_seconds_total{group=python_main}"] > 0
                    assert live["livekit_bridge_thread_cpu_seconds_total{group=tokio}"] > 0
                    # Work waiting to run: every queue is reported (an idle test bridge keeps up).
                    for queue in ("trio_run_sync_soon", "asyncio_handles", "room_events"):
                        assert 0 <= live[f"livekit_bridge_callback_backlog{{queue={queue}}}"] < 1000

                    await aio_as_trio(bridge.stub.leave_room)(LeaveRoomRequest(user_id=user))
                after = await scrape(port)
                assert after["livekit_bridge_sessions"] == 0
                # Counters of ended sessions are kept: they never go backwards.
                assert after["livekit_bridge_data_packets_sequence_total{outcome=lost}"] == 2
                assert after["livekit_bridge_sessions_closed_total{reason=left}"] == 1
                assert after["livekit_bridge_rpcs_total{code=OK,method=LeaveRoom}"] == 1
                await aio_as_trio(participants.disconnect)(phone)
    finally:
        media.close()
