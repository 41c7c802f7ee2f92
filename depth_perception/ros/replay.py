"""Play a rosbag2 live over ROS 2, for pip-only machines without ``ros2 bag play``.

Messages keep their recorded timing (relative to the first message, divided by
``rate``) and their bytes: the raw CDR from the bag is turned into the rclpy message
with ``rclpy.serialization.deserialize_message`` (rosbags and rclpy CDR are
identical), so nothing is re-encoded. Message classes are resolved from the bag's type
names through their Python modules ('sensor_msgs/msg/Image' -> ``sensor_msgs.msg.Image``);
topics whose message package is not installed are skipped with a warning. ``/tf`` and
``/tf_static`` need ``tf2_msgs``, which is not on PyPI: on pip-only machines
``scripts/build_interfaces.sh`` builds ``tf2_msgs/msg/TFMessage`` into the venv.
``/tf_static`` is published transient-local (late joiners get it, as from a ROS 2
static broadcaster); ``--clock`` publishes
``rosgraph_msgs/Clock`` with the bag time for nodes running with ``use_sim_time``.

    node = rclpy.create_node("replay", context=ctx)
    stats = replay_bag("bag_dir", node, rate=2.0, wait_for=["/camera/image_raw"])
"""
from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

LATCHED_TOPICS = ("/tf_static",)
#: Message packages missing from PyPI that scripts/build_interfaces.sh builds.
VENDORED_PACKAGES = ("tf2_msgs",)


def resolve_message_type(type_name: str):
    """'pkg/msg/Name' (or 'pkg/Name') -> the rclpy message class; ValueError if unknown."""
    parts = type_name.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"message type '{type_name}' is not of the form 'package/msg/Name'")
    package, kind, name = parts
    try:
        module = importlib.import_module(f"{package}.{kind}")
    except ImportError as exc:
        how = (f"pip: ros-{package.replace('_', '-')}, or source a ROS 2 installation"
               if package not in VENDORED_PACKAGES else
               "it is not on PyPI: run scripts/build_interfaces.sh to build it into the "
               "venv, or source a ROS 2 installation")
        raise ValueError(f"message type '{type_name}': Python package '{package}' is not "
                         f"installed ({exc}); install it ({how})") from exc
    try:
        return getattr(module, name)
    except AttributeError as exc:
        raise ValueError(f"message type '{type_name}': {package}.{kind} has no '{name}'") from exc


@dataclass
class ReplayStats:
    """What a replay published: messages per topic, loops played, topics skipped."""

    published: Counter = field(default_factory=Counter)
    loops: int = 0
    skipped: dict = field(default_factory=dict)
    stopped: bool = False

    @property
    def total(self) -> int:
        return sum(self.published.values())



def _NO_EVENT_HANDLERS():
    """Publisher event callbacks without rclpy's default handlers.

    The replayer may run on a node another thread is spinning (tests, the demo). Default
    QoS-event handlers are waitables of that node; destroying them in ``close()`` while the
    executor holds them raises InvalidHandle in the executor thread. The subscribers'
    side still reports incompatible QoS.
    """
    from rclpy.event_handler import PublisherEventCallbacks

    return PublisherEventCallbacks(use_default_callbacks=False)

class BagReplayer:
    """Publishers for a bag's topics on ``node``; :meth:`play` streams the messages.

    ``topics``: subset of topic names to play (default all); ``clock``: publish /clock;
    ``rate``: playback speed factor (2.0 = twice as fast); ``latched``: topics published
    transient-local (default ``/tf_static``).
    """

    def __init__(self, path: str | Path, node, topics=None, rate: float = 1.0,
                 clock: bool = False, loop: bool = False, latched=LATCHED_TOPICS):
        from rosbags.rosbag2 import Reader

        from depth_perception.ros import qos as ros_qos

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"bag {self.path} not found")
        if not rate > 0:
            raise ValueError(f"replay rate must be > 0, got {rate}")
        self.node, self.rate, self.loop = node, float(rate), bool(loop)
        self.stats = ReplayStats()
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as exc:  # rosbags raises its own error types
            raise ValueError(f"bag {self.path} cannot be opened: {exc}") from exc
        available = {c.topic: c.msgtype for c in self._reader.connections}
        wanted = list(topics) if topics else sorted(available)
        missing = [t for t in wanted if t not in available]
        if missing:
            self._reader.close()
            raise ValueError(f"bag {self.path} has no topic(s) {missing}; it has "
                             f"{sorted(available)}")
        self.publishers = {}
        for topic in wanted:
            try:
                msg_type = resolve_message_type(available[topic])
            except ValueError as exc:
                self.stats.skipped[topic] = str(exc)
                log.warning("skipping %s: %s", topic, exc)
                continue
            qos = (ros_qos.latched_qos(1) if topic in latched
                   else ros_qos.output_qos(10))
            self.publishers[topic] = (node.create_publisher(
                msg_type, topic, qos, event_callbacks=_NO_EVENT_HANDLERS()), msg_type)
        self._connections = [c for c in self._reader.connections if c.topic in self.publishers]
        self._clock_pub = None
        if clock:
            from rosgraph_msgs.msg import Clock
            self._clock_pub = node.create_publisher(Clock, "/clock", ros_qos.output_qos(10),
                                                    event_callbacks=_NO_EVENT_HANDLERS())

    def wait_for_subscribers(self, topics=None, timeout: float = 30.0,
                             stop: threading.Event | None = None) -> None:
        """Block until every topic in ``topics`` (default: all played) has a subscriber.

        DDS discovery takes time; messages published before a subscriber matched are
        lost. TimeoutError naming the topics still unmatched.
        """
        topics = list(topics) if topics is not None else list(self.publishers)
        unknown = [t for t in topics if t not in self.publishers]
        if unknown:
            raise ValueError(f"cannot wait for {unknown}: not played from {self.path} "
                             f"(played: {sorted(self.publishers)})")
        deadline = time.monotonic() + timeout
        ticker = stop or threading.Event()
        while True:
            waiting = [t for t in topics if self.publishers[t][0].get_subscription_count() == 0]
            if not waiting or (stop is not None and stop.is_set()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no subscriber on {waiting} after {timeout:.0f} s")
            ticker.wait(0.01)

    def play(self, stop: threading.Event | None = None) -> ReplayStats:
        """Publish the messages with their recorded timing; repeat while ``loop``."""
        from rclpy.serialization import deserialize_message

        stop = stop or threading.Event()
        while not stop.is_set():
            start_wall = time.monotonic()
            first_ns = None
            for connection, bag_ns, raw in self._reader.messages(connections=self._connections):
                if first_ns is None:
                    first_ns = bag_ns
                due = start_wall + (bag_ns - first_ns) * 1e-9 / self.rate
                delay = due - time.monotonic()
                if delay > 0 and stop.wait(delay):  # keep the recorded timing
                    break
                if stop.is_set():
                    break
                publisher, msg_type = self.publishers[connection.topic]
                if self._clock_pub is not None:
                    self._publish_clock(bag_ns)
                publisher.publish(deserialize_message(bytes(raw), msg_type))
                self.stats.published[connection.topic] += 1
            self.stats.loops += 1
            if not self.loop:
                break
        self.stats.stopped = stop.is_set()
        return self.stats

    def _publish_clock(self, bag_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        from depth_perception.conversions import ns_to_stamp

        self._clock_pub.publish(Clock(clock=ns_to_stamp(bag_ns)))

    def close(self) -> None:
        for publisher, _ in self.publishers.values():
            self.node.destroy_publisher(publisher)
        self.publishers = {}
        if self._clock_pub is not None:
            self.node.destroy_publisher(self._clock_pub)
            self._clock_pub = None
        self._reader.close()

    def __enter__(self) -> "BagReplayer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def replay_bag(path: str | Path, node, rate: float = 1.0, topics=None, clock: bool = False,
               loop: bool = False, wait_for=(), wait_timeout: float = 30.0,
               stop: threading.Event | None = None, latched=LATCHED_TOPICS) -> ReplayStats:
    """Play the bag at ``path`` on ``node``'s publishers; returns what was published.

    ``wait_for``: topics that must have a subscriber before playing starts (no message
    is lost to discovery). ``stop``: an Event that ends playback early (e.g. Ctrl-C).
    """
    with BagReplayer(path, node, topics=topics, rate=rate, clock=clock, loop=loop,
                     latched=latched) as player:
        if wait_for:
            player.wait_for_subscribers(wait_for, wait_timeout, stop)
        return player.play(stop)


def play(args) -> int:
    """Run the replay verb: a node that plays ``args.bag`` until it ends, or until
    SIGINT/SIGTERM (then it stops publishing, prints what it played and returns 0)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from depth_perception.ros.lifetime import Spinner, init, stop_on_signals

    if not args.rate > 0:
        raise ValueError(f"--rate must be > 0, got {args.rate}")
    init()
    node = rclpy.create_node("bag_replay")
    spinner = Spinner(SingleThreadedExecutor(), name="bag_replay_spin")
    spinner.executor.add_node(node)
    spinner.start()
    try:
        with stop_on_signals() as stop:
            stats = replay_bag(args.bag, node, rate=args.rate, topics=args.topics,
                               clock=args.clock, loop=args.loop, wait_for=args.wait_for,
                               wait_timeout=args.wait_timeout, stop=stop)
    except TimeoutError as exc:
        raise RuntimeError(str(exc)) from exc
    finally:
        spinner.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    for topic, n in sorted(stats.published.items()):
        print(f"{topic}: {n} messages")
    for topic, reason in sorted(stats.skipped.items()):
        print(f"{topic}: skipped ({reason})")
    return 0
