"""What the Kafka source and sink share: the optional confluent-kafka import and the checks of
the librdkafka properties they are given."""

from __future__ import annotations

from typing import Any

from emrflow.errors import ConfigError


def client(user: str) -> Any:
    """``confluent_kafka``, imported on first use (an optional extra).

    Args:
        user: the connector that needs it, for the message (``"KafkaSink"``).

    Raises:
        ConfigError: confluent-kafka is not installed.
    """
    try:
        import confluent_kafka
    except ImportError as exc:
        raise ConfigError(f"{user} needs the confluent-kafka package: "
                          "pip install 'emrflow[kafka]' (or pip install confluent-kafka)") from exc
    return confluent_kafka


def client_properties(owner: str, properties: dict | None, bootstrap_servers: str | None, role: str) -> dict:
    """A copy of ``properties`` (keys as ``str``) with ``bootstrap.servers`` set.

    Args:
        owner: the connector, for messages (``"KafkaSink('clicks')"``).
        properties: librdkafka properties as the user gave them, or ``None``.
        bootstrap_servers: ``host:port[,host:port...]``; ``None``: ``bootstrap.servers`` of
            ``properties``.
        role: ``"producer"`` or ``"consumer"``, for messages.

    Raises:
        ConfigError: ``properties`` is not a dict, or no bootstrap servers are given.
    """
    if properties is not None and not isinstance(properties, dict):
        raise ConfigError(f"{owner}: properties must be a dict of librdkafka {role} properties, "
                          f"got {type(properties).__name__}", key="properties")
    props = {str(k): v for k, v in (properties or {}).items()}
    if bootstrap_servers is not None:
        props["bootstrap.servers"] = bootstrap_servers
    if not props.get("bootstrap.servers"):
        raise ConfigError(f"{owner}: bootstrap_servers is required (host:port of the brokers), "
                          "or bootstrap.servers in properties", key="bootstrap_servers")
    return props
