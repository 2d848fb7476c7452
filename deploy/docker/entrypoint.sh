#!/bin/sh
# shellcheck shell=dash
# (ulimit -H/-S/-n are not POSIX, but dash, Debian's /bin/sh in the image, and bash have them.)
# The image's entrypoint: raise the open-file limit, then become `livekit-bridge` (exec: the bridge is
# PID 1 and receives SIGTERM itself; it drains its sessions and exits 0).
#
# Each session holds ~3 file descriptors at steady state, up to 8 with audio fetches in flight
# (bridge.capacity.FDS_PER_SESSION sizes 16 for bursts of joins), and the bridge raises its own soft
# limit too; the entrypoint does it first so a low limit shows in the warning below. Kubernetes has
# no per-pod ulimit setting; a process may raise its soft limit up to the hard limit without privileges, so this does.
# BRIDGE_NOFILE (default 65536) is the wanted soft limit, capped at the hard limit.
set -eu

want=${BRIDGE_NOFILE:-65536}
case $want in
    '' | *[!0-9]*)
        echo "livekit-bridge: BRIDGE_NOFILE=$want is not a number" >&2
        exit 2
        ;;
esac
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
    want=$hard
fi
soft=$(ulimit -Sn)
if [ "$soft" = unlimited ] || [ "$soft" -lt "$want" ]; then
    ulimit -Sn "$want"
fi
if [ "$(ulimit -Sn)" != unlimited ] && [ "$(ulimit -Sn)" -lt 4096 ]; then
    echo "livekit-bridge: warning: open-file limit $(ulimit -Sn) (hard $hard) holds only ~$(($(ulimit -Sn) / 16)) sessions" >&2
fi
exec livekit-bridge "$@"
