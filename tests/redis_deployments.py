"""Redis deployments on 127.0.0.1 for the tests, each started and stopped by the test in a tmp directory:

- `make_certs`: a CA, a server certificate (SAN 127.0.0.1 and localhost) and a client certificate, made
  with `cryptography`; `TlsRedisServer`: `redis-server --port 0 --tls-port P ...`, requiring a client
  certificate (`--tls-auth-clients yes`) or not; `tls_unsupported()` says why TLS cannot be tested.
- `ClusterNodes`: 3 masters (`--cluster-enabled yes`) joined by `redis-cli --cluster create`.
- `SentinelSetup`: a master, its replica and one sentinel (quorum 1) watching `mymaster`; `failover()`.

`connection()` of each is the `AIRFLOW_CONN_<ID>` JSON a user would write. Nothing sleeps a fixed time:
`wait_until` polls with a deadline.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.cluster import REDIS_PASSWORD, REDIS_SERVER, RedisServer
from tests.serving import HOST, free_port

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
SENTINEL_PASSWORD = "sentinel-pass-51c0e2"
MASTER = "mymaster"


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll `check` (exceptions count as not yet) until it returns something true; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    problem: object = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            problem = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last problem: {problem})")
        time.sleep(0.05)


def cli(port: int, *args: str, password: str = REDIS_PASSWORD) -> str:
    """`redis-cli -h 127.0.0.1 -p PORT -a PASSWORD ARGS...`, its output."""
    command = [REDIS_CLI, "-h", HOST, "-p", str(port), "-a", password, "--no-auth-warning", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


# -- TLS ------------------------------------------------------------------------------------------------


def tls_unsupported() -> str | None:
    """Why this redis-server cannot serve TLS, or None: a server with TLS and no port at all exits at
    once saying so; one built without TLS refuses the `tls-port` option."""
    try:
        done = subprocess.run(
            [REDIS_SERVER, "--port", "0", "--tls-port", "0", "--save", "", "--loglevel", "warning"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"redis-server could not be asked about TLS: {exc}"
    if "not listen anywhere" in done.stdout + done.stderr:
        return None
    return "this redis-server is built without TLS support (it refuses --tls-port)"


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def make_certs(directory: Path) -> Certs:
    """A CA, and a server and a client certificate it signed, as PEM files in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "custom-token test CA")])
    ca = (
        _certificate("custom-token test CA", ca_key, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths: dict[str, Path] = {"ca": directory / "ca.pem"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for role, usage in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
        cert = (
            _certificate(f"custom-token test {role}", key, ca_name, ca_key)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        paths[f"{role}_cert"] = directory / f"{role}.pem"
        paths[f"{role}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{role}_key"] = _write_key(key, directory / f"{role}-key.pem")
    return Certs(**paths)


class TlsRedisServer(RedisServer):
    """`redis-server --port 0 --tls-port P`, the server certificate, the CA, `--tls-auth-clients yes|no`."""

    def __init__(self, directory: Path, certs: Certs, auth_clients: bool) -> None:
        port = free_port()
        args = [
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key),
            "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes" if auth_clients else "no",
        ]  # fmt: skip
        super().__init__(directory, port=port, args=args)
        self.certs = certs

    def client(self, db: int = 0) -> Any:
        import redis

        return redis.Redis(
            host=HOST, port=self.port, password=self.password, db=db, socket_timeout=5, ssl=True,
            ssl_ca_certs=str(self.certs.ca), ssl_certfile=str(self.certs.client_cert),
            ssl_keyfile=str(self.certs.client_key),
        )  # fmt: skip

    def connection(self, *, client_cert: bool = True, **_: Any) -> str:  # type: ignore[override]
        extra: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.certs.ca)}
        if client_cert:
            extra.update(ssl_certfile=str(self.certs.client_cert), ssl_keyfile=str(self.certs.client_key))
        return json.dumps(
            {"conn_type": "redis", "host": HOST, "port": self.port, "password": self.password, "extra": extra}
        )


# -- Redis Cluster ----------------------------------------------------------------------------------------


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        try:
            import socket

            with socket.socket() as sock:
                sock.bind((HOST, port + 10000))
        except OSError:
            continue
        return port


class ClusterNodes:
    """Three masters on 127.0.0.1, each `--cluster-enabled yes` in a directory of its own, joined into one
    cluster (all 16384 slots) by `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(
                directory / f"node-{n}",
                port=_cluster_port(),
                args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--masterauth",
                    REDIS_PASSWORD,
                ],
            )
            for n in range(masters)
        ]
        self.password = REDIS_PASSWORD

    def start(self) -> Self:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"{HOST}:{node.port}" for node in self.nodes]
            out = cli(
                self.nodes[0].port,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            )
            if "All 16384 slots covered" not in out:
                raise RuntimeError(f"redis-cli --cluster create failed: {out[-2000:]}")
            for node in self.nodes:
                wait_until(lambda node=node: self._ready(node), f"cluster node {node.port} ready")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self, node: RedisServer) -> bool:
        info = node.client().execute_command("CLUSTER", "INFO").decode()
        return "cluster_state:ok" in info and f"cluster_known_nodes:{len(self.nodes)}" in info

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self) -> Any:
        from redis.cluster import RedisCluster

        return RedisCluster(host=HOST, port=self.nodes[0].port, password=self.password, socket_timeout=5)

    def connection(self, **extra: Any) -> str:
        """A `redis` connection to the first node, with extra `cluster: true` (and `extra`)."""
        return json.dumps(
            {
                "conn_type": "redis",
                "host": HOST,
                "port": self.nodes[0].port,
                "password": self.password,
                "extra": {"cluster": True, **extra},
            }
        )

    def scan(self) -> dict[bytes, tuple[bytes | None, int]]:
        """Every key of every node, with its value and its TTL in ms."""
        found: dict[bytes, tuple[bytes | None, int]] = {}
        for node in self.nodes:
            found.update(node.scan())
        return found

    def flushall(self) -> None:
        for node in self.nodes:
            node.client().flushall()


# -- Sentinel ---------------------------------------------------------------------------------------------


class SentinelSetup:
    """A master, a replica of it and one sentinel (quorum 1, down after 1 s) that watches `mymaster`;
    the sentinel has a password of its own (`SENTINEL_PASSWORD`)."""

    def __init__(self, directory: Path) -> None:
        fast_sync = ["--masterauth", REDIS_PASSWORD, "--repl-diskless-sync-delay", "0"]
        self.master = RedisServer(directory / "master", args=fast_sync)
        self.replica = RedisServer(
            directory / "replica", args=[*fast_sync, "--replicaof", HOST, str(self.master.port)]
        )
        config = directory / "sentinel" / "sentinel.conf"
        self.sentinel = RedisServer(
            config.parent, password=SENTINEL_PASSWORD, args=["--sentinel"], config=config
        )
        self.config = config

    def start(self) -> Self:
        try:
            self.master.start()
            self.replica.start()
            wait_until(lambda: self._linked(self.replica), "the replica in sync with the master")
            self.config.parent.mkdir(parents=True, exist_ok=True)
            self.config.write_text(
                f"sentinel monitor {MASTER} {HOST} {self.master.port} 1\n"
                f"sentinel auth-pass {MASTER} {REDIS_PASSWORD}\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
            )
            self.sentinel.start()
            wait_until(self._replica_known, "the sentinel knows the replica")
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _linked(server: RedisServer) -> bool:
        info = server.client().info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _replica_known(self) -> bool:
        replicas = self.sentinel.client().sentinel_slaves(MASTER)
        return any(
            r.get("is_slave") and not r.get("is_sdown") and not r.get("is_disconnected") for r in replicas
        )

    def _failover_over(self) -> bool:
        state = self.sentinel.client().sentinel_master(MASTER)
        return int(state["port"]) == self.replica.port and "failover_in_progress" not in str(state["flags"])

    def master_port(self) -> int:
        """The master's port, as the sentinel reports it."""
        _, port = self.sentinel.client().sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def failover(self) -> None:
        """`SENTINEL FAILOVER mymaster` (redis-cli to the sentinel), then wait until the sentinel names the
        replica as the master and it answers as one."""
        new = self.replica
        wait_until(
            lambda: (
                "OK" in cli(self.sentinel.port, "SENTINEL", "FAILOVER", MASTER, password=SENTINEL_PASSWORD)
            ),
            "the sentinel starts a failover",
        )
        wait_until(lambda: self.master_port() == new.port, "the sentinel names the new master")
        wait_until(lambda: new.client().info("replication").get("role") == "master", "the new master")
        # get-master-addr-by-name names the promoted replica at once; SENTINEL MASTERS (which clients
        # read) only when the failover is over: until then a client is still sent to the old master
        wait_until(self._failover_over, "the sentinel ends the failover", timeout=30)
        self.master, self.replica = new, self.master

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connection(self, *, sentinel_hosts: list[str] | None = None, port: int | None = None) -> str:
        """A `redis` connection through the sentinel: host:port the sentinel, the master's password."""
        extra: dict[str, Any] = {
            "sentinel": True,
            "sentinel_master": MASTER,
            "sentinel_password": SENTINEL_PASSWORD,
        }
        if sentinel_hosts is not None:
            extra["sentinel_hosts"] = sentinel_hosts
        return json.dumps(
            {
                "conn_type": "redis",
                "host": HOST,
                "port": port or self.sentinel.port,
                "password": REDIS_PASSWORD,
                "extra": extra,
            }
        )
