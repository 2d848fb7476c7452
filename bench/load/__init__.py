"""Load benchmark: N phones -> bridge -> cloud, beside a bare Python SDK floor and a bare Go receiver.

    python -m bench.load --sweep 1,5,10 --seconds 20 --talkback 0.25 --phones go --out bench/results/

Processes (all on 127.0.0.1; every one is killed when this process ends, Ctrl-C included):

- a LiveKit server (bridge.testing.devserver.LocalLiveKitServer), pinned to the LOAD core
  (``--server-core any``: not pinned);
- the phones, pinned to the LOAD core: N real participants, each sending a lossy data packet every
  100 ms (1 sequence byte + 3200 bytes with a send timestamp). ``--phones go`` (default): the Go
  generator (bench/go ``phones``, server-sdk-go) sends, and a Python process (bench.load.workers
  phones) joins only the talkback rooms to listen for tone bursts; ``--phones python``: one Python
  process does both;
- this process, pinned to the LOAD core too: the cloud client (grpclib, one StreamAudio per session;
  a share of them streams 100 ms chunks back, a tone burst once a second), and the orchestration;
- the bridge (``python -m bridge``), pinned to the BRIDGE core, measured first;
- then the Python floor (bench.load.workers floor), pinned to the BRIDGE core: N plain ``rtc.Room``s
  joined to the same rooms, with a ``data_received`` handler that only reads the timestamp, and for
  talkback rooms one published track fed the same tone schedule directly;
- then the Go receiver (bench/go ``receiver``, server-sdk-go on pion), pinned to the BRIDGE core: the
  same rooms and the same handler, no talkback.

For each N the three sides run one after the other against the same, still-sending phones, each over
an equal window of steady traffic; every figure of the bridge gets a ratio to the Python floor and
one to the Go receiver. bench/README.md says what every number means.

The package: ``driver`` (the phones, the cloud client, the order of a point), ``measure`` (what is
sampled and how), ``report`` (ratios, warnings, tables, the PNG), ``traffic`` (packets and talkback
schedule, shared with the worker processes), ``workers`` (the Python phones and floor processes),
``gobuild`` (builds the Go workers), ``threads`` (CPU by thread group); this package's ``__main__``
runs the sweep.
"""
