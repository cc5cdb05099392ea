r"""Smoke tests for a deployed VM role: copy this file next to your own tests and change the names.

Run it against any deployment described by a target file (the local fabric writes one)::

    vmrole fabric up
    pytest suites/smoke --vmr-target .vmrole/fabric/target.vmrtarget.yml

``vmrole_host`` is a testinfra host (https://testinfra.readthedocs.io) for one role instance, reached over
WinRM; a test that asks for it runs once per instance of the deployment (``test_x[WebVM_IN_0]``,
``test_x[WebVM_IN_1]`` …), so a failure names the instance. The instances come from the management API,
never from a list in this file.
"""

from __future__ import annotations

import pytest

# ---- every instance -------------------------------------------------------------------------------------


def test_winrm_service_runs_and_starts_automatically(vmrole_host):
    winrm = vmrole_host.vmrole.service("WinRM")
    assert winrm.status == "Running"
    assert winrm.start_type == "Automatic"


def test_winrm_https_port_listens(vmrole_host):
    assert vmrole_host.vmrole.listening(5986)


def test_hosts_file_is_present(vmrole_host):
    assert vmrole_host.file(r"C:\Windows\System32\drivers\etc\hosts").exists


def test_the_image_is_windows_server(vmrole_host):
    product = vmrole_host.vmrole.registry_value(r"HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion", "ProductName")
    assert product is not None and product.startswith("Windows Server")


# ---- the web role's instances ---------------------------------------------------------------------------


@pytest.mark.vmrole_role("WebVM")
def test_iis_runs_and_listens_on_http(vmrole_host):
    assert vmrole_host.vmrole.service("W3SVC").status == "Running"
    assert vmrole_host.vmrole.listening(80)


# ---- through the load balancer --------------------------------------------------------------------------


def test_the_site_answers_through_the_vip(vmrole_http, vmrole_instances):
    response = vmrole_http.get("/")
    assert response.status_code == 200
    # the fabric's instances (and a well-behaved app) say who served the request
    served_by = response.headers.get("X-Served-By")
    assert served_by in {i.name for i in vmrole_instances}
