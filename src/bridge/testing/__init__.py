"""Tooling for tests, benchmarks and local development, kept apart from the service itself.

- ``devserver``: builds (once) and runs a real livekit-server on loopback, mints dev tokens;
  ``livekit-bridge --dev-server`` and ``python -m bridge.testing.devserver`` use it.
- ``synth`` / ``analysis``: test signals (tones, WAV/MP3 encoding) and their measurement (FFT peak,
  level, onset), shared by tests, benches and the TypeScript client's room driver.
- ``cloud``: a fake cloud's StreamAudio call (records what the bridge sends, how the call ended).

Nothing in the running bridge imports this package, except ``--dev-server`` on request.
"""
