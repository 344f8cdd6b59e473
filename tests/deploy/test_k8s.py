"""The Kubernetes manifests: every overlay renders, every object is valid offline, and the
manifests agree with the code (settings, Dapr names, routes) and with our rules (no
secret values, hardened pods, migrations before traffic)."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type hints
import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from backend.config import Settings
from backend.events.router import subscriptions
from tests.deploy.dapr_schemas import SCHEMAS
from tests.deploy.tools import DEPLOY, OVERLAYS, load_yaml, render

# The Kubernetes release whose schemas the objects are checked against (strict: unknown
# fields are errors). kubernetes-validate ships schemas from 1.25 on.
KUBERNETES_VERSION = "1.33"
SETTINGS = Settings(_env_file=None)
SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)
# Settings that hold credentials, or say where to find them: only ever from a Secret.
SECRET_SETTINGS = frozenset(
    {
        "DATABASE_URL",
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
# A setting added later under a name like these is treated as a secret too.
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|API_KEY|_API_TOKEN)$")
SECRET_METADATA = re.compile(r"(?i)(password|secret|token|key)$")
API, MCP = "todo-assistant-api", "todo-assistant-mcp"
PUBLIC_PATHS_NEVER = ("/metrics", "/dapr", "/events", "/healthz", "/readyz")

overlays = pytest.mark.parametrize("overlay", OVERLAYS)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {item["metadata"]["name"]: item for item in objects if item["kind"] == kind}


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = by_kind(objects, kind)
    if name is None:
        assert len(found) == 1, f"expected one {kind}, found {sorted(found)}"
        return next(iter(found.values()))
    assert name in found, f"no {kind} {name}; there are {sorted(found)}"
    return found[name]


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def all_containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(deployment)
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in all_containers(deployment) if c["name"] == name]
    return found


def environment(objects: list[dict[str, Any]], item: dict[str, Any]) -> dict[str, Any]:
    """A container's variables: literal values, ConfigMap values, or the secretKeyRef."""
    config_maps = by_kind(objects, "ConfigMap")
    values: dict[str, Any] = {}
    for source in item.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"{item['name']}: envFrom only from ConfigMaps"
        values.update(config_maps[source["configMapRef"]["name"]]["data"])
    for entry in item.get("env", []):
        values[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return values


def pod_annotations(deployment: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = deployment["spec"]["template"]["metadata"].get("annotations", {})
    return found


def dapr_app_ids(objects: list[dict[str, Any]]) -> set[str]:
    return {
        pod_annotations(d)["dapr.io/app-id"]
        for d in by_kind(objects, "Deployment").values()
        if pod_annotations(d).get("dapr.io/enabled") == "true"
    }


# --- rendering and validation -------------------------------------------------------------


@overlays
def test_every_object_is_valid_for_its_kind(overlay: str) -> None:
    objects = render(overlay)
    assert objects, f"{overlay} renders nothing"
    problems = []
    for item in objects:
        key = (item["apiVersion"], item["kind"])
        label = f"{item['kind']}/{item['metadata']['name']}"
        if key in SCHEMAS:
            validator = Draft202012Validator(SCHEMAS[key])
            problems += [f"{label}: {error.message}" for error in validator.iter_errors(item)]
            continue
        try:
            kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{label}: {key} is neither a Kubernetes kind nor a known CRD")
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{label}: {error.message} at {list(error.path)}")
    assert not problems, "\n".join(problems)


def test_strict_validation_refuses_an_unknown_field() -> None:
    """The validator is not vacuous: a misspelt field fails."""
    deployment = one(render("prod"), "Deployment", API)
    container(deployment, "api")["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@overlays
def test_each_overlay_has_the_whole_application(overlay: str) -> None:
    objects = render(overlay)
    kinds = {(item["kind"], item["metadata"]["name"]) for item in objects}
    for name in (API, MCP):
        for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
            assert (kind, name) in kinds, f"{overlay}: no {kind} {name}"
    assert ("NetworkPolicy", MCP) in kinds
    for kind in ("Ingress", "Component", "Resiliency", "Subscription", "Configuration"):
        assert kind in {k for k, _ in kinds}, f"{overlay}: no {kind}"
    namespaces = {item["metadata"].get("namespace") for item in objects}
    assert len(namespaces) == 1, f"{overlay}: {namespaces}"
    assert None not in namespaces, overlay


# --- the manifests and the code -----------------------------------------------------------


@overlays
def test_every_variable_set_is_a_setting_the_app_reads(overlay: str) -> None:
    objects = render(overlay)
    for deployment in by_kind(objects, "Deployment").values():
        for item in all_containers(deployment):
            unknown = set(environment(objects, item)) - SETTING_NAMES
            assert not unknown, f"{overlay} {item['name']}: not settings: {sorted(unknown)}"


@overlays
def test_the_configured_values_are_valid_settings(overlay: str) -> None:
    """What the ConfigMaps say, with placeholder secrets, loads as the app's Settings."""
    objects = render(overlay)
    placeholders = {
        "database_url": "postgresql+asyncpg://app@db:5432/todo",
        "auth_secret": "a" * 32,
        "mcp_token_secret": "m" * 32,
        "dapr_app_api_token": "placeholder",
    }
    for deployment in by_kind(objects, "Deployment").values():
        for item in all_containers(deployment):
            values: dict[str, Any] = {
                name.lower(): value
                for name, value in environment(objects, item).items()
                if isinstance(value, str)
            }
            settings = Settings(_env_file=None, **{**values, **placeholders})
            assert settings.app_env == "production"


@overlays
def test_the_dapr_names_are_the_settings_defaults_and_the_served_route(overlay: str) -> None:
    objects = render(overlay)
    component = one(objects, "Component")
    assert component["metadata"]["name"] == SETTINGS.dapr_pubsub_name
    assert component["spec"]["type"] == "pubsub.kafka"
    (served,) = subscriptions(SETTINGS)
    subscription = one(objects, "Subscription")["spec"]
    assert subscription["pubsubname"] == served.pubsubname == SETTINGS.dapr_pubsub_name
    assert subscription["topic"] == served.topic == SETTINGS.events_topic
    assert subscription["routes"] == {"default": served.route}
    assert subscription["deadLetterTopic"] == served.deadLetterTopic
    assert subscription["metadata"] == served.metadata
    resiliency = one(objects, "Resiliency")["spec"]
    targets = resiliency["targets"]["components"]
    assert set(targets) == {SETTINGS.dapr_pubsub_name}
    policies = resiliency["policies"]
    for direction in ("outbound", "inbound"):
        chosen = targets[SETTINGS.dapr_pubsub_name][direction]
        assert chosen["timeout"] in policies["timeouts"]
        assert chosen["retry"] in policies["retries"]
        assert chosen["circuitBreaker"] in policies["circuitBreakers"]
    # The API names the same component and topic as the resources.
    api = environment(objects, container(one(objects, "Deployment", API), "api"))
    assert api["EVENTS_PUBLISHER"] == "dapr"
    assert api.get("DAPR_PUBSUB_NAME", SETTINGS.dapr_pubsub_name) == SETTINGS.dapr_pubsub_name
    assert api.get("EVENTS_TOPIC", SETTINGS.events_topic) == SETTINGS.events_topic


@overlays
def test_the_dapr_resources_are_scoped_to_the_app_that_publishes_and_consumes(
    overlay: str,
) -> None:
    """The publisher (the relay, inside the API) and the consumer (the API's deliveries)
    are one Dapr app: every resource must let that sidecar load it, and no other app."""
    objects = render(overlay)
    assert dapr_app_ids(objects) == {API}
    for kind in ("Component", "Resiliency", "Subscription"):
        assert one(objects, kind)["scopes"] == [API], kind
    api = one(objects, "Deployment", API)
    configuration = one(objects, "Configuration")["metadata"]["name"]
    assert pod_annotations(api)["dapr.io/config"] == configuration
    mcp = one(objects, "Deployment", MCP)
    assert pod_annotations(mcp).get("dapr.io/enabled") != "true"
    assert environment(objects, container(mcp, "mcp")).get("EVENTS_PUBLISHER", "none") == "none"


@overlays
def test_the_sidecar_reaches_the_port_the_api_serves_with_the_tokens_it_checks(
    overlay: str,
) -> None:
    objects = render(overlay)
    api = one(objects, "Deployment", API)
    notes = pod_annotations(api)
    main = container(api, "api")
    (port,) = main["ports"]
    assert notes["dapr.io/app-port"] == str(port["containerPort"])
    command = main["command"]
    assert command[command.index("--port") + 1] == notes["dapr.io/app-port"]
    env = environment(objects, main)
    assert env["DAPR_APP_API_TOKEN"]["secretKeyRef"] == {
        "name": notes["dapr.io/app-token-secret"],
        "key": "token",  # the key Dapr's injector reads
    }
    assert env["DAPR_API_TOKEN"]["secretKeyRef"] == {
        "name": notes["dapr.io/api-token-secret"],
        "key": "token",
    }


@overlays
def test_the_kafka_component_names_its_brokers_group_auth_and_message_size(overlay: str) -> None:
    component = one(render(overlay), "Component")
    fields = {item["name"]: item for item in component["spec"]["metadata"]}
    assert {"brokers", "consumerGroup", "authType", "maxMessageBytes"} <= set(fields)
    assert fields["consumerGroup"]["value"] == API
    assert int(fields["maxMessageBytes"]["value"]) >= 1024 * 1024
    if overlay == "prod":
        assert fields["authType"]["value"] == "password"
        assert fields["disableTls"]["value"] == "false"
        assert "secretKeyRef" in fields["saslPassword"]


# --- secrets -------------------------------------------------------------------------------


@overlays
def test_no_secret_value_is_committed(overlay: str) -> None:
    objects = render(overlay)
    assert not by_kind(objects, "Secret"), "Secrets are created beside the manifests"
    for config_map in by_kind(objects, "ConfigMap").values():
        leaked = {n for n in config_map["data"] if n in SECRET_SETTINGS or SECRET_NAME.search(n)}
        assert not leaked, f"{config_map['metadata']['name']} holds {sorted(leaked)}"
    for deployment in by_kind(objects, "Deployment").values():
        for item in all_containers(deployment):
            for entry in item.get("env", []):
                name = entry["name"]
                if name in SECRET_SETTINGS or SECRET_NAME.search(name):
                    assert "value" not in entry, f"{item['name']}: {name} has a value"
                    assert set(entry["valueFrom"]) == {"secretKeyRef"}, name
    for component in by_kind(objects, "Component").values():
        for item in component["spec"]["metadata"]:
            if SECRET_METADATA.search(item["name"]):
                assert "secretKeyRef" in item, f"component metadata {item['name']} is inline"


@overlays
def test_the_api_reads_every_credential_it_needs_from_a_secret(overlay: str) -> None:
    objects = render(overlay)
    env = environment(objects, container(one(objects, "Deployment", API), "api"))
    for name in SECRET_SETTINGS:
        assert "secretKeyRef" in env[name], name
    required = {n for n in SECRET_SETTINGS if not env[n]["secretKeyRef"].get("optional")}
    assert required == {"DATABASE_URL", "MCP_TOKEN_SECRET", "DAPR_API_TOKEN", "DAPR_APP_API_TOKEN"}


# --- pods ----------------------------------------------------------------------------------


@overlays
def test_every_deployment_is_probed_bounded_and_locked_down(overlay: str) -> None:
    objects = render(overlay)
    for name, deployment in by_kind(objects, "Deployment").items():
        spec = pod_spec(deployment)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec["automountServiceAccountToken"] is False, name
        writable = {volume["name"] for volume in spec.get("volumes", []) if "emptyDir" in volume}
        for item in all_containers(deployment):
            label = f"{name}/{item['name']}"
            resources = item["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), label
            assert "memory" in resources["limits"], label
            context = item["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, label
            assert context["allowPrivilegeEscalation"] is False, label
            assert context["runAsNonRoot"] is True, label
            assert context["capabilities"]["drop"] == ["ALL"], label
            mounts = {mount["mountPath"]: mount["name"] for mount in item.get("volumeMounts", [])}
            # The only writable places: temporary files and DATA_DIR.
            assert set(mounts) == {"/tmp", "/app/data"}, label
            assert set(mounts.values()) <= writable, label
        for item in spec["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                assert item[probe]["httpGet"]["port"] == "http", f"{name}: {probe}"


@overlays
def test_probes_use_the_health_routes_each_server_has(overlay: str) -> None:
    objects = render(overlay)
    api = container(one(objects, "Deployment", API), "api")
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The MCP server serves /healthz only (mcp_server/server.py).
    mcp = container(one(objects, "Deployment", MCP), "mcp")
    assert mcp["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert mcp["livenessProbe"]["httpGet"]["path"] == "/healthz"


@overlays
def test_migrations_run_before_new_api_pods_take_traffic(overlay: str) -> None:
    objects = render(overlay)
    api = one(objects, "Deployment", API)
    (migrate,) = pod_spec(api)["initContainers"]
    assert migrate["command"] == ["todo-assistant", "migrate"]
    assert migrate["image"] == container(api, "api")["image"]
    env = environment(objects, migrate)
    assert "secretKeyRef" in env["DATABASE_URL"]
    assert env["DATABASE_URL"] == environment(objects, container(api, "api"))["DATABASE_URL"]
    # Old pods serve until the new ones are ready.
    for deployment in by_kind(objects, "Deployment").values():
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@overlays
def test_services_autoscalers_and_budgets_select_their_deployment(overlay: str) -> None:
    objects = render(overlay)
    for name, deployment in by_kind(objects, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selected = deployment["spec"]["selector"]["matchLabels"]
        assert selected.items() <= labels.items()
        service = one(objects, "Service", name)
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        budget = one(objects, "PodDisruptionBudget", name)
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        scaler = one(objects, "HorizontalPodAutoscaler", name)["spec"]
        assert scaler["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert 1 <= scaler["minReplicas"] <= scaler["maxReplicas"]
        # The autoscaler owns the count: an apply must not reset it.
        assert "replicas" not in deployment["spec"], name


@overlays
def test_the_mcp_server_answers_only_the_api_and_named_agent_clients(overlay: str) -> None:
    objects = render(overlay)
    policy = one(objects, "NetworkPolicy", MCP)["spec"]
    mcp_labels = one(objects, "Deployment", MCP)["spec"]["template"]["metadata"]["labels"]
    api_labels = one(objects, "Deployment", API)["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= mcp_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": 8001, "protocol": "TCP"}]
    peers = rule["from"]
    # Pod selectors only: no other namespace, no address range.
    assert all(set(peer) == {"podSelector"} for peer in peers)
    assert {"matchLabels": {"app.kubernetes.io/name": API}} in [p["podSelector"] for p in peers]
    assert peers[0]["podSelector"]["matchLabels"].items() <= api_labels.items()
    expressions = [p["podSelector"].get("matchExpressions") for p in peers]
    assert [{"key": "todo-assistant/mcp-client", "operator": "Exists"}] in expressions
    assert len(peers) == 2


@overlays
def test_the_ingress_exposes_the_api_only_and_none_of_its_internal_routes(overlay: str) -> None:
    objects = render(overlay)
    (ingress,) = by_kind(objects, "Ingress").values()
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"]["name"] == API
            assert not path["path"].startswith(PUBLIC_PATHS_NEVER), path["path"]
            assert path["path"] != "/", "a catch-all would publish /metrics and /events"


def test_the_dapr_directory_lists_each_resource_once() -> None:
    """deploy/dapr is the one source of the Dapr resources: Kubernetes applies the files its
    kustomization lists, the compose events profile mounts the same files."""
    listed = load_yaml(DEPLOY / "dapr" / "kustomization.yaml")["resources"]
    assert "pubsub-redis.yaml" not in listed  # the same component, for laptops
    for name in listed:
        assert (DEPLOY / "dapr" / name).is_file(), name
    kinds = [load_yaml(DEPLOY / "dapr" / name)["kind"] for name in listed]
    assert sorted(kinds) == ["Component", "Configuration", "Resiliency", "Subscription"]
