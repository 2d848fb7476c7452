"""Soak: sessions join and leave continuously for a bounded time; RSS and task counts over time.

    python -m bench.soak [--seconds 600] [--sessions 8] [--sample-every 5] [--idle-ttl 3]
                          [--kinds leave,play_stop,...] [--floor]

The bridge runs as a subprocess (``python -m bridge``, short idle TTL, PlayAudio allowed to fetch from
127.0.0.1). This process is the driver: K phones (real participants, one room each, sending a lossy
100 ms packet every 100 ms for the whole run), a loopback HTTP server with two short WAVs, and a cloud
client that keeps K session slots churning. Each slot runs cycles of one kind after another:

- ``leave``: JoinRoom, StreamAudio (room audio arrives; 1 s of PCM streamed back on track 0), LeaveRoom;
- ``drop_stream``: JoinRoom, StreamAudio, the client drops the call (RST_STREAM), the idle TTL reaps;
- ``replace``: JoinRoom, StreamAudio, JoinRoom again for the same user (the old stream ends), a new
  StreamAudio, LeaveRoom;
- ``play_complete``: JoinRoom, StreamAudio, PlayAudio of a 0.5 s WAV until COMPLETED, LeaveRoom;
- ``play_stop``: JoinRoom, PlayAudio of a 3 s WAV, StopAudio after STARTED, LeaveRoom;
- ``play_leave``: JoinRoom, StreamAudio, PlayAudio of a 3 s WAV, LeaveRoom while it plays.

Every ``--sample-every`` seconds it samples the bridge's RSS (/proc), CPU, HealthCheck's
``trio_tasks``/``asyncio_tasks``, and from its /metrics the heap split (Python blocks, C heap in
use / free / mmap: bridge.memory) and the callback backlog. ``--kinds`` limits the cycles to some
kinds; ``--floor`` then runs the same number of slots on bare ``rtc.Room``s (bench.soak.floor) for
as long and prints both sides' fits. After the deadline every slot finishes its cycle, every session is
gone, and the bridge's task counts must equal the idle counts (taken before the first session)
exactly. It prints the samples, least-squares growth of RSS (MiB/hour) and of the task counts
(per hour) over the samples after the warm-up, and the verdict; the exit code is 1 when tasks did not
return to idle or a cycle failed.

The package: ``driver`` (phones, the media server, the cloud client's cycles, the floor process, the
order of a run: ``run_soak``), ``measure`` (what is sampled and how, the fits and the verdict),
``report`` (what is printed and drawn), ``floor`` (the bare-SDK process); this package's
``__main__`` runs it from the command line.
"""
