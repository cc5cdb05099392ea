"""The Azure platform's constants, in one place: the status strings Get Deployment and Get Operation Status say,
and the Azure Storage REST API version our blob clients pin.

Read by the live facts, probes and rules, and written by the local fabric's management API emulator.
Values as the Service Management REST API documents them (Get Deployment: ``Status``, ``InstanceStatus``,
``PowerState``; Get Operation Status: ``Status``):
https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/rest-get-deployment and the operations beside it
under https://learn.microsoft.com/en-us/rest/api/compute/cloudservices/.
"""

from __future__ import annotations

# ---- Deployment/Status -------------------------------------------------------------------------------
RUNNING = "Running"
SUSPENDED = "Suspended"
SUSPENDING = "Suspending"
SUSPENDED_TRANSITIONING = "SuspendedTransitioning"
DELETING = "Deleting"

# ---- RoleInstance/InstanceStatus ---------------------------------------------------------------------
READY = "ReadyRole"
BUSY = "BusyRole"
UNKNOWN = "RoleStateUnknown"
UNKNOWN_STATUS = "Unknown"
CREATING_VM = "CreatingVM"
STARTING_VM = "StartingVM"
CREATING_ROLE = "CreatingRole"
STARTING_ROLE = "StartingRole"
RESTARTING = "RestartingRole"
STOPPING = "StoppingRole"
STOPPING_VM = "StoppingVM"
STOPPED_VM = "StoppedVM"
PROVISIONING = "Provisioning"
PREPARING = "Preparing"
CYCLING = "CyclingRole"
FAILED_STARTING_ROLE = "FailedStartingRole"
FAILED_STARTING_VM = "FailedStartingVM"
UNRESPONSIVE = "UnresponsiveRole"
PROVISIONING_FAILED = "ProvisioningFailed"
PROVISIONING_TIMEOUT = "ProvisioningTimeout"
STOPPED_DEALLOCATED = "StoppedDeallocated"
DELETING_VM = "DeletingVM"

# ---- RoleInstance/PowerState ---------------------------------------------------------------------------
STARTED = "Started"
STOPPED = "Stopped"

# ---- Operation/Status ------------------------------------------------------------------------------------
IN_PROGRESS = "InProgress"
SUCCEEDED = "Succeeded"
OPERATION_FAILED = "Failed"

# ---- Azure Storage REST API (x-ms-version) -------------------------------------------------------------
#: The version our own blob clients pin (the live probes and the local fabric alike): the newest that Azurite 3.35
#: knows (azure-storage-blob 12.31 defaults to 2026-10-06, which Azurite rejects).
#: https://learn.microsoft.com/en-us/rest/api/storageservices/versioning-for-the-azure-storage-services
STORAGE_API_VERSION = "2025-11-05"
