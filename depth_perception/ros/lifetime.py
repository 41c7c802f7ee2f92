"""How the ROS executables start and end: signals, lifecycle shutdown, teardown order.

rclpy's own SIGINT handler shuts the context down at once, under callbacks that are
still running: transitions then fail (``Unable to start transition 4 ...``), the rosout
publisher is gone, and futures die with ``cannot use Destroyable``. Here a signal only
*asks* to stop, and the main thread ends the process in order:

1. SIGINT / SIGTERM set a stop event (:func:`stop_on_signals`); a lifecycle node that
   reached ``finalized`` (a manager's ``shutdown`` transition) asks the same;
2. the executor stops and its threads are joined (:class:`Spinner`): no callback runs
   from here on;
3. ``finalize`` runs once per node in the main thread (a lifecycle node's ``shutdown``
   transition: workers joined, entities destroyed while the context is valid);
4. nodes are destroyed, then the context is shut down (``try_shutdown``).

The ROS executables (``depth_node``, ``evaluator_node``, ``depth_replay``) exit with 0
after a signal, as rclcpp nodes do: stopping is their normal end.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import signal
import threading
from typing import Callable, Iterable, Iterator

log = logging.getLogger(__name__)

#: The signals that end a ROS executable cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def init(args=None, context=None) -> None:
    """``rclpy.init`` without rclpy's signal handlers (the process handles SIGINT/SIGTERM
    through :func:`stop_on_signals`; Jazzy and Kilted take the same keyword)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=args, context=context, signal_handler_options=SignalHandlerOptions.NO)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event | None = None) -> Iterator[threading.Event]:
    """Within the block SIGINT and SIGTERM set ``stop`` (returned) instead of raising or
    killing; the previous handlers come back on exit. Outside the main thread (where
    Python cannot install handlers) the event is returned untouched."""
    stop = stop if stop is not None else threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request_stop(signum, _frame) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Spinner:
    """The executor spinning in a thread; :meth:`stop` returns once no callback runs any
    more and none will.

    rclpy's ``Executor.shutdown`` destroys the executor's guard condition while callbacks
    queued in a multi-threaded executor's pool may still trigger it; they then fail with
    ``cannot use Destroyable`` in futures nobody reads ("exception was never
    retrieved"), on Jazzy and on Kilted. So the spin loop is ended first, the pool is
    drained, and only then is the executor shut down.
    """

    def __init__(self, executor, name: str = "ros_spin"):
        self.executor = executor
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._spin, name=name, daemon=True)

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException, ShutdownException

        try:
            while not self._halt.is_set() and self.executor.context.ok():
                self.executor.spin_once(timeout_sec=0.1)
        except (ShutdownException, ExternalShutdownException):
            pass
        except BaseException as exc:             # noqa: BLE001 - reported by the owner
            self.error = exc

    def start(self) -> "Spinner":
        self._thread.start()
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """End the spin loop, let queued callbacks finish, then shut the executor down."""
        self._halt.set()
        if self._thread.is_alive():
            self.executor.wake()
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the executor thread did not end within %.0f s", timeout)
        # MultiThreadedExecutor's worker pool (the same attribute on Jazzy and Kilted)
        pool = getattr(self.executor, "_executor", None)
        if isinstance(pool, concurrent.futures.Executor):
            pool.shutdown(wait=True)
        self.executor.shutdown(timeout_sec=timeout)


def shutdown_lifecycle(node) -> None:
    """The ``shutdown`` transition, once, unless the node is finalized already (from any
    primary state: unconfigured, inactive or active)."""
    if lifecycle_state(node) in ("finalized", ""):
        return
    node.trigger_shutdown()


def lifecycle_state(node) -> str:
    """The lifecycle state label of ``node`` ('' when it is not a lifecycle node).
    rclpy (Jazzy, Kilted) has no public getter: its state machine's current state."""
    machine = getattr(node, "_state_machine", None)
    return str(machine.current_state[1]) if machine is not None else ""


def make_executor(threads: int = 1, context=None):
    """The executor of the package's nodes: a SingleThreadedExecutor unless ``threads`` > 1.

    One thread is the right default. The nodes' callbacks only pair, queue and publish;
    inference runs in the node's own worker thread. rclpy's MultiThreadedExecutor (Jazzy,
    Kilted) yields a task again while it waits for a pool thread, so its spin loop does not
    wait and holds the GIL (ros2/rclpy#1452). With four 25 Hz cameras that loop used a
    whole core and the node dropped about half of the frames. With a SingleThreadedExecutor
    it used under 10% and dropped none (test/ros/test_multicam.py).
    """
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    if threads > 1:
        return MultiThreadedExecutor(num_threads=threads, context=context)
    return SingleThreadedExecutor(context=context)


def run_nodes(make_nodes: Callable[[], Iterable], args=None, threads: int = 1,
              finalize: Callable | None = None) -> int:
    """Run the nodes ``make_nodes()`` builds until SIGINT/SIGTERM or until a lifecycle
    node is finalized, then tear down in order (module docstring). ``finalize(node)``
    defaults to :func:`shutdown_lifecycle` for lifecycle nodes. Returns 0; exceptions of
    ``make_nodes`` (bad parameters) propagate after the context is shut down."""
    import rclpy

    finalize = finalize or shutdown_lifecycle
    init(args)
    nodes: list = []
    spinner = None
    try:
        with stop_on_signals() as stop:
            nodes = list(make_nodes())
            executor = make_executor(threads)
            for node in nodes:
                executor.add_node(node)
            spinner = Spinner(executor).start()
            while not stop.wait(0.1):
                if not spinner.is_alive() or any(lifecycle_state(n) == "finalized"
                                                 for n in nodes):
                    break
            spinner.stop()
            for node in nodes:
                finalize(node)
            if spinner.error is not None:
                raise spinner.error
    finally:
        if spinner is not None and spinner.is_alive():
            spinner.stop()
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
