"""The shape of the Dapr resources we ship, as JSON Schemas of our own.

kubernetes-validate knows only the built-in kinds; Dapr's CRDs (Component, Configuration,
Resiliency, Subscription) are checked here for the fields we use and the types Dapr
expects, refusing unknown fields as `--strict` validation does for the built-in kinds. They
follow Dapr's CRD definitions (dapr/dapr charts/dapr/crds) for the parts we use; a field
we start using must be added here first, which is the point.
"""

from __future__ import annotations

from typing import Any

NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253}
DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"}
SCOPES = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}

OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": NAME,
        "namespace": NAME,
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}


def _resource(api_version: str, kind: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": OBJECT_META,
            "spec": spec,
            "scopes": SCOPES,
            **extra,
        },
        "additionalProperties": False,
    }


COMPONENT = _resource(
    "dapr.io/v1alpha1",
    "Component",
    {
        "type": "object",
        "required": ["type", "version", "metadata"],
        "properties": {
            "type": {"type": "string", "pattern": r"^[a-z]+\.[a-z0-9.-]+$"},
            "version": {"type": "string", "pattern": r"^v[0-9]+$"},
            "ignoreErrors": {"type": "boolean"},
            "initTimeout": DURATION,
            "metadata": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        # Dapr's CRD takes any JSON here, but every value we ship is quoted.
                        "value": {"type": "string"},
                        "secretKeyRef": {
                            "type": "object",
                            "required": ["name", "key"],
                            "properties": {"name": NAME, "key": {"type": "string"}},
                            "additionalProperties": False,
                        },
                    },
                    "oneOf": [{"required": ["value"]}, {"required": ["secretKeyRef"]}],
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    },
    auth={
        "type": "object",
        "required": ["secretStore"],
        "properties": {"secretStore": {"type": "string", "minLength": 1}},
        "additionalProperties": False,
    },
)

CONFIGURATION = _resource(
    "dapr.io/v1alpha1",
    "Configuration",
    {
        "type": "object",
        "properties": {
            "metric": {
                "type": "object",
                "properties": {"enabled": {"type": "boolean"}},
                "additionalProperties": False,
            },
            "tracing": {
                "type": "object",
                "properties": {"samplingRate": {"type": "string", "pattern": r"^[0-9.]+$"}},
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
)

_RETRY = {
    "type": "object",
    "required": ["policy"],
    "properties": {
        "policy": {"enum": ["constant", "exponential"]},
        "duration": DURATION,
        "maxInterval": DURATION,
        "maxRetries": {"type": "integer", "minimum": -1},
    },
    "additionalProperties": False,
}
_BREAKER = {
    "type": "object",
    "required": ["trip"],
    "properties": {
        "maxRequests": {"type": "integer", "minimum": 0},
        "interval": DURATION,
        "timeout": DURATION,
        "trip": {"type": "string", "minLength": 1},
    },
    "additionalProperties": False,
}
_CHOICE = {
    "type": "object",
    "properties": {
        "timeout": {"type": "string"},
        "retry": {"type": "string"},
        "circuitBreaker": {"type": "string"},
    },
    "additionalProperties": False,
}

RESILIENCY = _resource(
    "dapr.io/v1alpha1",
    "Resiliency",
    {
        "type": "object",
        "required": ["policies", "targets"],
        "properties": {
            "policies": {
                "type": "object",
                "properties": {
                    "timeouts": {"type": "object", "additionalProperties": DURATION},
                    "retries": {"type": "object", "additionalProperties": _RETRY},
                    "circuitBreakers": {"type": "object", "additionalProperties": _BREAKER},
                },
                "additionalProperties": False,
            },
            "targets": {
                "type": "object",
                "properties": {
                    "components": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {"outbound": _CHOICE, "inbound": _CHOICE},
                            "additionalProperties": False,
                        },
                    },
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
)

SUBSCRIPTION = _resource(
    "dapr.io/v2alpha1",
    "Subscription",
    {
        "type": "object",
        "required": ["pubsubname", "topic", "routes"],
        "properties": {
            "pubsubname": {"type": "string", "minLength": 1},
            "topic": {"type": "string", "minLength": 1},
            "routes": {
                "type": "object",
                "properties": {
                    "default": {"type": "string", "pattern": "^/"},
                    "rules": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["match", "path"],
                            "properties": {
                                "match": {"type": "string"},
                                "path": {"type": "string", "pattern": "^/"},
                            },
                            "additionalProperties": False,
                        },
                    },
                },
                "anyOf": [{"required": ["default"]}, {"required": ["rules"]}],
                "additionalProperties": False,
            },
            "deadLetterTopic": {"type": "string", "minLength": 1},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
    },
)

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("dapr.io/v1alpha1", "Component"): COMPONENT,
    ("dapr.io/v1alpha1", "Configuration"): CONFIGURATION,
    ("dapr.io/v1alpha1", "Resiliency"): RESILIENCY,
    ("dapr.io/v2alpha1", "Subscription"): SUBSCRIPTION,
}
