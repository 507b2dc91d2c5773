"""SuperNode authentication keys for the deployment engine (Flower's own mechanism).

Flower 1.42: a SuperLink started with ``--enable-supernode-auth`` accepts only SuperNodes
whose public key was registered beforehand through its Control API (``flwr supernode
register <public-key>``); each SuperNode starts with ``flower-supernode
--auth-supernode-private-key <key>`` and signs its requests with it. Keys are elliptic-curve
keys on a NIST curve, public keys in OpenSSH format (one line ``ecdsa-sha2-nistp384 AAAA...``),
private keys in OpenSSH private-key format. This module makes and checks such key pairs:

* :func:`make_node_keys`: one fresh P-384 key pair per lab, private keys written with mode
  0600 (for the loopback launcher, which holds both halves; in a real deployment each lab
  makes its own and sends only the ``.pub`` file);
* :func:`load_node_keys`: key pairs a user supplies (``node<i>`` + ``node<i>.pub``);
* :func:`fingerprint`: OpenSSH-style ``SHA256:<base64>`` fingerprint of a public key, the
  identity recorded in ``summary.json``.
"""
from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from ...errors import PsyauError


@dataclass(frozen=True)
class NodeKey:
    """One SuperNode's key pair on disk.

    Attributes:
        private: OpenSSH private key (given to ``flower-supernode``), or ``None`` when only
            the public half is held.
        public: OpenSSH public key (registered with the SuperLink).
        fingerprint: ``SHA256:...`` of the public key.
    """

    private: Path | None
    public: Path
    fingerprint: str


def fingerprint(public_openssh: bytes) -> str:
    """OpenSSH-style fingerprint ``SHA256:<unpadded base64 of sha256(key blob)>`` of a public
    key line (``ecdsa-sha2-nistp384 AAAA... [comment]``); same as ``ssh-keygen -lf``."""
    parts = public_openssh.split()
    if len(parts) < 2:
        raise PsyauError("not an OpenSSH public key line (expected '<type> <base64> [comment]')")
    blob = base64.b64decode(parts[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the start, atomically (temp + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def make_node_keys(out_dir: str | Path, count: int, prefix: str = "node") -> list[NodeKey]:
    """``count`` fresh P-384 key pairs ``<prefix><i>`` (private, 0600) and ``<prefix><i>.pub``.

    Args:
        out_dir: folder for the keys (made with mode 0700).
        count: number of key pairs.
        prefix: file name prefix (default: ``"node"``).

    Returns:
        one :class:`NodeKey` per pair, in index order.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    keys = []
    for i in range(count):
        key = ec.generate_private_key(ec.SECP384R1())
        priv = out / f"{prefix}{i}"
        pub = out / f"{prefix}{i}.pub"
        _write_private(priv, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()))
        line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH)
        pub.write_bytes(line + f" psyau-{prefix}{i}\n".encode())
        keys.append(NodeKey(priv, pub, fingerprint(line)))
    return keys


def _load_public(path: Path):
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise PsyauError(f"{path}: not an OpenSSH public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PsyauError(f"{path}: expected an elliptic-curve (ecdsa-sha2-nistp*) public key, "
                         f"got {type(key).__name__}")
    return key


def load_node_keys(key_dir: str | Path, count: int, prefix: str = "node", *,
                   need_private: bool = True) -> list[NodeKey]:
    """Key pairs ``<key_dir>/<prefix><i>.pub`` (and ``<prefix><i>``), ``i < count``.

    Every public key must be an EC OpenSSH key; with ``need_private``, every private key
    must exist, parse, and belong to its public key.

    Raises:
        PsyauError: a missing, unreadable or mismatched file (named in the message), or two
            nodes sharing one public key.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root = Path(key_dir)
    if not root.is_dir():
        raise PsyauError(f"node key folder {root} does not exist")
    keys, seen = [], {}
    for i in range(count):
        pub = root / f"{prefix}{i}.pub"
        if not pub.is_file():
            raise PsyauError(f"{pub}: missing (expected one public key {prefix}<i>.pub per node, "
                             f"i = 0..{count - 1})")
        pkey = _load_public(pub)
        line = pkey.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        fp = fingerprint(line)
        if fp in seen:
            raise PsyauError(f"{pub}: same public key as {seen[fp]}; every node needs its own key")
        seen[fp] = pub
        priv = None
        if need_private:
            priv = root / f"{prefix}{i}"
            if not priv.is_file():
                raise PsyauError(f"{priv}: missing (the private key SuperNode {i} starts with)")
            try:
                skey = serialization.load_ssh_private_key(priv.read_bytes(), None)
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                raise PsyauError(f"{priv}: not an unencrypted OpenSSH private key ({exc})") from None
            if not isinstance(skey, ec.EllipticCurvePrivateKey):
                raise PsyauError(f"{priv}: expected an elliptic-curve private key")
            own = skey.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                 serialization.PublicFormat.OpenSSH)
            if own != line:
                raise PsyauError(f"{priv}: does not belong to the public key {pub}")
        keys.append(NodeKey(priv, pub, fp))
    return keys
