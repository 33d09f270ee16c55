"""Run Flower apps for real in tests (flwr 1.41): `flwr run` on the local simulation SuperLink,
or on a SuperLink + SuperNodes (Deployment Engine) on loopback, and stop every process afterwards.

Flower starts its SuperLink, SuperExec, ServerApp, ClientApp and Ray processes in sessions of their
own, so killing one process group is not enough. Every process started here carries a unique tag in
its environment, which all those descendants inherit; teardown finds them by that tag in /proc and
stops them by PID, so nothing outlives a test and no one else's process is touched (Linux only).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

TAG_ENV = "FEDSAFE_RUNTIME_TAG"
BIN_DIR = Path(sys.executable).parent
COMPLETED = "finished:completed"
_RUN_ID = re.compile(r"Successfully started run (\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
ConfigValue = str | int | float | bool


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that are free right now (all bound at once)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def pids_with_env(entry: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds `entry` (`NAME=value`)."""
    needle = entry.encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            found.append(int(pid))
    return found


def tagged_pids(tag: str) -> list[int]:
    """Live processes started by a `ProcessTracker` with this tag, or by their descendants."""
    return pids_with_env(f"{TAG_ENV}={tag}")


def read_log(path: Path) -> str:
    """A log file's text without ANSI colour codes, so tests can match plain lines."""
    return _ANSI.sub("", path.read_text(errors="replace"))


def _signal(pid: int, sig: signal.Signals) -> None:
    """Signal one process, and its whole group when it leads one (Flower's detached children do)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def toml_value(value: ConfigValue) -> str:
    """A run-config value as TOML, the syntax `flwr run --run-config k=v` parses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


class ProcessTracker:
    """Starts tagged processes with logs in files and stops every tagged descendant by PID."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.tag = uuid.uuid4().hex
        self.log_dir = log_dir
        self.env = {**env, TAG_ENV: self.tag}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        """Start `args` in a new session; stdout and stderr go to `<log_dir>/<name>.log`."""
        with (self.log_dir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def run(self, name: str, args: list[str], timeout: float) -> int | None:
        """Run `args` to the end like `start`; its exit code, or None if it ran past `timeout`."""
        proc = self.start(name, args)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal(proc.pid, signal.SIGKILL)
            proc.wait()
            return None

    def log(self, name: str) -> str:
        """What process `name` has written so far, without colour codes."""
        return read_log(self.log_dir / f"{name}.log")

    def stop_all(self, grace: float = 2.0) -> list[int]:
        """SIGTERM the processes started here, then every tagged one, SIGKILL after `grace` s.

        flwr-simulation and Ray workers ignore SIGTERM, hence the short grace.
        Returns the tagged PIDs still alive afterwards (empty unless something resisted SIGKILL).
        """
        for proc in self.procs.values():
            if proc.poll() is None:
                _signal(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        terminated: set[int] = set()
        while (alive := tagged_pids(self.tag)) and time.monotonic() < deadline:
            for pid in set(alive) - terminated:  # children the CLI detached (SuperExec, Ray...)
                _signal(pid, signal.SIGTERM)
            terminated.update(alive)
            time.sleep(0.1)
        for pid in alive:
            _signal(pid, signal.SIGKILL)
        for proc in self.procs.values():
            proc.wait()
        kill_deadline = time.monotonic() + 5.0
        while (alive := tagged_pids(self.tag)) and time.monotonic() < kill_deadline:
            time.sleep(0.1)
        return alive


@dataclass
class FlowerRunResult:
    """What a `flwr run` left: exit code, final run status and every log, for tests to assert on."""

    returncode: int | None  # of `flwr run`; None when it ran past the timeout
    status: str  # from `flwr ls`: "finished:completed", "finished:failed", ... or "unknown"
    run_id: int | None
    run_log: str  # `flwr run --stream`: the ServerApp log (in simulation also ClientApp prints)
    process_logs: dict[str, str]  # "superlink", "supernode-<i>" (ClientApp output), ...
    log_dir: Path
    flwr_home: Path
    seconds: float
    leftover_pids: list[int] = field(default_factory=list)  # filled in after teardown

    @property
    def completed(self) -> bool:
        """True when `flwr run` exited 0 and the SuperLink reports the run as completed."""
        return self.returncode == 0 and self.status == COMPLETED

    @property
    def node_log(self) -> str:
        """All SuperNode logs (Deployment Engine), which hold the ClientApps' output."""
        return "\n".join(text for name, text in sorted(self.process_logs.items()) if name.startswith("supernode"))

    def describe(self, tail: int = 3000) -> str:
        """Status and the end of every log, for assertion messages."""
        parts = [f"returncode={self.returncode} status={self.status} run_id={self.run_id} logs={self.log_dir}"]
        for name, text in {"flwr-run": self.run_log, **self.process_logs}.items():
            parts.append(f"--- {name} (last {tail} chars) ---\n{text[-tail:]}")
        return "\n".join(parts)


class FlowerRuntime:
    """One isolated Flower world: its own FLWR_HOME, ports, environment and process tracker."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.flwr_home = work_dir / "flwr-home"
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        local_http_port, local_control_port = free_ports(2)
        env = {
            **os.environ,
            "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(self.flwr_home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_DISABLE_UPDATE_CHECK": "1",  # no network
            "FLWR_TELEMETRY_ENABLED": "0",  # no network
            "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",  # default 1 s per ServerApp/ClientApp start
            # `flwr run` on `:local:` starts its SuperLink on these ports (default 39091/39093):
            # unique ones keep parallel tests from sharing a SuperLink.
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(local_http_port),
            "FLWR_LOCAL_CONTROL_API_PORT": str(local_control_port),
            "PYTHONUNBUFFERED": "1",
            "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
        }
        self.tracker = ProcessTracker(work_dir / "logs", env)
        self.runs = 0

    def write_connection(self, name: str, entry: Mapping[str, ConfigValue]) -> None:
        """Write FLWR_HOME/config.toml with one SuperLink connection, made the default."""
        lines = ["[superlink]", f'default = "{name}"', "", f"[superlink.{name}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in entry.items()]
        (self.flwr_home / "config.toml").write_text("\n".join(lines) + "\n")

    def flwr_run(
        self,
        app_dir: Path,
        connection: str,
        run_config: Mapping[str, ConfigValue] | None,
        extra_args: list[str],
        timeout: float,
    ) -> FlowerRunResult:
        """`flwr run <app> <connection> --stream`, then the run's final status from `flwr ls`."""
        self.runs += 1
        name = f"flwr-run-{self.runs}"
        args = [str(BIN_DIR / "flwr"), "run", str(app_dir), connection, "--stream", *extra_args]
        if run_config:
            # One TOML file, not one `--run-config k=v` per key: flwr 1.41 merges those with a
            # shallow dict update, so `fedsafe.a.x=1` is lost once `fedsafe.b.y=2` follows.
            overrides = self.work_dir / f"run-config-{self.runs}.toml"
            overrides.write_text("".join(f"{key} = {toml_value(value)}\n" for key, value in run_config.items()))
            args += ["--run-config", str(overrides)]
        start = time.monotonic()
        returncode = self.tracker.run(name, args, timeout)
        run_log = self.tracker.log(name)
        match = _RUN_ID.search(run_log)
        run_id = int(match.group(1)) if match else None
        status = "timeout" if returncode is None else "unknown"
        if run_id is not None and returncode is not None:
            status = self._final_status(connection, run_id, deadline=time.monotonic() + 15.0)
        return FlowerRunResult(
            returncode=returncode,
            status=status,
            run_id=run_id,
            run_log=run_log,
            process_logs=self.process_logs(),
            log_dir=self.tracker.log_dir,
            flwr_home=self.flwr_home,
            seconds=time.monotonic() - start,
        )

    def _final_status(self, connection: str, run_id: int, deadline: float) -> str:
        """Poll `flwr ls --run-id` until the run is finished (the stream ends just before)."""
        status = "unknown"
        while time.monotonic() < deadline:
            proc = subprocess.run(
                [str(BIN_DIR / "flwr"), "ls", connection, "--run-id", str(run_id), "--format", "json"],
                capture_output=True, text=True, env=self.tracker.env, timeout=30, check=False,
            )
            try:
                status = json.loads(proc.stdout)["runs"][0]["status"]
            except (ValueError, KeyError, IndexError):
                status = "unknown"
            if status.startswith("finished"):
                break
            time.sleep(0.2)
        return status

    def process_logs(self) -> dict[str, str]:
        """Logs of the long-running processes, plus the local SuperLink's own log file."""
        logs = {name: self.tracker.log(name) for name in self.tracker.procs if not name.startswith("flwr-run")}
        local_superlink_log = self.flwr_home / "local-superlink" / "superlink.log"
        if local_superlink_log.exists():
            logs["superlink"] = read_log(local_superlink_log)
        return logs


def run_simulation(
    app_dir: Path,
    work_dir: Path,
    *,
    num_supernodes: int = 2,
    run_config: Mapping[str, ConfigValue] | None = None,
    federation_config: Mapping[str, ConfigValue] | None = None,
    timeout: float = 300.0,
) -> FlowerRunResult:
    """`flwr run <app_dir>` on the local simulation SuperLink, then stop everything it started.

    `federation_config` adds simulation settings (`client-resources-num-cpus`, `backend`, ...).
    """
    runtime = FlowerRuntime(work_dir)
    runtime.write_connection("local", {"address": ":local-in-memory:"})
    settings = {"num-supernodes": num_supernodes, **(federation_config or {})}
    args = []
    for key, value in settings.items():
        args += ["--federation-config", f"{key}={toml_value(value)}"]
    try:
        result = runtime.flwr_run(app_dir, "local", run_config, args, timeout)
    finally:
        leftovers = runtime.tracker.stop_all()
    result.process_logs = runtime.process_logs()
    result.leftover_pids = leftovers
    return result


class TlsFiles(NamedTuple):
    """PEM files: a CA certificate, and a SuperLink certificate for 127.0.0.1 signed by it with its key."""

    ca: Path
    cert: Path
    key: Path


def make_test_certificates(folder: Path) -> TlsFiles:
    """A throwaway CA and a SuperLink certificate for 127.0.0.1, valid for one day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject: str, issuer: x509.Certificate | None, key: ec.EllipticCurvePrivateKey,
                    signer: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder().subject_name(name).issuer_name(issuer.subject if issuer else name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        )
        if issuer is not None:
            san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(signer, hashes.SHA256())

    folder.mkdir(parents=True, exist_ok=True)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("fedsafe-test-ca", None, ca_key, ca_key)
    files = TlsFiles(folder / "ca.pem", folder / "superlink.pem", folder / "superlink.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(certificate("127.0.0.1", ca, key, ca_key).public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


class Deployment:
    """A running SuperLink and SuperNodes on loopback; submit apps with `run`."""

    def __init__(self, runtime: FlowerRuntime, superlink_port: int, num_supernodes: int, tls: TlsFiles | None) -> None:
        self.runtime = runtime
        self.superlink_address = f"127.0.0.1:{superlink_port}"
        self.num_supernodes = num_supernodes
        self.tls = tls
        self.leftover_pids: list[int] = []  # filled in after teardown

    def run(
        self, app_dir: Path, run_config: Mapping[str, ConfigValue] | None = None, timeout: float = 300.0
    ) -> FlowerRunResult:
        """`flwr run <app_dir> deployment --stream` and the run's final status and logs."""
        return self.runtime.flwr_run(app_dir, "deployment", run_config, [], timeout)


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, tls: TlsFiles | None, timeout: float) -> None:
    """Block until the SuperLink answers on its /health endpoint (over TLS when it has a certificate)."""
    deadline = time.monotonic() + timeout
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/health"
    context = ssl.create_default_context(cafile=str(tls.ca)) if tls else None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flower-superlink exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=0.5, context=context) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"flower-superlink not healthy on port {port} after {timeout} s")


@contextmanager
def local_deployment(
    work_dir: Path,
    num_supernodes: int = 2,
    node_config: Mapping[str, ConfigValue] | None = None,
    tls: bool = False,
    startup_timeout: float = 60.0,
) -> Iterator[Deployment]:
    """Start `flower-superlink` and N `flower-supernode`s on loopback; stop them all on exit.

    SuperNode i gets `partition-id=i num-partitions=N` plus `node_config`. With `tls`, the
    SuperLink serves a certificate from a throwaway CA that SuperNodes and `flwr` verify;
    otherwise everything runs `--insecure` (plain HTTP).
    """
    runtime = FlowerRuntime(work_dir)
    port, *node_ports = free_ports(1 + num_supernodes)
    files = make_test_certificates(work_dir / "certs") if tls else None
    if files:
        link_security = ["--ssl-ca-certfile", str(files.ca), "--ssl-certfile", str(files.cert),
                         "--ssl-keyfile", str(files.key)]
        node_security = ["--root-certificates", str(files.ca)]
        runtime.write_connection("deployment", {"address": f"127.0.0.1:{port}", "root-certificates": str(files.ca)})
    else:
        link_security = node_security = ["--insecure"]
        runtime.write_connection("deployment", {"address": f"127.0.0.1:{port}", "insecure": True})
    deployment = Deployment(runtime, port, num_supernodes, files)
    try:
        superlink = runtime.tracker.start(
            "superlink",
            [str(BIN_DIR / "flower-superlink"), *link_security, "--host", "127.0.0.1", "--port", str(port),
             "--disable-runtime-dependency-installation"],
        )
        for index in range(num_supernodes):
            settings = {"partition-id": index, "num-partitions": num_supernodes, **(node_config or {})}
            runtime.tracker.start(
                f"supernode-{index}",
                [str(BIN_DIR / "flower-supernode"), *node_security, "--superlink", deployment.superlink_address,
                 "--host", "127.0.0.1", "--port", str(node_ports[index]),
                 "--node-config", " ".join(f"{key}={toml_value(value)}" for key, value in settings.items())],
            )
        _wait_healthy(superlink, port, files, startup_timeout)
        yield deployment
    finally:
        deployment.leftover_pids = runtime.tracker.stop_all()


def run_deployment(
    app_dir: Path,
    work_dir: Path,
    *,
    num_supernodes: int = 2,
    run_config: Mapping[str, ConfigValue] | None = None,
    node_config: Mapping[str, ConfigValue] | None = None,
    tls: bool = False,
    timeout: float = 300.0,
) -> FlowerRunResult:
    """Run one app on a fresh SuperLink + N SuperNodes, stop them, and return the result."""
    with local_deployment(work_dir, num_supernodes, node_config, tls) as deployment:
        result = deployment.run(app_dir, run_config, timeout)
    result.process_logs = deployment.runtime.process_logs()
    result.leftover_pids = deployment.leftover_pids
    return result
