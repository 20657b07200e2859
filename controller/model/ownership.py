"""What only Spot Guard's controller writes on a Node: its annotations and its finalizer.

The controller acts on these in AWS (the replacement record names the groups, targets and instances it changes),
so no one else may create, change or remove them: ``manifests/controller-state-admission.yaml`` (a
ValidatingAdmissionPolicy) refuses every other identity but the cluster's break-glass group ``system:masters``.
``tests/unit/test_manifests.py`` checks that the policy lists exactly ``CONTROLLER_ANNOTATIONS`` and
``CONTROLLER_FINALIZERS``, and that no other ``spotguard.io/`` key the controller writes on Nodes is left out.
"""

from __future__ import annotations

from controller.model.queue_notice import ANNOTATION as QUEUE_NOTICE
from controller.model.record import ANNOTATION as REPLACEMENT_RECORD
from controller.model.record import FINALIZER as REPLACEMENT_FINALIZER
from nodewatch import annotations as contract

#: ``<namespace>/<name>`` of the SGFE an on-demand node is protected for (controller.effects.protection).
PROTECTED_FOR = contract.PREFIX + "lifecycle-event"
#: The cluster-autoscaler's scale-down-disabled annotation was there before Spot Guard set it (keep it on removal).
CA_PREEXISTING = contract.PREFIX + "scale-down-disabled-preexisting"

#: Every annotation only the controller writes on Nodes.
CONTROLLER_ANNOTATIONS: tuple[str, ...] = (REPLACEMENT_RECORD, PROTECTED_FOR, CA_PREEXISTING, QUEUE_NOTICE)
#: Every finalizer only the controller puts on (and takes off) Nodes.
CONTROLLER_FINALIZERS: tuple[str, ...] = (REPLACEMENT_FINALIZER,)
