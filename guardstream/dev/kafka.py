"""Apache Kafka (KRaft) from Maven Central, run from Python: the integration tests' broker, one node or
three, and `guardstream broker --kafka`.

Maven fetches a release's jars once into `~/.cache/guardstream/kafka-<version>/libs`; every jar is
checked against the sha256 list shipped beside this module (`kafka_jars/<version>.sha256`), so what
runs is exactly what was pinned. Each node is one JVM in combined mode (broker and controller).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from guardstream.dev.broker import free_port

NEWEST = "4.4.0"  # the newest 4.x release
COMPAT = "3.9.2"  # the newest 3.9.x: what most managed clusters still run
# what Maven resolves for each release: the broker, and the logging binding its distribution ships
RELEASES = {
    "4.4.0": ["org.apache.kafka:kafka_2.13:4.4.0", "org.apache.logging.log4j:log4j-slf4j-impl:2.25.5"],
    "3.9.2": ["org.apache.kafka:kafka_2.13:3.9.2", "org.slf4j:slf4j-reload4j:1.7.36", "ch.qos.reload4j:reload4j:1.2.25"],
}
JARS = Path(__file__).with_name("kafka_jars")

# The brokers' settings for tests, all in this one place (topics the product creates get their own
# replication and configs from wire/topics.py).
TEST_BROKER_CONFIG = {
    # a new consumer group's first join is not held back 3 s waiting for more members
    "group.initial.rebalance.delay.ms": 0,
    # fewer internal partitions than the default 50: the first group and transaction start sooner
    "offsets.topic.num.partitions": 8,
    "transaction.state.log.num.partitions": 4,
    # two cores for every test process: small thread pools, a small heap (JVM options below)
    "num.network.threads": 2,
    "num.io.threads": 2,
    "background.threads": 2,
    "num.recovery.threads.per.data.dir": 1,
    "log.cleaner.threads": 1,
    # the cleaner looks for work every 200 ms (default 15 s), so compaction tests see it run soon;
    # topics that a test wants compacted soon set segment.ms and min.cleanable.dirty.ratio themselves
    "log.cleaner.backoff.ms": 200,
    "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
    # a broker that dies is noticed within seconds, not 9 s (faults tests)
    "broker.session.timeout.ms": 4000,
    "broker.heartbeat.interval.ms": 1000,
}
# a broker started often and lightly loaded: the quick JIT only and the serial collector halve the
# CPU a node takes to start (about 11 -> 6 s here) and cut its idle CPU by a third
JVM_OPTIONS = ["-Xms128m", "-Xmx768m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]
LOG_CONFIG_4 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        Pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: org.apache.kafka.common.config
        level: WARN
"""
LOG_CONFIG_3 = """log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.kafka.common.config=WARN
log4j.logger.kafka.server.KafkaConfig=WARN
"""
STARTED = "Kafka Server started"
SUPER_USER = "admin"  # with `users`: the principal that sets ACLs and creates topics


def make_tls(directory: Path) -> tuple[Path, Path]:
    """A CA made here and the brokers' certificate for 127.0.0.1 and localhost, signed by it: the CA
    file clients trust, and the brokers' PEM key store (key and chain)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "guardstream test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    broker = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_file, store = directory / "ca.pem", directory / "broker.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    store.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                      + broker.public_bytes(pem) + ca.public_bytes(pem))
    return ca_file, store


class KafkaError(RuntimeError):
    pass


def cache_dir(version: str) -> Path:
    home = Path(os.environ.get("GUARDSTREAM_HOME", Path.home() / ".cache" / "guardstream"))
    return home / f"kafka-{version}"


def pinned(version: str) -> dict[str, str]:
    if version not in RELEASES:
        raise KafkaError(f"Kafka {version} is not pinned here; pinned: {', '.join(RELEASES)}")
    lines = (JARS / f"{version}.sha256").read_text().split("\n")
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


def verify(libs: Path, version: str) -> list[str]:
    """What is wrong with a release's jars on disk: missing, unexpected or altered ones (empty: all good)."""
    expected = pinned(version)
    present = {p.name for p in libs.glob("*.jar")} if libs.is_dir() else set()
    problems = [f"missing {name}" for name in sorted(set(expected) - present)]
    problems += [f"not pinned: {name}" for name in sorted(present - set(expected))]
    for name in sorted(set(expected) & present):
        if hashlib.sha256((libs / name).read_bytes()).hexdigest() != expected[name]:
            problems.append(f"sha256 differs: {name}")
    return problems


def fetch(version: str = NEWEST, report=print) -> Path:
    """The release's jars, fetched by Maven on first use and checked against their pinned sha256
    (one process at a time: the test processes may all ask at once)."""
    libs = cache_dir(version) / "libs"
    cache_dir(version).mkdir(parents=True, exist_ok=True)
    with open(cache_dir(version).with_name(f".kafka-{version}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if libs.is_dir() and not verify(libs, version):
            return libs
        return _fetch_with_maven(version, libs, report)


def _fetch_with_maven(version: str, libs: Path, report) -> Path:
    if not shutil.which("mvn"):
        raise KafkaError("Apache Kafka comes from Maven Central through Maven: install Maven 3 (Debian: maven) and Java 17+")
    report(f"fetching Apache Kafka {version} from Maven Central into {libs} (once)")
    work = cache_dir(version)
    work.mkdir(parents=True, exist_ok=True)
    dependencies = "\n".join(
        "    <dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>".format(*coord.split(":"))
        for coord in RELEASES[version])
    (work / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n  <modelVersion>4.0.0</modelVersion>\n'
        f"  <groupId>guardstream.dev</groupId><artifactId>kafka-{version}</artifactId><version>1</version>\n"
        f"  <packaging>pom</packaging>\n  <dependencies>\n{dependencies}\n  </dependencies>\n</project>\n")
    shutil.rmtree(libs, ignore_errors=True)
    result = subprocess.run(["mvn", "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
                             f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise KafkaError(f"Maven could not fetch Kafka {version}:\n{(result.stdout + result.stderr)[-3000:]}")
    problems = verify(libs, version)
    if problems:
        shutil.rmtree(libs, ignore_errors=True)
        raise KafkaError(f"Kafka {version}'s jars are not the pinned ones ({'; '.join(problems[:10])}); "
                         f"if the release was re-pinned on purpose, update {JARS / (version + '.sha256')}")
    return libs


@dataclass
class Node:
    node_id: int
    port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen | None = None
    log_offset: int = field(default=0)

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class KafkaCluster:
    """`nodes` combined broker/controller nodes on 127.0.0.1; `port` is the first node's client port.

    With three nodes, topics default to replication factor 3 and `min.insync.replicas=2`."""

    def __init__(self, nodes: int = 1, port: int | None = None, version: str = NEWEST, directory: Path | None = None,
                 broker_config: dict[str, object] | None = None, users: dict[str, str] | None = None,
                 report=lambda line: None):
        """`users` (name → password, `SUPER_USER` among them): clients connect over SASL_SSL with
        SCRAM-SHA-512 as one of them, trusting `ca_file`, and ACLs decide what each may do."""
        self.version, self.report, self.users = version, report, users
        self.directory = Path(directory) if directory else cache_dir(version) / "run" / uuid.uuid4().hex[:8]
        self._owns_directory = directory is None
        first = port or free_port()
        self.nodes = [Node(i + 1, first + i if port else (first if i == 0 else free_port()), free_port(),
                           self.directory / f"node-{i + 1}") for i in range(nodes)]
        replicas = min(3, nodes)
        self.config = {**TEST_BROKER_CONFIG, "offsets.topic.replication.factor": replicas,
                       "transaction.state.log.replication.factor": replicas,
                       "transaction.state.log.min.isr": min(2, replicas), "default.replication.factor": replicas,
                       "min.insync.replicas": min(2, replicas), **(broker_config or {})}
        self.bootstrap = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        self.libs: Path | None = None
        self.ca_file: Path | None = None
        if users is not None and SUPER_USER not in users:
            raise KafkaError(f"users must include the super user {SUPER_USER!r}, who sets the ACLs")

    def node(self, node_id: int) -> Node:
        return self.nodes[node_id - 1]

    def _properties(self, node: Node) -> str:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        client = "SASL_SSL" if self.users is not None else "PLAINTEXT"
        lines = {"process.roles": "broker,controller", "node.id": node.node_id, "controller.quorum.voters": voters,
                 "listeners": f"{client}://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
                 "advertised.listeners": f"{client}://127.0.0.1:{node.port}",
                 "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": client,
                 "listener.security.protocol.map": f"{client}:{client},CONTROLLER:PLAINTEXT",
                 "log.dirs": node.directory / "data", **self.config}
        if self.users is not None:  # the controllers talk PLAINTEXT on loopback, as ANONYMOUS
            lines.update({
                "sasl.enabled.mechanisms": "SCRAM-SHA-512", "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                    "org.apache.kafka.common.security.scram.ScramLoginModule required "
                    f'username="{SUPER_USER}" password="{self.users[SUPER_USER]}";',
                "ssl.keystore.type": "PEM", "ssl.keystore.location": self.directory / "tls" / "broker.pem",
                "ssl.truststore.type": "PEM", "ssl.truststore.location": self.directory / "tls" / "ca.pem",
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users": f"User:{SUPER_USER};User:ANONYMOUS", "allow.everyone.if.no.acl.found": "false"})
        return "".join(f"{key}={value}\n" for key, value in lines.items())

    def _java(self, main: str, *args: str) -> list[str]:
        major = int(self.version.split(".")[0])
        logging = (f"-Dlog4j2.configurationFile={self.directory / 'log4j2.yaml'}" if major >= 4
                   else f"-Dlog4j.configuration=file:{self.directory / 'log4j.properties'}")
        return ["java", *JVM_OPTIONS, logging, "-cp", f"{self.libs}/*", main, *args]

    def start(self, timeout_s: float = 120) -> KafkaCluster:
        self.libs = fetch(self.version, report=self.report)
        if not shutil.which("java"):
            raise KafkaError("Apache Kafka needs Java 17 or newer on PATH")
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "log4j2.yaml").write_text(LOG_CONFIG_4)
        (self.directory / "log4j.properties").write_text(LOG_CONFIG_3)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        scram = []
        if self.users is not None:
            self.ca_file, _ = make_tls(self.directory / "tls")
            for name, password in self.users.items():
                scram += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        try:
            for node in self.nodes:
                node.directory.mkdir(parents=True, exist_ok=True)
                (node.directory / "server.properties").write_text(self._properties(node))
                # `--cluster-id=`: an id may begin with "-", which the tool would take for an option
                result = subprocess.run(self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                                                   "-c", str(node.directory / "server.properties"), *scram),
                                        capture_output=True, text=True, timeout=120)
                if result.returncode != 0:
                    raise KafkaError(f"formatting node {node.node_id}'s storage failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
            for node in self.nodes:
                self.start_node(node.node_id, wait=False)
            for node in self.nodes:
                self.wait_started(node.node_id, timeout_s)
        except BaseException:  # a failed or interrupted start leaves no JVM behind
            self.stop()
            raise
        return self

    def start_node(self, node_id: int, wait: bool = True, timeout_s: float = 120) -> Node:
        """(Re)start one node on its formatted storage."""
        node = self.node(node_id)
        node.log_offset = node.log_path.stat().st_size if node.log_path.exists() else 0
        with open(node.log_path, "ab") as log:
            node.process = subprocess.Popen(self._java("kafka.Kafka", str(node.directory / "server.properties")),
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_started(node_id, timeout_s)
        return node

    def wait_started(self, node_id: int, timeout_s: float = 120) -> None:
        node = self.node(node_id)
        deadline = time.monotonic() + timeout_s
        while True:
            log = node.log_path.read_bytes()[node.log_offset:].decode(errors="replace") if node.log_path.exists() else ""
            if STARTED in log:
                return
            if not node.running():
                raise KafkaError(f"Kafka node {node.node_id} exited with code {node.process.returncode} "
                                 f"(log: {node.log_path}):\n{log[-3000:]}")
            if time.monotonic() > deadline:
                raise KafkaError(f"Kafka node {node.node_id} did not start within {timeout_s:.0f}s (log: {node.log_path})")
            time.sleep(0.1)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would."""
        node = self.node(node_id)
        if node.running():
            node.process.kill()
            node.process.wait()

    def pause(self, node_id: int) -> None:
        self.node(node_id).process.send_signal(signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        self.node(node_id).process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for node in self.nodes:
            if node.running():
                node.process.send_signal(signal.SIGCONT)  # a paused node cannot act on SIGTERM
                node.process.terminate()
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(20)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

