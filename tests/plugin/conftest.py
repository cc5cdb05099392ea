"""Fixtures for plugin tests: a small, clean web+worker service model written into a pytester dir."""

from __future__ import annotations

import pytest

CSDEF = """<?xml version="1.0" encoding="utf-8"?>
<ServiceDefinition name="Shop" xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceDefinition">
  <WebRole name="Web" vmsize="Small">
    <ConfigurationSettings><Setting name="Greeting" /></ConfigurationSettings>
    <Endpoints>
      <InputEndpoint name="HttpIn" protocol="http" port="80" />
    </Endpoints>
  </WebRole>
</ServiceDefinition>
"""

CSCFG = """<?xml version="1.0" encoding="utf-8"?>
<ServiceConfiguration serviceName="Shop" osFamily="2" osVersion="*"
    xmlns="http://schemas.microsoft.com/ServiceHosting/2008/10/ServiceConfiguration">
  <Role name="Web">
    <Instances count="{count}" />
    <ConfigurationSettings><Setting name="Greeting" value="{greeting}" /></ConfigurationSettings>
  </Role>
</ServiceConfiguration>
"""

# A realistic-looking (fake) storage key: 64 random bytes, base64 → 88 characters.
SECRET_KEY = "q3F0bGlOa2V5Rm9yVGVzdHNPbmx5K0RvTm90VXNlSW5Qcm9kdWN0aW9uK1JlYWxseU5vdDEyMzQ1Njc4OTAxMg=="


@pytest.fixture
def model(pytester: pytest.Pytester):
    """Write ServiceDefinition.csdef + ServiceConfiguration.Cloud.cscfg; returns a writer for variants."""

    def write(count: int = 2, greeting: str = "hello", csdef: str = CSDEF) -> None:
        pytester.path.joinpath("ServiceDefinition.csdef").write_text(csdef, "utf-8")
        pytester.path.joinpath("ServiceConfiguration.Cloud.cscfg").write_text(
            CSCFG.format(count=count, greeting=greeting), "utf-8"
        )

    write()
    return write
