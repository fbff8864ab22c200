"""Every known Azure vTPM AK hierarchy, built synthetically in exactly its shape, chains at the agent's
start and verifies with the root alone; what cannot be chained says which issuer is missing.

AIA fetching is exercised against a real HTTP server on 127.0.0.1 (http.server in a thread), and a
listening socket that never answers; no test asserts a duration."""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID, ObjectIdentifier
from tests.pki import NOW, Issued, issue

from aicert.trust import TCG_KP_AIK_CERTIFICATE, ChainError, TrustStore, build_path
from aicert.trust.issuers import MissingIssuer, assemble_path, ca_issuers_urls, shipped_intermediates
from aicert.trust.pem import load_any, load_certificates
from aicert_agent.aia import MAX_BYTES, AiaFetcher
from aicert_agent.ak_chain import chain_at_start, chained_identity, node_condition, node_event
from aicert_agent.recorder import AkIdentity

TCG_EK = ObjectIdentifier("2.23.133.8.1")
MICROSOFT_AK = ObjectIdentifier("1.3.6.1.4.1.311.10.3.12")
CA_USAGES = (TCG_EK, TCG_KP_AIK_CERTIFICATE)  # what Azure's vTPM intermediates carry
ROOT_2023 = "Azure Virtual TPM Root Certificate Authority 2023"


# -- a real HTTP server for caIssuers URLs ------------------------------------------------------------


@dataclass
class AiaServer:
    base: str
    routes: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@pytest.fixture
def aia_server() -> Iterator[AiaServer]:
    server_state = AiaServer("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.hits.append(self.path)
            if self.path in server_state.redirects:
                self.send_response(302)
                self.send_header("Location", server_state.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = server_state.routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A URL whose server accepts the connection (the kernel's backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/never.crt"
    finally:
        sock.close()


def fetcher(tmp_path: Path) -> AiaFetcher:
    return AiaFetcher(tmp_path / "aia-cache", timeout=1.0)


# -- synthetic hierarchies of Azure's shapes ------------------------------------------------------------


def ak_certificate(issuer: Issued, *, ca_issuers_url: str | None = None) -> x509.Certificate:
    """An AK certificate as Azure issues it: digitalSignature, Microsoft's and the AIK EKU, key ids."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "e2806aaec396.TrustedVM.Azure.Microsoft")])
        )
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([MICROSOFT_AK, TCG_KP_AIK_CERTIFICATE]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    )
    if ca_issuers_url:
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(ca_issuers_url),
                    )
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer.key, hashes.SHA256())


def root_2023() -> Issued:
    return issue(ROOT_2023, key_ids=True, not_after=NOW + dt.timedelta(days=9000))


def der(issued: Issued) -> bytes:
    return issued.cert.public_bytes(Encoding.DER)


def only_root(root: Issued) -> TrustStore:
    return TrustStore.from_certificates([root.cert], "test", dev_level=False)


def identity(leaf: x509.Certificate, *given: x509.Certificate) -> AkIdentity:
    return AkIdentity("ak", tuple(c.public_bytes(Encoding.PEM).decode() for c in (leaf, *given)))


def embedded_path_verifies_with_the_root_alone(ak: AkIdentity, root: Issued) -> tuple[x509.Certificate, ...]:
    chain = [x509.load_pem_x509_certificate(p.encode()) for p in ak.certificate_chain]
    return build_path(chain[0], chain[1:], only_root(root), NOW).certificates


# (a) AK <- Global Virtual TPM CA - 01 <- root; the AK carries no AIA (as the real sample)
def test_ca01_hierarchy_chains_with_the_given_intermediate(tmp_path: Path, aia_server: AiaServer) -> None:
    root = root_2023()
    ca01 = issue(
        "Global Virtual TPM CA - 01",
        root,
        path_length=0,
        usages=CA_USAGES,
        key_ids=True,
        ca_issuers_url=aia_server.url("/root-2023.crt"),
    )
    leaf = ak_certificate(ca01)
    chained = chained_identity(identity(leaf, ca01.cert), only_root(root), NOW, fetcher(tmp_path), shipped=[])
    assert embedded_path_verifies_with_the_root_alone(chained, root) == (leaf, ca01.cert, root.cert)
    assert aia_server.hits == []  # the root is trusted: nothing fetched


# (b) AK <- Global Virtual TPM CA - 03, no AIA anywhere on the AK: only a shipped file has the intermediate
def test_ca03_without_aia_chains_from_a_shipped_file(tmp_path: Path, aia_server: AiaServer) -> None:
    root = root_2023()
    ca03 = issue("Global Virtual TPM CA - 03", root, path_length=0, usages=CA_USAGES, key_ids=True)
    leaf = ak_certificate(ca03)
    assert ca_issuers_urls(leaf) == []
    shipped_dir = tmp_path / "intermediates"
    shipped_dir.mkdir()
    (shipped_dir / "global-virtual-tpm-ca-03.crt").write_bytes(der(ca03))  # DER, as Microsoft publishes
    (shipped_dir / "notes.txt").write_text("not a certificate, not read")
    shipped = shipped_intermediates(shipped_dir)
    chained = chained_identity(identity(leaf), only_root(root), NOW, fetcher(tmp_path), shipped=shipped)
    assert embedded_path_verifies_with_the_root_alone(chained, root) == (leaf, ca03.cert, root.cert)
    assert aia_server.hits == []


def test_ca03_without_the_shipped_file_names_the_missing_issuer(tmp_path: Path) -> None:
    root = root_2023()
    ca03 = issue("Global Virtual TPM CA - 03", root, path_length=0, usages=CA_USAGES, key_ids=True)
    leaf = ak_certificate(ca03)
    with pytest.raises(MissingIssuer) as err:
        chained_identity(identity(leaf), only_root(root), NOW, fetcher(tmp_path), shipped=[])
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert err.value.issuer_subject == "CN=Global Virtual TPM CA - 03"
    assert aki is not None and err.value.authority_key_id == aki.hex()
    assert f"subject CN=Global Virtual TPM CA - 03, key identifier {aki.hex()}" in str(err.value)
    assert "no caIssuers URL" in str(err.value)


def four_deep(aia_server: AiaServer, ca_name: str) -> tuple[Issued, Issued, Issued, x509.Certificate]:
    """AK <- `ca_name` (AIA) <- Azure Cloud Virtual TPM CA 2025 (AIA) <- the 2023 root, every
    issuer published on the local server: the root as DER, CA 2025 as PEM, `ca_name` as DER."""
    root = root_2023()
    ca2025 = issue(
        "Azure Cloud Virtual TPM CA 2025",
        root,
        path_length=1,
        usages=CA_USAGES,
        key_ids=True,
        ca_issuers_url=aia_server.url("/root-2023.crt"),
    )
    ca = issue(
        ca_name,
        ca2025,
        path_length=0,
        usages=CA_USAGES,
        key_ids=True,
        ca_issuers_url=aia_server.url("/ca-2025.crt"),
    )
    leaf = ak_certificate(ca, ca_issuers_url=aia_server.url("/ca.crt"))
    aia_server.routes.update({"/root-2023.crt": der(root), "/ca-2025.crt": ca2025.pem, "/ca.crt": der(ca)})
    return root, ca2025, ca, leaf


# (c) AK <- Azure Cloud Virtual TPM CA - 11 <- Azure Cloud Virtual TPM CA 2025 <- the 2023 root, all by AIA
# (d) the same shape under Azure Cloud Virtual TPM CA - 25 (confidential VMs)
@pytest.mark.parametrize("ca_name", ["Azure Cloud Virtual TPM CA - 11", "Azure Cloud Virtual TPM CA - 25"])
def test_four_deep_hierarchy_chains_by_aia_and_is_cached(
    ca_name: str, tmp_path: Path, aia_server: AiaServer
) -> None:
    root, ca2025, ca, leaf = four_deep(aia_server, ca_name)
    chained = chained_identity(identity(leaf), only_root(root), NOW, fetcher(tmp_path), shipped=[])
    assert embedded_path_verifies_with_the_root_alone(chained, root) == (
        leaf,
        ca.cert,
        ca2025.cert,
        root.cert,
    )
    assert len(chained.certificate_chain) == 3  # the root is not embedded
    assert aia_server.hits == ["/ca.crt", "/ca-2025.crt"]  # the trusted root is never fetched
    aia_server.routes.clear()  # the next start finds both in the state directory's cache
    again = chained_identity(identity(leaf), only_root(root), NOW, fetcher(tmp_path), shipped=[])
    assert again.certificate_chain == chained.certificate_chain
    assert aia_server.hits == ["/ca.crt", "/ca-2025.crt"]


def test_four_deep_without_fetching_names_the_first_missing_issuer(
    tmp_path: Path, aia_server: AiaServer
) -> None:
    root, _, _, leaf = four_deep(aia_server, "Azure Cloud Virtual TPM CA - 11")
    with pytest.raises(MissingIssuer, match="subject CN=Azure Cloud Virtual TPM CA - 11"):
        chained_identity(identity(leaf), only_root(root), NOW, None, shipped=[])


# -- hostile or broken caIssuers answers: refused, never trusted, never a hang ---------------------------


def test_impostor_served_at_the_aia_url_is_not_an_issuer(tmp_path: Path, aia_server: AiaServer) -> None:
    root, _, _, leaf = four_deep(aia_server, "Azure Cloud Virtual TPM CA - 11")
    aia_server.routes["/ca.crt"] = der(issue("Azure Cloud Virtual TPM CA - 11", root))  # same name, other key
    with pytest.raises(MissingIssuer, match="served no certificate that issued it"):
        chained_identity(identity(leaf), only_root(root), NOW, fetcher(tmp_path), shipped=[])
    assert list((tmp_path / "aia-cache").iterdir())  # cached (it is a certificate), and useless


def test_oversized_answer_is_refused(tmp_path: Path, aia_server: AiaServer) -> None:
    root, _, ca, leaf = four_deep(aia_server, "Azure Cloud Virtual TPM CA - 11")
    aia_server.routes["/ca.crt"] = ca.pem + b"#" * MAX_BYTES  # a real certificate, padded past the bound
    with pytest.raises(MissingIssuer, match=f"larger than {MAX_BYTES} bytes"):
        chained_identity(identity(leaf), only_root(root), NOW, fetcher(tmp_path), shipped=[])
    assert not (tmp_path / "aia-cache").exists()


def test_silent_server_is_given_up(tmp_path: Path, silent_url: str) -> None:
    root = root_2023()
    ca = issue("Azure Cloud Virtual TPM CA - 11", root, usages=CA_USAGES, key_ids=True)
    leaf = ak_certificate(ca, ca_issuers_url=silent_url)
    with pytest.raises(MissingIssuer, match="no answer"):
        chained_identity(identity(leaf), only_root(root), NOW, AiaFetcher(tmp_path, timeout=0.3), shipped=[])


def renewal(old: Issued, root: Issued) -> x509.Certificate:
    """`old` renewed by its root: same name and key, valid now."""
    return x509.CertificateBuilder(
        subject_name=old.cert.subject,
        issuer_name=root.cert.subject,
        public_key=old.key.public_key(),
        serial_number=x509.random_serial_number(),
        not_valid_before=NOW - dt.timedelta(days=2),
        not_valid_after=NOW + dt.timedelta(days=365),
        extensions=list(old.cert.extensions),
    ).sign(root.key, hashes.SHA256())


def test_an_expired_given_intermediate_is_replaced_by_its_renewal_at_the_aia_url(
    tmp_path: Path, aia_server: AiaServer
) -> None:
    root = root_2023()
    old_ca = issue("Global Virtual TPM CA - 01", root, usages=CA_USAGES, not_after=NOW - dt.timedelta(days=1))
    renewed = renewal(old_ca, root)
    leaf = ak_certificate(old_ca, ca_issuers_url=aia_server.url("/ca.crt"))
    aia_server.routes["/ca.crt"] = renewed.public_bytes(Encoding.DER)
    path = assemble_path(leaf, [old_ca.cert], only_root(root), NOW, fetcher(tmp_path))
    assert path.certificates == (leaf, renewed, root.cert)


def test_a_cached_issuer_that_expired_is_fetched_again_when_renewed(
    tmp_path: Path, aia_server: AiaServer
) -> None:
    """Microsoft renews a CA at the same URL: the expired copy in the cache does not keep the node
    unlabelled; the renewed one (same name and key) is fetched and cached in its place."""
    root = root_2023()
    old_ca = issue("Global Virtual TPM CA - 01", root, usages=CA_USAGES, not_after=NOW - dt.timedelta(days=1))
    renewed = renewal(old_ca, root)
    leaf = ak_certificate(old_ca, ca_issuers_url=aia_server.url("/ca.crt"))
    fetch = fetcher(tmp_path)
    fetch.cache_dir.mkdir(parents=True)
    fetch.cache_path(aia_server.url("/ca.crt")).write_bytes(der(old_ca))  # what an earlier start cached
    aia_server.routes["/ca.crt"] = renewed.public_bytes(Encoding.DER)
    path = assemble_path(leaf, [], only_root(root), NOW, fetch)
    assert path.certificates == (leaf, renewed, root.cert)
    assert aia_server.hits == ["/ca.crt"]
    assert fetch.cache_path(aia_server.url("/ca.crt")).read_bytes() == renewed.public_bytes(Encoding.DER)


def test_answer_that_is_no_certificate_is_refused(tmp_path: Path, aia_server: AiaServer) -> None:
    root, _, _, leaf = four_deep(aia_server, "Azure Cloud Virtual TPM CA - 11")
    aia_server.routes["/ca.crt"] = b"<html>maintenance</html>"
    with pytest.raises(MissingIssuer, match="not a certificate"):
        chained_identity(identity(leaf), only_root(root), NOW, fetcher(tmp_path), shipped=[])


def test_redirects_are_followed_to_plain_http_only(tmp_path: Path, aia_server: AiaServer) -> None:
    root, _, ca, leaf = four_deep(aia_server, "Azure Cloud Virtual TPM CA - 11")
    del aia_server.routes["/ca.crt"]
    aia_server.routes["/moved/ca.crt"] = der(ca)
    aia_server.redirects["/ca.crt"] = aia_server.url("/moved/ca.crt")
    chained = chained_identity(identity(leaf), only_root(root), NOW, fetcher(tmp_path), shipped=[])
    assert len(chained.certificate_chain) == 3
    aia_server.redirects["/ca.crt"] = aia_server.url("/moved/ca.crt").replace("http:", "https:")
    with pytest.raises(MissingIssuer, match="which is not plain HTTP"):
        chained_identity(identity(leaf), only_root(root), NOW, fetcher(tmp_path / "fresh"), shipped=[])


def test_only_plain_http_urls_are_followed() -> None:
    root = root_2023()
    for url in ("file:///etc/passwd", "ldap://ldap.example/cn=ca", "https://example.invalid/ca.crt"):
        assert ca_issuers_urls(ak_certificate(root, ca_issuers_url=url)) == []


def test_aia_to_an_untrusted_root_is_no_path(tmp_path: Path, aia_server: AiaServer) -> None:
    _, _, _, leaf = four_deep(aia_server, "Azure Cloud Virtual TPM CA - 11")
    other_root = root_2023()  # same name, other key: the one trusted
    with pytest.raises(ChainError, match="no path"):
        chained_identity(identity(leaf), only_root(other_root), NOW, fetcher(tmp_path), shipped=[])


def test_expired_intermediate_found_by_aia_is_refused_by_name(tmp_path: Path, aia_server: AiaServer) -> None:
    root = root_2023()
    ca = issue("Global Virtual TPM CA - 01", root, usages=CA_USAGES, not_after=NOW - dt.timedelta(days=1))
    leaf = ak_certificate(ca, ca_issuers_url=aia_server.url("/ca.crt"))
    aia_server.routes["/ca.crt"] = der(ca)
    with pytest.raises(ChainError, match="CA certificate CN=Global Virtual TPM CA - 01 expired on"):
        assemble_path(leaf, [], only_root(root), NOW, fetcher(tmp_path))


def test_the_package_ships_no_intermediate_it_could_not_obtain() -> None:
    assert shipped_intermediates() == []  # docs/install-aks.md says where an operator gets them


# -- the agent at start ---------------------------------------------------------------------------------


def test_agent_start_logs_the_missing_issuer_and_keeps_the_unchained_ak(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = root_2023()
    ca03 = issue("Global Virtual TPM CA - 03", root, path_length=0, usages=CA_USAGES, key_ids=True)
    leaf = ak_certificate(ca03)
    unchained = identity(leaf)
    with caplog.at_level(logging.ERROR, logger="aicert_agent.ak_chain"):
        kept, report = chain_at_start(unchained, only_root(root), tmp_path, fetch_aia=True, at=NOW)
    assert kept is unchained
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki is not None
    missing = f"missing issuer subject=CN=Global Virtual TPM CA - 03 authorityKeyId={aki.hex()}"
    assert missing in caplog.text
    condition = node_condition(report, NOW)
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "AICertAKChain",
        "False",
        "AKIssuerMissing",
    )
    assert condition["message"].startswith(missing)
    event = node_event(report, "aks-gpu-0", "uid-1", "aicert-agent-aks-gpu-0", NOW)
    assert event["regarding"] == {"apiVersion": "v1", "kind": "Node", "name": "aks-gpu-0", "uid": "uid-1"}
    assert (event["type"], event["reason"], event["metadata"]["namespace"]) == (
        "Warning",
        "AKIssuerMissing",
        "default",
    )
    assert event["note"].startswith(missing)
    with pytest.raises(ChainError):  # what NodeAgent.check_ak then finds: the node is not labelled
        build_path(leaf, [], only_root(root), NOW)


def test_agent_start_embeds_the_fetched_intermediates(tmp_path: Path, aia_server: AiaServer) -> None:
    root, ca2025, ca, leaf = four_deep(aia_server, "Azure Cloud Virtual TPM CA - 11")
    chained, report = chain_at_start(identity(leaf), only_root(root), tmp_path, fetch_aia=True, at=NOW)
    assert node_condition(report, NOW)["status"] == "True" and report.reason == "AKChained"
    assert [x509.load_pem_x509_certificate(p.encode()) for p in chained.certificate_chain] == [
        leaf,
        ca.cert,
        ca2025.cert,
    ]
    assert (tmp_path / "aia-cache").is_dir()


def test_agent_start_without_aia_fetch_fetches_nothing(tmp_path: Path, aia_server: AiaServer) -> None:
    root, _, _, leaf = four_deep(aia_server, "Azure Cloud Virtual TPM CA - 11")
    unchained = identity(leaf)
    kept, report = chain_at_start(unchained, only_root(root), tmp_path, fetch_aia=False, at=NOW)
    assert kept is unchained and not report.chained
    assert aia_server.hits == []


def test_real_azure_sample_chains_through_ca01_without_fetching(azure_dir: Path) -> None:
    """The one real Azure AK certificate here (Global Virtual TPM CA - 01, no AIA on the AK) with its
    real intermediate offered, the real 2023 root trusted: the agent embeds AK + CA-01, and nothing
    is fetched (CA-01's AIA names the root, which is trusted)."""
    proof = json.loads((azure_dir / "aicert-proof-sample.json").read_text())
    leaf = load_any(proof["remote_attestation"]["cert_chain"][0]["base64"].encode())
    ca01 = load_certificates((azure_dir / "global-virtual-tpm-ca-01.crt").read_bytes())[0]
    root = load_certificates((azure_dir / "azure-virtual-tpm-root-ca-2023.crt").read_bytes())[0]
    trust = TrustStore.from_certificates([root], "azure", dev_level=False)
    assert ca_issuers_urls(leaf) == []

    def no_fetch(url: str, *, fresh: bool = False) -> bytes:
        raise AssertionError(f"fetched {url}")

    at = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    chained = chained_identity(identity(leaf, ca01), trust, at, no_fetch, shipped=[])
    assert [x509.load_pem_x509_certificate(p.encode()) for p in chained.certificate_chain] == [leaf, ca01]
    assert trust.anchors[0].max_assurance == "vtpm"
    with pytest.raises(MissingIssuer, match="subject CN=Global Virtual TPM CA - 01, key identifier fff6cee7"):
        chained_identity(identity(leaf), trust, at, no_fetch, shipped=[])
