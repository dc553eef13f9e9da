"""TLS settings are checked before anything starts, in one line and without key material: both files
or neither, readable PEM, a key of that certificate; `twinray up` hands the proxy absolute paths and
refuses a Serve config whose first servicer function is not the hook that enforces TLS and the token."""

from __future__ import annotations

import copy
import datetime
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from twinray.services import SERVE_CONFIG
from twinray.services.cli.up import PROXY_HOOK, checked_security, health_covers_deployed
from twinray.services.common.tls import channel_credentials, check_tls_files, server_credentials, tls_files
from twinray.shared.platform.config import Settings


def write_pair(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    builder = x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
    builder = builder.serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
    cert, pem_key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    pkcs8 = serialization.PrivateFormat.PKCS8
    pem_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()))
    return cert, pem_key


@pytest.fixture
def pair(tmp_path):
    return write_pair(tmp_path, "server")


def test_tls_is_on_with_both_files_and_off_with_neither(pair):
    cert, key = pair
    assert tls_files(Settings.from_env({})) is None
    assert tls_files(Settings.from_env({"TWINRAY_TLS_CERT_FILE": str(cert), "TWINRAY_TLS_KEY_FILE": str(key)})) == (cert, key)
    with pytest.raises(ValueError, match="^set both TWINRAY_TLS_CERT_FILE and TWINRAY_TLS_KEY_FILE, or neither$"):
        tls_files(Settings.from_env({"TWINRAY_TLS_CERT_FILE": str(cert)}))


def test_a_usable_pair_gives_server_credentials(pair):
    server_credentials(*pair)


def test_unusable_files_are_refused_in_one_line_without_key_material(pair, tmp_path):
    cert, key = pair
    _, other_key = write_pair(tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ValueError, match=r"^TLS file .*absent.key does not exist$"):
        check_tls_files(cert, tmp_path / "absent.key")
    for bad_cert, bad_key in ((cert, other_key), (garbage, key), (cert, garbage)):
        with pytest.raises(ValueError, match=r"^TLS certificate .* and key .* cannot be used together") as info:
            check_tls_files(bad_cert, bad_key)
        assert "\n" not in str(info.value) and "PRIVATE KEY" not in str(info.value)


def test_a_client_trusts_a_ca_file_or_the_system(pair, tmp_path):
    cert, _ = pair
    channel_credentials(str(cert))
    channel_credentials("")
    with pytest.raises(ValueError, match=r"^TLS CA file .*absent.pem cannot be read"):
        channel_credentials(str(tmp_path / "absent.pem"))


def test_twinray_up_gives_the_proxy_absolute_paths(pair, monkeypatch):
    cert, key = pair
    monkeypatch.chdir(cert.parent)
    settings = Settings.from_env({"TWINRAY_TLS_CERT_FILE": cert.name, "TWINRAY_TLS_KEY_FILE": key.name})
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    checked = checked_security(settings, config)
    assert (checked.tls_cert_file, checked.tls_key_file) == (str(cert.resolve()), str(key.resolve()))


@pytest.mark.parametrize("env", [{"TWINRAY_AUTH_TOKEN": "t"}, "tls"])
def test_twinray_up_refuses_a_config_that_would_not_enforce_them(pair, env):
    cert, key = pair
    env = {"TWINRAY_TLS_CERT_FILE": str(cert), "TWINRAY_TLS_KEY_FILE": str(key)} if env == "tls" else env
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    assert config["grpc_options"]["grpc_servicer_functions"][0] == PROXY_HOOK
    config["grpc_options"]["grpc_servicer_functions"].remove(PROXY_HOOK)
    with pytest.raises(ValueError, match=f"does not list {PROXY_HOOK} first"):
        checked_security(Settings.from_env(env), config)
    assert checked_security(Settings.from_env({}), config) == Settings.from_env({})  # nothing to enforce


def test_the_health_app_covers_the_deployed_applications_only():
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    everything = copy.deepcopy(config)
    health_covers_deployed(everything)
    (health,) = [app for app in everything["applications"] if app["name"] == "health"]
    assert set(health["args"]["services"]) == {
        "twinray.v1.Segmentation",
        "twinray.v1.NormalSynthesis",
        "twinray.v1.DefectGeneration",
        "twinray.v1.Detection",
    }
    config["applications"] = [app for app in config["applications"] if app["name"] in {"segmentation", "health"}]
    health_covers_deployed(config)
    (health,) = [app for app in config["applications"] if app["name"] == "health"]
    assert health["args"]["services"] == {"twinray.v1.Segmentation": "segmentation"}
