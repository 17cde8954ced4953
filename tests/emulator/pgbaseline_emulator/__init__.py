"""pgbaseline's AWS test emulator: moto in server mode with AWS-fidelity patches.

Import order matters: ``patches.apply()`` must run before moto serves the first request.
"""

from .server import build_app, make_emulator_server  # noqa: F401
