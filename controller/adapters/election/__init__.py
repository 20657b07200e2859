"""Leader election over a ``coordination.k8s.io/v1`` Lease (client-go's algorithm) and the fence for AWS calls.

Typical wiring::

    store = KubeLeaseStore.from_configuration(configuration, namespace, "spotguard-controller")
    elector = LeaseElector(store)
    stop = Cancellation()  # cancelled by the SIGTERM handler
    elector.run(work, stop)  # work(token) runs while leading; elector.fence guards AWS writes
"""

from controller.adapters.election.config import ElectionConfig, InvalidElectionConfigError, default_identity
from controller.adapters.election.elector import ElectionStatus, ExitProcess, LeaseElector, exit_process_now
from controller.adapters.election.kube_store import KubeLeaseStore
from controller.adapters.election.memory_store import InMemoryLeaseStore
from controller.adapters.election.record import LeaseRecord, StoredLease, format_micro_time, parse_micro_time
from controller.adapters.election.store import (
    ApiTimeoutError,
    ConflictError,
    LeaseApiError,
    LeaseStore,
    LeaseStoreError,
)
from controller.clock import Cancellation
from controller.fence import NotLeaderError

__all__ = [
    "ApiTimeoutError",
    "Cancellation",
    "ConflictError",
    "ElectionConfig",
    "ElectionStatus",
    "ExitProcess",
    "InMemoryLeaseStore",
    "InvalidElectionConfigError",
    "KubeLeaseStore",
    "LeaseApiError",
    "LeaseElector",
    "LeaseRecord",
    "LeaseStore",
    "LeaseStoreError",
    "NotLeaderError",
    "StoredLease",
    "default_identity",
    "exit_process_now",
    "format_micro_time",
    "parse_micro_time",
]
