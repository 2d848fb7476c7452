"""livekit-bridge: joins LiveKit rooms for a cloud backend and moves real-time audio over gRPC.

Layers: ``audio`` (pure numpy/soxr) and ``livekit_io`` (the only users of the SDK) at the bottom;
``session`` and ``registry`` (Trio task trees) above them; ``rpc`` (grpclib handlers) and ``app``
(the root of the task tree) on top. ``_gen`` is generated from proto/ and never edited.
"""

from .app import BridgeState, serve
from .config import BridgeConfig

__all__ = ["BridgeConfig", "BridgeState", "serve"]
