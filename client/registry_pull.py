"""A site pulls a registered model with its own account and keeps it only if it verifies.

What the registry answers is checked before it is used: a version must be a plain
positive integer naming the model asked for, and its folder must resolve to exactly
``SITE_DIR/models/MODEL/VERSION/`` (client/local_models.py). Files come through the
registry's model-version artifact route, which needs READ on the registered model and
nothing else, land in a scratch folder beside their destination and move into place only
after the files' signature, the signed release record (this model, this version number,
these files) and, if the version carries one, the consortium's signed approval verify.
Pulling the alias ``approved`` needs that signed approval: the alias alone is an
unsigned pointer that anyone holding the registry's admin password can move.

The registry is reached over HTTPS, its certificate checked against the consortium CA
pinned at SITE_DIR/trust/ca.pem only (not the machine's CAs, not MLflow's settings).
Plain HTTP only when asked (``insecure_http``): the signatures still protect the model,
but the site's password crosses the network in the clear and nobody checks who answers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from mlflow.exceptions import MlflowException
from mlflow.utils.credentials import read_mlflow_creds
from mlflow.utils.rest_utils import verify_rest_response

from client.local_models import PULL_RECORD, check_model_name, check_version, is_plain_version, version_folder
from client.model_trust import (
    APPROVAL_FILE,
    MODEL_FILES,
    RELEASE_FILE,
    Approval,
    SignatureError,
    VerifiedModel,
    load_trusted_key,
    verify_approval,
    verify_model_folder,
)
from client.site_init import PINNED_CA

DEFAULT_ALIAS = "approved"
APPROVAL_TAG = "cmrfl.approval"  # the model-version tag `cmrfl registry promote` writes
ALIAS_ROUTE = "/api/2.0/mlflow/registered-models/alias"
VERSION_ROUTE = "/api/2.0/mlflow/model-versions/get"
ARTIFACT_ROUTE = "/model-versions/get-artifact"
TIMEOUT_S = (15, 300)  # connect, read
_REFERENCE = re.compile(r"^(?P<name>[^@:]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|:(?P<version>\d+))?$")


class PullRefused(Exception):
    """A pull stopped before anything was kept, for a reason other than a signature (names the registry)."""


@dataclass(frozen=True)
class ModelReference:
    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str, default_alias: str | None = DEFAULT_ALIAS) -> ModelReference:
        """``MODEL``, ``MODEL@alias`` or ``MODEL:version``."""
        match = _REFERENCE.match(text.strip())
        if not match:
            raise ValueError(f"model {text!r}: expected MODEL, MODEL@ALIAS or MODEL:VERSION")
        alias, version = match["alias"], match["version"]
        check_model_name(match["name"])
        if version is not None:
            check_version(version)
        return cls(match["name"], alias if alias or version else default_alias, version)

    def __str__(self) -> str:
        return self.name + (f":{self.version}" if self.version else f"@{self.alias}" if self.alias else "")


@dataclass(frozen=True)
class PulledModel:
    name: str
    version: str
    folder: Path
    verified: VerifiedModel
    approval: Approval | None = None


@dataclass(frozen=True)
class RegistryConnection:
    """The registry's address, the site's account, and what its TLS certificate must chain to."""

    uri: str
    auth: tuple[str, str] | None
    pinned_ca: Path | None  # None: plain HTTP, asked for

    @classmethod
    def open(cls, uri: str, site_dir: Path, insecure_http: bool = False) -> RegistryConnection:
        ca = Path(site_dir) / PINNED_CA
        scheme = urlsplit(uri).scheme
        if scheme == "http" and not insecure_http:
            raise PullRefused(
                f"{uri}: plain HTTP, so the site's password would cross the network in the clear and nobody "
                f"checks who answers; use the registry's https:// address (its certificate is checked against {ca}) "
                "or, knowingly, --insecure-http"
            )
        if scheme not in ("http", "https"):
            raise PullRefused(f"{uri}: not a registry address (expected https://HOST[:PORT])")
        if scheme == "https" and not ca.is_file():
            raise PullRefused(
                f"{ca}: no pinned consortium CA, so the certificate of the registry {uri} cannot be checked "
                "(`cmrfl site init --ca CA.pem` pins it)"
            )
        creds = read_mlflow_creds()  # MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
        auth = (creds.username, creds.password) if creds.username and creds.password else None
        return cls(uri.rstrip("/"), auth, ca if scheme == "https" else None)

    def get(self, route: str, params: dict[str, str], stream: bool = False) -> requests.Response:
        try:
            return requests.get(
                self.uri + route,
                params=params,
                auth=self.auth,
                verify=str(self.pinned_ca) if self.pinned_ca else True,
                timeout=TIMEOUT_S,
                stream=stream,
            )
        except requests.exceptions.SSLError as error:
            reason = re.search(r"certificate verify failed[^'(\")]*", str(error))
            raise PullRefused(
                f"{self.uri}: the registry's TLS certificate was not issued by the consortium CA pinned at "
                f"{self.pinned_ca} ({reason[0].strip() if reason else 'TLS handshake failed'}); nothing was pulled"
            ) from None
        except requests.RequestException as error:
            raise MlflowException(f"no answer ({error})") from None

    def get_json(self, route: str, params: dict[str, str]) -> dict:
        response = self.get(route, params)
        verify_rest_response(response, route)  # MLflow's errors: HTTP 401, 403, 404 named as such
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise PullRefused(f"{self.uri}{route}: the registry's answer is not a JSON object")
        return answer


@dataclass(frozen=True)
class RegistryVersion:
    """A model version as the registry described it, once its name and number check out."""

    name: str
    version: str
    tags: dict[str, str]


def resolve_version(connection: RegistryConnection, reference: ModelReference) -> RegistryVersion:
    if reference.version:
        answer = connection.get_json(VERSION_ROUTE, {"name": reference.name, "version": reference.version})
    else:
        answer = connection.get_json(ALIAS_ROUTE, {"name": reference.name, "alias": reference.alias or DEFAULT_ALIAS})
    described = answer.get("model_version")
    if not isinstance(described, dict):
        raise PullRefused(f"{connection.uri}: answered {reference} without a model version")
    name, version = described.get("name"), described.get("version")
    if not is_plain_version(version):
        raise PullRefused(
            f"{connection.uri}: answered version {version!r} for {reference}; a version must be a plain positive "
            "integer, so nothing was pulled"
        )
    if name != reference.name or (reference.version and version != reference.version):
        raise PullRefused(f"{connection.uri}: asked for {reference}, answered model {name!r} version {version!r}")
    return RegistryVersion(name, str(version), _tags(described))


def _tags(described: dict) -> dict[str, str]:
    """MLflow lists a version's tags as [{"key": …, "value": …}]; anything else is no tag."""
    tags = described.get("tags")
    if not isinstance(tags, list):
        return {}
    return {
        t["key"]: t["value"]
        for t in tags
        if isinstance(t, dict) and isinstance(t.get("key"), str) and isinstance(t.get("value"), str)
    }


def _download(connection: RegistryConnection, name: str, version: str, filename: str, target: Path) -> None:
    params = {"name": name, "version": version, "path": filename}
    with contextlib.closing(connection.get(ARTIFACT_ROUTE, params, stream=True)) as response:
        if response.status_code != 200:
            raise MlflowException(
                f"cannot download {filename} of {name} version {version} "
                f"(HTTP {response.status_code}: {response.text[:200]})"
            )
        with target.open("wb") as handle:
            for block in response.iter_content(1 << 20):
                handle.write(block)


def pull_model(
    tracking_uri: str, reference: ModelReference, site_dir: Path, insecure_http: bool = False
) -> PulledModel:
    """Download ``reference`` with the site's credentials, verify it, keep it in the site folder.

    Credentials are MLflow's: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD. Raises
    :class:`SignatureError` when the model or its approval does not verify, :class:`PullRefused`
    for an answer or a connection a site must not act on, ``ModelFolderError`` for a
    destination that leads out of SITE_DIR/models; in every case nothing is kept or deleted.
    """
    site_dir = Path(site_dir)
    key = load_trusted_key(site_dir)  # no pinned key: refuse before downloading anything
    connection = RegistryConnection.open(tracking_uri, site_dir, insecure_http)
    described = resolve_version(connection, reference)
    name, version = described.name, described.version
    destination = version_folder(site_dir, name, version)
    approval_text = described.tags.get(APPROVAL_TAG)
    if approval_text is None and reference.alias == DEFAULT_ALIAS:
        raise SignatureError(
            f"{connection.uri}: alias {DEFAULT_ALIAS!r} of {name} points at version {version}, which carries no "
            "signed approval; an alias is not an approval, so nothing was pulled"
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    refusal: SignatureError | None = None
    with tempfile.TemporaryDirectory(prefix=".incoming-", dir=destination.parent) as scratch:
        incoming = Path(scratch) / version
        incoming.mkdir()
        for filename in (*MODEL_FILES, RELEASE_FILE):
            _download(connection, name, version, filename, incoming / filename)
        try:
            verified = verify_model_folder(incoming, key, name, version)
            approval = None
            if approval_text is not None:
                source = f"{connection.uri}: the approval of {name} version {version}"
                approval = verify_approval(approval_text, key, source, name, version, verified.weights_sha256)
        except SignatureError as refused:  # name the version, not the scratch folder about to go
            refusal = SignatureError(str(refused).replace(f"{incoming}/", f"{name} version {version}, "))
        else:
            _keep(incoming, destination, _pull_record(reference, version, connection.uri, verified, approval), approval)
    if refusal is not None:
        with contextlib.suppress(OSError):
            destination.parent.rmdir()  # only when nothing was ever kept for this model
        raise refusal
    return PulledModel(name, version, destination, verify_model_folder(destination, key, name, version), approval)


def _pull_record(
    reference: ModelReference, version: str, tracking_uri: str, verified: VerifiedModel, approval: Approval | None
) -> dict:
    return {
        "model": reference.name,
        "version": version,
        "requested": str(reference),
        "registry": tracking_uri,
        "pulled_by": os.environ.get("MLFLOW_TRACKING_USERNAME", ""),
        "pulled_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "weights_sha256": verified.weights_sha256,
        "signer_public_key_sha256": verified.signer_public_key_sha256,
        "approved": approval is not None,
    }


def _keep(incoming: Path, destination: Path, record: dict, approval: Approval | None) -> None:
    """Write where the verified version came from (and its approval), then move it into place."""
    (incoming / PULL_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    if approval is not None:
        (incoming / APPROVAL_FILE).write_text(approval.text)
    if destination.exists():  # a real folder: version_folder refused links
        shutil.rmtree(destination)
    incoming.replace(destination)


__all__ = ["ModelReference", "PullRefused", "PulledModel", "SignatureError", "pull_model"]
