"""Key material, guard rails and the arithmetic of secure aggregation — without a network.

The federation itself (TLS, SuperNode authentication, DP, SecAgg+ through real Flower
processes) is tested in tests/integration/test_federation_privacy.py.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from healthrisk.contracts import (
    METRIC_CHAMPION_VAL_AUC,
    METRIC_CHAMPION_VAL_LOSS,
    METRIC_VAL_ACCURACY,
    METRIC_VAL_AUC,
    METRIC_VAL_LOSS,
    SUPERLINK_CONTROL_PORT,
    SUPERLINK_FLEET_PORT,
    SUPERLINK_PORT,
    TLS_CA_FILE,
)
from healthrisk.federated import secure
from healthrisk.federated.model import Evaluation, Params
from healthrisk.federated.pki import (
    control_client_certificate,
    pem_public_key,
    server_certificate,
    site_key_pair,
)
from healthrisk.federated.privacy import DECLINED, decline, declined_site, too_few_rows
from healthrisk.federated.proxy import ProxySettings, nginx_config
from healthrisk.federated.run_config import RunConfig
from healthrisk.federated.server_app import weighted
from healthrisk.federated.stats import FeatureStats
from healthrisk.schema import FEATURES

# ---- key material ----------------------------------------------------------------------


def _verifies(ca_pem: bytes, cert_pem: bytes) -> bool:
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception):
        return False
    return True


def test_server_certificate_names_the_service_and_loopback() -> None:
    tls = server_certificate(["ft-r1-superlink.ns.svc"])
    cert = x509.load_pem_x509_certificate(tls.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # The ServerApp dials 127.0.0.1 and the pod's proxy `localhost`: both must verify.
    assert sans.get_values_for_type(x509.DNSName) == ["ft-r1-superlink.ns.svc", "localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _verifies(tls.ca_pem, tls.cert_pem)
    # The key is the certificate's, and loads as what uvicorn and nginx read (PEM).
    key = serialization.load_pem_private_key(tls.key_pem, password=None)
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_control_clients_have_a_ca_of_their_own() -> None:
    server, client = server_certificate([]), control_client_certificate()
    cert = x509.load_pem_x509_certificate(client.cert_pem)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _verifies(client.ca_pem, client.cert_pem)
    # A serving certificate is no Control credential, and the other way round.
    assert not _verifies(client.ca_pem, server.cert_pem)
    assert not _verifies(server.ca_pem, client.cert_pem)


def test_each_issue_has_a_fresh_ca() -> None:
    assert server_certificate([]).ca_pem != server_certificate([]).ca_pem


def test_the_ca_trusts_the_certificate_in_python_ssl(tmp_path: Path) -> None:
    tls = server_certificate([])
    (tmp_path / TLS_CA_FILE).write_bytes(tls.ca_pem)
    context = ssl.create_default_context(cafile=str(tmp_path / TLS_CA_FILE))
    assert len(context.get_ca_certs()) == 1


def test_site_keys_are_what_flower_reads() -> None:
    pair = site_key_pair()
    private = serialization.load_ssh_private_key(pair.private_openssh, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
    assert pair.public_openssh.startswith(b"ecdsa-sha2-nistp384 ")
    pem = pem_public_key(pair.public_openssh)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert serialization.load_pem_public_key(pem).public_numbers() == private.public_key().public_numbers()  # type: ignore[union-attr]


def test_a_key_the_superlink_would_refuse_is_refused_with_its_reason() -> None:
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    openssh = ed.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    with pytest.raises(ValueError, match="NIST EC"):
        pem_public_key(openssh)
    with pytest.raises(ValueError, match="not an OpenSSH public key"):
        pem_public_key(b"-----BEGIN PUBLIC KEY-----")


# ---- guard rails and options -------------------------------------------------------------


def test_a_decline_names_the_site_and_the_rule_but_no_count() -> None:
    error = decline("hospital_02", "train", too_few_rows(100))
    assert error.code == DECLINED
    assert declined_site(error) == (
        "hospital_02",
        "declines train: fewer than minRows=100 rows in its window",
    )
    rest = (error.reason or "").replace("hospital_02", "").replace("minRows=100", "")
    assert not any(ch.isdigit() for ch in rest)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"min-rows": 0}, "min-rows"),
        ({"dp-noise-multiplier": -1.0}, "dp-noise-multiplier"),
        ({"dp-clipping-norm": 0.0}, "dp-clipping-norm"),
        ({"dp-delta": 1.0}, "dp-delta"),
        ({"dp-clipping": "both"}, "dp-clipping must be one of"),
        ({"dp-noise-multiplier": 1.0, "secure-aggregation": True}, "cannot be combined"),
        ({"secure-aggregation": True, "per-site-metrics": True}, "per-site metrics"),
    ],
)
def test_privacy_settings_refuse_what_cannot_hold(override: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RunConfig.from_flower({"local-run-id": "x", **override})


# ---- secure aggregation: what the sums mean -----------------------------------------------


def _site_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    low = np.array([f.minimum for f in FEATURES])
    high = np.array([f.maximum for f in FEATURES])
    return low + (high - low) * rng.beta(5, 5, size=(n, len(FEATURES)))


def test_summed_stats_vectors_give_the_pooled_standardisation() -> None:
    rng = np.random.default_rng(4)
    sites = [_site_rows(rng, n) for n in (2100, 1500, 160)]
    total = np.sum([secure.stats_vector(x) for x in sites], axis=0)
    pooled = secure.stats_from_sum(total)
    exact = FeatureStats.merge(FeatureStats.of(x) for x in sites)
    assert pooled.count == exact.count
    for ours, theirs in zip(pooled.mean_and_scale(), exact.mean_and_scale(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-9)
    # every entry fits SecAgg+'s clipping range for the statistics
    assert all(np.abs(secure.stats_vector(x)).max() <= secure.SCALED_RANGE for x in sites)


def _evaluation(n: int, loss: float, auc: float, accuracy: float) -> Evaluation:
    return Evaluation(loss=loss, auc=auc, accuracy=accuracy, n=n)


def test_summed_train_vectors_give_fedavg_and_the_weighted_metrics() -> None:
    rng = np.random.default_rng(5)
    updates = [Params(rng.normal(size=11), float(rng.normal())) for _ in range(3)]
    trained = [(2000, 0.4), (900, 0.6), (300, 0.5)]  # training rows, training loss
    validation = [
        _evaluation(500, 0.45, 0.81, 0.75),
        _evaluation(220, 0.55, float("nan"), 0.7),  # one class only: no AUC
        _evaluation(80, 0.5, 0.7, 0.72),
    ]
    total = np.sum(
        [
            secure.train_vector(u, n, loss, v)
            for u, (n, loss), v in zip(updates, trained, validation, strict=True)
        ],
        axis=0,
    )
    result = secure.round_from_sum(total)
    weights = np.array([n for n, _ in trained], dtype=float)
    fedavg = np.average([np.concatenate(u.to_arrays()) for u in updates], axis=0, weights=weights)
    np.testing.assert_allclose(np.concatenate(result.params.to_arrays()), fedavg, rtol=1e-12)
    assert result.train_loss == pytest.approx(np.average([loss for _, loss in trained], weights=weights))
    # the same federated metrics as the plain path computes from per-site replies
    plain = weighted(
        [
            {"n": v.n, METRIC_VAL_LOSS: v.loss, METRIC_VAL_AUC: v.auc, METRIC_VAL_ACCURACY: v.accuracy}
            for v in validation
        ],
        [METRIC_VAL_LOSS, METRIC_VAL_AUC, METRIC_VAL_ACCURACY],
        "n",
    )
    assert result.validation == pytest.approx(plain)


def test_evaluation_vectors_sum_to_the_weighted_metrics() -> None:
    results = [_evaluation(500, 0.45, 0.81, 0.75), _evaluation(100, 0.6, 0.7, 0.7)]
    total = np.sum([secure.evaluate_vector(r) for r in results], axis=0) * secure.MAX_ROWS
    metrics = secure.metrics_from_sums(total)
    assert metrics[METRIC_VAL_AUC] == pytest.approx((0.81 * 500 + 0.7 * 100) / 600)
    assert metrics[METRIC_VAL_LOSS] == pytest.approx((0.45 * 500 + 0.6 * 100) / 600)


def test_the_final_evaluation_sums_the_champion_beside_the_new_model() -> None:
    """Like with like under secure aggregation (SPEC §4): each site's vector carries both
    models' sums on its validation rows, and the unmasked sum splits back into both."""
    new = [_evaluation(500, 0.45, 0.81, 0.75), _evaluation(100, 0.6, 0.7, 0.7)]
    champion = [_evaluation(500, 0.5, 0.78, 0.74), _evaluation(100, 0.55, 0.74, 0.72)]
    total = np.sum([secure.evaluate_vector(n, c) for n, c in zip(new, champion, strict=True)], axis=0)
    metrics = secure.final_metrics_from_sum(total)
    assert metrics[METRIC_VAL_AUC] == pytest.approx((0.81 * 500 + 0.7 * 100) / 600)
    assert metrics[METRIC_CHAMPION_VAL_AUC] == pytest.approx((0.78 * 500 + 0.74 * 100) / 600)
    assert metrics[METRIC_CHAMPION_VAL_LOSS] == pytest.approx((0.5 * 500 + 0.55 * 100) / 600)
    without = secure.final_metrics_from_sum(np.sum([secure.evaluate_vector(n) for n in new], axis=0))
    assert METRIC_CHAMPION_VAL_AUC not in without and without[METRIC_VAL_AUC] == metrics[METRIC_VAL_AUC]


# ---- the SuperLink pod's proxy -------------------------------------------------------------


def test_the_proxy_exposes_fleet_and_control_only_and_control_behind_client_certificates(
    tmp_path: Path,
) -> None:
    """The configuration nginx gets; that nginx enforces it is shown on the cluster
    (tests/e2e/test_federation.py: an impostor's requests through the Service)."""
    secure = nginx_config(ProxySettings(tmp_path, tmp_path / "certs", tmp_path / "control-ca.crt"))
    fleet, control = secure.split("    server {")[1:]
    assert f"listen {SUPERLINK_FLEET_PORT} ssl;" in fleet and "ssl_verify_client" not in fleet
    assert "location /v1/fleet/ { limit_except POST { deny all; } proxy_pass https://superlink; }" in fleet
    assert f"listen {SUPERLINK_CONTROL_PORT} ssl;" in control
    assert f"ssl_client_certificate {tmp_path / 'control-ca.crt'};" in control
    assert "ssl_verify_client on;" in control
    assert "location /v1/control/ {" in control
    for server in (fleet, control):
        assert "location / { return 404; }" in server and "/v1/runtime" not in server
    # The SuperLink itself is on loopback, and nginx checks that it is the run's.
    assert f"server 127.0.0.1:{SUPERLINK_PORT};" in secure and "proxy_ssl_verify on;" in secure
    insecure = nginx_config(ProxySettings(tmp_path, None, None))
    assert " ssl;" not in insecure and "proxy_pass http://superlink;" in insecure
    with pytest.raises(ValueError, match="go together"):
        ProxySettings(tmp_path, tmp_path, None)
