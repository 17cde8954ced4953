#!/usr/bin/env python3
"""The AWS emulator (tests/emulator), as the IAM-enforcement tests start it.

    python tests/deploy/iam_emulator.py --port PORT        (same arguments as tests/emulator/serve)

Run it with the emulator's venv python (tests/emulator/setup). The authorization-fidelity fixes
these tests need under IAM enforcement (the SigV4 signature checked over the body as sent, so
aws-sdk-rust's `%20` form encoding is accepted; denials in each service's own error shape:
RDS `AccessDenied`, EC2 `UnauthorizedOperation`, KMS `AccessDeniedException`) are part of the
emulator itself: tests/emulator/pgbaseline_emulator/auth.py, listed in tests/emulator/README.md.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "emulator"))

if __name__ == "__main__":
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    from pgbaseline_emulator.server import main

    sys.exit(main(sys.argv[1:]))
