"""``coursekit publish``: run lessons top to bottom under a profile and keep their outputs, stamped
with the profile, device, date and the sha256 of their code (``coursekit.notebooks.publish``).

    coursekit publish notebooks/02_simclr.ipynb --profile demo
"""
from coursekit.notebooks import add_publish_arguments as add_arguments
from coursekit.notebooks import run_publish as run

__all__ = ["add_arguments", "run"]
