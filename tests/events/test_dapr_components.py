"""The Dapr resource files agree with the settings' defaults and with the subscription the
API serves: a renamed topic, pub/sub or route cannot drift in one place only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML ships no type hints

from backend.config import Settings
from backend.events.router import subscriptions

DAPR = Path(__file__).resolve().parents[2] / "deploy" / "dapr"
APP_ID = "todo-assistant-api"  # the API's Dapr app id (dapr run --app-id / the annotation)
SETTINGS = Settings(_env_file=None)


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((DAPR / name).read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def metadata(component: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in component["spec"]["metadata"]}


@pytest.mark.parametrize(
    ("name", "kind", "version"),
    [
        ("pubsub-kafka.yaml", "Component", "dapr.io/v1alpha1"),
        ("pubsub-redis.yaml", "Component", "dapr.io/v1alpha1"),
        ("subscription.yaml", "Subscription", "dapr.io/v2alpha1"),
        ("resiliency.yaml", "Resiliency", "dapr.io/v1alpha1"),
    ],
)
def test_every_resource_is_a_dapr_resource_scoped_to_the_api(
    name: str, kind: str, version: str
) -> None:
    document = load(name)
    assert (document["apiVersion"], document["kind"]) == (version, kind)
    assert document["scopes"] == [APP_ID]


def test_both_pubsub_components_carry_the_configured_name() -> None:
    kafka, redis = load("pubsub-kafka.yaml"), load("pubsub-redis.yaml")
    assert kafka["metadata"]["name"] == redis["metadata"]["name"] == SETTINGS.dapr_pubsub_name
    assert (kafka["spec"]["type"], redis["spec"]["type"]) == ("pubsub.kafka", "pubsub.redis")


def test_the_kafka_component_takes_our_events_and_starts_from_the_oldest() -> None:
    fields = metadata(load("pubsub-kafka.yaml"))
    assert {"brokers", "consumerGroup", "clientID", "authType"} <= set(fields)
    assert int(fields["maxMessageBytes"]) >= 1024 * 1024
    assert fields["initialOffset"] == "oldest"
    assert fields["consumerGroup"] == APP_ID


def test_the_declarative_subscription_is_the_one_the_api_serves() -> None:
    (served,) = subscriptions(SETTINGS)
    spec = load("subscription.yaml")["spec"]
    assert spec["pubsubname"] == served.pubsubname == SETTINGS.dapr_pubsub_name
    assert spec["topic"] == served.topic == SETTINGS.events_topic
    assert spec["routes"]["default"] == served.route
    assert spec["deadLetterTopic"] == served.deadLetterTopic
    assert spec["metadata"] == served.metadata


def test_resiliency_targets_the_pubsub_both_ways_with_defined_policies() -> None:
    spec = load("resiliency.yaml")["spec"]
    policies = spec["policies"]
    target = spec["targets"]["components"][SETTINGS.dapr_pubsub_name]
    for direction in ("outbound", "inbound"):
        chosen = target[direction]
        assert chosen["timeout"] in policies["timeouts"], direction
        assert chosen["retry"] in policies["retries"], direction
        assert chosen["circuitBreaker"] in policies["circuitBreakers"], direction
    assert policies["retries"][target["inbound"]["retry"]]["policy"] == "exponential"
