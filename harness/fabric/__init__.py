"""The local fabric: a Cloud Service deployment on one machine, speaking the real protocols.

See CONTRACT.md in this folder for how its parts fit together.
"""
