r"""What survives a reimage: copy this file to check your own role's state.

A reimage gives the instance a fresh copy of the OS disk from the image: what was written to the OS drive
(files, and the registry, whose hives live on it) is gone, while LocalStorage resources declared with
``cleanOnRoleRecycle="false"`` keep their content. State an application must keep belongs in local storage
or, better, outside the instance (blob storage).

Destructive (it reimages an instance), so it runs only when asked::

    pytest suites/persistence --vmr-target .vmrole/fabric/target.vmrtarget.yml --vmr-destructive
"""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.vmrole_destructive

SUITE_KEY = r"HKLM:\SOFTWARE\VmroleSuites\Persistence"


@pytest.mark.vmrole_role("WebVM")  # the role that declares LocalStorage "AppData" (cleanOnRoleRecycle="false")
@pytest.mark.vmrole_one_instance  # one Ready instance is enough, and the others keep serving meanwhile
def test_reimage_resets_the_os_drive_and_keeps_local_storage(vmrole_host, vmrole_reimage):
    win = vmrole_host.vmrole
    tag = uuid.uuid4().hex
    os_marker = rf"C:\vmrole-suites\marker-{tag}.txt"
    local_marker = win.local_storage("AppData") + rf"\marker-{tag}.txt"

    # before: a marker on the OS drive, one in local storage, and a registry value
    win.write_file(os_marker, tag)
    win.write_file(local_marker, tag)
    win.set_registry_value(SUITE_KEY, "Marker", tag)
    assert vmrole_host.file(os_marker).exists
    assert vmrole_host.file(local_marker).exists
    assert win.registry_value(SUITE_KEY, "Marker") == tag

    reimaged = vmrole_reimage(vmrole_host)  # Reimage Role Instance, then wait until ReadyRole again
    assert reimaged.status == "Succeeded"

    try:
        # the OS drive is the image's again: the file and the registry value are gone
        assert not vmrole_host.file(os_marker).exists
        assert win.registry_value(SUITE_KEY, "Marker") is None
        # local storage declared cleanOnRoleRecycle="false" survives
        assert vmrole_host.file(local_marker).exists
        assert vmrole_host.file(local_marker).content_string.strip() == tag
    finally:
        vmrole_host.run(f'del /f /q "{local_marker}"')
