"""The local fabric's Azure Resource Manager face: the deployment as a VM scale set (``fabric up --api vmss``).

``server.py`` serves the ARM REST subset the live back end uses over HTTPS (the fabric's CA), ``tokens.py``
issues and checks the bearer tokens (an OpenID/OAuth2 token endpoint azure-identity can be pointed at),
``resources.py`` renders the fabric's state as ARM JSON, ``lro.py`` runs the long-running operations,
``errors.py`` holds ARM's error codes and texts, ``template.py`` reads an ARM template into a deployment.
See CONTRACT.md.
"""
