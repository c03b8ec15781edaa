"""nucleus-provision: bring the Nucleus Cloud SQL database to the layout the code expects.

Inspect, plan, apply, verify; like Terraform, every rerun is a no-op.
"""

__version__ = "0.1.0"
