"""Service Management REST API emulator (classic ASM), as azure-servicemanagement-legacy speaks it."""

from harness.fabric.mgmt.faults import ActiveFault, FaultState
from harness.fabric.mgmt.server import ManagementServer, RequestRecord

__all__ = ["ActiveFault", "FaultState", "ManagementServer", "RequestRecord"]
