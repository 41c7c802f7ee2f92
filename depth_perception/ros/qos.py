"""QoS profiles of the package's nodes and the check that names publishers whose QoS can
never match a subscription (the classic silent failure: a reliable subscriber and a
best-effort camera). rclpy is imported inside the functions."""
from __future__ import annotations


def sensor_qos(depth: int = 5, reliable: bool = False):
    """The sensor-data profile (best effort, volatile, keep last ``depth``); ``reliable``
    asks for RELIABLE instead (matches reliable publishers only)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    profile = QoSProfile(**{k: getattr(qos_profile_sensor_data, k)
                            for k in ("history", "reliability", "durability")}, depth=depth)
    if reliable:
        profile.reliability = ReliabilityPolicy.RELIABLE
    return profile


def output_qos(depth: int = 1):
    """Outputs: reliable + volatile (matches reliable and best-effort subscribers)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos(depth: int = 1):
    """Transient local (late joiners get the last message), e.g. /tf_static."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def qos_incompatibility(subscriber_qos, publisher_qos) -> list[str]:
    """Why a publisher with ``publisher_qos`` can never reach ``subscriber_qos`` ([] if it can).

    Request/offer rules: a RELIABLE subscriber needs a RELIABLE publisher; a
    TRANSIENT_LOCAL subscriber needs a TRANSIENT_LOCAL publisher.
    """
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    reasons = []
    if (subscriber_qos.reliability == ReliabilityPolicy.RELIABLE
            and publisher_qos.reliability == ReliabilityPolicy.BEST_EFFORT):
        reasons.append("the subscriber asks for RELIABLE, the publisher offers BEST_EFFORT")
    if (subscriber_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
            and publisher_qos.durability == DurabilityPolicy.VOLATILE):
        reasons.append("the subscriber asks for TRANSIENT_LOCAL, the publisher offers VOLATILE")
    return reasons


def incompatible_publishers(node, topic: str, subscriber_qos) -> list[str]:
    """One line per publisher of ``topic`` (resolved name) whose QoS cannot match."""
    problems = []
    for info in node.get_publishers_info_by_topic(topic):
        reasons = qos_incompatibility(subscriber_qos, info.qos_profile)
        if reasons:
            who = f"{info.node_namespace.rstrip('/')}/{info.node_name}"
            problems.append(f"publisher {who} on {topic}: " + "; ".join(reasons))
    return problems


