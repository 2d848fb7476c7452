"""Access control: bearer token, TLS, mutual TLS; and the loopback-only default."""

from __future__ import annotations

import io
import logging
import ssl
from pathlib import Path

import pytest
import trio
import trustme
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest as GrpcHealthCheckRequest
from trio_asyncio import aio_as_trio

from bridge import serve
from bridge._gen.mentra.livekit.bridge import HealthCheckRequest, LiveKitBridgeStub
from bridge.config import BridgeConfig, ConfigError
from bridge.logs import configure_logging
from conftest import make_config

pytestmark = pytest.mark.livekit

TOKEN = "s3cret-token-for-tests-0123456789"


async def _health(channel: Channel, metadata: dict[str, str] | None = None) -> int:
    reply = await LiveKitBridgeStub(channel).health_check(HealthCheckRequest(), metadata=metadata)
    return int(reply.status)


async def _grpc_health(channel: Channel) -> int:
    return int((await HealthStub(channel).Check(GrpcHealthCheckRequest())).status)


async def _channel(port: int, context: ssl.SSLContext | None = None) -> Channel:
    return Channel("127.0.0.1", port, ssl=context)


async def _status_of(call, *args):  # type: ignore[no-untyped-def]
    try:
        await aio_as_trio(call)(*args)
    except GRPCError as err:
        return err.status
    except (ssl.SSLError, OSError, StreamTerminatedError) as err:  # refused at the TLS layer
        return type(err).__name__
    return Status.OK


async def test_a_bearer_token_is_required_on_every_call_but_the_standard_health_check(  # type: ignore[no-untyped-def]
    aio_loop, livekit_server, caplog
) -> None:
    """Also: the token is never logged, checked with every logger at DEBUG, both in the records the
    bridge's own code makes and in what the bridge's log handler writes (which redacts what third
    parties log), and hpack, which logs every header it decodes at DEBUG, is kept quiet."""
    caplog.set_level(logging.DEBUG)  # the root logger at DEBUG: a token logged at DEBUG fails this
    root, written, raw = logging.getLogger(), io.StringIO(), _RawMessages()
    saved_handlers = root.handlers[:]
    configure_logging("DEBUG")  # the bridge's own handler, as `python -m bridge` installs it ...
    root.handlers[0].setStream(written)  # type: ignore[attr-defined]  # ... writing here
    root.handlers.insert(0, raw)  # before the bridge's handler, whose filter redacts records in place
    try:
        logging.getLogger("bridge.probe").debug("a DEBUG record")  # proves DEBUG records are captured
        await _token_calls(livekit_server)
    finally:
        root.handlers[:] = saved_handlers
    ours = [(name, message) for name, level, message in raw.records if name.split(".")[0] == "bridge"]
    assert ("bridge.probe", "a DEBUG record") in ours, "DEBUG records not captured"
    assert not [m for _, m in ours if TOKEN in m], "the bridge's own code logged the token"
    output = written.getvalue()
    assert " DEBUG bridge.probe: a DEBUG record" in output, "the bridge's handler did not write DEBUG records"
    assert TOKEN not in output
    # hpack logs decoded headers (the authorization one included) at DEBUG: kept out at the source.
    assert not [name for name, _, _ in raw.records if name.startswith("hpack")]


class _RawMessages(logging.Handler):
    """Every record's message as it was logged, before any filter or formatter touched it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))


async def _token_calls(livekit_server) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            state = await nursery.start(serve, make_config(livekit_server, auth_token=TOKEN))
            channel = await aio_as_trio(_channel)(int(state.address.rsplit(":", 1)[1]))
            assert await _status_of(_health, channel) is Status.UNAUTHENTICATED
            assert (
                await _status_of(_health, channel, {"authorization": "Bearer wrong"})
                is Status.UNAUTHENTICATED
            )
            assert await _status_of(_health, channel, {"authorization": TOKEN}) is Status.UNAUTHENTICATED
            assert await _status_of(_health, channel, {"authorization": f"Bearer {TOKEN}"}) is Status.OK
            assert await _status_of(_grpc_health, channel) is Status.OK  # probes need no token
            rejected = state.metrics.auth_rejected.labels("/mentra.livekit.bridge.LiveKitBridge/HealthCheck")
            assert rejected._value.get() == 3
            channel.close()
            state.request_shutdown()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("cloud.test")
    paths = {name: folder / f"{name}.pem" for name in ("ca", "server", "server_key", "client")}
    ca.cert_pem.write_to_path(paths["ca"])
    server.cert_chain_pems[0].write_to_path(paths["server"])
    server.private_key_pem.write_to_path(paths["server_key"])
    client.private_key_and_cert_chain_pem.write_to_path(paths["client"])
    return paths


def client_context(pki: dict[str, Path], with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    context.set_alpn_protocols(["h2"])
    if with_cert:
        context.load_cert_chain(str(pki["client"]))
    return context


@pytest.mark.parametrize("mutual", [False, True])
async def test_tls_and_mutual_tls(aio_loop, livekit_server, pki, mutual: bool) -> None:  # type: ignore[no-untyped-def]
    overrides: dict[str, object] = {"tls_cert": str(pki["server"]), "tls_key": str(pki["server_key"])}
    if mutual:
        overrides["tls_client_ca"] = str(pki["ca"])
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            state = await nursery.start(serve, make_config(livekit_server, **overrides))
            port = int(state.address.rsplit(":", 1)[1])
            for context, expected in (
                (client_context(pki, with_cert=True), Status.OK),
                (client_context(pki, with_cert=False), "refused" if mutual else Status.OK),
                (None, "refused"),  # plaintext against a TLS port
            ):
                channel = await aio_as_trio(_channel)(port, context)
                outcome: object = "no answer within 5 s"  # never the previous iteration's outcome
                with trio.move_on_after(5):
                    outcome = await _status_of(_health, channel)
                channel.close()
                if expected == "refused":  # refused at the TLS layer: an error, not a hang or an answer
                    assert isinstance(outcome, str) and outcome != "no answer within 5 s", (mutual, outcome)
                else:
                    assert outcome is expected, (mutual, context, outcome)
            state.request_shutdown()


@pytest.mark.parametrize(
    ("overrides", "protection"),
    [({}, "no TLS and no token: loopback only"), ({"auth_token": TOKEN}, "bearer token")],
)
async def test_the_start_up_line_names_the_protection_in_force(  # type: ignore[no-untyped-def]
    aio_loop, livekit_server, caplog, overrides: dict[str, object], protection: str
) -> None:
    caplog.set_level(logging.INFO)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            state = await nursery.start(serve, make_config(livekit_server, **overrides))
            state.request_shutdown()
    lines = [r.getMessage() for r in caplog.records if " listening on " in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"listening on {state.address} ({protection});" in lines[0], lines[0]
    assert TOKEN not in lines[0]


def test_a_public_bind_address_without_tls_or_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a loopback address"):
        BridgeConfig.from_env({"BRIDGE_HOST": "0.0.0.0"})
    assert BridgeConfig.from_env({"BRIDGE_HOST": "0.0.0.0", "BRIDGE_AUTH_TOKEN": TOKEN}).host == "0.0.0.0"
    assert BridgeConfig.from_env({"BRIDGE_HOST": "::1"}).host == "::1"
    assert TOKEN not in repr(BridgeConfig.from_env({"BRIDGE_AUTH_TOKEN": TOKEN}))


def test_the_token_can_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    assert BridgeConfig.from_env({"BRIDGE_AUTH_TOKEN_FILE": str(path)}).auth_token == TOKEN
    with pytest.raises(ConfigError, match="cannot be read"):
        BridgeConfig.from_env({"BRIDGE_AUTH_TOKEN_FILE": str(tmp_path / "missing")})
