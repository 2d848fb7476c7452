"""``python -m bench.handover``: the hand-over gap of a pool behind HAProxy.

How much of a user's mic audio never reaches the cloud when the user's session has to move: a bridge
killed (SIGKILL), a bridge drained (SIGTERM), a bridge added while the proxy has lost its stick table
(scale-up: the ring moves some users, whose next call finds NOT_FOUND and re-joins make-before-break).
The pool is bridge.testing.pool's: real bridges, the shipped deploy/haproxy/haproxy.cfg, the real
LiveKit server, phones sending a numbered packet every 100 ms and the TypeScript client as the cloud.
"""
