"""A real distribution registry behind htpasswd basic auth (the hash made with bcrypt)."""

from __future__ import annotations

from pathlib import Path

import bcrypt

from devstack.localstack import LocalStack, Registry


def start_basic_registry(
    stack: LocalStack, directory: Path, user: str, password: str, realm: str = "test"
) -> Registry:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    (directory / "htpasswd").write_text(f"{user}:{hashed}\n")
    return stack.start_registry(
        config={"auth": {"htpasswd": {"realm": realm, "path": str(directory / "htpasswd")}}}
    )
