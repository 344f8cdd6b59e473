"""docker-compose.yml and the Dockerfile: every profile validates with `docker-compose
config`, every service has a healthcheck, the app services set only settings the app reads,
the Dapr sidecar matches the API and the Kubernetes manifests, and no secret is inlined."""

from __future__ import annotations

import re
from typing import Any

import pytest

from backend.config import Settings
from tests.deploy.tools import DEPLOY, ROOT, compose_config, load_yaml

SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)
APP_IMAGE = "todo-assistant"
APP_ID = "todo-assistant-api"
PROFILES = [(), ("events",), ("workers",), ("events", "workers")]
SECRET_SETTINGS = frozenset(
    {
        "AUTH_SECRET",
        "AUTH_JWKS_URL",
        "AUTH_ISSUER",
        "AUTH_AUDIENCE",
        "MCP_TOKEN_SECRET",
        "OPENAI_API_KEY",
        "DAPR_API_TOKEN",
        "DAPR_APP_API_TOKEN",
    }
)


def app_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = config["services"]
    return {name: s for name, s in services.items() if s.get("image") == APP_IMAGE}


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.mark.parametrize("profiles", PROFILES, ids=lambda p: "+".join(p) or "default")
def test_every_profile_validates_and_every_service_has_a_healthcheck(
    profiles: tuple[str, ...],
) -> None:
    config = compose_config(*profiles)
    services = config["services"]
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        if check.get("disable") or check.get("test") == ["NONE"]:
            # Only a one-shot service may go without: the others wait for its exit.
            assert service.get("restart") == "no", name
            waiting = [
                other["depends_on"][name]["condition"]
                for other in services.values()
                if name in other.get("depends_on", {})
            ]
            assert waiting, name
            assert set(waiting) == {"service_completed_successfully"}, name


def test_the_profiles_add_the_broker_the_sidecar_and_the_workers() -> None:
    # Read from the `profiles` keys: docker-compose 1.29 lists every service in `config`,
    # Docker's compose only the active ones.
    services = compose_config("events", "workers")["services"]
    membership = {name: tuple(s.get("profiles", ())) for name, s in services.items()}
    assert membership == {
        "postgres": (),
        "migrate": (),
        "mcp": (),
        "api": (),
        "kafka": ("events",),
        "api-dapr": ("events",),
        "relay": ("workers",),
        "scheduler": ("workers",),
    }
    assert services["relay"]["command"] == ["todo-assistant", "relay"]
    assert services["scheduler"]["command"] == ["todo-assistant", "scheduler"]


def test_the_api_leaves_relay_and_scheduler_to_the_workers_when_told() -> None:
    api = compose_config("workers", EVENTS_RELAY="false", REMINDERS_SCHEDULER="false")
    environment = api["services"]["api"]["environment"]
    assert (environment["EVENTS_RELAY"], environment["REMINDERS_SCHEDULER"]) == ("false", "false")
    alone = compose_config()["services"]["api"]["environment"]
    assert (alone["EVENTS_RELAY"], alone["REMINDERS_SCHEDULER"]) == ("true", "true")


def test_app_services_set_only_settings_the_app_reads() -> None:
    config = compose_config("events", "workers")
    for name, service in app_services(config).items():
        unknown = set(service["environment"]) - SETTING_NAMES
        assert not unknown, f"{name}: not settings: {sorted(unknown)}"
        # Whatever the variables, the values load as Settings (placeholders for secrets).
        environment = service["environment"]
        values: dict[str, Any] = {k.lower(): v for k, v in environment.items() if v != ""}
        values.update(auth_secret="a" * 32, dapr_app_api_token="placeholder")
        Settings(_env_file=None, **values)


def test_the_sidecar_is_the_apis_with_the_resources_kubernetes_applies() -> None:
    config = compose_config("events", EVENTS_PUBLISHER="dapr")
    services = config["services"]
    sidecar, api = services["api-dapr"], services["api"]
    assert sidecar["network_mode"] == "service:api"
    command = sidecar["command"]
    assert flag(command, "--app-id") == APP_ID
    assert flag(command, "--app-port") == flag(api["command"], "--port")
    assert flag(command, "--dapr-http-port") == api["environment"]["DAPR_HTTP_PORT"]
    assert api["environment"]["EVENTS_PUBLISHER"] == "dapr"
    settings = Settings(_env_file=None)
    assert api["environment"]["DAPR_PUBSUB_NAME"] == settings.dapr_pubsub_name
    assert api["environment"]["EVENTS_TOPIC"] == settings.events_topic
    # The tokens: the sidecar's APP_API_TOKEN is what the API expects, and both sides
    # agree on the API token.
    assert set(sidecar["environment"]) == {"APP_API_TOKEN", "DAPR_API_TOKEN"}
    raw = load_yaml(ROOT / "docker-compose.yml")["services"]["api-dapr"]["environment"]
    assert raw["APP_API_TOKEN"] == "${DAPR_APP_API_TOKEN:-}"
    assert raw["DAPR_API_TOKEN"] == "${DAPR_API_TOKEN:-}"
    # The same files as deploy/dapr/kustomization.yaml: one source for both.
    mounts = {}
    for volume in sidecar["volumes"]:
        # docker-compose 1.29 prints "SOURCE:TARGET:ro", Docker's compose a mapping.
        if isinstance(volume, dict):
            mounts[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            mounts[target] = source
    resources_dir = flag(command, "--resources-path")
    loaded = {
        source.rsplit("/", 1)[-1]
        for target, source in mounts.items()
        if target.startswith(resources_dir + "/")
    }
    config_file = mounts[flag(command, "--config")].rsplit("/", 1)[-1]
    listed = set(load_yaml(DEPLOY / "dapr" / "kustomization.yaml")["resources"])
    assert loaded | {config_file} == listed
    for source in mounts.values():
        assert source.startswith(str(DEPLOY / "dapr") + "/"), source
    for name in loaded:
        assert APP_ID in load_yaml(DEPLOY / "dapr" / name)["scopes"], name


def test_a_separate_relay_publishes_through_the_apis_sidecar() -> None:
    services = compose_config("events", "workers", EVENTS_PUBLISHER="dapr")["services"]
    relay = services["relay"]["environment"]
    assert relay["EVENTS_PUBLISHER"] == "dapr"
    assert relay["DAPR_HOST"] == "api"  # the sidecar shares the API's network namespace
    assert relay["DAPR_HTTP_PORT"] == services["api"]["environment"]["DAPR_HTTP_PORT"]
    assert "0.0.0.0" in services["api-dapr"]["command"]


def test_no_secret_value_is_in_the_compose_file() -> None:
    """Credentials come from the caller's environment. The one exception is the bundled
    PostgreSQL's password, which has no published port."""
    raw = load_yaml(ROOT / "docker-compose.yml")
    services = raw["services"]
    assert "ports" not in services["postgres"]
    for name, service in services.items():
        environment = service.get("environment", {})
        for variable, value in environment.items():
            if variable in SECRET_SETTINGS or re.search(r"(SECRET|PASSWORD|TOKEN)$", variable):
                if variable == "POSTGRES_PASSWORD":
                    continue
                assert re.fullmatch(r"\$\{[A-Z_]+(:[-?][^}]*)?\}", str(value)), (
                    f"{name}: {variable} must come from the environment"
                )


def test_app_containers_run_hardened_with_writable_tmp_and_data_only() -> None:
    config = compose_config("events", "workers")
    for name, service in app_services(config).items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert sorted(service["tmpfs"]) == ["/app/data", "/tmp"], name


def test_the_image_runs_as_the_non_root_user_the_pods_require() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    final_stage = dockerfile.rsplit("\nFROM ", 1)[1]
    (user,) = re.findall(r"^USER (\S+)$", final_stage, re.MULTILINE)
    uid = int(user.split(":")[0])
    assert uid != 0
    assert "DATA_DIR=/app/data" in final_stage
    for overlay_pod in ("api.yaml", "mcp.yaml"):
        documents = (DEPLOY / "k8s" / "base" / overlay_pod).read_text(encoding="utf-8")
        assert f"runAsUser: {uid}" in documents, overlay_pod


def test_every_app_service_starts_after_the_migrations() -> None:
    services = compose_config("events", "workers")["services"]
    assert services["migrate"]["command"] == ["todo-assistant", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in app_services(compose_config("events", "workers")).items():
        if name != "migrate":
            condition = service["depends_on"]["migrate"]["condition"]
            assert condition == "service_completed_successfully", name
