"""What the Dockerfile promises, read from the file (images are not built on these machines; the
install step it runs is exercised in test_deploy_install.py and hadolint lints it in `nox -s deploy`)."""

from __future__ import annotations

import fnmatch
import re

from deploy_support import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def test_two_stages_on_the_same_slim_python_311_base() -> None:
    default = re.search(r"^ARG PYTHON_IMAGE=(\S+)", DOCKERFILE, re.M)
    assert default is not None
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?(@sha256:[0-9a-f]{64})?", default.group(1))
    stages = _stages()
    assert len(stages) == 2
    assert all(stage[0][1].split()[0] == "${PYTHON_IMAGE}" for stage in stages)


def test_the_build_stage_runs_the_install_script_ci_tests() -> None:
    build = dict((k, v) for k, v in _stages()[0] if k == "RUN")
    assert build["RUN"] == "sh deploy/docker/install.sh /opt/livekit-bridge /src"


def test_the_final_stage_installs_nothing_and_runs_unprivileged() -> None:
    final = _stages()[1]
    keywords = [k for k, _ in final]
    runs = [v for k, v in final if k == "RUN"]
    assert len(runs) == 1 and runs[0].startswith("groupadd"), runs  # only the user is created
    assert not re.search(r"apt-get|pip |gcc|build-essential", " ".join(runs))
    user = [v for k, v in final if k == "USER"]
    assert user == ["10001:10001"]  # numeric, so Kubernetes' runAsNonRoot can check it
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    copies_from_build = [v for k, v in final if k == "COPY" and v.startswith("--from=build")]
    assert copies_from_build == ["--from=build /opt/livekit-bridge /opt/livekit-bridge"]


def test_healthcheck_and_entrypoint_point_at_what_is_copied() -> None:
    final = _stages()[1]
    copied = {v.split()[-1] for k, v in final if k == "COPY"}
    health = next(v for k, v in final if k == "HEALTHCHECK")
    assert "/opt/livekit-bridge/healthcheck.py" in health and "/opt/livekit-bridge/healthcheck.py" in copied
    entry = next(v for k, v in final if k == "ENTRYPOINT")
    assert '"/usr/local/bin/livekit-bridge-entrypoint"' in entry
    assert "/usr/local/bin/livekit-bridge-entrypoint" in copied


def _excluded(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used here: the last matching pattern wins."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            excluded = not negate
    return excluded


def test_dockerignore_lets_in_everything_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for keyword, rest in _instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            sources += [word for word in rest.split()[:-1] if not word.startswith("--")]
    assert sources
    for source in sources:
        source = source.rstrip("/")
        assert (REPO / source).exists(), source
        files = (
            [source]
            if (REPO / source).is_file()
            else [
                str(p.relative_to(REPO))
                for p in (REPO / source).rglob("*.py")
                if "__pycache__" not in p.parts
            ]
        )
        for path in files:
            assert not _excluded(path, patterns), f"{path} is copied but .dockerignore excludes it"
    assert _excluded("tests/conftest.py", patterns) and _excluded(".git/config", patterns)
