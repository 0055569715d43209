#!/usr/bin/env python3
"""Prints a user token for trying the billing page locally (scripts/up.sh's development secret).

    python3 scripts/dev-token.py WORKSPACE [owner|admin|member] [HOURS]

Signed with $SPIN_VARIABLE_AUTH_JWT_SECRET, or the development secret scripts/up.sh uses.
Production tokens come from the platform's own backend, signed with its `auth_jwt_secret`.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(secret, workspace, role="owner", seconds=8 * 3600):
    """An HS256 user token as the contract takes it (claims sub, workspace_id, role, exp)."""
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"sub": "dev-user", "workspace_id": workspace, "role": role, "exp": int(time.time() + seconds)}
    payload = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    workspace = sys.argv[1]
    role = sys.argv[2] if len(sys.argv) > 2 else "owner"
    hours = float(sys.argv[3]) if len(sys.argv) > 3 else 8
    secret = os.environ.get("SPIN_VARIABLE_AUTH_JWT_SECRET", "dev-jwt-secret-change-me")
    print(token(secret, workspace, role, hours * 3600))


if __name__ == "__main__":
    main()
